/* SPDX-License-Identifier: Apache-2.0 */
/* The systemd notification protocol: one datagram to $NOTIFY_SOCKET, no libsystemd needed. */
#pragma once

#include <stdint.h>

/* Send `state` (e.g. "READY=1") when $NOTIFY_SOCKET is set. Returns 1 sent, 0 unset, -errno. */
int sd_notify_send(const char *state);

/* Half of $WATCHDOG_USEC in microseconds when the watchdog is on for this pid, else 0. */
uint64_t sd_notify_watchdog_interval_us(void);
