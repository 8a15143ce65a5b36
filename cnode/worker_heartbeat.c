/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The heartbeat thread. Its loop is poll(2) on two fds and read/write of a few bytes: no Python,
 * no locks shared with the main thread, nothing that can wait on the interpreter. When the
 * daemon goes away it calls _exit(), skipping atexit handlers and Python finalization, which
 * could block on a GIL held by a busy call.
 */
#include "worker_heartbeat.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

#include "log.h"

#define WORKER_HEARTBEAT_EXIT_DAEMON_GONE 0
#define WORKER_HEARTBEAT_EXIT_FAILED 70 /* EX_SOFTWARE */

typedef struct {
    int heartbeat_fd;
    int daemon_pidfd;
} Heartbeat;

static Heartbeat heartbeat;

/* Write all of buf; returns 0 or -errno. */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Echo what is readable; returns 0, or -EPIPE when the daemon closed the socket. */
static int echo_once(int fd)
{
    uint8_t buf[256];
    ssize_t n = read(fd, buf, sizeof(buf));

    if (n == 0) {
        return -EPIPE;
    }
    if (n < 0) {
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    }
    return write_all(fd, buf, (size_t)n);
}

static void *heartbeat_main(void *arg)
{
    Heartbeat *hb = arg;
    struct pollfd fds[2] = {
        {.fd = hb->heartbeat_fd, .events = POLLIN},
        {.fd = hb->daemon_pidfd, .events = POLLIN},
    };

    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            log_error_errno(-errno, "Heartbeat poll failed, stopping the worker");
            _exit(WORKER_HEARTBEAT_EXIT_FAILED);
        }
        if (fds[1].revents) {
            log_info("Daemon exited, stopping the worker");
            _exit(WORKER_HEARTBEAT_EXIT_DAEMON_GONE);
        }
        if (fds[0].revents) {
            int r = echo_once(hb->heartbeat_fd);
            if (r == -EPIPE || r == -ECONNRESET) {
                log_debug("Heartbeat socket closed, stopping the worker");
                _exit(WORKER_HEARTBEAT_EXIT_DAEMON_GONE);
            }
            if (r < 0) {
                log_error_errno(r, "Heartbeat echo failed, stopping the worker");
                _exit(WORKER_HEARTBEAT_EXIT_FAILED);
            }
        }
    }
    return NULL;
}

int worker_heartbeat_start(int heartbeat_fd, int daemon_pidfd)
{
    sigset_t all, old;
    pthread_attr_t attr;
    pthread_t thread;
    int r;

    heartbeat = (Heartbeat){.heartbeat_fd = heartbeat_fd, .daemon_pidfd = daemon_pidfd};
    /* The thread inherits the creator's mask: block everything for it, then restore ours. */
    sigfillset(&all);
    r = -pthread_sigmask(SIG_SETMASK, &all, &old);
    if (r < 0) {
        goto fail;
    }
    r = -pthread_attr_init(&attr);
    if (r == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        r = -pthread_create(&thread, &attr, heartbeat_main, &heartbeat);
        pthread_attr_destroy(&attr);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        goto fail;
    }
    return 0;
fail:
    close(heartbeat_fd);
    close(daemon_pidfd);
    return r;
}
