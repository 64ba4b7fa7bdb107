/* Record codec: round trips of every record kind, and rejection of truncated,
 * over-long and malformed plaintexts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

#define MIB (1024u * 1024u)

/* ---- helpers ---- */

static void assert_str_eq_or_null(const char *got, const char *want)
{
	if(!want){
		assert_null(got);
	}else{
		assert_non_null(got);
		assert_string_equal(got, want);
	}
}

static void assert_bytes_eq(struct bytes got, const void *want, size_t want_len, bool present)
{
	if(!present){
		assert_null(got.data);
		assert_uint_equal(got.len, 0);
		return;
	}
	assert_non_null(got.data);
	assert_uint_equal(got.len, want_len);
	if(want_len){
		assert_memory_equal(got.data, want, want_len);
	}
}

/* A decoder of any kind into a scratch record. */
typedef int (*decode_fn)(const uint8_t *p, size_t n);

static int dec_msg(const uint8_t *p, size_t n)
{
	struct rec_base_msg m;
	return record_decode_base_msg(p, n, &m);
}

static int dec_session(const uint8_t *p, size_t n)
{
	struct rec_session s;
	return record_decode_session(p, n, &s);
}

static int dec_sub(const uint8_t *p, size_t n)
{
	struct rec_sub s;
	return record_decode_sub(p, n, &s);
}

static int dec_queue(const uint8_t *p, size_t n)
{
	struct rec_queue q;
	return record_decode_queue(p, n, &q);
}

static int dec_retain(const uint8_t *p, size_t n)
{
	struct rec_retain r;
	return record_decode_retain(p, n, &r);
}

static int dec_will(const uint8_t *p, size_t n)
{
	struct rec_will w;
	return record_decode_will(p, n, &w);
}

static int dec_dedup(const uint8_t *p, size_t n)
{
	struct rec_dedup d;
	return record_decode_dedup(p, n, &d);
}

static int dec_journal(const uint8_t *p, size_t n)
{
	struct rec_journal j;
	return record_decode_journal(p, n, &j);
}

/* The full encoding decodes; every proper prefix (copied into an exactly
 * sized heap block, so an over-read is visible to ASan) and every one-byte
 * extension is rejected. */
#define NO_LEGACY SIZE_MAX

/* legacy: a truncation that is an older form of the record, and decodes. */
static void check_truncation_and_trailing(const struct buf *enc, decode_fn dec, size_t legacy)
{
	uint8_t *copy;

	assert_false(enc->err);
	copy = malloc(enc->len + 1);
	assert_non_null(copy);
	memcpy(copy, enc->data, enc->len);
	assert_int_equal(dec(copy, enc->len), 0);
	free(copy);

	for(size_t len = 0; len < enc->len; len++){
		copy = malloc(len ? len : 1);
		assert_non_null(copy);
		memcpy(copy, enc->data, len);
		if(len == legacy){
			assert_int_equal(dec(copy, len), 0);
		}else if(dec(copy, len) != -1){
			free(copy);
			fail_msg("a plaintext truncated to %zu of %zu bytes was accepted", len, enc->len);
		}
		free(copy);
	}

	static const uint8_t extra[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
	for(size_t i = 0; i < sizeof(extra); i++){
		for(size_t add = 1; add <= 3; add++){
			copy = malloc(enc->len + add);
			assert_non_null(copy);
			memcpy(copy, enc->data, enc->len);
			memset(copy + enc->len, extra[i], add);
			if(dec(copy, enc->len + add) != -1){
				free(copy);
				fail_msg("%zu trailing byte(s) 0x%02x after a %zu byte record were accepted",
						add, extra[i], enc->len);
			}
			free(copy);
		}
	}
}

/* ---- buffer and varint primitives ---- */

static void test_varint_vectors(void **state)
{
	static const struct {
		uint64_t v;
		size_t len;
		uint8_t bytes[10];
	} vec[] = {
		{0, 1, {0x00}},
		{1, 1, {0x01}},
		{127, 1, {0x7f}},
		{128, 2, {0x80, 0x01}},
		{300, 2, {0xac, 0x02}},
		{16383, 2, {0xff, 0x7f}},
		{16384, 3, {0x80, 0x80, 0x01}},
		{UINT32_MAX, 5, {0xff, 0xff, 0xff, 0xff, 0x0f}},
		{UINT64_MAX, 10, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	};
	struct buf b = {0};

	(void)state;
	for(size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++){
		buf_reset(&b);
		buf_put_varint(&b, vec[i].v);
		assert_false(b.err);
		assert_uint_equal(b.len, vec[i].len);
		assert_memory_equal(b.data, vec[i].bytes, vec[i].len);

		struct reader r = {b.data, b.len, false};
		assert_uint_equal(rd_varint(&r), vec[i].v);
		assert_false(r.err);
		assert_uint_equal(r.left, 0);

		/* Every truncation of a multi-byte varint is an error. */
		for(size_t len = 0; len < vec[i].len; len++){
			struct reader t = {b.data, len, false};
			(void)rd_varint(&t);
			assert_true(t.err);
		}
	}
	buf_free(&b);
}

static void test_varint_overlong_rejected(void **state)
{
	/* 11 continuation groups cannot be a 64-bit value. */
	uint8_t p[11];
	struct reader r;

	(void)state;
	memset(p, 0x80, sizeof(p));
	p[10] = 0x01;
	r = (struct reader){p, sizeof(p), false};
	assert_uint_equal(rd_varint(&r), 0);
	assert_true(r.err);
	/* Once in error, further reads return zero / NULL. */
	assert_uint_equal(rd_u8(&r), 0);
	assert_null(rd_str(&r));
	assert_null(rd_bytes(&r).data);
	assert_true(r.err);
}

static void test_varint_random_roundtrip(void **state)
{
	struct buf b = {0};
	uint64_t vals[2000];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	struct reader r;

	(void)state;
	for(size_t i = 0; i < 2000; i++){
		/* xorshift64, with a random number of low bits kept */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		vals[i] = x >> (i % 64);
		buf_put_varint(&b, vals[i]);
	}
	assert_false(b.err);
	r = (struct reader){b.data, b.len, false};
	for(size_t i = 0; i < 2000; i++){
		assert_uint_equal(rd_varint(&r), vals[i]);
	}
	assert_false(r.err);
	assert_uint_equal(r.left, 0);
	buf_free(&b);
}

static void test_buf_str_and_bytes_layout(void **state)
{
	struct buf b = {0};
	struct reader r;
	struct bytes by;
	const char *s;

	(void)state;
	buf_put_str(&b, NULL);
	buf_put_str(&b, "");
	buf_put_str(&b, "ab");
	buf_put_bytes(&b, NULL, 0, false);
	buf_put_bytes(&b, "", 0, true);
	buf_put_bytes(&b, "x\0y", 3, true);
	static const uint8_t want[] = {
		0x00,                 /* NULL string */
		0x01, 0x00,           /* "" with its NUL */
		0x03, 'a', 'b', 0x00, /* "ab" */
		0x00,                 /* absent bytes */
		0x01,                 /* present, empty */
		0x04, 'x', 0x00, 'y', /* 3 bytes, NULs allowed */
	};
	assert_false(b.err);
	assert_uint_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));

	r = (struct reader){b.data, b.len, false};
	assert_null(rd_str(&r));
	assert_false(r.err);
	s = rd_str(&r);
	assert_non_null(s);
	assert_string_equal(s, "");
	s = rd_str(&r);
	assert_non_null(s);
	assert_string_equal(s, "ab");
	by = rd_bytes(&r);
	assert_null(by.data);
	by = rd_bytes(&r);
	assert_non_null(by.data);
	assert_uint_equal(by.len, 0);
	by = rd_bytes(&r);
	assert_uint_equal(by.len, 3);
	assert_memory_equal(by.data, "x\0y", 3);
	assert_false(r.err);
	assert_uint_equal(r.left, 0);

	/* buf_reset keeps the memory, empties the content. */
	buf_reset(&b);
	assert_uint_equal(b.len, 0);
	assert_false(b.err);
	uint8_t *p = buf_extend(&b, 1000);
	assert_non_null(p);
	assert_uint_equal(b.len, 1000);
	assert_true(b.cap >= 1000);
	buf_free(&b);
	assert_null(b.data);
	assert_uint_equal(b.len, 0);
	assert_uint_equal(b.cap, 0);
}

