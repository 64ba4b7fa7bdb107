/* Persistence events: each translates one broker struct into one store call.
 * The store buffers the write; the tick (plugin.c) commits. */
#include "adapter.h"

#include <stdlib.h>
#include <string.h>

int on_base_msg_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_base_msg *ed = event_data;
	struct plugin *pl = userdata;
	const struct mosquitto_base_msg *d = &ed->data;
	struct rec_base_msg m = {
		.expiry_time = d->expiry_time,
		.topic = d->topic,
		.source_id = d->source_id,
		.source_username = d->source_username,
		.payload = {d->payload, d->payloadlen},
		.source_mid = d->source_mid,
		.source_port = d->source_port,
		.qos = d->qos,
		.retain = d->retain,
	};

	(void)event;
	/* plugin_opt_offline_ttl: kept with the body, so a restarted broker
	 * enforces it as it does a message expiry. Retained messages are kept
	 * until replaced. */
	if(!m.expiry_time && pl->cfg.offline_ttl && !d->retain){
		m.expiry_time = (int64_t)time(NULL) + pl->cfg.offline_ttl;
	}
	if(props_view(pl, d->properties, &m.properties)){
		return store_result(STORE_ERR_NOMEM, "a message's properties");
	}
	journal_q2_stash(pl, d);
	journal_originated(pl, d);
	replay_body_added(pl, d);
	retention_body(pl, d->store_id, d->payloadlen, m.expiry_time);
	body_held(pl, d->store_id);
	return store_result(store_msg_put(pl->store, d->store_id, &m), "a message");
}

int on_base_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_base_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	retention_body_gone(pl, ed->data.store_id);
	body_gone(pl, ed->data.store_id);
	return store_result(store_msg_release(pl->store, ed->data.store_id), "a message release");
}

int on_retain_msg_set(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_retain_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	journal_q2_routed(pl, ed->store_id);
	return store_result(store_retain_set(pl->store, ed->topic, ed->store_id), "a retained message");
}

int on_retain_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_retain_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(store_retain_delete(pl->store, ed->topic), "a retained message deletion");
}

static int client_put(struct plugin *pl, const struct mosquitto_client *c)
{
	struct rec_session s = {
		.clientid = c->clientid,
		.username = c->username,
		.auth_method = c->auth_method,
		.will_delay_time = c->will_delay_time,
		.session_expiry_time = c->session_expiry_time,
		.will_delay_interval = c->will_delay_interval,
		.session_expiry_interval = c->session_expiry_interval,
		.max_packet_size = c->max_packet_size,
		.listener_port = c->listener_port,
		.max_qos = c->max_qos,
		.retain_available = c->retain_available,
	};
	journal_session(pl, &s);
	return store_result(store_session_put(pl->store, &s), "a session");
}

int on_client_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;

	(void)event;
	backlog_session_added(userdata, ed->data.clientid);
	return client_put(userdata, &ed->data);
}

/* The broker raises this, among other times, when a will's delay starts. */
int on_client_update(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	if(ed->data.will_delay_time > time(NULL)){
		will_delay_track(pl, ed->data.clientid, ed->data.will_delay_time);
	}
	return client_put(pl, &ed->data);
}

int on_client_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	features_session_gone(pl, ed->data.clientid);
	journal_session_gone(pl, ed->data.clientid);
	return store_result(store_session_delete(pl->store, ed->data.clientid), "a session deletion");
}

int on_subscription_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_subscription *ed = event_data;
	struct plugin *pl = userdata;
	struct rec_sub s = {
		.clientid = ed->data.clientid,
		.topic_filter = ed->data.topic_filter,
		.identifier = ed->data.identifier,
		.options = ed->data.options,
	};

	(void)event;
	journal_sub(pl, &s, false);
	return store_result(store_sub_put(pl->store, &s), "a subscription");
}

int on_subscription_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_subscription *ed = event_data;
	struct plugin *pl = userdata;
	struct rec_sub s = {.clientid = ed->data.clientid, .topic_filter = ed->data.topic_filter};

	(void)event;
	journal_sub(pl, &s, true);
	return store_result(store_sub_delete(pl->store, ed->data.clientid, ed->data.topic_filter),
			"a subscription deletion");
}

static int client_msg_put(struct plugin *pl, const struct mosquitto_client_msg *d, uint64_t seq_no, bool added)
{
	struct rec_queue q = {
		.seq_no = seq_no,
		.store_id = d->store_id,
		.subscription_identifier = d->subscription_identifier,
		.mid = d->mid,
		.qos = d->qos,
		.retain = d->retain,
		.dup = d->dup,
		.direction = d->direction,
		.state = d->state,
	};
	int rc = added ? store_queue_append(pl->store, d->clientid, d->cmsg_id, &q)
		: store_queue_update(pl->store, d->clientid, d->cmsg_id, &q);
	return store_result(rc, "a queued message");
}

int on_client_msg_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;

	(void)event;
	struct plugin *pl = userdata;
	const struct mosquitto_client_msg *d = &ed->data;
	uint64_t seq_no = 0;

	if(d->direction == MSG_DIR_OUT && replay_duplicate(pl, d)){
		return MOSQ_ERR_SUCCESS;
	}
	if(d->direction == MSG_DIR_IN){
		journal_q2_incoming(pl, d);
	}else{
		journal_q2_routed(pl, d->store_id);
		journal_q2_entry(pl, d);
	}
	if(pl->cfg.seq_property && d->direction == MSG_DIR_OUT && d->qos > 0){
		seq_no = seq_assign(pl, d->clientid, d->cmsg_id);
	}
	if(d->direction == MSG_DIR_OUT){
		retention_add(pl, d->clientid, d->cmsg_id, d->mid, d->qos, d->store_id);
		backlog_msg_added(pl, d->clientid, d->cmsg_id, d->mid, d->qos, d->state);
	}
	return client_msg_put(pl, d, seq_no, true);
}

