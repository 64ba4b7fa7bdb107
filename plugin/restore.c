/* MOSQ_EVT_PERSIST_RESTORE: rebuilds the broker's state from the store.
 * Order matters to the broker: message bodies first, then what refers to
 * them (retained entries, sessions with their subscriptions, queues in
 * sequence order, wills). */
#include "adapter.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A journal record after the last committed mark, copied out of the
 * journal (which is written again from the first tick on). */
struct jrec {
	uint64_t lsn;
	uint8_t *pt;
	size_t len;
	struct rec_journal r;     /* views into pt */
	uint64_t store_id;        /* JREC_RELEASED_IN: the incoming entry's body, 0 when gone */
};

struct restore {
	struct plugin *pl;
	struct jrec *j;           /* in lsn order */
	size_t n_j, cap_j;
	struct jrec **by_entry;   /* the queue-entry records, by client id and seq */
	size_t n_by_entry;
	struct jrec **by_change;  /* the records journal_apply changes a stored queue by, by client id */
	size_t n_by_change;
	unsigned long replayed, applied;
	struct handover *h;           /* each session's queue, handed over in turn */
	struct handover_journal jhooks;  /* what the journal says about its entries */
	unsigned long msgs, retained, sessions, subs, wills;
	unsigned long failed;
};

static int restore_msg(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct restore *r = ctx;

	if(features_restore_body(r->pl, store_id, m) == BROKER_OK){
		r->msgs++;
	}else{
		r->failed++;
	}
	return 0;
}

static int restore_retained(void *ctx, const struct rec_retain *rt)
{
	struct restore *r = ctx;

	if(features_restore_retained(r->pl, rt->store_id) != BROKER_OK){
		r->failed++;
		return 0;
	}
	if(mosquitto_persist_retain_msg_set(rt->topic, rt->store_id) == MOSQ_ERR_SUCCESS){
		r->retained++;
	}else{
		r->failed++;
	}
	return 0;
}

static int restore_sub(void *ctx, const struct rec_sub *s)
{
	struct restore *r = ctx;
	struct mosquitto_subscription sub;

	memset(&sub, 0, sizeof(sub));
	sub.clientid = (char *)s->clientid;
	sub.topic_filter = (char *)s->topic_filter;
	sub.identifier = s->identifier;
	sub.options = s->options;
	if(mosquitto_subscription_add(&sub) == MOSQ_ERR_SUCCESS){
		r->subs++;
	}else{
		r->failed++;
	}
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct jrec *x = *(const struct jrec *const *)a, *y = *(const struct jrec *const *)b;
	int c = strcmp(x->r.clientid, y->r.clientid);
	if(c){
		return c;
	}
	if(x->r.seq != y->r.seq){
		return x->r.seq < y->r.seq ? -1 : 1;
	}
	return x->r.kind - y->r.kind;
}

static struct jrec *journal_entry(struct restore *r, const char *clientid, uint64_t seq, uint8_t kind)
{
	struct jrec key = {.r = {.kind = kind, .clientid = clientid, .seq = seq}}, *kp = &key, **hit;

	if(!r->n_by_entry){
		return NULL;
	}
	hit = bsearch(&kp, r->by_entry, r->n_by_entry, sizeof(*r->by_entry), entry_cmp);
	return hit ? *hit : NULL;
}

/* The journal as handback.c asks it (struct handover_journal): an incoming
 * QoS 2 entry the journal says was released (its record learns the body),
 * and an outgoing QoS 2 entry whose PUBREL it says was sent. */
static bool journaled_released_in(void *ctx, const char *clientid, uint64_t seq, uint64_t store_id)
{
	struct jrec *e = journal_entry(ctx, clientid, seq, JREC_RELEASED_IN);

	if(e){
		e->store_id = store_id;
	}
	return e != NULL;
}

static bool journaled_pubrel_sent(void *ctx, const char *clientid, uint64_t seq, uint16_t *mid)
{
	struct jrec *e = journal_entry(ctx, clientid, seq, JREC_PUBREL_SENT);

	if(e){
		*mid = e->r.mid;
	}
	return e != NULL;
}

