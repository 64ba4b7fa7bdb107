/* Persistence events: each translates one broker struct into one store call.
 * The store buffers the write; the tick (plugin.c) commits. */
#include "adapter.h"

static int store_result(int rc, const char *what)
{
	if(rc == STORE_OK){
		return MOSQ_ERR_SUCCESS;
	}
	mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot record %s: %s", what, store_strerror(rc));
	return rc == STORE_ERR_NOMEM ? MOSQ_ERR_NOMEM : MOSQ_ERR_UNKNOWN;
}

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
	if(d->properties){
		buf_reset(&pl->props);
		props_encode(&pl->props, d->properties);
		if(pl->props.err){
			return store_result(STORE_ERR_NOMEM, "a message's properties");
		}
		m.properties.data = pl->props.data;
		m.properties.len = pl->props.len;
	}
	return store_result(msg_put(pl->store, d->store_id, &m), "a message");
}

int on_base_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_base_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(msg_delete(pl->store, ed->data.store_id), "a message deletion");
}

int on_retain_msg_set(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_retain_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(retain_set(pl->store, ed->topic, ed->store_id), "a retained message");
}

int on_retain_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_retain_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(retain_delete(pl->store, ed->topic), "a retained message deletion");
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
	return store_result(session_put(pl->store, &s), "a session");
}

int on_client_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;

	(void)event;
	return client_put(userdata, &ed->data);
}

int on_client_update(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;

	(void)event;
	return client_put(userdata, &ed->data);
}

int on_client_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(session_delete(pl->store, ed->data.clientid), "a session deletion");
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
	return store_result(sub_put(pl->store, &s), "a subscription");
}

int on_subscription_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_subscription *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(sub_delete(pl->store, ed->data.clientid, ed->data.topic_filter),
			"a subscription deletion");
}

static int client_msg_put(struct plugin *pl, const struct mosquitto_client_msg *d)
{
	struct rec_queue q = {
		.store_id = d->store_id,
		.subscription_identifier = d->subscription_identifier,
		.mid = d->mid,
		.qos = d->qos,
		.retain = d->retain,
		.dup = d->dup,
		.direction = d->direction,
		.state = d->state,
	};
	return store_result(queue_append(pl->store, d->clientid, d->cmsg_id, &q), "a queued message");
}

int on_client_msg_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;

	(void)event;
	return client_msg_put(userdata, &ed->data);
}

int on_client_msg_update(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;

	(void)event;
	return client_msg_put(userdata, &ed->data);
}

int on_client_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(queue_remove(pl->store, ed->data.clientid, ed->data.cmsg_id),
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
	if(ed->data.properties){
		buf_reset(&pl->props);
		props_encode(&pl->props, ed->data.properties);
		if(pl->props.err){
			return store_result(STORE_ERR_NOMEM, "a will's properties");
		}
		w.properties.data = pl->props.data;
		w.properties.len = pl->props.len;
	}
	return store_result(will_put(pl->store, &w), "a will");
}

/* The broker raises this one with the WILL_ADD event number (2.1.2), so it
 * is told apart by its registration, not by event. */
int on_will_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_will_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(will_delete(pl->store, ed->data.clientid), "a will deletion");
}
