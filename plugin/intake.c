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
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_EVERY_S 10

/* A stored incoming QoS 2 message not released yet. */
struct incoming_q2 {
	uint64_t store_id;
	char *clientid;
	uint64_t cmsg_id;
};

struct pubrel_lapse;

struct intake {
	struct buf jbuf;         /* scratch for journal records */
	bool journal_unsynced;   /* publish mode: records written to the mapping, synced at the tick */
	time_t journal_log_time;
	struct message q2_stash; /* a QoS 2 body just stored: its pointers are the broker's */
	struct buf q2_props;     /* its properties, encoded */
	uint64_t q2_routed_lsn;  /* the journal record of the last QoS 2 routing */
	uint64_t q2_routing_store_id;  /* its body */
	uint64_t tail_store_id;  /* a routing committed in its middle: its further copies are journaled */
	const char *in_topic;    /* the buffers of the last message MESSAGE_IN saw (journal_originated) */
	const void *in_payload;
	struct incoming_q2 *incoming;  /* by store id */
	size_t n_incoming, cap_incoming;
	struct pubrel_list *pubrel;    /* set while handback.c resumes one session's exchanges */
	struct pubrel_lapse *lapsed;   /* exchanges left at "resend PUBREL" */
	size_t n_lapsed, cap_lapsed;
	uint64_t refused_disk_full;
	time_t disk_full_log_time;
};


static void log_limited(struct plugin *pl, const char *what, int rc)
{
	time_t now = time(NULL);

	if(now - pl->intake->journal_log_time >= LOG_EVERY_S){
		pl->intake->journal_log_time = now;
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: cannot journal %s (%s); it is durable "
				"at the next commit instead", what, journal_strerror(rc));
	}
}

/* In plugin_opt_sync publish, the records no acknowledgement waits for
 * (those of a change the broker made after its answer, or with none) are
 * written to the mapping and synced together at the tick, or before the
 * next record that must be on the disk at once: a record is never on the
 * disk before one written ahead of it. */
static void journal_flush(struct plugin *pl)
{
	if(pl->intake->journal_unsynced){
		pl->intake->journal_unsynced = false;
		if(journal_sync(pl->journal) != JOURNAL_OK){
			log_limited(pl, "the records of the last loop iteration", JOURNAL_ERR_IO);
		}
	}
}

void journal_tick(struct plugin *pl)
{
	journal_flush(pl);
}

/* Returns the record's lsn, 0 when it could not be journaled. In
 * plugin_opt_sync publish a record that backs an acknowledgement is on the
 * disk when this returns (sync); the others at the next tick. */
static uint64_t journal_write(struct plugin *pl, const struct rec_journal *r, const char *what, bool sync)
{
	uint64_t lsn = 0;
	int rc;

	buf_reset(&pl->intake->jbuf);
	record_encode_journal(&pl->intake->jbuf, r);
	if(pl->intake->jbuf.err){
		pl->intake->jbuf.err = false;
		log_limited(pl, what, JOURNAL_ERR_NOMEM);
		return 0;
	}
	bool batched = pl->cfg.sync == SYNC_PUBLISH && !sync;
	/* Behind records not on the disk yet, one sync covers them all. */
	bool flush = pl->cfg.sync == SYNC_PUBLISH && sync && pl->intake->journal_unsynced;

	sync = sync && pl->cfg.sync == SYNC_PUBLISH && !flush;
	rc = journal_append(pl->journal, pl->intake->jbuf.data, pl->intake->jbuf.len, sync, &lsn);
	if(rc == JOURNAL_FULL){
		/* The writer fell a whole journal behind: wait for it (in the
		 * middle of a QoS 2 routing, up to the routing's record). */
		journal_mark_to(pl, pl->intake->tail_store_id ? pl->intake->q2_routed_lsn - 1 : journal_last_lsn(pl->journal));
		if(store_commit(pl->store) == STORE_OK){
			journal_release(pl->journal, store_journal_durable(pl->store));
		}
		rc = journal_append(pl->journal, pl->intake->jbuf.data, pl->intake->jbuf.len, sync, &lsn);
	}
	if(rc){
		log_limited(pl, what, rc);
		return 0;
	}
	pl->intake->journal_unsynced |= batched;
	if(flush){
		journal_flush(pl);
	}
	return lsn;
}