static int publish_copy(const struct rec_base_msg *m)
{
	mosquitto_property *props = NULL;
	void *payload = NULL;
	int rc;

	if(m->properties.data && props_decode(m->properties, &props)){
		return MOSQ_ERR_MALFORMED_PACKET;
	}
	if(m->payload.len){
		payload = broker_copy(m->payload.data, m->payload.len);
		if(!payload){
			mosquitto_property_free_all(&props);
			return MOSQ_ERR_NOMEM;
		}
	}
	rc = mosquitto_broker_publish(NULL, m->topic, (int)m->payload.len, payload, m->qos, m->retain, props);
	if(rc){
		mosquitto_free(payload);
		mosquitto_property_free_all(&props);
	}
	return rc;
}

static int publish_will(const struct rec_will *w)
{
	struct rec_base_msg m = {
		.topic = w->topic,
		.payload = w->payload,
		.properties = w->properties,
		.qos = w->qos,
		.retain = w->retain,
	};
	return publish_copy(&m);
}

struct will_owner {
	bool found;
	uint32_t will_delay_interval;
};

static int note_owner(void *ctx, const struct rec_session *s)
{
	struct will_owner *o = ctx;

	o->found = true;
	o->will_delay_interval = s->will_delay_interval;
	return 0;
}

/* A client that was connected when the broker stopped lost its connection
 * without a DISCONNECT: its will is due now, unless it has a session and a
 * will delay, in which case the will goes back onto the session and the
 * broker publishes it when the session ends. A will without a session
 * belonged to a clean-session client that was connected. */
static int restore_will(void *ctx, const struct rec_will *w)
{
	struct restore *r = ctx;
	struct store *st = r->pl->store;
	struct will_owner owner = {false, 0};
	mosquitto_property *props = NULL;
	int online, rc;

	if(store_session_get(st, w->clientid, note_owner, &owner) != STORE_OK){
		r->failed++;
		return 0;
	}
	online = owner.found ? store_session_was_online(st, w->clientid) : 1;
	if(online < 0){
		r->failed++;
		return 0;
	}
	if(!owner.found || (online && owner.will_delay_interval == 0)){
		rc = publish_will(w);
		store_will_delete(st, w->clientid);
	}else{
		if(w->properties.data && props_decode(w->properties, &props)){
			r->failed++;
			return 0;
		}
		rc = mosquitto_client_will_set(w->clientid, w->topic, (int)w->payload.len, w->payload.data,
				w->qos, w->retain, props);
		if(rc){
			mosquitto_property_free_all(&props);
		}
	}
	if(rc == MOSQ_ERR_SUCCESS){
		r->wills++;
	}else{
		r->failed++;
	}
	return 0;
}

/* Whether a list sorted by client id (entry_cmp) has one of clientid. */
static bool listed(struct jrec *const *list, size_t n, const char *clientid)
{
	for(size_t lo = 0, hi = n; lo < hi;){
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(list[mid]->r.clientid, clientid);
		if(!c){
			return true;
		}
		if(c < 0){
			lo = mid + 1;
		}else{
			hi = mid;
		}
	}
	return false;
}

static int restore_session(void *ctx, const struct rec_session *s)
{
	struct restore *r = ctx;
	struct mosquitto_client c;
	int online;

	online = store_session_was_online(r->pl->store, s->clientid);
	if(online < 0){
		r->failed++;
		return 0;
	}
	memset(&c, 0, sizeof(c));
	c.clientid = mosquitto_strdup(s->clientid);
	c.username = s->username ? mosquitto_strdup(s->username) : NULL;
	c.auth_method = s->auth_method ? mosquitto_strdup(s->auth_method) : NULL;
	c.will_delay_time = (time_t)s->will_delay_time;
	/* A connected client's session never got an expiry time for its
	 * current connection: it expires counting from now. */
	c.session_expiry_time = online ? 0 : (time_t)s->session_expiry_time;
	c.will_delay_interval = s->will_delay_interval;
	c.session_expiry_interval = s->session_expiry_interval;
	c.max_packet_size = s->max_packet_size;
	c.listener_port = s->listener_port;
	c.max_qos = s->max_qos;
	c.retain_available = s->retain_available;
	if(!c.clientid || (s->username && !c.username) || (s->auth_method && !c.auth_method)){
		mosquitto_free(c.clientid);
		mosquitto_free(c.username);
		mosquitto_free(c.auth_method);
		r->failed++;
		return 0;
	}
	/* The broker takes the strings whether or not it succeeds. */
	if(mosquitto_persist_client_add(&c) != MOSQ_ERR_SUCCESS){
		r->failed++;
		return 0;
	}
	r->sessions++;
	store_walk_subs(r->pl->store, s->clientid, restore_sub, r);
	if(features_restore_queue(r->pl, r->h, s->clientid, listed(r->by_entry, r->n_by_entry, s->clientid),
			listed(r->by_change, r->n_by_change, s->clientid))){
		r->failed++;
	}
	return 0;
}

