/* What the broker acknowledges before a tick commits it, and how it comes
 * back after a crash (journal.h):
 *   - an accepted QoS 1 PUBLISH (MESSAGE_IN runs before routing and before
 *     the PUBACK is written): replayed by routing it again;
 *   - a QoS 2 message when the broker first stores it for a session: for a
 *     publisher with a session, as the incoming message (before PUBREC);
 *     for one without, when PUBREL routes it (before PUBCOMP): replayed by
 *     routing it again. A QoS 2 message no session stores needs nothing;
 *   - an outgoing QoS 2 message that got PUBREC (the PUBREL follows at
 *     once): restored so that the client gets PUBREL again, not PUBLISH;
 *   - an incoming QoS 2 message released by PUBREL (PUBCOMP follows at
 *     once): routed from the stored incoming entry. */
#include "adapter.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_EVERY_S 10

static bool dedup_check(struct plugin *pl, struct mosquitto_evt_message *ed);
static void dedup_q2_stored(struct plugin *pl, const struct mosquitto_base_msg *d, uint8_t direction);

static void log_limited(struct plugin *pl, const char *what, int rc)
{
	time_t now = time(NULL);

	if(now - pl->journal_log_time >= LOG_EVERY_S){
		pl->journal_log_time = now;
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: cannot journal %s (%s); it is durable "
				"at the next commit instead", what, journal_strerror(rc));
	}
}

/* Everything the broker did up to the last journal record is buffered in
 * the store by now (events come before the packets they cause): mark it. */
void journal_mark(struct plugin *pl)
{
	uint64_t last;

	if(!pl->journal){
		return;
	}
	last = journal_last_lsn(pl->journal);
	if(last != pl->marked_lsn && store_journal_mark(pl->store, last) == STORE_OK){
		pl->marked_lsn = last;
	}
	journal_release(pl->journal, store_journal_committed(pl->store));
}

/* Returns the record's lsn, 0 when it could not be journaled. */
static uint64_t journal_write(struct plugin *pl, const struct rec_journal *r, const char *what)
{
	uint64_t lsn = 0;
	int rc;

	buf_reset(&pl->jbuf);
	record_encode_journal(&pl->jbuf, r);
	if(pl->jbuf.err){
		pl->jbuf.err = false;
		log_limited(pl, what, JOURNAL_ERR_NOMEM);
		return 0;
	}
	rc = journal_append(pl->journal, pl->jbuf.data, pl->jbuf.len, pl->cfg.sync == SYNC_PUBLISH, &lsn);
	if(rc == JOURNAL_FULL){
		/* The writer fell a whole journal behind: wait for it. */
		journal_mark(pl);
		if(store_commit(pl->store) == STORE_OK){
			journal_release(pl->journal, store_journal_committed(pl->store));
		}
		rc = journal_append(pl->journal, pl->jbuf.data, pl->jbuf.len, pl->cfg.sync == SYNC_PUBLISH, &lsn);
	}
	if(rc){
		log_limited(pl, what, rc);
		return 0;
	}
	return lsn;
}

/* While the database's device is full nothing more can be kept: QoS 1/2
 * publishes are refused rather than acknowledged and lost. MQTT 5 has a
 * reason code for it; an MQTT 3.1.1 PUBACK has none, so such a publisher
 * is disconnected and resends after reconnecting. */
static int refuse_disk_full(struct plugin *pl, const struct mosquitto_evt_message *ed)
{
	time_t now = time(NULL);

	pl->refused_disk_full++;
	if(now - pl->disk_full_log_time >= LOG_EVERY_S){
		pl->disk_full_log_time = now;
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: the device of %s is full: refusing QoS 1/2 "
				"publishes until a commit succeeds (%llu refused so far)", pl->cfg.db_path,
				(unsigned long long)pl->refused_disk_full);
	}
	return mosquitto_client_protocol_version(ed->client) == 5 ? MOSQ_ERR_QUOTA_EXCEEDED
		: MOSQ_ERR_ADMINISTRATIVE_ACTION;
}

