/* The store's write buffer: every store_* change is encoded into st->ops
 * (OP_HEADER | key | value) and nothing touches LMDB until a commit. A queue
 * entry's operation replaces its earlier one still in the buffer; a body's
 * references from the same buffer are counted into its record. */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

/* Forgets the pending queue entries and the new bodies: st->ops was handed
 * over or consumed. */
void store_pending_forget(struct store *st)
{
	st->pend_n = 0;
	if(++st->pend_gen == 0){
		if(st->pend){
			memset(st->pend, 0, st->pend_cap * sizeof(*st->pend));
		}
		st->pend_gen = 1;
	}
	u64map_clear(&st->newb);
}

/* Notes a body put at off. Without memory it is simply not noted: its
 * record then says 0 and its count goes to refs. */
static void newb_add(struct store *st, uint64_t store_id, size_t off)
{
	struct new_body *b;

	if(off >= UINT32_MAX || u64map_get(&st->newb, store_id)){
		return;
	}
	b = u64map_add(&st->newb, store_id);
	if(b){
		b->off = (uint32_t)off;
	}
}

static void newb_count(struct store *st, uint64_t store_id, int d)
{
	struct new_body *b = u64map_get(&st->newb, store_id);

	if(b){
		b->refs = (uint32_t)((int64_t)b->refs + d);
	}
}

/* Writes each new body's count into its plaintext (the record's last
 * bytes) and its put's ref, before the buffer leaves this thread to be
 * sealed. */
void store_newb_patch(struct store *st)
{
	struct new_body *b;

	for(size_t c = 0; (b = u64map_next(&st->newb, &c, NULL));){
		if(b->off < st->ops_patched){
			continue;
		}
		uint8_t *p = st->ops.data + b->off;
		size_t klen = p[2], vlen = get_le32(p + 3);
		put_be32(p + OP_HEADER + klen + vlen - SEAL_TAG_LEN - RECORD_REFS0_LEN, b->refs);
		put_be64(p + 7, b->refs);
	}
	st->ops_patched = st->ops.len;
}

