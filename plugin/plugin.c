/* Plugin entry points: options, opening the store, registering the events,
 * and the tick that commits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#pragma GCC visibility push(default)
#include <mosquitto/broker_plugin.h>
#pragma GCC visibility pop

#include "adapter.h"


#define PLUGIN_NAME "persist-lmdb"
#define MOSQ_NEEDED "Mosquitto 2.1 or later"
/* How long the broker may sleep with changes made after the tick (session
 * expiry, will delay) before the next loop iteration commits them. */
#define IDLE_COMMIT_MS 100
/* The soonest the memory a burst left is given back, once the store is idle. */
#define IDLE_RELEASE_MS 200
/* In publish mode every acknowledged change is on the disk in the journal
 * already: the store commits in batches, so that its syncs do not compete
 * with the journal's for the device. */
#define PUBLISH_COMMIT_MS 50

MOSQUITTO_PLUGIN_DECLARE_VERSION(5);

static struct plugin *g_plugin;

static const struct {
	int event;
	MOSQ_FUNC_generic_callback cb;
} persist_events[] = {
	{MOSQ_EVT_PERSIST_RESTORE, persist_restore_cb},
	{MOSQ_EVT_PERSIST_BASE_MSG_ADD, on_base_msg_add},
	{MOSQ_EVT_PERSIST_BASE_MSG_DELETE, on_base_msg_delete},
	{MOSQ_EVT_PERSIST_RETAIN_MSG_SET, on_retain_msg_set},
	{MOSQ_EVT_PERSIST_RETAIN_MSG_DELETE, on_retain_msg_delete},
	{MOSQ_EVT_PERSIST_CLIENT_ADD, on_client_add},
	{MOSQ_EVT_PERSIST_CLIENT_UPDATE, on_client_update},
	{MOSQ_EVT_PERSIST_CLIENT_DELETE, on_client_delete},
	{MOSQ_EVT_PERSIST_SUBSCRIPTION_ADD, on_subscription_add},
	{MOSQ_EVT_PERSIST_SUBSCRIPTION_DELETE, on_subscription_delete},
	{MOSQ_EVT_PERSIST_CLIENT_MSG_ADD, on_client_msg_add},
	{MOSQ_EVT_PERSIST_CLIENT_MSG_UPDATE, on_client_msg_update},
	{MOSQ_EVT_PERSIST_CLIENT_MSG_DELETE, on_client_msg_delete},
	{MOSQ_EVT_PERSIST_WILL_ADD, on_will_add},
	{MOSQ_EVT_PERSIST_WILL_DELETE, on_will_delete},
	{MOSQ_EVT_CONNECT, on_connect},
	{MOSQ_EVT_CLIENT_OFFLINE, on_client_offline},
	{MOSQ_EVT_DISCONNECT, on_disconnect},
	{MOSQ_EVT_MESSAGE_IN, on_message_in},
	{MOSQ_EVT_MESSAGE_OUT, on_message_out},
};

static void store_log(int level, const char *msg)
{
	static const int levels[] = {
		[STORE_LOG_ERR] = MOSQ_LOG_ERR,
		[STORE_LOG_WARNING] = MOSQ_LOG_WARNING,
		[STORE_LOG_NOTICE] = MOSQ_LOG_NOTICE,
		[STORE_LOG_INFO] = MOSQ_LOG_INFO,
	};
	mosquitto_log_printf(levels[level], "%s", msg);
}

