/* The admin API on $CONTROL/persist-lmdb/v1, in the style of dynamic-security:
 * {"commands":[{"command":"...", ...}]} in, {"responses":[...]} out on
 * $CONTROL/persist-lmdb/v1/response, to the requester alone. Who may publish
 * here is the broker's ACL's decision; who may use the API is also
 * plugin_opt_control_users' (off when not set). */
#include "adapter.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <mosquitto/broker_control.h>
#include <mosquitto/mqtt_protocol.h>

#include "account.h"
#include "control_req.h"

#define RESPONSE_TOPIC CONTROL_TOPIC "/response"
#define LOG_EVERY_S 10
/* Mosquitto's time-based message ids count seconds from this moment. */
#define STORE_ID_EPOCH 1637168273

enum { DIRECTION_OUT = 1 };

struct request {
	struct plugin *pl;
	struct mosquitto_control_cmd *cmd;
	const struct ctl_request *args;  /* validated by ctl_request_parse */
	cJSON *data;    /* the response's "data" object */
};

static int fail(struct mosquitto_control_cmd *cmd, const char *error)
{
	mosquitto_control_command_reply(cmd, error);
	return MOSQ_ERR_INVAL;
}

/* Starts a successful response: command, correlationData and data. */
static int respond(struct request *rq)
{
	cJSON *tree = cJSON_CreateObject();

	if(!tree
			|| !cJSON_AddStringToObject(tree, "command", rq->cmd->command_name)
			|| (rq->cmd->correlation_data
				&& !cJSON_AddStringToObject(tree, "correlationData", rq->cmd->correlation_data))
			|| !(rq->data = cJSON_AddObjectToObject(tree, "data"))){
		cJSON_Delete(tree);
		return -1;
	}
	cJSON_AddItemToArray(rq->cmd->j_responses, tree);
	return 0;
}

static bool add_number(cJSON *o, const char *name, double v)
{
	return cJSON_AddNumberToObject(o, name, v) != NULL;
}

/* Reads of the database see committed data only: commit first. */
static int sync_store(struct request *rq)
{
	if(features_commit(rq->pl) != STORE_OK){
		return fail(rq->cmd, "The database cannot be written; see the broker log");
	}
	return MOSQ_ERR_SUCCESS;
}

static void log_admin(struct request *rq, const char *what, const char *arg)
{
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "persist-lmdb: %s/%s | %s %s",
			mosquitto_client_id(rq->cmd->client) ? mosquitto_client_id(rq->cmd->client) : "",
			mosquitto_client_username(rq->cmd->client) ? mosquitto_client_username(rq->cmd->client) : "",
			what, arg ? arg : "");
}

static int delete_account(struct request *rq)
{
	struct plugin *pl = rq->pl;
	const char *username = rq->args->username, *clientid = rq->args->clientid;
	struct account_plan plan;
	cJSON *ids, *skipped;
	int rc;

	if(sync_store(rq)){
		return MOSQ_ERR_INVAL;
	}
	if(account_plan(pl->store, username, clientid, pl->cfg.personal_topics, &plan) != STORE_OK){
		return fail(rq->cmd, "The database cannot be read; see the broker log");
	}
	log_admin(rq, "deleteAccount", username ? username : clientid);

	/* From the broker's memory: the session (a connected client is cut off,
	 * without its will) and its queue; then the personal retained messages.
	 * The broker reports none of this, so the same goes from what the
	 * features keep and from the database after it. */
	for(size_t i = 0; i < plan.n_clientids; i++){
		mosquitto_persist_client_delete(plan.clientids[i]);
		features_session_gone(pl, plan.clientids[i]);
	}
	for(size_t i = 0; i < plan.n_retained; i++){
		mosquitto_persist_retain_msg_delete(plan.retained_topics[i]);
	}
	rc = account_apply(pl->store, &plan);
	if(rc == STORE_OK){
		rc = features_commit(pl);
	}
	if(rc != STORE_OK){
		account_plan_free(&plan);
		return fail(rq->cmd, "Removed from the broker, but not yet from the database: "
				"the commit is retried; see the broker log");
	}
	if(respond(rq)
			|| !add_number(rq->data, "sessions", (double)plan.n_clientids)
			|| !add_number(rq->data, "queuedMessages", (double)plan.queued)
			|| !add_number(rq->data, "retainedMessages", (double)plan.n_retained)
			|| !cJSON_AddBoolToObject(rq->data, "personalTopicsSkipped", plan.n_skipped > 0)
			|| !(skipped = cJSON_AddArrayToObject(rq->data, "skipped"))
			|| !(ids = cJSON_AddArrayToObject(rq->data, "clientids"))){
		account_plan_free(&plan);
		return MOSQ_ERR_NOMEM;
	}
	for(size_t i = 0; i < plan.n_clientids; i++){
		cJSON_AddItemToArray(ids, cJSON_CreateString(plan.clientids[i]));
	}
	for(size_t i = 0; i < plan.n_skipped; i++){
		cJSON *o = cJSON_CreateObject();
		if(!o || !cJSON_AddStringToObject(o, plan.skipped[i].username ? "username" : "clientid", plan.skipped[i].name)
				|| !cJSON_AddStringToObject(o, "reason", plan.skipped[i].why)){
			cJSON_Delete(o);
			account_plan_free(&plan);
			return MOSQ_ERR_NOMEM;
		}
		cJSON_AddItemToArray(skipped, o);
	}
	account_plan_free(&plan);
	return MOSQ_ERR_SUCCESS;
}

