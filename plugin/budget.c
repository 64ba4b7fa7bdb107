/* plugin_opt_max_db_size: a budget for the pages the store has in use.
 *
 * While the budget is reached, what would grow the store is refused at the
 * door; nothing stored is dropped, and as queues drain the pages in use fall
 * and everything is accepted again:
 * - a QoS 1/2 publish whose topic matches a subscription of an offline
 *   session (MQTT 5: PUBACK/PUBREC 0x97 Quota exceeded; MQTT 3.1.1 has no
 *   negative PUBACK, so the publisher is disconnected and resends later);
 * - a retained message that sets a topic (any QoS; a QoS 0 one is dropped),
 *   while one that clears a topic goes through;
 * - a connection that would start a stored session: a client id without
 *   one, not asking for a clean session, or any new MQTT 5 client id (its
 *   session expiry is not known at authentication) but an operator's
 *   (plugin_opt_control_users). CONNACK 0x89 Server busy (MQTT 3.1.1: not
 *   authorised); a will comes with its session;
 * - a subscription of a client whose session is stored: the client is
 *   disconnected (logged "quota exceeded"). Not by the ACL check, whose
 *   SUBACK failure would be kinder: in Mosquitto 2.1.2 an ACL callback that
 *   ignores a check after another plugin deferred it turns that plugin's
 *   default deny into an allow.
 * Messages for connected clients, QoS 0 and clean MQTT 3.1.1 clients keep
 * flowing. */
#include "feature.h"
#include "array.h"
#include "control_req.h"

#include <stdlib.h>
#include <string.h>

#define FILTERS_MAX_AGE_S 1
#define LOG_EVERY_S 10

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
	if(ARRAY_GROW(b->filters, b->n, b->cap, 64)){
		return -1;
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
	struct budget *b = pl->budget;

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
	struct budget *b = pl->budget;

	if(b->all){
		return true;
	}
	for(size_t i = 0; i < b->n; i++){
		if(broker_topic_matches(b->filters[i], topic)){
			return true;
		}
	}
	return false;
}

/* Whether the budget is reached now; logs the way back under it. */
static bool budget_over(struct plugin *pl)
{
	struct budget *b = pl->budget;
	uint64_t used;

	if(!pl->cfg.max_db_size){
		return false;
	}
	used = store_used_bytes(pl->store);
	/* What was let in since the store last measured itself counts too: a
	 * few large messages would otherwise overrun the budget many times
	 * before the next measurement. */
	if(used != b->measured){
		b->measured = used;
		b->admitted = 0;
	}
	if(used + b->admitted < pl->cfg.max_db_size){
		if(b->over){
			b->over = false;
			filters_clear(b);
			b->read_at = 0;
			broker_log(BROKER_LOG_NOTICE, "persist-lmdb: the store is back under "
					"plugin_opt_max_db_size (%llu of %zu bytes in use): accepting what it refused again",
					(unsigned long long)used, pl->cfg.max_db_size);
		}
		return false;
	}
	b->over = true;
	return true;
}

/* Counts a refusal and logs (at most every LOG_EVERY_S seconds) what the
 * budget refuses. */
static void refused(struct plugin *pl, uint64_t *counter)
{
	struct budget *b = pl->budget;
	struct timespec ts;

	(*counter)++;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if(!b->log_at || ts.tv_sec - b->log_at >= LOG_EVERY_S){
		b->log_at = ts.tv_sec;
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: the store has %llu bytes in use and %llu let "
				"in since, at plugin_opt_max_db_size (%zu): refusing QoS 1/2 publishes for offline sessions, "
				"retained messages, new stored sessions and their subscriptions until it drains (%llu, %llu, "
				"%llu and %llu refused so far)", (unsigned long long)b->measured, (unsigned long long)b->admitted,
				pl->cfg.max_db_size, (unsigned long long)b->refused, (unsigned long long)b->refused_retained,
				(unsigned long long)b->refused_sessions, (unsigned long long)b->refused_subscriptions);
	}
}

bool budget_refuses(struct plugin *pl, const struct message *p)
{
	struct budget *b = pl->budget;
	struct timespec ts;

	if(!budget_over(pl)){
		if(p->m.qos || p->m.retain){
			b->admitted += p->m.payload.len;
		}
		return false;
	}
	if(p->m.retain && p->m.payload.len){
		refused(pl, &b->refused_retained);
		return true;
	}
	if(p->m.qos == 0){
		return false;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	filters_refresh(pl, ts.tv_sec);
	if(!matches_offline(pl, p->m.topic)){
		return false;
	}
	refused(pl, &b->refused);
	return true;
}

static int note_found(void *ctx, const struct rec_session *s)
{
	(void)s;
	*(bool *)ctx = true;
	return 0;
}

static bool session_stored(struct plugin *pl, const char *clientid)
{
	bool found = false;

	/* Unreadable counts as stored: the client keeps what it has. */
	return !clientid || store_session_get(pl->store, clientid, note_found, &found) != STORE_OK || found;
}

bool budget_refuses_client(struct plugin *pl, const struct client_auth *c)
{
	/* An operator (plugin_opt_control_users) gets in to see and fix it. */
	if(!budget_over(pl) || c->transient || ctl_user_allowed(pl->cfg.control_users, c->username)
			|| session_stored(pl, c->clientid)){
		return false;
	}
	refused(pl, &pl->budget->refused_sessions);
	return true;
}

bool budget_refuses_subscription(struct plugin *pl, const char *clientid)
{
	if(!budget_over(pl) || !session_stored(pl, clientid)){
		return false;
	}
	refused(pl, &pl->budget->refused_subscriptions);
	return true;
}

struct budget *budget_new(void)
{
	return calloc(1, sizeof(struct budget));
}

void budget_free(struct budget *b)
{
	if(!b){
		return;
	}
	filters_clear(b);
	free(b->filters);
	free(b);
}

void budget_stats(const struct budget *b, struct feature_stats *out)
{
	out->refused_over_budget = b->refused;
	out->refused_retained = b->refused_retained;
	out->refused_subscriptions = b->refused_subscriptions;
	out->refused_sessions = b->refused_sessions;
}
