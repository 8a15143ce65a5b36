/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Erlang distribution side of the daemon. It publishes the node with epmd and runs
 * handshakes on acceptor threads, because ei_accept is blocking. Then it owns each peer socket on
 * the libev loop with non-blocking reads, per-peer write buffers and tick replies, so one slow or
 * stalled peer does not delay another. Calls to the registered name reach the handler; `net_kernel` is_auth
 * calls get their reply here, so Node.ping/1 returns pong.
 */
#pragma once

#include <ei.h>
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dist_frame.h"

#define DIST_MAX_MESSAGE_BYTES_DEFAULT (64u * 1024 * 1024)
#define DIST_MAX_CONNECTIONS_DEFAULT 1024u
#define DIST_MAX_OUTPUT_BYTES_DEFAULT (256u * 1024 * 1024)
#define DIST_HANDSHAKE_TIMEOUT_MS_DEFAULT 5000u
#define DIST_MAX_HANDSHAKES 64u /* handshakes in progress at once, one thread each */
#define DIST_PEER_IDLE_TIMEOUT_MS_DEFAULT 240000u

typedef struct Dist Dist;

/* Where a call came from. Its holder owns it until dist_reply() consumes it. */
typedef struct DistCaller {
    uint64_t conn_id;
    char node[MAXNODELEN + 1];
    erlang_pid pid;
    bool has_alias;
    erlang_ref alias;
    size_t tag_len;
    char tag[]; /* the caller's tag term, sent back byte for byte */
} DistCaller;

typedef struct {
    const char *node_name;       /* "alive@host"; borrowed for the call of dist_start */
    const char *cookie;          /* borrowed for the call of dist_start */
    const char *registered_name; /* borrowed; must outlive the Dist */
    size_t max_message_bytes;
    unsigned max_connections;
    size_t max_output_bytes;
    unsigned handshake_timeout_ms;
    unsigned peer_idle_timeout_ms;
} DistConfig;

typedef struct {
    /* A `$gen_call` to the registered name. `caller` is new: pass it to dist_reply() exactly
     * once. `request` (encoded term, no version byte) is borrowed for this callback only. */
    void (*on_call)(void *userdata, DistCaller *caller, const char *request, size_t len);
    /* A `$gen_cast` or plain message to the registered name; `request` is borrowed. */
    void (*on_cast)(void *userdata, const char *node, const char *request, size_t len);
    /* The first connection from `node` came up, or the last one went down. */
    void (*on_node_up)(void *userdata, const char *node);
    void (*on_node_down)(void *userdata, const char *node);
    /* rex replied to the liveness probe that dist_probe() sent with `ref` (borrowed). */
    void (*on_probe_reply)(void *userdata, const erlang_ref *ref, DistProbeResult result);
} DistHandlers;

/*
 * Listen, publish the node with epmd and start the acceptor threads. Returns 0, -ECONNREFUSED
 * when epmd cannot be reached, -EADDRINUSE when the name is already registered, or another
 * negative errno. A message naming the cause has been logged.
 */
int dist_start(struct ev_loop *loop, const DistConfig *config, const DistHandlers *handlers,
               void *userdata, Dist **out);

/* The full node name, "alive@host". Borrowed from the Dist. */
const char *dist_node_name(const Dist *dist);
/* The TCP port the node listens on. */
int dist_port(const Dist *dist);
/* Live peer connections. */
unsigned dist_peer_count(const Dist *dist);
/* Whether `node` has a live connection. */
bool dist_node_connected(const Dist *dist, const char *node);

/*
 * Send `{Tag, Reply}` to the caller (through its alias when the tag has one) and free `caller`.
 * `reply` is an encoded term without version byte, borrowed. Returns 0, or -ENOTCONN when the
 * caller's connection has gone (the reply is dropped). A NULL `dist` (after dist_free at
 * shutdown) drops every reply.
 */
int dist_reply(Dist *dist, DistCaller *caller, const char *reply, size_t len);

/* Free a caller without replying; only for calls whose peer is known to be gone. */
void dist_caller_free(DistCaller *caller);

/* Send a message term (no version byte) to a remote pid. Returns 0 or -ENOTCONN. */
int dist_send(Dist *dist, const erlang_pid *to, const char *message, size_t len);

/*
 * Ask the node of the remote process `pid` whether it is alive: a call of
 * erlang:is_process_alive(Pid) through that node's rex server, tagged with `ref`. The reply
 * comes to on_probe_reply with that reference, unless the node disconnects first or rex does not
 * reply. Nothing on that node monitors or links this node's pid (kernel's rpc.erl in OTP 25).
 * Returns 0, -ENOTCONN when the pid's node is not connected, or -ENOMEM.
 */
int dist_probe(Dist *dist, const erlang_pid *pid, const erlang_ref *ref);

/* Bytes queued for `node` and not yet written to its socket (0 when it is not connected). */
size_t dist_pending_bytes(const Dist *dist, const char *node);

/* Make a new reference of this node. */
void dist_make_ref(Dist *dist, erlang_ref *out);

/* Stop taking new connections and unregister from epmd; live connections go on. */
void dist_stop_accepting(Dist *dist);

/* Close every connection and free the Dist. Accepts NULL. */
void dist_free(Dist *dist);
