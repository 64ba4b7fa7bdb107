/* Handing a session's stored queue to the broker: at start-up for every
 * session (restore.c), and with plugin_opt_queue_storage disk to a client
 * that returns, in parts (backlog.c). What the journal says about an entry
 * reaches it through the hooks restore.c gives; a hand-back at run time has
 * none. */
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>

/* Most entries of a session held back at its restore (handover_session). */
#define HOLD_MAX 1024

struct held {
	uint64_t seq;
	struct rec_queue q;
};

int body_add(struct plugin *pl, uint64_t store_id, const struct rec_base_msg *m)
{
	int rc = broker_body_add(store_id, m);

	if(rc == BROKER_OK){
		bodies_held(pl, store_id, (uint32_t)m->payload.len, m->expiry_time);
	}
	return rc;
}

struct ensure {
	struct plugin *pl;
	int rc;
};

static int ensure_visit(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct ensure *e = ctx;

	e->rc = body_add(e->pl, store_id, m);
	return 0;
}

int body_ensure(struct plugin *pl, uint64_t store_id)
{
	struct ensure e = {pl, BROKER_NOT_FOUND};

	if(bodies_resident(pl, store_id)){
		return BROKER_OK;
	}
	if(store_msg_get(pl->store, store_id, ensure_visit, &e) != STORE_OK){
		return BROKER_FAILED;
	}
	/* Not found when the store has no such body; else the broker's answer. */
	return e.rc;
}

/* An outgoing QoS 2 entry whose PUBREL was sent. */
static bool pubrel_was_sent(const struct rec_queue *q)
{
	return q->direction == MSG_DIR_OUT && q->qos == 2
		&& (q->state == MSG_STATE_WAIT_FOR_PUBCOMP || q->state == MSG_STATE_RESEND_PUBREL);
}

/* Applies what the journal says about one queue entry (q is updated);
 * returns true when the entry is used up (an incoming message the journal
 * says was routed). */
static bool queued_from_journal(struct handover *h, uint64_t seq, struct rec_queue *q)
{
	const char *clientid = h->clientid;
	struct store *st = h->pl->store;
	const struct handover_journal *j = h->journal;

	if(q->direction == MSG_DIR_IN && q->qos == 2){
		if(j && j->released_in(j->ctx, clientid, seq, q->store_id)){
			store_queue_remove(st, clientid, seq, q->store_id);
			store_msg_release(st, q->store_id);
			return true;
		}
	}
	if(q->direction == MSG_DIR_OUT && q->qos == 2){
		uint16_t mid = 0;
		if(!pubrel_was_sent(q) && j && j->pubrel_sent(j->ctx, clientid, seq, &mid)){
			/* The client knows the message by the id the PUBREL went under. */
			q->state = MSG_STATE_WAIT_FOR_PUBCOMP;
			q->mid = mid ? mid : q->mid;
			store_queue_update(st, clientid, seq, q);
		}
		if(pubrel_was_sent(q)){
			struct pubrel_list *l = &h->pubrel;
			if(ARRAY_GROW(l->seqs, l->n, l->cap, 8)){
				broker_log(BROKER_LOG_WARNING, "persist-lmdb: out of memory: QoS 2 message %u "
						"of %s will be sent again as a new PUBLISH", q->mid, clientid);
				return false;
			}
			l->seqs[l->n++] = seq;
		}
	}
	return false;
}

/* An outgoing message the client may have received: its packet id stays.
 * dup marks one the broker moved into flight again after it was sent
 * (backlog_msg_moved). */
static bool was_sent(const struct rec_queue *q)
{
	uint8_t state = q->state;

	return state == MSG_STATE_WAIT_FOR_PUBACK || state == MSG_STATE_WAIT_FOR_PUBREC
		|| state == MSG_STATE_RESEND_PUBREL || state == MSG_STATE_WAIT_FOR_PUBCOMP
		|| (q->dup && (state == MSG_STATE_PUBLISH_QOS1 || state == MSG_STATE_PUBLISH_QOS2));
}

static bool mid_held(const struct handover *h, uint16_t mid)
{
	return h->mids[mid >> 3] & (1u << (mid & 7));
}

static void take_mid(struct handover *h, uint16_t mid)
{
	if(!mid_held(h, mid)){
		h->mids[mid >> 3] |= (uint8_t)(1u << (mid & 7));
		h->n_mids++;
	}
}

/* The next packet id no message handed over so far has; once all are
 * taken, the next one (as the broker numbers a queue longer than the id
 * space). */
static uint16_t free_mid(struct handover *h)
{
	for(unsigned i = 0; i < 65535 && h->n_mids < 65535; i++){
		unsigned mid = h->next_mid % 65535 + 1;
		h->next_mid = mid;
		if(!mid_held(h, (uint16_t)mid)){
			return (uint16_t)mid;
		}
	}
	h->next_mid = h->next_mid % 65535 + 1;
	return (uint16_t)h->next_mid;
}

/* A hand-back's part ends before seq: it and what follows stay stored.
 * Returns 1 (the walk stops). */
