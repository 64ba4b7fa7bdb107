/* The broker's events: each translates the broker's structs into
 * plugin-owned values, tells the features (features.c) and makes one store
 * call. The store buffers the write; the tick (plugin.c) commits. */
#include "adapter.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <mosquitto/mqtt_protocol.h>

/* Longer than any topic filter can match (MQTT topics are at most 65,535 bytes). */
#define SINK_TOPIC_LEN 65536u

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
	struct message b = {.store_id = d->store_id};

	if(props_view(&pl->props, d->properties, &m.properties)){
		return store_result(STORE_ERR_NOMEM, "a message's properties");
	}
	b.m = m;
	if(pl->cfg.dedup_window){
		props_user_value(d->properties, pl->cfg.dedup_property, &b.msg_id);
	}
	replay_body_added(pl, d);
	features_body_added(pl, &b);
	return store_result(store_msg_put(pl->store, d->store_id, &m), "a message");
}

int on_base_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_base_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	features_body_gone(pl, ed->data.store_id);
	return store_result(store_msg_release(pl->store, ed->data.store_id), "a message release");
}

int on_retain_msg_set(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_retain_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	features_retained(pl, ed->store_id);
	return store_result(store_retain_set(pl->store, ed->topic, ed->store_id), "a retained message");
}

int on_retain_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_retain_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	return store_result(store_retain_delete(pl->store, ed->topic), "a retained message deletion");
}

static struct rec_session session_of(const struct mosquitto_client *c)
{
	return (struct rec_session){
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
}

int on_client_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;
	struct plugin *pl = userdata;
	struct rec_session s = session_of(&ed->data);

	(void)event;
	features_session_added(pl, &s);
	return store_result(store_session_put(pl->store, &s), "a session");
}

/* The broker raises this, among other times, when a will's delay starts. */
int on_client_update(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;
	struct plugin *pl = userdata;
	struct rec_session s = session_of(&ed->data);

	(void)event;
	features_session_updated(pl, &s);
	return store_result(store_session_put(pl->store, &s), "a session");
}

int on_client_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	features_session_gone(pl, ed->data.clientid);
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
	features_subscription(pl, &s, false);
	return store_result(store_sub_put(pl->store, &s), "a subscription");
}

int on_subscription_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_subscription *ed = event_data;
	struct plugin *pl = userdata;
	struct rec_sub s = {.clientid = ed->data.clientid, .topic_filter = ed->data.topic_filter};

	(void)event;
	features_subscription(pl, &s, true);
	return store_result(store_sub_delete(pl->store, ed->data.clientid, ed->data.topic_filter),
			"a subscription deletion");
}

static struct entry entry_of(const struct mosquitto_client_msg *d)
{
	return (struct entry){
		.clientid = d->clientid,
		.seq = d->cmsg_id,
		.q = {
			.store_id = d->store_id,
			.subscription_identifier = d->subscription_identifier,
			.mid = d->mid,
			.qos = d->qos,
			.retain = d->retain,
			.dup = d->dup,
			.direction = d->direction,
			.state = d->state,
		},
	};
}

int on_client_msg_add(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;
	struct plugin *pl = userdata;
	struct entry e = entry_of(&ed->data);

	(void)event;
	if(e.q.direction == MSG_DIR_OUT && replay_duplicate(pl, &ed->data)){
		return MOSQ_ERR_SUCCESS;
	}
	features_entry_added(pl, &e);
	return store_result(store_queue_append(pl->store, e.clientid, e.seq, &e.q), "a queued message");
}

int on_client_msg_update(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;
	struct plugin *pl = userdata;
	struct entry e = entry_of(&ed->data);

	(void)event;
	if(!features_entry_updated(pl, &e)){
		return MOSQ_ERR_SUCCESS;
	}
	return store_result(store_queue_update(pl->store, e.clientid, e.seq, &e.q), "a queued message");
}

int on_client_msg_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_client_msg *ed = event_data;
	struct plugin *pl = userdata;
	struct entry e = entry_of(&ed->data);

	(void)event;
	if(!features_entry_gone(pl, &e)){
		return MOSQ_ERR_SUCCESS;
	}
	return store_result(store_queue_remove(pl->store, e.clientid, e.seq, e.q.store_id), "a queued message deletion");
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
	if(props_view(&pl->props, ed->data.properties, &w.properties)){
		return store_result(STORE_ERR_NOMEM, "a will's properties");
	}
	features_will(pl, &w);
	return store_result(store_will_put(pl->store, &w), "a will");
}

