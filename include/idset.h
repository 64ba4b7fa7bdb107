/* A set of non-zero 64-bit ids (store ids): open addressing with linear
 * probing, 0 marks an empty slot, at most half full. */
#ifndef PERSIST_LMDB_IDSET_H
#define PERSIST_LMDB_IDSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct idset {
	uint64_t *slots;   /* cap of them, cap a power of two (0 before the first add) */
	size_t cap, n;
};

/* Adds id (not 0); 0, or -1 when out of memory (the set is unchanged). */
int idset_add(struct idset *s, uint64_t id);
bool idset_has(const struct idset *s, uint64_t id);
/* Removes id; whether it was there. */
bool idset_remove(struct idset *s, uint64_t id);
void idset_free(struct idset *s);

#endif
