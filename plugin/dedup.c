/* In-memory message id index (dedup.h): a ring of entries in arrival order
 * and an open-addressing table of ring positions (linear probing, deletion
 * by backward shift). Keys are keyed hashes already: their first bytes are
 * a uniform table hash. */
#include "dedup.h"

#include <stdlib.h>
#include <string.h>

struct entry {
	uint8_t key[HASH_LEN];
	int64_t expiry;
};

struct dedup {
	struct entry *ring;
	size_t cap, head, count;
	uint32_t *slots;        /* ring position + 1; 0 is empty */
	size_t mask;
};

struct dedup *dedup_new(size_t max_ids)
{
	struct dedup *d = calloc(1, sizeof(*d));
	size_t n = 16;

	if(!d || max_ids == 0 || max_ids > UINT32_MAX / 4){
		free(d);
		return NULL;
	}
	while(n < max_ids * 2){
		n *= 2;
	}
	d->cap = max_ids;
	d->mask = n - 1;
	d->ring = calloc(max_ids, sizeof(*d->ring));
	d->slots = calloc(n, sizeof(*d->slots));
	if(!d->ring || !d->slots){
		dedup_free(d);
		return NULL;
	}
	return d;
}

void dedup_free(struct dedup *d)
{
	if(d){
		free(d->ring);
		free(d->slots);
		free(d);
	}
}

static size_t home(const struct dedup *d, const uint8_t *key)
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return (size_t)h & d->mask;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t find(const struct dedup *d, const uint8_t *key)
{
	size_t i = home(d, key);

	while(d->slots[i] && memcmp(d->ring[d->slots[i] - 1].key, key, HASH_LEN)){
		i = (i + 1) & d->mask;
	}
	return i;
}

static void slot_delete(struct dedup *d, size_t i)
{
	size_t j = i;

	d->slots[i] = 0;
	for(;;){
		j = (j + 1) & d->mask;
		if(!d->slots[j]){
			return;
		}
		size_t k = home(d, d->ring[d->slots[j] - 1].key);
		/* Move j back into the hole unless its home lies cyclically in (i, j]. */
		if((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))){
			d->slots[i] = d->slots[j];
			d->slots[j] = 0;
			i = j;
		}
	}
}

bool dedup_seen(const struct dedup *d, const uint8_t key[HASH_LEN], int64_t now)
{
	size_t i = find(d, key);

	return d->slots[i] && d->ring[d->slots[i] - 1].expiry >= now;
}

/* Forgotten entries (expiry INT64_MIN, no longer in the table) leave the
 * ring silently when they reach its head: their keys may be live again
 * further on, and their store records are gone already. */
static void drop_forgotten(struct dedup *d)
{
	while(d->count && d->ring[d->head].expiry == INT64_MIN){
		d->head = (d->head + 1) % d->cap;
		d->count--;
	}
}

static void remove_oldest(struct dedup *d, uint8_t key[HASH_LEN])
{
	struct entry *e = &d->ring[d->head];
	size_t i = find(d, e->key);

	memcpy(key, e->key, HASH_LEN);
	/* A forgotten entry left the table already (and its key may be back,
	 * at a later position). */
	if(d->slots[i] && d->slots[i] - 1 == d->head){
		slot_delete(d, i);
	}
	d->head = (d->head + 1) % d->cap;
	d->count--;
}

void dedup_insert(struct dedup *d, const uint8_t key[HASH_LEN], int64_t expiry,
		uint8_t evicted[HASH_LEN], bool *did_evict)
{
	size_t i = find(d, key), pos;

	*did_evict = false;
	if(d->slots[i]){
		d->ring[d->slots[i] - 1].expiry = expiry;
		return;
	}
	if(d->count == d->cap){
		drop_forgotten(d);
	}
	if(d->count == d->cap){
		remove_oldest(d, evicted);
		*did_evict = true;
		i = find(d, key);
	}
	pos = (d->head + d->count) % d->cap;
	memcpy(d->ring[pos].key, key, HASH_LEN);
	d->ring[pos].expiry = expiry;
	d->slots[i] = (uint32_t)pos + 1;
	d->count++;
}

bool dedup_forget(struct dedup *d, const uint8_t key[HASH_LEN])
{
	size_t i = find(d, key);

	if(!d->slots[i]){
		return false;
	}
	d->ring[d->slots[i] - 1].expiry = INT64_MIN;
	slot_delete(d, i);
	return true;
}

bool dedup_pop_expired(struct dedup *d, int64_t now, uint8_t key[HASH_LEN])
{
	drop_forgotten(d);
	if(!d->count || d->ring[d->head].expiry >= now){
		return false;
	}
	remove_oldest(d, key);
	return true;
}

size_t dedup_count(const struct dedup *d)
{
	return d->count;
}