struct list_walk {
	struct store *st;
	const char *username;
	const char *prefix;
	int offset, count;
	int total;
	cJSON *sessions;
	bool failed;
};

static int list_session(void *ctx, const struct rec_session *s)
{
	struct list_walk *lw = ctx;
	cJSON *o;

	if((lw->username && !(s->username && !strcmp(s->username, lw->username)))
			|| (lw->prefix && strncmp(s->clientid, lw->prefix, strlen(lw->prefix)) != 0)){
		return 0;
	}
	lw->total++;
	/* Not offset + count: that overflows int at the largest offset. */
	if(lw->total <= lw->offset || lw->total - lw->offset > lw->count){
		return 0;
	}
	o = cJSON_CreateObject();
	if(!o || !cJSON_AddStringToObject(o, "clientid", s->clientid)
			|| (s->username && !cJSON_AddStringToObject(o, "username", s->username))
			|| !cJSON_AddBoolToObject(o, "online", store_session_was_online(lw->st, s->clientid) == 1)){
		cJSON_Delete(o);
		lw->failed = true;
		return 1;
	}
	cJSON_AddItemToArray(lw->sessions, o);
	return 0;
}

static int list_sessions(struct request *rq)
{
	const struct ctl_request *a = rq->args;
	struct list_walk lw = {rq->pl->store, a->username, a->clientid_prefix, a->offset, a->count, 0, NULL, false};

	if(sync_store(rq)){
		return MOSQ_ERR_INVAL;
	}
	if(respond(rq) || !(lw.sessions = cJSON_AddArrayToObject(rq->data, "sessions"))){
		return MOSQ_ERR_NOMEM;
	}
	if(store_walk_sessions(rq->pl->store, list_session, &lw) != STORE_OK || lw.failed){
		/* Replace the partial answer with an error. */
		cJSON_DeleteItemFromArray(rq->cmd->j_responses, cJSON_GetArraySize(rq->cmd->j_responses) - 1);
		return fail(rq->cmd, "The database cannot be read; see the broker log");
	}
	return add_number(rq->data, "totalCount", lw.total) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
}

struct session_info {
	struct store *st;
	bool found;
	char *username;
	uint32_t session_expiry_interval;
	uint64_t queued, queued_bytes, oldest_store_id;
	uint64_t *purge;     /* purgeQueue: sequence numbers of outgoing entries */
	size_t n_purge, cap_purge;
	bool failed;
};

static int note_session(void *ctx, const struct rec_session *s)
{
	struct session_info *si = ctx;

	si->found = true;
	si->session_expiry_interval = s->session_expiry_interval;
	if(s->username && !(si->username = strdup(s->username))){
		si->failed = true;
	}
	return 0;
}

static int add_body_size(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	(void)store_id;
	((struct session_info *)ctx)->queued_bytes += m->payload.len;
	return 0;
}

static int note_queued(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct session_info *si = ctx;

	if(si->purge){
		if(q->direction != DIRECTION_OUT){
			return 0;
		}
		if(ARRAY_GROW(si->purge, si->n_purge, si->cap_purge, 64)){
			si->failed = true;
			return 1;
		}
		si->purge[si->n_purge++] = seq;
		return 0;
	}
	if(si->queued++ == 0){
		si->oldest_store_id = q->store_id;
	}
	return store_msg_get(si->st, q->store_id, add_body_size, si);
}

