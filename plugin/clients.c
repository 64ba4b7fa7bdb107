/* Per-client records by client id: open addressing with linear probing. */
#include "feature.h"

#include <stdlib.h>
#include <string.h>

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while(*s){
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	}
	return h;
}

static const char *id_of(const void *rec)
{
	return *(char *const *)rec;
}

static void **slot_of(const struct client_table *t, const char *clientid)
{
	size_t i = (size_t)name_hash(clientid) & (t->cap - 1);

	while(t->slots[i] && strcmp(id_of(t->slots[i]), clientid)){
		i = (i + 1) & (t->cap - 1);
	}
	return &t->slots[i];
}

static int grow(struct client_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64;
	void **old = t->slots;
	size_t old_cap = t->cap;

	t->slots = calloc(cap, sizeof(*t->slots));
	if(!t->slots){
		t->slots = old;
		return -1;
	}
	t->cap = cap;
	for(size_t i = 0; i < old_cap; i++){
		if(old[i]){
			*slot_of(t, id_of(old[i])) = old[i];
		}
	}
	free(old);
	return 0;
}

void *client_find(const struct client_table *t, const char *clientid)
{
	if(!t->cap || !clientid){
		return NULL;
	}
	return *slot_of(t, clientid);
}

void *client_get_or_add(struct client_table *t, const char *clientid, size_t size)
{
	void *rec = client_find(t, clientid);
	char *id;

	if(rec || !clientid){
		return rec;
	}
	if((t->count + 1) * 2 > t->cap && grow(t)){
		return NULL;
	}
	rec = calloc(1, size);
	id = strdup(clientid);
	if(!rec || !id){
		free(rec);
		free(id);
		return NULL;
	}
	*(char **)rec = id;
	*slot_of(t, clientid) = rec;
	t->count++;
	return rec;
}

void *client_take(struct client_table *t, const char *clientid)
{
	void **slot;
	void *rec;
	size_t i, j;

	if(!client_find(t, clientid)){
		return NULL;
	}
	slot = slot_of(t, clientid);
	rec = *slot;
	*slot = NULL;
	t->count--;
	/* Re-insert the rest of the cluster. */
	i = (size_t)(slot - t->slots);
	for(j = (i + 1) & (t->cap - 1); t->slots[j]; j = (j + 1) & (t->cap - 1)){
		void *moved = t->slots[j];
		t->slots[j] = NULL;
		*slot_of(t, id_of(moved)) = moved;
	}
	return rec;
}

void client_table_free(struct client_table *t, void (*free_rec)(void *rec))
{
	for(size_t i = 0; i < t->cap; i++){
		if(t->slots[i]){
			free_rec(t->slots[i]);
		}
	}
	free(t->slots);
	memset(t, 0, sizeof(*t));
}
