/* plugin_opt_* parsing, independent of Mosquitto so the CLI and tests share it. */
#ifndef PERSIST_LMDB_OPTIONS_H
#define PERSIST_LMDB_OPTIONS_H

#include <stddef.h>

enum sync_mode {
	SYNC_TICK,     /* a write transaction per commit interval, synced */
	SYNC_PUBLISH,  /* as tick, and the journal is synced before each acknowledgement */
	SYNC_PERIODIC, /* a transaction per commit interval, synced every sync_interval_ms */
};

#define SYNC_INTERVAL_DEFAULT_MS 1000u
#define COMMIT_INTERVAL_DEFAULT_MS 100u
#define COMMIT_INTERVAL_MAX_MS 10000u
#define DEDUP_PROPERTY_DEFAULT "msg-id"
#define DEDUP_WINDOW_DEFAULT_S 3600u
#define DEDUP_MAX_IDS_DEFAULT 100000u
#define METRICS_INTERVAL_DEFAULT_S 10u
#define QUEUE_WINDOW_DEFAULT 1000u

enum queue_full {
	QUEUE_FULL_DROP_NEW,     /* a message that would exceed a limit is dropped */
	QUEUE_FULL_DROP_OLDEST,  /* the oldest messages make room for it */
};

enum queue_storage {
	QUEUE_STORAGE_MEMORY,  /* the broker holds every queued message, as its own persistence does */
	QUEUE_STORAGE_DISK,    /* offline sessions' messages are in the database only (the default) */
};

/* What a start-up does with a damaged database (never with a wrong key). */
enum on_damage {
	ON_DAMAGE_REFUSE,      /* the broker does not start */
	ON_DAMAGE_QUARANTINE,  /* the database is moved aside and the broker starts empty */
};

struct option_kv {
	const char *key;   /* without the plugin_opt_ prefix */
	const char *value;
};

struct plugin_config {
	char *db_path;
	char *key_file;
	size_t map_size;
	size_t max_db_size;     /* bytes of live pages; 0: no budget */
	size_t max_queued_messages;  /* per offline session; 0: no limit */
	size_t max_queued_bytes;     /* payload bytes per offline session; 0: no limit */
	enum queue_full queue_full;
	unsigned offline_ttl;   /* seconds; default expiry of a queued message; 0: none */
	enum queue_storage queue_storage;
	size_t queue_window;    /* queue_storage disk: messages handed back to the broker at a time */
	enum sync_mode sync;
	enum on_damage on_damage;
	unsigned sync_interval_ms;
	unsigned commit_interval_ms; /* tick, periodic: least time between commits; 0: every iteration */
	size_t journal_size;
	char *personal_topics;  /* account deletion: patterns with %u and %c, or NULL */
	char *dedup_property;   /* user property holding a publisher's message id */
	unsigned dedup_window;  /* seconds; 0 turns deduplication off */
	size_t dedup_max_ids;
	char *seq_property;     /* user property for sequence numbers; NULL: off */
	unsigned metrics_interval;  /* seconds between $SYS metrics; 0: off */
	char *control_users;    /* who may use the control API: usernames, "*" (any
	                           client with a username), or NULL (the API is off) */
};

/* Fills cfg from the options. persistence_location (may be NULL) gives the
 * default db_path. Returns 0, or -1 with a sentence naming the option in err. */
int config_parse(struct plugin_config *cfg, const struct option_kv *opts, int count,
		const char *persistence_location, char *err, size_t errlen);
void config_free(struct plugin_config *cfg);
const char *sync_mode_name(enum sync_mode m);

/* "64M", "1g", "4096": bytes with an optional k/m/g (1024-based) suffix. */
int parse_size(const char *s, size_t *out);
/* "90", "90s", "15m", "2h", "7d": seconds. */
int parse_duration(const char *s, unsigned long long *seconds);

#endif