static void test_rd_str_requires_nul(void **state)
{
	static const uint8_t no_nul[] = {0x03, 'a', 'b', 'c'};
	static const uint8_t inner_nul[] = {0x03, 'a', 0x00, 0x00};
	static const uint8_t short_len[] = {0x05, 'a', 'b', 0x00};
	struct reader r;

	(void)state;
	r = (struct reader){no_nul, sizeof(no_nul), false};
	assert_null(rd_str(&r));
	assert_true(r.err);
	r = (struct reader){inner_nul, sizeof(inner_nul), false};
	assert_null(rd_str(&r));
	assert_true(r.err);
	r = (struct reader){short_len, sizeof(short_len), false};
	assert_null(rd_str(&r));
	assert_true(r.err);
}

/* ---- base message ---- */

static void roundtrip_msg(const struct rec_base_msg *in)
{
	struct rec_base_msg out;
	struct buf b = {0};

	record_encode_base_msg(&b, in);
	assert_false(b.err);
	memset(&out, 0xa5, sizeof(out));
	assert_int_equal(record_decode_base_msg(b.data, b.len, &out), 0);
	assert_int_equal(out.expiry_time, in->expiry_time);
	assert_str_eq_or_null(out.topic, in->topic);
	assert_str_eq_or_null(out.source_id, in->source_id);
	assert_str_eq_or_null(out.source_username, in->source_username);
	/* The payload is always present (possibly empty). */
	assert_bytes_eq(out.payload, in->payload.data, in->payload.len, true);
	assert_bytes_eq(out.properties, in->properties.data, in->properties.len, in->properties.data != NULL);
	assert_uint_equal(out.source_mid, in->source_mid);
	assert_uint_equal(out.source_port, in->source_port);
	assert_uint_equal(out.qos, in->qos);
	assert_int_equal(out.retain, in->retain);
	/* Views point into the plaintext. */
	assert_true((const uint8_t *)out.topic >= b.data && (const uint8_t *)out.topic < b.data + b.len);
	buf_free(&b);
}

static void test_msg_roundtrip(void **state)
{
	static const uint8_t props[] = {0x01, 0x00, 0x02, 0xff};
	struct rec_base_msg m = {
		.expiry_time = 1700000000,
		.topic = "a/b/c",
		.source_id = "client-1",
		.source_username = "user",
		.payload = {(const uint8_t *)"hello", 5},
		.properties = {props, sizeof(props)},
		.source_mid = 42,
		.source_port = 1883,
		.qos = 1,
		.retain = true,
	};

	(void)state;
	roundtrip_msg(&m);

	/* NULL optional strings, absent properties, empty payload. */
	m.source_id = NULL;
	m.source_username = NULL;
	m.properties = (struct bytes){NULL, 0};
	m.payload = (struct bytes){NULL, 0};
	m.retain = false;
	m.qos = 0;
	roundtrip_msg(&m);

	/* Present but empty properties stay present; empty strings stay "". */
	m.properties = (struct bytes){props, 0};
	m.payload = (struct bytes){(const uint8_t *)"", 0};
	m.topic = "";
	m.source_id = "";
	roundtrip_msg(&m);
}

static void test_msg_extremes(void **state)
{
	static const int64_t expiries[] = {INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX};
	struct rec_base_msg m = {
		.topic = "t",
		.payload = {(const uint8_t *)"p", 1},
		.source_mid = 65535,
		.source_port = 65535,
		.qos = 2,
		.retain = true,
	};

	(void)state;
	for(size_t i = 0; i < sizeof(expiries) / sizeof(expiries[0]); i++){
		m.expiry_time = expiries[i];
		roundtrip_msg(&m);
	}
	m.source_mid = 0;
	m.source_port = 0;
	roundtrip_msg(&m);
}

