/* Idempotent publishes (plugin_opt_dedup_property).
 *
 * A publish that carries a message id already seen from the same identity
 * (username, else client id) within plugin_opt_dedup_window is acknowledged
 * as usual and not routed: MESSAGE_IN gives it a topic no subscription can
 * match (its first level is longer than a topic filter may be). The ids are
 * kept in memory (dedup.c) and in the store, and come back from the journal.
 *
 * QoS 2: the broker itself recognises a resent PUBLISH of an exchange still
 * in progress by its packet id, and renaming it would make the broker drop
 * the original. So an id stays "pending" from its first PUBLISH until the
 * broker holds the message for a session (then a resend is the broker's to
 * match) or routes it; the ids of exchanges the broker drops with a
 * connection are forgotten. */
#include "adapter.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SINK_TOPIC_LEN 65536u
#define SWEEP_PER_TICK 1024

struct q2_pending {
	uint8_t key[HASH_LEN];
	char *clientid;
	uint64_t store_id;   /* the body the broker holds for the session; 0: none yet */
};

static const char *identity_of(const char *username, const char *clientid)
{
	return username ? username : clientid;
}

/* The value of the user property named pl->cfg.dedup_property. */
static bool msg_id_of(struct plugin *pl, const mosquitto_property *props, struct bytes *id)
{
	size_t nlen = strlen(pl->cfg.dedup_property);

	for(const mosquitto_property *p = props; p; p = mosquitto_property_next(p)){
		if(mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY
				|| mosquitto_property_string_name_length(p) != nlen
				|| memcmp(mosquitto_property_string_name(p), pl->cfg.dedup_property, nlen)){
			continue;
		}
		id->data = (const uint8_t *)mosquitto_property_string_value(p);
		id->len = mosquitto_property_string_value_length(p);
		if(!id->data){
			id->data = (const uint8_t *)"";
		}
		return true;
	}
	return false;
}

static void dedup_register(struct plugin *pl, const uint8_t key[HASH_LEN], const char *identity,
		struct bytes id, time_t now)
{
	struct rec_dedup r = {.expiry = now + pl->cfg.dedup_window, .identity = identity, .msg_id = id};
	uint8_t evicted[HASH_LEN];
	bool did_evict;

	dedup_insert(pl->dedup, key, r.expiry, evicted, &did_evict);
	if(did_evict){
		pl->dedup_evicted++;
		store_result(store_dedup_delete(pl->store, evicted), "a message id eviction");
	}
	store_result(store_dedup_put(pl->store, key, &r), "a message id");
}

static struct q2_pending *pending_find(struct plugin *pl, const uint8_t *key, uint64_t store_id)
{
	for(size_t i = 0; i < pl->n_q2p; i++){
		struct q2_pending *p = &pl->q2p[i];
		if(key ? !memcmp(p->key, key, HASH_LEN) : (store_id && p->store_id == store_id)){
			return p;
		}
	}
	return NULL;
}

static void pending_drop(struct plugin *pl, struct q2_pending *p)
{
	free(p->clientid);
	*p = pl->q2p[--pl->n_q2p];
}

static void pending_add(struct plugin *pl, const uint8_t key[HASH_LEN], const char *clientid)
{
	if(ARRAY_GROW(pl->q2p, pl->n_q2p, pl->cap_q2p, 16)){
		return;
	}
	struct q2_pending *p = &pl->q2p[pl->n_q2p];
	p->clientid = strdup(clientid);
	if(p->clientid){
		memcpy(p->key, key, HASH_LEN);
		p->store_id = 0;
		pl->n_q2p++;
	}
}

/* Gives a duplicate a topic that nothing matches, and no retain flag. */
static int divert(struct plugin *pl, struct mosquitto_evt_message *ed)
{
	char *topic = mosquitto_malloc(SINK_TOPIC_LEN + 1);

	if(!topic){
		return MOSQ_ERR_NOMEM;
	}
	memset(topic, 'x', SINK_TOPIC_LEN);
	memcpy(topic, "$persist-lmdb-duplicate-", 24);
	topic[SINK_TOPIC_LEN] = '\0';
	ed->topic = topic;
	ed->retain = false;
	pl->dedup_dropped++;
	return MOSQ_ERR_SUCCESS;
}

