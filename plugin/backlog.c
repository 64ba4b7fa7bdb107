/* plugin_opt_queue_storage disk: the messages of offline sessions live in
 * the database only.
 *
 * The broker keeps every queued message in memory. At the tick it is told
 * to let go of the outgoing messages of each stored session whose client is
 * not connected (mosquitto_persist_client_msg_clear, which reports no
 * client message deletion, so the stored entries stay; the bodies stay in
 * the store while entries refer to them). When such a client authenticates
 * (BASIC_AUTH), before the broker hands it its session, the stored queue is
 * handed back in its order (queue_load in restore.c), so the broker sends
 * it before anything routed from then on. At start-up only sessions,
 * subscriptions, retained messages and wills are restored. */
#include "adapter.h"

#include <stdlib.h>
#include <string.h>

/* Warnings about clients that skipped BASIC_AUTH, at most this often. */
#define LOG_INTERVAL_S 10

struct backlog_session {
	char *clientid;
	bool online;
	bool persisted;   /* the broker keeps the session (session expiry > 0) */
	bool on_disk;     /* stored messages the broker does not hold */
	bool due;         /* in the due list: the broker may hold messages of the offline client */
	bool in_held;     /* the broker holds the session's incoming QoS 2 messages (never released) */
	uint64_t held_from;  /* the seq of the first message queued since the last release; 0: none */
};

static void session_free(void *rec)
{
	struct backlog_session *s = rec;

	if(s){
		free(s->clientid);
		free(s);
	}
}

bool backlog_on(const struct plugin *pl)
{
	return pl->cfg.queue_storage == QUEUE_STORAGE_DISK;
}

/* The set of store ids the broker holds: open addressing, linear probing,
 * 0 marks an empty slot (the broker never uses store id 0). */
static size_t id_slot(const struct backlog *b, uint64_t id)
{
	uint64_t h = id * 0x9E3779B97F4A7C15ull;
	size_t mask = b->cap_resident - 1;
	size_t i = (size_t)(h >> 32) & mask;

	while(b->resident[i] && b->resident[i] != id){
		i = (i + 1) & mask;
	}
	return i;
}

static int id_grow(struct backlog *b)
{
	size_t cap = b->cap_resident ? b->cap_resident * 2 : 1024;
	uint64_t *old = b->resident;
	size_t old_cap = b->cap_resident;

	b->resident = calloc(cap, sizeof(*b->resident));
	if(!b->resident){
		b->resident = old;
		return -1;
	}
	b->cap_resident = cap;
	for(size_t i = 0; i < old_cap; i++){
		if(old[i]){
			b->resident[id_slot(b, old[i])] = old[i];
		}
	}
	free(old);
	return 0;
}

void backlog_body_held(struct plugin *pl, uint64_t store_id)
{
	struct backlog *b = &pl->backlog;
	size_t i;

	if(!backlog_on(pl) || !store_id){
		return;
	}
	if((b->n_resident + 1) * 2 > b->cap_resident && id_grow(b)){
		/* Not knowing it is held, a later hand-back adds the body
		 * again, which the broker refuses as a duplicate. */
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: out of memory noting a held message");
		return;
	}
	i = id_slot(b, store_id);
	if(!b->resident[i]){
		b->resident[i] = store_id;
		b->n_resident++;
	}
}

void backlog_body_gone(struct plugin *pl, uint64_t store_id)
{
	struct backlog *b = &pl->backlog;
	size_t i, j, mask;

	if(!backlog_on(pl) || !b->cap_resident){
		return;
	}
	mask = b->cap_resident - 1;
	i = id_slot(b, store_id);
	if(!b->resident[i]){
		return;
	}
	b->resident[i] = 0;
	b->n_resident--;
	/* Moves back the entries of the run after i that would no longer be
	 * found past the hole. */
	for(j = (i + 1) & mask; b->resident[j]; j = (j + 1) & mask){
		uint64_t id = b->resident[j];
		b->resident[j] = 0;
		b->resident[id_slot(b, id)] = id;
	}
}

bool backlog_body_resident(const struct plugin *pl, uint64_t store_id)
{
	const struct backlog *b = &pl->backlog;

	return b->cap_resident && b->resident[id_slot(b, store_id)] == store_id;
}

static void mark_due(struct plugin *pl, struct backlog_session *s)
{
	struct backlog *b = &pl->backlog;
	char *id;

	if(s->due){
		return;
	}
	if(b->n_due == b->cap_due){
		size_t cap = b->cap_due ? b->cap_due * 2 : 64;
		char **p = realloc(b->due, cap * sizeof(*p));
		if(!p){
			mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: out of memory: the queue of offline "
					"client %s stays in the broker's memory", s->clientid);
			return;
		}
		b->due = p;
		b->cap_due = cap;
	}
	id = strdup(s->clientid);
	if(!id){
		return;
	}
	b->due[b->n_due++] = id;
	s->due = true;
}

static struct backlog_session *record_get(struct plugin *pl, const char *clientid)
{
	struct backlog_session *s = client_get_or_add(&pl->backlog.sessions, clientid, sizeof(*s));

	if(!s){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: out of memory: the queue of client %s "
				"stays in the broker's memory", clientid);
	}
	return s;
}

void backlog_msg_added(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct backlog_session *s;

	if(!backlog_on(pl)){
		return;
	}
	s = record_get(pl, clientid);
	if(!s){
		return;
	}
	s->persisted = true;
	if(s->online){
		return;
	}
	if(!s->held_from){
		s->held_from = store_queue_seq(pl->store, cmsg_id);
	}
	mark_due(pl, s);
}