static int leave_stored(struct handover *h, uint64_t seq)
{
	if(!h->load->next_seq || seq < h->load->next_seq){
		h->load->next_seq = seq;
	}
	return 1;
}

/* Hands one stored entry, the journal applied, to the broker; 1 stops the
 * walk (a part of a hand-back is full). */
static int hand_over(struct handover *h, uint64_t seq, const struct rec_queue *q)
{
	uint16_t mid = q->mid;
	int rc;

	/* A later part of a hand-back that stopped after handing over, out of
	 * order, messages whose PUBREL was sent (flush_held): the broker holds
	 * them already, under the id they keep. */
	if(h->load && h->load->from && q->direction == MSG_DIR_OUT && q->qos > 0 && was_sent(q)
			&& mid_held(h, mid)){
		return 0;
	}
	if(q->direction == MSG_DIR_OUT && q->qos > 0){
		/* In disk mode the broker deletes, acknowledges and takes back a
		 * client's messages by packet id, and numbers the ones it routes on
		 * from the last id it was handed: stored ids (from several broker
		 * runs, or given at an earlier hand-back) would collide with those.
		 * A message not yet sent gets the next free id, in queue order; one
		 * sent keeps its id, by which the client knows it. Memory mode keeps
		 * every id, as the broker's own persistence does. */
		if(backlog_on(h->pl) && !was_sent(q)){
			mid = free_mid(h);
		}
		h->next_mid = mid;
		take_mid(h, mid);
	}
	rc = backlog_on(h->pl) ? body_ensure(h->pl, q->store_id) : BROKER_OK;
	if(rc == BROKER_OK){
		rc = broker_entry_add(h->clientid, seq, mid, q);
	}
	if(rc == BROKER_OK && h->load && !h->load->kick){
		/* The client is not connected yet: the broker queues everything. */
		h->load->queued++;
	}
	if(rc == BROKER_QUEUED_OR_DROPPED && h->load){
		if(h->load->kick){
			h->load->queued++;
			rc = BROKER_OK;
		}else{
			/* The rest stays stored, for a later part. */
			leave_stored(h, seq);
			return 1;
		}
	}
	if(rc == BROKER_OK){
		h->queued++;
		if(q->direction == MSG_DIR_IN){
			h->pl->handed->incoming(h->pl, q->store_id, h->clientid, seq);
		}
		/* A hand-back's entries are under the limits since they were stored. */
		if(q->direction == MSG_DIR_OUT && !h->load){
			h->pl->handed->outgoing(h->pl, h->clientid, seq, mid, q->qos, q->store_id);
		}
		if(q->direction == MSG_DIR_OUT && q->qos > 0 && was_sent(q)){
			h->pl->handed->sent(h->pl, h->clientid, seq);
		}
		if(q->seq_no && q->direction == MSG_DIR_OUT){
			h->pl->handed->numbered(h->pl, h->clientid, seq, q->seq_no,
					q->state == MSG_STATE_WAIT_FOR_PUBCOMP || q->state == MSG_STATE_RESEND_PUBREL);
		}
		return 0;
	}
	/* Kept, it would come back after newer messages at a later restart. */
	store_queue_remove(h->pl->store, h->clientid, seq, q->store_id);
	if(h->load && q->direction == MSG_DIR_OUT){
		h->pl->handed->refused(h->pl, h->clientid, seq, q->qos, q->store_id);
	}
	h->failed++;
	if(rc == BROKER_NOT_FOUND){
		h->orphaned++;
	}else{
		h->refused++;
	}
	return 0;
}

/* The held entries, those whose PUBREL was sent first (see
 * handover_session), then no more holding. Returns 1 when the broker took
 * no more (a hand-back's part ends; what it did not take stays stored). */
static int flush_held(struct handover *h)
{
	int stop = 0;

	/* Handed over out of order, a message not sent yet would get a new
	 * packet id that a sent one held later keeps: theirs are taken first. */
	for(size_t i = 0; i < h->n_held; i++){
		const struct held *e = &h->held[i];
		if(e->q.direction == MSG_DIR_OUT && e->q.qos > 0 && was_sent(&e->q)){
			take_mid(h, e->q.mid);
		}
	}

	for(int pass = 0; pass < 2; pass++){
		for(size_t i = 0; i < h->n_held; i++){
			struct held *e = &h->held[i];
			if(pubrel_was_sent(&e->q) != (pass == 0)){
				continue;
			}
			if(stop){
				leave_stored(h, e->seq);
			}else{
				stop = hand_over(h, e->seq, &e->q);
			}
		}
	}
	h->n_held = 0;
	h->holding = false;
	return stop;
}