static void test_msg_large_payload(void **state)
{
	const size_t n = MIB;
	uint8_t *payload = malloc(n);
	uint8_t *props = malloc(70000);
	struct rec_base_msg m = {
		.expiry_time = 5,
		.topic = "big",
		.qos = 2,
	};

	(void)state;
	assert_non_null(payload);
	assert_non_null(props);
	for(size_t i = 0; i < n; i++){
		payload[i] = (uint8_t)(i * 31 + (i >> 8));
	}
	memset(props, 0x5a, 70000);
	m.payload = (struct bytes){payload, n};
	m.properties = (struct bytes){props, 70000};
	roundtrip_msg(&m);

	struct buf b = {0};
	record_encode_base_msg(&b, &m);
	assert_true(b.len > n + 70000);
	assert_true(b.len < n + 70000 + 64);
	/* One byte short of the payload. */
	assert_int_equal(record_decode_base_msg(b.data, b.len - 1, &(struct rec_base_msg){0}), -1);
	buf_free(&b);
	free(payload);
	free(props);
}

static void test_msg_truncated_and_trailing(void **state)
{
	struct rec_base_msg m = {
		.expiry_time = -123456789,
		.topic = "sensors/temp",
		.source_id = "src",
		.source_username = NULL,
		.payload = {(const uint8_t *)"22.5", 4},
		.properties = {(const uint8_t *)"\x01\x02", 2},
		.source_mid = 300,
		.source_port = 8883,
		.qos = 2,
		.retain = true,
	};
	struct buf b = {0};

	(void)state;
	/* Without its last field (refs0) a body is as schema 2 wrote it. */
	record_encode_base_msg(&b, &m);
	check_truncation_and_trailing(&b, dec_msg, b.len - RECORD_REFS0_LEN);

	/* Empty payload as the last field but refs0. */
	m.payload = (struct bytes){NULL, 0};
	buf_reset(&b);
	record_encode_base_msg(&b, &m);
	check_truncation_and_trailing(&b, dec_msg, b.len - RECORD_REFS0_LEN);
	buf_free(&b);
}

static void test_msg_malformed(void **state)
{
	struct rec_base_msg m = {
		.expiry_time = 0,
		.topic = "t",
		.payload = {(const uint8_t *)"p", 1},
		.source_mid = 1,
		.source_port = 1,
		.qos = 0,
	};
	struct rec_base_msg out;
	struct buf b = {0};

	(void)state;
	/* Layout: expiry 00 | mid 01 | port 01 | qos | retain | topic ... */
	record_encode_base_msg(&b, &m);
	assert_int_equal(record_decode_base_msg(b.data, b.len, &out), 0);
	assert_int_equal(b.data[3], 0);
	assert_int_equal(b.data[4], 0);

	b.data[3] = 3; /* qos 3 */
	assert_int_equal(record_decode_base_msg(b.data, b.len, &out), -1);
	b.data[3] = 0;
	b.data[4] = 2; /* retain neither 0 nor 1 */
	assert_int_equal(record_decode_base_msg(b.data, b.len, &out), -1);
	b.data[4] = 0;
	assert_int_equal(record_decode_base_msg(b.data, b.len, &out), 0);

	/* NULL topic, absent payload. */
	m.topic = NULL;
	buf_reset(&b);
	record_encode_base_msg(&b, &m);
	assert_int_equal(record_decode_base_msg(b.data, b.len, &out), -1);

	m.topic = "t";
	buf_reset(&b);
	record_encode_base_msg(&b, &m);
	size_t n = b.len - RECORD_REFS0_LEN;    /* the record without refs0 */
	assert_int_equal(b.data[n - 2], 2);     /* payload varint(len + 1) */
	b.data[n - 2] = 0;                      /* mark it absent... */
	assert_int_equal(record_decode_base_msg(b.data, n - 1, &out), -1);

	/* A source_mid above 65535 (varint 65536 = 80 80 04). */
	static const uint8_t big_mid[] = {0x00, 0x80, 0x80, 0x04, 0x01, 0x00, 0x00,
		0x02, 't', 0x00, 0x00, 0x00, 0x00, 0x01};
	static const uint8_t ok_mid[] = {0x00, 0xff, 0xff, 0x03, 0x01, 0x00, 0x00,
		0x02, 't', 0x00, 0x00, 0x00, 0x00, 0x01};
	assert_int_equal(record_decode_base_msg(ok_mid, sizeof(ok_mid), &out), 0);
	assert_uint_equal(out.source_mid, 65535);
	assert_int_equal(record_decode_base_msg(big_mid, sizeof(big_mid), &out), -1);
	buf_free(&b);
}

/* ---- session ---- */

static void roundtrip_session(const struct rec_session *in, struct buf *enc)
{
	struct rec_session out;

	buf_reset(enc);
	record_encode_session(enc, in);
	assert_false(enc->err);
	memset(&out, 0xa5, sizeof(out));
	assert_int_equal(record_decode_session(enc->data, enc->len, &out), 0);
	assert_str_eq_or_null(out.clientid, in->clientid);
	assert_str_eq_or_null(out.username, in->username);
	assert_str_eq_or_null(out.auth_method, in->auth_method);
	assert_int_equal(out.will_delay_time, in->will_delay_time);
	assert_int_equal(out.session_expiry_time, in->session_expiry_time);
	assert_uint_equal(out.will_delay_interval, in->will_delay_interval);
	assert_uint_equal(out.session_expiry_interval, in->session_expiry_interval);
	assert_uint_equal(out.max_packet_size, in->max_packet_size);
	assert_uint_equal(out.listener_port, in->listener_port);
	assert_uint_equal(out.max_qos, in->max_qos);
	assert_int_equal(out.retain_available, in->retain_available);
}