int on_client_msg_update(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;
	struct plugin *pl = userdata;
	const struct mosquitto_client_msg *d = &ed->data;

	(void)event;
	if(d->direction == MSG_DIR_OUT && d->qos == 2){
		pubrel_noted(pl, d);
		if(d->state == MSG_STATE_WAIT_FOR_PUBCOMP){
			journal_pubrel_sent(pl, d->clientid, d->cmsg_id);
			backlog_pubrel_sent(pl, d->clientid, d->cmsg_id);
		}else if(d->state == MSG_STATE_PUBLISH_QOS2 && pubrel_resume(pl, d)){
			/* The stored state (PUBREL sent) stays. */
			seq_released(pl, d->clientid, d->cmsg_id);
			return MOSQ_ERR_SUCCESS;
		}
		if(d->state == MSG_STATE_WAIT_FOR_PUBCOMP || d->state == MSG_STATE_RESEND_PUBREL){
			seq_released(pl, d->clientid, d->cmsg_id);
		}
	}
	return client_msg_put(pl, d, pl->cfg.seq_property ? seq_lookup(pl, d->clientid, d->cmsg_id) : 0, false);
}

int on_client_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	if(replay_dropping(pl)){
		return MOSQ_ERR_SUCCESS;
	}
	if(ed->data.direction == MSG_DIR_IN){
		journal_released_in(pl, ed->data.clientid, ed->data.cmsg_id, ed->data.store_id);
		dedup_q2_released(pl, ed->data.store_id);
	}else{
		if(!backlog_msg_deleted(pl, ed->data.clientid, ed->data.cmsg_id, ed->data.mid)){
			return MOSQ_ERR_SUCCESS;
		}
		if(ed->data.qos == 2){
			pubrel_gone(pl, ed->data.clientid, ed->data.mid);
			if(ed->data.state == MSG_STATE_WAIT_FOR_PUBCOMP){
				journal_completed(pl, ed->data.clientid, ed->data.cmsg_id, ed->data.store_id);
			}
		}
		if(pl->cfg.seq_property){
			seq_remove(pl, ed->data.clientid, ed->data.cmsg_id);
		}
		retention_remove(pl, ed->data.clientid, ed->data.cmsg_id);
	}
	return store_result(store_queue_remove(pl->store, ed->data.clientid, ed->data.cmsg_id, ed->data.store_id),
			"a queued message deletion");
}

int on_will_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_will_msg *ed = event_data;
	struct plugin *pl = userdata;
	struct rec_will w = {
		.clientid = ed->data.clientid,
		.topic = ed->data.topic,
		.payload = {ed->data.payload, ed->data.payloadlen},
		.qos = ed->data.qos,
		.retain = ed->data.retain,
	};

	(void)event;
	if(props_view(pl, ed->data.properties, &w.properties)){
		return store_result(STORE_ERR_NOMEM, "a will's properties");
	}
	journal_will(pl, &w);
	return store_result(store_will_put(pl->store, &w), "a will");
}

/* The broker raises this one with the WILL_ADD event number (2.1.2), so it
 * is told apart by its registration, not by event. */
int on_will_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_will_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	will_gone(pl, ed->data.clientid);
	journal_will_gone(pl, ed->data.clientid);
	return store_result(store_will_delete(pl->store, ed->data.clientid), "a will deletion");
}

/* On a connection the broker drops the session's old will without an event
 * (a new session's will is announced right after this one). */
int on_connect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_connect *ed = event_data;
	struct plugin *pl = userdata;
	const char *clientid = mosquitto_client_id(ed->client);

	(void)event;
	if(!clientid){
		return MOSQ_ERR_SUCCESS;
	}
	pending_will_forget(pl, clientid);
	retention_online(pl, clientid, true);
	backlog_connected(pl, clientid);
	backlog_online(pl, clientid, true);
	journal_will_gone(pl, clientid);
	journal_online(pl, clientid, true);
	if(store_result(store_will_delete(pl->store, clientid), "a replaced will")){
		return MOSQ_ERR_UNKNOWN;
	}
	return store_result(store_session_set_online(pl->store, clientid, true), "a connection");
}

static int client_gone(struct plugin *pl, struct mosquitto *client)
{
	const char *clientid = mosquitto_client_id(client);

	if(!clientid){
		return MOSQ_ERR_SUCCESS;
	}
	/* The broker publishes its will next, if it has one due now (without
	 * memory for the name, the will's record is an ordinary routing). */
	will_leaving(pl, clientid);
	dedup_client_gone(pl, clientid, false);
	seq_connection_ended(pl, clientid);
	retention_online(pl, clientid, false);
	backlog_online(pl, clientid, false);
	journal_online(pl, clientid, false);
	return store_result(store_session_set_online(pl->store, clientid, false), "a disconnection");
}

int on_client_offline(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_client_offline *ed = event_data;

	(void)event;
	return client_gone(userdata, ed->client);
}

int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;

	(void)event;
	return client_gone(userdata, ed->client);
}
