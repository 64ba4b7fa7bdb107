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

/* Most entries of a session held back at its restore (session_queue_restore). */
#define HOLD_MAX 1024

struct held {
	uint64_t seq;
	struct rec_queue q;
};

struct restore {
	struct plugin *pl;
	struct jrec *j;           /* in lsn order */
	size_t n_j, cap_j;
	struct jrec **by_entry;   /* the queue-entry records, by client id and seq */
	size_t n_by_entry;
	unsigned long replayed, pubrel_resumed, applied;
	struct pubrel_list pubrel;    /* the session's QoS 2 messages whose PUBREL was sent */
	struct held *held;            /* the session's first outgoing entries, not handed over yet */
	size_t n_held, cap_held;
	bool holding;
	struct queue_load *load;      /* set by queue_load */
	size_t visited;               /* queue_load: outgoing entries seen */
	unsigned next_mid;
	int walk_rc;
	uint8_t own_mids[MID_MAP_BYTES];
	uint8_t *mids;                /* the session's packet ids in use: own_mids or the caller's */
	unsigned n_mids;              /* how many */
	const struct rec_session *session;
	unsigned long session_refused, session_orphaned;
	unsigned long msgs, retained, sessions, subs, queued, wills;
	unsigned long failed;
};

static void *heap_copy(const void *p, size_t len)
{
	uint8_t *out = mosquitto_malloc(len + 1);

	if(out){
		if(len){
			memcpy(out, p, len);
		}
		out[len] = '\0';
	}
	return out;
}

static int restore_msg(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct restore *r = ctx;
	struct mosquitto_base_msg msg;
	int rc;

	memset(&msg, 0, sizeof(msg));
	msg.store_id = store_id;
	msg.expiry_time = m->expiry_time;
	msg.source_id = (char *)m->source_id;
	msg.source_username = (char *)m->source_username;
	msg.payloadlen = (uint32_t)m->payload.len;
	msg.source_mid = m->source_mid;
	msg.source_port = m->source_port;
	msg.qos = m->qos;
	msg.retain = m->retain;
	msg.topic = mosquitto_strdup(m->topic);
	msg.payload = heap_copy(m->payload.data, m->payload.len);
	if(!msg.topic || !msg.payload || (m->properties.data && props_decode(m->properties, &msg.properties))){
		mosquitto_free(msg.topic);
		mosquitto_free(msg.payload);
		r->failed++;
		return 0;
	}
	rc = mosquitto_persist_base_msg_add(&msg);
	if(rc == MOSQ_ERR_SUCCESS){
		retention_body(r->pl, store_id, msg.payloadlen, m->expiry_time);
		backlog_body_held(r->pl, store_id);
	}
	/* The broker owns the topic, payload and properties from the call on,
	 * except when it refuses the arguments outright. */
	if(rc == MOSQ_ERR_INVAL){
		mosquitto_free(msg.topic);
		mosquitto_free(msg.payload);
		mosquitto_property_free_all(&msg.properties);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		r->msgs++;
	}else{
		r->failed++;
	}
	return 0;
}

int body_ensure(struct plugin *pl, uint64_t store_id)
{
	struct restore r;

	if(backlog_body_resident(pl, store_id)){
		return MOSQ_ERR_SUCCESS;
	}
	memset(&r, 0, sizeof(r));
	r.pl = pl;
	if(store_msg_get(pl->store, store_id, restore_msg, &r) != STORE_OK){
		return MOSQ_ERR_UNKNOWN;
	}
	return r.msgs ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOT_FOUND;
}

