/* plugin_opt_* parsing. */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "journal.h"
#include "store.h"

#define MAP_SIZE_MIN (1u << 20)

struct unit {
	char suffix;
	unsigned long long mult;
};

/* A decimal number with at most one suffix of units (none: multiplier 1),
 * at most max once scaled. */
static int parse_scaled(const char *s, const struct unit *units, unsigned long long max,
		unsigned long long *out)
{
	unsigned long long v, mult = 1;
	char *end;

	if(!s || !isdigit((unsigned char)*s)){
		return -1;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if(errno){
		return -1;
	}
	if(*end){
		for(; units && units->suffix && units->suffix != *end; units++){
		}
		if(!units || !units->suffix || end[1] != '\0'){
			return -1;
		}
		mult = units->mult;
	}
	if(v > max / mult){
		return -1;
	}
	*out = v * mult;
	return 0;
}

int parse_size(const char *s, size_t *out)
{
	static const struct unit units[] = {
		{'k', 1ull << 10}, {'K', 1ull << 10}, {'m', 1ull << 20}, {'M', 1ull << 20},
		{'g', 1ull << 30}, {'G', 1ull << 30}, {0, 0},
	};
	unsigned long long v;

	if(parse_scaled(s, units, SIZE_MAX, &v)){
		return -1;
	}
	*out = (size_t)v;
	return 0;
}

int parse_duration(const char *s, unsigned long long *seconds)
{
	static const struct unit units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {0, 0}};

	return parse_scaled(s, units, UINT32_MAX, seconds);
}

