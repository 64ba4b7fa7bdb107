/* The message bodies the features keep track of, by store id: one table
 * for what the retention limits need (a body's payload size and expiry)
 * and what a hand-back needs in disk mode (whether the broker holds it).
 * Fed by the broker's body events, by hand-overs and, at a restart in disk
 * mode, by the store. */
#include "feature.h"

#include <stdlib.h>

struct bodies {
	struct u64map notes;   /* store id -> struct body_note */
};

/* Kept only where a feature reads them. */
static bool needed(const struct plugin *pl)
{
	return backlog_on(pl) || retention_on(pl);
}

static void note(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry, bool held)
{
	struct body_note *n;

	if(!needed(pl) || !store_id){
		return;
	}
	n = u64map_add(&pl->bodies->notes, store_id);
	if(!n){
		/* Not knowing it is held, a later hand-back adds the body again,
		 * which the broker refuses as a duplicate; its entries count 0
		 * bytes and no expiry. */
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: out of memory noting message %llu",
				(unsigned long long)store_id);
		return;
	}
	*n = (struct body_note){.expiry = expiry, .bytes = bytes, .held = held || n->held};
}

void bodies_held(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry)
{
	note(pl, store_id, bytes, expiry, backlog_on(pl));
}

void bodies_stored(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry)
{
	note(pl, store_id, bytes, expiry, false);
}

void bodies_gone(struct plugin *pl, uint64_t store_id)
{
	u64map_remove(&pl->bodies->notes, store_id);
}

const struct body_note *bodies_find(const struct plugin *pl, uint64_t store_id)
{
	return u64map_get(&pl->bodies->notes, store_id);
}

bool bodies_resident(const struct plugin *pl, uint64_t store_id)
{
	const struct body_note *n = bodies_find(pl, store_id);

	return n && n->held;
}

/* What the broker routes from now on, it holds: the others were read for
 * the stored queues' limits and are not looked up again. Out of memory,
 * they stay. */
void bodies_keep_held(struct plugin *pl)
{
	struct u64map kept;
	struct body_note *n;
	uint64_t id;
	size_t c = 0;

	u64map_init(&kept, sizeof(struct body_note));
	while((n = u64map_next(&pl->bodies->notes, &c, &id))){
		struct body_note *k;
		if(!n->held){
			continue;
		}
		if(!(k = u64map_add(&kept, id))){
			u64map_free(&kept);
			return;
		}
		*k = *n;
	}
	u64map_free(&pl->bodies->notes);
	pl->bodies->notes = kept;
}

struct bodies *bodies_new(void)
{
	struct bodies *b = malloc(sizeof(*b));

	if(b){
		u64map_init(&b->notes, sizeof(struct body_note));
	}
	return b;
}

void bodies_free(struct bodies *b)
{
	if(b){
		u64map_free(&b->notes);
		free(b);
	}
}
