/* Maps from non-zero 64-bit keys (u64map.h). */
#include "u64map.h"

#include <stdlib.h>
#include <string.h>

/* Slots of the first allocation. The values start after cap keys: with cap
 * at least this, at a multiple of any alignment malloc gives. */
#define FIRST_CAP 256

void u64map_init(struct u64map *m, size_t value_size)
{
	*m = (struct u64map){.value_size = value_size};
}

/* The slot a probe for key starts at: the product's bits from 32 on mix
 * all the key's lower bits, where store ids differ. */
static size_t hash_slot(const struct u64map *m, uint64_t key)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & (m->cap - 1);
}

/* Value i: a multiple of value_size past an aligned start, so aligned for
 * any type of that size. */
static void *value_at(const struct u64map *m, size_t i)
{
	return (char *)(m->keys + m->cap) + i * m->value_size;
}

/* Key's slot, or the empty slot that ends its run. m->cap is not 0. */
static size_t slot_of(const struct u64map *m, uint64_t key)
{
	size_t i = hash_slot(m, key);

	while(m->keys[i] && m->keys[i] != key){
		i = (i + 1) & (m->cap - 1);
	}
	return i;
}

static int resize(struct u64map *m, size_t cap)
{
	struct u64map r = {NULL, cap, m->n, m->value_size};

	r.keys = calloc(cap, sizeof(*r.keys) + m->value_size);
	if(!r.keys){
		return -1;
	}
	for(size_t i = 0; i < m->cap; i++){
		if(m->keys[i]){
			size_t j = slot_of(&r, m->keys[i]);
			r.keys[j] = m->keys[i];
			memcpy(value_at(&r, j), value_at(m, i), m->value_size);
		}
	}
	free(m->keys);
	*m = r;
	return 0;
}

void *u64map_get(const struct u64map *m, uint64_t key)
{
	size_t i;

	if(!m->n || !key){
		return NULL;
	}
	i = slot_of(m, key);
	return m->keys[i] ? value_at(m, i) : NULL;
}

void *u64map_add(struct u64map *m, uint64_t key)
{
	void *v = u64map_get(m, key);
	size_t i;

	if(v || !key){
		return v;
	}
	if((m->n + 1) * 2 > m->cap && resize(m, m->cap ? m->cap * 2 : FIRST_CAP)){
		return NULL;
	}
	i = slot_of(m, key);
	m->keys[i] = key;
	m->n++;
	v = value_at(m, i);
	memset(v, 0, m->value_size);
	return v;
}

bool u64map_remove(struct u64map *m, uint64_t key)
{
	size_t mask = m->cap - 1, hole;

	if(!m->n || !key || !m->keys[hole = slot_of(m, key)]){
		return false;
	}
	/* Backward shift: a later key of the run is found only while no empty
	 * slot lies between its hash slot and itself, so one whose hash slot
	 * is at or before the hole moves into it, leaving its own slot as the
	 * hole. */
	for(size_t j = (hole + 1) & mask; m->keys[j]; j = (j + 1) & mask){
		if(((j - hash_slot(m, m->keys[j])) & mask) >= ((j - hole) & mask)){
			m->keys[hole] = m->keys[j];
			memcpy(value_at(m, hole), value_at(m, j), m->value_size);
			hole = j;
		}
	}
	m->keys[hole] = 0;
	m->n--;
	return true;
}

void u64map_clear(struct u64map *m)
{
	if(!m->n){
		return;
	}
	if(m->cap > FIRST_CAP && m->n * 8 < m->cap){
		/* Far more slots than keys, left by a peak: freed rather than
		 * wiped, so that a clear costs what the map held. */
		u64map_free(m);
	}else{
		memset(m->keys, 0, m->cap * sizeof(*m->keys));
		m->n = 0;
	}
}

size_t u64map_count(const struct u64map *m)
{
	return m->n;
}

size_t u64map_bytes(const struct u64map *m)
{
	return m->cap * (sizeof(*m->keys) + m->value_size);
}

void *u64map_next(const struct u64map *m, size_t *cursor, uint64_t *key)
{
	for(size_t i = *cursor; i < m->cap; i++){
		if(m->keys[i]){
			*cursor = i + 1;
			if(key){
				*key = m->keys[i];
			}
			return value_at(m, i);
		}
	}
	*cursor = m->cap;
	return NULL;
}

void u64map_free(struct u64map *m)
{
	free(m->keys);
	u64map_init(m, m->value_size);
}