static int set_string(char **dst, const char *key, const char *value, char *err, size_t errlen)
{
	if(!value || !*value){
		snprintf(err, errlen, "plugin_opt_%s needs a value", key);
		return -1;
	}
	free(*dst);
	*dst = strdup(value);
	if(!*dst){
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

int config_parse(struct plugin_config *cfg, const struct option_kv *opts, int count,
		const char *persistence_location, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->map_size = STORE_DEFAULT_MAP_SIZE;
	cfg->sync = SYNC_TICK;
	cfg->sync_interval_ms = SYNC_INTERVAL_DEFAULT_MS;
	cfg->commit_interval_ms = COMMIT_INTERVAL_DEFAULT_MS;
	cfg->journal_size = JOURNAL_DEFAULT_SIZE;
	cfg->dedup_window = DEDUP_WINDOW_DEFAULT_S;
	cfg->dedup_max_ids = DEDUP_MAX_IDS_DEFAULT;
	cfg->metrics_interval = METRICS_INTERVAL_DEFAULT_S;
	cfg->queue_storage = QUEUE_STORAGE_DISK;
	cfg->queue_window = QUEUE_WINDOW_DEFAULT;

	for(int i = 0; i < count; i++){
		const char *k = opts[i].key, *v = opts[i].value;

		if(!strcmp(k, "db_path")){
			if(set_string(&cfg->db_path, k, v, err, errlen)){
				goto fail;
			}
		}else if(!strcmp(k, "key_file")){
			if(set_string(&cfg->key_file, k, v, err, errlen)){
				goto fail;
			}
		}else if(!strcmp(k, "personal_topics")){
			if(v && personal_patterns_problem(v)){
				snprintf(err, errlen, "plugin_opt_personal_topics '%s': %s", v, personal_patterns_problem(v));
				goto fail;
			}
			if(set_string(&cfg->personal_topics, k, v, err, errlen)){
				goto fail;
			}
		}else if(!strcmp(k, "control_users")){
			if(!v || strspn(v, " \t") == strlen(v) || (strchr(v, '*') && strspn(v, " \t*") != strlen(v))
					|| (strchr(v, '*') && strchr(v, '*') != strrchr(v, '*'))){
				snprintf(err, errlen, "plugin_opt_control_users '%s' is not a list of usernames separated "
						"by spaces, or * alone (any client with a username the broker's ACL lets publish "
						"to $CONTROL/persist-lmdb/v1)", v ? v : "");
				goto fail;
			}
			if(set_string(&cfg->control_users, k, v, err, errlen)){
				goto fail;
			}
		}else if(!strcmp(k, "map_size")){
			if(parse_size(v, &cfg->map_size) || cfg->map_size < MAP_SIZE_MIN){
				snprintf(err, errlen, "plugin_opt_map_size '%s' is not a size of at least 1M "
						"(bytes, or a number with k, m or g)", v ? v : "");
				goto fail;
			}
		}else if(!strcmp(k, "max_db_size")){
			if(parse_size(v, &cfg->max_db_size) || (cfg->max_db_size && cfg->max_db_size < MAP_SIZE_MIN)){
				snprintf(err, errlen, "plugin_opt_max_db_size '%s' is not 0 (no budget) or a size of at "
						"least 1M (bytes, or a number with k, m or g)", v ? v : "");
				goto fail;
			}
		}else if(!strcmp(k, "max_queued_messages")){
			unsigned long long n;
			if(parse_scaled(v, NULL, 100000000, &n)){
				snprintf(err, errlen, "plugin_opt_max_queued_messages '%s' is not a number from 0 (no limit) "
						"to 100000000", v ? v : "");
				goto fail;
			}
			cfg->max_queued_messages = (size_t)n;
		}else if(!strcmp(k, "max_queued_bytes")){
			if(parse_size(v, &cfg->max_queued_bytes)){
				snprintf(err, errlen, "plugin_opt_max_queued_bytes '%s' is not 0 (no limit) or a size "
						"(bytes, or a number with k, m or g)", v ? v : "");
				goto fail;
			}
		}else if(!strcmp(k, "queue_full")){
			if(v && !strcmp(v, "drop-new")){
				cfg->queue_full = QUEUE_FULL_DROP_NEW;
			}else if(v && !strcmp(v, "drop-oldest")){
				cfg->queue_full = QUEUE_FULL_DROP_OLDEST;
			}else{
				snprintf(err, errlen, "plugin_opt_queue_full '%s' is not drop-new or drop-oldest", v ? v : "");
				goto fail;
			}
		}else if(!strcmp(k, "offline_ttl")){
			unsigned long long secs;
			if(parse_duration(v, &secs) || secs > 3650ull * 86400){
				snprintf(err, errlen, "plugin_opt_offline_ttl '%s' is not a duration up to 3650d "
						"(seconds, or a number with s, m, h or d; 0: messages do not expire by default)",
						v ? v : "");
				goto fail;
			}
			cfg->offline_ttl = (unsigned)secs;
		}else if(!strcmp(k, "queue_window")){
			unsigned long long n;
			if(parse_scaled(v, NULL, 10000000, &n) || n < 64){
				snprintf(err, errlen, "plugin_opt_queue_window '%s' is not a number from 64 to 10000000",
						v ? v : "");
				goto fail;
			}
			cfg->queue_window = (size_t)n;
		}else if(!strcmp(k, "queue_storage")){
			if(v && !strcmp(v, "memory")){
				cfg->queue_storage = QUEUE_STORAGE_MEMORY;
			}else if(v && !strcmp(v, "disk")){
				cfg->queue_storage = QUEUE_STORAGE_DISK;
			}else{
				snprintf(err, errlen, "plugin_opt_queue_storage '%s' is not memory or disk", v ? v : "");
				goto fail;
			}
		}else if(!strcmp(k, "sync")){
			if(v && !strcmp(v, "tick")){
				cfg->sync = SYNC_TICK;
			}else if(v && !strcmp(v, "publish")){
				cfg->sync = SYNC_PUBLISH;
			}else if(v && !strcmp(v, "periodic")){
				cfg->sync = SYNC_PERIODIC;
			}else{
				snprintf(err, errlen, "plugin_opt_sync '%s' is not a sync mode (tick, publish or periodic)",
						v ? v : "");
				goto fail;
			}
		}else if(!strcmp(k, "on_damage")){
			if(v && !strcmp(v, "refuse")){
				cfg->on_damage = ON_DAMAGE_REFUSE;
			}else if(v && !strcmp(v, "quarantine")){
				cfg->on_damage = ON_DAMAGE_QUARANTINE;
			}else{
				snprintf(err, errlen, "plugin_opt_on_damage '%s' is not refuse or quarantine", v ? v : "");
				goto fail;
			}
		}else if(!strcmp(k, "sync_interval_ms")){
			unsigned long long ms;
			if(parse_scaled(v, NULL, 3600000, &ms) || !ms){
				snprintf(err, errlen, "plugin_opt_sync_interval_ms '%s' is not a number of "
						"milliseconds from 1 to 3600000", v ? v : "");
				goto fail;
			}
			cfg->sync_interval_ms = (unsigned)ms;
		}else if(!strcmp(k, "commit_interval_ms")){
			unsigned long long ms;
			if(parse_scaled(v, NULL, COMMIT_INTERVAL_MAX_MS, &ms)){
				snprintf(err, errlen, "plugin_opt_commit_interval_ms '%s' is not a number of "
						"milliseconds from 0 to %u", v ? v : "", COMMIT_INTERVAL_MAX_MS);
				goto fail;
			}
			cfg->commit_interval_ms = (unsigned)ms;
		}else if(!strcmp(k, "seq_property")){
			if(set_string(&cfg->seq_property, k, v, err, errlen)){
				goto fail;
			}
		}else if(!strcmp(k, "dedup_property")){
			if(set_string(&cfg->dedup_property, k, v, err, errlen)){
				goto fail;
			}
		}else if(!strcmp(k, "dedup_window")){
			unsigned long long secs;
			if(parse_duration(v, &secs) || secs > 30ull * 86400){
				snprintf(err, errlen, "plugin_opt_dedup_window '%s' is not a duration up to 30d "
						"(seconds, or a number with s, m, h or d; 0 turns deduplication off)", v ? v : "");
				goto fail;
			}
			cfg->dedup_window = (unsigned)secs;
		}else if(!strcmp(k, "metrics_interval")){
			unsigned long long secs;
			if(parse_duration(v, &secs) || secs > 86400){
				snprintf(err, errlen, "plugin_opt_metrics_interval '%s' is not a duration up to 1d "
						"(0 turns the $SYS metrics off)", v ? v : "");
				goto fail;
			}
			cfg->metrics_interval = (unsigned)secs;
		}else if(!strcmp(k, "dedup_max_ids")){
			unsigned long long n;
			if(parse_scaled(v, NULL, 10000000, &n) || !n){
				snprintf(err, errlen, "plugin_opt_dedup_max_ids '%s' is not a number from 1 to 10000000",
						v ? v : "");
				goto fail;
			}
			cfg->dedup_max_ids = (size_t)n;
		}else if(!strcmp(k, "journal_size")){
			if(parse_size(v, &cfg->journal_size) || cfg->journal_size < JOURNAL_MIN_SIZE
					|| cfg->journal_size > (1ull << 32)){
				snprintf(err, errlen, "plugin_opt_journal_size '%s' is not a size from 256k to 4g",
						v ? v : "");
				goto fail;
			}
		}else{
			snprintf(err, errlen, "unknown option plugin_opt_%s", k);
			goto fail;
		}
	}
	if(!cfg->key_file){
		snprintf(err, errlen, "plugin_opt_key_file is required: a file of 32 random bytes, mode 0600 "
				"(for example: head -c 32 /dev/urandom > key && chmod 600 key)");
		goto fail;
	}
	if(!cfg->dedup_property){
		cfg->dedup_property = strdup(DEDUP_PROPERTY_DEFAULT);
		if(!cfg->dedup_property){
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	if(!cfg->db_path){
		if(!persistence_location || !*persistence_location){
			snprintf(err, errlen, "set plugin_opt_db_path or persistence_location: "
					"persist-lmdb has nowhere to keep its database");
			goto fail;
		}
		size_t n = strlen(persistence_location) + sizeof("/persist-lmdb");
		cfg->db_path = malloc(n);
		if(!cfg->db_path){
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		snprintf(cfg->db_path, n, "%s%spersist-lmdb", persistence_location,
				persistence_location[strlen(persistence_location) - 1] == '/' ? "" : "/");
	}
	return 0;
fail:
	config_free(cfg);
	return -1;
}

void config_free(struct plugin_config *cfg)
{
	free(cfg->db_path);
	free(cfg->key_file);
	free(cfg->personal_topics);
	free(cfg->control_users);
	cfg->control_users = NULL;
	free(cfg->dedup_property);
	free(cfg->seq_property);
	cfg->dedup_property = NULL;
	cfg->seq_property = NULL;
	cfg->db_path = NULL;
	cfg->key_file = NULL;
	cfg->personal_topics = NULL;
}

const char *sync_mode_name(enum sync_mode m)
{
	switch(m){
		case SYNC_TICK: return "tick";
		case SYNC_PUBLISH: return "publish";
		case SYNC_PERIODIC: return "periodic";
	}
	return "?";
}