static int collect(void *ctx, uint64_t lsn, const uint8_t *pt, size_t len)
{
	struct restore *r = ctx;
	struct jrec *e;

	if(ARRAY_GROW(r->j, r->n_j, r->cap_j, 64)){
		return JOURNAL_ERR_NOMEM;
	}
	e = &r->j[r->n_j];
	memset(e, 0, sizeof(*e));
	e->lsn = lsn;
	e->len = len;
	e->pt = malloc(len ? len : 1);
	if(!e->pt){
		return JOURNAL_ERR_NOMEM;
	}
	memcpy(e->pt, pt, len);
	if(record_decode_journal(e->pt, len, &e->r)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: journal record %llu is malformed; skipped",
				(unsigned long long)lsn);
		free(e->pt);
		return 0;
	}
	r->n_j++;
	return 0;
}

static int note_found(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	(void)store_id;
	(void)m;
	*(int *)ctx = 1;
	return 0;
}

/* Records that act on a stored queue entry as the restore hands it over. */
static bool names_entry(uint8_t kind)
{
	return kind == JREC_PUBREL_SENT || kind == JREC_RELEASED_IN;
}

/* Records journal_apply removes or adds an outgoing entry by. */
static bool changes_queue(uint8_t kind)
{
	return kind == JREC_COMPLETED || kind == JREC_ENTRY;
}

/* The records of kind(s) pick, sorted by client id and seq. */
static int journal_index(struct restore *r, bool (*pick)(uint8_t kind), struct jrec ***out, size_t *n_out)
{
	size_t n = 0;

	for(size_t i = 0; i < r->n_j; i++){
		n += pick(r->j[i].r.kind);
	}
	if(!n){
		return 0;
	}
	if(!(*out = malloc(n * sizeof(**out)))){
		return JOURNAL_ERR_NOMEM;
	}
	for(size_t i = 0; i < r->n_j; i++){
		if(pick(r->j[i].r.kind)){
			(*out)[(*n_out)++] = &r->j[i];
		}
	}
	qsort(*out, *n_out, sizeof(**out), entry_cmp);
	return 0;
}

/* An incoming QoS 2 message its publisher's session held before PUBREL. */
static int incoming_put(struct store *st, const struct rec_journal *j)
{
	struct rec_queue q = {
		.store_id = j->store_id,
		.mid = j->mid,
		.qos = 2,
		.direction = MSG_DIR_IN,
		.state = MSG_STATE_WAIT_FOR_PUBREL,
	};
	int found = 0, rc;

	rc = store_msg_get(st, j->store_id, note_found, &found);
	if(rc == STORE_OK && !found){
		rc = store_msg_put(st, j->store_id, &j->msg);
	}
	return rc == STORE_OK ? store_queue_update(st, j->clientid, j->seq, &q) : rc;
}

/* Applies, in lsn order, the journaled changes of sessions, subscriptions,
 * wills, connections, completed exchanges and incoming QoS 2 messages, and
 * commits them: the walks that follow read the store as the broker left
 * it. The journal mark does not move (the first tick's commit moves it), so
 * a crash before then applies them again, which changes nothing. */
