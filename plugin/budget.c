/* plugin_opt_max_db_size: a budget for the pages the store has in use.
 *
 * While the budget is reached, a QoS 1/2 publish whose topic matches a
 * subscription of an offline session is refused at the door (MQTT 5:
 * PUBACK 0x97 Quota exceeded; MQTT 3.1.1 has no negative PUBACK, so the
 * publisher is disconnected and resends later). Nothing stored is dropped;
 * messages for connected clients and QoS 0 keep flowing. As queues drain
 * the pages in use fall and publishes are accepted again. */
#include "adapter.h"

#include <stdlib.h>
#include <string.h>

#define FILTERS_MAX_AGE_S 1
#define LOG_EVERY_S 10

static void filters_clear(struct budget *b)
{
	for(size_t i = 0; i < b->n; i++){
		free(b->filters[i]);
	}
	b->n = 0;
}

static int add_filter(void *ctx, const struct rec_sub *s)
{
	struct budget *b = ctx;
	const char *f = s->topic_filter;

	/* A shared subscription's group gets the message once: match its filter. */
	if(!strncmp(f, "$share/", 7)){
		const char *slash = strchr(f + 7, '/');
		if(!slash){
			return 0;
		}
		f = slash + 1;
	}
	if(b->n == b->cap){
		size_t cap = b->cap ? b->cap * 2 : 64;
		char **grown = realloc(b->filters, cap * sizeof(*grown));
		if(!grown){
			return -1;
		}
		b->filters = grown;
		b->cap = cap;
	}
	b->filters[b->n] = strdup(f);
	if(!b->filters[b->n]){
		return -1;
	}
	b->n++;
	return 0;
}

/* The offline sessions' filters, read again when older than a second: a
 * session that went offline since is caught at the next read. */
static void filters_refresh(struct plugin *pl, time_t now)
{
	struct budget *b = &pl->budget;

	if(b->read_at && now - b->read_at < FILTERS_MAX_AGE_S){
		return;
	}
	filters_clear(b);
	if(store_walk_offline_subs(pl->store, add_filter, b) != STORE_OK){
		/* Refuse every QoS 1/2 publish rather than let one through unchecked. */
		filters_clear(b);
		b->all = true;
	}else{
		b->all = false;
	}
	b->read_at = now;
}

static bool matches_offline(struct plugin *pl, const char *topic)
{
	struct budget *b = &pl->budget;

	if(b->all){
		return true;
	}
	for(size_t i = 0; i < b->n; i++){
		bool match = false;
		if(mosquitto_topic_matches_sub(b->filters[i], topic, &match) == MOSQ_ERR_SUCCESS && match){
			return true;
		}
	}
	return false;
}

int budget_check(struct plugin *pl, const struct mosquitto_evt_message *ed)
{
	struct budget *b = &pl->budget;
	struct timespec ts;
	uint64_t used;

	if(!pl->cfg.max_db_size || ed->qos == 0){
		return MOSQ_ERR_SUCCESS;
	}
	used = store_used_bytes(pl->store);
	if(used < pl->cfg.max_db_size){
		if(b->over){
			b->over = false;
			filters_clear(b);
			b->read_at = 0;
			mosquitto_log_printf(MOSQ_LOG_NOTICE, "persist-lmdb: the store is back under "
					"plugin_opt_max_db_size (%llu of %zu bytes in use): accepting publishes for offline "
					"sessions again", (unsigned long long)used, pl->cfg.max_db_size);
		}
		return MOSQ_ERR_SUCCESS;
	}
	b->over = true;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	filters_refresh(pl, ts.tv_sec);
	if(!matches_offline(pl, ed->topic)){
		return MOSQ_ERR_SUCCESS;
	}
	b->refused++;
	if(!b->log_at || ts.tv_sec - b->log_at >= LOG_EVERY_S){
		b->log_at = ts.tv_sec;
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: the store has %llu bytes in use, at "
				"plugin_opt_max_db_size (%zu): refusing QoS 1/2 publishes for offline sessions until "
				"their queues drain (%llu refused so far)", (unsigned long long)used,
				pl->cfg.max_db_size, (unsigned long long)b->refused);
	}
	return publish_refusal(ed);
}

void budget_free(struct plugin *pl)
{
	filters_clear(&pl->budget);
	free(pl->budget.filters);
	pl->budget.filters = NULL;
	pl->budget.cap = 0;
}