/* MESSAGE_IN: returns true when the publish is a duplicate (and diverted). */
bool dedup_check(struct plugin *pl, struct mosquitto_evt_message *ed)
{
	const char *clientid = mosquitto_client_id(ed->client);
	const char *identity = identity_of(mosquitto_client_username(ed->client), clientid);
	struct rec_dedup r = {.identity = identity};
	uint8_t key[HASH_LEN];
	time_t now;

	if(!pl->dedup || !ed->properties || !identity || !msg_id_of(pl, ed->properties, &r.msg_id)){
		return false;
	}
	if(store_dedup_key(pl->store, &r, key) != STORE_OK){
		return false;
	}
	now = time(NULL);
	if(dedup_seen(pl->dedup, key, now)){
		struct q2_pending *p = ed->qos == 2 ? pending_find(pl, key, 0) : NULL;
		if(p && p->store_id){
			return false;
		}
		return divert(pl, ed) == MOSQ_ERR_SUCCESS;
	}
	dedup_register(pl, key, identity, r.msg_id, now);
	if(ed->qos == 2 && clientid){
		pending_add(pl, key, clientid);
	}
	return false;
}

/* A QoS 2 body is stored for a session: held incoming (the broker matches
 * resends by packet id from now on) or routed. */
void dedup_q2_stored(struct plugin *pl, const struct mosquitto_base_msg *d, uint8_t direction)
{
	struct rec_dedup r = {.identity = identity_of(d->source_username, d->source_id)};
	struct q2_pending *p;
	uint8_t key[HASH_LEN];

	if(!pl->n_q2p || !r.identity || !d->properties || !msg_id_of(pl, d->properties, &r.msg_id)
			|| store_dedup_key(pl->store, &r, key) != STORE_OK){
		return;
	}
	p = pending_find(pl, key, 0);
	if(p){
		if(direction == MSG_DIR_IN){
			p->store_id = d->store_id;
		}else{
			pending_drop(pl, p);
		}
	}
}

void dedup_q2_released(struct plugin *pl, uint64_t store_id)
{
	struct q2_pending *p = pl->n_q2p ? pending_find(pl, NULL, store_id) : NULL;

	if(p){
		pending_drop(pl, p);
	}
}

/* The broker dropped the client's exchanges in progress (all of them when
 * the session ended, only those it did not hold when the connection did). */
void dedup_client_gone(struct plugin *pl, const char *clientid, bool session_ended)
{
	for(size_t i = 0; i < pl->n_q2p;){
		struct q2_pending *p = &pl->q2p[i];
		if(!strcmp(p->clientid, clientid) && (session_ended || !p->store_id)){
			if(dedup_forget(pl->dedup, p->key)){
				store_result(store_dedup_delete(pl->store, p->key), "a message id deletion");
			}
			pending_drop(pl, p);
		}else{
			i++;
		}
	}
}

/* A replayed journal record carries its message id: register it again. */
void dedup_note(struct plugin *pl, const struct rec_base_msg *m)
{
	struct rec_dedup r = {.identity = identity_of(m->source_username, m->source_id)};
	mosquitto_property *props = NULL;
	uint8_t key[HASH_LEN];
	time_t now = time(NULL);

	if(!pl->dedup || !r.identity || !m->properties.data || props_decode(m->properties, &props)){
		return;
	}
	if(msg_id_of(pl, props, &r.msg_id) && store_dedup_key(pl->store, &r, key) == STORE_OK
			&& !dedup_seen(pl->dedup, key, now)){
		dedup_register(pl, key, r.identity, r.msg_id, now);
	}
	mosquitto_property_free_all(&props);
}

void dedup_sweep(struct plugin *pl)
{
	uint8_t key[HASH_LEN];
	time_t now = time(NULL);

	for(int i = 0; pl->dedup && i < SWEEP_PER_TICK && dedup_pop_expired(pl->dedup, now, key); i++){
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
		return MOSQ_ERR_SUCCESS;
	}
	pl->dedup = dedup_new(pl->cfg.dedup_max_ids);
	if(!pl->dedup){
		return MOSQ_ERR_NOMEM;
	}
	rc = store_walk_dedup(pl->store, load_one, &l);
	if(rc == STORE_OK){
		if(l.n){
			qsort(l.v, l.n, sizeof(*l.v), by_expiry);
		}
		for(size_t i = 0; i < l.n; i++){
			dedup_insert(pl->dedup, l.v[i].key, l.v[i].expiry, evicted, &did_evict);
			if(did_evict){
				store_dedup_delete(pl->store, evicted);
			}
		}
	}
	free(l.v);
	return rc == STORE_OK ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
}

void dedup_close(struct plugin *pl)
{
	for(size_t i = 0; i < pl->n_q2p; i++){
		free(pl->q2p[i].clientid);
	}
	free(pl->q2p);
	pl->q2p = NULL;
	pl->n_q2p = pl->cap_q2p = 0;
	dedup_free(pl->dedup);
	pl->dedup = NULL;
}

void msgid_stats(const struct plugin *pl, struct feature_stats *out)
{
	out->dedup_ids = pl->dedup ? dedup_count(pl->dedup) : 0;
	out->duplicates_dropped = pl->dedup_dropped;
	out->dedup_ids_evicted = pl->dedup_evicted;
}
