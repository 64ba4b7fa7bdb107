/* Idempotent publishes (plugin_opt_dedup_property).
 *
 * A publish that carries a message id already seen from the same identity
 * (username, else client id) within plugin_opt_dedup_window is acknowledged
 * as usual and not routed: MESSAGE_IN (events.c) gives it a topic no
 * subscription can match (its first level is longer than a topic filter may
 * be). The ids are kept in memory (dedup.c) and in the store, and come back
 * from the journal.
 *
 * QoS 2: the broker itself recognises a resent PUBLISH of an exchange still
 * in progress by its packet id, and renaming it would make the broker drop
 * the original. So an id stays "pending" from its first PUBLISH until the
 * broker holds the message for a session (then a resend is the broker's to
 * match) or routes it; the ids of exchanges the broker drops with a
 * connection are forgotten. */
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SWEEP_PER_TICK 1024

struct q2_pending {
	uint8_t key[HASH_LEN];
	char *clientid;
	uint64_t store_id;   /* the body the broker holds for the session; 0: none yet */
};

struct msgid {
	struct dedup *ids;       /* NULL: deduplication off */
	struct q2_pending *q2p;  /* QoS 2 message ids whose exchange is in progress */
	size_t n_q2p, cap_q2p;
	uint64_t dropped, evicted;
};

static const char *identity_of(const char *username, const char *clientid)
{
	return username ? username : clientid;
}

static void dedup_register(struct plugin *pl, const uint8_t key[HASH_LEN], const char *identity,
		struct bytes id, time_t now)
{
	struct rec_dedup r = {.expiry = now + pl->cfg.dedup_window, .identity = identity, .msg_id = id};
	uint8_t evicted[HASH_LEN];
	bool did_evict;

	dedup_insert(pl->msgid->ids, key, r.expiry, evicted, &did_evict);
	if(did_evict){
		pl->msgid->evicted++;
		store_result(store_dedup_delete(pl->store, evicted), "a message id eviction");
	}
	store_result(store_dedup_put(pl->store, key, &r), "a message id");
}

static struct q2_pending *pending_find(struct plugin *pl, const uint8_t *key, uint64_t store_id)
{
	for(size_t i = 0; i < pl->msgid->n_q2p; i++){
		struct q2_pending *p = &pl->msgid->q2p[i];
		if(key ? !memcmp(p->key, key, HASH_LEN) : (store_id && p->store_id == store_id)){
			return p;
		}
	}
	return NULL;
}

static void pending_drop(struct plugin *pl, struct q2_pending *p)
{
	free(p->clientid);
	*p = pl->msgid->q2p[--pl->msgid->n_q2p];
}

static void pending_add(struct plugin *pl, const uint8_t key[HASH_LEN], const char *clientid)
{
	if(ARRAY_GROW(pl->msgid->q2p, pl->msgid->n_q2p, pl->msgid->cap_q2p, 16)){
		return;
	}
	struct q2_pending *p = &pl->msgid->q2p[pl->msgid->n_q2p];
	p->clientid = strdup(clientid);
	if(p->clientid){
		memcpy(p->key, key, HASH_LEN);
		p->store_id = 0;
		pl->msgid->n_q2p++;
	}
}

bool dedup_check(struct plugin *pl, const struct message *p)
{
	const char *clientid = p->m.source_id;
	const char *identity = identity_of(p->m.source_username, clientid);
	struct rec_dedup r = {.identity = identity, .msg_id = p->msg_id};
	uint8_t key[HASH_LEN];
	time_t now;

	if(!pl->msgid->ids || !identity || !p->msg_id.data){
		return false;
	}
	if(store_dedup_key(pl->store, &r, key) != STORE_OK){
		return false;
	}
	now = time(NULL);
	if(dedup_seen(pl->msgid->ids, key, now)){
		struct q2_pending *q = p->m.qos == 2 ? pending_find(pl, key, 0) : NULL;
		if(q && q->store_id){
			return false;
		}
		pl->msgid->dropped++;
		return true;
	}
	dedup_register(pl, key, identity, r.msg_id, now);
	if(p->m.qos == 2 && clientid){
		pending_add(pl, key, clientid);
	}
	return false;
}

/* A QoS 2 body is stored for a session: held incoming (the broker matches
 * resends by packet id from now on) or routed. */
void dedup_q2_stored(struct plugin *pl, const struct message *b, uint8_t direction)
{
	struct rec_dedup r = {.identity = identity_of(b->m.source_username, b->m.source_id), .msg_id = b->msg_id};
	struct q2_pending *p;
	uint8_t key[HASH_LEN];

	if(!pl->msgid->n_q2p || !r.identity || !b->msg_id.data || store_dedup_key(pl->store, &r, key) != STORE_OK){
		return;
	}
	p = pending_find(pl, key, 0);
	if(p){
		if(direction == MSG_DIR_IN){
			p->store_id = b->store_id;
		}else{
			pending_drop(pl, p);
		}
	}
}