static void test_session_roundtrip(void **state)
{
	struct rec_session s = {
		.clientid = "client-α",
		.username = "bob",
		.auth_method = "SCRAM-SHA-1",
		.will_delay_time = 1700000100,
		.session_expiry_time = 1700003600,
		.will_delay_interval = 100,
		.session_expiry_interval = 3600,
		.max_packet_size = 268435455,
		.listener_port = 1883,
		.max_qos = 1,
		.retain_available = true,
	};
	struct buf b = {0};

	(void)state;
	roundtrip_session(&s, &b);
	check_truncation_and_trailing(&b, dec_session, NO_LEGACY);

	s.username = NULL;
	s.auth_method = NULL;
	s.retain_available = false;
	roundtrip_session(&s, &b);
	check_truncation_and_trailing(&b, dec_session, NO_LEGACY);

	/* Extremes. */
	s.will_delay_time = INT64_MIN;
	s.session_expiry_time = INT64_MAX;
	s.will_delay_interval = UINT32_MAX;
	s.session_expiry_interval = UINT32_MAX;
	s.max_packet_size = UINT32_MAX;
	s.listener_port = 65535;
	s.max_qos = 2;
	roundtrip_session(&s, &b);
	check_truncation_and_trailing(&b, dec_session, NO_LEGACY);
	s.will_delay_time = INT64_MAX;
	s.session_expiry_time = INT64_MIN;
	s.will_delay_interval = 0;
	s.session_expiry_interval = 0;
	s.max_packet_size = 0;
	s.listener_port = 0;
	s.max_qos = 0;
	roundtrip_session(&s, &b);

	/* A session needs a client id. */
	s.clientid = NULL;
	buf_reset(&b);
	record_encode_session(&b, &s);
	assert_int_equal(record_decode_session(b.data, b.len, &(struct rec_session){0}), -1);
	buf_free(&b);
}

static void test_session_u32_overflow_rejected(void **state)
{
	/* clientid "c" | username NULL | auth NULL | 0 | 0 | will_delay_interval
	 * 2^32 (80 80 80 80 10) | 0 | 0 | 0 | max_qos 0 | retain 0 */
	static const uint8_t bad[] = {0x02, 'c', 0x00, 0x00, 0x00, 0x00, 0x00,
		0x80, 0x80, 0x80, 0x80, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00};
	static const uint8_t good[] = {0x02, 'c', 0x00, 0x00, 0x00, 0x00, 0x00,
		0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00};
	struct rec_session s;

	(void)state;
	assert_int_equal(record_decode_session(good, sizeof(good), &s), 0);
	assert_uint_equal(s.will_delay_interval, UINT32_MAX);
	assert_int_equal(record_decode_session(bad, sizeof(bad), &s), -1);
}

/* ---- subscription ---- */

static void test_sub_roundtrip(void **state)
{
	struct rec_sub in = {"client", "a/+/#", 7, 0x2d}, out;
	struct buf b = {0};
	static const uint8_t want[] = {0x07, 'c', 'l', 'i', 'e', 'n', 't', 0x00,
		0x06, 'a', '/', '+', '/', '#', 0x00, 0x07, 0x2d};

	(void)state;
	record_encode_sub(&b, &in);
	/* The documented layout, byte for byte. */
	assert_uint_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	assert_int_equal(record_decode_sub(b.data, b.len, &out), 0);
	assert_string_equal(out.clientid, "client");
	assert_string_equal(out.topic_filter, "a/+/#");
	assert_uint_equal(out.identifier, 7);
	assert_uint_equal(out.options, 0x2d);
	check_truncation_and_trailing(&b, dec_sub, NO_LEGACY);

	in = (struct rec_sub){"c", "$share/g/t", UINT32_MAX, 0xff};
	buf_reset(&b);
	record_encode_sub(&b, &in);
	assert_int_equal(record_decode_sub(b.data, b.len, &out), 0);
	assert_uint_equal(out.identifier, UINT32_MAX);
	assert_uint_equal(out.options, 0xff);
	assert_string_equal(out.topic_filter, "$share/g/t");
	check_truncation_and_trailing(&b, dec_sub, NO_LEGACY);

	/* Both strings are required. */
	in.topic_filter = NULL;
	buf_reset(&b);
	record_encode_sub(&b, &in);
	assert_int_equal(record_decode_sub(b.data, b.len, &out), -1);
	in.topic_filter = "t";
	in.clientid = NULL;
	buf_reset(&b);
	record_encode_sub(&b, &in);
	assert_int_equal(record_decode_sub(b.data, b.len, &out), -1);
	buf_free(&b);
}

static void test_sub_string_without_nul(void **state)
{
	uint8_t p[] = {0x07, 'c', 'l', 'i', 'e', 'n', 't', 0x00,
		0x06, 'a', '/', '+', '/', '#', 0x00, 0x07, 0x2d};
	struct rec_sub out;

	(void)state;
	assert_int_equal(record_decode_sub(p, sizeof(p), &out), 0);

	p[7] = 'x'; /* client id loses its terminator */
	assert_int_equal(record_decode_sub(p, sizeof(p), &out), -1);
	p[7] = 0x00;
	p[14] = '!'; /* topic filter loses its terminator */
	assert_int_equal(record_decode_sub(p, sizeof(p), &out), -1);
	p[14] = 0x00;
	p[3] = 0x00; /* NUL inside the client id */
	assert_int_equal(record_decode_sub(p, sizeof(p), &out), -1);
	p[3] = 'i';
	p[11] = 0x00; /* NUL inside the filter */
	assert_int_equal(record_decode_sub(p, sizeof(p), &out), -1);
	p[11] = '+';
	assert_int_equal(record_decode_sub(p, sizeof(p), &out), 0);
}

/* ---- queue ---- */