static size_t pending_hash(const uint8_t *key, size_t cap)
{
	uint64_t h = get_be64(key) ^ (get_be64(key + HASH_LEN) * 0x9E3779B97F4A7C15ull);
	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static struct pending *pending_probe(struct pending *t, size_t cap, uint32_t gen, const uint8_t *key)
{
	for(size_t i = pending_hash(key, cap);; i = (i + 1) & (cap - 1)){
		if(t[i].gen != gen || memcmp(t[i].key, key, QUEUE_KEY_LEN) == 0){
			return &t[i];
		}
	}
}

/* The slot of key: its entry (gen current) or a free slot for it; NULL when
 * the table cannot grow (then nothing is cancelled). */
static struct pending *pending_slot(struct store *st, const uint8_t *key)
{
	if((st->pend_n + 1) * 2 > st->pend_cap){
		size_t cap = st->pend_cap ? st->pend_cap * 2 : 1024;
		struct pending *t = calloc(cap, sizeof(*t));
		if(!t){
			return NULL;
		}
		for(size_t i = 0; i < st->pend_cap; i++){
			if(st->pend[i].gen == st->pend_gen){
				struct pending *d = pending_probe(t, cap, 1, st->pend[i].key);
				*d = st->pend[i];
				d->gen = 1;
			}
		}
		free(st->pend);
		st->pend = t;
		st->pend_cap = cap;
		st->pend_gen = 1;
	}
	return pending_probe(st->pend, st->pend_cap, st->pend_gen, key);
}

void store_op_header(uint8_t *p, enum op op, enum store_db db, size_t klen, size_t vlen, uint64_t ref)
{
	p[0] = (uint8_t)op;
	p[1] = (uint8_t)db;
	p[2] = (uint8_t)klen;
	put_le32(p + 3, (uint32_t)vlen);
	put_be64(p + 7, ref);
}

static void op_void(struct store *st, uint32_t off)
{
	const uint8_t *p = st->ops.data + off;

	if(p[0] == OP_APPEND && p[1] == DB_QUEUE){
		newb_count(st, get_be64(p + 7), -1);
	}
	st->ops.data[off] = OP_NOP;
	st->n_ops--;
}

/* Appends one buffered operation; for OP_PUT and OP_APPEND the plaintext in
 * st->pt goes where store_ops_seal seals it in place. */
static int op_append_ref(struct store *st, enum op op, enum store_db db, const uint8_t *key, size_t klen,
		uint64_t ref)
{
	size_t vlen = 0;
	uint8_t *p;

	if(st->read_only){
		return STORE_ERR_READONLY;
	}
	if(op == OP_PUT || op == OP_APPEND){
		if(st->pt.err){
			return STORE_ERR_NOMEM;
		}
		vlen = st->pt.len + SEAL_OVERHEAD;
	}
	p = buf_extend(&st->ops, OP_HEADER + klen + vlen);
	if(!p){
		st->ops.err = false;
		return STORE_ERR_NOMEM;
	}
	store_op_header(p, op, db, klen, vlen, ref);
	if(db == DB_QUEUE && klen >= 2){
		unsigned bit = (unsigned)key[0] << 8 | key[1];
		st->qtouch[bit >> 3] |= (uint8_t)(1u << (bit & 7));
	}
	if(klen){
		memcpy(p + OP_HEADER, key, klen);
	}
	if(vlen){
		memcpy(p + OP_HEADER + klen + SEAL_HEADER_LEN, st->pt.data, st->pt.len);
	}
	st->n_ops++;
	return STORE_OK;
}

/* The removal of a queue entry, whose value (4 bytes, not sealed) is the
 * refs0 + 1 of its body when the hand-back read it (0: none). */
static int op_append_removal(struct store *st, const uint8_t *key, uint64_t store_id, uint32_t hint)
{
	size_t vlen = hint ? 4 : 0;
	uint8_t *p;

	if(st->read_only){
		return STORE_ERR_READONLY;
	}
	p = buf_extend(&st->ops, OP_HEADER + QUEUE_KEY_LEN + vlen);
	if(!p){
		st->ops.err = false;
		return STORE_ERR_NOMEM;
	}
	store_op_header(p, OP_DEL, DB_QUEUE, QUEUE_KEY_LEN, vlen, store_id);
	unsigned bit = (unsigned)key[0] << 8 | key[1];
	st->qtouch[bit >> 3] |= (uint8_t)(1u << (bit & 7));
	memcpy(p + OP_HEADER, key, QUEUE_KEY_LEN);
	if(hint){
		put_be32(p + OP_HEADER + QUEUE_KEY_LEN, hint);
	}
	st->n_ops++;
	return STORE_OK;
}

int store_op_append(struct store *st, enum op op, enum store_db db, const uint8_t *key, size_t klen)
{
	return op_append_ref(st, op, db, key, klen, 0);
}

/* Seals the values of ops from *sealed on, in place, on the thread about to
 * commit them (the writer, so the broker's thread does no sealing): a value
 * that a later operation replaced or cancelled meanwhile (OP_NOP) is wiped
 * instead. Returns 0 or SEAL_RC_BASE + the seal error. */
int store_ops_seal(struct buf *ops, size_t *sealed, struct seal *s)
{
	uint8_t ad[1 + KEY_MAX];
	uint8_t *p = ops->data + *sealed, *end = ops->data + ops->len;

	while(p < end){
		size_t klen = p[2];
		size_t vlen = get_le32(p + 3);
		uint8_t *v = p + OP_HEADER + klen;

		if(p[0] == OP_PUT || p[0] == OP_APPEND){
			store_ad((enum store_db)p[1], p + OP_HEADER, klen, ad);
			int rc = seal_record(s, ad, 1 + klen, v + SEAL_HEADER_LEN, vlen - SEAL_OVERHEAD, v);
			if(rc != SEAL_OK){
				return SEAL_RC_BASE + rc;
			}
		}else if(p[0] == OP_NOP){
			seal_wipe(v, vlen);
		}
		p = v + vlen;
		*sealed = (size_t)(p - ops->data);
	}
	return 0;
}

int store_msg_put(struct store *st, uint64_t store_id, const struct rec_base_msg *m)
{
	uint8_t key[8];

	struct rec_base_msg body = *m;
	size_t off = st->ops.len;
	int rc;

	/* Its count is what this buffer adds (store_newb_patch), not the caller's. */
	body.refs0 = 0;
	put_be64(key, store_id);
	buf_reset(&st->pt);
	record_encode_base_msg(&st->pt, &body);
	rc = store_op_append(st, OP_PUT, DB_MSGS, key, sizeof(key));
	if(rc == STORE_OK){
		newb_add(st, store_id, off);
	}
	return rc;
}

int store_msg_release(struct store *st, uint64_t store_id)
{
	uint8_t key[8];

	put_be64(key, store_id);
	return store_op_append(st, OP_DEL, DB_MSGS, key, sizeof(key));
}

int store_session_put(struct store *st, const struct rec_session *s)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_CLIENT, s->clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	record_encode_session(&st->pt, s);
	return store_op_append(st, OP_PUT, DB_SESSIONS, key, sizeof(key));
}