void backlog_online(struct plugin *pl, const char *clientid, bool online)
{
	struct backlog_session *s;

	if(!backlog_on(pl)){
		return;
	}
	if(online){
		s = record_get(pl, clientid);
		if(s){
			s->online = true;
		}
		return;
	}
	s = client_find(&pl->backlog.sessions, clientid);
	if(!s){
		return;
	}
	s->online = false;
	if(s->persisted){
		/* What it had in flight or queued goes at the next tick. */
		mark_due(pl, s);
	}else if(!s->due){
		session_free(client_take(&pl->backlog.sessions, clientid));
	}
}

int backlog_defer(struct plugin *pl, const char *clientid, bool held)
{
	struct backlog_session *s = record_get(pl, clientid);

	if(!s){
		return -1;
	}
	s->persisted = true;
	s->on_disk = true;
	s->in_held = held;
	if(held){
		mark_due(pl, s);
	}
	return 0;
}

void backlog_session_added(struct plugin *pl, const char *clientid)
{
	struct backlog_session *s;

	if(backlog_on(pl) && (s = record_get(pl, clientid))){
		s->persisted = true;
		s->in_held = true;
	}
}

void backlog_session_gone(struct plugin *pl, const char *clientid)
{
	if(backlog_on(pl)){
		session_free(client_take(&pl->backlog.sessions, clientid));
	}
}

/* Has the broker drop what it holds of the client's outgoing messages. */
static int release(struct plugin *pl, struct backlog_session *s)
{
	struct mosquitto_client_msg cm;
	int rc;

	memset(&cm, 0, sizeof(cm));
	cm.clientid = s->clientid;
	cm.direction = mosq_bmd_out;
	rc = mosquitto_persist_client_msg_clear(&cm);
	if(rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NOT_FOUND){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: cannot take the queue of offline client %s "
				"out of the broker's memory: %s", s->clientid, mosquitto_strerror(rc));
		return rc;
	}
	s->on_disk = true;
	s->held_from = 0;
	pl->backlog.evicted++;
	return MOSQ_ERR_SUCCESS;
}

void backlog_tick(struct plugin *pl)
{
	struct backlog *b = &pl->backlog;
	size_t n = b->n_due;

	if(!n){
		return;
	}
	b->n_due = 0;
	for(size_t i = 0; i < n; i++){
		struct backlog_session *s = client_find(&b->sessions, b->due[i]);

		if(s && s->due){
			s->due = false;
			if(!s->online){
				release(pl, s);
			}
		}
		free(b->due[i]);
	}
}

/* Hands the stored queue to the broker: entries before seq before (0:
 * all), kick for a connected client. */
static void load(struct plugin *pl, struct backlog_session *s, uint64_t before, bool kick)
{
	long n;

	/* Reads see committed data: what the events of this iteration wrote
	 * is committed first. */
	if(store_has_pending(pl->store) && store_commit(pl->store) != STORE_OK){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot commit before handing client %s its "
				"stored messages; they are sent at its next connection", s->clientid);
		return;
	}
	n = queue_load(pl, s->clientid, before, !s->in_held, kick);
	if(n < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot read the stored messages of client %s; "
				"they are sent at its next connection", s->clientid);
		return;
	}
	pl->backlog.loaded += (uint64_t)n;
	s->on_disk = false;
	s->in_held = true;
}

/* Before the broker hands the session to the new connection: what the
 * broker still holds of it goes first (it is newer than what is stored
 * only), then the whole stored queue comes back, in order. Returns
 * "ignore": authentication is left to the broker and other plugins. */
int on_basic_auth_backlog(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct plugin *pl = userdata;
	const char *clientid = mosquitto_client_id(ed->client);
	struct backlog_session *s;

	(void)event;
	s = clientid ? client_find(&pl->backlog.sessions, clientid) : NULL;
	if(!s || s->online || !(s->on_disk || s->due)){
		return MOSQ_ERR_PLUGIN_IGNORE;
	}
	if(s->due && release(pl, s) != MOSQ_ERR_SUCCESS){
		return MOSQ_ERR_PLUGIN_IGNORE;
	}
	load(pl, s, 0, false);
	/* If the connection is refused, the next tick takes it back out. */
	mark_due(pl, s);
	return MOSQ_ERR_PLUGIN_IGNORE;
}

void backlog_connected(struct plugin *pl, const char *clientid)
{
	struct backlog_session *s;
	time_t now;

	if(!backlog_on(pl)){
		return;
	}
	s = client_find(&pl->backlog.sessions, clientid);
	if(!s || s->online || !s->on_disk){
		return;
	}
	/* BASIC_AUTH was not called (TLS identity as username, extended
	 * authentication, or an authentication plugin loaded before this one
	 * decided): the broker has sent what it held, which is newer than the
	 * stored messages it did not hold. */
	now = time(NULL);
	if(now - pl->backlog.log_at >= LOG_INTERVAL_S){
		pl->backlog.log_at = now;
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: client %s connected without this plugin's "
				"BASIC_AUTH callback; its stored messages are sent after the ones the broker held "
				"(load persist-lmdb before authentication plugins)", clientid);
	}
	load(pl, s, s->held_from, true);
	s->held_from = 0;
}

void backlog_free(struct plugin *pl)
{
	struct backlog *b = &pl->backlog;

	client_table_free(&b->sessions, session_free);
	for(size_t i = 0; i < b->n_due; i++){
		free(b->due[i]);
	}
	free(b->due);
	free(b->resident);
	memset(b, 0, sizeof(*b));
}