/* While the database's device is full nothing more can be kept: QoS 1/2
 * publishes are refused rather than acknowledged and lost. */
bool intake_disk_full(struct plugin *pl)
{
	time_t now = time(NULL);

	if(!store_disk_full(pl->store)){
		return false;
	}
	pl->intake->refused_disk_full++;
	if(now - pl->intake->disk_full_log_time >= LOG_EVERY_S){
		pl->intake->disk_full_log_time = now;
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: the device of %s is full: refusing QoS 1/2 "
				"publishes until a commit succeeds (%llu refused so far)", pl->cfg.db_path,
				(unsigned long long)pl->intake->refused_disk_full);
	}
	return true;
}

/* Journals a message to be routed again after a crash; returns the lsn, 0
 * when it could not be journaled. */
static uint64_t journal_publish(struct plugin *pl, uint8_t kind, const struct rec_base_msg *m, const char *what)
{
	struct rec_journal r = {.kind = kind, .msg = *m};

	if(!r.msg.payload.len){
		r.msg.payload.data = (const uint8_t *)"";
	}
	return journal_write(pl, &r, what, true);
}

/* The broker stores this very message (the same buffers) when it routes
 * it: journal_originated tells it from the broker's own. */
void journal_note_in(struct plugin *pl, const struct message *p)
{
	pl->intake->in_topic = p->m.topic;
	pl->intake->in_payload = p->m.payload.data;
}

/* An accepted QoS 1 PUBLISH, before its PUBACK. */
void journal_accepted(struct plugin *pl, const struct message *p)
{
	if(p->m.qos == 1 && pl->journal){
		journal_publish(pl, JREC_PUBLISH, &p->m, "an accepted message");
	}
}

/* The broker raises the body's event and then, at once, the event of the
 * first session or retained entry that holds it. */
void journal_q2_stash(struct plugin *pl, const struct message *b)
{
	if(!pl->journal || b->m.qos != 2){
		return;
	}
	/* The encoding is the scratch of the next event's. */
	buf_reset(&pl->intake->q2_props);
	if(b->m.properties.len){
		buf_put(&pl->intake->q2_props, b->m.properties.data, b->m.properties.len);
	}
	if(pl->intake->q2_props.err){
		pl->intake->q2_props.err = false;
		log_limited(pl, "a QoS 2 message", JOURNAL_ERR_NOMEM);
		return;
	}
	pl->intake->q2_stash = *b;
	pl->intake->q2_stash.m.properties.data = b->m.properties.len ? pl->intake->q2_props.data : NULL;
}

/* A QoS 1 or retained message the broker publishes itself (a client's
 * will, above all) comes through no MESSAGE_IN: its body is journaled when
 * the broker stores it, as a routing, so that what a will changed survives
 * a crash before the commit (its copies, a retained message it set). A
 * will's record also ends the will (the broker says so only after routing
 * it): a crash in between must not publish it again. QoS 2 bodies are
 * journaled by their first stored copy (journal_q2_routed). */
void journal_originated(struct plugin *pl, const struct message *b)
{
	const struct rec_base_msg *m = &b->m;

	if(!pl->journal || m->qos == 2 || (m->qos == 0 && !m->retain)
			|| (pl->intake->in_topic && (m->topic == pl->intake->in_topic || m->payload.data == pl->intake->in_payload))){
		return;
	}
	journal_publish(pl, will_publishing(pl, m->source_id) ? JREC_WILL_SENT : JREC_PUBLISH, m,
			"a message the broker published");
}

