/* MOSQ_EVT_PERSIST_RESTORE: rebuilds the broker's state from the store.
 * Order matters to the broker: message bodies first, then what refers to
 * them (retained entries, sessions with their subscriptions, queues in
 * sequence order, wills). */
#include "adapter.h"

#include <string.h>
#include <time.h>

struct restore {
	struct plugin *pl;
	const struct rec_session *session;
	unsigned long session_refused, session_orphaned;
	unsigned long msgs, retained, sessions, subs, queued, wills;
	unsigned long failed;
};

static void *heap_copy(const void *p, size_t len)
{
	uint8_t *out = mosquitto_malloc(len + 1);

	if(out){
		if(len){
			memcpy(out, p, len);
		}
		out[len] = '\0';
	}
	return out;
}

static int restore_msg(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct restore *r = ctx;
	struct mosquitto_base_msg msg;
	int rc;

	memset(&msg, 0, sizeof(msg));
	msg.store_id = store_id;
	msg.expiry_time = m->expiry_time;
	msg.source_id = (char *)m->source_id;
	msg.source_username = (char *)m->source_username;
	msg.payloadlen = (uint32_t)m->payload.len;
	msg.source_mid = m->source_mid;
	msg.source_port = m->source_port;
	msg.qos = m->qos;
	msg.retain = m->retain;
	msg.topic = mosquitto_strdup(m->topic);
	msg.payload = heap_copy(m->payload.data, m->payload.len);
	if(!msg.topic || !msg.payload || (m->properties.data && props_decode(m->properties, &msg.properties))){
		mosquitto_free(msg.topic);
		mosquitto_free(msg.payload);
		r->failed++;
		return 0;
	}
	rc = mosquitto_persist_base_msg_add(&msg);
	/* The broker owns the topic, payload and properties from the call on,
	 * except when it refuses the arguments outright. */
	if(rc == MOSQ_ERR_INVAL){
		mosquitto_free(msg.topic);
		mosquitto_free(msg.payload);
		mosquitto_property_free_all(&msg.properties);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		r->msgs++;
	}else{
		r->failed++;
	}
	return 0;
}

static int restore_retained(void *ctx, const struct rec_retain *rt)
{
	struct restore *r = ctx;

	if(mosquitto_persist_retain_msg_set(rt->topic, rt->store_id) == MOSQ_ERR_SUCCESS){
		r->retained++;
	}else{
		r->failed++;
	}
	return 0;
}

static int restore_sub(void *ctx, const struct rec_sub *s)
{
	struct restore *r = ctx;
	struct mosquitto_subscription sub;

	memset(&sub, 0, sizeof(sub));
	sub.clientid = (char *)s->clientid;
	sub.topic_filter = (char *)s->topic_filter;
	sub.identifier = s->identifier;
	sub.options = s->options;
	if(mosquitto_subscription_add(&sub) == MOSQ_ERR_SUCCESS){
		r->subs++;
	}else{
		r->failed++;
	}
	return 0;
}

static int restore_queued(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct restore *r = ctx;
	struct mosquitto_client_msg cm;
	int rc;

	memset(&cm, 0, sizeof(cm));
	cm.clientid = r->session->clientid;
	cm.cmsg_id = seq;
	cm.store_id = q->store_id;
	cm.subscription_identifier = q->subscription_identifier;
	cm.mid = q->mid;
	cm.qos = q->qos;
	cm.retain = q->retain;
	cm.dup = q->dup;
	cm.direction = q->direction;
	cm.state = q->state;
	rc = mosquitto_persist_client_msg_add(&cm);
	if(rc == MOSQ_ERR_SUCCESS){
		r->queued++;
		return 0;
	}
	/* Kept, it would come back after newer messages at a later restart. */
	queue_remove(r->pl->store, r->session->clientid, seq);
	r->failed++;
	if(rc == MOSQ_ERR_NOT_FOUND){
		r->session_orphaned++;
	}else{
		r->session_refused++;
	}
	return 0;
}

static int publish_will(const struct rec_will *w)
{
	mosquitto_property *props = NULL;
	void *payload = NULL;
	int rc;

	if(w->properties.data && props_decode(w->properties, &props)){
		return MOSQ_ERR_MALFORMED_PACKET;
	}
	if(w->payload.len){
		payload = heap_copy(w->payload.data, w->payload.len);
		if(!payload){
			mosquitto_property_free_all(&props);
			return MOSQ_ERR_NOMEM;
		}
	}
	rc = mosquitto_broker_publish(NULL, w->topic, (int)w->payload.len, payload, w->qos, w->retain, props);
	if(rc){
		mosquitto_free(payload);
		mosquitto_property_free_all(&props);
	}
	return rc;
}

struct will_owner {
	bool found;
	uint32_t will_delay_interval;
};

static int note_owner(void *ctx, const struct rec_session *s)
{
	struct will_owner *o = ctx;

	o->found = true;
	o->will_delay_interval = s->will_delay_interval;
	return 0;
}

