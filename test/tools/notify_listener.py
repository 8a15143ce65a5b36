#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Receive sd_notify datagrams on an AF_UNIX socket and log each assignment on its own line.

    notify_listener.py SOCKET LOG [--watch FILE]

SOCKET is a file path, or @name for the abstract namespace, as in $NOTIFY_SOCKET. Each line of
LOG is "MONOTONIC_SECONDS SENDER_PID ASSIGNMENT WATCHED", where WATCHED is "ready-line" when
FILE already contained a line starting with "READY " as the datagram arrived, else "-". The
daemon writes its READY line before it sends READY=1, so the test can check that order without
comparing two clocks.
"""
import argparse
import os
import socket
import struct
import sys
import time


def has_ready_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any(line.startswith("READY ") for line in f)
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket")
    parser.add_argument("log")
    parser.add_argument("--watch")
    args = parser.parse_args()

    address = "\0" + args.socket[1:] if args.socket.startswith("@") else args.socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(address)
    with open(args.log, "a", buffering=1, encoding="utf-8") as log:
        log.write("%.6f 0 LISTENING -\n" % time.monotonic())
        while True:
            data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            sender = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender = struct.unpack("iII", payload[:12])[0]
            watched = "ready-line" if args.watch and has_ready_line(args.watch) else "-"
            for assignment in data.decode("utf-8", "replace").splitlines():
                log.write("%.6f %d %s %s\n" % (time.monotonic(), sender, assignment, watched))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