/* ---- QoS 2 routings ----
 *
 * A QoS 2 message is routed at its PUBREL: a publisher's without a session
 * from a body the broker stores just then, a publisher's with a session from
 * the incoming entry stored at its PUBLISH. The routing is journaled at its
 * first stored copy (JREC_ROUTED, or JREC_RELEASED_IN: q2_routed_lsn and
 * q2_routing_store_id), and a restart routes it again unless a commit with
 * its mark came first.
 *
 * The broker writes each connected recipient's PUBLISH as it adds the
 * recipient's entry, in the middle of the routing, and the entry must be
 * committed by then (journal_q2_out): so a QoS 2 routing can be committed
 * in part. That commit's mark stops just before the routing's record; the
 * copies the routing adds after it (tail_store_id) are journaled one by one
 * (JREC_ENTRY). A restart then routes the message again, and drops what
 * that routing gives the sessions that already hold the message (restore.c,
 * replay_*): every recipient gets it once, under the packet id it saw. */

static struct incoming_q2 *incoming_find(struct plugin *pl, uint64_t store_id, size_t *at)
{
	size_t lo = 0, hi = pl->intake->n_incoming;

	while(lo < hi){
		size_t mid = lo + (hi - lo) / 2;
		if(pl->intake->incoming[mid].store_id < store_id){
			lo = mid + 1;
		}else{
			hi = mid;
		}
	}
	*at = lo;
	return lo < pl->intake->n_incoming && pl->intake->incoming[lo].store_id == store_id ? &pl->intake->incoming[lo] : NULL;
}

/* A stored incoming QoS 2 message, not released yet. */
void incoming_add(struct plugin *pl, uint64_t store_id, const char *clientid, uint64_t cmsg_id)
{
	size_t at;
	char *id;

	if(incoming_find(pl, store_id, &at) || !(id = strdup(clientid))){
		return;
	}
	if(ARRAY_GROW(pl->intake->incoming, pl->intake->n_incoming, pl->intake->cap_incoming, 64)){
		free(id);
		return;
	}
	memmove(&pl->intake->incoming[at + 1], &pl->intake->incoming[at], (pl->intake->n_incoming - at) * sizeof(*pl->intake->incoming));
	pl->intake->incoming[at] = (struct incoming_q2){store_id, id, cmsg_id};
	pl->intake->n_incoming++;
}

static void incoming_drop(struct plugin *pl, size_t at)
{
	free(pl->intake->incoming[at].clientid);
	memmove(&pl->intake->incoming[at], &pl->intake->incoming[at + 1], (pl->intake->n_incoming - at - 1) * sizeof(*pl->intake->incoming));
	pl->intake->n_incoming--;
}

/* The session is gone, with its incoming messages. */
void incoming_forget(struct plugin *pl, const char *clientid)
{
	for(size_t i = pl->intake->n_incoming; i-- > 0;){
		if(!strcmp(pl->intake->incoming[i].clientid, clientid)){
			incoming_drop(pl, i);
		}
	}
}


static void journal_q2_release(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t store_id)
{
	struct rec_journal r = {.kind = JREC_RELEASED_IN, .clientid = clientid, .store_id = store_id};

	r.seq = store_queue_seq(pl->store, cmsg_id);
	pl->intake->q2_routed_lsn = journal_write(pl, &r, "a released QoS 2 message", true);
	pl->intake->q2_routing_store_id = store_id;
}

/* A stored copy of store_id (a queue entry, or a retained entry), right
 * after the broker stored it. */
void journal_q2_routed(struct plugin *pl, uint64_t store_id)
{
	const struct message *d = &pl->intake->q2_stash;
	struct rec_journal r = {.kind = JREC_ROUTED, .store_id = store_id};
	struct incoming_q2 *in;
	size_t at;

	if(!pl->journal){
		return;
	}
	if(d->store_id && d->store_id == store_id){
		r.msg = d->m;
		dedup_q2_stored(pl, d, MSG_DIR_OUT);
		if(!r.msg.payload.len){
			r.msg.payload.data = (const uint8_t *)"";
		}
		pl->intake->q2_routed_lsn = journal_write(pl, &r, "a QoS 2 message", true);
		pl->intake->q2_routing_store_id = store_id;
	}else if(pl->intake->n_incoming && (in = incoming_find(pl, store_id, &at)) != NULL){
		journal_q2_release(pl, in->clientid, in->cmsg_id, store_id);
		incoming_drop(pl, at);
	}
	memset(&pl->intake->q2_stash, 0, sizeof(pl->intake->q2_stash));
}

