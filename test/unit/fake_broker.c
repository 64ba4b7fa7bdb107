/* plugin/broker.h as the feature tests play the broker (fake_broker.h). */
#include "fake_broker.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "store.h"

struct fake_broker fake;
static bool taking;

void fake_reset(void)
{
	memset(&fake, 0, sizeof(fake));
}

size_t fake_count(enum fake_kind kind)
{
	size_t n = 0;

	for(size_t i = 0; i < fake.n_calls; i++){
		n += fake.calls[i].kind == kind;
	}
	return n;
}

const struct fake_call *fake_nth(enum fake_kind kind, size_t i)
{
	for(size_t j = 0; j < fake.n_calls; j++){
		if(fake.calls[j].kind == kind && i-- == 0){
			return &fake.calls[j];
		}
	}
	return NULL;
}

bool fake_logged(const char *s)
{
	for(size_t i = 0; i < fake.n_logs; i++){
		if(strstr(fake.logs[i], s)){
			return true;
		}
	}
	return false;
}

static int record(struct fake_call c, const char *clientid)
{
	if(clientid){
		snprintf(c.clientid, sizeof(c.clientid), "%s", clientid);
	}
	if(fake.n_calls < FAKE_CALLS_MAX){
		fake.calls[fake.n_calls++] = c;
	}
	return fake.hook[c.kind] ? fake.hook[c.kind](&c, fake.hook_ctx) : fake.answer[c.kind];
}

void broker_log(enum broker_log_level level, const char *fmt, ...)
{
	va_list ap;

	(void)level;
	if(fake.n_logs < FAKE_LOGS_MAX){
		va_start(ap, fmt);
		vsnprintf(fake.logs[fake.n_logs++], sizeof(fake.logs[0]), fmt, ap);
		va_end(ap);
	}
}

const char *broker_strerror(int rc)
{
	return rc == BROKER_OK ? "success" : "refused";
}

int store_result(int rc, const char *what)
{
	if(rc == STORE_OK){
		return 0;
	}
	broker_log(BROKER_LOG_ERR, "persist-lmdb: cannot record %s: %s", what, store_strerror(rc));
	return -1;
}

int broker_entry_drop(const char *clientid, uint16_t mid, uint8_t qos)
{
	return record((struct fake_call){.kind = FAKE_ENTRY_DROP, .mid = mid, .qos = qos}, clientid);
}

int broker_entry_take(const char *clientid, uint16_t mid, uint8_t qos)
{
	int rc;

	taking = true;
	rc = record((struct fake_call){.kind = FAKE_ENTRY_TAKE, .mid = mid, .qos = qos}, clientid);
	taking = false;
	return rc;
}

bool broker_taking(void)
{
	return taking;
}

int broker_queue_release(const char *clientid)
{
	return record((struct fake_call){.kind = FAKE_QUEUE_RELEASE}, clientid);
}

int broker_entry_set_state(const char *clientid, uint16_t mid, uint8_t qos, uint8_t state)
{
	return record((struct fake_call){.kind = FAKE_ENTRY_SET_STATE, .mid = mid, .qos = qos, .state = state},
			clientid);
}

int broker_body_add(uint64_t store_id, const struct rec_base_msg *m)
{
	(void)m;
	return record((struct fake_call){.kind = FAKE_BODY_ADD, .store_id = store_id}, NULL);
}

int broker_entry_add(const char *clientid, uint64_t seq, uint16_t mid, const struct rec_queue *q)
{
	return record((struct fake_call){.kind = FAKE_ENTRY_ADD, .seq = seq, .store_id = q->store_id, .mid = mid,
			.qos = q->qos, .state = q->state, .direction = q->direction}, clientid);
}

/* MQTT topic matching (MQTT 5, 4.7): '+' one level, '#' the rest. */
bool broker_topic_matches(const char *filter, const char *topic)
{
	while(*filter){
		if(filter[0] == '#'){
			return true;
		}
		if(filter[0] == '+'){
			while(*topic && *topic != '/'){
				topic++;
			}
			filter++;
		}else{
			while(*filter && *filter != '/' && *filter == *topic){
				filter++;
				topic++;
			}
			if((*filter && *filter != '/') || (*topic && *topic != '/')){
				return false;
			}
		}
		if(!*filter){
			return !*topic;
		}
		/* filter is at '/' */
		if(*topic != '/'){
			/* "a/#" matches "a" too */
			return !*topic && filter[1] == '#' && !filter[2];
		}
		filter++;
		topic++;
	}
	return !*topic;
}
