/* Sets of 64-bit ids (idset.h). */
#include "idset.h"

#include <stdlib.h>

static size_t slot_of(const struct idset *s, uint64_t id)
{
	size_t mask = s->cap - 1;
	size_t i = (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & mask;

	while(s->slots[i] && s->slots[i] != id){
		i = (i + 1) & mask;
	}
	return i;
}

static int grow(struct idset *s)
{
	struct idset g = {NULL, s->cap ? s->cap * 2 : 1024, s->n};

	if(g.cap < s->cap || !(g.slots = calloc(g.cap, sizeof(*g.slots)))){
		return -1;
	}
	for(size_t i = 0; i < s->cap; i++){
		if(s->slots[i]){
			g.slots[slot_of(&g, s->slots[i])] = s->slots[i];
		}
	}
	free(s->slots);
	*s = g;
	return 0;
}

int idset_add(struct idset *s, uint64_t id)
{
	size_t i;

	if((s->n + 1) * 2 > s->cap && grow(s)){
		return -1;
	}
	i = slot_of(s, id);
	if(!s->slots[i]){
		s->slots[i] = id;
		s->n++;
	}
	return 0;
}

bool idset_has(const struct idset *s, uint64_t id)
{
	return s->cap && id && s->slots[slot_of(s, id)] == id;
}

bool idset_remove(struct idset *s, uint64_t id)
{
	size_t i, mask;

	if(!idset_has(s, id)){
		return false;
	}
	mask = s->cap - 1;
	i = slot_of(s, id);
	s->slots[i] = 0;
	s->n--;
	/* Moves back the entries of the run after i that would no longer be
	 * found past the hole. */
	for(size_t j = (i + 1) & mask; s->slots[j]; j = (j + 1) & mask){
		uint64_t moved = s->slots[j];
		s->slots[j] = 0;
		s->slots[slot_of(s, moved)] = moved;
	}
	return true;
}

void idset_free(struct idset *s)
{
	free(s->slots);
	*s = (struct idset){NULL, 0, 0};
}