static void test_queue_roundtrip(void **state)
{
	static const struct rec_queue cases[] = {
		{1, 0, 1, 0, false, 0, 0, 0, 0},
		{123456789012345ull, 42, 300, 1, true, 1, 1, 3, 1},
		{UINT64_MAX, UINT32_MAX, 65535, 2, true, 255, 255, 255, UINT64_MAX},
		{0, 0, 0, 0, false, 0, 0, 0, 128},
	};
	struct buf b = {0};
	struct rec_queue out;

	(void)state;
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		buf_reset(&b);
		record_encode_queue(&b, &cases[i]);
		memset(&out, 0xa5, sizeof(out));
		assert_int_equal(record_decode_queue(b.data, b.len, &out), 0);
		assert_uint_equal(out.store_id, cases[i].store_id);
		assert_uint_equal(out.subscription_identifier, cases[i].subscription_identifier);
		assert_uint_equal(out.mid, cases[i].mid);
		assert_uint_equal(out.qos, cases[i].qos);
		assert_int_equal(out.retain, cases[i].retain);
		assert_uint_equal(out.dup, cases[i].dup);
		assert_uint_equal(out.direction, cases[i].direction);
		assert_uint_equal(out.state, cases[i].state);
		assert_uint_equal(out.seq_no, cases[i].seq_no);
		check_truncation_and_trailing(&b, dec_queue, NO_LEGACY);
	}

	struct rec_queue q = {1, 0, 1, 3, false, 0, 0, 0, 0}; /* qos 3 */
	buf_reset(&b);
	record_encode_queue(&b, &q);
	assert_int_equal(record_decode_queue(b.data, b.len, &out), -1);
	buf_free(&b);
}

/* ---- retained ---- */

static void test_retain_roundtrip(void **state)
{
	static const uint64_t ids[] = {0, 1, 127, 128, UINT32_MAX, (uint64_t)1 << 40, UINT64_MAX};
	struct buf b = {0};
	struct rec_retain in = {"home/+/light", 0}, out;

	(void)state;
	for(size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++){
		in.store_id = ids[i];
		buf_reset(&b);
		record_encode_retain(&b, &in);
		assert_int_equal(record_decode_retain(b.data, b.len, &out), 0);
		assert_string_equal(out.topic, in.topic);
		assert_uint_equal(out.store_id, ids[i]);
		check_truncation_and_trailing(&b, dec_retain, NO_LEGACY);
	}
	in.topic = NULL;
	buf_reset(&b);
	record_encode_retain(&b, &in);
	assert_int_equal(record_decode_retain(b.data, b.len, &out), -1);

	/* A retained topic with its NUL replaced. */
	static const uint8_t bad[] = {0x02, 't', 'x', 0x05};
	static const uint8_t good[] = {0x02, 't', 0x00, 0x05};
	assert_int_equal(record_decode_retain(good, sizeof(good), &out), 0);
	assert_uint_equal(out.store_id, 5);
	assert_int_equal(record_decode_retain(bad, sizeof(bad), &out), -1);
	buf_free(&b);
}

/* ---- will ---- */

static void roundtrip_will(const struct rec_will *in, struct buf *b)
{
	struct rec_will out;

	buf_reset(b);
	record_encode_will(b, in);
	assert_false(b->err);
	memset(&out, 0xa5, sizeof(out));
	assert_int_equal(record_decode_will(b->data, b->len, &out), 0);
	assert_str_eq_or_null(out.clientid, in->clientid);
	assert_str_eq_or_null(out.topic, in->topic);
	assert_bytes_eq(out.payload, in->payload.data, in->payload.len, true);
	assert_bytes_eq(out.properties, in->properties.data, in->properties.len, in->properties.data != NULL);
	assert_uint_equal(out.qos, in->qos);
	assert_int_equal(out.retain, in->retain);
}

static void test_will_roundtrip(void **state)
{
	struct rec_will w = {
		.clientid = "dev-7",
		.topic = "devices/7/status",
		.payload = {(const uint8_t *)"offline", 7},
		.properties = {(const uint8_t *)"\x18\x00\x00\x00\x0a", 5},
		.qos = 1,
		.retain = true,
	};
	struct buf b = {0};

	(void)state;
	roundtrip_will(&w, &b);
	check_truncation_and_trailing(&b, dec_will, NO_LEGACY);

	w.payload = (struct bytes){NULL, 0};
	w.properties = (struct bytes){NULL, 0};
	w.qos = 2;
	w.retain = false;
	roundtrip_will(&w, &b);
	check_truncation_and_trailing(&b, dec_will, NO_LEGACY);

	/* 1 MiB will payload. */
	uint8_t *big = malloc(MIB);
	assert_non_null(big);
	for(size_t i = 0; i < MIB; i++){
		big[i] = (uint8_t)(i ^ (i >> 11));
	}
	w.payload = (struct bytes){big, MIB};
	roundtrip_will(&w, &b);
	free(big);

	/* Required fields and qos range. */
	w.payload = (struct bytes){(const uint8_t *)"x", 1};
	w.qos = 3;
	buf_reset(&b);
	record_encode_will(&b, &w);
	assert_int_equal(record_decode_will(b.data, b.len, &(struct rec_will){0}), -1);
	w.qos = 0;
	w.topic = NULL;
	buf_reset(&b);
	record_encode_will(&b, &w);
	assert_int_equal(record_decode_will(b.data, b.len, &(struct rec_will){0}), -1);
	w.topic = "t";
	w.clientid = NULL;
	buf_reset(&b);
	record_encode_will(&b, &w);
	assert_int_equal(record_decode_will(b.data, b.len, &(struct rec_will){0}), -1);
	buf_free(&b);
}

/* ---- message id (dedup) ---- */

static void roundtrip_dedup(const struct rec_dedup *in, struct buf *b)
{
	struct rec_dedup out;

	buf_reset(b);
	record_encode_dedup(b, in);
	assert_false(b->err);
	memset(&out, 0xa5, sizeof(out));
	assert_int_equal(record_decode_dedup(b->data, b->len, &out), 0);
	assert_int_equal(out.expiry, in->expiry);
	assert_str_eq_or_null(out.identity, in->identity);
	/* The message id is always present (possibly empty). */
	assert_bytes_eq(out.msg_id, in->msg_id.data, in->msg_id.len, true);
	check_truncation_and_trailing(b, dec_dedup, NO_LEGACY);
}