/* A copy a routing adds after a commit in its middle. */
void journal_q2_entry(struct plugin *pl, const struct entry *e)
{
	struct rec_journal r = {.kind = JREC_ENTRY, .clientid = e->clientid};

	if(pl->intake->tail_store_id && e->q.store_id == pl->intake->tail_store_id){
		r.seq = store_queue_seq(pl->store, e->seq);
		r.entry = e->q;
		r.entry.seq_no = 0;
		journal_write(pl, &r, "a routed QoS 2 message", true);
	}
}

/* The tick commits what routings did: their tails end. */
void journal_q2_tick(struct plugin *pl)
{
	pl->intake->tail_store_id = 0;
	pl->intake->in_topic = NULL;
	pl->intake->in_payload = NULL;
}

/* A QoS 2 PUBLISH the broker stores as its publisher's incoming message
 * (PUBREC follows): journaled as that entry, not as a routing, so that a
 * replay routes it where the broker did, at its release (PUBREL). */
void journal_q2_incoming(struct plugin *pl, const struct entry *e)
{
	const struct message *d = &pl->intake->q2_stash;
	struct rec_journal r = {.kind = JREC_INCOMING, .clientid = e->clientid, .mid = e->q.mid};

	if(d->store_id && d->store_id == e->q.store_id){
		r.msg = d->m;
		r.seq = store_queue_seq(pl->store, e->seq);
		r.store_id = d->store_id;
		dedup_q2_stored(pl, d, MSG_DIR_IN);
		if(!r.msg.payload.len){
			r.msg.payload.data = (const uint8_t *)"";
		}
		journal_write(pl, &r, "a QoS 2 message", true);
		incoming_add(pl, e->q.store_id, e->clientid, e->seq);
	}
	memset(&pl->intake->q2_stash, 0, sizeof(pl->intake->q2_stash));
}

/* A QoS 2 PUBLISH is about to leave for a client: if a QoS 2 routing is
 * still only in the journal, a replay after a crash would route the same
 * message to the client again as a new one, under a new packet id, which a
 * receiver that delivers at PUBLISH would take as a second message. So that
 * routing is committed first (one commit serves every such PUBLISH until
 * the next routing). */
void journal_q2_out(struct plugin *pl)
{
	uint64_t routed = pl->intake->q2_routed_lsn;

	if(!pl->journal || routed <= store_journal_committed(pl->store) || pl->intake->tail_store_id == pl->intake->q2_routing_store_id){
		return;
	}
	/* Everything before the routing's record is complete; the routing is
	 * what a restart may have to do again. */
	journal_mark_to(pl, routed - 1);
	if(store_commit_visible(pl->store) != STORE_OK){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: cannot commit before a QoS 2 PUBLISH: after "
				"a crash now the message could come to its receiver again");
		return;
	}
	pl->intake->tail_store_id = pl->intake->q2_routing_store_id;
}

/* With stored queues a hand-back gives a message not sent yet a new packet
 * id. A QoS 2 PUBLISH that went out keeps its id only if its sent state is
 * known after a crash: a client that delivers at PUBLISH and still holds
 * the exchange open would take it under a new id as a new message. The
 * restore applies the record to the stored entry (journal_apply). */
void journal_q2_sent(struct plugin *pl, const struct entry *e)
{
	struct rec_journal r = {.kind = JREC_ENTRY, .clientid = e->clientid};

	if(!pl->journal){
		return;
	}
	r.seq = store_queue_seq(pl->store, e->seq);
	r.entry = e->q;
	journal_write(pl, &r, "a sent QoS 2 message", false);
}

/* A PUBREL is about to leave: from then on the client may have the message.
 * If a QoS 2 routing is still only in the journal, replaying it after a
 * crash would route this message to the client once more, as a new one; so
 * that routing is committed first (one commit serves every PUBREL of the
 * loop iteration). */
