/* Shared state of the Mosquitto adapter (plugin.c, events.c, restore.c, props.c). */
#ifndef PERSIST_LMDB_ADAPTER_H
#define PERSIST_LMDB_ADAPTER_H

#include <time.h>

#include <mosquitto.h>
#include <mosquitto/broker.h>

/* Every broker function the plugin calls, as a weak reference: a broker
 * without one (Mosquitto 2.0 lacks the persistence interface and several
 * property accessors) still loads the plugin, which then names what it needs
 * (plugin.c) instead of failing inside dlopen. A ctest checks that no broker
 * symbol is left out of this list. */
#define BROKER_FUNCTIONS(X) \
	X(mosquitto_broker_publish) \
	X(mosquitto_broker_publish_copy) \
	X(mosquitto_callback_register) \
	X(mosquitto_callback_unregister) \
	X(mosquitto_client_clean_session) \
	X(mosquitto_client_id) \
	X(mosquitto_client_protocol_version) \
	X(mosquitto_client_username) \
	X(mosquitto_control_command_reply) \
	X(mosquitto_persist_client_delete) \
	X(mosquitto_persist_client_msg_clear) \
	X(mosquitto_persist_retain_msg_delete) \
	X(mosquitto_client_will_set) \
	X(mosquitto_free) \
	X(mosquitto_log_printf) \
	X(mosquitto_malloc) \
	X(mosquitto_persist_base_msg_add) \
	X(mosquitto_persist_client_add) \
	X(mosquitto_persist_client_msg_add) \
	X(mosquitto_persist_client_msg_delete) \
	X(mosquitto_persist_client_msg_update) \
	X(mosquitto_persist_retain_msg_set) \
	X(mosquitto_persistence_location) \
	X(mosquitto_plugin_set_info) \
	X(mosquitto_property_add_binary) \
	X(mosquitto_property_add_byte) \
	X(mosquitto_property_add_int16) \
	X(mosquitto_property_add_int32) \
	X(mosquitto_property_add_string) \
	X(mosquitto_property_add_string_pair) \
	X(mosquitto_property_add_varint) \
	X(mosquitto_property_binary_value) \
	X(mosquitto_property_binary_value_length) \
	X(mosquitto_property_byte_value) \
	X(mosquitto_property_copy_all) \
	X(mosquitto_property_free_all) \
	X(mosquitto_property_identifier) \
	X(mosquitto_property_identifier_to_string) \
	X(mosquitto_property_int16_value) \
	X(mosquitto_property_int32_value) \
	X(mosquitto_property_next) \
	X(mosquitto_property_string_name) \
	X(mosquitto_property_string_name_length) \
	X(mosquitto_property_string_value) \
	X(mosquitto_property_string_value_length) \
	X(mosquitto_property_type) \
	X(mosquitto_property_varint_value) \
	X(mosquitto_strdup) \
	X(mosquitto_strerror) \
	X(mosquitto_string_to_property_info) \
	X(mosquitto_subscription_add) \
	X(mosquitto_topic_matches_sub)

#define PRAGMA_(x) _Pragma(#x)
#define WEAK_REF(f) PRAGMA_(weak f)
BROKER_FUNCTIONS(WEAK_REF)

#include "dedup.h"
#include "idset.h"
#include "journal.h"
#include "options.h"
#include "record.h"
#include "store.h"

/* Client message directions and the QoS 2 states the plugin acts on, as the
 * broker numbers them (its internal enum; persist-sqlite stores the same). */
#define MSG_DIR_IN 0
#define MSG_DIR_OUT 1
#define MSG_STATE_WAIT_FOR_PUBACK 3
#define MSG_STATE_PUBLISH_QOS2 4
#define MSG_STATE_WAIT_FOR_PUBREC 5
#define MSG_STATE_RESEND_PUBREL 6
#define MSG_STATE_WAIT_FOR_PUBREL 7
#define MSG_STATE_WAIT_FOR_PUBCOMP 9
#define MSG_STATE_QUEUED 11

