/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The benchmark's floor: the plainest C node erl_interface allows. It serves one connection
 * at a time with a blocking ei_xreceive_msg loop and sends `{Tag, pong}` to the caller's pid
 * for every `$gen_call` (net_kernel's is_auth gets `yes`, so Node.ping works). It has no
 * limits, no event loop and no other features, so what snakepit-cnode costs on top of it is
 * the daemon's own overhead.
 *
 *   echo_cnode SNAME COOKIE     prints "READY sname@host" once published
 */
#include <ei.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reply `{Tag, Answer}` to a `{'$gen_call', {Pid, Tag}, _}` in msg[0..len); ignore the rest. */
static void echo_reply(int fd, const char *msg, int len, const char *answer)
{
    int index = 0;
    int version;
    int arity;
    char atom[MAXATOMLEN_UTF8];
    erlang_pid pid;
    ei_x_buff reply;

    if (ei_decode_version(msg, &index, &version) < 0 ||
        ei_decode_tuple_header(msg, &index, &arity) < 0 || arity != 3 ||
        ei_decode_atom(msg, &index, atom) < 0 || strcmp(atom, "$gen_call") != 0 ||
        ei_decode_tuple_header(msg, &index, &arity) < 0 || arity != 2 ||
        ei_decode_pid(msg, &index, &pid) < 0) {
        return;
    }
    int tag_start = index;
    if (ei_skip_term(msg, &index) < 0 || index > len) {
        return;
    }
    if (ei_x_new_with_version(&reply) < 0) {
        return;
    }
    if (ei_x_encode_tuple_header(&reply, 2) == 0 &&
        ei_x_append_buf(&reply, msg + tag_start, index - tag_start) == 0 &&
        ei_x_encode_atom(&reply, answer) == 0) {
        ei_send(fd, &pid, reply.buff, reply.index);
    }
    ei_x_free(&reply);
}

static void serve(int fd)
{
    ei_x_buff buf;
    erlang_msg meta;

    if (ei_x_new(&buf) < 0) {
        return;
    }
    for (;;) {
        int r = ei_xreceive_msg(fd, &meta, &buf);
        if (r == ERL_TICK) {
            continue;
        }
        if (r == ERL_ERROR) {
            break;
        }
        if (meta.msgtype == ERL_REG_SEND) {
            bool net_kernel = strcmp(meta.toname, "net_kernel") == 0;
            echo_reply(fd, buf.buff, buf.index, net_kernel ? "yes" : "pong");
        }
    }
    ei_x_free(&buf);
}

int main(int argc, char **argv)
{
    char host[256];
    char node[600];
    ei_cnode ec;
    int port = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: echo_cnode SNAME COOKIE\n");
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    if (gethostname(host, sizeof(host)) < 0) {
        perror("gethostname");
        return 71;
    }
    host[sizeof(host) - 1] = '\0';
    char *dot = strchr(host, '.');
    if (dot) {
        *dot = '\0';
    }
    snprintf(node, sizeof(node), "%s@%s", argv[1], host);
    ei_init();
    if (ei_connect_xinit(&ec, host, argv[1], node, NULL, argv[2], 0) < 0) {
        fprintf(stderr, "echo_cnode: invalid node name %s\n", node);
        return 78;
    }
    int listen_fd = ei_listen(&ec, &port, 16);
    if (listen_fd < 0 || ei_publish(&ec, port) < 0) {
        fprintf(stderr, "echo_cnode: cannot listen or publish %s (is epmd running?)\n", node);
        return 69;
    }
    printf("READY %s\n", node);
    fflush(stdout);
    for (;;) {
        ErlConnect conp;
        int fd = ei_accept(&ec, listen_fd, &conp);
        if (fd < 0) {
            continue;
        }
        serve(fd);
        ei_close_connection(fd);
    }
}