void journal_pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid)
{
	/* The packet id too: with queue_storage disk a hand-back can give the
	 * message a new one, stored with a later state change than this. */
	struct rec_journal r = {.kind = JREC_PUBREL_SENT, .clientid = clientid, .mid = mid};

	if(!pl->journal){
		return;
	}
	if(pl->intake->q2_routed_lsn > store_journal_committed(pl->store)){
		if(commit_marked(pl) != STORE_OK){
			broker_log(BROKER_LOG_WARNING, "persist-lmdb: cannot commit before a PUBREL to %s: "
					"after a crash now the message could come to it again", clientid);
		}
		journal_release(pl->journal, store_journal_durable(pl->store));
	}
	r.seq = store_queue_seq(pl->store, cmsg_id);
	journal_write(pl, &r, "a QoS 2 state change", true);
}

/* PUBCOMP: the exchange is over. Without this record an exchange completed
 * just before a crash would come back as "PUBREL sent", and past the first
 * in-flight window the broker sends such messages as new PUBLISHes. In
 * publish mode it is synced at the tick: it backs no acknowledgement, and a
 * power loss that drops it leaves an exchange that resumes at PUBREL. */
void journal_completed(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t store_id)
{
	struct rec_journal r = {.kind = JREC_COMPLETED, .clientid = clientid, .store_id = store_id};

	if(pl->journal){
		r.seq = store_queue_seq(pl->store, cmsg_id);
		journal_write(pl, &r, "a completed QoS 2 exchange", false);
	}
}

/* The broker deleted an incoming QoS 2 entry: released (PUBREL), and
 * journaled then unless its routing stored a copy (journal_q2_routed). */
void journal_released_in(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t store_id)
{
	size_t at;

	if(pl->journal && incoming_find(pl, store_id, &at)){
		incoming_drop(pl, at);
		journal_q2_release(pl, clientid, cmsg_id, store_id);
	}
}

/* ---- sessions, subscriptions, wills ----
 *
 * The broker writes SUBACK and UNSUBACK right after the subscription's
 * event, CONNACK just before the session's and its will's, and commits
 * come at the next tick: journaled, these changes survive a crash in
 * between. A restart applies them to the store in lsn order before it
 * reads it (restore.c); each is a whole record (or a deletion), so applying
 * them again over a state that already holds some is harmless. In publish
 * mode the records of a subscription or of a session's end (a clean start,
 * before its CONNACK) are on the disk before the answer; the others follow
 * no answer (CONNACK left before them) and are synced at the tick. */

void journal_session(struct plugin *pl, const struct rec_session *s)
{
	struct rec_journal r = {.kind = JREC_SESSION, .session = *s};

	if(pl->journal){
		journal_write(pl, &r, "a session", false);
	}
}

void journal_session_gone(struct plugin *pl, const char *clientid)
{
	struct rec_journal r = {.kind = JREC_SESSION_GONE, .clientid = clientid};

	if(pl->journal){
		journal_write(pl, &r, "a session's end", true);
	}
}

void journal_sub(struct plugin *pl, const struct rec_sub *s, bool gone)
{
	struct rec_journal r = {.kind = gone ? JREC_SUB_GONE : JREC_SUB, .sub = *s};

	if(pl->journal){
		journal_write(pl, &r, gone ? "an unsubscription" : "a subscription", true);
	}
}

void journal_will(struct plugin *pl, const struct rec_will *w)
{
	struct rec_journal r = {.kind = JREC_WILL, .will = *w};

	if(pl->journal){
		journal_write(pl, &r, "a will", false);
	}
}

void journal_will_gone(struct plugin *pl, const char *clientid)
{
	struct rec_journal r = {.kind = JREC_WILL_GONE, .clientid = clientid};

	if(pl->journal){
		journal_write(pl, &r, "a will's end", false);
	}
}

/* Whether a client was connected decides, after a crash, whether its will
 * is due (restore.c). */
