/* Maps from non-zero 64-bit keys (store ids) to values of a fixed size, or,
 * with values of size 0, sets of such keys: open addressing with linear
 * probing in a table at most half full. */
#ifndef PERSIST_LMDB_U64MAP_H
#define PERSIST_LMDB_U64MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* All zero, an empty set; u64map_init makes an empty map. */
struct u64map {
	/* cap keys, then cap values of value_size bytes: one allocation, NULL
	 * while cap is 0. Key 0 marks an empty slot, whose value means nothing.
	 * A key lies in the run of full slots that starts at its hash slot. */
	uint64_t *keys;
	size_t cap;          /* 0, or a power of two */
	size_t n;            /* keys in use, at most cap / 2: every run ends */
	size_t value_size;   /* 0: a set */
};

/* An empty map of values of value_size bytes, each aligned as a type of
 * that size needs. */
void u64map_init(struct u64map *m, size_t value_size);

/* Key's value, or NULL when key is not in m (0 never is). In a set the
 * pointer only says that key is there. Values stay where they are until m
 * next changes. */
void *u64map_get(const struct u64map *m, uint64_t key);

/* Key's value, added zeroed when key was not in m; NULL, with m unchanged,
 * when key is 0 or adding it finds no memory. */
void *u64map_add(struct u64map *m, uint64_t key);

/* Removes key; whether it was in m. */
bool u64map_remove(struct u64map *m, uint64_t key);

/* Removes every key. The slots stay for the keys to come, unless far more
 * than m held (left by a peak). */
void u64map_clear(struct u64map *m);

size_t u64map_count(const struct u64map *m);
/* The bytes m has allocated. */
size_t u64map_bytes(const struct u64map *m);

/* The value of the next key from *cursor on (0 to start), with the key in
 * *key when key is not NULL, and *cursor moved past it; NULL after the last.
 * m must not change meanwhile: to filter it, add the entries kept to a new
 * map. */
void *u64map_next(const struct u64map *m, size_t *cursor, uint64_t *key);

/* Frees m's memory; m stays an empty map of the same values. */
void u64map_free(struct u64map *m);

#endif
