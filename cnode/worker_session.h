/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The built-in module _snakepit_worker, through which snakepit.session reaches the daemon's
 * session store: SESSION_REQ and SESSION_RESP frames on the request socket, tagged with the id
 * of the call in progress. Only the worker's main thread may use it, during a call.
 */
#pragma once

#include <Python.h>
#include <stdint.h>

#include "etf_py.h"
#include "worker_conn.h"

/* Register the module with PyImport_AppendInittab(); call before Py_Initialize. */
int worker_session_register(void);

/*
 * Mark call `id` as running on `conn` (borrowed, must outlive the call) with `session_id`
 * (borrowed; None or NULL for a call without a session), until worker_session_end().
 */
void worker_session_begin(WorkerConn *conn, uint64_t id, PyObject *session_id,
                          const EtfPyLimits *limits);
void worker_session_end(void);