int store_session_delete(struct store *st, const char *clientid)
{
	uint8_t key[HASH_LEN];
	int rc;

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	rc = store_op_append(st, OP_DEL, DB_SESSIONS, key, sizeof(key));
	if(!rc){
		rc = store_op_append(st, OP_DEL_PREFIX, DB_SUBS, key, sizeof(key));
	}
	if(!rc){
		rc = store_op_append(st, OP_DEL, DB_ONLINE, key, sizeof(key));
	}
	if(!rc){
		rc = store_op_append(st, OP_DEL_PREFIX, DB_QUEUE, key, sizeof(key));
		store_pending_forget(st);
	}
	if(!rc){
		rc = store_op_append(st, OP_DEL, DB_WILLS, key, sizeof(key));
	}
	if(!rc){
		rc = store_op_append(st, OP_DEL, DB_SEQNO, key, sizeof(key));
	}
	if(!rc){
		rc = store_op_append(st, OP_DEL, DB_TALLY, key, sizeof(key));
	}
	return rc;
}

int store_seqno_put(struct store *st, const char *clientid, uint64_t last)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	buf_put_varint(&st->pt, last);
	return store_op_append(st, OP_PUT, DB_SEQNO, key, sizeof(key));
}

int store_tally_put(struct store *st, const char *clientid, const struct rec_tally *t)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	if(!t->count){
		return store_op_append(st, OP_DEL, DB_TALLY, key, sizeof(key));
	}
	buf_reset(&st->pt);
	record_encode_tally(&st->pt, t);
	return store_op_append(st, OP_PUT, DB_TALLY, key, sizeof(key));
}

bool store_tallies_kept(const struct store *st)
{
	return st->tallies_epoch && st->tallies_epoch + (st->read_only ? 0 : 1) == st->epoch;
}

int store_tallies_claim(struct store *st, bool kept)
{
	static const char name[] = "tallies";
	uint8_t be[4];

	put_be32(be, kept ? st->epoch : 0);
	buf_reset(&st->pt);
	buf_put(&st->pt, be, sizeof(be));
	return store_op_append(st, OP_PUT, DB_META, (const uint8_t *)name, sizeof(name) - 1);
}

static int sub_key(struct store *st, const char *clientid, const char *filter, uint8_t *key)
{
	if(store_hash_name(st, H_CLIENT, clientid, key) || store_hash_name(st, H_FILTER, filter, key + HASH_LEN)){
		return STORE_ERR_CRYPTO;
	}
	return STORE_OK;
}