void journal_online(struct plugin *pl, const char *clientid, bool online)
{
	struct rec_journal r = {.kind = JREC_ONLINE, .clientid = clientid, .seq = online};

	if(pl->journal){
		journal_write(pl, &r, "a connection", false);
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

bool pubrel_resume(struct plugin *pl, const struct entry *e)
{
	struct pubrel_list *l = pl->intake->pubrel;

	if(!l || strcmp(l->clientid, e->clientid)){
		return false;
	}
	for(size_t i = 0; i < l->n; i++){
		if(l->seqs[i] != e->seq){
			continue;
		}
		if(broker_entry_set_state(e->clientid, e->q.mid, e->q.qos, MSG_STATE_WAIT_FOR_PUBCOMP) != BROKER_OK){
			return false;
		}
		l->seqs[i] = l->seqs[--l->n];
		return true;
	}
	return false;
}

/* ---- a PUBREL the broker could not write ----
 *
 * When a client takes over its session, the broker puts the exchanges whose
 * PUBREL was sent back to "resend PUBREL" and writes the PUBRELs to the new
 * connection. If that write fails (the new connection is already gone), the
 * state stays at "resend PUBREL", which the broker's next reconnection turns
 * into a new PUBLISH (Mosquitto 2.1.2, db__message_reconnect_reset_outgoing):
 * a client that had the message would take it as a second one. Every
 * successful write moves the state on within the same event, so an exchange
 * still at "resend PUBREL" at the next tick is one whose write failed; it is
 * put back to "PUBREL sent", from which the next reconnection resends the
 * PUBREL. */

struct pubrel_lapse {
	char *clientid;
	uint16_t mid;
};

static void lapse_forget(struct plugin *pl, const char *clientid, uint16_t mid)
{
	for(size_t i = 0; i < pl->intake->n_lapsed; i++){
		if(pl->intake->lapsed[i].mid == mid && !strcmp(pl->intake->lapsed[i].clientid, clientid)){
			free(pl->intake->lapsed[i].clientid);
			pl->intake->lapsed[i] = pl->intake->lapsed[--pl->intake->n_lapsed];
			return;
		}
	}
}

void pubrel_noted(struct plugin *pl, const struct entry *e)
{
	struct pubrel_lapse *p;

	lapse_forget(pl, e->clientid, e->q.mid);
	if(e->q.state != MSG_STATE_RESEND_PUBREL){
		return;
	}
	if(ARRAY_GROW(pl->intake->lapsed, pl->intake->n_lapsed, pl->intake->cap_lapsed, 16)){
		return;
	}
	p = &pl->intake->lapsed[pl->intake->n_lapsed];
	p->clientid = strdup(e->clientid);
	p->mid = e->q.mid;
	pl->intake->n_lapsed += p->clientid != NULL;
}

void pubrel_gone(struct plugin *pl, const char *clientid, uint16_t mid)
{
	if(pl->intake->n_lapsed){
		lapse_forget(pl, clientid, mid);
	}
}

void pubrel_lapse_tick(struct plugin *pl)
{
	while(pl->intake->n_lapsed){
		struct pubrel_lapse *p = &pl->intake->lapsed[--pl->intake->n_lapsed];

		if(broker_entry_set_state(p->clientid, p->mid, 2, MSG_STATE_WAIT_FOR_PUBCOMP) == BROKER_OK){
			broker_log(BROKER_LOG_NOTICE, "persist-lmdb: the PUBREL of message %u to %s was not "
					"written (its connection failed); it is sent again at the next connection",
					p->mid, p->clientid);
		}
		free(p->clientid);
	}
}

/* A hand-over puts a session's exchanges whose PUBREL was sent in flight
 * (handback.c): while it does, l lists them (NULL after). */
void pubrel_resuming(struct plugin *pl, struct pubrel_list *l)
{
	pl->intake->pubrel = l;
}

struct intake *intake_new(void)
{
	return calloc(1, sizeof(struct intake));
}

void intake_free(struct intake *in)
{
	if(!in){
		return;
	}
	buf_free(&in->jbuf);
	buf_free(&in->q2_props);
	for(size_t i = 0; i < in->n_incoming; i++){
		free(in->incoming[i].clientid);
	}
	free(in->incoming);
	for(size_t i = 0; i < in->n_lapsed; i++){
		free(in->lapsed[i].clientid);
	}
	free(in->lapsed);
	free(in);
}

void intake_stats(const struct intake *in, struct feature_stats *out)
{
	out->refused_disk_full = in->refused_disk_full;
}