static int journal_apply(struct restore *r)
{
	struct store *st = r->pl->store;
	unsigned long n = 0;
	int rc = STORE_OK;

	for(size_t i = 0; i < r->n_j && rc == STORE_OK; i++){
		const struct rec_journal *j = &r->j[i].r;

		n++;
		switch(j->kind){
			case JREC_SESSION: rc = store_session_put(st, &j->session); break;
			case JREC_SESSION_GONE: rc = store_session_delete(st, j->clientid); break;
			case JREC_SUB: rc = store_sub_put(st, &j->sub); break;
			case JREC_SUB_GONE: rc = store_sub_delete(st, j->sub.clientid, j->sub.topic_filter); break;
			case JREC_WILL: rc = store_will_put(st, &j->will); break;
			case JREC_WILL_GONE: rc = store_will_delete(st, j->clientid); break;
			case JREC_WILL_SENT: rc = store_will_delete(st, j->clientid); break; /* routed below */
			case JREC_ONLINE: rc = store_session_set_online(st, j->clientid, j->seq != 0); break;
			case JREC_COMPLETED:
				replay_note_completed(r->pl, j->clientid, j->store_id);
				rc = store_queue_remove(st, j->clientid, j->seq, 0);
				break;
			case JREC_INCOMING: rc = incoming_put(st, j); break;
			case JREC_ENTRY: rc = store_queue_update(st, j->clientid, j->seq, &j->entry); break;
			default: n--; break;
		}
	}
	if(rc == STORE_OK && n){
		rc = store_commit(st);
	}
	if(rc){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot apply the journal's session changes: %s",
				store_strerror(rc));
		return rc;
	}
	r->applied = n;
	return STORE_OK;
}

static int journal_read(struct restore *r)
{
	uint64_t unreadable;
	int rc;

	rc = journal_replay(r->pl->journal, store_journal_committed(r->pl->store), collect, r, &unreadable);
	if(rc){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot read the journal: %s", journal_strerror(rc));
		return rc;
	}
	if(unreadable){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "persist-lmdb: %llu journal records were cut short by the "
				"crash (never acknowledged); skipped", (unsigned long long)unreadable);
	}
	rc = journal_index(r, names_entry, &r->by_entry, &r->n_by_entry);
	return rc ? rc : journal_index(r, changes_queue, &r->by_change, &r->n_by_change);
}

struct route {
	struct plugin *pl;
	uint64_t lsn;
	int rc;
};

static int route_body(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct route *rt = ctx;

	(void)store_id;
	if(replay_partial(rt->pl, rt->lsn)){
		replay_body(rt->pl, m);
	}
	rt->rc = publish_copy(m);
	return 0;
}

/* A replayed routing's message id (plugin_opt_dedup_property) is known again. */
static void note_msg_id(struct plugin *pl, const struct rec_base_msg *m)
{
	struct message p = {.m = *m};
	mosquitto_property *props = NULL;

	if(!pl->cfg.dedup_window || !m->properties.data || props_decode(m->properties, &props)){
		return;
	}
	if(props_user_value(props, pl->cfg.dedup_property, &p.msg_id)){
		features_replayed(pl, &p);
	}
	mosquitto_property_free_all(&props);
}

/* Routes, in journal order, what was accepted or released and not committed.
 * The broker routes these in its next loop iteration, before the first tick,
 * so the first commit holds their routing together with the journal mark. */
static void journal_route(struct restore *r)
{
	for(size_t i = 0; i < r->n_j; i++){
		struct jrec *e = &r->j[i];
		int rc = MOSQ_ERR_SUCCESS;

		if(e->r.kind == JREC_PUBLISH || e->r.kind == JREC_WILL_SENT || e->r.kind == JREC_ROUTED){
			if(e->r.kind == JREC_ROUTED && replay_partial(r->pl, e->lsn)){
				replay_body(r->pl, &e->r.msg);
			}
			rc = publish_copy(&e->r.msg);
			note_msg_id(r->pl, &e->r.msg);
		}else if(e->r.kind == JREC_RELEASED_IN && e->store_id){
			struct route rt = {r->pl, e->lsn, MOSQ_ERR_NOT_FOUND};
			rc = store_msg_get(r->pl->store, e->store_id, route_body, &rt) == STORE_OK ? rt.rc : MOSQ_ERR_UNKNOWN;
		}else{
			continue;
		}
		if(rc == MOSQ_ERR_SUCCESS){
			r->replayed++;
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot route journal record %llu again: %s",
					(unsigned long long)e->lsn, mosquitto_strerror(rc));
			r->failed++;
		}
	}
}