static int handover_visit(void *ctx, uint64_t seq, const struct rec_queue *stored)
{
	struct handover *h = ctx;
	struct rec_queue q = *stored;

	if(h->load){
		struct queue_load *ql = h->load;
		if(ql->before && seq >= ql->before){
			return 1;
		}
		if(!ql->incoming && q.direction == MSG_DIR_IN){
			return 0;
		}
		if(q.direction == MSG_DIR_OUT && ql->max && h->visited == ql->max){
			return leave_stored(h, seq);
		}
		h->visited += q.direction == MSG_DIR_OUT;
	}
	if(queued_from_journal(h, seq, &q)){
		return 0;
	}
	if(h->holding && q.direction == MSG_DIR_OUT){
		if(h->n_held < HOLD_MAX){
			if(ARRAY_GROW(h->held, h->n_held, h->cap_held, 64)){
				return flush_held(h) ? leave_stored(h, seq) : hand_over(h, seq, &q);
			}
			h->held[h->n_held++] = (struct held){seq, q};
			return 0;
		}
		if(flush_held(h)){
			return leave_stored(h, seq);
		}
	}
	return hand_over(h, seq, &q);
}

/* The broker moves queued messages in flight, and sends them to a connected
 * client, after it deletes one: deleting a packet id none of the session's
 * messages has does just that. */
static void fill_in_flight(struct handover *h)
{
	/* Handed back in parts, a queue's earlier parts hold the ids before
	 * the ones of this part: the next id is free. */
	uint16_t mid = free_mid(h);

	if(!mid_held(h, mid)){
		broker_entry_drop(h->clientid, mid, 2);
	}
}

/* Has the broker move the session's first messages in flight now, so that
 * the ones whose PUBREL was sent keep that state (intake.c). */
static void pubrel_resume_session(struct handover *h)
{
	size_t before = h->pubrel.n;

	h->pubrel.clientid = h->clientid;
	pubrel_resuming(h->pl, &h->pubrel);
	fill_in_flight(h);
	pubrel_resuming(h->pl, NULL);
	h->pubrel_resumed += before - h->pubrel.n;
	if(h->pubrel.n){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: %zu QoS 2 messages of client %s had their "
				"PUBREL sent but are not among the first in flight: they are sent again as new PUBLISHes",
				h->pubrel.n, h->clientid);
	}
	h->pubrel.n = 0;
}

void handover_session(struct handover *h, uint64_t from)
{
	h->refused = h->orphaned = 0;
	if(h->mids == h->own_mids){
		memset(h->own_mids, 0, sizeof(h->own_mids));
		h->n_mids = 0;
	}
	h->pl->handed->session(h->pl, h->clientid);
	/* The broker puts a session's first messages in flight (its window), and
	 * only those can resume at PUBREL: the others go out as new PUBLISHes.
	 * Entries ahead of one whose PUBREL was sent (deliveries acknowledged
	 * just before the crash, whose deletion was not committed) would push
	 * it out of the window; so a whole session's first entries (at start-up,
	 * and in the first part of a hand-back at run time) are held and handed
	 * over with those whose PUBREL was sent first. They carry no new
	 * delivery, so the order of deliveries stays. */
	h->holding = !h->load || !h->load->from;
	h->walk_rc = from ? store_walk_queue_from(h->pl->store, h->clientid, from, handover_visit, h)
		: store_walk_queue(h->pl->store, h->clientid, handover_visit, h);
	flush_held(h);
	if(h->pubrel.n){
		pubrel_resume_session(h);
	}
	if(h->orphaned){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: dropped %lu queued messages of client %s "
				"when handing them to the broker: their message bodies are missing (rejected or lost)",
				h->orphaned, h->clientid);
	}
	if(h->refused){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: dropped %lu queued messages of client %s "
				"when handing them to the broker: it refused them (max_queued_messages / max_queued_bytes)",
				h->refused, h->clientid);
	}
}

void handover_free(struct handover *h)
{
	free(h->pubrel.seqs);
	free(h->held);
	h->pubrel.seqs = NULL;
	h->held = NULL;
	h->pubrel.n = h->pubrel.cap = 0;
	h->n_held = h->cap_held = 0;
}

/* Packet ids in use: a hand-back's map holds at most a window's worth of
 * its 65,536 bits, so it counts word by word, set bits only (a popcount
 * per byte cost more than the rest of a hand-back's part of a session of
 * 20 messages, in callgrind). */
static unsigned mids_count(const uint8_t *mids)
{
	unsigned n = 0;

	for(size_t i = 0; i < MID_MAP_BYTES; i += sizeof(uint64_t)){
		uint64_t w;
		memcpy(&w, mids + i, sizeof(w));
		for(; w; w &= w - 1){
			n++;
		}
	}
	return n;
}

int queue_load(struct plugin *pl, const char *clientid, struct queue_load *ql)
{
	struct handover *h = calloc(1, sizeof(*h));
	int rc;

	if(!h){
		return STORE_ERR_NOMEM;
	}
	h->pl = pl;
	h->clientid = clientid;
	h->load = ql;
	h->mids = ql->mids ? ql->mids : h->own_mids;
	h->n_mids = ql->mids ? mids_count(ql->mids) : 0;
	h->next_mid = ql->next_mid;
	ql->next_seq = 0;
	handover_session(h, ql->from);
	if(ql->kick && h->queued){
		fill_in_flight(h);
	}
	ql->loaded = h->queued;
	ql->next_mid = h->next_mid;
	rc = h->walk_rc == 1 ? STORE_OK : h->walk_rc;
	handover_free(h);
	free(h);
	return rc;
}

