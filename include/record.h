/* Plaintext layout of every stored record, independent of Mosquitto.
 *
 * Integers are little-endian varints (LEB128; signed ones zigzag-encoded);
 * a string or byte field is varint(len + 1) followed by the bytes, 0 meaning
 * NULL; strings also carry a terminating NUL so a decoded view can be used as
 * a C string in place. Decoding returns views into the plaintext buffer. */
#ifndef PERSIST_LMDB_RECORD_H
#define PERSIST_LMDB_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bytes {
	const uint8_t *data; /* NULL for an absent field */
	size_t len;
};

/* The last bytes of an encoded body: its refs0, big-endian. */
#define RECORD_REFS0_LEN 4

struct rec_base_msg {
	int64_t expiry_time;
	const char *topic;
	const char *source_id;
	const char *source_username;
	struct bytes payload;
	struct bytes properties; /* MQTT property list in the adapter's encoding */
	uint16_t source_mid;
	uint16_t source_port;
	uint8_t qos;
	bool retain;
	uint32_t refs0;   /* stored entries the body was created with (store.c); 0: none recorded */
};

struct rec_session {
	const char *clientid;
	const char *username;
	const char *auth_method;
	int64_t will_delay_time;
	int64_t session_expiry_time;
	uint32_t will_delay_interval;
	uint32_t session_expiry_interval;
	uint32_t max_packet_size;
	uint16_t listener_port;
	uint8_t max_qos;
	bool retain_available;
};

struct rec_sub {
	const char *clientid;
	const char *topic_filter;
	uint32_t identifier;
	uint8_t options;
};

/* rec_queue.direction of an outgoing entry (the broker's mosq_bmd_out). */
#define REC_DIR_OUT 1

struct rec_queue {
	uint64_t store_id;
	uint32_t subscription_identifier;
	uint16_t mid;
	uint8_t qos;
	bool retain;
	uint8_t dup;
	uint8_t direction;
	uint8_t state;
	uint64_t seq_no;   /* plugin_opt_seq_property: the number the client sees; 0: none */
};

struct rec_retain {
	const char *topic;
	uint64_t store_id;
};

struct rec_will {
	const char *clientid;
	const char *topic;
	struct bytes payload;
	struct bytes properties;
	uint8_t qos;
	bool retain;
};

/* What a client's queue holds under the retention limits: its outgoing
 * QoS 1/2 entries (plugin_opt_queue_storage disk, with limits or expiry). */
struct rec_tally {
	uint64_t count;
	uint64_t bytes;          /* their payloads */
	int64_t earliest_expiry; /* unix seconds; no entry expires before it; 0: none expires */
};

/* A publisher's message id seen at publish (plugin_opt_dedup_property). */
struct rec_dedup {
	int64_t expiry;          /* unix seconds after which the id may be used again */
	const char *identity;    /* the username, or the client id when there is none */
	struct bytes msg_id;
};

/* Journal records (journal.h): what the broker acknowledged before the
 * store committed it. */
enum jrec_kind {
	JREC_PUBLISH = 1,     /* an accepted QoS 1/2 PUBLISH, routed: route it again */
	JREC_PUBREL_SENT = 2, /* an outgoing QoS 2 message got PUBREC; PUBREL follows (clientid,
	                         seq, mid) */
	JREC_RELEASED_IN = 3, /* an incoming QoS 2 message got PUBREL and was routed */
	/* Changes a CONNACK, SUBACK or UNSUBACK reports, and what decides a
	 * will's fate: applied to the store at restart, in lsn order. */
	JREC_SESSION = 4,     /* session */
	JREC_SESSION_GONE = 5,
	JREC_SUB = 6,         /* sub */
	JREC_SUB_GONE = 7,    /* sub (client id and topic filter) */
	JREC_WILL = 8,        /* will */
	JREC_WILL_GONE = 9,
	JREC_ONLINE = 10,     /* seq: 1 connected, 0 not */
	JREC_COMPLETED = 11,  /* an outgoing QoS 2 message got PUBCOMP: its entry is gone */
	JREC_INCOMING = 12,   /* a QoS 2 PUBLISH stored for its publisher's session before
	                         PUBREC (msg, store_id, mid); routed at its JREC_RELEASED_IN */
	JREC_ENTRY = 13,      /* a QoS 2 routing's copy after a commit in the routing's middle
	                         (clientid, seq, entry): applied to the store */
	JREC_ROUTED = 14,     /* a QoS 2 PUBLISH routed at PUBREL of a publisher without a
	                         session (msg, store_id): routed again */
	JREC_WILL_SENT = 15,  /* a client's will the broker published (msg, its source the
	                         client): routed again, and the client's will is gone */
};

