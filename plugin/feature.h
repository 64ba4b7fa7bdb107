/* The feature modules, as the dispatch (features.c) calls them and as they
 * call each other. Nothing here knows Mosquitto: the features take
 * plugin-owned values (state.h) and reach the broker through broker.h.
 * The build compiles them with Mosquitto's headers out of reach
 * (CMakeLists.txt). */
#ifndef PERSIST_LMDB_FEATURE_H
#define PERSIST_LMDB_FEATURE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "dedup.h"
#include "state.h"
#include "u64map.h"

/* One session's restored outgoing QoS 2 messages whose PUBREL was sent. */
struct pubrel_list {
	const char *clientid;
	uint64_t *seqs;
	size_t n, cap;
};

/* Per-client records by client id (clients.c). Each record is a struct
 * whose first member is its char *clientid, owned by the record. */
struct client_table {
	void **slots;
	size_t cap, count;
};

void *client_find(const struct client_table *t, const char *clientid);
/* The record of clientid, added zeroed (size bytes) with a copy of the id
 * when missing; NULL when out of memory. */
void *client_get_or_add(struct client_table *t, const char *clientid, size_t size);
/* Removes the record of clientid from the table and returns it, or NULL. */
void *client_take(struct client_table *t, const char *clientid);
void client_table_free(struct client_table *t, void (*free_rec)(void *rec));


void msgid_stats(const struct msgid *m, struct feature_stats *out);
void intake_stats(const struct intake *in, struct feature_stats *out);
void budget_stats(const struct budget *b, struct feature_stats *out);
void retention_stats(const struct retention *r, struct feature_stats *out);
void backlog_stats(const struct backlog *b, struct feature_stats *out);

/* Wills the broker publishes on its own (wills.c). */
/* Deletes the records of delayed wills the broker has published by now. */
void pending_wills_expire(struct plugin *pl, time_t now);
/* A will's delay started: the broker publishes it at deadline. */
void will_delay_track(struct plugin *pl, const char *clientid, time_t deadline);
/* The broker handles clientid's going offline: what it publishes for it now is its will. */
void will_leaving(struct plugin *pl, const char *clientid);
/* clientid's will was deleted. */
void will_gone(struct plugin *pl, const char *clientid);
/* Whether a message the broker publishes with this source is the client's
 * will: it is leaving, or its will's delay is over. */
bool will_publishing(const struct plugin *pl, const char *clientid);
/* The session is gone: its will delay no longer matters. */
void pending_will_forget(struct plugin *pl, const char *clientid);
struct wills *wills_new(void);
void wills_free(struct wills *w);

/* The intake journal (intake.c). */
/* The journal mark (mark.c): everything up to the last journal record, or up to lsn. */
void journal_mark(struct plugin *pl);
void journal_mark_to(struct plugin *pl, uint64_t lsn);
/* Commits what is buffered together with the journal mark that covers it:
 * committed without the mark, effects of journal records would be applied
 * again when a restart replays them. */
int commit_marked(struct plugin *pl);
/* The same, returning once readers see it, without waiting for the sync
 * (the journal covers a crash until the next commit syncs it). */
int commit_marked_visible(struct plugin *pl);
struct intake *intake_new(void);
void intake_free(struct intake *in);
/* Whether QoS 1/2 publishes are refused: the database's device is full. */
bool intake_disk_full(struct plugin *pl);
void journal_note_in(struct plugin *pl, const struct message *p);
void journal_accepted(struct plugin *pl, const struct message *p);
/* Every tick: publish mode's records that wait for no answer go to the disk. */
void journal_tick(struct plugin *pl);
void journal_q2_stash(struct plugin *pl, const struct message *b);
void journal_originated(struct plugin *pl, const struct message *b);
void journal_q2_routed(struct plugin *pl, uint64_t store_id);
void journal_q2_incoming(struct plugin *pl, const struct entry *e);
/* A QoS 2 PUBLISH is about to leave: it does only with its routing committed. */
void journal_q2_out(struct plugin *pl);
void journal_pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid);
/* Disk mode: a QoS 2 PUBLISH went out (the entry's update to "wait for
 * PUBREC"). */
