/* The gateway from the features to the broker (broker.h): plugin-owned
 * values become the broker's structs here, and the broker's answers become
 * enum broker_rc. */
#include "broker_int.h"
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The broker answers MOSQ_ERR_ADD_QUEUED_OR_DROPPED (2.1.2: 2) to an entry
 * it queued behind a connected client's in-flight window and to one it
 * dropped at its queue limits; older headers do not name it. */
#define ADD_QUEUED_OR_DROPPED 2

static bool taking;

static int broker_rc(int rc)
{
	switch(rc){
		case MOSQ_ERR_SUCCESS: return BROKER_OK;
		case ADD_QUEUED_OR_DROPPED: return BROKER_QUEUED_OR_DROPPED;
		case MOSQ_ERR_NOT_FOUND: return BROKER_NOT_FOUND;
		case MOSQ_ERR_NOMEM: return BROKER_NOMEM;
		case MOSQ_ERR_INVAL: return BROKER_INVALID;
		default: return BROKER_FAILED;
	}
}

void broker_log(enum broker_log_level level, const char *fmt, ...)
{
	static const int levels[] = {
		[BROKER_LOG_INFO] = MOSQ_LOG_INFO,
		[BROKER_LOG_NOTICE] = MOSQ_LOG_NOTICE,
		[BROKER_LOG_WARNING] = MOSQ_LOG_WARNING,
		[BROKER_LOG_ERR] = MOSQ_LOG_ERR,
	};
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mosquitto_log_printf(levels[level], "%s", msg);
}

const char *broker_strerror(int rc)
{
	switch(rc){
		case BROKER_OK: return "success";
		case BROKER_QUEUED_OR_DROPPED: return "queued or dropped";
		case BROKER_NOT_FOUND: return "not found";
		case BROKER_NOMEM: return "out of memory";
		case BROKER_INVALID: return "invalid arguments";
		default: return "refused by the broker";
	}
}

int store_result(int rc, const char *what)
{
	if(rc == STORE_OK){
		return MOSQ_ERR_SUCCESS;
	}
	mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot record %s: %s", what, store_strerror(rc));
	return rc == STORE_ERR_NOMEM ? MOSQ_ERR_NOMEM : MOSQ_ERR_UNKNOWN;
}

/* The broker finds an outgoing message by client, direction and packet id. */
static struct mosquitto_client_msg outgoing(const char *clientid, uint16_t mid, uint8_t qos)
{
	struct mosquitto_client_msg cm;

	memset(&cm, 0, sizeof(cm));
	cm.clientid = clientid;
	cm.mid = mid;
	cm.qos = qos;
	cm.direction = MSG_DIR_OUT;
	return cm;
}

int broker_entry_drop(const char *clientid, uint16_t mid, uint8_t qos)
{
	struct mosquitto_client_msg cm = outgoing(clientid, mid, qos);

	return broker_rc(mosquitto_persist_client_msg_delete(&cm));
}

int broker_entry_take(const char *clientid, uint16_t mid, uint8_t qos)
{
	int rc;

	taking = true;
	rc = broker_entry_drop(clientid, mid, qos);
	taking = false;
	return rc;
}

bool broker_taking(void)
{
	return taking;
}

int broker_queue_release(const char *clientid)
{
	struct mosquitto_client_msg cm;

	memset(&cm, 0, sizeof(cm));
	cm.clientid = clientid;
	cm.direction = mosq_bmd_out;
	return broker_rc(mosquitto_persist_client_msg_clear(&cm));
}

int broker_entry_set_state(const char *clientid, uint16_t mid, uint8_t qos, uint8_t state)
{
	struct mosquitto_client_msg cm = outgoing(clientid, mid, qos);

	cm.state = state;
	return broker_rc(mosquitto_persist_client_msg_update(&cm));
}

int broker_body_add(uint64_t store_id, const struct rec_base_msg *m)
{
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
	msg.payload = broker_copy(m->payload.data, m->payload.len);
	if(!msg.topic || !msg.payload || (m->properties.data && props_decode(m->properties, &msg.properties))){
		mosquitto_free(msg.topic);
		mosquitto_free(msg.payload);
		return BROKER_NOMEM;
	}
	rc = mosquitto_persist_base_msg_add(&msg);
	/* The broker owns the topic, payload and properties from the call on,
	 * except when it refuses the arguments outright. */
	if(rc == MOSQ_ERR_INVAL){
		mosquitto_free(msg.topic);
		mosquitto_free(msg.payload);
		mosquitto_property_free_all(&msg.properties);
	}
	return broker_rc(rc);
}

int broker_entry_add(const char *clientid, uint64_t seq, uint16_t mid, const struct rec_queue *q)
{
	struct mosquitto_client_msg cm;

	memset(&cm, 0, sizeof(cm));
	cm.clientid = clientid;
	cm.cmsg_id = seq;
	cm.mid = mid;
	cm.store_id = q->store_id;
	cm.subscription_identifier = q->subscription_identifier;
	cm.qos = q->qos;
	cm.retain = q->retain;
	cm.dup = q->dup;
	cm.direction = q->direction;
	cm.state = q->state;
	return broker_rc(mosquitto_persist_client_msg_add(&cm));
}

bool broker_topic_matches(const char *filter, const char *topic)
{
	bool match = false;

	return mosquitto_topic_matches_sub(filter, topic, &match) == MOSQ_ERR_SUCCESS && match;
}

void *broker_copy(const void *p, size_t len)
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