static long ms_between(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

/* Every loop iteration; once per commit interval (or when a quarter of the
 * journal is used), commit what the events since the last commit wrote:
 * what the broker acknowledged in between is in the journal, and a commit
 * rewrites every page it touches, so fewer, larger commits cost less per
 * message when messages go to many queues. */
static int on_tick(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_tick *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	replay_tick(pl);
	metrics_tick(pl);
	features_tick(pl);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long every = pl->cfg.sync == SYNC_PUBLISH ? PUBLISH_COMMIT_MS : (long)pl->cfg.commit_interval_ms;
	if(ms_between(&pl->last_commit, &now) >= every || journal_used(pl->journal) > journal_size(pl->journal) / 4){
		store_commit_async(pl->store);
		pl->last_commit = now;
	}
	if(pl->cfg.sync == SYNC_PERIODIC && ms_between(&pl->last_sync, &now) >= (long)pl->cfg.sync_interval_ms){
		store_sync_async(pl->store);
		pl->last_sync = now;
	}
	/* Commits and hand-backs read the data file through LMDB's map, records
	 * are written through the journal's, and a burst grows the store's
	 * buffers: what they leave would count as the broker's memory at rest.
	 * Once a second, and soon after a burst, once the store is idle. */
	long since = ms_between(&pl->memory_released_at, &now);
	if(since >= 1000 || (since >= IDLE_RELEASE_MS && !store_has_pending(pl->store))){
		pl->memory_released_at = now;
		store_release_memory(pl->store);
		journal_release_memory(pl->journal);
	}
	ed->next_s = 0;
	ed->next_ms = 0;
	return MOSQ_ERR_SUCCESS;
}

/* A second tick whose only job is to bound the loop's sleep. */
static int on_wake(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_tick *ed = event_data;

	(void)event;
	(void)userdata;
	ed->next_s = 0;
	ed->next_ms = IDLE_COMMIT_MS;
	return MOSQ_ERR_SUCCESS;
}

/* The first broker function this plugin needs that the broker lacks. */
static const char *missing_broker_function(void)
{
#define CHECK_PRESENT(f) if(!f){ return #f; }
	BROKER_FUNCTIONS(CHECK_PRESENT)
#undef CHECK_PRESENT
	return NULL;
}

static void plugin_free(struct plugin *pl)
{
	if(!pl){
		return;
	}
	if(pl->store){
		/* At shutdown the broker publishes every will, pending delays
		 * included, and reports none of them. */
		if(pl->registered && store_will_delete_all(pl->store) != STORE_OK){
			mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot record that the wills were published at shutdown");
		}
		if(pl->registered){
			/* The broker may stop with no tick after the last events. */
			features_flush(pl);
		}
		if(store_commit(pl->store) != STORE_OK){
			mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: the last changes could not be committed at shutdown");
			journal_close(pl->journal);
		}else if(journal_last_lsn(pl->journal) > store_journal_durable(pl->store)){
			journal_close(pl->journal);
		}else if(journal_close_stopped(pl->journal) != JOURNAL_OK){
			mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: cannot empty the journal at shutdown "
					"(harmless: the next start finds every record of it in the database)");
		}
		store_close(pl->store);
	}
	config_free(&pl->cfg);
	free(pl->quarantined);
	buf_free(&pl->props);
	replay_free(pl);
	features_free(pl);
	free(pl);
}

/* plugin_opt_on_damage quarantine: the damaged database goes aside, loudly,
 * and the broker starts on a new one. */
static int quarantine(struct plugin *pl, const char *damage)
{
	char dest[4096], err[512];

	if(store_set_aside(pl->cfg.db_path, dest, sizeof(dest), err, sizeof(err)) != STORE_OK){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: %s; cannot quarantine it: %s; refusing to start",
				damage, err);
		return MOSQ_ERR_INVAL;
	}
	pl->quarantined = strdup(dest);
	if(!pl->quarantined){
		return MOSQ_ERR_NOMEM;
	}
	mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: DATABASE QUARANTINED: %s. It was moved to %s and the "
			"broker starts with an EMPTY database (plugin_opt_on_damage quarantine): stored sessions, "
			"queued and retained messages are not served. Recover what still authenticates with "
			"`persist-lmdb --db %s --key-file %s salvage NEW_DIR` (docs/operations.md)",
			damage, dest, dest, pl->cfg.key_file);
	return MOSQ_ERR_SUCCESS;
}

/* Opens the store and its journal; with damage, *damage says what it is. */
static int open_files(struct plugin *pl, const uint8_t key[SEAL_KEY_LEN], char *damage, size_t damagelen)
{
	char err[512];
	int rc;

	*damage = '\0';
	rc = store_open(&pl->store, pl->cfg.db_path, pl->cfg.map_size, key,
			pl->cfg.sync == SYNC_PERIODIC ? STORE_NO_SYNC : 0,
			store_log, err, sizeof(err));
	if(rc == STORE_ERR_KEY){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: the key in %s does not match this database (%s); "
				"refusing to start. Use the key file the database was written with.",
				pl->cfg.key_file, pl->cfg.db_path);
		return MOSQ_ERR_INVAL;
	}
	if(rc == STORE_ERR_CORRUPT){
		snprintf(damage, damagelen, "%s", err);
		return MOSQ_ERR_INVAL;
	}
	if(rc){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: %s; refusing to start", err);
		return MOSQ_ERR_INVAL;
	}
	rc = journal_open(&pl->journal, pl->cfg.db_path, pl->cfg.journal_size, store_seal(pl->store),
			pl->cfg.sync == SYNC_PUBLISH, err, sizeof(err));
	if(rc == JOURNAL_ERR_FORMAT){
		snprintf(damage, damagelen, "%s", err);
	}else if(rc){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: %s; refusing to start", err);
	}
	if(rc){
		store_close(pl->store);
		pl->store = NULL;
		return MOSQ_ERR_INVAL;
	}
	return MOSQ_ERR_SUCCESS;
}