void dedup_q2_released(struct plugin *pl, uint64_t store_id)
{
	struct q2_pending *p = pl->msgid->n_q2p ? pending_find(pl, NULL, store_id) : NULL;

	if(p){
		pending_drop(pl, p);
	}
}

/* The broker dropped the client's exchanges in progress (all of them when
 * the session ended, only those it did not hold when the connection did). */
void dedup_client_gone(struct plugin *pl, const char *clientid, bool session_ended)
{
	for(size_t i = 0; i < pl->msgid->n_q2p;){
		struct q2_pending *p = &pl->msgid->q2p[i];
		if(!strcmp(p->clientid, clientid) && (session_ended || !p->store_id)){
			if(dedup_forget(pl->msgid->ids, p->key)){
				store_result(store_dedup_delete(pl->store, p->key), "a message id deletion");
			}
			pending_drop(pl, p);
		}else{
			i++;
		}
	}
}

/* A replayed journal record carries its message id: register it again. */
void dedup_note(struct plugin *pl, const struct message *p)
{
	struct rec_dedup r = {.identity = identity_of(p->m.source_username, p->m.source_id), .msg_id = p->msg_id};
	uint8_t key[HASH_LEN];
	time_t now = time(NULL);

	if(pl->msgid->ids && r.identity && p->msg_id.data && store_dedup_key(pl->store, &r, key) == STORE_OK
			&& !dedup_seen(pl->msgid->ids, key, now)){
		dedup_register(pl, key, r.identity, r.msg_id, now);
	}
}

void dedup_sweep(struct plugin *pl)
{
	uint8_t key[HASH_LEN];
	time_t now = time(NULL);

	for(int i = 0; pl->msgid->ids && i < SWEEP_PER_TICK && dedup_pop_expired(pl->msgid->ids, now, key); i++){
		store_result(store_dedup_delete(pl->store, key), "an expired message id");
	}
}

struct loaded {
	uint8_t key[HASH_LEN];
	int64_t expiry;
};

struct load {
	struct plugin *pl;
	struct loaded *v;
	size_t n, cap;
	time_t now;
};

static int load_one(void *ctx, const uint8_t key[HASH_LEN], const struct rec_dedup *d)
{
	struct load *l = ctx;

	if(d->expiry < l->now){
		return store_dedup_delete(l->pl->store, key) ? -1 : 0;
	}
	if(ARRAY_GROW(l->v, l->n, l->cap, 1024)){
		return -1;
	}
	memcpy(l->v[l->n].key, key, HASH_LEN);
	l->v[l->n++].expiry = d->expiry;
	return 0;
}

static int by_expiry(const void *a, const void *b)
{
	const struct loaded *x = a, *y = b;
	return x->expiry < y->expiry ? -1 : x->expiry > y->expiry;
}

/* Opens the index and loads the stored ids, oldest first. */
int dedup_open(struct plugin *pl)
{
	struct load l = {.pl = pl, .now = time(NULL)};
	uint8_t evicted[HASH_LEN];
	bool did_evict;
	int rc;

	if(!pl->cfg.dedup_window){
		return BROKER_OK;
	}
	pl->msgid->ids = dedup_new(pl->cfg.dedup_max_ids);
	if(!pl->msgid->ids){
		return BROKER_NOMEM;
	}
	rc = store_walk_dedup(pl->store, load_one, &l);
	if(rc == STORE_OK){
		if(l.n){
			qsort(l.v, l.n, sizeof(*l.v), by_expiry);
		}
		for(size_t i = 0; i < l.n; i++){
			dedup_insert(pl->msgid->ids, l.v[i].key, l.v[i].expiry, evicted, &did_evict);
			if(did_evict){
				store_dedup_delete(pl->store, evicted);
			}
		}
	}
	free(l.v);
	return rc == STORE_OK ? BROKER_OK : BROKER_NOMEM;
}

struct msgid *msgid_new(void)
{
	return calloc(1, sizeof(struct msgid));
}

void msgid_free(struct msgid *m)
{
	if(!m){
		return;
	}
	for(size_t i = 0; i < m->n_q2p; i++){
		free(m->q2p[i].clientid);
	}
	free(m->q2p);
	dedup_free(m->ids);
	free(m);
}

void msgid_stats(const struct msgid *m, struct feature_stats *out)
{
	out->dedup_ids = m->ids ? dedup_count(m->ids) : 0;
	out->duplicates_dropped = m->dropped;
	out->dedup_ids_evicted = m->evicted;
}
