/* Plaintext record codec (see record.h for the layout rules). */
#include "record.h"
#include "bytes.h"

#include <stdlib.h>
#include <string.h>

void buf_reset(struct buf *b)
{
	b->len = 0;
	b->err = false;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->err = false;
}

static bool buf_reserve(struct buf *b, size_t n)
{
	size_t cap;
	uint8_t *p;

	if(b->err){
		return false;
	}
	if(n <= b->cap - b->len){
		return true;
	}
	cap = b->cap ? b->cap : 256;
	while(cap - b->len < n){
		if(cap > SIZE_MAX / 2){
			b->err = true;
			return false;
		}
		cap *= 2;
	}
	p = realloc(b->data, cap);
	if(!p){
		b->err = true;
		return false;
	}
	b->data = p;
	b->cap = cap;
	return true;
}

uint8_t *buf_extend(struct buf *b, size_t n)
{
	uint8_t *p;

	if(!buf_reserve(b, n)){
		return NULL;
	}
	p = b->data + b->len;
	b->len += n;
	return p;
}

void buf_put(struct buf *b, const void *p, size_t n)
{
	if(n && buf_reserve(b, n)){
		memcpy(b->data + b->len, p, n);
		b->len += n;
	}
}

void buf_put_u8(struct buf *b, uint8_t v)
{
	buf_put(b, &v, 1);
}

#define VARINT_MAX 10