void journal_q2_sent(struct plugin *pl, const struct entry *e);
void journal_completed(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t store_id);
void journal_released_in(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t store_id);
void journal_q2_entry(struct plugin *pl, const struct entry *e);
void journal_q2_tick(struct plugin *pl);
void incoming_add(struct plugin *pl, uint64_t store_id, const char *clientid, uint64_t cmsg_id);
void incoming_forget(struct plugin *pl, const char *clientid);
void journal_session(struct plugin *pl, const struct rec_session *s);
void journal_session_gone(struct plugin *pl, const char *clientid);
void journal_sub(struct plugin *pl, const struct rec_sub *s, bool gone);
void journal_will(struct plugin *pl, const struct rec_will *w);
void journal_will_gone(struct plugin *pl, const char *clientid);
void journal_online(struct plugin *pl, const char *clientid, bool online);
/* Idempotent publishes (msgid.c). */
/* Whether a publish is a duplicate (counted: the caller drops it). */
bool dedup_check(struct plugin *pl, const struct message *p);
void dedup_q2_stored(struct plugin *pl, const struct message *b, uint8_t direction);
int dedup_open(struct plugin *pl);
struct msgid *msgid_new(void);
void msgid_free(struct msgid *m);
void dedup_sweep(struct plugin *pl);
void dedup_note(struct plugin *pl, const struct message *p);
void dedup_q2_released(struct plugin *pl, uint64_t store_id);
void dedup_client_gone(struct plugin *pl, const char *clientid, bool session_ended);

/* A stored body's payload size and expiry (unix seconds, 0: none). */
/* An outgoing entry of a stored session, added by the broker or restored. */
void retention_add(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid, uint8_t qos,
		uint64_t store_id);
void retention_remove(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint8_t qos, uint64_t store_id);
void retention_session_gone(struct plugin *pl, const char *clientid);
void retention_online(struct plugin *pl, const char *clientid, bool online);
void retention_tick(struct plugin *pl);
/* Disk mode, at restore: the stored bodies, then the entries of each
 * session whose queue stays stored. */
void retention_stored_begin(struct plugin *pl);
/* changed: the journal changed its stored queue, so its tally is counted again. */
void retention_stored(struct plugin *pl, const char *clientid, bool changed);
/* Disk mode, at restore: a session the journal names, handed over whole. */
void retention_recount(struct plugin *pl, const char *clientid);
/* The client's stored queue was emptied. */
void retention_purged(struct plugin *pl, const char *clientid);
/* Disk mode: buffers the tallies that changed (before every journal mark). */
void retention_flush(struct plugin *pl);
/* A client of a stored session authenticates: what expired goes now. */
void retention_auth(struct plugin *pl, const char *clientid);
struct retention *retention_new(void);
void retention_free(struct retention *r);

/* The message bodies the features keep track of (bodies.c): their size
 * and expiry (read by the retention limits) and, in disk mode, whether the
 * broker holds them (a hand-back does not add a held one again). */
struct body_note {
	int64_t expiry;   /* unix seconds; 0: none */
	uint32_t bytes;   /* payload */
	bool held;        /* disk mode: the broker holds the body */
};
/* A body the broker holds now (it stored it, or was handed it). */
void bodies_held(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry);
/* A body read from the store at a restart in disk mode (not held). */
void bodies_stored(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry);
void bodies_gone(struct plugin *pl, uint64_t store_id);
const struct body_note *bodies_find(const struct plugin *pl, uint64_t store_id);
bool bodies_resident(const struct plugin *pl, uint64_t store_id);
/* Forgets the bodies the broker does not hold. */
void bodies_keep_held(struct plugin *pl);
struct bodies *bodies_new(void);
void bodies_free(struct bodies *b);
/* The broker holds none of the client's outgoing messages. */
bool backlog_released(const struct plugin *pl, const char *clientid);
/* The broker queued an outgoing message for clientid (state: where it put it). */
void backlog_msg_added(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid,
		uint8_t qos, uint8_t state);
