/* SPDX-License-Identifier: Apache-2.0 */
/* sd_notify(3) in a few lines, with abstract-namespace sockets ("@name") supported. */
#include "sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sd_notify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len;
    int r = 1;

    if (!path || path[0] == '\0') {
        return 0;
    }
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path)) {
        return -EINVAL;
    }
    memcpy(addr.sun_path, path, len);
    if (path[0] == '@') {
        addr.sun_path[0] = '\0';
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len) < 0) {
        r = -errno;
    }
    close(fd);
    return r;
}

uint64_t sd_notify_watchdog_interval_us(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");

    if (!usec) {
        return 0;
    }
    if (pid && strtol(pid, NULL, 10) != (long)getpid()) {
        return 0;
    }
    return strtoull(usec, NULL, 10) / 2;
}