static int add_subscription(void *ctx, const struct rec_sub *s)
{
	cJSON *o = cJSON_CreateObject();

	if(!o || !cJSON_AddStringToObject(o, "topic", s->topic_filter)
			|| !add_number(o, "qos", s->options & 0x03)
			|| !cJSON_AddBoolToObject(o, "noLocal", s->options & 0x04)
			|| !cJSON_AddBoolToObject(o, "retainAsPublished", s->options & 0x08)
			|| !add_number(o, "identifier", s->identifier)){
		cJSON_Delete(o);
		return 1;
	}
	cJSON_AddItemToArray((cJSON *)ctx, o);
	return 0;
}

static int get_session(struct request *rq)
{
	struct session_info si = {.st = rq->pl->store};
	const char *clientid = rq->args->clientid;
	cJSON *subs;
	int rc = MOSQ_ERR_SUCCESS;

	if(sync_store(rq)){
		return MOSQ_ERR_INVAL;
	}
	if(store_session_get(si.st, clientid, note_session, &si) != STORE_OK || si.failed){
		free(si.username);
		return fail(rq->cmd, "The database cannot be read; see the broker log");
	}
	if(!si.found){
		return fail(rq->cmd, "Session not found");
	}
	if(store_walk_queue(si.st, clientid, note_queued, &si) != STORE_OK){
		free(si.username);
		return fail(rq->cmd, "The database cannot be read; see the broker log");
	}
	if(respond(rq)
			|| !cJSON_AddStringToObject(rq->data, "clientid", clientid)
			|| (si.username && !cJSON_AddStringToObject(rq->data, "username", si.username))
			|| !cJSON_AddBoolToObject(rq->data, "online", store_session_was_online(si.st, clientid) == 1)
			|| !add_number(rq->data, "sessionExpiryInterval", si.session_expiry_interval)
			|| !add_number(rq->data, "queuedMessages", (double)si.queued)
			|| !add_number(rq->data, "queuedBytes", (double)si.queued_bytes)
			|| (si.queued && !add_number(rq->data, "oldestMessageAge",
				(double)(time(NULL) - (STORE_ID_EPOCH + (time_t)((si.oldest_store_id >> 23) & 0x7FFFFFFF)))))
			|| !(subs = cJSON_AddArrayToObject(rq->data, "subscriptions"))){
		rc = MOSQ_ERR_NOMEM;
	}
	free(si.username);
	if(rc == MOSQ_ERR_SUCCESS && store_walk_subs(si.st, clientid, add_subscription, subs) != STORE_OK){
		rc = MOSQ_ERR_NOMEM;
	}
	return rc;
}

static int purge_queue(struct request *rq)
{
	struct session_info si = {.st = rq->pl->store};
	struct mosquitto_client_msg cm;
	const char *clientid = rq->args->clientid;
	int rc = STORE_OK;

	if(sync_store(rq)){
		return MOSQ_ERR_INVAL;
	}
	if(store_session_get(si.st, clientid, note_session, &si) != STORE_OK){
		return fail(rq->cmd, "The database cannot be read; see the broker log");
	}
	free(si.username);
	if(!si.found){
		return fail(rq->cmd, "Session not found");
	}
	si.cap_purge = 64;
	si.purge = malloc(si.cap_purge * sizeof(*si.purge));
	if(!si.purge || store_walk_queue(si.st, clientid, note_queued, &si) != STORE_OK || si.failed){
		free(si.purge);
		return fail(rq->cmd, "The database cannot be read; see the broker log");
	}
	log_admin(rq, "purgeQueue", clientid);
	memset(&cm, 0, sizeof(cm));
	cm.clientid = clientid;
	cm.direction = mosq_bmd_out;
	mosquitto_persist_client_msg_clear(&cm);
	for(size_t i = 0; rc == STORE_OK && i < si.n_purge; i++){
		rc = store_queue_remove(si.st, clientid, si.purge[i], 0);
	}
	free(si.purge);
	if(rc == STORE_OK){
		features_queue_purged(rq->pl, clientid);
	}
	if(rc == STORE_OK){
		rc = features_commit(rq->pl);
	}
	if(rc != STORE_OK){
		return fail(rq->cmd, "Removed from the broker, but not yet from the database: "
				"the commit is retried; see the broker log");
	}
	if(respond(rq) || !add_number(rq->data, "queuedMessages", (double)si.n_purge)){
		return MOSQ_ERR_NOMEM;
	}
	return MOSQ_ERR_SUCCESS;
}