/* The queue seq of the broker's message number cmsg_id of clientid (added:
 * from the message's add event). */
uint64_t backlog_entry_seq(struct plugin *pl, const char *clientid, uint64_t cmsg_id, bool added);
/* The broker deleted an outgoing message of clientid (in that state). */
void backlog_msg_deleted(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid, uint8_t state);
/* The broker moved an outgoing message of clientid into flight (a publish
 * state); true when it is one handed back as sent (backlog_handed_sent),
 * which the store must keep as sent: the broker did not send it again. */
bool backlog_msg_moved(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid);
/* The broker holds an outgoing QoS 2 message of clientid whose PUBREL was sent. */
void backlog_pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
/* An entry of clientid's queue is about to be written (the store reads
 * committed data: a part of a drain that starts at or before it needs a
 * commit first). */
void backlog_queue_written(struct plugin *pl, const char *clientid, uint64_t seq);
/* A message handed back that the client may have received (handed_notes.sent). */
void backlog_handed_sent(struct plugin *pl, const char *clientid, uint64_t seq);
void backlog_online(struct plugin *pl, const char *clientid, bool online);
/* At restore: the session's queue is in the database (held: and the
 * broker holds it too, until the next tick). */
int backlog_defer(struct plugin *pl, const char *clientid, bool held);
void backlog_session_added(struct plugin *pl, const char *clientid);
void backlog_session_gone(struct plugin *pl, const char *clientid);
void backlog_tick(struct plugin *pl);
/* A client of a stored session authenticates: its queue is handed back. */
void backlog_auth(struct plugin *pl, const char *clientid);
/* From CONNECT: the client's stored messages, when BASIC_AUTH did not hand them over. */
void backlog_connected(struct plugin *pl, const char *clientid);
struct backlog *backlog_new(void);
void backlog_free(struct backlog *b);
#define MID_MAP_BYTES (65536 / 8)

/* Hands (part of) a session's stored queue to the broker (restore.c). */
struct queue_load {
	uint64_t from;      /* the first seq to hand over; 0: the queue's start */
	uint64_t before;    /* outgoing entries from this seq on stay; 0: none */
	size_t max;         /* most outgoing entries; 0: no limit */
	bool incoming;      /* the incoming QoS 2 entries too */
	bool kick;          /* the client is connected: have the broker send them */
	unsigned next_mid;  /* in and out: new packet ids go on after it */
	uint8_t *mids;      /* in and out, MID_MAP_BYTES: packet ids the broker holds; NULL: none */
	size_t loaded;      /* out */
	size_t queued;      /* out: of them, how many the broker queued behind its in-flight window */
	uint64_t next_seq;  /* out: the first entry left over at max; 0: none */
};
int queue_load(struct plugin *pl, const char *clientid, struct queue_load *ql);
/* Has the broker hold the body store_id (from the store) unless it does:
 * BROKER_OK, BROKER_NOT_FOUND (no such body stored), BROKER_FAILED (the
 * store could not be read) or the broker's refusal. */
int body_ensure(struct plugin *pl, uint64_t store_id);
/* Hands a stored body to the broker; BROKER_OK or why not. */
int body_add(struct plugin *pl, uint64_t store_id, const struct rec_base_msg *m);

/* What a hand-over tells the features (features.c fills it in): handback.c,
 * which a feature calls too, names none of them. */