/* The broker raises this one with the WILL_ADD event number (2.1.2), so it
 * is told apart by its registration, not by event. */
int on_will_delete(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_persist_will_msg *ed = event_data;
	struct plugin *pl = userdata;

	(void)event;
	features_will_gone(pl, ed->data.clientid);
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
	features_client_connected(pl, clientid);
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
	features_client_disconnected(pl, clientid);
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

/* How a QoS 1/2 publish is refused: MQTT 5 has a reason code (quota
 * exceeded); an MQTT 3.1.1 PUBACK has none, so such a publisher is
 * disconnected unacknowledged and resends after reconnecting. */
static int publish_refusal(const struct mosquitto_evt_message *ed)
{
	return mosquitto_client_protocol_version(ed->client) == 5 ? MOSQ_ERR_QUOTA_EXCEEDED
		: MOSQ_ERR_ADMINISTRATIVE_ACTION;
}

/* Gives a duplicate a topic that nothing matches, and no retain flag. */
static int divert(struct mosquitto_evt_message *ed)
{
	char *topic = mosquitto_malloc(SINK_TOPIC_LEN + 1);

	if(!topic){
		return MOSQ_ERR_NOMEM;
	}
	memset(topic, 'x', SINK_TOPIC_LEN);
	memcpy(topic, "$persist-lmdb-duplicate-", 24);
	topic[SINK_TOPIC_LEN] = '\0';
	ed->topic = topic;
	ed->retain = false;
	return MOSQ_ERR_SUCCESS;
}

int on_message_in(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct plugin *pl = userdata;
	struct message p = {
		.m = {
			.topic = ed->topic,
			.payload = {ed->payload, ed->payloadlen},
			.qos = ed->qos,
			.retain = ed->retain,
			.source_id = mosquitto_client_id(ed->client),
			.source_username = mosquitto_client_username(ed->client),
		},
	};

	(void)event;
	if(props_view(&pl->props, ed->properties, &p.m.properties)){
		return MOSQ_ERR_NOMEM;
	}
	if(pl->cfg.dedup_window){
		props_user_value(ed->properties, pl->cfg.dedup_property, &p.msg_id);
	}
	switch(features_publish_in(pl, &p)){
		case VERDICT_REFUSE:
			/* A retained QoS 0 message has no acknowledgement to refuse. */
			return ed->qos == 0 ? MOSQ_ERR_QUOTA_EXCEEDED : publish_refusal(ed);
		case VERDICT_DUPLICATE:
			return divert(ed);
		default:
			return MOSQ_ERR_SUCCESS;
	}
}

/* The number plugin_opt_seq_property gives a message goes out as a user
 * property, to MQTT 5 clients. */
int on_message_out(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct plugin *pl = userdata;
	mosquitto_property *props = NULL;
	char value[24];
	uint64_t n;

	(void)event;
	n = features_publish_out(pl, mosquitto_client_id(ed->client), ed->qos);
	if(!n || mosquitto_client_protocol_version(ed->client) != 5){
		return MOSQ_ERR_SUCCESS;
	}
	snprintf(value, sizeof(value), "%" PRIu64, n);
	if((ed->properties && mosquitto_property_copy_all(&props, ed->properties) != MOSQ_ERR_SUCCESS)
			|| mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY,
				pl->cfg.seq_property, value) != MOSQ_ERR_SUCCESS){
		mosquitto_property_free_all(&props);
		return MOSQ_ERR_SUCCESS;
	}
	ed->properties = props;
	return MOSQ_ERR_SUCCESS;
}

/* Registered only when a feature acts on it (plugin.c): it never decides
 * who gets in, only refuses when a feature must. */
int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct client_auth c = {
		.clientid = mosquitto_client_id(ed->client),
		.username = ed->username,
		.transient = mosquitto_client_clean_session(ed->client) && mosquitto_client_protocol_version(ed->client) != 5,
	};

	(void)event;
	if(!c.clientid){
		return MOSQ_ERR_PLUGIN_IGNORE;
	}
	return features_client_auth(userdata, &c) ? MOSQ_ERR_SERVER_BUSY : MOSQ_ERR_PLUGIN_IGNORE;
}

int on_subscribe(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_subscribe *ed = event_data;

	(void)event;
	return features_subscribe(userdata, mosquitto_client_id(ed->client)) ? MOSQ_ERR_QUOTA_EXCEEDED : MOSQ_ERR_SUCCESS;
}