static int get_stats(struct request *rq)
{
	struct store *st = rq->pl->store;
	struct store_stats s;
	struct feature_stats f;
	uint64_t sessions, sb, queued, qb, msgs, mb, online, ob, file, map;

	if(sync_store(rq)){
		return MOSQ_ERR_INVAL;
	}
	store_get_stats(st, &s);
	features_stats(rq->pl, &f);
	if(store_count(st, DB_SESSIONS, &sessions, &sb) || store_count(st, DB_QUEUE, &queued, &qb)
			|| store_count(st, DB_MSGS, &msgs, &mb) || store_count(st, DB_ONLINE, &online, &ob)
			|| store_file_size(st, &file, &map)){
		return fail(rq->cmd, "The database cannot be read; see the broker log");
	}
	if(respond(rq)
			|| !add_number(rq->data, "sessions", (double)sessions)
			|| !add_number(rq->data, "clientsOnline", (double)online)
			|| !add_number(rq->data, "queuedMessages", (double)queued)
			|| !add_number(rq->data, "queueDiskBytes", (double)qb)
			|| !add_number(rq->data, "messageBodies", (double)msgs)
			|| !add_number(rq->data, "messageBodyDiskBytes", (double)mb)
			|| !add_number(rq->data, "databaseBytes", (double)file)
			|| !add_number(rq->data, "mapBytes", (double)map)
			|| !add_number(rq->data, "mapUse", map ? (double)file / (double)map : 0)
			|| !add_number(rq->data, "commits", (double)s.commits)
			|| !add_number(rq->data, "commitErrors", (double)s.commit_errors)
			|| !add_number(rq->data, "commitLatencyP50us", (double)s.commit_us_p50)
			|| !add_number(rq->data, "commitLatencyP99us", (double)s.commit_us_p99)
			|| !add_number(rq->data, "recordsRejected", (double)s.records_rejected)
			|| !add_number(rq->data, "mapGrows", (double)s.map_grows)
			|| !add_number(rq->data, "journalBytes", (double)journal_size(rq->pl->journal))
			|| !add_number(rq->data, "journalUsedBytes", (double)journal_used(rq->pl->journal))
			|| !add_number(rq->data, "dedupIds", (double)f.dedup_ids)
			|| !add_number(rq->data, "duplicatesDropped", (double)f.duplicates_dropped)
			|| !add_number(rq->data, "dedupIdsEvicted", (double)f.dedup_ids_evicted)
			|| !add_number(rq->data, "refusedDiskFull", (double)f.refused_disk_full)
			|| !add_number(rq->data, "controlRefused", (double)rq->pl->control_refused)
			|| !add_number(rq->data, "refusedOverBudget", (double)f.refused_over_budget)
			|| !add_number(rq->data, "refusedRetainedOverBudget", (double)f.refused_retained)
			|| !add_number(rq->data, "refusedSessionsOverBudget", (double)f.refused_sessions)
			|| !add_number(rq->data, "refusedSubscriptionsOverBudget", (double)f.refused_subscriptions)
			|| !add_number(rq->data, "usedBytes", (double)s.used_bytes)
			|| !add_number(rq->data, "maxDbSize", (double)rq->pl->cfg.max_db_size)
			|| !add_number(rq->data, "droppedQueueFull", (double)f.dropped_queue_full)
			|| !add_number(rq->data, "droppedExpired", (double)f.dropped_expired)
			|| !add_number(rq->data, "backlogReleases", (double)f.backlog_releases)
			|| !add_number(rq->data, "backlogLoaded", (double)f.backlog_loaded)
			|| !add_number(rq->data, "backlogOutOfOrder", (double)f.backlog_out_of_order)
			|| !(rq->pl->quarantined ? cJSON_AddStringToObject(rq->data, "quarantinedDatabase", rq->pl->quarantined)
				: cJSON_AddNullToObject(rq->data, "quarantinedDatabase"))){
		return MOSQ_ERR_NOMEM;
	}
	return MOSQ_ERR_SUCCESS;
}