static int restore_retained(void *ctx, const struct rec_retain *rt)
{
	struct restore *r = ctx;

	if(backlog_on(r->pl) && body_ensure(r->pl, rt->store_id) != MOSQ_ERR_SUCCESS){
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

/* Applies what the journal says about one queue entry; returns true when
 * the entry is used up (an incoming message the journal says was routed). */
static bool queued_from_journal(struct restore *r, uint64_t seq, const struct rec_queue *q)
{
	const char *clientid = r->session->clientid;
	struct store *st = r->pl->store;
	struct jrec *e;

	if(q->direction == MSG_DIR_IN && q->qos == 2){
		e = journal_entry(r, clientid, seq, JREC_RELEASED_IN);
		if(e){
			e->store_id = q->store_id;
			store_queue_remove(st, clientid, seq, q->store_id);
			store_msg_release(st, q->store_id);
			return true;
		}
	}
	if(q->direction == MSG_DIR_OUT && q->qos == 2){
		bool sent = q->state == MSG_STATE_WAIT_FOR_PUBCOMP || q->state == MSG_STATE_RESEND_PUBREL;
		if(!sent && journal_entry(r, clientid, seq, JREC_PUBREL_SENT)){
			struct rec_queue upd = *q;
			upd.state = MSG_STATE_WAIT_FOR_PUBCOMP;
			store_queue_update(st, clientid, seq, &upd);
			sent = true;
		}
		if(sent){
			struct pubrel_list *l = &r->pubrel;
			if(ARRAY_GROW(l->seqs, l->n, l->cap, 8)){
				mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: out of memory: QoS 2 message %u "
						"of %s will be sent again as a new PUBLISH", q->mid, clientid);
				return false;
			}
			l->seqs[l->n++] = seq;
		}
	}
	return false;
}

#define ADD_QUEUED_OR_DROPPED 2

/* An outgoing message the client may have received: its packet id stays. */
static bool was_sent(uint8_t state)
{
	return state == MSG_STATE_WAIT_FOR_PUBACK || state == MSG_STATE_WAIT_FOR_PUBREC
		|| state == MSG_STATE_RESEND_PUBREL || state == MSG_STATE_WAIT_FOR_PUBCOMP;
}

/* The next packet id no message handed over so far has; once all are
 * taken, the next one (as the broker numbers a queue longer than the id
 * space). */
static uint16_t free_mid(struct restore *r)
{
	for(unsigned i = 0; i < 65535 && r->n_mids < 65535; i++){
		unsigned mid = r->next_mid % 65535 + 1;
		r->next_mid = mid;
		if(!(r->mids[mid >> 3] & (1u << (mid & 7)))){
			return (uint16_t)mid;
		}
	}
	r->next_mid = r->next_mid % 65535 + 1;
	return (uint16_t)r->next_mid;
}

/* Hands one stored entry to the broker; 1 stops the walk (a part of a
 * hand-back is full). */
static int hand_over(struct restore *r, uint64_t seq, const struct rec_queue *q)
{
	struct mosquitto_client_msg cm;
	int rc;

	if(queued_from_journal(r, seq, q)){
		return 0;
	}
	memset(&cm, 0, sizeof(cm));
	cm.mid = q->mid;
	if(q->direction == MSG_DIR_OUT && q->qos > 0){
		/* In disk mode the broker deletes, acknowledges and takes back a
		 * client's messages by packet id, and numbers the ones it routes on
		 * from the last id it was handed: stored ids (from several broker
		 * runs, or given at an earlier hand-back) would collide with those.
		 * A message not yet sent gets the next free id, in queue order; one
		 * sent keeps its id, by which the client knows it. Memory mode keeps
		 * every id, as the broker's own persistence does. */
		if(backlog_on(r->pl) && !was_sent(q->state)){
			cm.mid = free_mid(r);
		}
		r->next_mid = cm.mid;
		if(!(r->mids[cm.mid >> 3] & (1u << (cm.mid & 7)))){
			r->mids[cm.mid >> 3] |= (uint8_t)(1u << (cm.mid & 7));
			r->n_mids++;
		}
	}
	cm.clientid = r->session->clientid;
	cm.cmsg_id = seq;
	cm.store_id = q->store_id;
	cm.subscription_identifier = q->subscription_identifier;
	cm.qos = q->qos;
	cm.retain = q->retain;
	cm.dup = q->dup;
	cm.direction = q->direction;
	cm.state = q->state;
	rc = backlog_on(r->pl) ? body_ensure(r->pl, q->store_id) : MOSQ_ERR_SUCCESS;
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_persist_client_msg_add(&cm);
	}
	/* The broker answers 2 both for a message it queued behind a connected
	 * client's in-flight window and for one it dropped at its queue limits. */
	if(rc == ADD_QUEUED_OR_DROPPED && r->load){
		if(r->load->kick){
			rc = MOSQ_ERR_SUCCESS;
		}else{
			/* The rest stays stored, for a later part. */
			r->load->next_seq = seq;
			return 1;
		}
	}
	if(rc == MOSQ_ERR_SUCCESS){
		r->queued++;
		if(q->direction == MSG_DIR_IN){
			incoming_add(r->pl, q->store_id, cm.clientid, seq);
		}
		/* A hand-back's entries are under the limits since they were stored. */
		if(q->direction == MSG_DIR_OUT && !r->load){
			retention_add(r->pl, cm.clientid, seq, cm.mid, q->qos, q->store_id);
		}
		if(q->seq_no && q->direction == MSG_DIR_OUT){
			seq_restore(r->pl, cm.clientid, seq, q->seq_no,
					q->state == MSG_STATE_WAIT_FOR_PUBCOMP || q->state == MSG_STATE_RESEND_PUBREL);
		}
		return 0;
	}
	/* Kept, it would come back after newer messages at a later restart. */
	store_queue_remove(r->pl->store, r->session->clientid, seq, q->store_id);
	retention_remove(r->pl, r->session->clientid, seq);
	r->failed++;
	if(rc == MOSQ_ERR_NOT_FOUND){
		r->session_orphaned++;
	}else{
		r->session_refused++;
	}
	return 0;
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
		payload = heap_copy(m->payload.data, m->payload.len);
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

/* An outgoing QoS 2 entry whose PUBREL was sent (stored so, or journaled). */
static bool pubrel_sent(struct restore *r, uint64_t seq, const struct rec_queue *q)
{
	return q->direction == MSG_DIR_OUT && q->qos == 2
		&& (q->state == MSG_STATE_WAIT_FOR_PUBCOMP || q->state == MSG_STATE_RESEND_PUBREL
			|| journal_entry(r, r->session->clientid, seq, JREC_PUBREL_SENT));
}

/* The held entries, those whose PUBREL was sent first (see
 * session_queue_restore), then no more holding. */
static void flush_held(struct restore *r)
{
	for(int pass = 0; pass < 2; pass++){
		for(size_t i = 0; i < r->n_held; i++){
			struct held *h = &r->held[i];
			if(pubrel_sent(r, h->seq, &h->q) == (pass == 0)){
				hand_over(r, h->seq, &h->q);
			}
		}
	}
	r->n_held = 0;
	r->holding = false;
}

static int restore_queued(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct restore *r = ctx;

	if(r->load){
		struct queue_load *ql = r->load;
		if(ql->before && seq >= ql->before){
			return 1;
		}
		if(!ql->incoming && q->direction == MSG_DIR_IN){
			return 0;
		}
		if(q->direction == MSG_DIR_OUT && ql->max && r->visited == ql->max){
			ql->next_seq = seq;
			return 1;
		}
		r->visited += q->direction == MSG_DIR_OUT;
	}
	if(r->holding && q->direction == MSG_DIR_OUT){
		if(r->n_held < HOLD_MAX){
			if(ARRAY_GROW(r->held, r->n_held, r->cap_held, 64)){
				flush_held(r);
				return hand_over(r, seq, q);
			}
			r->held[r->n_held++] = (struct held){seq, *q};
			return 0;
		}
		flush_held(r);
	}
	return hand_over(r, seq, q);
}

/* The broker moves queued messages in flight, and sends them to a connected
 * client, after it deletes one: deleting a packet id none of the session's
 * messages has does just that. */
static void fill_in_flight(struct restore *r)
{
	struct mosquitto_client_msg cm;

	memset(&cm, 0, sizeof(cm));
	cm.clientid = (char *)r->session->clientid;
	cm.direction = MSG_DIR_OUT;
	cm.qos = 2;
	/* Handed back in parts, a queue's earlier parts hold the ids before
	 * the ones of this part: the next id is free. */
	cm.mid = free_mid(r);
	if(!(r->mids[cm.mid >> 3] & (1u << (cm.mid & 7)))){
		mosquitto_persist_client_msg_delete(&cm);
	}
}

/* Has the broker move the session's first messages in flight now, so that
 * the ones whose PUBREL was sent keep that state (intake.c). */
static void pubrel_resume_session(struct restore *r)
{
	size_t before = r->pubrel.n;

	r->pubrel.clientid = r->session->clientid;
	r->pl->pubrel = &r->pubrel;
	fill_in_flight(r);
	r->pl->pubrel = NULL;
	r->pubrel_resumed += before - r->pubrel.n;
	if(r->pubrel.n){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: %zu QoS 2 messages of client %s had their "
				"PUBREL sent but are not among the first in flight: they are sent again as new PUBLISHes",
				r->pubrel.n, r->session->clientid);
	}
	r->pubrel.n = 0;
}

