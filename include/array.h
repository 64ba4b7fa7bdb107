/* Growable arrays: a pointer, a count and a capacity kept by the owner; this
 * is the one place that grows them. */
#ifndef PERSIST_LMDB_ARRAY_H
#define PERSIST_LMDB_ARRAY_H

#include <stddef.h>

/* Makes room for element n of the array whose pointer is at items (elements
 * of elem bytes, *cap of them allocated): when n == *cap, the capacity
 * doubles, from first. 0, or -1 when out of memory or the size overflows
 * (the array and *cap are unchanged). */
int array_grow(void *items, size_t *cap, size_t n, size_t elem, size_t first);

/* array_grow for an array named by its pointer lvalue, e.g.
 * ARRAY_GROW(pl->incoming, pl->n_incoming, pl->cap_incoming, 64). */
#define ARRAY_GROW(ptr, n, cap, first) array_grow(&(ptr), &(cap), (n), sizeof(*(ptr)), (first))

#endif