static void journal_done(struct restore *r)
{
	for(size_t i = 0; i < r->n_j; i++){
		seal_wipe(r->j[i].pt, r->j[i].len);
		free(r->j[i].pt);
	}
	free(r->j);
	free(r->by_entry);
	free(r->by_change);
}

/* ---- a QoS 2 routing done again ----
 *
 * A QoS 2 routing can be committed in part (intake.c, journal_q2_out): the
 * commit that precedes a connected recipient's PUBLISH marks up to just
 * before the routing's record, and only that record can be in that state:
 * it is the first after the committed mark. The restart routes it again;
 * the sessions that hold the message already (a stored copy, or an
 * exchange over it completed after the commit) must not get it twice, so
 * the copies the broker makes for them are dropped, at the first tick,
 * before the broker serves any client. */

struct replay {
	uint64_t lsn;            /* the routing's record */
	uint64_t store_id;       /* the body routed before the crash */
	uint64_t new_store_id;   /* the body the broker routes again (0: not seen yet) */
	char *topic;
	uint8_t *payload;
	size_t payloadlen;
	char **completed;        /* sessions that completed an exchange over store_id */
	size_t n_completed;
	struct replay_drop {
		char *clientid;
		uint16_t mid;
		uint8_t qos;
	} *drops;
	size_t n_drops, cap_drops;
};

void replay_free(struct plugin *pl)
{
	struct replay *rp = pl->replay;

	if(!rp){
		return;
	}
	for(size_t i = 0; i < rp->n_completed; i++){
		free(rp->completed[i]);
	}
	for(size_t i = 0; i < rp->n_drops; i++){
		free(rp->drops[i].clientid);
	}
	free(rp->completed);
	free(rp->drops);
	free(rp->topic);
	free(rp->payload);
	free(rp);
	pl->replay = NULL;
}

/* At restore, before the journal is applied: the first record after the
 * committed mark, when it is a QoS 2 routing that names its body. */
static void replay_prepare(struct restore *r)
{
	uint64_t mark = store_journal_committed(r->pl->store);

	for(size_t i = 0; i < r->n_j; i++){
		const struct jrec *e = &r->j[i];
		if(e->lsn != mark + 1){
			continue;
		}
		if((e->r.kind == JREC_ROUTED || e->r.kind == JREC_RELEASED_IN) && e->r.store_id){
			r->pl->replay = calloc(1, sizeof(*r->pl->replay));
			if(r->pl->replay){
				r->pl->replay->lsn = e->lsn;
				r->pl->replay->store_id = e->r.store_id;
			}
		}
		return;
	}
}

bool replay_partial(struct plugin *pl, uint64_t lsn)
{
	return pl->replay && pl->replay->lsn == lsn;
}

void replay_note_completed(struct plugin *pl, const char *clientid, uint64_t store_id)
{
	struct replay *rp = pl->replay;
	char **p;

	if(!rp || store_id != rp->store_id){
		return;
	}
	p = realloc(rp->completed, (rp->n_completed + 1) * sizeof(*p));
	if(p){
		rp->completed = p;
		if((p[rp->n_completed] = strdup(clientid)) != NULL){
			rp->n_completed++;
		}
	}
}

/* The message routed again, to know its body when the broker stores it. */
void replay_body(struct plugin *pl, const struct rec_base_msg *m)
{
	struct replay *rp = pl->replay;

	rp->topic = strdup(m->topic);
	rp->payload = malloc(m->payload.len ? m->payload.len : 1);
	if(!rp->topic || !rp->payload){
		replay_free(pl);
		return;
	}
	memcpy(rp->payload, m->payload.data ? m->payload.data : (const uint8_t *)"", m->payload.len);
	rp->payloadlen = m->payload.len;
}

void replay_body_added(struct plugin *pl, const struct mosquitto_base_msg *d)
{
	struct replay *rp = pl->replay;

	if(rp && rp->topic && !rp->new_store_id && d->payloadlen == rp->payloadlen && !strcmp(d->topic, rp->topic)
			&& (!rp->payloadlen || !memcmp(d->payload, rp->payload, rp->payloadlen))){
		rp->new_store_id = d->store_id;
	}
}

