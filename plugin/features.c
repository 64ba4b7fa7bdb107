/* The dispatch: what each step of a message's or a client's life means to
 * the feature modules. The broker-facing files translate the broker's
 * events into plugin-owned values and call these; each function names the
 * modules that act on the step, in the order they must. */
#include "dispatch.h"
#include "feature.h"

#include <stdlib.h>
#include <string.h>

enum verdict features_publish_in(struct plugin *pl, const struct message *p)
{
	journal_note_in(pl, p);
	if(p->m.qos > 0 && intake_disk_full(pl)){
		return VERDICT_REFUSE;
	}
	if(budget_refuses(pl, p)){
		return VERDICT_REFUSE;
	}
	if(dedup_check(pl, p)){
		return VERDICT_DUPLICATE;
	}
	journal_accepted(pl, p);
	return VERDICT_ACCEPT;
}

uint64_t features_publish_out(struct plugin *pl, const char *clientid, uint8_t qos)
{
	if(qos == 2){
		journal_q2_out(pl);
	}
	return qos > 0 && pl->cfg.seq_property ? seq_next_out(pl, clientid) : 0;
}

void features_body_added(struct plugin *pl, const struct message *b)
{
	journal_q2_stash(pl, b);
	journal_originated(pl, b);
	bodies_held(pl, b->store_id, (uint32_t)b->m.payload.len, b->m.expiry_time);
}

void features_body_gone(struct plugin *pl, uint64_t store_id)
{
	bodies_gone(pl, store_id);
}

void features_retained(struct plugin *pl, uint64_t store_id)
{
	journal_q2_routed(pl, store_id);
}

void features_entry_added(struct plugin *pl, struct entry *e)
{
	const struct rec_queue *q = &e->q;

	e->seq = backlog_entry_seq(pl, e->clientid, e->seq, true);

	backlog_queue_written(pl, e->clientid, e->seq);
	if(q->direction == MSG_DIR_IN){
		journal_q2_incoming(pl, e);
		return;
	}
	journal_q2_routed(pl, q->store_id);
	journal_q2_entry(pl, e);
	if(pl->cfg.seq_property && q->qos > 0){
		e->q.seq_no = seq_assign(pl, e->clientid, e->seq);
	}
	retention_add(pl, e->clientid, e->seq, q->mid, q->qos, q->store_id);
	backlog_msg_added(pl, e->clientid, e->seq, q->mid, q->qos, q->state);
}

bool features_entry_updated(struct plugin *pl, struct entry *e)
{
	const struct rec_queue *q = &e->q;

	e->seq = backlog_entry_seq(pl, e->clientid, e->seq, false);

	if(q->direction == MSG_DIR_OUT && (q->state == MSG_STATE_PUBLISH_QOS1 || q->state == MSG_STATE_PUBLISH_QOS2)
			&& backlog_msg_moved(pl, e->clientid, e->seq, q->mid)){
		e->q.dup = 1;
	}
	if(q->direction == MSG_DIR_OUT && q->qos == 2){
		pubrel_noted(pl, e);
		if(q->state == MSG_STATE_WAIT_FOR_PUBCOMP){
			journal_pubrel_sent(pl, e->clientid, e->seq, q->mid);
			backlog_pubrel_sent(pl, e->clientid, e->seq);
		}else if(q->state == MSG_STATE_PUBLISH_QOS2 && pubrel_resume(pl, e)){
			backlog_pubrel_sent(pl, e->clientid, e->seq);
			seq_released(pl, e->clientid, e->seq);
			return false;
		}
		if(q->state == MSG_STATE_WAIT_FOR_PUBCOMP || q->state == MSG_STATE_RESEND_PUBREL){
			seq_released(pl, e->clientid, e->seq);
		}
	}
	e->q.seq_no = pl->cfg.seq_property ? seq_lookup(pl, e->clientid, e->seq) : 0;
	if(backlog_on(pl) && q->direction == MSG_DIR_OUT && q->qos == 2 && q->state == MSG_STATE_WAIT_FOR_PUBREC){
		journal_q2_sent(pl, e);
	}
	backlog_queue_written(pl, e->clientid, e->seq);
	return true;
}