int on_message_in(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct plugin *pl = userdata;
	struct rec_journal r;

	(void)event;
	if(ed->qos > 0 && store_disk_full(pl->store)){
		return refuse_disk_full(pl, ed);
	}
	if(dedup_check(pl, ed) || ed->qos != 1 || !pl->journal){
		return MOSQ_ERR_SUCCESS;
	}
	memset(&r, 0, sizeof(r));
	r.kind = JREC_PUBLISH;
	r.msg.topic = ed->topic;
	r.msg.payload.data = ed->payloadlen ? ed->payload : (const void *)"";
	r.msg.payload.len = ed->payloadlen;
	r.msg.qos = ed->qos;
	r.msg.retain = ed->retain;
	r.msg.source_id = mosquitto_client_id(ed->client);
	r.msg.source_username = mosquitto_client_username(ed->client);
	if(ed->properties){
		buf_reset(&pl->props);
		props_encode(&pl->props, ed->properties);
		if(pl->props.err){
			pl->props.err = false;
			log_limited(pl, "a message's properties", JOURNAL_ERR_NOMEM);
			return MOSQ_ERR_SUCCESS;
		}
		r.msg.properties.data = pl->props.data;
		r.msg.properties.len = pl->props.len;
	}
	journal_write(pl, &r, "an accepted message");
	return MOSQ_ERR_SUCCESS;
}

/* The broker raises the body's event and then, at once, the event of the
 * first session or retained entry that holds it. */
void journal_q2_stash(struct plugin *pl, const struct mosquitto_base_msg *d)
{
	if(pl->journal && d->qos == 2){
		pl->q2_stash = *d;
	}
}

void journal_q2_stored(struct plugin *pl, uint64_t store_id, uint8_t direction)
{
	const struct mosquitto_base_msg *d = &pl->q2_stash;
	struct rec_journal r;

	if(!d->store_id){
		return;
	}
	if(d->store_id == store_id){
		dedup_q2_stored(pl, d, direction);
		memset(&r, 0, sizeof(r));
		r.kind = JREC_PUBLISH;
		r.msg.topic = d->topic;
		r.msg.payload.data = d->payloadlen ? d->payload : (const void *)"";
		r.msg.payload.len = d->payloadlen;
		r.msg.qos = d->qos;
		r.msg.retain = d->retain;
		r.msg.source_id = d->source_id;
		r.msg.source_username = d->source_username;
		r.msg.expiry_time = d->expiry_time;
		if(d->properties){
			buf_reset(&pl->props);
			props_encode(&pl->props, d->properties);
			if(!pl->props.err){
				r.msg.properties.data = pl->props.data;
				r.msg.properties.len = pl->props.len;
			}
			pl->props.err = false;
		}
		pl->q2_routed_lsn = journal_write(pl, &r, "a QoS 2 message");
	}
	memset(&pl->q2_stash, 0, sizeof(pl->q2_stash));
}

/* A PUBREL is about to leave: from then on the client may have the message.
 * If a QoS 2 routing is still only in the journal, replaying it after a
 * crash would route this message to the client once more, as a new one; so
 * that routing is committed first (one commit serves every PUBREL of the
 * loop iteration). */
void journal_pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct rec_journal r = {.kind = JREC_PUBREL_SENT, .clientid = clientid};

	if(!pl->journal){
		return;
	}
	if(pl->q2_routed_lsn > store_journal_committed(pl->store)){
		journal_mark(pl);
		if(store_commit(pl->store) != STORE_OK){
			mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: cannot commit before a PUBREL to %s: "
					"after a crash now the message could come to it again", clientid);
		}
		journal_release(pl->journal, store_journal_committed(pl->store));
	}
	r.seq = store_queue_seq(pl->store, cmsg_id);
	journal_write(pl, &r, "a QoS 2 state change");
}