/* Hands the session's queue (r->session) to the broker. */
/* from: the first seq to hand over (0: the queue's start). */
static void session_queue_restore(struct restore *r, uint64_t from)
{
	const struct rec_session *s = r->session;

	r->session_refused = r->session_orphaned = 0;
	if(r->mids == r->own_mids){
		memset(r->own_mids, 0, sizeof(r->own_mids));
		r->n_mids = 0;
	}
	if(r->pl->cfg.seq_property){
		uint64_t last;
		if(store_seqno_get(r->pl->store, s->clientid, &last) == STORE_OK){
			seq_restore_last(r->pl, s->clientid, last);
		}
	}
	/* The broker puts a session's first messages in flight (its window), and
	 * only those can resume at PUBREL: the others go out as new PUBLISHes.
	 * Entries ahead of one whose PUBREL was sent (deliveries acknowledged
	 * just before the crash, whose deletion was not committed) would push
	 * it out of the window; so a whole session's first entries are held and
	 * handed over with those whose PUBREL was sent first. They carry no new
	 * delivery, so the order of deliveries stays. */
	r->holding = !r->load;
	r->walk_rc = from ? store_walk_queue_from(r->pl->store, s->clientid, from, restore_queued, r)
		: store_walk_queue(r->pl->store, s->clientid, restore_queued, r);
	flush_held(r);
	if(r->pubrel.n){
		pubrel_resume_session(r);
	}
	if(r->session_orphaned){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: dropped %lu queued messages of client %s "
				"when handing them to the broker: their message bodies are missing (rejected or lost)",
				r->session_orphaned, s->clientid);
	}
	if(r->session_refused){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: dropped %lu queued messages of client %s "
				"when handing them to the broker: it refused them (max_queued_messages / max_queued_bytes)",
				r->session_refused, s->clientid);
	}
}

