/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The standard process metrics of Prometheus client libraries, read from /proc/self at each
 * render: process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds and process_start_time_seconds.
 */
#pragma once

#include "metrics.h"

/* Register the six families and their collector. Returns 0, -EEXIST or -ENOMEM. */
int metrics_process_register(MetricsRegistry *registry);