void journal_released_in(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct rec_journal r = {.kind = JREC_RELEASED_IN, .clientid = clientid};

	if(pl->journal){
		r.seq = store_queue_seq(pl->store, cmsg_id);
		pl->q2_routed_lsn = journal_write(pl, &r, "a released QoS 2 message");
	}
}

/* ---- outgoing QoS 2 messages whose PUBREL was sent before a restart ----
 *
 * The broker restores every message as queued, and turns queued messages
 * into new PUBLISHes when their client connects: a client that had already
 * completed the exchange would take the PUBLISH as a new message (MQTT 5,
 * 4.3.3). So restore.c has the broker move the session's first messages in
 * flight while the client is still away (a no-op deletion does that); the
 * broker reports each move, and here a message whose PUBREL was sent is put
 * back in its state, from which the broker resends PUBREL at the reconnect. */

bool pubrel_resume(struct plugin *pl, const struct mosquitto_client_msg *d)
{
	struct pubrel_list *l = pl->pubrel;
	struct mosquitto_client_msg cm;

	if(!l || strcmp(l->clientid, d->clientid)){
		return false;
	}
	for(size_t i = 0; i < l->n; i++){
		if(l->seqs[i] != d->cmsg_id){
			continue;
		}
		cm = *d;
		cm.state = MSG_STATE_WAIT_FOR_PUBCOMP;
		if(mosquitto_persist_client_msg_update(&cm) != MOSQ_ERR_SUCCESS){
			return false;
		}
		l->seqs[i] = l->seqs[--l->n];
		return true;
	}
	return false;
}

/* ---- idempotent publishes (plugin_opt_dedup_property) ----
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
		store_result(dedup_delete(pl->store, evicted), "a message id eviction");
	}
	store_result(dedup_put(pl->store, key, &r), "a message id");
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
	if(pl->n_q2p == pl->cap_q2p){
		size_t cap = pl->cap_q2p ? pl->cap_q2p * 2 : 16;
		struct q2_pending *p = realloc(pl->q2p, cap * sizeof(*p));
		if(!p){
			return;
		}
		pl->q2p = p;
		pl->cap_q2p = cap;
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
static bool dedup_check(struct plugin *pl, struct mosquitto_evt_message *ed)
{
	const char *clientid = mosquitto_client_id(ed->client);
	const char *identity = identity_of(mosquitto_client_username(ed->client), clientid);
	struct rec_dedup r = {.identity = identity};
	uint8_t key[HASH_LEN];
	time_t now;

	if(!pl->dedup || !ed->properties || !identity || !msg_id_of(pl, ed->properties, &r.msg_id)){
		return false;
	}
	if(dedup_key(pl->store, &r, key) != STORE_OK){
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
static void dedup_q2_stored(struct plugin *pl, const struct mosquitto_base_msg *d, uint8_t direction)
{
	struct rec_dedup r = {.identity = identity_of(d->source_username, d->source_id)};
	struct q2_pending *p;
	uint8_t key[HASH_LEN];

	if(!pl->n_q2p || !r.identity || !d->properties || !msg_id_of(pl, d->properties, &r.msg_id)
			|| dedup_key(pl->store, &r, key) != STORE_OK){
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
				store_result(dedup_delete(pl->store, p->key), "a message id deletion");
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
	if(msg_id_of(pl, props, &r.msg_id) && dedup_key(pl->store, &r, key) == STORE_OK
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
		store_result(dedup_delete(pl->store, key), "an expired message id");
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
		return dedup_delete(l->pl->store, key) ? -1 : 0;
	}
	if(l->n == l->cap){
		size_t cap = l->cap ? l->cap * 2 : 1024;
		struct loaded *v = realloc(l->v, cap * sizeof(*v));
		if(!v){
			return -1;
		}
		l->v = v;
		l->cap = cap;
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
				dedup_delete(pl->store, evicted);
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