static size_t varint_encode(uint8_t *out, uint64_t v)
{
	size_t n = 0;

	do{
		out[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if(v){
			out[n] |= 0x80;
		}
		n++;
	}while(v);
	return n;
}

void buf_put_varint(struct buf *b, uint64_t v)
{
	uint8_t tmp[VARINT_MAX];

	buf_put(b, tmp, varint_encode(tmp, v));
}

void buf_put_bytes(struct buf *b, const void *p, size_t n, bool present)
{
	if(!present){
		buf_put_varint(b, 0);
		return;
	}
	buf_put_varint(b, (uint64_t)n + 1);
	buf_put(b, p, n);
}

void buf_put_str(struct buf *b, const char *s)
{
	if(!s){
		buf_put_varint(b, 0);
		return;
	}
	size_t n = strlen(s);
	buf_put_varint(b, (uint64_t)n + 1);
	buf_put(b, s, n + 1);
}

static void put_svarint(struct buf *b, int64_t v)
{
	buf_put_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

uint8_t rd_u8(struct reader *r)
{
	if(r->err || r->left < 1){
		r->err = true;
		return 0;
	}
	r->left--;
	return *r->p++;
}

uint64_t rd_varint(struct reader *r)
{
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t c;

	do{
		if(shift > 63){
			r->err = true;
			return 0;
		}
		c = rd_u8(r);
		if(r->err){
			return 0;
		}
		v |= (uint64_t)(c & 0x7f) << shift;
		shift += 7;
	}while(c & 0x80);
	return v;
}

static int64_t rd_svarint(struct reader *r)
{
	uint64_t v = rd_varint(r);
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static uint32_t rd_u32(struct reader *r)
{
	uint64_t v = rd_varint(r);
	if(v > UINT32_MAX){
		r->err = true;
		return 0;
	}
	return (uint32_t)v;
}

static uint16_t rd_u16(struct reader *r)
{
	uint64_t v = rd_varint(r);
	if(v > UINT16_MAX){
		r->err = true;
		return 0;
	}
	return (uint16_t)v;
}

static bool rd_bool(struct reader *r)
{
	uint8_t v = rd_u8(r);
	if(v > 1){
		r->err = true;
	}
	return v == 1;
}

struct bytes rd_bytes(struct reader *r)
{
	struct bytes out = {NULL, 0};
	uint64_t n = rd_varint(r);

	if(r->err || n == 0){
		return out;
	}
	n--;
	if(n > r->left){
		r->err = true;
		return out;
	}
	out.data = r->p;
	out.len = (size_t)n;
	r->p += n;
	r->left -= (size_t)n;
	return out;
}

const char *rd_str(struct reader *r)
{
	uint64_t n = rd_varint(r);
	const char *s;

	if(r->err || n == 0){
		return NULL;
	}
	if(n > r->left || r->p[n - 1] != '\0' || memchr(r->p, '\0', (size_t)n - 1)){
		r->err = true;
		return NULL;
	}
	s = (const char *)r->p;
	r->p += n;
	r->left -= (size_t)n;
	return s;
}

static int rd_done(struct reader *r)
{
	return (r->err || r->left != 0) ? -1 : 0;
}

void record_encode_base_msg(struct buf *b, const struct rec_base_msg *m)
{
	put_svarint(b, m->expiry_time);
	buf_put_varint(b, m->source_mid);
	buf_put_varint(b, m->source_port);
	buf_put_u8(b, m->qos);
	buf_put_u8(b, m->retain);
	buf_put_str(b, m->topic);
	buf_put_str(b, m->source_id);
	buf_put_str(b, m->source_username);
	buf_put_bytes(b, m->properties.data, m->properties.len, m->properties.data != NULL);
	buf_put_bytes(b, m->payload.data, m->payload.len, true);
	/* Fixed size and last: the store fills it in just before sealing. */
	uint8_t *p = buf_extend(b, RECORD_REFS0_LEN);
	if(p){
		put_be32(p, m->refs0);
	}
}

int record_decode_base_msg(const uint8_t *p, size_t n, struct rec_base_msg *m)
{
	struct reader r = {p, n, false};

	m->expiry_time = rd_svarint(&r);
	m->source_mid = rd_u16(&r);
	m->source_port = rd_u16(&r);
	m->qos = rd_u8(&r);
	m->retain = rd_bool(&r);
	m->topic = rd_str(&r);
	m->source_id = rd_str(&r);
	m->source_username = rd_str(&r);
	m->properties = rd_bytes(&r);
	m->payload = rd_bytes(&r);
	if(!m->topic || m->qos > 2 || m->payload.data == NULL){
		return -1;
	}
	/* Absent in records of schema 2 and earlier. */
	m->refs0 = 0;
	if(!r.err && r.left == RECORD_REFS0_LEN){
		m->refs0 = get_be32(r.p);
		r.p += RECORD_REFS0_LEN;
		r.left -= RECORD_REFS0_LEN;
	}
	return rd_done(&r);
}

void record_encode_session(struct buf *b, const struct rec_session *s)
{
	buf_put_str(b, s->clientid);
	buf_put_str(b, s->username);
	buf_put_str(b, s->auth_method);
	put_svarint(b, s->will_delay_time);
	put_svarint(b, s->session_expiry_time);
	buf_put_varint(b, s->will_delay_interval);
	buf_put_varint(b, s->session_expiry_interval);
	buf_put_varint(b, s->max_packet_size);
	buf_put_varint(b, s->listener_port);
	buf_put_u8(b, s->max_qos);
	buf_put_u8(b, s->retain_available);
}

int record_decode_session(const uint8_t *p, size_t n, struct rec_session *s)
{
	struct reader r = {p, n, false};

	s->clientid = rd_str(&r);
	s->username = rd_str(&r);
	s->auth_method = rd_str(&r);
	s->will_delay_time = rd_svarint(&r);
	s->session_expiry_time = rd_svarint(&r);
	s->will_delay_interval = rd_u32(&r);
	s->session_expiry_interval = rd_u32(&r);
	s->max_packet_size = rd_u32(&r);
	s->listener_port = rd_u16(&r);
	s->max_qos = rd_u8(&r);
	s->retain_available = rd_bool(&r);
	if(!s->clientid){
		return -1;
	}
	return rd_done(&r);
}

void record_encode_sub(struct buf *b, const struct rec_sub *s)
{
	buf_put_str(b, s->clientid);
	buf_put_str(b, s->topic_filter);
	buf_put_varint(b, s->identifier);
	buf_put_u8(b, s->options);
}

int record_decode_sub(const uint8_t *p, size_t n, struct rec_sub *s)
{
	struct reader r = {p, n, false};

	s->clientid = rd_str(&r);
	s->topic_filter = rd_str(&r);
	s->identifier = rd_u32(&r);
	s->options = rd_u8(&r);
	if(!s->clientid || !s->topic_filter){
		return -1;
	}
	return rd_done(&r);
}

/* Built on the stack and put once: one per queued copy of a message, the
 * most frequent record. */
void record_encode_queue(struct buf *b, const struct rec_queue *q)
{
	uint8_t tmp[4 * VARINT_MAX + 5];
	size_t n = 0;

	n += varint_encode(tmp + n, q->store_id);
	n += varint_encode(tmp + n, q->subscription_identifier);
	n += varint_encode(tmp + n, q->mid);
	tmp[n++] = q->qos;
	tmp[n++] = q->retain;
	tmp[n++] = q->dup;
	tmp[n++] = q->direction;
	tmp[n++] = q->state;
	n += varint_encode(tmp + n, q->seq_no);
	buf_put(b, tmp, n);
}

int record_decode_queue(const uint8_t *p, size_t n, struct rec_queue *q)
{
	struct reader r = {p, n, false};

	q->store_id = rd_varint(&r);
	q->subscription_identifier = rd_u32(&r);
	q->mid = rd_u16(&r);
	q->qos = rd_u8(&r);
	q->retain = rd_bool(&r);
	q->dup = rd_u8(&r);
	q->direction = rd_u8(&r);
	q->state = rd_u8(&r);
	q->seq_no = rd_varint(&r);
	if(q->qos > 2){
		return -1;
	}
	return rd_done(&r);
}

void record_encode_retain(struct buf *b, const struct rec_retain *rt)
{
	buf_put_str(b, rt->topic);
	buf_put_varint(b, rt->store_id);
}

int record_decode_retain(const uint8_t *p, size_t n, struct rec_retain *rt)
{
	struct reader r = {p, n, false};

	rt->topic = rd_str(&r);
	rt->store_id = rd_varint(&r);
	if(!rt->topic){
		return -1;
	}
	return rd_done(&r);
}

void record_encode_will(struct buf *b, const struct rec_will *w)
{
	buf_put_str(b, w->clientid);
	buf_put_str(b, w->topic);
	buf_put_bytes(b, w->payload.data, w->payload.len, true);
	buf_put_bytes(b, w->properties.data, w->properties.len, w->properties.data != NULL);
	buf_put_u8(b, w->qos);
	buf_put_u8(b, w->retain);
}

int record_decode_will(const uint8_t *p, size_t n, struct rec_will *w)
{
	struct reader r = {p, n, false};

	w->clientid = rd_str(&r);
	w->topic = rd_str(&r);
	w->payload = rd_bytes(&r);
	w->properties = rd_bytes(&r);
	w->qos = rd_u8(&r);
	w->retain = rd_bool(&r);
	if(!w->clientid || !w->topic || w->payload.data == NULL || w->qos > 2){
		return -1;
	}
	return rd_done(&r);
}

void record_encode_journal(struct buf *b, const struct rec_journal *j)
{
	buf_put_u8(b, j->kind);
	switch(j->kind){
		case JREC_PUBLISH:
		case JREC_WILL_SENT:
			record_encode_base_msg(b, &j->msg);
			break;
		case JREC_SESSION:
			record_encode_session(b, &j->session);
			break;
		case JREC_SUB:
		case JREC_SUB_GONE:
			record_encode_sub(b, &j->sub);
			break;
		case JREC_WILL:
			record_encode_will(b, &j->will);
			break;
		case JREC_ENTRY:
			buf_put_str(b, j->clientid);
			buf_put_varint(b, j->seq);
			record_encode_queue(b, &j->entry);
			break;
		case JREC_ROUTED:
			buf_put_varint(b, j->store_id);
			record_encode_base_msg(b, &j->msg);
			break;
		case JREC_RELEASED_IN:
		case JREC_COMPLETED:
			buf_put_str(b, j->clientid);
			buf_put_varint(b, j->seq);
			buf_put_varint(b, j->store_id);
			break;
		case JREC_INCOMING:
			buf_put_str(b, j->clientid);
			buf_put_varint(b, j->seq);
			buf_put_varint(b, j->store_id);
			buf_put_varint(b, j->mid);
			record_encode_base_msg(b, &j->msg);
			break;
		case JREC_PUBREL_SENT:
			buf_put_str(b, j->clientid);
			buf_put_varint(b, j->seq);
			buf_put_varint(b, j->mid);
			break;
		default:
			buf_put_str(b, j->clientid);
			buf_put_varint(b, j->seq);
			break;
	}
}

int record_decode_journal(const uint8_t *p, size_t n, struct rec_journal *j)
{
	struct reader r = {p, n, false};

	memset(j, 0, sizeof(*j));
	j->kind = rd_u8(&r);
	if(r.err){
		return -1;
	}
	switch(j->kind){
		case JREC_PUBLISH:
			return record_decode_base_msg(r.p, r.left, &j->msg) || !j->msg.topic ? -1 : 0;
		case JREC_WILL_SENT:
			if(record_decode_base_msg(r.p, r.left, &j->msg) || !j->msg.topic || !j->msg.source_id){
				return -1;
			}
			j->clientid = j->msg.source_id;
			return 0;
		case JREC_SESSION:
			if(record_decode_session(r.p, r.left, &j->session)){
				return -1;
			}
			j->clientid = j->session.clientid;
			return 0;
		case JREC_SUB:
		case JREC_SUB_GONE:
			if(record_decode_sub(r.p, r.left, &j->sub)){
				return -1;
			}
			j->clientid = j->sub.clientid;
			return 0;
		case JREC_WILL:
			if(record_decode_will(r.p, r.left, &j->will)){
				return -1;
			}
			j->clientid = j->will.clientid;
			return 0;
		case JREC_ENTRY:
			j->clientid = rd_str(&r);
			j->seq = rd_varint(&r);
			if(r.err || !j->clientid || record_decode_queue(r.p, r.left, &j->entry)){
				return -1;
			}
			return 0;
		case JREC_ROUTED:
			j->store_id = rd_varint(&r);
			return r.err || !j->store_id || record_decode_base_msg(r.p, r.left, &j->msg) || !j->msg.topic ? -1 : 0;
		case JREC_RELEASED_IN:
		case JREC_COMPLETED:
			j->clientid = rd_str(&r);
			j->seq = rd_varint(&r);
			/* The body came later: an earlier version's record ends here. */
			j->store_id = r.left ? rd_varint(&r) : 0;
			if(!j->clientid){
				return -1;
			}
			return rd_done(&r);
		case JREC_INCOMING:
			j->clientid = rd_str(&r);
			j->seq = rd_varint(&r);
			j->store_id = rd_varint(&r);
			j->mid = (uint16_t)rd_varint(&r);
			if(r.err || !j->clientid || !j->store_id
					|| record_decode_base_msg(r.p, r.left, &j->msg) || !j->msg.topic){
				return -1;
			}
			return 0;
		case JREC_PUBREL_SENT:
			j->clientid = rd_str(&r);
			j->seq = rd_varint(&r);
			/* The packet id came later: an earlier version's record ends here. */
			j->mid = r.left ? (uint16_t)rd_varint(&r) : 0;
			if(!j->clientid){
				return -1;
			}
			return rd_done(&r);
		case JREC_SESSION_GONE:
		case JREC_WILL_GONE:
		case JREC_ONLINE:
			j->clientid = rd_str(&r);
			j->seq = rd_varint(&r);
			if(!j->clientid){
				return -1;
			}
			return rd_done(&r);
	}
	return -1;
}

void record_encode_tally(struct buf *b, const struct rec_tally *t)
{
	buf_put_varint(b, t->count);
	buf_put_varint(b, t->bytes);
	put_svarint(b, t->earliest_expiry);
}

int record_decode_tally(const uint8_t *p, size_t n, struct rec_tally *t)
{
	struct reader r = {p, n, false};

	t->count = rd_varint(&r);
	t->bytes = rd_varint(&r);
	t->earliest_expiry = rd_svarint(&r);
	return rd_done(&r);
}

void record_encode_dedup(struct buf *b, const struct rec_dedup *d)
{
	put_svarint(b, d->expiry);
	buf_put_str(b, d->identity);
	buf_put_bytes(b, d->msg_id.data, d->msg_id.len, true);
}

int record_decode_dedup(const uint8_t *p, size_t n, struct rec_dedup *d)
{
	struct reader r = {p, n, false};

	d->expiry = rd_svarint(&r);
	d->identity = rd_str(&r);
	d->msg_id = rd_bytes(&r);
	if(!d->identity || !d->msg_id.data){
		return -1;
	}
	return rd_done(&r);
}