void control_announce(const struct plugin *pl)
{
	const char *users = pl->cfg.control_users;

	if(!users){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "persist-lmdb: control API " CONTROL_TOPIC " off "
				"(plugin_opt_control_users names who may use it)");
	}else if(strchr(users, '*')){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: control API " CONTROL_TOPIC " open to every "
				"client with a username that the broker's ACL lets publish to it (plugin_opt_control_users *): "
				"an ACL or dynamic-security must govern it");
	}else{
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "persist-lmdb: control API " CONTROL_TOPIC " for the users %s "
				"(as the broker authenticates them)", users);
	}
}

/* Answers only the client that asked (whether or not it subscribed to the
 * response topic): nobody else reads what the API says. */
static void send_to_requester(struct mosquitto *client, cJSON *tree)
{
	const char *clientid = mosquitto_client_id(client);
	char *payload = cJSON_PrintUnformatted(tree);
	size_t len;

	cJSON_Delete(tree);
	if(!payload || !clientid){
		free(payload);
		return;
	}
	len = strlen(payload);
	if(len > MQTT_MAX_PAYLOAD
			|| mosquitto_broker_publish(clientid, RESPONSE_TOPIC, (int)len, payload, 0, false, NULL)
				!= MOSQ_ERR_SUCCESS){
		free(payload);
	}
}

/* Why this client may not use the API, or NULL. Refusals are counted and
 * logged (at most every LOG_EVERY_S seconds). */
static const char *refusal(struct plugin *pl, struct mosquitto *client)
{
	const char *username = mosquitto_client_username(client), *why;
	time_t now = time(NULL);

	if(ctl_user_allowed(pl->cfg.control_users, username)){
		return NULL;
	}
	why = !pl->cfg.control_users ? "The control API is off: plugin_opt_control_users names who may use it"
		: "Not authorised: plugin_opt_control_users does not name this client's username";
	pl->control_refused++;
	if(now - pl->control_refused_log_time >= LOG_EVERY_S){
		pl->control_refused_log_time = now;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "persist-lmdb: control request from %s/%s refused: %s "
				"(%llu refused so far)", mosquitto_client_id(client) ? mosquitto_client_id(client) : "",
				username ? username : "", why, (unsigned long long)pl->control_refused);
	}
	return why;
}

int on_control(int event, void *event_data, void *userdata)
{
	/* Indexed by enum ctl_command; a valid request is never CTL_UNKNOWN. */
	static int (*const handlers[])(struct request *rq) = {
		[CTL_DELETE_ACCOUNT] = delete_account,
		[CTL_LIST_SESSIONS] = list_sessions,
		[CTL_GET_SESSION] = get_session,
		[CTL_PURGE_QUEUE] = purge_queue,
		[CTL_GET_STATS] = get_stats,
	};
	struct mosquitto_evt_control *ed = event_data;
	struct plugin *pl = userdata;
	struct mosquitto_control_cmd cmd = {.client = ed->client, .command_name = CTL_UNKNOWN_NAME};
	const char *why = refusal(pl, ed->client);
	struct ctl_batch b;
	cJSON *tree;

	(void)event;
	tree = cJSON_CreateObject();
	if(!tree || !(cmd.j_responses = cJSON_AddArrayToObject(tree, "responses"))){
		cJSON_Delete(tree);
		return MOSQ_ERR_NOMEM;
	}
	if(why){
		mosquitto_control_command_reply(&cmd, why);
		send_to_requester(ed->client, tree);
		return MOSQ_ERR_SUCCESS;
	}
	if(ctl_payload_parse(ed->payload, ed->payloadlen, &b)){
		cJSON_Delete(tree);
		return MOSQ_ERR_NOMEM;
	}
	for(size_t i = 0; i < b.n; i++){
		struct request rq = {pl, &cmd, &b.reqs[i], NULL};

		cmd.command_name = b.reqs[i].name;
		cmd.correlation_data = (char *)b.reqs[i].correlation_data;
		if(b.reqs[i].error){
			mosquitto_control_command_reply(&cmd, b.reqs[i].error);
		}else{
			handlers[b.reqs[i].command](&rq);
		}
	}
	ctl_batch_free(&b);
	send_to_requester(ed->client, tree);
	return MOSQ_ERR_SUCCESS;
}