static void test_dedup_roundtrip(void **state)
{
	static const int64_t expiries[] = {INT64_MIN, -1, 0, 1, 1700003600, INT64_MAX};
	struct rec_dedup d = {
		.expiry = 1700003600,
		.identity = "alice",
		.msg_id = {(const uint8_t *)"order-0001", 10},
	};
	struct buf b = {0};

	(void)state;
	for(size_t i = 0; i < sizeof(expiries) / sizeof(expiries[0]); i++){
		d.expiry = expiries[i];
		roundtrip_dedup(&d, &b);
	}
	/* Binary ids with NULs, an empty id, an empty identity. */
	d.msg_id = (struct bytes){(const uint8_t *)"\0id\0\xff", 5};
	roundtrip_dedup(&d, &b);
	d.msg_id = (struct bytes){NULL, 0};
	roundtrip_dedup(&d, &b);
	d.identity = "";
	roundtrip_dedup(&d, &b);
	/* A long id (a varint length of several bytes). */
	uint8_t *big = malloc(70000);
	assert_non_null(big);
	memset(big, 'i', 70000);
	d.identity = "client-\xce\xb1";
	d.msg_id = (struct bytes){big, 70000};
	buf_reset(&b);
	record_encode_dedup(&b, &d);
	struct rec_dedup out;
	assert_int_equal(record_decode_dedup(b.data, b.len, &out), 0);
	assert_bytes_eq(out.msg_id, big, 70000, true);
	assert_string_equal(out.identity, "client-\xce\xb1");
	free(big);

	/* The identity is required. */
	d.identity = NULL;
	d.msg_id = (struct bytes){(const uint8_t *)"x", 1};
	buf_reset(&b);
	record_encode_dedup(&b, &d);
	assert_int_equal(record_decode_dedup(b.data, b.len, &out), -1);
	buf_free(&b);

	/* The layout: zigzag expiry | identity | id; an absent id is rejected. */
	static const uint8_t good[] = {0x03, 0x02, 'a', 0x00, 0x02, 'x'};
	static const uint8_t absent_id[] = {0x03, 0x02, 'a', 0x00, 0x00};
	static const uint8_t no_identity[] = {0x03, 0x00, 0x02, 'x'};
	assert_int_equal(record_decode_dedup(good, sizeof(good), &out), 0);
	assert_int_equal(out.expiry, -2);
	assert_string_equal(out.identity, "a");
	assert_bytes_eq(out.msg_id, "x", 1, true);
	assert_int_equal(record_decode_dedup(absent_id, sizeof(absent_id), &out), -1);
	assert_int_equal(record_decode_dedup(no_identity, sizeof(no_identity), &out), -1);
}

/* ---- journal records ---- */

static void test_journal_publish_roundtrip(void **state)
{
	static const uint8_t props[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
	struct rec_journal in = {
		.kind = JREC_PUBLISH,
		.msg = {
			.expiry_time = 1700000123,
			.topic = "plant/7/temp",
			.source_id = "sensor-7",
			.source_username = "sensors",
			.payload = {(const uint8_t *)"21.5\0C", 6},
			.properties = {props, sizeof(props)},
			.source_mid = 4711,
			.source_port = 8883,
			.qos = 2,
			.retain = true,
		},
	};
	struct rec_journal out;
	struct buf b = {0};

	(void)state;
	record_encode_journal(&b, &in);
	assert_false(b.err);
	assert_int_equal(b.data[0], JREC_PUBLISH);
	memset(&out, 0xa5, sizeof(out));
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_int_equal(out.kind, JREC_PUBLISH);
	assert_int_equal(out.msg.expiry_time, in.msg.expiry_time);
	assert_string_equal(out.msg.topic, in.msg.topic);
	assert_string_equal(out.msg.source_id, in.msg.source_id);
	assert_string_equal(out.msg.source_username, in.msg.source_username);
	assert_bytes_eq(out.msg.payload, in.msg.payload.data, in.msg.payload.len, true);
	assert_bytes_eq(out.msg.properties, props, sizeof(props), true);
	assert_uint_equal(out.msg.source_mid, 4711);
	assert_uint_equal(out.msg.source_port, 8883);
	assert_uint_equal(out.msg.qos, 2);
	assert_true(out.msg.retain);
	assert_null(out.clientid);
	assert_uint_equal(out.seq, 0);
	/* The message part is the base message's own encoding. */
	{
		struct buf m = {0};
		record_encode_base_msg(&m, &in.msg);
		assert_uint_equal(b.len, 1 + m.len);
		assert_memory_equal(b.data + 1, m.data, m.len);
		buf_free(&m);
	}
	/* The message's own older form (no refs0) is accepted as in a body. */
	check_truncation_and_trailing(&b, dec_journal, b.len - RECORD_REFS0_LEN);

	/* Optional parts absent. */
	in.msg.source_id = NULL;
	in.msg.source_username = NULL;
	in.msg.properties = (struct bytes){NULL, 0};
	in.msg.payload = (struct bytes){NULL, 0};
	in.msg.qos = 1;
	in.msg.retain = false;
	buf_reset(&b);
	record_encode_journal(&b, &in);
	memset(&out, 0xa5, sizeof(out));
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_null(out.msg.source_id);
	assert_null(out.msg.source_username);
	assert_null(out.msg.properties.data);
	assert_non_null(out.msg.payload.data);
	assert_uint_equal(out.msg.payload.len, 0);
	assert_uint_equal(out.msg.qos, 1);
	assert_false(out.msg.retain);
	check_truncation_and_trailing(&b, dec_journal, b.len - RECORD_REFS0_LEN);

	/* A publish needs a topic, and a valid message. */
	in.msg.topic = NULL;
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), -1);
	in.msg.topic = "t";
	in.msg.qos = 3;
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), -1);
	buf_free(&b);
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;

	while(v >= 0x80){
		v >>= 7;
		n++;
	}
	return n;
}