/* A client that was connected when the broker stopped lost its connection
 * without a DISCONNECT: its will is due now, unless it has a session and a
 * will delay, in which case the will goes back onto the session and the
 * broker publishes it when the session ends. A will without a session
 * belonged to a clean-session client that was connected. */
static int restore_will(void *ctx, const struct rec_will *w)
{
	struct restore *r = ctx;
	struct store *st = r->pl->store;
	struct will_owner owner = {false, 0};
	mosquitto_property *props = NULL;
	int online, rc;

	if(session_get(st, w->clientid, note_owner, &owner) != STORE_OK){
		r->failed++;
		return 0;
	}
	online = owner.found ? session_was_online(st, w->clientid) : 1;
	if(online < 0){
		r->failed++;
		return 0;
	}
	if(!owner.found || (online && owner.will_delay_interval == 0)){
		rc = publish_will(w);
		will_delete(st, w->clientid);
	}else{
		if(w->properties.data && props_decode(w->properties, &props)){
			r->failed++;
			return 0;
		}
		rc = mosquitto_client_will_set(w->clientid, w->topic, (int)w->payload.len, w->payload.data,
				w->qos, w->retain, props);
		if(rc){
			mosquitto_property_free_all(&props);
		}
	}
	if(rc == MOSQ_ERR_SUCCESS){
		r->wills++;
	}else{
		r->failed++;
	}
	return 0;
}

static int restore_session(void *ctx, const struct rec_session *s)
{
	struct restore *r = ctx;
	struct mosquitto_client c;
	int online;

	online = session_was_online(r->pl->store, s->clientid);
	if(online < 0){
		r->failed++;
		return 0;
	}
	memset(&c, 0, sizeof(c));
	c.clientid = mosquitto_strdup(s->clientid);
	c.username = s->username ? mosquitto_strdup(s->username) : NULL;
	c.auth_method = s->auth_method ? mosquitto_strdup(s->auth_method) : NULL;
	c.will_delay_time = (time_t)s->will_delay_time;
	/* A connected client's session never got an expiry time for its
	 * current connection: it expires counting from now. */
	c.session_expiry_time = online ? 0 : (time_t)s->session_expiry_time;
	c.will_delay_interval = s->will_delay_interval;
	c.session_expiry_interval = s->session_expiry_interval;
	c.max_packet_size = s->max_packet_size;
	c.listener_port = s->listener_port;
	c.max_qos = s->max_qos;
	c.retain_available = s->retain_available;
	if(!c.clientid || (s->username && !c.username) || (s->auth_method && !c.auth_method)){
		mosquitto_free(c.clientid);
		mosquitto_free(c.username);
		mosquitto_free(c.auth_method);
		r->failed++;
		return 0;
	}
	/* The broker takes the strings whether or not it succeeds. */
	if(mosquitto_persist_client_add(&c) != MOSQ_ERR_SUCCESS){
		r->failed++;
		return 0;
	}
	r->sessions++;
	r->session = s;
	store_walk_subs(r->pl->store, s->clientid, restore_sub, r);
	r->session_refused = r->session_orphaned = 0;
	store_walk_queue(r->pl->store, s->clientid, restore_queued, r);
	if(r->session_orphaned){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: dropped %lu queued messages of client %s "
				"at restore: their message bodies are missing (rejected or lost)",
				r->session_orphaned, s->clientid);
	}
	if(r->session_refused){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "persist-lmdb: dropped %lu queued messages of client %s "
				"at restore: the broker refused them (max_queued_messages / max_queued_bytes)",
				r->session_refused, s->clientid);
	}
	r->session = NULL;
	return 0;
}

int persist_restore_cb(int event, void *event_data, void *userdata)
{
	struct restore r;
	struct store_stats stats;
	int rc;

	(void)event;
	(void)event_data;
	memset(&r, 0, sizeof(r));
	r.pl = userdata;

	rc = store_walk_msgs(r.pl->store, restore_msg, &r);
	if(!rc){
		rc = store_walk_retained(r.pl->store, restore_retained, &r);
	}
	if(!rc){
		rc = store_walk_sessions(r.pl->store, restore_session, &r);
	}
	if(!rc){
		rc = store_walk_wills(r.pl->store, NULL, restore_will, &r);
	}
	/* Nobody is connected yet. */
	if(!rc){
		rc = online_clear(r.pl->store);
	}
	store_get_stats(r.pl->store, &stats);
	mosquitto_log_printf(rc ? MOSQ_LOG_ERR : MOSQ_LOG_INFO,
			"persist-lmdb: restored %lu messages, %lu retained, %lu sessions, %lu subscriptions, "
			"%lu queued messages, %lu wills; %lu could not be restored, %llu records rejected%s",
			r.msgs, r.retained, r.sessions, r.subs, r.queued, r.wills, r.failed,
			(unsigned long long)stats.records_rejected, rc ? "; restore stopped early" : "");
	return rc ? MOSQ_ERR_UNKNOWN : MOSQ_ERR_SUCCESS;
}