static int open_store(struct plugin *pl)
{
	uint8_t key[SEAL_KEY_LEN];
	struct store_stats stats;
	char err[512], damage[512];
	int rc;

	if(seal_key_load(pl->cfg.key_file, key, err, sizeof(err))){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: %s", err);
		return MOSQ_ERR_INVAL;
	}
	rc = open_files(pl, key, damage, sizeof(damage));
	if(rc && *damage && pl->cfg.on_damage == ON_DAMAGE_QUARANTINE){
		rc = quarantine(pl, damage);
		*damage = '\0';
		if(rc == MOSQ_ERR_SUCCESS){
			rc = open_files(pl, key, damage, sizeof(damage));
		}
	}
	seal_wipe(key, sizeof(key));
	if(rc && *damage){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: %s; refusing to start (plugin_opt_on_damage refuse). "
				"Recover what still authenticates with `persist-lmdb --db %s --key-file %s salvage NEW_DIR`, "
				"or start empty with plugin_opt_on_damage quarantine (docs/operations.md)",
				damage, pl->cfg.db_path, pl->cfg.key_file);
	}
	if(rc){
		return rc;
	}
	if(features_open(pl) != BROKER_OK){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot load the message id index "
				"(plugin_opt_dedup_max_ids %zu); refusing to start", pl->cfg.dedup_max_ids);
		return MOSQ_ERR_INVAL;
	}
	clock_gettime(CLOCK_MONOTONIC, &pl->last_sync);
	store_get_stats(pl->store, &stats);
	mosquitto_log_printf(MOSQ_LOG_INFO, "persist-lmdb: opened %s (%llu records, epoch %u, sync %s, "
			"journal %zu KiB)", pl->cfg.db_path, (unsigned long long)stats.records, store_epoch(pl->store),
			sync_mode_name(pl->cfg.sync), journal_size(pl->journal) >> 10);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data,
		struct mosquitto_opt *opts, int opt_count)
{
	struct option_kv *kv = NULL;
	const char *missing;
	struct plugin *pl;
	char err[512];
	int rc;

	missing = missing_broker_function();
	if(missing){
		/* Logged through stdio too: the broker may lack its log function. */
		fprintf(stderr, "persist-lmdb: needs " MOSQ_NEEDED " (this broker has no %s: "
				"Mosquitto 2.0 has no persistence interface); refusing to start\n", missing);
		if(mosquitto_log_printf){
			mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: needs " MOSQ_NEEDED
					" (this broker has no %s); refusing to start", missing);
		}
		return MOSQ_ERR_NOT_SUPPORTED;
	}
	pl = calloc(1, sizeof(*pl));
	if(opt_count > 0){
		kv = calloc((size_t)opt_count, sizeof(*kv));
	}
	if(!pl || (opt_count > 0 && !kv)){
		free(pl);
		free(kv);
		return MOSQ_ERR_NOMEM;
	}
	for(int i = 0; i < opt_count; i++){
		kv[i].key = opts[i].key;
		kv[i].value = opts[i].value;
	}
	rc = config_parse(&pl->cfg, kv, opt_count, mosquitto_persistence_location(), err, sizeof(err));
	free(kv);
	if(rc){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: %s; refusing to start", err);
		free(pl);
		return MOSQ_ERR_INVAL;
	}
	pl->id = identifier;
	rc = features_new(pl) ? MOSQ_ERR_NOMEM : open_store(pl);
	for(size_t i = 0; rc == MOSQ_ERR_SUCCESS && i < sizeof(persist_events) / sizeof(persist_events[0]); i++){
		rc = mosquitto_callback_register(identifier, persist_events[i].event, persist_events[i].cb, NULL, pl);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, pl);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_wake, NULL, pl);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC, pl);
	}
	/* Only when a feature acts on a connection: an authentication callback
	 * changes which plugins the broker asks, and in what order. */
	if(rc == MOSQ_ERR_SUCCESS && (backlog_on(pl) || pl->cfg.max_db_size || pl->cfg.offline_ttl)){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, pl);
	}
	if(rc == MOSQ_ERR_SUCCESS && pl->cfg.max_db_size){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_SUBSCRIBE, on_subscribe, NULL, pl);
	}
	if(rc){
		if(rc != MOSQ_ERR_INVAL || pl->store){
			mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot register with the broker (%s); refusing to start",
					mosquitto_strerror(rc));
		}
		plugin_free(pl);
		return rc;
	}
	mosquitto_plugin_set_info(identifier, PLUGIN_NAME, PROJECT_VERSION);
	control_announce(pl);
	pl->registered = true;
	g_plugin = pl;
	*user_data = pl;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)opts;
	(void)opt_count;
	(void)user_data;
	/* The broker unregisters our event callbacks itself when it unloads us;
	 * the control topic is registered apart. */
	if(g_plugin && g_plugin->registered){
		mosquitto_callback_unregister(g_plugin->id, MOSQ_EVT_CONTROL, on_control, CONTROL_TOPIC);
	}
	plugin_free(g_plugin);
	g_plugin = NULL;
	return MOSQ_ERR_SUCCESS;
}