static void test_journal_exchange_roundtrip(void **state)
{
	static const uint8_t kinds[] = {JREC_PUBREL_SENT, JREC_RELEASED_IN, JREC_SESSION_GONE, JREC_WILL_GONE,
		JREC_ONLINE, JREC_COMPLETED};
	static const uint64_t seqs[] = {0, 1, 127, 128, (1ull << 40) + 5, UINT64_MAX};
	static const char *const ids[] = {"client-1", "", "\xce\xb1\xce\xb2"};
	struct rec_journal in = {0}, out;
	struct buf b = {0};

	(void)state;
	for(size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++){
		for(size_t s = 0; s < sizeof(seqs) / sizeof(seqs[0]); s++){
			for(size_t c = 0; c < sizeof(ids) / sizeof(ids[0]); c++){
				/* These two name the body too, and PUBREL_SENT the packet
				 * id (an earlier version's records end before it). */
				bool body = kinds[k] == JREC_RELEASED_IN || kinds[k] == JREC_COMPLETED;
				bool mid = kinds[k] == JREC_PUBREL_SENT;
				in.kind = kinds[k];
				in.clientid = ids[c];
				in.seq = seqs[s];
				in.store_id = body ? 0x1234567890ull + s : 0;
				in.mid = mid ? (uint16_t)(65535 - s * 200) : 0;
				buf_reset(&b);
				record_encode_journal(&b, &in);
				assert_false(b.err);
				assert_int_equal(b.data[0], kinds[k]);
				memset(&out, 0xa5, sizeof(out));
				assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
				assert_int_equal(out.kind, kinds[k]);
				assert_string_equal(out.clientid, ids[c]);
				assert_uint_equal(out.seq, seqs[s]);
				assert_uint_equal(out.store_id, in.store_id);
				if(mid){
					assert_int_equal(out.mid, in.mid);
				}
				assert_null(out.msg.topic);
				check_truncation_and_trailing(&b, dec_journal, body ? b.len - varint_len(in.store_id)
						: mid ? b.len - varint_len(in.mid) : NO_LEGACY);
			}
		}
		/* A client id is required. */
		in.clientid = NULL;
		buf_reset(&b);
		record_encode_journal(&b, &in);
		assert_int_equal(record_decode_journal(b.data, b.len, &out), -1);
	}

	/* The layout: kind | client id | seq, as an earlier version wrote it. */
	static const uint8_t good[] = {JREC_RELEASED_IN, 0x02, 'c', 0x00, 0xac, 0x02};
	assert_int_equal(record_decode_journal(good, sizeof(good), &out), 0);
	assert_int_equal(out.kind, JREC_RELEASED_IN);
	assert_string_equal(out.clientid, "c");
	assert_uint_equal(out.seq, 300);
	assert_uint_equal(out.store_id, 0);
	static const uint8_t old_pubrel[] = {JREC_PUBREL_SENT, 0x02, 'c', 0x00, 0xac, 0x02};
	assert_int_equal(record_decode_journal(old_pubrel, sizeof(old_pubrel), &out), 0);
	assert_uint_equal(out.seq, 300);
	assert_int_equal(out.mid, 0);
	buf_free(&b);
}

/* The records that carry a whole session, subscription or will, and an
 * incoming QoS 2 message: the embedded record is that record's own
 * encoding, and the client id is exposed for every kind. */
static void test_journal_session_records_roundtrip(void **state)
{
	static const uint8_t props[] = {0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
	struct rec_journal in, out;
	struct buf b = {0};

	(void)state;
	in = (struct rec_journal){.kind = JREC_SESSION, .session = {
		.clientid = "phone", .username = "alice", .auth_method = NULL, .will_delay_time = 17,
		.session_expiry_time = 1700000000, .will_delay_interval = 30, .session_expiry_interval = 3600,
		.max_packet_size = 65536, .listener_port = 1883, .max_qos = 2, .retain_available = true}};
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_int_equal(out.kind, JREC_SESSION);
	assert_string_equal(out.clientid, "phone");
	assert_string_equal(out.session.username, "alice");
	assert_null(out.session.auth_method);
	assert_int_equal(out.session.session_expiry_time, 1700000000);
	assert_uint_equal(out.session.will_delay_interval, 30);
	assert_uint_equal(out.session.max_packet_size, 65536);
	check_truncation_and_trailing(&b, dec_journal, NO_LEGACY);

	for(int gone = 0; gone < 2; gone++){
		in = (struct rec_journal){.kind = gone ? JREC_SUB_GONE : JREC_SUB,
			.sub = {.clientid = "phone", .topic_filter = "inbox/+/x", .identifier = 7, .options = 2}};
		buf_reset(&b);
		record_encode_journal(&b, &in);
		assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
		assert_int_equal(out.kind, in.kind);
		assert_string_equal(out.clientid, "phone");
		assert_string_equal(out.sub.topic_filter, "inbox/+/x");
		assert_uint_equal(out.sub.identifier, 7);
		assert_uint_equal(out.sub.options, 2);
		check_truncation_and_trailing(&b, dec_journal, NO_LEGACY);
	}

	in = (struct rec_journal){.kind = JREC_WILL, .will = {.clientid = "phone", .topic = "status/phone",
		.payload = {(const uint8_t *)"gone", 4}, .properties = {props, sizeof(props)}, .qos = 1, .retain = true}};
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_int_equal(out.kind, JREC_WILL);
	assert_string_equal(out.clientid, "phone");
	assert_string_equal(out.will.topic, "status/phone");
	assert_bytes_eq(out.will.payload, (const uint8_t *)"gone", 4, true);
	assert_bytes_eq(out.will.properties, props, sizeof(props), true);
	assert_true(out.will.retain);
	check_truncation_and_trailing(&b, dec_journal, NO_LEGACY);

	in = (struct rec_journal){.kind = JREC_INCOMING, .clientid = "pub", .seq = (1ull << 40) + 3,
		.store_id = 0x123456789abcull, .mid = 65535,
		.msg = {.topic = "t/1", .payload = {(const uint8_t *)"x", 1}, .qos = 2, .source_id = "pub"}};
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_int_equal(out.kind, JREC_INCOMING);
	assert_string_equal(out.clientid, "pub");
	assert_uint_equal(out.seq, (1ull << 40) + 3);
	assert_uint_equal(out.store_id, 0x123456789abcull);
	assert_uint_equal(out.mid, 65535);
	assert_string_equal(out.msg.topic, "t/1");
	assert_uint_equal(out.msg.qos, 2);
	check_truncation_and_trailing(&b, dec_journal, b.len - RECORD_REFS0_LEN);
	/* A body is named: store id 0 is none. */
	in.store_id = 0;
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), -1);

	/* A routing's copy journaled after a commit in its middle. */
	in = (struct rec_journal){.kind = JREC_ENTRY, .clientid = "sub", .seq = (2ull << 40) + 9,
		.entry = {.store_id = 77, .subscription_identifier = 5, .mid = 1234, .qos = 2, .retain = true,
			.direction = 1, .state = 4}};
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_int_equal(out.kind, JREC_ENTRY);
	assert_string_equal(out.clientid, "sub");
	assert_uint_equal(out.seq, (2ull << 40) + 9);
	assert_uint_equal(out.entry.store_id, 77);
	assert_uint_equal(out.entry.mid, 1234);
	assert_uint_equal(out.entry.state, 4);
	assert_true(out.entry.retain);
	check_truncation_and_trailing(&b, dec_journal, NO_LEGACY);

	/* A QoS 2 routing, with its body's store id. */
	in = (struct rec_journal){.kind = JREC_ROUTED, .store_id = 0xabcdef,
		.msg = {.topic = "t/2", .payload = {(const uint8_t *)"yz", 2}, .qos = 2}};
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_int_equal(out.kind, JREC_ROUTED);
	assert_uint_equal(out.store_id, 0xabcdef);
	assert_string_equal(out.msg.topic, "t/2");
	assert_bytes_eq(out.msg.payload, (const uint8_t *)"yz", 2, true);
	check_truncation_and_trailing(&b, dec_journal, b.len - RECORD_REFS0_LEN);

	/* A will the broker published: its client is the message's source. */
	in = (struct rec_journal){.kind = JREC_WILL_SENT,
		.msg = {.topic = "status/phone", .payload = {(const uint8_t *)"gone", 4}, .qos = 1, .retain = true,
			.source_id = "phone"}};
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), 0);
	assert_int_equal(out.kind, JREC_WILL_SENT);
	assert_string_equal(out.clientid, "phone");
	assert_string_equal(out.msg.topic, "status/phone");
	assert_true(out.msg.retain);
	check_truncation_and_trailing(&b, dec_journal, b.len - RECORD_REFS0_LEN);
	/* Without a source it names no will. */
	in.msg.source_id = NULL;
	buf_reset(&b);
	record_encode_journal(&b, &in);
	assert_int_equal(record_decode_journal(b.data, b.len, &out), -1);
	buf_free(&b);
}

