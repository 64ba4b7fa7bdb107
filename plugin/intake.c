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
	journal_release(pl->journal, store_journal_durable(pl->store));
}

int commit_marked(struct plugin *pl)
{
	journal_mark(pl);
	return store_commit(pl->store);
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
		if(commit_marked(pl) == STORE_OK){
			journal_release(pl->journal, store_journal_durable(pl->store));
		}
		rc = journal_append(pl->journal, pl->jbuf.data, pl->jbuf.len, pl->cfg.sync == SYNC_PUBLISH, &lsn);
	}
	if(rc){
		log_limited(pl, what, rc);
		return 0;
	}
	return lsn;
}

int publish_refusal(const struct mosquitto_evt_message *ed)
{
	return mosquitto_client_protocol_version(ed->client) == 5 ? MOSQ_ERR_QUOTA_EXCEEDED
		: MOSQ_ERR_ADMINISTRATIVE_ACTION;
}

/* While the database's device is full nothing more can be kept: QoS 1/2
 * publishes are refused rather than acknowledged and lost. */
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
	return publish_refusal(ed);
}

/* Journals a message to be routed again after a crash (m without its
 * properties, which are encoded here); returns the lsn, 0 when it could
 * not be journaled. */
static uint64_t journal_publish(struct plugin *pl, const struct rec_base_msg *m,
		const mosquitto_property *props, const char *what)
{
	struct rec_journal r = {.kind = JREC_PUBLISH, .msg = *m};

	if(!r.msg.payload.len){
		r.msg.payload.data = (const uint8_t *)"";
	}
	if(props_view(pl, props, &r.msg.properties)){
		log_limited(pl, what, JOURNAL_ERR_NOMEM);
		return 0;
	}
	return journal_write(pl, &r, what);
}

int on_message_in(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	if(ed->qos > 0 && store_disk_full(pl->store)){
		return refuse_disk_full(pl, ed);
	}
	int rc = budget_check(pl, ed);
	if(rc != MOSQ_ERR_SUCCESS){
		return rc;
	}
	if(dedup_check(pl, ed) || ed->qos != 1 || !pl->journal){
		return MOSQ_ERR_SUCCESS;
	}
	struct rec_base_msg m = {
		.topic = ed->topic,
		.payload = {ed->payload, ed->payloadlen},
		.qos = ed->qos,
		.retain = ed->retain,
		.source_id = mosquitto_client_id(ed->client),
		.source_username = mosquitto_client_username(ed->client),
	};
	journal_publish(pl, &m, ed->properties, "an accepted message");
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

	if(!d->store_id){
		return;
	}
	if(d->store_id == store_id){
		struct rec_base_msg m = {
			.topic = d->topic,
			.payload = {d->payload, d->payloadlen},
			.qos = d->qos,
			.retain = d->retain,
			.source_id = d->source_id,
			.source_username = d->source_username,
			.expiry_time = d->expiry_time,
		};
		dedup_q2_stored(pl, d, direction);
		pl->q2_routed_lsn = journal_publish(pl, &m, d->properties, "a QoS 2 message");
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
		if(commit_marked(pl) != STORE_OK){
			mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: cannot commit before a PUBREL to %s: "
					"after a crash now the message could come to it again", clientid);
		}
		journal_release(pl->journal, store_journal_durable(pl->store));
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
		backlog_pubrel_sent(pl, d->clientid, d->cmsg_id);
		l->seqs[i] = l->seqs[--l->n];
		return true;
	}
	return false;
}