struct handed_notes {
	/* An incoming QoS 2 entry the broker took, not released yet. */
	void (*incoming)(struct plugin *pl, uint64_t store_id, const char *clientid, uint64_t seq);
	/* An outgoing entry the broker took at start-up (one handed back at run
	 * time was counted when it was stored). */
	void (*outgoing)(struct plugin *pl, const char *clientid, uint64_t seq, uint16_t mid, uint8_t qos,
			uint64_t store_id);
	/* An entry of a hand-back the broker refused: removed from the store. */
	void (*refused)(struct plugin *pl, const char *clientid, uint64_t seq, uint8_t qos, uint64_t store_id);
	/* A session's queue is about to be handed over. */
	void (*session)(struct plugin *pl, const char *clientid);
	/* An outgoing entry handed over with its plugin_opt_seq_property number n
	 * (released: its PUBREL was sent). */
	int (*numbered)(struct plugin *pl, const char *clientid, uint64_t seq, uint64_t n, bool released);
	/* Disk mode: the broker let go of the session's outgoing messages; they
	 * are in the store only. */
	void (*let_go)(struct plugin *pl, const char *clientid);
	/* An outgoing entry handed over that the client may have received under
	 * its packet id; the broker's copy does not say so. */
	void (*sent)(struct plugin *pl, const char *clientid, uint64_t seq);
};

struct held;

/* One session's queue handed to the broker (handback.c). */
struct handover {
	struct plugin *pl;
	const char *clientid;
	const struct handover_journal *journal;  /* NULL: none */
	struct queue_load *load;      /* a hand-back at run time (queue_load), or NULL */
	size_t visited;               /* queue_load: outgoing entries seen */
	unsigned next_mid;
	int walk_rc;
	uint8_t own_mids[MID_MAP_BYTES];
	uint8_t *mids;                /* the session's packet ids in use: own_mids or the caller's */
	unsigned n_mids;              /* how many */
	struct pubrel_list pubrel;    /* the session's QoS 2 messages whose PUBREL was sent */
	struct held *held;            /* the session's first outgoing entries, not handed over yet */
	size_t n_held, cap_held;
	bool holding;
	unsigned long refused, orphaned;  /* this session's entries the broker refused / without a body */
	unsigned long queued, failed, pubrel_resumed;  /* over every session handed over */
};
/* Hands h->clientid's stored queue to the broker from seq from (0: its start). */
void handover_session(struct handover *h, uint64_t from);
void handover_free(struct handover *h);

/* Whether plugin_opt_max_db_size refuses a publish. */
bool budget_refuses(struct plugin *pl, const struct message *p);
/* Whether it refuses a connection (that would start a stored session) or a subscription. */
bool budget_refuses_client(struct plugin *pl, const struct client_auth *c);
bool budget_refuses_subscription(struct plugin *pl, const char *clientid);
struct budget *budget_new(void);
void budget_free(struct budget *b);

/* Sequence numbers for clients (seqno.c). */
/* A QoS 1/2 PUBLISH is about to leave for clientid: its number, 0 when it has none. */
uint64_t seq_next_out(struct plugin *pl, const char *clientid);
uint64_t seq_assign(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
uint64_t seq_lookup(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void seq_remove(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void seq_released(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void seq_connection_ended(struct plugin *pl, const char *clientid);
void seq_session_ended(struct plugin *pl, const char *clientid);
int seq_restore(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t n, bool released);
void seq_restore_last(struct plugin *pl, const char *clientid, uint64_t last);
/* The broker holds none of the session's outgoing messages any more. */
void seq_let_go(struct plugin *pl, const char *clientid);
void seq_handover(struct plugin *pl, const char *clientid);
void seq_flush(struct plugin *pl);
struct seqno *seqno_new(void);
void seqno_free(struct seqno *sq);

/* From the client message update of a message the broker moves in flight:
 * true when it was put back in its PUBREL-sent state. */
bool pubrel_resume(struct plugin *pl, const struct entry *e);
/* While a hand-over puts a session's exchanges whose PUBREL was sent in
 * flight, l lists them (NULL after). */
void pubrel_resuming(struct plugin *pl, struct pubrel_list *l);
/* Outgoing QoS 2 state changes and deletions, and the tick that puts back
 * exchanges whose PUBREL the broker could not write (intake.c). */
void pubrel_noted(struct plugin *pl, const struct entry *e);
void pubrel_gone(struct plugin *pl, const char *clientid, uint16_t mid);
void pubrel_lapse_tick(struct plugin *pl);


#endif
