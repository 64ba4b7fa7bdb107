/* The plugin's shared state, and the values the broker-facing files hand
 * the features (plugin-owned; pointers into the broker's memory valid for
 * the event). Below the dispatch (dispatch.h) and the features (feature.h);
 * no Mosquitto type. */
#ifndef PERSIST_LMDB_STATE_H
#define PERSIST_LMDB_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "broker.h"
#include "journal.h"
#include "options.h"
#include "record.h"
#include "store.h"

/* A message body, or a PUBLISH before the broker stores it (store_id 0).
 * Its pointers are the broker's, valid for the event. */
struct message {
	uint64_t store_id;
	struct rec_base_msg m;   /* its properties encoded */
	struct bytes msg_id;     /* the user property plugin_opt_dedup_property names; data NULL:
	                            none (read only with deduplication on) */
};

/* An entry of a client's queue, outgoing or incoming. */
struct entry {
	const char *clientid;
	uint64_t seq;            /* its place in the client's queue (the broker's cmsg_id) */
	struct rec_queue q;      /* q.seq_no: the number plugin_opt_seq_property gives it */
};

/* A client that authenticates. */
struct client_auth {
	const char *clientid, *username;
	bool transient;   /* an MQTT 3.1.1 clean session: nothing of it is stored */
};

/* What the features count, for the metrics and getStats: each feature
 * fills its part (<feature>_stats), features_stats all of them. */
struct feature_stats {
	uint64_t dedup_ids, duplicates_dropped, dedup_ids_evicted;     /* msgid.c */
	uint64_t refused_disk_full;                                     /* intake.c */
	uint64_t refused_over_budget, refused_retained, refused_sessions, refused_subscriptions;  /* budget.c */
	uint64_t dropped_queue_full, dropped_expired;                  /* retention.c */
	uint64_t backlog_releases, backlog_loaded, backlog_out_of_order;  /* backlog.c */
};

struct replay;

/* The plugin: what the broker-facing files and the features share. Each
 * feature's own state is a struct only its file knows (<feature>_new,
 * _free, _stats). */
struct plugin {
	struct mosquitto_plugin_id_t *id;
	struct plugin_config cfg;
	struct store *store;
	struct journal *journal;   /* the intake journal; NULL: none */
	bool registered;      /* every callback is in place: the broker is running us */
	char *quarantined;    /* where a damaged database was moved at start-up, or NULL */
	struct buf props;     /* scratch for encoding property lists */
	uint64_t marked_lsn;  /* the last journal lsn handed to the store as a mark (mark.c) */
	struct timespec last_sync;    /* plugin_opt_sync periodic */
	struct timespec last_commit;  /* plugin_opt_sync publish */
	struct timespec memory_released_at;  /* the last store_release_memory */
	struct replay *replay;   /* a QoS 2 routing done again at restore, until the first tick (restore.c) */
	uint64_t control_refused;       /* control requests plugin_opt_control_users refused */
	time_t control_refused_log_time;
	time_t metrics_last;
	struct wills *wills;
	struct intake *intake;
	struct msgid *msgid;
	struct seqno *seqno;
	struct budget *budget;
	struct retention *retention;
	struct backlog *backlog;
	struct bodies *bodies;
	const struct handed_notes *handed;  /* features.c */
};

/* Queue limits or expiry are set (retention.c); without, it does nothing. */
static inline bool retention_on(const struct plugin *pl)
{
	return pl->cfg.max_queued_messages || pl->cfg.max_queued_bytes || pl->cfg.offline_ttl;
}

/* Offline backlogs on disk (backlog.c); no-ops with queue_storage memory. */
static inline bool backlog_on(const struct plugin *pl)
{
	return pl->cfg.queue_storage == QUEUE_STORAGE_DISK;
}

/* What the journal says about a queue entry, for a hand-over at start-up
 * (restore.c keeps the journal's records). */
struct handover_journal {
	void *ctx;
	/* The incoming QoS 2 entry was released (routed): the record notes its body. */
	bool (*released_in)(void *ctx, const char *clientid, uint64_t seq, uint64_t store_id);
	/* The outgoing QoS 2 entry's PUBREL was sent, under *mid (0: not known). */
	bool (*pubrel_sent)(void *ctx, const char *clientid, uint64_t seq, uint16_t *mid);
};

#endif