bool features_entry_gone(struct plugin *pl, struct entry *e)
{
	const struct rec_queue *q = &e->q;

	e->seq = backlog_entry_seq(pl, e->clientid, e->seq, false);

	/* The plugin's own taking back (disk mode, a replayed routing's copy):
	 * the entry stays stored; only the broker's send order loses it. */
	if(broker_taking()){
		if(pl->cfg.seq_property){
			seq_remove(pl, e->clientid, e->seq);
		}
		return false;
	}
	backlog_queue_written(pl, e->clientid, e->seq);
	if(q->direction == MSG_DIR_IN){
		journal_released_in(pl, e->clientid, e->seq, q->store_id);
		dedup_q2_released(pl, q->store_id);
		return true;
	}
	backlog_msg_deleted(pl, e->clientid, e->seq, q->mid, q->state);
	if(q->qos == 2){
		pubrel_gone(pl, e->clientid, q->mid);
		if(q->state == MSG_STATE_WAIT_FOR_PUBCOMP){
			journal_completed(pl, e->clientid, e->seq, q->store_id);
		}
	}
	if(pl->cfg.seq_property){
		seq_remove(pl, e->clientid, e->seq);
	}
	retention_remove(pl, e->clientid, e->seq, q->qos, q->store_id);
	return true;
}

void features_session_added(struct plugin *pl, const struct rec_session *s)
{
	backlog_session_added(pl, s->clientid);
	journal_session(pl, s);
}

void features_session_updated(struct plugin *pl, const struct rec_session *s)
{
	if(s->will_delay_time > time(NULL)){
		will_delay_track(pl, s->clientid, (time_t)s->will_delay_time);
	}
	journal_session(pl, s);
}

void features_session_gone(struct plugin *pl, const char *clientid)
{
	pending_will_forget(pl, clientid);
	dedup_client_gone(pl, clientid, true);
	seq_session_ended(pl, clientid);
	retention_session_gone(pl, clientid);
	backlog_session_gone(pl, clientid);
	incoming_forget(pl, clientid);
	journal_session_gone(pl, clientid);
}

void features_queue_purged(struct plugin *pl, const char *clientid)
{
	retention_purged(pl, clientid);
}

void features_subscription(struct plugin *pl, const struct rec_sub *s, bool gone)
{
	journal_sub(pl, s, gone);
}

void features_will(struct plugin *pl, const struct rec_will *w)
{
	journal_will(pl, w);
}

void features_will_gone(struct plugin *pl, const char *clientid)
{
	will_gone(pl, clientid);
	journal_will_gone(pl, clientid);
}

/* Order matters: a refused connection must not skip a hand-back already
 * begun (the next tick takes it back out), and what expired goes only for
 * a client let in. */
bool features_client_auth(struct plugin *pl, const struct client_auth *c)
{
	backlog_auth(pl, c->clientid);
	if(budget_refuses_client(pl, c)){
		return true;
	}
	retention_auth(pl, c->clientid);
	return false;
}

bool features_subscribe(struct plugin *pl, const char *clientid)
{
	return budget_refuses_subscription(pl, clientid);
}

/* On a connection the broker drops the session's old will without an event
 * (a new session's will is announced right after). */
void features_client_connected(struct plugin *pl, const char *clientid)
{
	pending_will_forget(pl, clientid);
	retention_online(pl, clientid, true);
	backlog_connected(pl, clientid);
	backlog_online(pl, clientid, true);
	journal_will_gone(pl, clientid);
	journal_online(pl, clientid, true);
}

void features_client_disconnected(struct plugin *pl, const char *clientid)
{
	/* The broker publishes its will next, if it has one due now. */
	will_leaving(pl, clientid);
	dedup_client_gone(pl, clientid, false);
	seq_connection_ended(pl, clientid);
	retention_online(pl, clientid, false);
	backlog_online(pl, clientid, false);
	journal_online(pl, clientid, false);
}

void features_tick(struct plugin *pl)
{
	pending_wills_expire(pl, time(NULL));
	pubrel_lapse_tick(pl);
	dedup_sweep(pl);
	seq_flush(pl);
	store_used_refresh(pl->store);
	/* Disk mode: the limits act on sessions released first. */
	backlog_tick(pl);
	retention_tick(pl);
	journal_tick(pl);
	journal_mark(pl);
	journal_q2_tick(pl);
}

