/* Record codec: every decoder on the input; whatever decodes must survive
 * encode -> decode with equal fields, and its encoding must be a fixed
 * point (encode(decode(encode(x))) == encode(x)). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "record.h"

static bool str_eq(const char *a, const char *b)
{
	if(!a || !b){
		return a == b;
	}
	return strcmp(a, b) == 0;
}

static bool bytes_eq(struct bytes a, struct bytes b)
{
	if(!a.data || !b.data){
		return a.data == b.data && a.len == 0 && b.len == 0;
	}
	return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* A decoded string is a view into the input: it must end inside it. */
static void check_view_str(const char *s, const uint8_t *p, size_t n)
{
	if(s){
		FUZZ_CHECK((const uint8_t *)s >= p && (const uint8_t *)s + strlen(s) < p + n);
	}
}

static void check_view_bytes(struct bytes v, const uint8_t *p, size_t n)
{
	if(v.data){
		FUZZ_CHECK(v.data >= p && v.len <= n && v.data + v.len <= p + n);
	}else{
		FUZZ_CHECK(v.len == 0);
	}
}

static bool base_msg_eq(const struct rec_base_msg *a, const struct rec_base_msg *b)
{
	return a->expiry_time == b->expiry_time && str_eq(a->topic, b->topic)
		&& str_eq(a->source_id, b->source_id) && str_eq(a->source_username, b->source_username)
		&& bytes_eq(a->payload, b->payload) && bytes_eq(a->properties, b->properties)
		&& a->source_mid == b->source_mid && a->source_port == b->source_port
		&& a->qos == b->qos && a->retain == b->retain && a->refs0 == b->refs0;
}

static bool session_eq(const struct rec_session *a, const struct rec_session *b)
{
	return str_eq(a->clientid, b->clientid) && str_eq(a->username, b->username)
		&& str_eq(a->auth_method, b->auth_method) && a->will_delay_time == b->will_delay_time
		&& a->session_expiry_time == b->session_expiry_time
		&& a->will_delay_interval == b->will_delay_interval
		&& a->session_expiry_interval == b->session_expiry_interval
		&& a->max_packet_size == b->max_packet_size && a->listener_port == b->listener_port
		&& a->max_qos == b->max_qos && a->retain_available == b->retain_available;
}

static bool sub_eq(const struct rec_sub *a, const struct rec_sub *b)
{
	return str_eq(a->clientid, b->clientid) && str_eq(a->topic_filter, b->topic_filter)
		&& a->identifier == b->identifier && a->options == b->options;
}

static bool queue_eq(const struct rec_queue *a, const struct rec_queue *b)
{
	return a->store_id == b->store_id && a->subscription_identifier == b->subscription_identifier
		&& a->mid == b->mid && a->qos == b->qos && a->retain == b->retain && a->dup == b->dup
		&& a->direction == b->direction && a->state == b->state;
}

static bool retain_eq(const struct rec_retain *a, const struct rec_retain *b)
{
	return str_eq(a->topic, b->topic) && a->store_id == b->store_id;
}

static bool will_eq(const struct rec_will *a, const struct rec_will *b)
{
	return str_eq(a->clientid, b->clientid) && str_eq(a->topic, b->topic)
		&& bytes_eq(a->payload, b->payload) && bytes_eq(a->properties, b->properties)
		&& a->qos == b->qos && a->retain == b->retain;
}

/* How much longer the canonical encoding of a decodable input can be: a
 * body written before schema 3 has no refs0, which encoding adds. */
#define SLACK_base_msg RECORD_REFS0_LEN
#define SLACK_session 0
#define SLACK_sub 0
#define SLACK_queue 0
#define SLACK_retain 0
#define SLACK_will 0

/* One record kind: decode the input; if it decodes, encode (e1), decode e1,
 * compare, encode again (e2) and require e1 == e2. */
#define ROUND_TRIP(T, kind, data, size, VIEWS) do{ \
		T d1, d2; \
		if(record_decode_##kind(data, size, &d1) == 0){ \
			VIEWS(d1, data, size); \
			buf_reset(&e1); \
			record_encode_##kind(&e1, &d1); \
			FUZZ_CHECK(!e1.err); \
			FUZZ_CHECK(e1.len <= size + SLACK_##kind); /* canonical is never longer */ \
			FUZZ_CHECK(record_decode_##kind(e1.data, e1.len, &d2) == 0); \
			FUZZ_CHECK(kind##_eq(&d1, &d2)); \
			buf_reset(&e2); \
			record_encode_##kind(&e2, &d2); \
			FUZZ_CHECK(!e2.err); \
			FUZZ_CHECK(e1.len == e2.len && memcmp(e1.data, e2.data, e1.len) == 0); \
			decoded++; \
		} \
	}while(0)

#define VIEWS_BASE_MSG(m, p, n) do{ check_view_str(m.topic, p, n); check_view_str(m.source_id, p, n); \
		check_view_str(m.source_username, p, n); check_view_bytes(m.payload, p, n); \
		check_view_bytes(m.properties, p, n); FUZZ_CHECK(m.qos <= 2); }while(0)
#define VIEWS_SESSION(s, p, n) do{ check_view_str(s.clientid, p, n); check_view_str(s.username, p, n); \
		check_view_str(s.auth_method, p, n); }while(0)
#define VIEWS_SUB(s, p, n) do{ check_view_str(s.clientid, p, n); check_view_str(s.topic_filter, p, n); }while(0)
#define VIEWS_QUEUE(q, p, n) do{ FUZZ_CHECK(q.qos <= 2); }while(0)
#define VIEWS_RETAIN(r, p, n) do{ check_view_str(r.topic, p, n); }while(0)
#define VIEWS_WILL(w, p, n) do{ check_view_str(w.clientid, p, n); check_view_str(w.topic, p, n); \
		check_view_bytes(w.payload, p, n); check_view_bytes(w.properties, p, n); \
		FUZZ_CHECK(w.qos <= 2); }while(0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct buf e1, e2; /* kept across runs: reachable, not leaked */
	int decoded = 0;

	ROUND_TRIP(struct rec_base_msg, base_msg, data, size, VIEWS_BASE_MSG);
	ROUND_TRIP(struct rec_session, session, data, size, VIEWS_SESSION);
	ROUND_TRIP(struct rec_sub, sub, data, size, VIEWS_SUB);
	ROUND_TRIP(struct rec_queue, queue, data, size, VIEWS_QUEUE);
	ROUND_TRIP(struct rec_retain, retain, data, size, VIEWS_RETAIN);
	ROUND_TRIP(struct rec_will, will, data, size, VIEWS_WILL);
	(void)decoded;
	return 0;
}
