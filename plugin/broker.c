/* The broker as the features reach it: the broker's answers to store
 * results and refusals, and the calls that change what the broker holds.
 * Each of those calls can raise the plugin's own persistence events before
 * it returns; broker_taking() tells the event handlers which deletions are
 * the plugin's own taking back, not to be recorded. */
#include "adapter.h"

#include <string.h>

static bool taking;

int store_result(int rc, const char *what)
{
	if(rc == STORE_OK){
		return MOSQ_ERR_SUCCESS;
	}
	mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: cannot record %s: %s", what, store_strerror(rc));
	return rc == STORE_ERR_NOMEM ? MOSQ_ERR_NOMEM : MOSQ_ERR_UNKNOWN;
}

int publish_refusal(const struct mosquitto_evt_message *ed)
{
	return mosquitto_client_protocol_version(ed->client) == 5 ? MOSQ_ERR_QUOTA_EXCEEDED
		: MOSQ_ERR_ADMINISTRATIVE_ACTION;
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

	return mosquitto_persist_client_msg_delete(&cm);
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
	return mosquitto_persist_client_msg_clear(&cm);
}

int broker_entry_set_state(const char *clientid, uint16_t mid, uint8_t qos, uint8_t state)
{
	struct mosquitto_client_msg cm = outgoing(clientid, mid, qos);

	cm.state = state;
	return mosquitto_persist_client_msg_update(&cm);
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