int store_sub_put(struct store *st, const struct rec_sub *s)
{
	uint8_t key[2 * HASH_LEN];

	if(sub_key(st, s->clientid, s->topic_filter, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	record_encode_sub(&st->pt, s);
	return store_op_append(st, OP_PUT, DB_SUBS, key, sizeof(key));
}

int store_sub_delete(struct store *st, const char *clientid, const char *topic_filter)
{
	uint8_t key[2 * HASH_LEN];

	if(sub_key(st, clientid, topic_filter, key)){
		return STORE_ERR_CRYPTO;
	}
	return store_op_append(st, OP_DEL, DB_SUBS, key, sizeof(key));
}

uint64_t store_queue_seq(const struct store *st, uint64_t cmsg_id)
{
	if(cmsg_id >> STORE_SEQ_SHIFT){
		return cmsg_id;
	}
	return ((uint64_t)st->epoch << STORE_SEQ_SHIFT) | cmsg_id;
}

static int queue_key(struct store *st, const char *clientid, uint64_t cmsg_id, uint8_t *key)
{
	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	put_be64(key + HASH_LEN, store_queue_seq(st, cmsg_id));
	return STORE_OK;
}

/* Buffers op (OP_APPEND, OP_PUT or OP_DEL) on a queue entry in place of the
 * entry's earlier operation in this buffer: what a later one replaces is
 * not written, and an entry added and removed again is neither.
 *
 * A long buffer is committed in several transactions, and the journal is
 * replayed from the last committed OP_MARK: an entry moved past a mark
 * could be in no committed transaction and not replayed either. So a write
 * replaces only an operation after the last mark; a delete may cancel an
 * earlier one (the entry was acknowledged: committing its absence early
 * loses nothing). */
static int queue_op(struct store *st, enum op op, const uint8_t *key, uint64_t store_id, uint32_t hint)
{
	struct pending *e = pending_slot(st, key);
	bool known = e && e->gen == st->pend_gen;
	bool fresh = known ? e->fresh : op == OP_APPEND;
	uint32_t prev = known ? e->off : PENDING_NONE;
	size_t off = st->ops.len;

	if(op != OP_DEL && prev != PENDING_NONE && prev < st->ops_marked){
		prev = PENDING_NONE;
		fresh = false;
	}

	if(op != OP_DEL || !fresh){
		int rc = op == OP_DEL ? op_append_removal(st, key, store_id, hint)
			: op_append_ref(st, fresh ? OP_APPEND : OP_PUT, DB_QUEUE, key, QUEUE_KEY_LEN, store_id);
		if(rc){
			return rc;
		}
		if(op != OP_DEL && fresh){
			newb_count(st, store_id, 1);
		}
	}
	if(prev != PENDING_NONE){
		op_void(st, prev);
	}
	if(!e){
		return STORE_OK;
	}
	if(!known){
		memcpy(e->key, key, QUEUE_KEY_LEN);
		e->gen = st->pend_gen;
		st->pend_n++;
	}
	if(op == OP_DEL){
		e->fresh = true;
		e->off = PENDING_NONE;
	}else if(off < PENDING_NONE){
		e->fresh = fresh;
		e->off = (uint32_t)off;
	}else{
		/* Past what an entry can point at: no longer cancelled. */
		e->fresh = false;
		e->off = PENDING_NONE;
	}
	return STORE_OK;
}

static int queue_put(struct store *st, enum op op, const char *clientid, uint64_t cmsg_id, const struct rec_queue *q)
{
	uint8_t key[HASH_LEN + 8];

	if(queue_key(st, clientid, cmsg_id, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	record_encode_queue(&st->pt, q);
	return queue_op(st, op, key, q->store_id, 0);
}

int store_queue_append(struct store *st, const char *clientid, uint64_t cmsg_id, const struct rec_queue *q)
{
	return queue_put(st, OP_APPEND, clientid, cmsg_id, q);
}

int store_queue_update(struct store *st, const char *clientid, uint64_t cmsg_id, const struct rec_queue *q)
{
	return queue_put(st, OP_PUT, clientid, cmsg_id, q);
}

int store_queue_remove(struct store *st, const char *clientid, uint64_t cmsg_id, uint64_t store_id)
{
	uint8_t key[HASH_LEN + 8];

	if(queue_key(st, clientid, cmsg_id, key)){
		return STORE_ERR_CRYPTO;
	}
	const uint32_t *hint = store_id ? u64map_get(&st->refs0_read, store_id) : NULL;
	return queue_op(st, OP_DEL, key, store_id, hint ? *hint : 0);
}

int store_retain_set(struct store *st, const char *topic, uint64_t store_id)
{
	struct rec_retain r = {topic, store_id};
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_TOPIC, topic, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	record_encode_retain(&st->pt, &r);
	/* Not counted into refs0: the entry it replaces is known to the writer only. */
	return op_append_ref(st, OP_PUT, DB_RETAINED, key, sizeof(key), store_id);
}

int store_retain_delete(struct store *st, const char *topic)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_TOPIC, topic, key)){
		return STORE_ERR_CRYPTO;
	}
	return store_op_append(st, OP_DEL, DB_RETAINED, key, sizeof(key));
}

int store_dedup_key(struct store *st, const struct rec_dedup *d, uint8_t key[HASH_LEN])
{
	struct buf b = {0};
	int rc;

	buf_put_str(&b, d->identity);
	buf_put_bytes(&b, d->msg_id.data, d->msg_id.len, true);
	rc = b.err || seal_hash(st->seal, H_DEDUP, b.data, b.len, key) != SEAL_OK ? STORE_ERR_CRYPTO : STORE_OK;
	buf_free(&b);
	return rc;
}

int store_dedup_put(struct store *st, const uint8_t key[HASH_LEN], const struct rec_dedup *d)
{
	buf_reset(&st->pt);
	record_encode_dedup(&st->pt, d);
	return store_op_append(st, OP_PUT, DB_DEDUP, key, HASH_LEN);
}

int store_dedup_delete(struct store *st, const uint8_t key[HASH_LEN])
{
	return store_op_append(st, OP_DEL, DB_DEDUP, key, HASH_LEN);
}

int store_will_put(struct store *st, const struct rec_will *w)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_CLIENT, w->clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	record_encode_will(&st->pt, w);
	return store_op_append(st, OP_PUT, DB_WILLS, key, sizeof(key));
}

int store_will_delete(struct store *st, const char *clientid)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return store_op_append(st, OP_DEL, DB_WILLS, key, sizeof(key));
}

int store_will_delete_all(struct store *st)
{
	return store_op_append(st, OP_CLEAR, DB_WILLS, NULL, 0);
}

int store_session_set_online(struct store *st, const char *clientid, bool online)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	if(!online){
		return store_op_append(st, OP_DEL, DB_ONLINE, key, sizeof(key));
	}
	buf_reset(&st->pt);
	buf_put_str(&st->pt, clientid);
	return store_op_append(st, OP_PUT, DB_ONLINE, key, sizeof(key));
}

int store_online_clear(struct store *st)
{
	return store_op_append(st, OP_CLEAR, DB_ONLINE, NULL, 0);
}
