/* A set of non-zero 64-bit ids (store ids): a u64map without values, under
 * the name struct plugin's users know (bodies_held). All zero, it is empty. */
#ifndef PERSIST_LMDB_IDSET_H
#define PERSIST_LMDB_IDSET_H

#include <stdbool.h>
#include <stdint.h>

#include "u64map.h"

struct idset {
	struct u64map ids;   /* value_size 0 */
};

/* Adds id (not 0); 0, or -1 when out of memory (the set is unchanged). */
static inline int idset_add(struct idset *s, uint64_t id)
{
	return u64map_add(&s->ids, id) ? 0 : -1;
}

static inline bool idset_has(const struct idset *s, uint64_t id)
{
	return u64map_get(&s->ids, id) != NULL;
}

/* Removes id; whether it was there. */
static inline bool idset_remove(struct idset *s, uint64_t id)
{
	return u64map_remove(&s->ids, id);
}

static inline void idset_free(struct idset *s)
{
	u64map_free(&s->ids);
}

#endif