struct rec_journal {
	uint8_t kind;
	struct rec_base_msg msg;  /* JREC_PUBLISH, JREC_WILL_SENT, JREC_INCOMING, JREC_ROUTED */
	const char *clientid;     /* the others: whose session or queue entry */
	uint64_t seq;             /* a queue entry's sequence number */
	uint64_t store_id;        /* the body: JREC_INCOMING, JREC_ROUTED; JREC_RELEASED_IN and
	                             JREC_COMPLETED (0 in records of earlier versions) */
	uint16_t mid;             /* JREC_INCOMING: the publisher's packet id; JREC_PUBREL_SENT:
	                             the one the PUBREL went under (0 in records of earlier
	                             versions) */
	struct rec_session session;
	struct rec_sub sub;
	struct rec_will will;
	struct rec_queue entry;   /* JREC_ENTRY */
};

/* A growable output buffer; on allocation failure err is set and further
 * writes are ignored. */
struct buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	bool err;
};

void buf_reset(struct buf *b);
void buf_free(struct buf *b);
void buf_put(struct buf *b, const void *p, size_t n);
/* Appends n uninitialised bytes and returns them, or NULL (err set). */
uint8_t *buf_extend(struct buf *b, size_t n);
void buf_put_u8(struct buf *b, uint8_t v);
void buf_put_varint(struct buf *b, uint64_t v);
void buf_put_bytes(struct buf *b, const void *p, size_t n, bool present);
void buf_put_str(struct buf *b, const char *s);

/* Reads fields from a plaintext; on a short or malformed field err is set
 * and further reads return zero / NULL. */
struct reader {
	const uint8_t *p;
	size_t left;
	bool err;
};

uint8_t rd_u8(struct reader *r);
uint64_t rd_varint(struct reader *r);
struct bytes rd_bytes(struct reader *r);
const char *rd_str(struct reader *r);

/* Each encoder appends to b (after buf_reset by the caller); each decoder
 * returns 0, or -1 when the plaintext is malformed. */
void record_encode_base_msg(struct buf *b, const struct rec_base_msg *m);
int record_decode_base_msg(const uint8_t *p, size_t n, struct rec_base_msg *m);
void record_encode_session(struct buf *b, const struct rec_session *s);
int record_decode_session(const uint8_t *p, size_t n, struct rec_session *s);
void record_encode_sub(struct buf *b, const struct rec_sub *s);
int record_decode_sub(const uint8_t *p, size_t n, struct rec_sub *s);
void record_encode_queue(struct buf *b, const struct rec_queue *q);
int record_decode_queue(const uint8_t *p, size_t n, struct rec_queue *q);
void record_encode_retain(struct buf *b, const struct rec_retain *r);
int record_decode_retain(const uint8_t *p, size_t n, struct rec_retain *r);
void record_encode_will(struct buf *b, const struct rec_will *w);
int record_decode_will(const uint8_t *p, size_t n, struct rec_will *w);
void record_encode_tally(struct buf *b, const struct rec_tally *t);
int record_decode_tally(const uint8_t *p, size_t n, struct rec_tally *t);
void record_encode_dedup(struct buf *b, const struct rec_dedup *d);
int record_decode_dedup(const uint8_t *p, size_t n, struct rec_dedup *d);
void record_encode_journal(struct buf *b, const struct rec_journal *j);
int record_decode_journal(const uint8_t *p, size_t n, struct rec_journal *j);

#endif