/* The store is open: what the features keep there comes back. */
int features_open(struct plugin *pl)
{
	return dedup_open(pl);
}

int features_commit(struct plugin *pl)
{
	return commit_marked(pl);
}

void features_flush(struct plugin *pl)
{
	seq_flush(pl);
	journal_mark(pl);
}

/* ---- start-up: what restore.c hands the broker ---- */

struct handover *features_restore_begin(struct plugin *pl, const struct handover_journal *hooks)
{
	struct handover *h = calloc(1, sizeof(*h));

	if(!h){
		return NULL;
	}
	h->pl = pl;
	h->mids = h->own_mids;
	h->journal = hooks;
	if(backlog_on(pl)){
		retention_stored_begin(pl);
	}
	return h;
}

int features_restore_body(struct plugin *pl, uint64_t store_id, const struct rec_base_msg *m)
{
	return body_add(pl, store_id, m);
}

/* In disk mode a body is handed over when what refers to it is. */
int features_restore_retained(struct plugin *pl, uint64_t store_id)
{
	return backlog_on(pl) ? body_ensure(pl, store_id) : BROKER_OK;
}

/* In disk mode a session's queue stays stored, except one the journal
 * names: that one is handed over whole and released at the first tick. */
int features_restore_queue(struct plugin *pl, struct handover *h, const char *clientid, bool journaled,
		bool changed)
{
	int rc = 0;

	h->clientid = clientid;
	if(backlog_on(pl) && journaled){
		retention_recount(pl, clientid);
	}
	if(!backlog_on(pl) || journaled){
		handover_session(h, 0);
	}else{
		/* Messages routed to the session before its client returns number on. */
		seq_handover(pl, clientid);
	}
	if(backlog_on(pl)){
		if(backlog_defer(pl, clientid, journaled)){
			rc = -1;
		}else if(!journaled){
			retention_stored(pl, clientid, changed);
		}
	}
	h->clientid = NULL;
	return rc;
}

void features_restore_done(struct plugin *pl, struct handover *h, struct restore_counts *out)
{
	*out = (struct restore_counts){0};
	if(backlog_on(pl)){
		bodies_keep_held(pl);
	}
	if(h){
		*out = (struct restore_counts){h->queued, h->failed, h->pubrel_resumed};
		handover_free(h);
		free(h);
	}
}

/* A routing replayed from the journal: its message id is known again. */
void features_replayed(struct plugin *pl, const struct message *p)
{
	dedup_note(pl, p);
}

/* What a hand-over tells the features (handback.c names none of them). */
static const struct handed_notes features_handed = {
	.incoming = incoming_add,
	.outgoing = retention_add,
	.refused = retention_remove,
	.session = seq_handover,
	.numbered = seq_restore,
	.let_go = seq_let_go,
	.sent = backlog_handed_sent,
};

int features_new(struct plugin *pl)
{
	pl->wills = wills_new();
	pl->intake = intake_new();
	pl->msgid = msgid_new();
	pl->seqno = seqno_new();
	pl->budget = budget_new();
	pl->retention = retention_new();
	pl->backlog = backlog_new();
	pl->bodies = bodies_new();
	pl->handed = &features_handed;
	return pl->wills && pl->intake && pl->msgid && pl->seqno && pl->budget && pl->retention && pl->backlog
		&& pl->bodies ? 0 : -1;
}

void features_free(struct plugin *pl)
{
	wills_free(pl->wills);
	intake_free(pl->intake);
	msgid_free(pl->msgid);
	seqno_free(pl->seqno);
	budget_free(pl->budget);
	retention_free(pl->retention);
	backlog_free(pl->backlog);
	bodies_free(pl->bodies);
}

void features_stats(const struct plugin *pl, struct feature_stats *out)
{
	memset(out, 0, sizeof(*out));
	msgid_stats(pl->msgid, out);
	intake_stats(pl->intake, out);
	budget_stats(pl->budget, out);
	retention_stats(pl->retention, out);
	backlog_stats(pl->backlog, out);
}