static void test_journal_unknown_kind(void **state)
{
	static const uint8_t kinds[] = {0, 16, 0x7f, 0x80, 0xff};
	uint8_t p[] = {JREC_PUBREL_SENT, 0x02, 'c', 0x00, 0x05};
	struct rec_journal out;
	struct buf b = {0};

	(void)state;
	assert_int_equal(record_decode_journal(p, sizeof(p), &out), 0);
	for(size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++){
		p[0] = kinds[i];
		assert_int_equal(record_decode_journal(p, sizeof(p), &out), -1);
		/* Nor as the encoder writes it for such a kind. */
		struct rec_journal in = {.kind = kinds[i], .clientid = "c", .seq = 5};
		buf_reset(&b);
		record_encode_journal(&b, &in);
		assert_int_equal(record_decode_journal(b.data, b.len, &out), -1);
	}
	/* An empty plaintext has no kind. */
	assert_int_equal(record_decode_journal(p, 0, &out), -1);
	buf_free(&b);
}

/* Decoding an arbitrary byte soup never crashes and never reads past n (the
 * input is in an exactly sized heap block). */
static void test_decoders_on_garbage(void **state)
{
	static const decode_fn decs[] = {dec_msg, dec_session, dec_sub, dec_queue, dec_retain, dec_will,
		dec_dedup, dec_journal};
	uint64_t x = 88172645463325252ull;

	(void)state;
	for(int round = 0; round < 3000; round++){
		size_t n = (size_t)(round % 48);
		uint8_t *p = malloc(n ? n : 1);
		assert_non_null(p);
		for(size_t i = 0; i < n; i++){
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			p[i] = (uint8_t)x;
		}
		for(size_t d = 0; d < sizeof(decs) / sizeof(decs[0]); d++){
			int rc = decs[d](p, n);
			assert_true(rc == 0 || rc == -1);
		}
		free(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_varint_vectors),
		cmocka_unit_test(test_varint_overlong_rejected),
		cmocka_unit_test(test_varint_random_roundtrip),
		cmocka_unit_test(test_buf_str_and_bytes_layout),
		cmocka_unit_test(test_rd_str_requires_nul),
		cmocka_unit_test(test_msg_roundtrip),
		cmocka_unit_test(test_msg_extremes),
		cmocka_unit_test(test_msg_large_payload),
		cmocka_unit_test(test_msg_truncated_and_trailing),
		cmocka_unit_test(test_msg_malformed),
		cmocka_unit_test(test_session_roundtrip),
		cmocka_unit_test(test_session_u32_overflow_rejected),
		cmocka_unit_test(test_sub_roundtrip),
		cmocka_unit_test(test_sub_string_without_nul),
		cmocka_unit_test(test_queue_roundtrip),
		cmocka_unit_test(test_retain_roundtrip),
		cmocka_unit_test(test_will_roundtrip),
		cmocka_unit_test(test_dedup_roundtrip),
		cmocka_unit_test(test_journal_publish_roundtrip),
		cmocka_unit_test(test_journal_exchange_roundtrip),
		cmocka_unit_test(test_journal_session_records_roundtrip),
		cmocka_unit_test(test_journal_unknown_kind),
		cmocka_unit_test(test_decoders_on_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
