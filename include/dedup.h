/* The in-memory index of publish message ids (plugin_opt_dedup_property):
 * keyed hashes in arrival order, at most max_ids of them. The store holds
 * the same entries durably; this index answers at publish time. */
#ifndef PERSIST_LMDB_DEDUP_H
#define PERSIST_LMDB_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "seal.h"

struct dedup;

struct dedup *dedup_new(size_t max_ids);
void dedup_free(struct dedup *d);

/* True when key was seen and its window has not ended at now. */
bool dedup_seen(const struct dedup *d, const uint8_t key[HASH_LEN], int64_t now);

/* Adds key (or gives an entry that has ended a new expiry). When the index
 * is full the oldest entry makes room: it is copied to evicted and
 * *did_evict set, for the caller to delete from the store. */
void dedup_insert(struct dedup *d, const uint8_t key[HASH_LEN], int64_t expiry,
		uint8_t evicted[HASH_LEN], bool *did_evict);

/* Drops key from the index at once (its ring place goes with the sweep). */
bool dedup_forget(struct dedup *d, const uint8_t key[HASH_LEN]);

/* Removes the oldest entry when its window ended before now: true, with its
 * key. */
bool dedup_pop_expired(struct dedup *d, int64_t now, uint8_t key[HASH_LEN]);

size_t dedup_count(const struct dedup *d);

#endif