static bool journal_mentions(struct restore *r, const char *clientid)
{
	for(size_t lo = 0, hi = r->n_by_entry; lo < hi;){
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(r->by_entry[mid]->r.clientid, clientid);
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

int queue_load(struct plugin *pl, const char *clientid, struct queue_load *ql)
{
	struct rec_session s = {.clientid = clientid};
	struct restore *r = calloc(1, sizeof(*r));
	int rc;

	if(!r){
		return STORE_ERR_NOMEM;
	}
	r->pl = pl;
	r->load = ql;
	r->mids = ql->mids ? ql->mids : r->own_mids;
	for(size_t i = 0; ql->mids && i < MID_MAP_BYTES; i++){
		r->n_mids += (unsigned)__builtin_popcount(ql->mids[i]);
	}
	r->next_mid = ql->next_mid;
	r->session = &s;
	ql->next_seq = 0;
	session_queue_restore(r, ql->from);
	if(ql->kick && r->queued){
		fill_in_flight(r);
	}
	ql->loaded = r->queued;
	ql->next_mid = r->next_mid;
	rc = r->walk_rc == 1 ? STORE_OK : r->walk_rc;
	free(r->pubrel.seqs);
	free(r);
	return rc;
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
	r->session = s;
	store_walk_subs(r->pl->store, s->clientid, restore_sub, r);
	if(backlog_on(r->pl)){
		/* A session the journal names is restored whole, and released
		 * at the first tick. */
		bool held = journal_mentions(r, s->clientid);
		if(held){
			session_queue_restore(r, 0);
		}
		if(backlog_defer(r->pl, s->clientid, held)){
			r->failed++;
		}else if(!held){
			retention_stored(r->pl, s->clientid);
		}
	}else{
		session_queue_restore(r, 0);
	}
	r->session = NULL;
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
	size_t n = 0;
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
	for(size_t i = 0; i < r->n_j; i++){
		n += names_entry(r->j[i].r.kind);
	}
	if(n){
		r->by_entry = malloc(n * sizeof(*r->by_entry));
		if(!r->by_entry){
			return JOURNAL_ERR_NOMEM;
		}
		for(size_t i = 0; i < r->n_j; i++){
			if(names_entry(r->j[i].r.kind)){
				r->by_entry[r->n_by_entry++] = &r->j[i];
			}
		}
		qsort(r->by_entry, r->n_by_entry, sizeof(*r->by_entry), entry_cmp);
	}
	return 0;
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
			dedup_note(r->pl, &e->r.msg);
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
	free(r->pubrel.seqs);
	free(r->held);
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
	bool dropping;
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

bool replay_dropping(const struct plugin *pl)
{
	return pl->replay && pl->replay->dropping;
}

/* The first tick: the broker's copies for sessions that hold the message
 * go, and the routing done again is over. */
void replay_tick(struct plugin *pl)
{
	struct replay *rp = pl->replay;

	if(!rp){
		return;
	}
	rp->dropping = true;
	for(size_t i = 0; i < rp->n_drops; i++){
		struct mosquitto_client_msg cm = {
			.clientid = rp->drops[i].clientid,
			.mid = rp->drops[i].mid,
			.qos = rp->drops[i].qos,
			.direction = MSG_DIR_OUT,
		};
		mosquitto_persist_client_msg_delete(&cm);
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
	int rc;

	(void)event;
	(void)event_data;
	memset(&r, 0, sizeof(r));
	r.pl = userdata;
	r.mids = r.own_mids;

	rc = r.pl->journal ? journal_read(&r) : 0;
	if(!rc){
		replay_prepare(&r);
		rc = journal_apply(&r);
	}
	/* With queue_storage disk a body is handed over when what refers to
	 * it is. */
	if(!rc && !backlog_on(r.pl)){
		rc = store_walk_msgs(r.pl->store, restore_msg, &r);
	}else if(!rc){
		retention_stored_begin(r.pl);
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
	if(backlog_on(r.pl)){
		retention_stored_done(r.pl);
	}
	journal_done(&r);
	store_get_stats(r.pl->store, &stats);
	mosquitto_log_printf(rc ? MOSQ_LOG_ERR : MOSQ_LOG_INFO,
			"persist-lmdb: restored %lu messages, %lu retained, %lu sessions, %lu subscriptions, "
			"%lu queued messages, %lu wills; %lu messages routed again from the journal, "
			"%lu journaled changes applied, "
			"%lu QoS 2 exchanges resumed at PUBREL; %lu could not be restored, %llu records rejected%s",
			r.msgs, r.retained, r.sessions, r.subs, r.queued, r.wills, r.replayed, r.applied, r.pubrel_resumed,
			r.failed,
			(unsigned long long)stats.records_rejected, rc ? "; restore stopped early" : "");
	return rc ? MOSQ_ERR_UNKNOWN : MOSQ_ERR_SUCCESS;
}
