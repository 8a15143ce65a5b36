/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The memory session store backend: sessions in a hash table of the daemon's own memory, expired
 * through a min-heap of expiry times. Use it through store.h; store_new() calls this.
 */
#pragma once

#include "store.h"

/*
 * Create a memory store. `config` is borrowed for the call; `limits` contains its resolved values.
 * Returns 0 and sets *out to a new store, or -ENOMEM.
 */
int store_memory_new(const StoreConfig *config, const StoreLimits *limits, Store **out);