static int find_body(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	(void)seq;
	return q->direction == MSG_DIR_OUT && q->store_id == *(uint64_t *)ctx ? 1 : 0;
}

/* True when the broker's copy d of the routing done again goes to a session
 * that holds the message already: it is dropped at the next tick. */
bool replay_duplicate(struct plugin *pl, const struct mosquitto_client_msg *d)
{
	struct replay *rp = pl->replay;
	struct replay_drop *p;
	bool held = false;

	if(!rp || !rp->new_store_id || d->store_id != rp->new_store_id){
		return false;
	}
	for(size_t i = 0; i < rp->n_completed && !held; i++){
		held = !strcmp(rp->completed[i], d->clientid);
	}
	if(!held){
		uint64_t old = rp->store_id;
		held = store_walk_queue(pl->store, d->clientid, find_body, &old) == 1;
	}
	if(!held){
		return false;
	}
	if(ARRAY_GROW(rp->drops, rp->n_drops, rp->cap_drops, 8)){
		return false;
	}
	p = &rp->drops[rp->n_drops];
	if(!(p->clientid = strdup(d->clientid))){
		return false;
	}
	p->mid = d->mid;
	p->qos = d->qos;
	rp->n_drops++;
	return true;
}

/* The first tick: the broker's copies for sessions that hold the message
 * go, and the routing done again is over. */
void replay_tick(struct plugin *pl)
{
	struct replay *rp = pl->replay;

	if(!rp){
		return;
	}
	/* Taken, not deleted: the store never had these copies. */
	for(size_t i = 0; i < rp->n_drops; i++){
		broker_entry_take(rp->drops[i].clientid, rp->drops[i].mid, rp->drops[i].qos);
	}
	if(rp->n_drops){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "persist-lmdb: the QoS 2 message routed again from journal record "
				"%llu was held already by %zu sessions: not given to them again",
				(unsigned long long)rp->lsn, rp->n_drops);
	}
	replay_free(pl);
}

int persist_restore_cb(int event, void *event_data, void *userdata)
{
	struct restore r;
	struct store_stats stats;
	struct restore_counts handed;
	int rc;

	(void)event;
	(void)event_data;
	memset(&r, 0, sizeof(r));
	r.pl = userdata;
	r.jhooks = (struct handover_journal){&r, journaled_released_in, journaled_pubrel_sent};

	rc = r.pl->journal ? journal_read(&r) : 0;
	if(!rc){
		replay_prepare(&r);
		rc = journal_apply(&r);
	}
	if(!rc && !(r.h = features_restore_begin(r.pl, &r.jhooks))){
		rc = STORE_ERR_NOMEM;
	}
	/* With queue_storage disk a body is handed over when what refers to
	 * it is. */
	if(!rc && !backlog_on(r.pl)){
		rc = store_walk_msgs(r.pl->store, restore_msg, &r);
	}
	if(!rc){
		rc = store_walk_retained(r.pl->store, restore_retained, &r);
	}
	if(!rc){
		rc = store_walk_sessions(r.pl->store, restore_session, &r);
	}
	if(!rc){
		rc = store_walk_wills(r.pl->store, NULL, restore_will, &r);
	}
	/* Nobody is connected yet. */
	if(!rc){
		rc = store_online_clear(r.pl->store);
	}
	if(!rc){
		journal_route(&r);
	}
	features_restore_done(r.pl, r.h, &handed);
	journal_done(&r);
	store_get_stats(r.pl->store, &stats);
	mosquitto_log_printf(rc ? MOSQ_LOG_ERR : MOSQ_LOG_INFO,
			"persist-lmdb: restored %lu messages, %lu retained, %lu sessions, %lu subscriptions, "
			"%lu queued messages, %lu wills; %lu messages routed again from the journal, "
			"%lu journaled changes applied, "
			"%lu QoS 2 exchanges resumed at PUBREL; %lu could not be restored, %llu records rejected%s",
			r.msgs, r.retained, r.sessions, r.subs, handed.queued, r.wills, r.replayed, r.applied,
			handed.pubrel_resumed, r.failed + handed.failed,
			(unsigned long long)stats.records_rejected, rc ? "; restore stopped early" : "");
	return rc ? MOSQ_ERR_UNKNOWN : MOSQ_ERR_SUCCESS;
}