/* A will whose delay is running. The broker publishes it when the delay
 * ends and tells no plugin, so its record is deleted here, in the same
 * commit as the copies the broker queued for offline subscribers. */
struct pending_will {
	char *clientid;
	time_t deadline;
	unsigned ticks_due;   /* ticks seen since the deadline passed */
};

/* One session's restored outgoing QoS 2 messages whose PUBREL was sent. */
struct pubrel_list {
	const char *clientid;
	uint64_t *seqs;
	size_t n, cap;
};

struct q2_pending;
struct pubrel_lapse;
struct replay;

/* A stored incoming QoS 2 message not released yet (intake.c). */
struct incoming_q2 {
	uint64_t store_id;
	char *clientid;
	uint64_t cmsg_id;
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

struct ret_session;
struct body_info;

/* Queue limits and expiry of offline sessions (retention.c). */
struct retention {
	struct client_table sessions;   /* struct ret_session */
	struct body_info *bodies;       /* size and expiry by store id */
	size_t bcap, bcount;
	struct ret_session **due;       /* sessions to apply the limits or expiry to */
	size_t n_due, cap_due;
	int64_t expiry_scan_at;
	time_t log_at;
	uint64_t dropped_full, dropped_expired;
};

/* plugin_opt_queue_storage disk (backlog.c): offline sessions' messages
 * are taken out of the broker at the tick and handed back when the client
 * returns. */
struct backlog {
	struct client_table sessions;   /* struct backlog_session */
	char **due;                     /* offline sessions the broker holds messages of */
	size_t n_due, cap_due;
	char **draining;                /* connected sessions whose stored queue is handed back in parts */
	size_t n_draining, cap_draining;
	uint64_t out_of_order;          /* routed during a hand-back and sent ahead of it */
	uint64_t evicted, loaded;       /* messages taken out of / handed back to the broker */
	time_t log_at;
	time_t unmapped_at;   /* monotonic second of the last store_unmap_pages */
};

/* plugin_opt_max_db_size (budget.c). */
struct budget {
	char **filters;   /* subscriptions of the sessions offline at read_at */
	size_t n, cap;
	bool all;         /* they could not be read: every topic counts as matched */
	bool over;        /* the last publish checked found the budget reached */
	time_t read_at;   /* monotonic seconds; 0: not read */
	time_t log_at;
	uint64_t measured;               /* the store's used bytes when last read */
	uint64_t admitted;               /* payload bytes let in since then */
	uint64_t refused;                /* QoS 1/2 publishes for offline sessions */
	uint64_t refused_retained;
	uint64_t refused_sessions;       /* connections that would start a stored session */
	uint64_t refused_subscriptions;  /* of clients whose session is stored */
};


struct plugin {
	mosquitto_plugin_id_t *id;
	struct plugin_config cfg;
	struct store *store;
	bool registered;      /* every callback is in place: the broker is running us */
	char *quarantined;    /* where a damaged database was moved at start-up, or NULL */
	struct buf props;     /* scratch for encoding property lists */
	struct pending_will *pending_wills;
	size_t n_pending_wills;
	size_t cap_pending_wills;
	char *leaving;        /* the client whose going offline the broker is handling: what it
	                         publishes for it, until that client's will ends, is its will */
	struct journal *journal;
	struct buf jbuf;        /* scratch for journal records */
	uint64_t marked_lsn;    /* the last journal lsn handed to the store as a mark */
	bool journal_unsynced;  /* publish mode: records written to the mapping, synced at the tick */
	time_t journal_log_time;
	struct timespec last_sync;  /* plugin_opt_sync periodic */
	struct timespec last_commit;  /* plugin_opt_sync publish */
	struct pubrel_list *pubrel;  /* set while restore.c resumes one session's exchanges */
	struct mosquitto_base_msg q2_stash;  /* a QoS 2 body just stored (intake.c) */
	uint64_t q2_routed_lsn;  /* the journal record of the last QoS 2 routing */
	uint64_t q2_routing_store_id;  /* its body */
	uint64_t tail_store_id;  /* a routing committed in its middle: its further copies are journaled */
	const char *in_topic;    /* the buffers of the last message MESSAGE_IN saw (journal_originated) */
	const void *in_payload;
	struct replay *replay;   /* a QoS 2 routing done again at restore, until the first tick (restore.c) */
	struct incoming_q2 *incoming;  /* by store id */
	size_t n_incoming, cap_incoming;
	struct pubrel_lapse *lapsed;  /* exchanges left at "resend PUBREL" (intake.c) */
	size_t n_lapsed, cap_lapsed;
	struct dedup *dedup;     /* NULL: deduplication off */
	struct q2_pending *q2p;  /* QoS 2 message ids whose exchange is in progress */
	size_t n_q2p, cap_q2p;
	uint64_t dedup_dropped, dedup_evicted;
	uint64_t refused_disk_full;
	uint64_t control_refused;       /* control requests plugin_opt_control_users refused */
	time_t control_refused_log_time;
	time_t disk_full_log_time;
	time_t metrics_last;
	struct client_table seqs;   /* struct seq_session, for plugin_opt_seq_property */
	struct budget budget;
	struct retention retention;
	struct backlog backlog;
	struct idset bodies_held;   /* disk mode: the bodies the broker holds (handback.c) */
	const struct handed_notes *handed;  /* &features_handed */
};

/* The broker as the features reach it (broker.c). The calls that change
 * what the broker holds can raise the plugin's persistence events before
 * they return. */
/* Logs a failed store call ("cannot record <what>") and maps it to MOSQ_ERR_*. */
int store_result(int rc, const char *what);
/* How a QoS 1/2 publish is refused: MQTT 5 has a reason code (quota
 * exceeded); an MQTT 3.1.1 PUBACK has none, so such a publisher is
 * disconnected unacknowledged and resends after reconnecting. */
int publish_refusal(const struct mosquitto_evt_message *ed);
/* The broker drops an outgoing message of clientid (its delete event follows). */
int broker_entry_drop(const char *clientid, uint16_t mid, uint8_t qos);
/* The same for a message the plugin keeps elsewhere: while the broker's
 * delete event for it runs, broker_taking() is true (not to be recorded). */
int broker_entry_take(const char *clientid, uint16_t mid, uint8_t qos);
bool broker_taking(void);
/* The broker drops every outgoing message it holds for clientid. */
int broker_queue_release(const char *clientid);
/* Sets the state of an outgoing message the broker holds for clientid. */
int broker_entry_set_state(const char *clientid, uint16_t mid, uint8_t qos, uint8_t state);
bool broker_topic_matches(const char *filter, const char *topic);
/* A copy of p in the broker's heap (the broker frees it), NUL after len bytes. */
void *broker_copy(const void *p, size_t len);

/* Every feature forgets the session of clientid (features.c). */
void features_session_gone(struct plugin *pl, const char *clientid);

/* What the features count, for the metrics and getStats: each feature
 * fills its part (<feature>_stats), features_stats all of them. */
struct feature_stats {
	uint64_t dedup_ids, duplicates_dropped, dedup_ids_evicted;     /* msgid.c */
	uint64_t refused_disk_full;                                     /* intake.c */
	uint64_t refused_over_budget, refused_retained, refused_sessions, refused_subscriptions;  /* budget.c */
	uint64_t dropped_queue_full, dropped_expired;                  /* retention.c */
	uint64_t backlog_releases, backlog_loaded, backlog_out_of_order;  /* backlog.c */
};
void features_stats(const struct plugin *pl, struct feature_stats *out);
void msgid_stats(const struct plugin *pl, struct feature_stats *out);
void intake_stats(const struct plugin *pl, struct feature_stats *out);
void budget_stats(const struct plugin *pl, struct feature_stats *out);
void retention_stats(const struct plugin *pl, struct feature_stats *out);
void backlog_stats(const struct plugin *pl, struct feature_stats *out);

int persist_restore_cb(int event, void *event_data, void *userdata);
/* A QoS 2 routing committed in part, done again at restore (restore.c). */
bool replay_partial(struct plugin *pl, uint64_t lsn);
void replay_note_completed(struct plugin *pl, const char *clientid, uint64_t store_id);
void replay_body(struct plugin *pl, const struct rec_base_msg *m);
void replay_body_added(struct plugin *pl, const struct mosquitto_base_msg *d);
bool replay_duplicate(struct plugin *pl, const struct mosquitto_client_msg *d);
bool replay_dropping(const struct plugin *pl);
void replay_tick(struct plugin *pl);
void replay_free(struct plugin *pl);


int on_base_msg_add(int event, void *event_data, void *userdata);
int on_base_msg_delete(int event, void *event_data, void *userdata);
int on_retain_msg_set(int event, void *event_data, void *userdata);
int on_retain_msg_delete(int event, void *event_data, void *userdata);
int on_client_add(int event, void *event_data, void *userdata);
int on_client_update(int event, void *event_data, void *userdata);
int on_client_delete(int event, void *event_data, void *userdata);
int on_subscription_add(int event, void *event_data, void *userdata);
int on_subscription_delete(int event, void *event_data, void *userdata);
int on_client_msg_add(int event, void *event_data, void *userdata);
int on_client_msg_update(int event, void *event_data, void *userdata);
int on_client_msg_delete(int event, void *event_data, void *userdata);
int on_will_add(int event, void *event_data, void *userdata);
int on_will_delete(int event, void *event_data, void *userdata);
int on_connect(int event, void *event_data, void *userdata);
int on_client_offline(int event, void *event_data, void *userdata);
int on_disconnect(int event, void *event_data, void *userdata);

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
void pending_wills_free(struct plugin *pl);
/* The session is gone: its will delay no longer matters. */
void pending_will_forget(struct plugin *pl, const char *clientid);

/* The intake journal (intake.c). */
int on_message_in(int event, void *event_data, void *userdata);
/* The journal mark (mark.c): everything up to the last journal record, or up to lsn. */
void journal_mark(struct plugin *pl);
void journal_mark_to(struct plugin *pl, uint64_t lsn);
/* Commits what is buffered together with the journal mark that covers it:
 * committed without the mark, effects of journal records would be applied
 * again when a restart replays them. */
int commit_marked(struct plugin *pl);
/* Every tick: publish mode's records that wait for no answer go to the disk. */
void journal_tick(struct plugin *pl);
void journal_q2_stash(struct plugin *pl, const struct mosquitto_base_msg *d);
void journal_originated(struct plugin *pl, const struct mosquitto_base_msg *d);
void journal_q2_routed(struct plugin *pl, uint64_t store_id);
void journal_q2_incoming(struct plugin *pl, const struct mosquitto_client_msg *cm);
/* MOSQ_EVT_MESSAGE_OUT: a QoS 2 PUBLISH leaves only with its routing committed. */
int on_publish_out(int event, void *event_data, void *userdata);
void journal_pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void journal_completed(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t store_id);
void journal_released_in(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t store_id);
void journal_q2_entry(struct plugin *pl, const struct mosquitto_client_msg *cm);
void journal_q2_tick(struct plugin *pl);
void incoming_add(struct plugin *pl, uint64_t store_id, const char *clientid, uint64_t cmsg_id);
void incoming_forget(struct plugin *pl, const char *clientid);
void incoming_free(struct plugin *pl);
void journal_session(struct plugin *pl, const struct rec_session *s);
void journal_session_gone(struct plugin *pl, const char *clientid);
void journal_sub(struct plugin *pl, const struct rec_sub *s, bool gone);
void journal_will(struct plugin *pl, const struct rec_will *w);
void journal_will_gone(struct plugin *pl, const char *clientid);
void journal_online(struct plugin *pl, const char *clientid, bool online);
/* Idempotent publishes (msgid.c). */
bool dedup_check(struct plugin *pl, struct mosquitto_evt_message *ed);
void dedup_q2_stored(struct plugin *pl, const struct mosquitto_base_msg *d, uint8_t direction);
int dedup_open(struct plugin *pl);
void dedup_close(struct plugin *pl);
void dedup_sweep(struct plugin *pl);
void dedup_note(struct plugin *pl, const struct rec_base_msg *m);
void dedup_q2_released(struct plugin *pl, uint64_t store_id);
void dedup_client_gone(struct plugin *pl, const char *clientid, bool session_ended);

/* A stored body's payload size and expiry (unix seconds, 0: none). */
void retention_body(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry);
void retention_body_gone(struct plugin *pl, uint64_t store_id);
/* An outgoing entry of a stored session, added by the broker or restored. */
void retention_add(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid, uint8_t qos,
		uint64_t store_id);
void retention_remove(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void retention_session_gone(struct plugin *pl, const char *clientid);
void retention_online(struct plugin *pl, const char *clientid, bool online);
void retention_tick(struct plugin *pl);
/* Disk mode, at restore: the stored bodies, the entries of each session
 * whose queue stays stored, then the end of the restore. */
void retention_stored_begin(struct plugin *pl);
void retention_stored(struct plugin *pl, const char *clientid);
void retention_stored_done(struct plugin *pl);
int on_basic_auth(int event, void *event_data, void *userdata);
void retention_free(struct plugin *pl);

/* Offline backlogs on disk (backlog.c); no-ops with queue_storage memory. */
static inline bool backlog_on(const struct plugin *pl)
{
	return pl->cfg.queue_storage == QUEUE_STORAGE_DISK;
}
/* The broker holds none of the client's outgoing messages. */
bool backlog_released(const struct plugin *pl, const char *clientid);
/* The broker queued an outgoing message for clientid (state: where it put it). */
void backlog_msg_added(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid,
		uint8_t qos, uint8_t state);
/* The broker deleted an outgoing message of clientid; false when the
 * deletion is the plugin's own and must not be recorded. */
bool backlog_msg_deleted(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid);
/* The broker holds an outgoing QoS 2 message of clientid whose PUBREL was sent. */
void backlog_pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void backlog_online(struct plugin *pl, const char *clientid, bool online);
/* At restore: the session's queue is in the database (held: and the
 * broker holds it too, until the next tick). */
int backlog_defer(struct plugin *pl, const char *clientid, bool held);
void backlog_session_added(struct plugin *pl, const char *clientid);
void backlog_session_gone(struct plugin *pl, const char *clientid);
void backlog_tick(struct plugin *pl);
int on_basic_auth_backlog(int event, void *event_data, void *userdata);
/* From CONNECT: the client's stored messages, when BASIC_AUTH did not hand them over. */
void backlog_connected(struct plugin *pl, const char *clientid);
void backlog_free(struct plugin *pl);
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
	uint64_t next_seq;  /* out: the first entry left over at max; 0: none */
};
int queue_load(struct plugin *pl, const char *clientid, struct queue_load *ql);
/* Has the broker hold the body store_id (from the store) unless it does. */
int body_ensure(struct plugin *pl, uint64_t store_id);
/* plugin_opt_queue_storage disk: the bodies the broker holds, which a
 * hand-back does not add again (handback.c). */
void body_held(struct plugin *pl, uint64_t store_id);
void body_gone(struct plugin *pl, uint64_t store_id);
bool body_resident(const struct plugin *pl, uint64_t store_id);
void bodies_free(struct plugin *pl);
/* Hands a stored body to the broker; MOSQ_ERR_SUCCESS or why not. */
int body_add(struct plugin *pl, uint64_t store_id, const struct rec_base_msg *m);

/* What the journal says about a queue entry, for a hand-over at start-up
 * (restore.c keeps the journal's records). */
struct handover_journal {
	void *ctx;
	/* The incoming QoS 2 entry was released (routed): the record notes its body. */
	bool (*released_in)(void *ctx, const char *clientid, uint64_t seq, uint64_t store_id);
	/* The outgoing QoS 2 entry's PUBREL was sent. */
	bool (*pubrel_sent)(void *ctx, const char *clientid, uint64_t seq);
};

/* What a hand-over tells the features (features.c fills it in): handback.c,
 * which a feature calls too, names none of them. */
struct handed_notes {
	/* A body the broker took. */
	void (*body)(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry);
	/* An incoming QoS 2 entry the broker took, not released yet. */
	void (*incoming)(struct plugin *pl, uint64_t store_id, const char *clientid, uint64_t seq);
	/* An outgoing entry the broker took at start-up (one handed back at run
	 * time was counted when it was stored). */
	void (*outgoing)(struct plugin *pl, const char *clientid, uint64_t seq, uint16_t mid, uint8_t qos,
			uint64_t store_id);
	/* An entry the broker refused: removed from the store. */
	void (*refused)(struct plugin *pl, const char *clientid, uint64_t seq);
};
extern const struct handed_notes features_handed;

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

/* MOSQ_ERR_SUCCESS, or the refusal of a publish over plugin_opt_max_db_size. */
int budget_check(struct plugin *pl, const struct mosquitto_evt_message *ed);
/* MOSQ_EVT_BASIC_AUTH and MOSQ_EVT_SUBSCRIBE at the budget. */
int on_basic_auth_budget(int event, void *event_data, void *userdata);
int on_subscribe_budget(int event, void *event_data, void *userdata);
void budget_free(struct plugin *pl);

/* $SYS metrics (metrics.c), from the tick. */
void metrics_tick(struct plugin *pl);

/* Sequence numbers for clients (seqno.c). */
int on_message_out(int event, void *event_data, void *userdata);
uint64_t seq_assign(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
uint64_t seq_lookup(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void seq_remove(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void seq_released(struct plugin *pl, const char *clientid, uint64_t cmsg_id);
void seq_connection_ended(struct plugin *pl, const char *clientid);
void seq_session_ended(struct plugin *pl, const char *clientid);
int seq_restore(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t n, bool released);
void seq_restore_last(struct plugin *pl, const char *clientid, uint64_t last);
void seq_flush(struct plugin *pl);
void seq_free(struct plugin *pl);

/* From the client message update of a message the broker moves in flight:
 * true when it was put back in its PUBREL-sent state. */
bool pubrel_resume(struct plugin *pl, const struct mosquitto_client_msg *d);
/* Outgoing QoS 2 state changes and deletions, and the tick that puts back
 * exchanges whose PUBREL the broker could not write (intake.c). */
void pubrel_noted(struct plugin *pl, const struct mosquitto_client_msg *d);
void pubrel_gone(struct plugin *pl, const char *clientid, uint16_t mid);
void pubrel_lapse_tick(struct plugin *pl);
void pubrel_lapse_free(struct plugin *pl);

#define CONTROL_TOPIC "$CONTROL/persist-lmdb/v1"
/* MOSQ_EVT_CONTROL on CONTROL_TOPIC (control.c). */
int on_control(int event, void *event_data, void *userdata);
/* Logs who may use the control API (plugin_opt_control_users). */
void control_announce(const struct plugin *pl);

/* Property lists <-> the stored encoding: id varint, then the value as a
 * varint (byte, int16, int32, varint) or byte field(s) (binary, string,
 * string pair). props_encode leaves b->err set on failure. */
void props_encode(struct buf *b, const mosquitto_property *props);
/* props encoded into pl->props (valid until the next call); -1 when out of memory. */
int props_view(struct plugin *pl, const mosquitto_property *props, struct bytes *out);
int props_decode(struct bytes in, mosquitto_property **out);

#endif
