/* The LMDB store: schema, sealed reads and writes, one transaction per commit. */
#include "store.h"
#include "bytes.h"

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define KEY_MAX (2 * HASH_LEN + 8)
/* op (1) | database (1) | key length (1) | value length (4, LE) | ref (8, BE):
 * ref is the message body a queue entry or retained entry refers to (its
 * value is sealed by then), 0 for other records. */
#define OP_HEADER 15
/* Well below LMDB's bound on the dirty pages of one write transaction. */
#define OPS_PER_TXN 20000
/* A transaction of more operations leaves enough of LMDB's page buffers
 * behind to be worth opening the environment again (store_unmap_pages). */
#define RECYCLE_OPS 1000

/* Internal results carry LMDB's codes and errno values as they are, and a
 * seal error as SEAL_RC_BASE + its code. */
#define SEAL_RC_BASE 1000

/* OP_MARK carries a journal lsn (8 bytes, not sealed) that becomes the
 * committed mark when its transaction commits; the sealed meta record that
 * makes it durable is an OP_PUT just before it. */
enum op { OP_PUT = 1, OP_DEL, OP_DEL_PREFIX, OP_CLEAR, OP_MARK, OP_APPEND, OP_NOP };

/* Name spaces of the index hash. */
enum { H_CLIENT = 'c', H_TOPIC = 't', H_FILTER = 'f', H_DEDUP = 'd' };

static const char *const db_names[DB_COUNT] = {
	"meta", "msgs", "queues", "sessions", "subs", "retained", "wills", "online", "dedup", "seqno", "refs"
};

/* The queues database is MDB_DUPSORT: the LMDB key is the client's hash and
 * each entry a duplicate that starts with its 8-byte sequence number, so a
 * client's queue fills its pages in order however clients interleave (one
 * LMDB key per entry, schema 1, left the pages about half full). Entries
 * are sealed with the logical key, client hash || sequence number, as
 * associated data, as in schema 1. */
#define QUEUE_SEQ_LEN 8
#define QUEUE_KEY_LEN (HASH_LEN + QUEUE_SEQ_LEN)

/* The last buffered operation on a queue entry, while it is still in
 * st->ops: a delivery that is added, updated and acknowledged before the
 * next commit then costs the database nothing. */
struct pending {
	uint8_t key[QUEUE_KEY_LEN];
	uint32_t gen;    /* the slot is in use in generation st->pend_gen only */
	uint32_t off;    /* the entry's live operation in st->ops, or PENDING_NONE */
	bool fresh;      /* the entry is not in the database */
};
#define PENDING_NONE UINT32_MAX

/* How one transaction changes the reference count of one body (refs). */
struct ref_delta {
	uint64_t store_id;
	int64_t delta;
	int64_t refs0;   /* with created: the count the body's record holds */
	uint32_t gen;    /* in use in generation st->refd_gen only */
	bool released;   /* the broker released the body (store_msg_release) */
	bool created;    /* the body was put in this transaction */
};

/* A body put in the buffered operations: the stored entries that refer to
 * it from the same buffer are counted into its record (refs0) when it is
 * sealed, so a body whose count never changes needs no refs record. */
struct new_body {
	uint64_t store_id;
	uint32_t off;    /* its put in st->ops */
	uint32_t refs;
	uint32_t gen;    /* in use in generation st->newb_gen only */
};
static const char legacy_queue_name[] = "queue"; /* schema 1 */

static unsigned db_flags(int db)
{
	return db == DB_QUEUE ? MDB_DUPSORT : 0;
}

static const char key_check_text[] = "persist-lmdb key check v1";

#define HASH_CACHE_SLOTS 1024
#define USED_MEASURE_MS 100
#define COMMIT_RING 1024

struct hash_slot {
	char *name;
	size_t len;
	uint8_t kind;
	uint8_t hash[HASH_LEN];
};

struct store {
	MDB_env *env;
	MDB_dbi dbi[DB_COUNT];
	struct seal *seal;
	store_log_fn log;
	char *path;
	bool read_only;
	bool upgrade_queues; /* schema 1: the queues are still in legacy_queue_name */
	bool upgrade_refs;   /* schema 1 or 2: no reference counts yet */
	bool upgraded_seal;  /* this open converted schema 3 to 4 */
	uint32_t epoch;
	size_t map_size;
	/* Buffered writes: OP_HEADER | key | value, applied by store_commit. */
	struct buf ops;
	uint64_t n_ops;
	size_t ops_patched;          /* new bodies before this offset have their count */
	size_t ops_sealed;           /* sealed part, left by a failed commit before the writer runs */
	size_t ops_marked;           /* ops before this offset are before the last OP_MARK */
	struct seal *wseal;          /* the writer's: seals what it commits, opens counts */
	struct ref_delta *refd;      /* the transaction's count changes, open addressing */
	size_t refd_cap, refd_n;
	uint32_t refd_gen;
	struct buf wpt;              /* plaintext scratch of the transaction */
	struct new_body *newb;       /* open addressing, newb_cap a power of two */
	size_t newb_cap, newb_n;
	uint32_t newb_gen;           /* never 0 once newb exists */
	struct pending *pend;        /* open addressing, pend_cap a power of two */
	size_t pend_cap, pend_n;
	uint32_t pend_gen;
	struct buf pt;
	time_t last_error_log;
	uint64_t map_grows_logged;
	int lock_fd;                 /* writer.lock, held by a writable open */
	uint64_t commit_us[COMMIT_RING]; /* durations of the last commits */
	uint64_t n_commit_us;
	/* The writer thread, started by the first store_commit_async. */
	bool writer_started;
	pthread_t writer;
	pthread_mutex_t lock;        /* guards what the writer shares: below, stats, map_size */
	pthread_cond_t wake, idle;
	struct buf wops;             /* operations handed to the writer */
	size_t wops_sealed;          /* wops before this offset are sealed, after it plain */
	uint64_t n_wops;
	bool writer_busy, writer_stop, sync_wanted;
	int writer_rc, last_commit_rc;
	uint64_t journal_committed;  /* the last committed OP_MARK */
	uint64_t journal_durable;    /* the last OP_MARK known to be on the disk */
	bool disk_full;              /* the last commit found no space on the device */
	uint64_t used_measured_ms;   /* when stats.used_bytes was measured (monotonic); lock */
	bool used_stale;             /* commits since were not measured; lock */
	bool no_sync;                /* commits leave syncing to store_sync_async */
	bool lazy;                   /* STORE_LAZY */
	atomic_bool marked;          /* a journal mark was ever buffered: transactions end at marks */
	bool short_file;             /* data.mdb ends before its last page number (check_size) */
	long long file_bytes;        /* its size at open */
	atomic_bool unmap_wanted;    /* store_unmap_pages found the writer busy */
	uint64_t txn_ops_peak;       /* most operations of one commit since the environment opened; txn_lock */
	pthread_mutex_t txn_lock;    /* held by a write transaction or a read walk: a map
	                                resize needs neither to be active in this process */
	struct store_stats stats;
	struct opener *opener;       /* started by the first walk longer than a batch */
	bool opener_failed;
	struct hash_slot hash_cache[HASH_CACHE_SLOTS];
};

static void logf_(struct store *st, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void logf_(struct store *st, int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if(!st->log){
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	st->log(level, msg);
}

/* The same few names (a subscriber's client id for every message it is
 * queued) are hashed over and over: remember the last hash of each slot. */
static uint32_t name_slot(uint8_t kind, const char *name, size_t len)
{
	uint32_t h = 2166136261u ^ kind;

	for(size_t i = 0; i < len; i++){
		h = (h ^ (uint8_t)name[i]) * 16777619u;
	}
	return h % HASH_CACHE_SLOTS;
}

static int hash_name(struct store *st, uint8_t kind, const char *name, uint8_t *out)
{
	size_t len = strlen(name);
	struct hash_slot *slot = &st->hash_cache[name_slot(kind, name, len)];
	char *copy;

	if(slot->name && slot->kind == kind && slot->len == len && !memcmp(slot->name, name, len)){
		memcpy(out, slot->hash, HASH_LEN);
		return STORE_OK;
	}
	if(seal_hash(st->seal, kind, name, len, out) != SEAL_OK){
		return STORE_ERR_CRYPTO;
	}
	copy = malloc(len + 1);
	if(copy){
		memcpy(copy, name, len + 1);
		free(slot->name);
		slot->name = copy;
		slot->len = len;
		slot->kind = kind;
		memcpy(slot->hash, out, HASH_LEN);
	}
	return STORE_OK;
}

static void hash_cache_free(struct store *st)
{
	for(size_t i = 0; i < HASH_CACHE_SLOTS; i++){
		if(st->hash_cache[i].name){
			seal_wipe(st->hash_cache[i].name, st->hash_cache[i].len);
			free(st->hash_cache[i].name);
		}
	}
	seal_wipe(st->hash_cache, sizeof(st->hash_cache));
}

size_t store_ad(enum store_db db, const uint8_t *key, size_t klen, uint8_t *ad)
{
	ad[0] = (uint8_t)db;
	memcpy(ad + 1, key, klen);
	return 1 + klen;
}

static void make_ad(uint8_t *ad, enum store_db db, const uint8_t *key, size_t klen)
{
	store_ad(db, key, klen, ad);
}

/* Forgets the pending queue entries: st->ops was handed over or consumed. */
static void pending_forget(struct store *st)
{
	st->pend_n = 0;
	if(++st->pend_gen == 0){
		memset(st->pend, 0, st->pend_cap * sizeof(*st->pend));
		st->pend_gen = 1;
	}
	st->newb_n = 0;
	if(++st->newb_gen == 0){
		memset(st->newb, 0, st->newb_cap * sizeof(*st->newb));
		st->newb_gen = 1;
	}
}

static size_t newb_hash(uint64_t store_id, size_t cap)
{
	return (size_t)(store_id * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
}

/* The buffered new body store_id, or NULL. */
static struct new_body *newb_find(struct store *st, uint64_t store_id)
{
	if(!st->newb_n){
		return NULL;
	}
	for(size_t i = newb_hash(store_id, st->newb_cap);; i = (i + 1) & (st->newb_cap - 1)){
		struct new_body *b = &st->newb[i];
		if(b->gen != st->newb_gen){
			return NULL;
		}
		if(b->store_id == store_id){
			return b;
		}
	}
}

/* Notes a body put at off. Without memory it is simply not noted: its
 * record then says 0 and its count goes to refs. */
static void newb_add(struct store *st, uint64_t store_id, size_t off)
{
	struct new_body *b;

	if(off >= UINT32_MAX || newb_find(st, store_id)){
		return;
	}
	if((st->newb_n + 1) * 2 > st->newb_cap){
		size_t cap = st->newb_cap ? st->newb_cap * 2 : 256;
		struct new_body *t = calloc(cap, sizeof(*t));
		if(!t){
			return;
		}
		for(size_t i = 0; i < st->newb_cap; i++){
			if(st->newb[i].gen == st->newb_gen){
				size_t j = newb_hash(st->newb[i].store_id, cap);
				while(t[j].gen == st->newb_gen){
					j = (j + 1) & (cap - 1);
				}
				t[j] = st->newb[i];
			}
		}
		free(st->newb);
		st->newb = t;
		st->newb_cap = cap;
		if(st->newb_gen == 0){
			st->newb_gen = 1;
		}
	}
	size_t i = newb_hash(store_id, st->newb_cap);
	while(st->newb[i].gen == st->newb_gen){
		i = (i + 1) & (st->newb_cap - 1);
	}
	b = &st->newb[i];
	b->store_id = store_id;
	b->off = (uint32_t)off;
	b->refs = 0;
	b->gen = st->newb_gen;
	st->newb_n++;
}

static void newb_count(struct store *st, uint64_t store_id, int d)
{
	struct new_body *b = newb_find(st, store_id);

	if(b){
		b->refs = (uint32_t)((int64_t)b->refs + d);
	}
}

/* Writes each new body's count into its plaintext (the record's last
 * bytes) and its put's ref, before the buffer leaves this thread to be
 * sealed. */
static void newb_patch(struct store *st)
{
	for(size_t i = 0; st->newb_n && i < st->newb_cap; i++){
		struct new_body *b = &st->newb[i];
		if(b->gen != st->newb_gen || b->off < st->ops_patched){
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

static void op_header(uint8_t *p, enum op op, enum store_db db, size_t klen, size_t vlen, uint64_t ref)
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
 * st->pt goes where ops_seal seals it in place. */
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
	op_header(p, op, db, klen, vlen, ref);
	if(klen){
		memcpy(p + OP_HEADER, key, klen);
	}
	if(vlen){
		memcpy(p + OP_HEADER + klen + SEAL_HEADER_LEN, st->pt.data, st->pt.len);
	}
	st->n_ops++;
	return STORE_OK;
}

static int op_append(struct store *st, enum op op, enum store_db db, const uint8_t *key, size_t klen)
{
	return op_append_ref(st, op, db, key, klen, 0);
}

/* Seals the values of ops from *sealed on, in place, on the thread about to
 * commit them (the writer, so the broker's thread does no sealing): a value
 * that a later operation replaced or cancelled meanwhile (OP_NOP) is wiped
 * instead. Returns 0 or SEAL_RC_BASE + the seal error. */
static int ops_seal(struct buf *ops, size_t *sealed, struct seal *s)
{
	uint8_t ad[1 + KEY_MAX];
	uint8_t *p = ops->data + *sealed, *end = ops->data + ops->len;

	while(p < end){
		size_t klen = p[2];
		size_t vlen = get_le32(p + 3);
		uint8_t *v = p + OP_HEADER + klen;

		if(p[0] == OP_PUT || p[0] == OP_APPEND){
			make_ad(ad, (enum store_db)p[1], p + OP_HEADER, klen);
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

	/* Its count is what this buffer adds (newb_patch), not the caller's. */
	body.refs0 = 0;
	put_be64(key, store_id);
	buf_reset(&st->pt);
	record_encode_base_msg(&st->pt, &body);
	rc = op_append(st, OP_PUT, DB_MSGS, key, sizeof(key));
	if(rc == STORE_OK){
		newb_add(st, store_id, off);
	}
	return rc;
}

int store_msg_release(struct store *st, uint64_t store_id)
{
	uint8_t key[8];

	put_be64(key, store_id);
	return op_append(st, OP_DEL, DB_MSGS, key, sizeof(key));
}

int store_session_put(struct store *st, const struct rec_session *s)
{
	uint8_t key[HASH_LEN];

	if(hash_name(st, H_CLIENT, s->clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	record_encode_session(&st->pt, s);
	return op_append(st, OP_PUT, DB_SESSIONS, key, sizeof(key));
}

int store_session_delete(struct store *st, const char *clientid)
{
	uint8_t key[HASH_LEN];
	int rc;

	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	rc = op_append(st, OP_DEL, DB_SESSIONS, key, sizeof(key));
	if(!rc){
		rc = op_append(st, OP_DEL_PREFIX, DB_SUBS, key, sizeof(key));
	}
	if(!rc){
		rc = op_append(st, OP_DEL, DB_ONLINE, key, sizeof(key));
	}
	if(!rc){
		rc = op_append(st, OP_DEL_PREFIX, DB_QUEUE, key, sizeof(key));
		pending_forget(st);
	}
	if(!rc){
		rc = op_append(st, OP_DEL, DB_WILLS, key, sizeof(key));
	}
	if(!rc){
		rc = op_append(st, OP_DEL, DB_SEQNO, key, sizeof(key));
	}
	return rc;
}

int store_seqno_put(struct store *st, const char *clientid, uint64_t last)
{
	uint8_t key[HASH_LEN];

	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	buf_put_varint(&st->pt, last);
	return op_append(st, OP_PUT, DB_SEQNO, key, sizeof(key));
}

static int sub_key(struct store *st, const char *clientid, const char *filter, uint8_t *key)
{
	if(hash_name(st, H_CLIENT, clientid, key) || hash_name(st, H_FILTER, filter, key + HASH_LEN)){
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
	return op_append(st, OP_PUT, DB_SUBS, key, sizeof(key));
}

int store_sub_delete(struct store *st, const char *clientid, const char *topic_filter)
{
	uint8_t key[2 * HASH_LEN];

	if(sub_key(st, clientid, topic_filter, key)){
		return STORE_ERR_CRYPTO;
	}
	return op_append(st, OP_DEL, DB_SUBS, key, sizeof(key));
}

static uint64_t queue_seq(const struct store *st, uint64_t cmsg_id)
{
	if(cmsg_id >> STORE_SEQ_SHIFT){
		return cmsg_id;
	}
	return ((uint64_t)st->epoch << STORE_SEQ_SHIFT) | cmsg_id;
}

static int queue_key(struct store *st, const char *clientid, uint64_t cmsg_id, uint8_t *key)
{
	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	put_be64(key + HASH_LEN, queue_seq(st, cmsg_id));
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
static int queue_op(struct store *st, enum op op, const uint8_t *key, uint64_t store_id)
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
		int rc = op_append_ref(st, op == OP_DEL ? OP_DEL : fresh ? OP_APPEND : OP_PUT, DB_QUEUE, key,
				QUEUE_KEY_LEN, store_id);
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
	return queue_op(st, op, key, q->store_id);
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
	return queue_op(st, OP_DEL, key, store_id);
}

int store_retain_set(struct store *st, const char *topic, uint64_t store_id)
{
	struct rec_retain r = {topic, store_id};
	uint8_t key[HASH_LEN];

	if(hash_name(st, H_TOPIC, topic, key)){
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

	if(hash_name(st, H_TOPIC, topic, key)){
		return STORE_ERR_CRYPTO;
	}
	return op_append(st, OP_DEL, DB_RETAINED, key, sizeof(key));
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
	return op_append(st, OP_PUT, DB_DEDUP, key, HASH_LEN);
}

int store_dedup_delete(struct store *st, const uint8_t key[HASH_LEN])
{
	return op_append(st, OP_DEL, DB_DEDUP, key, HASH_LEN);
}

int store_will_put(struct store *st, const struct rec_will *w)
{
	uint8_t key[HASH_LEN];

	if(hash_name(st, H_CLIENT, w->clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	buf_reset(&st->pt);
	record_encode_will(&st->pt, w);
	return op_append(st, OP_PUT, DB_WILLS, key, sizeof(key));
}

int store_will_delete(struct store *st, const char *clientid)
{
	uint8_t key[HASH_LEN];

	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return op_append(st, OP_DEL, DB_WILLS, key, sizeof(key));
}

int store_will_delete_all(struct store *st)
{
	return op_append(st, OP_CLEAR, DB_WILLS, NULL, 0);
}

int store_session_set_online(struct store *st, const char *clientid, bool online)
{
	uint8_t key[HASH_LEN];

	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	if(!online){
		return op_append(st, OP_DEL, DB_ONLINE, key, sizeof(key));
	}
	buf_reset(&st->pt);
	buf_put_str(&st->pt, clientid);
	return op_append(st, OP_PUT, DB_ONLINE, key, sizeof(key));
}

int store_online_clear(struct store *st)
{
	return op_append(st, OP_CLEAR, DB_ONLINE, NULL, 0);
}

static int delete_prefix(MDB_txn *txn, MDB_dbi dbi, const uint8_t *prefix, size_t plen)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(txn, dbi, &cur);
	if(rc){
		return rc;
	}
	for(;;){
		k.mv_data = (void *)prefix;
		k.mv_size = plen;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if(rc == MDB_NOTFOUND){
			rc = 0;
			break;
		}
		if(rc){
			break;
		}
		if(k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0){
			break;
		}
		rc = mdb_cursor_del(cur, 0);
		if(rc){
			break;
		}
	}
	mdb_cursor_close(cur);
	return rc;
}

/* The entry of body store_id in the transaction's count changes (added
 * when missing); NULL when out of memory. refs_flush writes them. */
static struct ref_delta *refd_entry(struct store *st, uint64_t store_id)
{
	struct ref_delta *e;

	if((st->refd_n + 1) * 2 > st->refd_cap){
		size_t cap = st->refd_cap ? st->refd_cap * 2 : 256;
		struct ref_delta *t = calloc(cap, sizeof(*t));
		if(!t){
			return NULL;
		}
		for(size_t i = 0; i < st->refd_cap; i++){
			if(st->refd[i].gen == st->refd_gen){
				size_t j = (size_t)(st->refd[i].store_id * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
				while(t[j].gen == 1){
					j = (j + 1) & (cap - 1);
				}
				t[j] = st->refd[i];
				t[j].gen = 1;
			}
		}
		free(st->refd);
		st->refd = t;
		st->refd_cap = cap;
		st->refd_gen = 1;
	}
	size_t i = (size_t)(store_id * 0x9E3779B97F4A7C15ull >> 20) & (st->refd_cap - 1);
	while(st->refd[i].gen == st->refd_gen && st->refd[i].store_id != store_id){
		i = (i + 1) & (st->refd_cap - 1);
	}
	e = &st->refd[i];
	if(e->gen != st->refd_gen){
		e->gen = st->refd_gen;
		e->store_id = store_id;
		e->delta = 0;
		e->refs0 = 0;
		e->released = false;
		e->created = false;
		st->refd_n++;
	}
	return e;
}

static int refd_add(struct store *st, uint64_t store_id, int64_t delta)
{
	struct ref_delta *e = refd_entry(st, store_id);

	if(!e){
		return ENOMEM;
	}
	e->delta += delta;
	return 0;
}

/* store_msg_release: the broker holds the body no more. */
static int refd_release(struct store *st, uint64_t store_id)
{
	struct ref_delta *e = refd_entry(st, store_id);

	if(!e){
		return ENOMEM;
	}
	e->released = true;
	return 0;
}

static void refd_reset(struct store *st)
{
	st->refd_n = 0;
	if(++st->refd_gen == 0){
		memset(st->refd, 0, st->refd_cap * sizeof(*st->refd));
		st->refd_gen = 1;
	}
}

/* A stored value that could not be opened inside a transaction: its body
 * reference is unknown, so no count is lowered for it. */
static void reject_in_txn(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	st->stats.records_rejected++;
	pthread_mutex_unlock(&st->lock);
}

/* Opens a value stored under (db, key) with the writer's sealer into
 * st->wpt; false when it does not authenticate. */
static bool open_in_txn(struct store *st, enum store_db db, const uint8_t *key, size_t klen,
		const uint8_t *v, size_t vlen)
{
	uint8_t ad[1 + KEY_MAX];
	size_t len;

	if(vlen < SEAL_OVERHEAD || klen > KEY_MAX){
		return false;
	}
	buf_reset(&st->wpt);
	if(!buf_extend(&st->wpt, vlen - SEAL_OVERHEAD)){
		st->wpt.err = false;
		return false;
	}
	make_ad(ad, db, key, klen);
	return seal_open(st->wseal, ad, 1 + klen, v, vlen, st->wpt.data, &len) == SEAL_OK;
}

/* The body a stored queue entry (key: the logical key; v: the duplicate,
 * sequence number first) refers to; the count is left alone when it cannot
 * be read. */
static int unref_queue_value(struct store *st, const uint8_t *key, const MDB_val *v)
{
	struct rec_queue q;

	if(v->mv_size < QUEUE_SEQ_LEN || !open_in_txn(st, DB_QUEUE, key, QUEUE_KEY_LEN,
			(const uint8_t *)v->mv_data + QUEUE_SEQ_LEN, v->mv_size - QUEUE_SEQ_LEN)
			|| record_decode_queue(st->wpt.data, v->mv_size - QUEUE_SEQ_LEN - SEAL_OVERHEAD, &q)){
		reject_in_txn(st);
		return 0;
	}
	return refd_add(st, q.store_id, -1);
}

/* Deletes every queue entry of a client (prefix: the client's hash),
 * lowering the counts of their bodies. */
static int queue_delete_prefix(struct store *st, MDB_txn *txn, const uint8_t *prefix, size_t plen)
{
	uint8_t key[QUEUE_KEY_LEN];
	MDB_cursor *cur;
	MDB_val k = {plen, (void *)prefix}, v;
	int rc;

	if(plen != HASH_LEN){
		return MDB_BAD_VALSIZE;
	}
	memcpy(key, prefix, HASH_LEN);
	rc = mdb_cursor_open(txn, st->dbi[DB_QUEUE], &cur);
	if(rc){
		return rc;
	}
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
	while(rc == 0){
		if(v.mv_size >= QUEUE_SEQ_LEN){
			memcpy(key + HASH_LEN, v.mv_data, QUEUE_SEQ_LEN);
			rc = unref_queue_value(st, key, &v);
		}
		if(rc == 0){
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
		}
	}
	if(rc == MDB_NOTFOUND){
		k.mv_data = (void *)prefix;
		k.mv_size = plen;
		rc = mdb_del(txn, st->dbi[DB_QUEUE], &k, NULL);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Lowers the count of the body the retained entry at key refers to, if
 * there is one. */
static int unref_retained(struct store *st, MDB_txn *txn, const MDB_val *k)
{
	struct rec_retain r;
	MDB_val v;
	int rc = mdb_get(txn, st->dbi[DB_RETAINED], (MDB_val *)k, &v);

	if(rc){
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	if(!open_in_txn(st, DB_RETAINED, k->mv_data, k->mv_size, v.mv_data, v.mv_size)
			|| record_decode_retain(st->wpt.data, v.mv_size - SEAL_OVERHEAD, &r)){
		reject_in_txn(st);
		return 0;
	}
	return refd_add(st, r.store_id, -1);
}

/* The count the record of a body not put in this transaction holds
 * (refs0): 0 without a body; when it cannot be read, a count that keeps it. */
static int body_refs0(struct store *st, MDB_txn *txn, const uint8_t *key, int64_t *out)
{
	struct rec_base_msg m;
	MDB_val k = {8, (void *)key}, v;
	int rc = mdb_get(txn, st->dbi[DB_MSGS], &k, &v);

	*out = 0;
	if(rc){
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	if(!open_in_txn(st, DB_MSGS, key, 8, v.mv_data, v.mv_size)
			|| record_decode_base_msg(st->wpt.data, v.mv_size - SEAL_OVERHEAD, &m)){
		reject_in_txn(st);
		*out = INT64_MAX / 2;
		return 0;
	}
	*out = m.refs0;
	return 0;
}

/* Writes the transaction's count changes. A body's count is its refs
 * record, or without one the refs0 of its own record; a record is written
 * only when the count differs from refs0. A count that drops to zero, or
 * stays at zero for a released body, deletes the body with its record. */
static int refs_flush(struct store *st, MDB_txn *txn)
{
	uint8_t key[8], sealed[8 + SEAL_OVERHEAD], ad[1 + 8], be[8];
	int rc = 0;

	for(size_t i = 0; rc == 0 && i < st->refd_cap; i++){
		struct ref_delta *e = &st->refd[i];
		MDB_val k = {sizeof(key), key}, v;
		int64_t count = 0, implied = -1;
		bool stored;

		if(e->gen != st->refd_gen || (e->delta == 0 && !e->released)){
			continue;
		}
		put_be64(key, e->store_id);
		rc = mdb_get(txn, st->dbi[DB_REFS], &k, &v);
		stored = rc == 0;
		if(rc == MDB_NOTFOUND){
			rc = 0;
			if(e->created){
				implied = e->refs0;
			}else{
				rc = body_refs0(st, txn, key, &count);
				implied = count;
			}
		}else if(rc){
			break;
		}else if(open_in_txn(st, DB_REFS, key, sizeof(key), v.mv_data, v.mv_size)
				&& v.mv_size == sizeof(sealed)){
			count = (int64_t)(get_be64(st->wpt.data) & INT64_MAX);
		}else{
			/* Unknown: keep the body. */
			reject_in_txn(st);
			count = INT64_MAX / 2;
		}
		if(rc){
			break;
		}
		count += e->delta;
		if(count <= 0){
			if(stored){
				rc = mdb_del(txn, st->dbi[DB_REFS], &k, NULL);
			}
			if(rc == 0){
				rc = mdb_del(txn, st->dbi[DB_MSGS], &k, NULL);
				rc = rc == MDB_NOTFOUND ? 0 : rc;
			}
			continue;
		}
		if(e->delta == 0 || count == implied){
			continue;
		}
		put_be64(be, (uint64_t)count);
		make_ad(ad, DB_REFS, key, sizeof(key));
		if(seal_record(st->wseal, ad, sizeof(ad), be, sizeof(be), sealed) != SEAL_OK){
			rc = EINVAL;
			break;
		}
		v.mv_data = sealed;
		v.mv_size = sizeof(sealed);
		rc = mdb_put(txn, st->dbi[DB_REFS], &k, &v, 0);
	}
	refd_reset(st);
	return rc;
}

/* Puts (vlen > 0) or deletes one queue entry; key is the logical key,
 * followed in memory by the sealed value when putting. An entry with the
 * same sequence number is replaced (an entry keeps its body). *curp is the
 * transaction's cursor on the queues, opened at its first use. *added is
 * set when an entry was added; a removed entry's body count is lowered
 * (removed_ref, or the body read from the entry when that is 0). */
static int queue_apply(struct store *st, MDB_txn *txn, MDB_cursor **curp, bool append, const uint8_t *key,
		size_t klen, size_t vlen, uint64_t removed_ref, bool *added)
{
	MDB_dbi dbi = st->dbi[DB_QUEUE];

	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	if(klen != QUEUE_KEY_LEN){
		return MDB_BAD_VALSIZE;
	}
	if(!*curp){
		rc = mdb_cursor_open(txn, dbi, curp);
		if(rc){
			return rc;
		}
	}
	cur = *curp;
	if(append){
		/* One descent instead of a lookup and a put. The seq is new to the
		 * client (store_queue_append), but LMDB refuses it (MDB_KEYEXIST) unless
		 * it also sorts after the client's last entry. */
		k.mv_data = (void *)key;
		k.mv_size = HASH_LEN;
		v.mv_data = (void *)(key + HASH_LEN);
		v.mv_size = QUEUE_SEQ_LEN + vlen;
		rc = mdb_cursor_put(cur, &k, &v, MDB_APPENDDUP);
		if(rc != MDB_KEYEXIST){
			*added = rc == 0;
			return rc;
		}
	}
	k.mv_data = (void *)key;
	k.mv_size = HASH_LEN;
	v.mv_data = (void *)(key + HASH_LEN);
	v.mv_size = QUEUE_SEQ_LEN;
	rc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH_RANGE);
	/* Nothing at or after seq: an append, which fills pages to the end. */
	unsigned put_flags = rc == MDB_NOTFOUND ? MDB_APPENDDUP : 0;
	bool found = false;
	if(rc == 0 && v.mv_size >= QUEUE_SEQ_LEN && memcmp(v.mv_data, key + HASH_LEN, QUEUE_SEQ_LEN) == 0){
		found = true;
		rc = vlen ? 0 : removed_ref ? refd_add(st, removed_ref, -1) : unref_queue_value(st, key, &v);
		if(rc == 0){
			rc = mdb_cursor_del(cur, 0);
		}
	}else if(rc == 0){
		rc = MDB_NOTFOUND;
	}
	if(rc == MDB_NOTFOUND){
		rc = 0;
	}
	*added = vlen && !found;
	if(rc == 0 && vlen){
		k.mv_data = (void *)key;
		k.mv_size = HASH_LEN;
		v.mv_data = (void *)(key + HASH_LEN);
		v.mv_size = QUEUE_SEQ_LEN + vlen;
		rc = mdb_cursor_put(cur, &k, &v, put_flags);
	}
	return rc;
}

/* Applies operations of ops from byte offset *pos until the end or, past
 * OPS_PER_TXN of them, until a journal mark: a transaction that ended
 * between marks would commit part of what a journal record did, and the
 * restart would do that part again when it replays the record. (A store
 * that never had a mark, the CLI's, stops at OPS_PER_TXN.) Advances *pos
 * and *count. */
static int ops_apply(struct store *st, const struct buf *ops, MDB_txn *txn, size_t *pos, uint64_t *count,
		uint64_t *mark)
{
	const uint8_t *p = ops->data + *pos, *end = ops->data + ops->len;
	MDB_cursor *queue_cur = NULL;
	uint64_t n = 0;
	uint8_t last = OP_MARK;
	MDB_val k, v;
	int rc = 0;

	refd_reset(st);
	while(rc == 0 && p < end && (n < OPS_PER_TXN || (atomic_load(&st->marked) && last != OP_MARK))){
		uint8_t op = p[0];
		MDB_dbi dbi = st->dbi[p[1]];
		size_t klen = p[2];
		size_t vlen = get_le32(p + 3);
		uint64_t ref = get_be64(p + 7);
		bool added = false;

		k.mv_data = (void *)(p + OP_HEADER);
		k.mv_size = klen;
		switch(op){
			case OP_APPEND:
			case OP_PUT:
				if(p[1] == DB_QUEUE){
					rc = queue_apply(st, txn, &queue_cur, op == OP_APPEND, k.mv_data, klen, vlen, 0, &added);
					if(rc == 0 && added){
						rc = refd_add(st, ref, 1);
					}
					break;
				}
				if(p[1] == DB_MSGS && klen == 8){
					struct ref_delta *e = refd_entry(st, get_be64(k.mv_data));
					if(!e){
						rc = ENOMEM;
						break;
					}
					e->released = false;
					e->created = true;
					e->refs0 = (int64_t)ref;
				}
				if(p[1] == DB_RETAINED){
					rc = unref_retained(st, txn, &k);
					if(rc == 0){
						rc = refd_add(st, ref, 1);
					}
					if(rc){
						break;
					}
				}
				v.mv_data = (void *)(p + OP_HEADER + klen);
				v.mv_size = vlen;
				rc = mdb_put(txn, dbi, &k, &v, 0);
				break;
			case OP_DEL:
				if(p[1] == DB_QUEUE){
					rc = queue_apply(st, txn, &queue_cur, false, k.mv_data, klen, 0, ref, &added);
				}else if(p[1] == DB_MSGS){
					rc = klen == 8 ? refd_release(st, get_be64(k.mv_data)) : MDB_BAD_VALSIZE;
				}else{
					rc = p[1] == DB_RETAINED ? unref_retained(st, txn, &k) : 0;
					if(rc == 0){
						rc = mdb_del(txn, dbi, &k, NULL);
					}
				}
				if(rc == MDB_NOTFOUND){
					rc = 0;
				}
				break;
			case OP_DEL_PREFIX:
				rc = p[1] == DB_QUEUE ? queue_delete_prefix(st, txn, k.mv_data, klen)
					: delete_prefix(txn, dbi, k.mv_data, klen);
				break;
			case OP_CLEAR:
				rc = mdb_drop(txn, dbi, 0);
				break;
			case OP_MARK:
				*mark = get_be64(p + OP_HEADER + klen);
				break;
			case OP_NOP:
				break;
		}
		if(rc == 0){
			p += OP_HEADER + klen + vlen;
			n += op != OP_NOP;
			last = op;
		}
	}
	if(queue_cur){
		mdb_cursor_close(queue_cur);
	}
	if(rc == 0){
		rc = refs_flush(st, txn);
	}
	if(rc){
		refd_reset(st);
		return rc;
	}
	*pos = (size_t)(p - ops->data);
	*count = n;
	return 0;
}

/* Another process (the CLI) grew the map: adopt its size. Called with
 * txn_lock held, so no transaction of ours is active. */
static int map_adopt(struct store *st)
{
	MDB_envinfo info;
	int rc = mdb_env_set_mapsize(st->env, 0);

	if(rc == 0 && mdb_env_info(st->env, &info) == 0){
		st->map_size = info.me_mapsize;
	}
	return rc;
}

/* Creates and opens st->env at st->path with st->map_size. */
static int env_open(struct store *st)
{
	int rc = mdb_env_create(&st->env);

	if(!rc){
		rc = mdb_env_set_maxdbs(st->env, DB_COUNT + 1); /* and legacy_queue_name */
	}
	if(!rc){
		rc = mdb_env_set_mapsize(st->env, st->map_size);
	}
	if(!rc){
		/* MDB_NOTLS: restore nests read transactions (a session's queue
		 * inside the session walk). */
		rc = mdb_env_open(st->env, st->path, MDB_NOTLS | (st->read_only ? MDB_RDONLY : 0)
				| (st->no_sync ? MDB_NOSYNC : MDB_NOMETASYNC), 0600);
	}
	return rc;
}

/* After a failed meta-page write LMDB refuses every further transaction
 * (MDB_PANIC) until the environment is opened again. txn_lock held: no
 * transaction of ours is active. */
static int env_reopen(struct store *st)
{
	MDB_txn *txn;
	int rc;

	mdb_env_close(st->env);
	st->env = NULL;
	rc = env_open(st);
	if(!rc){
		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
		for(int i = 0; !rc && i < DB_COUNT; i++){
			rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE | db_flags(i), &st->dbi[i]);
			if(rc){
				mdb_txn_abort(txn);
			}
		}
		if(!rc){
			rc = mdb_txn_commit(txn);
		}
	}
	if(rc && st->env){
		/* Tried again at the next commit. */
		mdb_env_close(st->env);
		st->env = NULL;
	}
	st->txn_ops_peak = 0;
	return rc;
}

/* Pages on LMDB's free list, reusable by later transactions. */
static int free_page_count(MDB_txn *txn, uint64_t *n)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, 0, &cur);

	*n = 0;
	if(rc){
		return rc;
	}
	for(int op = MDB_FIRST; (rc = mdb_cursor_get(cur, &k, &v, op)) == 0; op = MDB_NEXT){
		if(v.mv_size >= sizeof(size_t)){
			size_t len;
			memcpy(&len, v.mv_data, sizeof(len)); /* an ID list: its length, then the page numbers */
			*n += len;
		}
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static uint64_t mono_ms(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000 + (uint64_t)ts->tv_nsec / 1000000;
}

/* Measures the pages in use (the file's pages less the free list) into
 * stats.used_bytes, at most every USED_MEASURE_MS: plugin_opt_max_db_size
 * reads it, so a budget is overrun by at most what arrives in that time.
 * txn_lock held, or no other thread yet (open). */
static void used_measure(struct store *st, bool now)
{
	struct timespec ts;
	MDB_envinfo info;
	MDB_stat ms;
	MDB_txn *txn;
	uint64_t free_pages;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&st->lock);
	if(!now && mono_ms(&ts) - st->used_measured_ms < USED_MEASURE_MS){
		st->used_stale = true;
		pthread_mutex_unlock(&st->lock);
		return;
	}
	pthread_mutex_unlock(&st->lock);
	if(!st->env || mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)){
		return;
	}
	if(mdb_env_info(st->env, &info) == 0 && mdb_stat(txn, 0, &ms) == 0
			&& free_page_count(txn, &free_pages) == 0){
		uint64_t total = (uint64_t)info.me_last_pgno + 1;
		pthread_mutex_lock(&st->lock);
		st->used_measured_ms = mono_ms(&ts);
		st->stats.used_bytes = (total > free_pages ? total - free_pages : 0) * ms.ms_psize;
		st->used_stale = false;
		pthread_mutex_unlock(&st->lock);
	}
	mdb_txn_abort(txn);
}

/* The address and length of the data file's map. LMDB reports it only
 * with MDB_FIXEDMAP, so it is read from the process's map list. */
static bool data_map(const struct store *st, void **addr, size_t *len)
{
	char line[4352], want[4096];
	bool found = false;
	FILE *f;

	if(snprintf(want, sizeof(want), "%s/data.mdb", st->path) >= (int)sizeof(want)
			|| !(f = fopen("/proc/self/maps", "re"))){
		return false;
	}
	while(!found && fgets(line, sizeof(line), f)){
		unsigned long lo, hi;
		char *path = strchr(line, '/');
		size_t n;

		if(!path || sscanf(line, "%lx-%lx", &lo, &hi) != 2){
			continue;
		}
		n = strcspn(path, "\n");
		if(n == strlen(want) && !memcmp(path, want, n)){
			*addr = (void *)lo;
			*len = hi - lo;
			found = true;
		}
	}
	fclose(f);
	return found;
}

/* txn_lock held: no transaction can resize the map meanwhile. True when
 * the environment was opened again: LMDB keeps every page buffer of its
 * largest write transaction (about one per page written) until the
 * environment is closed, and a transaction spread over thousands of queues
 * leaves tens of MiB of them. Closing it frees them and drops its map. */
static bool unmap_data(struct store *st)
{
	void *addr;
	size_t len;

	if(st->env && st->txn_ops_peak > RECYCLE_OPS && !st->read_only){
		/* On failure the next commit opens it, as after MDB_PANIC. */
		if(env_reopen(st) == 0){
			pthread_mutex_lock(&st->lock);
			st->stats.env_recycles++;
			pthread_mutex_unlock(&st->lock);
		}
		return true;
	}
	if(st->env && data_map(st, &addr, &len)){
		/* The map is read-only and shared: the pages stay in the page
		 * cache and fault back in when read. */
		madvise(addr, len, MADV_DONTNEED);
	}
	return false;
}

/* Gives the heap's free pages back (glibc keeps them, in every thread's
 * arena, for later allocations). */
static void heap_release(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

static const char *rc_strerror(int rc)
{
	return rc >= SEAL_RC_BASE ? seal_strerror(rc - SEAL_RC_BASE) : mdb_strerror(rc);
}

/* A failed commit's result as the store's error. */
static int commit_error(int rc)
{
	return rc >= SEAL_RC_BASE ? STORE_ERR_CRYPTO : STORE_ERR_IO;
}

/* Leaves a failed commit's error for the owner's thread to report. */
static void commit_failed(struct store *st, int rc)
{
	pthread_mutex_lock(&st->lock);
	st->stats.commit_errors++;
	st->last_commit_rc = rc;
	st->disk_full = rc == ENOSPC;
	pthread_mutex_unlock(&st->lock);
}

/* Commits ops (removing what was committed from it). A prefix of the
 * operations is an earlier state of the broker, so a large backlog may be
 * committed in several transactions (LMDB bounds the dirty pages of one).
 * Runs on the writer thread or, without one, on the caller's: it must not
 * log; what it did is left in stats for the owner's thread to report. */
static int ops_commit(struct store *st, struct buf *ops, uint64_t *n_ops, size_t *sealed, struct seal *s)
{
	size_t done = 0, next;
	uint64_t count;
	MDB_txn *txn;
	int rc = ops_seal(ops, sealed, s);

	if(rc){
		commit_failed(st, rc);
		return rc;
	}
	pthread_mutex_lock(&st->txn_lock);
	while(done < ops->len){
		rc = st->env ? mdb_txn_begin(st->env, NULL, 0, &txn) : MDB_PANIC;
		if(rc == MDB_PANIC){
			/* Reopened, the next attempt (at the next tick) can succeed. */
			rc = env_reopen(st);
			pthread_mutex_lock(&st->lock);
			st->stats.env_reopens++;
			pthread_mutex_unlock(&st->lock);
			if(rc == 0){
				rc = MDB_PANIC;
			}
			break;
		}
		if(rc == MDB_MAP_RESIZED){
			rc = map_adopt(st);
			if(rc == 0){
				continue;
			}
		}
		if(rc){
			break;
		}
		next = done;
		uint64_t mark = 0;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = ops_apply(st, ops, txn, &next, &count, &mark);
		if(rc){
			mdb_txn_abort(txn);
		}else{
			rc = mdb_txn_commit(txn);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if(rc == MDB_MAP_FULL){
			rc = mdb_env_set_mapsize(st->env, st->map_size * 2);
			if(rc == 0){
				pthread_mutex_lock(&st->lock);
				st->map_size *= 2;
				st->stats.map_grows++;
				pthread_mutex_unlock(&st->lock);
				continue;
			}
		}
		if(rc){
			break;
		}
		done = next;
		*n_ops -= count;
		if(count > st->txn_ops_peak){
			st->txn_ops_peak = count;
		}
		pthread_mutex_lock(&st->lock);
		/* MDB_NOMETASYNC: this commit's sync of its data pages also wrote
		 * the previous commit's meta page; its own is on the disk at the
		 * next commit or sync. */
		if(!st->no_sync){
			st->journal_durable = st->journal_committed;
		}
		if(mark){
			st->journal_committed = mark;
		}
		st->disk_full = false;
		st->stats.commits++;
		st->commit_us[st->n_commit_us++ % COMMIT_RING] = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000
			+ (uint64_t)(t1.tv_nsec - t0.tv_nsec) / 1000;
		pthread_mutex_unlock(&st->lock);
	}
	if(done){
		used_measure(st, false);
	}
	bool recycled = atomic_exchange(&st->unmap_wanted, false) && unmap_data(st);
	pthread_mutex_unlock(&st->txn_lock);
	if(recycled){
		heap_release();
	}
	if(done){
		memmove(ops->data, ops->data + done, ops->len - done);
		ops->len -= done;
		*sealed = ops->len;
	}
	if(rc){
		commit_failed(st, rc);
	}
	return rc;
}

bool store_disk_full(const struct store *st)
{
	struct store *m = (struct store *)st;
	bool full;

	pthread_mutex_lock(&m->lock);
	full = st->disk_full;
	pthread_mutex_unlock(&m->lock);
	return full;
}

/* Flushes commits made without a sync (plugin_opt_sync periodic). */
static int env_sync(struct store *st)
{
	uint64_t committed;
	int rc;

	pthread_mutex_lock(&st->txn_lock);
	pthread_mutex_lock(&st->lock);
	committed = st->journal_committed;
	pthread_mutex_unlock(&st->lock);
	rc = st->env ? mdb_env_sync(st->env, 1) : MDB_PANIC;
	pthread_mutex_unlock(&st->txn_lock);
	if(rc == 0){
		pthread_mutex_lock(&st->lock);
		st->journal_durable = committed;
		pthread_mutex_unlock(&st->lock);
	}
	return rc;
}

/* Starts a thread of the plugin's own with the broker's signals blocked in it:
 * a SIGTERM taken by this thread would run the broker's handler here and
 * leave the main loop asleep in its poll. Faults stay deliverable. */
static int thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	if(sigfillset(&all) != 0 || sigdelset(&all, SIGSEGV) != 0 || sigdelset(&all, SIGBUS) != 0
			|| sigdelset(&all, SIGFPE) != 0 || sigdelset(&all, SIGILL) != 0
			|| sigdelset(&all, SIGABRT) != 0){
		return EINVAL;
	}
	rc = pthread_sigmask(SIG_BLOCK, &all, &old);
	if(rc != 0){
		return rc;
	}
	rc = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static void *writer_main(void *arg)
{
	struct store *st = arg;

	pthread_mutex_lock(&st->lock);
	for(;;){
		while(!st->writer_busy && !st->sync_wanted && !st->writer_stop){
			pthread_cond_wait(&st->wake, &st->lock);
		}
		if(st->writer_busy){
			pthread_mutex_unlock(&st->lock);
			int rc = ops_commit(st, &st->wops, &st->n_wops, &st->wops_sealed, st->wseal);
			pthread_mutex_lock(&st->lock);
			st->writer_rc = rc;
			st->writer_busy = false;
			pthread_cond_broadcast(&st->idle);
		}else if(st->sync_wanted){
			st->sync_wanted = false;
			pthread_mutex_unlock(&st->lock);
			int rc = env_sync(st);
			pthread_mutex_lock(&st->lock);
			if(rc){
				st->stats.commit_errors++;
				st->last_commit_rc = rc;
			}
		}else{
			break;
		}
	}
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

/* Moves the buffered operations behind whatever the writer still holds
 * (after a failed commit, it keeps them to retry first). Lock held, writer
 * idle. */
static int hand_over(struct store *st)
{
	newb_patch(st);
	if(st->wops.len == 0){
		struct buf tmp = st->wops;
		st->wops = st->ops;
		st->ops = tmp;
		st->wops_sealed = st->ops_sealed;
	}else{
		/* wops is left by a failed commit of the writer, ops by one before
		 * the writer ran: never both, so ops is plaintext here. */
		buf_put(&st->wops, st->ops.data, st->ops.len);
		if(st->wops.err){
			st->wops.err = false;
			return STORE_ERR_NOMEM;
		}
	}
	buf_reset(&st->ops);
	st->ops_patched = 0;
	st->ops_sealed = 0;
	st->ops_marked = 0;
	pending_forget(st);
	st->n_wops += st->n_ops;
	st->n_ops = 0;
	st->writer_busy = true;
	pthread_cond_signal(&st->wake);
	return STORE_OK;
}

/* Reports, from the owner's thread, what commits did since the last call. */
static void report_commits(struct store *st)
{
	struct store_stats s;
	time_t now;
	int rc;

	pthread_mutex_lock(&st->lock);
	s = st->stats;
	rc = st->last_commit_rc;
	st->last_commit_rc = 0;
	pthread_mutex_unlock(&st->lock);
	if(s.map_grows != st->map_grows_logged){
		st->map_grows_logged = s.map_grows;
		logf_(st, STORE_LOG_NOTICE, "persist-lmdb: map of %s grown to %zu MiB", st->path, st->map_size >> 20);
	}
	now = time(NULL);
	if(rc && now != st->last_error_log){
		st->last_error_log = now;
		logf_(st, STORE_LOG_ERR, "persist-lmdb: commit to %s failed: %s; %llu changes kept in "
				"memory and retried", st->path, rc_strerror(rc),
				(unsigned long long)(st->n_ops + st->n_wops));
	}
}

int store_commit_async(struct store *st)
{
	int rc = STORE_OK;

	if(!st->writer_started){
		if(thread_start(&st->writer, writer_main, st) != 0){
			return store_commit(st);
		}
		st->writer_started = true;
	}
	/* Only this thread makes the writer busy: idle now, idle at the hand-over. */
	pthread_mutex_lock(&st->lock);
	bool ready = !st->writer_busy && (st->n_ops || st->wops.len);
	pthread_mutex_unlock(&st->lock);
	if(ready){
		pthread_mutex_lock(&st->lock);
		rc = hand_over(st);
		pthread_mutex_unlock(&st->lock);
	}
	report_commits(st);
	time_t now = time(NULL);
	if(rc && now != st->last_error_log){
		st->last_error_log = now;
		logf_(st, STORE_LOG_ERR, "persist-lmdb: preparing %llu changes for a commit failed: %s; kept in "
				"memory and retried", (unsigned long long)st->n_ops, store_strerror(rc));
	}
	return rc;
}

int store_commit(struct store *st)
{
	int rc;

	if(!st->writer_started){
		newb_patch(st);
		pending_forget(st);
		rc = ops_commit(st, &st->ops, &st->n_ops, &st->ops_sealed, st->seal);
		st->ops_patched = st->ops.len;
		st->ops_marked = 0;
		if(!rc && !st->read_only){
			rc = env_sync(st);
		}
		report_commits(st);
		return rc ? commit_error(rc) : STORE_OK;
	}
	rc = store_commit_visible(st);
	if(rc == STORE_OK && !st->read_only && env_sync(st)){
		rc = STORE_ERR_IO;
	}
	return rc;
}

int store_commit_visible(struct store *st)
{
	int rc = STORE_OK;

	if(!st->writer_started){
		return store_commit(st);
	}
	pthread_mutex_lock(&st->lock);
	while(st->writer_busy){
		pthread_cond_wait(&st->idle, &st->lock);
	}
	if(st->n_ops || st->wops.len){
		rc = hand_over(st);
		while(rc == STORE_OK && st->writer_busy){
			pthread_cond_wait(&st->idle, &st->lock);
		}
		if(rc == STORE_OK && st->writer_rc){
			rc = commit_error(st->writer_rc);
		}
	}
	pthread_mutex_unlock(&st->lock);
	report_commits(st);
	return rc;
}

void store_sync_async(struct store *st)
{
	if(!st->writer_started){
		store_commit(st);
		return;
	}
	pthread_mutex_lock(&st->lock);
	st->sync_wanted = true;
	pthread_cond_signal(&st->wake);
	pthread_mutex_unlock(&st->lock);
}

int store_journal_mark(struct store *st, uint64_t lsn)
{
	static const uint8_t name[] = "journal";
	uint8_t *p;
	int rc;

	buf_reset(&st->pt);
	p = buf_extend(&st->pt, 8);
	if(!p){
		return STORE_ERR_NOMEM;
	}
	put_be64(p, lsn);
	rc = op_append(st, OP_PUT, DB_META, name, sizeof(name) - 1);
	if(rc){
		return rc;
	}
	p = buf_extend(&st->ops, OP_HEADER + 8);
	if(!p){
		st->ops.err = false;
		return STORE_ERR_NOMEM;
	}
	op_header(p, OP_MARK, DB_META, 0, 8, 0);
	put_be64(p + OP_HEADER, lsn);
	atomic_store(&st->marked, true);
	st->ops_marked = st->ops.len;
	st->n_ops++;
	return STORE_OK;
}

uint64_t store_journal_committed(const struct store *st)
{
	struct store *m = (struct store *)st;
	uint64_t v;

	pthread_mutex_lock(&m->lock);
	v = st->journal_committed;
	pthread_mutex_unlock(&m->lock);
	return v;
}

uint64_t store_journal_durable(const struct store *st)
{
	struct store *m = (struct store *)st;
	uint64_t v;

	pthread_mutex_lock(&m->lock);
	v = st->journal_durable;
	pthread_mutex_unlock(&m->lock);
	return v;
}

uint64_t store_queue_seq(const struct store *st, uint64_t cmsg_id)
{
	return queue_seq(st, cmsg_id);
}

struct seal *store_seal(struct store *st)
{
	return st->seal;
}

bool store_has_pending(const struct store *st)
{
	struct store *m = (struct store *)st;
	bool pending;

	pthread_mutex_lock(&m->lock);
	pending = st->n_ops > 0 || st->n_wops > 0 || st->writer_busy;
	pthread_mutex_unlock(&m->lock);
	return pending;
}

static void writer_stop(struct store *st)
{
	if(!st->writer_started){
		return;
	}
	pthread_mutex_lock(&st->lock);
	st->writer_stop = true;
	pthread_cond_signal(&st->wake);
	pthread_mutex_unlock(&st->lock);
	pthread_join(st->writer, NULL);
	st->writer_started = false;
}

/* ---- reads ---- */

struct walk {
	struct store *st;
	enum store_db db;
	const uint8_t *prefix;
	size_t plen;
	bool offline_only;  /* skip records whose client hash (the key's start) is in DB_ONLINE */
	const uint8_t *from;  /* DB_QUEUE with a client's prefix: the first seq (u64 BE), or NULL */
};

static void reject(struct store *st, enum store_db db, const char *why)
{
	pthread_mutex_lock(&st->lock);
	st->stats.records_rejected++;
	pthread_mutex_unlock(&st->lock);
	logf_(st, STORE_LOG_WARNING, "persist-lmdb: rejected a %s record that %s; skipped, not served",
			db_names[db], why);
}

/* Returns -1 when the plaintext does not decode; otherwise 0, with the
 * callback's value in *cb_rc. */
typedef int (*decode_visit_fn)(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc);

/* A walk reads records in batches and opens (decrypts) a batch while the
 * caller visits the one before, on a second thread: at start-up the
 * broker's work of restoring and the decryption run on two cores. */
#define WALK_BATCH 256
#define WALK_MALFORMED (-1)

struct walk_item {
	uint8_t key[KEY_MAX];
	MDB_val k;              /* the logical key, in key */
	const uint8_t *sealed;  /* in the map: valid while the walk's transaction is */
	size_t sealed_len;
	size_t pt_off, pt_len;  /* the plaintext, in the batch's arena */
	int src;                /* seal_open's result, or WALK_MALFORMED */
};

struct walk_batch {
	struct walk_item items[WALK_BATCH];
	size_t n;
	enum store_db db;
	struct buf arena;
	bool done;              /* opened (by the opener thread); under its lock */
};

struct opener {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct seal *seal;      /* a clone: the caller's thread keeps using st->seal */
	struct walk_batch *job; /* being opened; NULL when idle */
	bool stop;
};

static void batch_open(struct seal *seal, struct walk_batch *b)
{
	uint8_t ad[1 + KEY_MAX];

	for(size_t i = 0; i < b->n; i++){
		struct walk_item *it = &b->items[i];
		if(it->src != WALK_MALFORMED){
			make_ad(ad, b->db, it->k.mv_data, it->k.mv_size);
			it->src = seal_open(seal, ad, 1 + it->k.mv_size, it->sealed, it->sealed_len,
					b->arena.data + it->pt_off, &it->pt_len);
		}
	}
}

static void *opener_main(void *arg)
{
	struct opener *o = arg;

	pthread_mutex_lock(&o->lock);
	for(;;){
		while(!o->job && !o->stop){
			pthread_cond_wait(&o->cond, &o->lock);
		}
		if(!o->job){
			break;
		}
		struct walk_batch *b = o->job;
		pthread_mutex_unlock(&o->lock);
		batch_open(o->seal, b);
		pthread_mutex_lock(&o->lock);
		b->done = true;
		o->job = NULL;
		pthread_cond_broadcast(&o->cond);
	}
	pthread_mutex_unlock(&o->lock);
	return NULL;
}

static void opener_stop(struct store *st)
{
	struct opener *o = st->opener;

	if(!o){
		return;
	}
	pthread_mutex_lock(&o->lock);
	o->stop = true;
	pthread_cond_broadcast(&o->cond);
	pthread_mutex_unlock(&o->lock);
	pthread_join(o->thread, NULL);
	pthread_mutex_destroy(&o->lock);
	pthread_cond_destroy(&o->cond);
	seal_free(o->seal);
	free(o);
	st->opener = NULL;
}

/* Hands b to the opener thread (started on first use); false when it is
 * busy (a walk nested in a visit) or cannot run: the caller opens b. */
static bool opener_submit(struct store *st, struct walk_batch *b)
{
	struct opener *o = st->opener;

	if(!o && !st->opener_failed){
		o = calloc(1, sizeof(*o));
		if(o && (o->seal = seal_clone(st->seal)) != NULL){
			pthread_mutex_init(&o->lock, NULL);
			pthread_cond_init(&o->cond, NULL);
			if(thread_start(&o->thread, opener_main, o) == 0){
				st->opener = o;
			}else{
				pthread_mutex_destroy(&o->lock);
				pthread_cond_destroy(&o->cond);
				seal_free(o->seal);
				free(o);
				o = NULL;
			}
		}else{
			free(o);
			o = NULL;
		}
		st->opener_failed = !o;
	}
	if(!o){
		return false;
	}
	pthread_mutex_lock(&o->lock);
	bool taken = !o->job;
	if(taken){
		b->done = false;
		o->job = b;
		pthread_cond_broadcast(&o->cond);
	}
	pthread_mutex_unlock(&o->lock);
	return taken;
}

static void opener_wait(struct store *st, struct walk_batch *b)
{
	struct opener *o = st->opener;

	pthread_mutex_lock(&o->lock);
	while(!b->done){
		pthread_cond_wait(&o->cond, &o->lock);
	}
	pthread_mutex_unlock(&o->lock);
}

/* Reads up to WALK_BATCH records from the cursor into b; sets *end at the
 * end of the database or of the prefix. */
static int batch_fill(struct walk *w, MDB_cursor *cur, int *op, struct walk_batch *b, bool *end)
{
	struct store *st = w->st;
	size_t total = 0;
	MDB_val k, v;
	int rc;

	b->n = 0;
	b->db = w->db;
	while(b->n < WALK_BATCH){
		k.mv_data = (void *)w->prefix;
		k.mv_size = w->plen;
		if(*op == MDB_SET_RANGE && w->from){
			/* A client's entries sort by seq (the start of each duplicate). */
			v.mv_data = (void *)w->from;
			v.mv_size = QUEUE_SEQ_LEN;
			*op = MDB_GET_BOTH_RANGE;
		}
		rc = mdb_cursor_get(cur, &k, &v, *op);
		*op = MDB_NEXT;
		if(rc == MDB_NOTFOUND
				|| (rc == 0 && w->plen && (k.mv_size < w->plen || memcmp(k.mv_data, w->prefix, w->plen) != 0))){
			*end = true;
			break;
		}
		if(rc){
			logf_(st, STORE_LOG_ERR, "persist-lmdb: reading %s from %s failed: %s",
					db_names[w->db], st->path, mdb_strerror(rc));
			return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ? STORE_ERR_CORRUPT : STORE_ERR_IO;
		}
		if(w->offline_only && k.mv_size >= HASH_LEN && st->dbi[DB_ONLINE]){
			MDB_val ok = {HASH_LEN, k.mv_data}, ov;
			if(mdb_get(mdb_cursor_txn(cur), st->dbi[DB_ONLINE], &ok, &ov) == 0){
				continue;
			}
		}
		struct walk_item *it = &b->items[b->n++];
		it->src = WALK_MALFORMED;
		it->k.mv_data = it->key;
		if(w->db == DB_QUEUE){
			if(k.mv_size != HASH_LEN || v.mv_size < QUEUE_SEQ_LEN){
				continue;
			}
			memcpy(it->key, k.mv_data, HASH_LEN);
			memcpy(it->key + HASH_LEN, v.mv_data, QUEUE_SEQ_LEN);
			it->k.mv_size = QUEUE_KEY_LEN;
			v.mv_data = (uint8_t *)v.mv_data + QUEUE_SEQ_LEN;
			v.mv_size -= QUEUE_SEQ_LEN;
		}else if(k.mv_size <= KEY_MAX){
			memcpy(it->key, k.mv_data, k.mv_size);
			it->k.mv_size = k.mv_size;
		}else{
			continue;
		}
		if(v.mv_size < SEAL_OVERHEAD){
			continue;
		}
		it->src = SEAL_OK;
		it->sealed = v.mv_data;
		it->sealed_len = v.mv_size;
		it->pt_off = total;
		total += v.mv_size;
	}
	buf_reset(&b->arena);
	if(total && !buf_extend(&b->arena, total)){
		b->arena.err = false;
		return STORE_ERR_NOMEM;
	}
	return STORE_OK;
}

/* Visits the records of an opened batch in order; returns the first
 * non-zero callback value. */
static int batch_visit(struct walk *w, struct walk_batch *b, decode_visit_fn visit, void *fn, void *ctx)
{
	int rc = 0;

	for(size_t i = 0; i < b->n && rc == 0; i++){
		struct walk_item *it = &b->items[i];
		if(it->src == WALK_MALFORMED){
			reject(w->st, w->db, "has a malformed key or value");
		}else if(it->src != SEAL_OK){
			reject(w->st, w->db, seal_strerror(it->src));
		}else if(visit(&it->k, b->arena.data + it->pt_off, it->pt_len, fn, ctx, &rc) < 0){
			reject(w->st, w->db, "does not decode");
			rc = 0;
		}
	}
	return rc;
}

/* The items are written before they are read, so only the rest is
 * cleared: zeroing them took half the start-up's instructions (callgrind)
 * with a few nested walks per restored session. */
static struct walk_batch *batch_new(void)
{
	struct walk_batch *b = malloc(sizeof(*b));

	if(b){
		b->n = 0;
		b->arena = (struct buf){0};
		b->done = false;
	}
	return b;
}

static int walk_run(struct walk *w, decode_visit_fn visit, void *fn, void *ctx)
{
	struct store *st = w->st;
	struct walk_batch *batch[2] = {NULL, NULL};
	MDB_cursor *cur = NULL;
	MDB_txn *txn = NULL;
	bool end = false;
	int rc, op;

	if(st->dbi[w->db] == 0 && w->db != DB_META){
		return STORE_OK;
	}
	pthread_mutex_lock(&st->txn_lock);
	rc = st->env ? mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) : MDB_PANIC;
	if(rc == MDB_MAP_RESIZED && map_adopt(st) == 0){
		rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
	}
	if(rc == 0){
		rc = mdb_cursor_open(txn, st->dbi[w->db], &cur);
	}
	if(rc){
		logf_(st, STORE_LOG_ERR, "persist-lmdb: cannot read %s from %s: %s",
				db_names[w->db], st->path, mdb_strerror(rc));
		if(txn){
			mdb_txn_abort(txn);
		}
		pthread_mutex_unlock(&st->txn_lock);
		return STORE_ERR_IO;
	}
	batch[0] = batch_new();
	batch[1] = batch_new();
	op = w->plen ? MDB_SET_RANGE : MDB_FIRST;
	rc = batch[0] && batch[1] ? batch_fill(w, cur, &op, batch[0], &end) : STORE_ERR_NOMEM;
	if(rc == STORE_OK){
		batch_open(st->seal, batch[0]);
	}
	for(int i = 0; rc == STORE_OK && batch[i]->n; i = !i){
		struct walk_batch *next = batch[!i];
		bool offloaded = false;

		next->n = 0;
		if(!end){
			rc = batch_fill(w, cur, &op, next, &end);
			offloaded = rc == STORE_OK && next->n && opener_submit(st, next);
		}
		int vrc = rc == STORE_OK ? batch_visit(w, batch[i], visit, fn, ctx) : 0;
		if(offloaded){
			opener_wait(st, next);
		}else if(rc == STORE_OK && vrc == 0 && next->n){
			batch_open(st->seal, next);
		}
		if(vrc){
			rc = vrc;
		}
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	pthread_mutex_unlock(&st->txn_lock);
	for(int i = 0; i < 2; i++){
		if(batch[i]){
			if(batch[i]->arena.data){
				seal_wipe(batch[i]->arena.data, batch[i]->arena.cap);
			}
			buf_free(&batch[i]->arena);
			free(batch[i]);
		}
	}
	return rc;
}

static int visit_msg(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct rec_base_msg m;

	if(k->mv_size != 8 || record_decode_base_msg(pt, len, &m)){
		return -1;
	}
	*cb_rc = ((msg_visit_fn)fn)(ctx, get_be64(k->mv_data), &m);
	return 0;
}

static int visit_session(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct rec_session s;

	(void)k;
	if(record_decode_session(pt, len, &s)){
		return -1;
	}
	*cb_rc = ((session_visit_fn)fn)(ctx, &s);
	return 0;
}

static int visit_sub(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct rec_sub s;

	(void)k;
	if(record_decode_sub(pt, len, &s)){
		return -1;
	}
	*cb_rc = ((sub_visit_fn)fn)(ctx, &s);
	return 0;
}

static int visit_queue(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct rec_queue q;

	if(k->mv_size != HASH_LEN + 8 || record_decode_queue(pt, len, &q)){
		return -1;
	}
	*cb_rc = ((queue_visit_fn)fn)(ctx, get_be64((const uint8_t *)k->mv_data + HASH_LEN), &q);
	return 0;
}

static int visit_retain(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct rec_retain r;

	(void)k;
	if(record_decode_retain(pt, len, &r)){
		return -1;
	}
	*cb_rc = ((retain_visit_fn)fn)(ctx, &r);
	return 0;
}

static int visit_will(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct rec_will wl;

	(void)k;
	if(record_decode_will(pt, len, &wl)){
		return -1;
	}
	*cb_rc = ((will_visit_fn)fn)(ctx, &wl);
	return 0;
}

static int walk_db(struct store *st, enum store_db db, const uint8_t *prefix, size_t plen,
		decode_visit_fn visit, void *fn, void *ctx)
{
	struct walk w = {st, db, prefix, plen, false, NULL};
	return walk_run(&w, visit, fn, ctx);
}

int store_walk_msgs(struct store *st, msg_visit_fn fn, void *ctx)
{
	return walk_db(st, DB_MSGS, NULL, 0, visit_msg, (void *)fn, ctx);
}

int store_walk_sessions(struct store *st, session_visit_fn fn, void *ctx)
{
	return walk_db(st, DB_SESSIONS, NULL, 0, visit_session, (void *)fn, ctx);
}

int store_msg_get(struct store *st, uint64_t store_id, msg_visit_fn fn, void *ctx)
{
	uint8_t key[8];

	put_be64(key, store_id);
	return walk_db(st, DB_MSGS, key, sizeof(key), visit_msg, (void *)fn, ctx);
}

int store_session_get(struct store *st, const char *clientid, session_visit_fn fn, void *ctx)
{
	uint8_t key[HASH_LEN];

	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return walk_db(st, DB_SESSIONS, key, sizeof(key), visit_session, (void *)fn, ctx);
}

static int visit_online(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct reader r = {pt, len, false};
	const char *clientid = rd_str(&r);

	(void)k;
	(void)fn;
	if(!clientid || r.left){
		return -1;
	}
	*(bool *)ctx = true;
	*cb_rc = 0;
	return 0;
}

int store_session_was_online(struct store *st, const char *clientid)
{
	uint8_t key[HASH_LEN];
	bool found = false;
	int rc;

	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	rc = walk_db(st, DB_ONLINE, key, sizeof(key), visit_online, NULL, &found);
	return rc ? -rc : found;
}

int store_walk_subs(struct store *st, const char *clientid, sub_visit_fn fn, void *ctx)
{
	uint8_t prefix[HASH_LEN];

	if(!clientid){
		return walk_db(st, DB_SUBS, NULL, 0, visit_sub, (void *)fn, ctx);
	}
	if(hash_name(st, H_CLIENT, clientid, prefix)){
		return STORE_ERR_CRYPTO;
	}
	return walk_db(st, DB_SUBS, prefix, sizeof(prefix), visit_sub, (void *)fn, ctx);
}

int store_walk_offline_subs(struct store *st, sub_visit_fn fn, void *ctx)
{
	struct walk w = {st, DB_SUBS, NULL, 0, true, NULL};
	return walk_run(&w, visit_sub, (void *)fn, ctx);
}

void store_used_refresh(struct store *st)
{
	struct timespec ts;
	bool stale;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&st->lock);
	stale = st->used_stale && mono_ms(&ts) - st->used_measured_ms >= USED_MEASURE_MS;
	pthread_mutex_unlock(&st->lock);
	if(stale){
		pthread_mutex_lock(&st->txn_lock);
		used_measure(st, false);
		pthread_mutex_unlock(&st->txn_lock);
	}
}

uint64_t store_used_bytes(const struct store *st)
{
	struct store *m = (struct store *)st;
	uint64_t used;

	pthread_mutex_lock(&m->lock);
	used = st->stats.used_bytes;
	pthread_mutex_unlock(&m->lock);
	return used;
}

int store_walk_queue(struct store *st, const char *clientid, queue_visit_fn fn, void *ctx)
{
	uint8_t prefix[HASH_LEN];

	if(!clientid){
		return walk_db(st, DB_QUEUE, NULL, 0, visit_queue, (void *)fn, ctx);
	}
	if(hash_name(st, H_CLIENT, clientid, prefix)){
		return STORE_ERR_CRYPTO;
	}
	return walk_db(st, DB_QUEUE, prefix, sizeof(prefix), visit_queue, (void *)fn, ctx);
}

int store_walk_queue_from(struct store *st, const char *clientid, uint64_t from, queue_visit_fn fn, void *ctx)
{
	uint8_t prefix[HASH_LEN], seq[8];
	struct walk w = {st, DB_QUEUE, prefix, sizeof(prefix), false, seq};

	if(hash_name(st, H_CLIENT, clientid, prefix)){
		return STORE_ERR_CRYPTO;
	}
	put_be64(seq, from);
	return walk_run(&w, visit_queue, (void *)fn, ctx);
}

int store_walk_retained(struct store *st, retain_visit_fn fn, void *ctx)
{
	return walk_db(st, DB_RETAINED, NULL, 0, visit_retain, (void *)fn, ctx);
}

int store_walk_wills(struct store *st, const char *clientid, will_visit_fn fn, void *ctx)
{
	uint8_t key[HASH_LEN];

	if(!clientid){
		return walk_db(st, DB_WILLS, NULL, 0, visit_will, (void *)fn, ctx);
	}
	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return walk_db(st, DB_WILLS, key, sizeof(key), visit_will, (void *)fn, ctx);
}

static int visit_dedup(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct rec_dedup d;

	if(k->mv_size != HASH_LEN || record_decode_dedup(pt, len, &d)){
		return -1;
	}
	*cb_rc = ((dedup_visit_fn)fn)(ctx, k->mv_data, &d);
	return 0;
}

static int visit_seqno(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct reader r = {pt, len, false};
	uint64_t last = rd_varint(&r);

	(void)k;
	(void)fn;
	if(r.err || r.left){
		return -1;
	}
	*(uint64_t *)ctx = last;
	*cb_rc = 0;
	return 0;
}

int store_seqno_get(struct store *st, const char *clientid, uint64_t *last)
{
	uint8_t key[HASH_LEN];

	*last = 0;
	if(!st->dbi[DB_SEQNO]){
		return STORE_OK;
	}
	if(hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return walk_db(st, DB_SEQNO, key, sizeof(key), visit_seqno, NULL, last);
}

int store_walk_dedup(struct store *st, dedup_visit_fn fn, void *ctx)
{
	if(!st->dbi[DB_DEDUP]){
		return STORE_OK;
	}
	return walk_db(st, DB_DEDUP, NULL, 0, visit_dedup, (void *)fn, ctx);
}

/* ---- open, meta ---- */

static int meta_get(struct store *st, MDB_txn *txn, const char *name, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t ad[1 + KEY_MAX];
	MDB_val k = {strlen(name), (void *)name}, v;
	int rc;

	rc = mdb_get(txn, st->dbi[DB_META], &k, &v);
	if(rc){
		return rc;
	}
	if(v.mv_size < SEAL_OVERHEAD || v.mv_size - SEAL_OVERHEAD > cap){
		return SEAL_RC_BASE + SEAL_ERR_FORMAT;
	}
	make_ad(ad, DB_META, k.mv_data, k.mv_size);
	rc = seal_open(st->seal, ad, 1 + k.mv_size, v.mv_data, v.mv_size, out, len);
	return rc ? SEAL_RC_BASE + rc : 0;
}

static int meta_put(struct store *st, MDB_txn *txn, const char *name, const void *val, size_t len)
{
	uint8_t ad[1 + KEY_MAX], sealed[64 + SEAL_OVERHEAD];
	MDB_val k = {strlen(name), (void *)name}, v;

	make_ad(ad, DB_META, k.mv_data, k.mv_size);
	if(seal_record(st->seal, ad, 1 + k.mv_size, val, len, sealed) != SEAL_OK){
		return STORE_ERR_CRYPTO;
	}
	v.mv_data = sealed;
	v.mv_size = len + SEAL_OVERHEAD;
	return mdb_put(txn, st->dbi[DB_META], &k, &v, 0);
}

static bool db_has_records(MDB_txn *txn, const struct store *st)
{
	MDB_stat ms;

	for(int i = 0; i < DB_COUNT; i++){
		if(st->dbi[i] && mdb_stat(txn, st->dbi[i], &ms) == 0 && ms.ms_entries > 0){
			return true;
		}
	}
	return false;
}

/* Each open's salt (seal.h), unsealed: meta "salt" | epoch (4, BE). */
#define SALT_NAME "salt"
#define SALT_KEY_LEN (sizeof(SALT_NAME) - 1 + 4)

/* Gives the seal the salt of every epoch the database knows. */
static int salts_load(struct store *st, MDB_txn *txn, char *err, size_t errlen)
{
	MDB_cursor *cur;
	MDB_val k = {sizeof(SALT_NAME) - 1, (void *)SALT_NAME}, v;
	int rc = mdb_cursor_open(txn, st->dbi[DB_META], &cur);

	for(int op = MDB_SET_RANGE; rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0; op = MDB_NEXT){
		if(k.mv_size < sizeof(SALT_NAME) - 1 || memcmp(k.mv_data, SALT_NAME, sizeof(SALT_NAME) - 1)){
			break;
		}
		if(k.mv_size != SALT_KEY_LEN || v.mv_size != SEAL_SALT_LEN
				|| seal_learn_epoch(st->seal, get_be32((const uint8_t *)k.mv_data + sizeof(SALT_NAME) - 1),
					v.mv_data) != SEAL_OK){
			mdb_cursor_close(cur);
			snprintf(err, errlen, "the salt records of %s are damaged", st->path);
			return STORE_ERR_CORRUPT;
		}
	}
	if(rc == 0 || rc == MDB_NOTFOUND){
		mdb_cursor_close(cur);
		return STORE_OK;
	}
	snprintf(err, errlen, "cannot read the salts of %s: %s", st->path, mdb_strerror(rc));
	return STORE_ERR_CORRUPT;
}

/* Stores the salt of an epoch that has none yet (LMDB's error otherwise). */
static int salt_put(struct store *st, MDB_txn *txn, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN])
{
	uint8_t key[SALT_KEY_LEN];
	MDB_val k = {sizeof(key), key}, v = {SEAL_SALT_LEN, (void *)salt};

	memcpy(key, SALT_NAME, sizeof(SALT_NAME) - 1);
	put_be32(key + sizeof(SALT_NAME) - 1, epoch);
	return mdb_put(txn, st->dbi[DB_META], &k, &v, MDB_NOOVERWRITE);
}

/* This open's epoch: a new salt, stored, and the key sealing from now on. */
static int epoch_begin(struct store *st, MDB_txn *txn, uint32_t epoch)
{
	uint8_t salt[SEAL_SALT_LEN];

	if(seal_begin_epoch(st->seal, epoch, salt) != SEAL_OK){
		return STORE_ERR_CRYPTO;
	}
	return salt_put(st, txn, epoch, salt) == 0 ? STORE_OK : STORE_ERR_IO;
}

int store_salt_adopt(struct store *st, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN])
{
	MDB_txn *txn;
	int rc;

	if(st->read_only){
		return STORE_ERR_READONLY;
	}
	if(epoch >= st->epoch){
		return STORE_ERR_CORRUPT; /* the epochs this database seals under are its own */
	}
	rc = seal_learn_epoch(st->seal, epoch, salt);
	if(rc){
		return rc == SEAL_ERR_FORMAT ? STORE_ERR_CORRUPT : STORE_ERR_NOMEM;
	}
	pthread_mutex_lock(&st->txn_lock);
	rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if(rc == 0){
		rc = salt_put(st, txn, epoch, salt);
		if(rc == MDB_KEYEXIST){
			rc = 0; /* learned above: the same salt */
			mdb_txn_abort(txn);
		}else if(rc == 0){
			rc = mdb_txn_commit(txn);
		}else{
			mdb_txn_abort(txn);
		}
	}
	pthread_mutex_unlock(&st->txn_lock);
	return rc ? STORE_ERR_IO : STORE_OK;
}

/* Checks the key against this database, initialises a new one, and (when
 * writable) bumps and commits the nonce epoch with a new salt. */
static int meta_open(struct store *st, MDB_txn *txn, uint32_t epoch_floor, char *err, size_t errlen)
{
	uint8_t val[64];
	uint8_t be[4];
	size_t len;
	uint32_t epoch = 0;
	int rc;

	rc = salts_load(st, txn, err, errlen);
	if(rc){
		return rc;
	}
	rc = meta_get(st, txn, "keycheck", val, sizeof(val), &len);
	if(rc == MDB_NOTFOUND){
		if(db_has_records(txn, st)){
			snprintf(err, errlen, "data file in %s has records but no key check: it is damaged "
					"or not a persist-lmdb database", st->path);
			return STORE_ERR_CORRUPT;
		}
		if(st->read_only){
			snprintf(err, errlen, "%s holds no persist-lmdb database", st->path);
			return STORE_ERR_IO;
		}
		if(epoch_floor >= (1u << (64 - STORE_SEQ_SHIFT)) - 2){
			snprintf(err, errlen, "cannot create a database in %s above epoch %u: the epoch space ends there",
					st->path, epoch_floor);
			return STORE_ERR_VERSION;
		}
		epoch = epoch_floor + 1;
		put_be32(be, STORE_SCHEMA_VERSION);
		if(epoch_begin(st, txn, epoch) || meta_put(st, txn, "schema", be, 4)
				|| meta_put(st, txn, "keycheck", key_check_text, sizeof(key_check_text))){
			snprintf(err, errlen, "cannot initialise the database in %s", st->path);
			return STORE_ERR_IO;
		}
	}else if(rc == SEAL_RC_BASE + SEAL_ERR_AUTH || rc == SEAL_RC_BASE + SEAL_ERR_KEY_ID){
		snprintf(err, errlen, "the key does not match this database (%s): it was written under another key", st->path);
		return STORE_ERR_KEY;
	}else if(rc){
		snprintf(err, errlen, "cannot read the key check of %s: %s", st->path,
				rc_strerror(rc));
		return rc >= SEAL_RC_BASE ? STORE_ERR_CORRUPT : STORE_ERR_IO;
	}else if(len != sizeof(key_check_text) || memcmp(val, key_check_text, len) != 0){
		snprintf(err, errlen, "the key check of %s has unexpected contents", st->path);
		return STORE_ERR_CORRUPT;
	}else{
		if(meta_get(st, txn, "schema", val, sizeof(val), &len) || len != 4){
			snprintf(err, errlen, "the schema record of %s is missing or damaged", st->path);
			return STORE_ERR_CORRUPT;
		}
		if(get_be32(val) == 1 && st->read_only){
			snprintf(err, errlen, "%s was written by an earlier persist-lmdb (schema 1): start the "
					"broker on it once, or run a write command such as compact, to convert it", st->path);
			return STORE_ERR_VERSION;
		}
		st->upgrade_queues = get_be32(val) == 1;
		st->upgrade_refs = get_be32(val) == 1 || get_be32(val) == 2;
		st->upgraded_seal = get_be32(val) == 3 && !st->read_only;
		if(get_be32(val) != STORE_SCHEMA_VERSION && !st->upgrade_refs && get_be32(val) != 3){
			snprintf(err, errlen, "%s has schema version %u; this persist-lmdb reads versions 1 to %u",
					st->path, get_be32(val), STORE_SCHEMA_VERSION);
			return STORE_ERR_VERSION;
		}
		if(meta_get(st, txn, "epoch", val, sizeof(val), &len) || len != 4){
			snprintf(err, errlen, "the epoch record of %s is missing or damaged", st->path);
			return STORE_ERR_CORRUPT;
		}
		epoch = get_be32(val);
		rc = meta_get(st, txn, "journal", val, sizeof(val), &len);
		if(rc == 0 && len == 8){
			st->journal_committed = st->journal_durable = get_be64(val);
		}else if(rc != MDB_NOTFOUND){
			snprintf(err, errlen, "the journal mark of %s is damaged", st->path);
			return STORE_ERR_CORRUPT;
		}
		if(st->read_only){
			st->epoch = epoch;
			return STORE_OK;
		}
		if(epoch >= (1u << (64 - STORE_SEQ_SHIFT)) - 1){
			snprintf(err, errlen, "%s has been opened %u times: the epoch space is exhausted; "
					"export and import it into a new database", st->path, epoch);
			return STORE_ERR_VERSION;
		}
		epoch++;
		if(epoch_begin(st, txn, epoch)){
			snprintf(err, errlen, "cannot begin epoch %u of %s (a salt of that epoch is there already: "
					"damaged)", epoch, st->path);
			return STORE_ERR_CORRUPT;
		}
		put_be32(be, STORE_SCHEMA_VERSION);
		if(st->upgraded_seal && meta_put(st, txn, "schema", be, 4)){
			snprintf(err, errlen, "cannot write the schema of %s", st->path);
			return STORE_ERR_IO;
		}
	}
	put_be32(be, epoch);
	if(meta_put(st, txn, "epoch", be, 4)){
		snprintf(err, errlen, "cannot write the epoch of %s", st->path);
		return STORE_ERR_IO;
	}
	st->epoch = epoch;
	return STORE_OK;
}

/* LMDB opens a file larger than the requested map at exactly its used size,
 * leaving no room for the next write: keep the larger of the requested and
 * the recorded size, with at least a quarter of headroom over what is used. */
static int map_fit(struct store *st, size_t used, size_t current, char *err, size_t errlen)
{
	size_t want = st->map_size > current ? st->map_size : current;
	int rc;

	while(want < used + used / 4 + (1u << 20)){
		want *= 2;
	}
	if(want != current && !st->read_only){
		rc = mdb_env_set_mapsize(st->env, want);
		if(rc){
			snprintf(err, errlen, "cannot set the map size of %s to %zu MiB: %s",
					st->path, want >> 20, mdb_strerror(rc));
			return STORE_ERR_IO;
		}
		current = want;
	}
	st->map_size = current;
	return STORE_OK;
}

/* LMDB never writes a page allocated and freed inside one transaction (a
 * "loose" page): when such pages are the highest numbered, the file ends
 * before the last page number the meta page records. That is a state LMDB
 * itself leaves (after a kill -9, or a power loss), not damage: damage is a
 * page that a tree reaches lying past the end, and only walking the trees
 * tells the two apart. So a short file is noted here, and the structure
 * walk then reads every tree whole (walk_structure), where a page past the
 * end of the mapped file faults (SIGBUS). */
static int check_size(struct store *st, const char *datafile, char *err, size_t errlen)
{
	MDB_envinfo info;
	MDB_stat ms;
	struct stat sb;
	long long need;

	if(stat(datafile, &sb) != 0 || mdb_env_info(st->env, &info) != 0 || mdb_env_stat(st->env, &ms) != 0){
		snprintf(err, errlen, "cannot inspect %s: %s", datafile, strerror(errno));
		return STORE_ERR_IO;
	}
	need = ((long long)info.me_last_pgno + 1) * ms.ms_psize;
	st->file_bytes = (long long)sb.st_size;
	st->short_file = st->file_bytes < need;
	/* LMDB writes whole pages: a part of one is a file cut short. */
	if(st->file_bytes % ms.ms_psize){
		snprintf(err, errlen, "data file %s is truncated: %lld bytes is not a whole number of %u-byte pages",
				datafile, st->file_bytes, ms.ms_psize);
		return STORE_ERR_CORRUPT;
	}
	return map_fit(st, (size_t)need, info.me_mapsize, err, errlen);
}

/* mkdir -p, mode 0700 for what it creates. */
static int make_dirs(const char *path)
{
	char *p = strdup(path);
	int rc = 0;

	if(!p){
		errno = ENOMEM;
		return -1;
	}
	for(char *s = p + 1; *s && rc == 0; s++){
		if(*s == '/'){
			*s = '\0';
			if(mkdir(p, 0700) != 0 && errno != EEXIST){
				rc = -1;
			}
			*s = '/';
		}
	}
	if(rc == 0 && mkdir(p, 0700) != 0 && errno != EEXIST){
		rc = -1;
	}
	free(p);
	return rc;
}

static int env_error(struct store *st, int rc, char *err, size_t errlen)
{
	if(rc == EACCES || rc == EROFS || rc == EPERM){
		snprintf(err, errlen, "cannot open the database in %s: %s (read-only data directory?)",
				st->path, strerror(rc));
		return STORE_ERR_READONLY;
	}
	if(rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_VERSION_MISMATCH){
		snprintf(err, errlen, "data file in %s is damaged or not an LMDB file: %s", st->path, mdb_strerror(rc));
		return STORE_ERR_CORRUPT;
	}
	snprintf(err, errlen, "cannot open the database in %s: %s", st->path, mdb_strerror(rc));
	return STORE_ERR_IO;
}

/* The key id a database's records are sealed under: byte 1 of the sealed
 * key check. new_key_id for a database without one. */
static uint8_t stored_key_id(struct store *st, MDB_txn *txn, uint8_t new_key_id)
{
	MDB_val k = {sizeof("keycheck") - 1, (void *)"keycheck"}, v;

	if(mdb_get(txn, st->dbi[DB_META], &k, &v) == 0 && v.mv_size >= 2){
		return ((const uint8_t *)v.mv_data)[1];
	}
	return new_key_id;
}

/* Takes the writer lock (see store.h). */
static int lock_writer(struct store *st, char *err, size_t errlen)
{
	char lockfile[4096];

	snprintf(lockfile, sizeof(lockfile), "%s/writer.lock", st->path);
	st->lock_fd = open(lockfile, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if(st->lock_fd < 0){
		snprintf(err, errlen, "cannot open %s: %s", lockfile, strerror(errno));
		return errno == EACCES || errno == EROFS ? STORE_ERR_READONLY : STORE_ERR_IO;
	}
	if(flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0){
		snprintf(err, errlen, "another process has the database in %s open for writing "
				"(a running broker?)", st->path);
		return STORE_ERR_BUSY;
	}
	return STORE_OK;
}

/* LMDB keeps no checksums: a damaged page can hold a page number past the
 * end of the file (SIGBUS on the mapping), a wild pointer (SIGSEGV) or fail
 * one of LMDB's assertions (SIGABRT), when it is read or when it is first
 * written. Until the store is open these become an error, not a dead broker. */
static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_armed;
static const char *volatile fault_where;

static void on_fault(int sig)
{
	if(fault_armed){
		fault_armed = 0;
		siglongjmp(fault_jmp, sig);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static const int fault_signals[] = {SIGBUS, SIGSEGV, SIGABRT};
#define N_FAULT_SIGNALS (sizeof(fault_signals) / sizeof(fault_signals[0]))

struct guarded {
	int (*fn)(struct store *st, struct guarded *g, char *err, size_t errlen);
	void *arg;
	MDB_txn *read_txn; /* open while fn reads; released after a fault */
	MDB_cursor *cursor; /* open in read_txn while fn walks; closed after a fault */
};

/* Runs g->fn, or returns STORE_ERR_CORRUPT with a message when LMDB faulted
 * in it. A write transaction cut short by a fault is left alone: the caller
 * only closes the environment and refuses to start. */
static int run_guarded(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	struct sigaction sa, old[N_FAULT_SIGNALS];
	volatile int rc = 0;
	int sig;

	fault_where = "meta";
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	for(size_t i = 0; i < N_FAULT_SIGNALS; i++){
		if(sigaction(fault_signals[i], &sa, &old[i])){
			snprintf(err, errlen, "cannot install a signal handler: %s", strerror(errno));
			while(i-- > 0){
				sigaction(fault_signals[i], &old[i], NULL);
			}
			return STORE_ERR_IO;
		}
	}
	sig = sigsetjmp(fault_jmp, 1);
	if(sig == 0){
		fault_armed = 1;
		rc = g->fn(st, g, err, errlen);
		fault_armed = 0;
	}
	for(size_t i = 0; i < N_FAULT_SIGNALS; i++){
		sigaction(fault_signals[i], &old[i], NULL);
	}
	if(sig){
		if(g->cursor){
			mdb_cursor_close(g->cursor);
			g->cursor = NULL;
		}
		if(g->read_txn){
			mdb_txn_abort(g->read_txn);
			g->read_txn = NULL;
		}
		if(sig == SIGBUS && st->short_file){
			snprintf(err, errlen, "data file in %s is truncated: a page of the %s database lies past "
					"its end (%lld bytes)", st->path, fault_where, st->file_bytes);
		}else{
			snprintf(err, errlen, "data file in %s is damaged: LMDB faulted (%s) in the %s database",
					st->path, strsignal(sig), fault_where);
		}
		return STORE_ERR_CORRUPT;
	}
	return rc;
}

static int damaged(struct store *st, int rc, char *err, size_t errlen)
{
	snprintf(err, errlen, "data file in %s is damaged (%s database: %s)",
			st->path, fault_where, mdb_strerror(rc));
	return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID
		|| rc == MDB_BAD_DBI || rc == MDB_INCOMPATIBLE ? STORE_ERR_CORRUPT : STORE_ERR_IO;
}

/* The unnamed database holds the named ones' records, and nothing else. */
static bool known_db_name(const MDB_val *k)
{
	for(int i = 0; i <= DB_COUNT; i++){
		const char *name = i == DB_COUNT ? legacy_queue_name : db_names[i];
		if(k->mv_size == strlen(name) && !memcmp(k->mv_data, name, k->mv_size)){
			return true;
		}
	}
	return false;
}

/* Counts a database's entries and reads its first and last. */
static int walk_ends(MDB_txn *txn, MDB_dbi dbi, MDB_cursor *cur, uint64_t *records)
{
	volatile uint8_t sink = 0;
	MDB_stat ms;
	MDB_val k, v;
	int rc = mdb_stat(txn, dbi, &ms);

	if(rc == 0){
		*records += ms.ms_entries;
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	if(rc == 0){
		rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	}
	if(rc == 0 && v.mv_size){
		sink ^= ((const uint8_t *)v.mv_data)[v.mv_size - 1];
	}
	(void)sink;
	return rc;
}

/* Visits every key of the free-page list, the list of named databases and
 * each named database, and touches both ends of every value (which brings
 * in overflow pages), in one read transaction. */
static int walk_structure(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	uint64_t *records = g->arg;
	volatile uint8_t sink = 0;
	bool unknown_name = false;
	MDB_cursor *cur;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	int rc;

	rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
	if(rc){
		return damaged(st, rc, err, errlen);
	}
	g->read_txn = txn;
	for(int i = -2; i <= DB_COUNT && rc == 0; i++){
		if(i == -2){
			fault_where = "free-page";
			dbi = 0; /* LMDB's FREE_DBI, readable in a read transaction */
		}else{
			/* The unnamed database lists the named ones: a damaged page
			 * there can make a named database look absent. */
			fault_where = i < 0 ? "main" : i == DB_COUNT ? legacy_queue_name : db_names[i];
			rc = mdb_dbi_open(txn, i < 0 ? NULL : fault_where, i < 0 || i == DB_COUNT ? 0 : db_flags(i), &dbi);
			if(rc == MDB_NOTFOUND){
				rc = 0;
				continue;
			}
		}
		if(rc == 0){
			rc = mdb_cursor_open(txn, dbi, &cur);
		}
		if(rc){
			break;
		}
		g->cursor = cur;
		if(st->lazy && !st->short_file && (i == DB_QUEUE || i == DB_MSGS)){
			/* Read when needed, and checked then: walking them here would
			 * make the start grow with the backlog. A short file has every
			 * tree read, since a page past its end would fault later, in
			 * the running broker. */
			rc = walk_ends(txn, dbi, cur, records);
		}else{
			for(int op = MDB_FIRST; (rc = mdb_cursor_get(cur, &k, &v, op)) == 0; op = MDB_NEXT){
				if(i == -1 && !known_db_name(&k)){
					unknown_name = true;
					break;
				}
				if(v.mv_size){
					sink ^= ((const uint8_t *)v.mv_data)[0] ^ ((const uint8_t *)v.mv_data)[v.mv_size - 1];
				}
				if(i >= 0){
					(*records)++;
				}
			}
		}
		mdb_cursor_close(cur);
		g->cursor = NULL;
		if(rc == MDB_NOTFOUND){
			rc = 0;
		}
		if(unknown_name){
			break;
		}
	}
	(void)sink;
	g->read_txn = NULL;
	mdb_txn_abort(txn);
	if(rc){
		return damaged(st, rc, err, errlen);
	}
	if(unknown_name){
		/* A damaged page read as a list of databases: creating the missing
		 * ones at open would have LMDB rewrite it. */
		snprintf(err, errlen, "data file in %s is damaged (main database: it lists a database this "
				"plugin never creates)", st->path);
		return STORE_ERR_CORRUPT;
	}
	st->stats.records = *records;
	return STORE_OK;
}

int store_check_structure(struct store *st, uint64_t *records, char *err, size_t errlen)
{
	struct guarded g = {.fn = walk_structure, .arg = records};
	int rc;

	*records = 0;
	rc = run_guarded(st, &g, err, errlen);
	store_unmap_pages(st);
	return rc;
}

void store_unmap_pages(struct store *st)
{
	/* The broker's thread does not wait for the writer's: a busy writer
	 * does it after its commit. */
	if(pthread_mutex_trylock(&st->txn_lock)){
		atomic_store(&st->unmap_wanted, true);
		return;
	}
	bool recycled = unmap_data(st);
	pthread_mutex_unlock(&st->txn_lock);
	if(recycled){
		heap_release();
	}
}

/* Schema 1 to 2: moves the entries of the legacy queue database into the
 * DUPSORT one, at most OPS_PER_TXN per transaction (each moves and deletes
 * its entries, so a crash in between resumes where it stopped), then drops
 * the legacy database and records schema 2 in the same transaction. */
static int queues_upgrade(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	struct buf entry = {0};
	uint64_t moved = 0;
	bool done = false;
	int rc = 0;

	(void)g;
	fault_where = legacy_queue_name;
	while(rc == 0 && !done){
		MDB_cursor *cur = NULL;
		MDB_txn *txn;
		MDB_dbi legacy;
		MDB_val k, v;
		size_t n = 0;

		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
		if(rc){
			break;
		}
		rc = mdb_dbi_open(txn, legacy_queue_name, 0, &legacy);
		if(rc == 0){
			rc = mdb_cursor_open(txn, legacy, &cur);
		}
		while(rc == 0 && n < OPS_PER_TXN && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0){
			MDB_val dk = {HASH_LEN, k.mv_data}, dv;
			uint8_t *p;

			buf_reset(&entry);
			p = buf_extend(&entry, QUEUE_SEQ_LEN + v.mv_size);
			if(k.mv_size != QUEUE_KEY_LEN){
				rc = MDB_CORRUPTED;
			}else if(!p){
				rc = ENOMEM;
			}else{
				memcpy(p, (uint8_t *)k.mv_data + HASH_LEN, QUEUE_SEQ_LEN);
				memcpy(p + QUEUE_SEQ_LEN, v.mv_data, v.mv_size);
				dv.mv_data = p;
				dv.mv_size = entry.len;
				rc = mdb_put(txn, st->dbi[DB_QUEUE], &dk, &dv, 0);
			}
			if(rc == 0){
				rc = mdb_cursor_del(cur, 0);
				n++;
			}
		}
		if(cur){
			mdb_cursor_close(cur);
		}
		if(rc == MDB_NOTFOUND){
			/* Every entry moved (or no legacy database at all). */
			done = true;
			rc = mdb_dbi_open(txn, legacy_queue_name, 0, &legacy);
			rc = rc == 0 ? mdb_drop(txn, legacy, 1) : rc == MDB_NOTFOUND ? 0 : rc;
			if(rc == 0){
				uint8_t be[4];
				put_be32(be, 2);
				rc = meta_put(st, txn, "schema", be, 4);
			}
		}
		if(rc == 0){
			rc = mdb_txn_commit(txn);
			moved += n;
		}else{
			mdb_txn_abort(txn);
		}
	}
	buf_free(&entry);
	if(rc){
		snprintf(err, errlen, "cannot convert the queues of %s to schema 2: %s", st->path,
				rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
		return rc == MDB_CORRUPTED ? STORE_ERR_CORRUPT : STORE_ERR_IO;
	}
	st->upgrade_queues = false;
	logf_(st, STORE_LOG_INFO, "persist-lmdb: converted %s to schema 2 (%" PRIu64 " queued entries moved)",
			st->path, moved);
	return STORE_OK;
}

/* Schema 2 to 3: counts the references of every body (queue entries and
 * retained entries) and records schema 3, in one transaction. */
static int refs_upgrade(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	uint8_t key[QUEUE_KEY_LEN];
	MDB_cursor *cur = NULL;
	MDB_txn *txn;
	MDB_val k, v;
	uint64_t entries = 0, bodies = 0;
	int rc;

	(void)g;
	fault_where = "refs";
	rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if(rc){
		goto out;
	}
	refd_reset(st);
	rc = mdb_drop(txn, st->dbi[DB_REFS], 0);
	if(rc == 0){
		rc = mdb_cursor_open(txn, st->dbi[DB_QUEUE], &cur);
	}
	for(int op = MDB_FIRST; rc == 0; op = MDB_NEXT){
		struct rec_queue q;
		rc = mdb_cursor_get(cur, &k, &v, op);
		if(rc){
			break;
		}
		if(k.mv_size != HASH_LEN || v.mv_size < QUEUE_SEQ_LEN){
			rc = MDB_CORRUPTED;
			break;
		}
		memcpy(key, k.mv_data, HASH_LEN);
		memcpy(key + HASH_LEN, v.mv_data, QUEUE_SEQ_LEN);
		if(!open_in_txn(st, DB_QUEUE, key, QUEUE_KEY_LEN, (uint8_t *)v.mv_data + QUEUE_SEQ_LEN,
				v.mv_size - QUEUE_SEQ_LEN)
				|| record_decode_queue(st->wpt.data, v.mv_size - QUEUE_SEQ_LEN - SEAL_OVERHEAD, &q)){
			reject_in_txn(st);
			continue;
		}
		rc = refd_add(st, q.store_id, 1);
		entries++;
	}
	if(cur){
		mdb_cursor_close(cur);
		cur = NULL;
	}
	if(rc == MDB_NOTFOUND){
		rc = mdb_cursor_open(txn, st->dbi[DB_RETAINED], &cur);
	}
	for(int op = MDB_FIRST; rc == 0; op = MDB_NEXT){
		struct rec_retain r;
		rc = mdb_cursor_get(cur, &k, &v, op);
		if(rc){
			break;
		}
		if(!open_in_txn(st, DB_RETAINED, k.mv_data, k.mv_size, v.mv_data, v.mv_size)
				|| record_decode_retain(st->wpt.data, v.mv_size - SEAL_OVERHEAD, &r)){
			reject_in_txn(st);
			continue;
		}
		rc = refd_add(st, r.store_id, 1);
		entries++;
	}
	if(cur){
		mdb_cursor_close(cur);
	}
	if(rc == MDB_NOTFOUND){
		/* Absolute counts: written as records whatever a body's own
		 * record says. */
		for(size_t i = 0; i < st->refd_cap; i++){
			if(st->refd[i].gen == st->refd_gen){
				st->refd[i].created = true;
				st->refd[i].refs0 = -1;
			}
		}
		bodies = st->refd_n;
		rc = refs_flush(st, txn);
	}
	if(rc == 0){
		uint8_t be[4];
		put_be32(be, STORE_SCHEMA_VERSION);
		rc = meta_put(st, txn, "schema", be, 4);
	}
	if(rc == 0){
		rc = mdb_txn_commit(txn);
	}else{
		refd_reset(st);
		mdb_txn_abort(txn);
	}
out:
	if(rc){
		snprintf(err, errlen, "cannot count the message references of %s (schema 3): %s", st->path,
				rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
		return rc == MDB_CORRUPTED ? STORE_ERR_CORRUPT : STORE_ERR_IO;
	}
	st->upgrade_refs = false;
	logf_(st, STORE_LOG_INFO, "persist-lmdb: converted %s to schema %u (%" PRIu64 " references to %"
			PRIu64 " messages counted)", st->path, STORE_SCHEMA_VERSION, entries, bodies);
	return STORE_OK;
}

struct open_args {
	const uint8_t *key;
	uint8_t new_key_id;
	uint32_t epoch_floor;   /* a new database's first epoch is above it */
};

/* The first transaction: opens (or creates) the named databases and the
 * meta record of this run. */
static int open_databases(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	const struct open_args *a = g->arg;
	MDB_txn *txn;
	int rc;

	fault_where = "main";
	rc = mdb_txn_begin(st->env, NULL, st->read_only ? MDB_RDONLY : 0, &txn);
	if(rc){
		return env_error(st, rc, err, errlen);
	}
	for(int i = 0; i < DB_COUNT; i++){
		rc = mdb_dbi_open(txn, db_names[i], (st->read_only ? 0 : MDB_CREATE) | db_flags(i), &st->dbi[i]);
		if(rc == MDB_NOTFOUND && st->read_only){
			st->dbi[i] = 0;
			if(i == DB_META){
				snprintf(err, errlen, "%s holds no persist-lmdb database", st->path);
				rc = STORE_ERR_IO;
				goto fail;
			}
			continue;
		}
		if(rc){
			rc = env_error(st, rc, err, errlen);
			goto fail;
		}
	}
	fault_where = "meta";
	st->seal = seal_new(a->key, stored_key_id(st, txn, a->new_key_id));
	if(!st->seal){
		snprintf(err, errlen, "cannot set up AES-256-GCM and HMAC-SHA256 (OpenSSL)");
		rc = STORE_ERR_CRYPTO;
		goto fail;
	}
	rc = meta_open(st, txn, a->epoch_floor, err, errlen);
	if(rc){
		goto fail;
	}
	if(st->read_only){
		mdb_txn_commit(txn); /* not abort: that would close the DBI handles */
		return STORE_OK;
	}
	st->wseal = seal_split(st->seal);
	if(!st->wseal){
		snprintf(err, errlen, "cannot set up AES-256-GCM for the writer (OpenSSL)");
		rc = STORE_ERR_CRYPTO;
		goto fail;
	}
	rc = mdb_txn_commit(txn);
	/* On the disk before anything is sealed under the new epoch's key: a
	 * synced journal record must never outlive the salt that opens it. */
	if(rc == 0){
		rc = mdb_env_sync(st->env, 1);
	}
	if(rc){
		return env_error(st, rc, err, errlen);
	}
	if(st->upgraded_seal){
		logf_(st, STORE_LOG_INFO, "persist-lmdb: converted %s to schema %u (records are sealed under a key "
				"of each open from now on; earlier releases do not read it)", st->path, STORE_SCHEMA_VERSION);
	}
	return STORE_OK;

fail:
	mdb_txn_abort(txn);
	return rc;
}

static bool journal_beside(const char *dir)
{
	char path[4096];

	return snprintf(path, sizeof(path), "%s/journal", dir) < (int)sizeof(path) && access(path, F_OK) == 0;
}

static int open_at(struct store **out, const char *path, size_t map_size,
		const uint8_t key[SEAL_KEY_LEN], unsigned flags, uint8_t new_key_id, uint32_t epoch_floor, bool create,
		store_log_fn log, char *err, size_t errlen)
{
	char datafile[4096];
	struct store *st;
	struct stat sb;
	int rc;

	*out = NULL;
	st = calloc(1, sizeof(*st));
	if(!st || !(st->path = strdup(path))){
		free(st);
		snprintf(err, errlen, "out of memory");
		return STORE_ERR_NOMEM;
	}
	pthread_mutexattr_t recursive;
	pthread_mutexattr_init(&recursive);
	pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
	/* Recursive: restore nests walks. */
	pthread_mutex_init(&st->txn_lock, &recursive);
	pthread_mutexattr_destroy(&recursive);
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->wake, NULL);
	pthread_cond_init(&st->idle, NULL);
	st->log = log;
	st->lock_fd = -1;
	st->read_only = flags & STORE_READ_ONLY;
	st->no_sync = flags & STORE_NO_SYNC;
	st->lazy = flags & STORE_LAZY;
	st->map_size = map_size ? map_size : STORE_DEFAULT_MAP_SIZE;
	if(snprintf(datafile, sizeof(datafile), "%s/data.mdb", path) >= (int)sizeof(datafile)){
		snprintf(err, errlen, "database path too long");
		rc = STORE_ERR_IO;
		goto fail;
	}
	if(stat(path, &sb) != 0){
		if(errno != ENOENT || st->read_only || make_dirs(path) != 0){
			snprintf(err, errlen, "cannot use database directory %s: %s", path, strerror(errno));
			rc = errno == EACCES || errno == EROFS ? STORE_ERR_READONLY : STORE_ERR_IO;
			goto fail;
		}
	}else if(!S_ISDIR(sb.st_mode)){
		snprintf(err, errlen, "database path %s is not a directory", path);
		rc = STORE_ERR_IO;
		goto fail;
	}
	if(create && stat(datafile, &sb) == 0){
		snprintf(err, errlen, "%s already holds a database", path);
		rc = STORE_ERR_EXISTS;
		goto fail;
	}
	if(!st->read_only){
		rc = lock_writer(st, err, errlen);
		if(rc){
			goto fail;
		}
	}

	/* LMDB writes a new file's meta pages before anything else, and the
	 * plugin creates the journal only after the database's first commit:
	 * a missing or empty data file next to a journal lost what it held
	 * (LMDB would start a new database over it), while an empty one alone
	 * is a creation cut short, which LMDB starts again. */
	bool missing = false, empty = false;
	if(stat(datafile, &sb) == 0){
		empty = sb.st_size == 0;
	}else{
		missing = errno == ENOENT;
	}
	if(!create && (missing || empty) && journal_beside(path)){
		snprintf(err, errlen, "data file %s is %s, but the journal of a database that held data is "
				"beside it", datafile, missing ? "missing" : "empty (0 bytes)");
		rc = STORE_ERR_CORRUPT;
		goto fail;
	}

	rc = env_open(st);
	if(rc){
		rc = env_error(st, rc, err, errlen);
		goto fail;
	}
	rc = check_size(st, datafile, err, errlen);
	if(rc == STORE_OK){
		uint64_t records;
		rc = store_check_structure(st, &records, err, errlen);
	}
	if(rc){
		goto fail;
	}

	if(rc == STORE_OK){
		struct open_args args = {.key = key, .new_key_id = new_key_id, .epoch_floor = epoch_floor};
		struct guarded g = {.fn = open_databases, .arg = &args};
		rc = run_guarded(st, &g, err, errlen);
	}
	if(rc == STORE_OK && st->upgrade_queues){
		struct guarded g = {.fn = queues_upgrade};
		rc = run_guarded(st, &g, err, errlen);
	}
	if(rc == STORE_OK && st->upgrade_refs && !st->read_only){
		struct guarded g = {.fn = refs_upgrade};
		rc = run_guarded(st, &g, err, errlen);
	}
	if(rc){
		goto fail;
	}
	used_measure(st, true);
	*out = st;
	return STORE_OK;

fail:
	store_close(st);
	return rc;
}

int store_open(struct store **out, const char *path, size_t map_size,
		const uint8_t key[SEAL_KEY_LEN], unsigned flags, store_log_fn log,
		char *err, size_t errlen)
{
	return open_at(out, path, map_size, key, flags, 1, 0, false, log, err, errlen);
}

int store_create(struct store **out, const char *path, size_t map_size,
		const uint8_t key[SEAL_KEY_LEN], uint8_t key_id, uint32_t epoch_floor, store_log_fn log,
		char *err, size_t errlen)
{
	return open_at(out, path, map_size, key, 0, key_id, epoch_floor, true, log, err, errlen);
}


int store_set_aside(const char *path, char *dest, size_t destlen, char *err, size_t errlen)
{
	struct store lock = {.path = (char *)path, .lock_fd = -1};
	char stamp[32];
	struct tm tm;
	time_t now = time(NULL);
	size_t len = strlen(path);
	struct stat sb;
	int rc = STORE_OK;

	while(len > 1 && path[len - 1] == '/'){
		len--;
	}
	/* Not while another process writes it. */
	rc = lock_writer(&lock, err, errlen);
	if(rc){
		if(lock.lock_fd >= 0){
			close(lock.lock_fd);
		}
		return rc;
	}
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	rc = STORE_ERR_EXISTS;
	for(int n = 0; n < 100 && rc == STORE_ERR_EXISTS; n++){
		int w = n ? snprintf(dest, destlen, "%.*s.damaged-%s-%d", (int)len, path, stamp, n)
			: snprintf(dest, destlen, "%.*s.damaged-%s", (int)len, path, stamp);
		if(w < 0 || (size_t)w >= destlen){
			snprintf(err, errlen, "database path %s too long to set aside", path);
			rc = STORE_ERR_IO;
		}else if(lstat(dest, &sb) != 0 && errno == ENOENT){
			rc = rename(path, dest) == 0 ? STORE_OK : STORE_ERR_IO;
			if(rc){
				snprintf(err, errlen, "cannot move %s to %s: %s", path, dest, strerror(errno));
			}
		}
	}
	if(rc == STORE_ERR_EXISTS){
		snprintf(err, errlen, "cannot set %s aside: 100 names of today's damaged copies are taken", path);
	}
	close(lock.lock_fd);
	return rc;
}

int store_copy_compact(struct store *st, const char *dest, char *err, size_t errlen)
{
	int rc;

	char copy[4096];

	pthread_mutex_lock(&st->txn_lock);
	rc = st->env ? mdb_env_copy2(st->env, dest, MDB_CP_COMPACT) : MDB_PANIC;
	pthread_mutex_unlock(&st->txn_lock);
	if(rc){
		snprintf(err, errlen, "cannot copy %s to %s: %s", st->path, dest, mdb_strerror(rc));
		return STORE_ERR_IO;
	}
	/* LMDB creates the copy with the umask's mode. */
	snprintf(copy, sizeof(copy), "%s/data.mdb", dest);
	if(chmod(copy, 0600) != 0){
		snprintf(err, errlen, "cannot restrict %s to its owner: %s", copy, strerror(errno));
		return STORE_ERR_IO;
	}
	return STORE_OK;
}

static uint64_t db_pages(const MDB_stat *ms)
{
	return ms->ms_branch_pages + ms->ms_leaf_pages + ms->ms_overflow_pages;
}

/* LMDB counts the pages of a DUPSORT database's per-key subtrees nowhere.
 * Every page of the file is a meta page, a free page, a page of the free
 * list or of the main database, or a page of one named database: the
 * queues' share is what the others leave. */
static int queue_bytes(struct store *st, MDB_txn *txn, uint64_t *bytes)
{
	MDB_envinfo info;
	MDB_stat ms;
	uint64_t other = 2, free_pages = 0;
	int rc;

	rc = mdb_env_info(st->env, &info);
	for(int i = -2; rc == 0 && i < DB_COUNT; i++){
		if(i == DB_QUEUE || (i >= 0 && !st->dbi[i])){
			continue;
		}
		rc = mdb_stat(txn, i == -2 ? 0 : i == -1 ? 1 : st->dbi[i], &ms); /* FREE_DBI, MAIN_DBI */
		other += db_pages(&ms);
	}
	if(rc == 0){
		rc = free_page_count(txn, &free_pages);
	}
	if(rc){
		return rc;
	}
	uint64_t total = (uint64_t)info.me_last_pgno + 1;
	*bytes = total > other + free_pages ? (total - other - free_pages) * ms.ms_psize : 0;
	return 0;
}

int store_count(struct store *st, enum store_db db, uint64_t *entries, uint64_t *bytes)
{
	MDB_txn *txn;
	MDB_stat ms;
	int rc;

	*entries = *bytes = 0;
	if((unsigned)db >= DB_COUNT || !st->dbi[db]){
		return STORE_OK;
	}
	pthread_mutex_lock(&st->txn_lock);
	rc = st->env ? mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) : MDB_PANIC;
	if(rc == 0){
		rc = mdb_stat(txn, st->dbi[db], &ms);
		if(rc == 0){
			*entries = ms.ms_entries;
			*bytes = (uint64_t)ms.ms_psize * db_pages(&ms);
		}
		if(rc == 0 && db == DB_QUEUE){
			rc = queue_bytes(st, txn, bytes);
		}
		mdb_txn_abort(txn);
	}
	pthread_mutex_unlock(&st->txn_lock);
	return rc ? STORE_ERR_IO : STORE_OK;
}

int store_count_online_sessions(struct store *st, uint64_t *n)
{
	MDB_cursor *cur = NULL;
	MDB_txn *txn;
	MDB_val k, v;
	int rc;

	*n = 0;
	if(!st->dbi[DB_ONLINE] || !st->dbi[DB_SESSIONS]){
		return STORE_OK;
	}
	pthread_mutex_lock(&st->txn_lock);
	rc = st->env ? mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) : MDB_PANIC;
	if(rc == 0){
		rc = mdb_cursor_open(txn, st->dbi[DB_ONLINE], &cur);
		for(int op = MDB_FIRST; rc == 0; op = MDB_NEXT){
			rc = mdb_cursor_get(cur, &k, &v, op);
			if(rc == 0){
				MDB_val sv;
				int g = mdb_get(txn, st->dbi[DB_SESSIONS], &k, &sv);
				if(g == 0){
					(*n)++;
				}else if(g != MDB_NOTFOUND){
					rc = g;
				}
			}
		}
		if(rc == MDB_NOTFOUND){
			rc = 0;
		}
		mdb_cursor_close(cur);
		mdb_txn_abort(txn);
	}
	pthread_mutex_unlock(&st->txn_lock);
	return rc ? STORE_ERR_IO : STORE_OK;
}

int store_file_size(struct store *st, uint64_t *file_bytes, uint64_t *map_bytes)
{
	char datafile[4096];
	struct stat sb;

	snprintf(datafile, sizeof(datafile), "%s/data.mdb", st->path);
	if(stat(datafile, &sb) != 0){
		return STORE_ERR_IO;
	}
	*file_bytes = (uint64_t)sb.st_size;
	pthread_mutex_lock(&st->lock);
	*map_bytes = st->map_size;
	pthread_mutex_unlock(&st->lock);
	return STORE_OK;
}

/* ---- cross-references ---- */

struct id_set {
	uint8_t *v;        /* sorted fixed-size keys */
	size_t n, cap, width;
	uint32_t *uses;    /* per key, for msgs: references counted */
	uint32_t *refs0;   /* per key, for msgs: the count its record holds */
	uint8_t *counted;  /* per key, for msgs: its refs record was seen */
};

static int id_set_add(struct id_set *s, const void *key)
{
	if(s->n == s->cap){
		size_t cap = s->cap ? s->cap * 2 : 1024;
		uint8_t *v = realloc(s->v, cap * s->width);
		if(!v){
			return -1;
		}
		s->v = v;
		s->cap = cap;
	}
	memcpy(s->v + s->n * s->width, key, s->width);
	s->n++;
	return 0;
}

static long id_set_find(const struct id_set *s, const void *key)
{
	size_t lo = 0, hi = s->n;

	while(lo < hi){
		size_t mid = (lo + hi) / 2;
		int c = memcmp(s->v + mid * s->width, key, s->width);
		if(c == 0){
			return (long)mid;
		}
		if(c < 0){
			lo = mid + 1;
		}else{
			hi = mid;
		}
	}
	return -1;
}

/* The keys of a database, in LMDB (memcmp) order, truncated to width. */
static int collect_keys(struct store *st, enum store_db db, struct id_set *s)
{
	MDB_cursor *cur;
	MDB_txn *txn;
	MDB_val k, v;
	int rc;

	if(!st->dbi[db]){
		return 0;
	}
	pthread_mutex_lock(&st->txn_lock);
	rc = st->env ? mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) : MDB_PANIC;
	if(rc == 0){
		rc = mdb_cursor_open(txn, st->dbi[db], &cur);
		if(rc == 0){
			for(int op = MDB_FIRST; (rc = mdb_cursor_get(cur, &k, &v, op)) == 0; op = MDB_NEXT){
				if(k.mv_size >= s->width && (s->n == 0
						|| memcmp(s->v + (s->n - 1) * s->width, k.mv_data, s->width) != 0)){
					if(id_set_add(s, k.mv_data)){
						rc = ENOMEM;
						break;
					}
				}
			}
			mdb_cursor_close(cur);
		}
		mdb_txn_abort(txn);
	}
	pthread_mutex_unlock(&st->txn_lock);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

struct refs_walk {
	struct id_set *sessions, *msgs;
	struct store_refs *out;
};

static void mark_body(struct refs_walk *rw, uint64_t store_id, uint64_t *dangling)
{
	uint8_t key[8];
	long i;

	put_be64(key, store_id);
	i = id_set_find(rw->msgs, key);
	if(i < 0){
		(*dangling)++;
	}else{
		rw->msgs->uses[i]++;
	}
}

static int visit_queue_refs(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct refs_walk *rw = ctx;
	struct rec_queue q;

	(void)fn;
	if(k->mv_size != HASH_LEN + 8 || record_decode_queue(pt, len, &q)){
		return -1;
	}
	if(id_set_find(rw->sessions, k->mv_data) < 0){
		rw->out->queue_without_session++;
	}
	mark_body(rw, q.store_id, &rw->out->dangling_queue);
	*cb_rc = 0;
	return 0;
}

static int visit_retain_refs(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct refs_walk *rw = ctx;
	struct rec_retain r;

	(void)k;
	(void)fn;
	if(record_decode_retain(pt, len, &r)){
		return -1;
	}
	mark_body(rw, r.store_id, &rw->out->dangling_retained);
	*cb_rc = 0;
	return 0;
}

/* A refs record with count (also 0: it overrides the body's refs0). */
static int refs_count_put(struct store *st, uint64_t store_id, uint64_t count)
{
	uint8_t key[8], *p;

	put_be64(key, store_id);
	buf_reset(&st->pt);
	p = buf_extend(&st->pt, 8);
	if(!p){
		st->pt.err = false;
		return STORE_ERR_NOMEM;
	}
	put_be64(p, count);
	return op_append(st, OP_PUT, DB_REFS, key, sizeof(key));
}

struct refs_check {
	struct store *st;
	struct id_set *msgs;
	struct store_refs *out;
	bool repair;
	int rc;
};

/* A stored count: right when it matches the references counted. */
static int visit_refs(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct refs_check *rc = ctx;
	long i;

	(void)fn;
	if(k->mv_size != 8 || len != 8){
		return -1;
	}
	i = id_set_find(rc->msgs, k->mv_data);
	if(i >= 0){
		rc->msgs->counted[i] = 1;
	}
	/* A count of a missing body goes with dangling entries, reported as such. */
	if(i >= 0 && rc->msgs->uses[i] != get_be64(pt)){
		rc->out->refs_wrong++;
		if(rc->repair && rc->rc == STORE_OK){
			rc->rc = refs_count_put(rc->st, get_be64(k->mv_data), rc->msgs->uses[i]);
		}
	}
	*cb_rc = 0;
	return 0;
}

/* Reads the refs0 of every body into msgs->refs0, setting msgs->counted
 * for a body that does not open (the walks that read it report it; its
 * count is not judged). */
static int read_refs0(struct store *st, struct id_set *msgs)
{
	uint8_t ad[1 + 8];
	MDB_txn *txn;
	int rc = st->env ? mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) : MDB_PANIC;

	if(rc){
		return STORE_ERR_IO;
	}
	for(size_t i = 0; i < msgs->n; i++){
		const uint8_t *key = msgs->v + i * msgs->width;
		MDB_val k = {8, (void *)key}, v;
		struct rec_base_msg m;
		size_t len;

		make_ad(ad, DB_MSGS, key, 8);
		buf_reset(&st->pt);
		if(mdb_get(txn, st->dbi[DB_MSGS], &k, &v) || v.mv_size < SEAL_OVERHEAD
				|| !buf_extend(&st->pt, v.mv_size - SEAL_OVERHEAD)
				|| seal_open(st->seal, ad, sizeof(ad), v.mv_data, v.mv_size, st->pt.data, &len) != SEAL_OK
				|| record_decode_base_msg(st->pt.data, len, &m)){
			st->pt.err = false;
			msgs->counted[i] = 1;
			continue;
		}
		msgs->refs0[i] = m.refs0;
	}
	seal_wipe(st->pt.data, st->pt.cap);
	mdb_txn_abort(txn);
	return STORE_OK;
}

int store_check_refs(struct store *st, bool delete_orphans, struct store_refs *out)
{
	struct id_set sessions = {.width = HASH_LEN}, msgs = {.width = 8}, subs = {.width = HASH_LEN};
	struct refs_walk rw = {&sessions, &msgs, out};
	int rc;

	memset(out, 0, sizeof(*out));
	/* One view for all the walks: our own writer cannot commit meanwhile. */
	pthread_mutex_lock(&st->txn_lock);
	rc = collect_keys(st, DB_SESSIONS, &sessions) || collect_keys(st, DB_MSGS, &msgs)
		|| collect_keys(st, DB_SUBS, &subs) ? STORE_ERR_IO : STORE_OK;
	if(rc == STORE_OK && msgs.n && (!(msgs.uses = calloc(msgs.n, sizeof(*msgs.uses)))
			|| !(msgs.counted = calloc(msgs.n, 1)) || !(msgs.refs0 = calloc(msgs.n, sizeof(*msgs.refs0))))){
		rc = STORE_ERR_NOMEM;
	}
	if(rc == STORE_OK && msgs.n){
		rc = read_refs0(st, &msgs);
	}
	if(rc == STORE_OK){
		rc = walk_db(st, DB_QUEUE, NULL, 0, visit_queue_refs, NULL, &rw);
	}
	if(rc == STORE_OK){
		rc = walk_db(st, DB_RETAINED, NULL, 0, visit_retain_refs, NULL, &rw);
	}
	for(size_t i = 0; rc == STORE_OK && i < subs.n; i++){
		if(id_set_find(&sessions, subs.v + i * subs.width) < 0){
			out->subs_without_session++;
		}
	}
	if(rc == STORE_OK && st->dbi[DB_REFS]){
		struct refs_check chk = {st, &msgs, out, delete_orphans, STORE_OK};
		rc = walk_db(st, DB_REFS, NULL, 0, visit_refs, NULL, &chk);
		if(rc == STORE_OK){
			rc = chk.rc;
		}
	}
	for(size_t i = 0; rc == STORE_OK && i < msgs.n; i++){
		uint64_t store_id = get_be64(msgs.v + i * msgs.width);
		/* Without a refs record the body's own record holds its count. */
		if(st->dbi[DB_REFS] && !msgs.counted[i] && msgs.uses[i] != msgs.refs0[i]){
			out->refs_wrong++;
			if(delete_orphans){
				rc = refs_count_put(st, store_id, msgs.uses[i]);
			}
		}
		if(rc == STORE_OK && !msgs.uses[i]){
			out->orphan_msgs++;
			if(delete_orphans){
				rc = store_msg_release(st, store_id);
			}
		}
	}
	pthread_mutex_unlock(&st->txn_lock);
	free(sessions.v);
	free(msgs.v);
	free(msgs.uses);
	free(msgs.counted);
	free(msgs.refs0);
	free(subs.v);
	return rc;
}

void store_close(struct store *st)
{
	if(!st){
		return;
	}
	writer_stop(st);
	opener_stop(st);
	if(st->env){
		mdb_env_close(st->env);
	}
	if(st->lock_fd >= 0){
		close(st->lock_fd);
	}
	pthread_mutex_destroy(&st->txn_lock);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->wake);
	pthread_cond_destroy(&st->idle);
	seal_free(st->seal);
	seal_free(st->wseal);
	hash_cache_free(st);
	/* Plaintext: the scratch records, and values not sealed yet. */
	struct buf *plain[] = {&st->pt, &st->wpt, &st->ops, &st->wops};
	for(size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++){
		if(plain[i]->data){
			seal_wipe(plain[i]->data, plain[i]->cap);
		}
		buf_free(plain[i]);
	}
	free(st->pend);
	free(st->refd);
	free(st->newb);
	free(st->path);
	free(st);
}

uint32_t store_epoch(const struct store *st)
{
	return st->epoch;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void store_get_stats(const struct store *st, struct store_stats *out)
{
	struct store *m = (struct store *)st;

	uint64_t lat[COMMIT_RING];
	size_t n;

	pthread_mutex_lock(&m->lock);
	*out = st->stats;
	out->pending_ops = st->n_ops + st->n_wops;
	out->map_size = st->map_size;
	n = st->n_commit_us < COMMIT_RING ? st->n_commit_us : COMMIT_RING;
	memcpy(lat, st->commit_us, n * sizeof(lat[0]));
	pthread_mutex_unlock(&m->lock);
	out->key_id = st->seal ? seal_key_id(st->seal) : 0;
	qsort(lat, n, sizeof(lat[0]), cmp_u64);
	out->commit_us_p50 = n ? lat[n / 2] : 0;
	out->commit_us_p99 = n ? lat[(n * 99) / 100] : 0;
}

const char *store_db_name(enum store_db db)
{
	return (unsigned)db < DB_COUNT ? db_names[db] : "?";
}

const char *store_strerror(int rc)
{
	switch(rc){
		case STORE_OK: return "ok";
		case STORE_ERR_NOMEM: return "out of memory";
		case STORE_ERR_IO: return "I/O error";
		case STORE_ERR_KEY: return "the key does not match this database";
		case STORE_ERR_CORRUPT: return "the data file is damaged";
		case STORE_ERR_VERSION: return "unsupported database version";
		case STORE_ERR_CRYPTO: return "cryptographic failure";
		case STORE_ERR_READONLY: return "read-only";
		case STORE_ERR_BUSY: return "the database is open for writing elsewhere";
		case STORE_ERR_EXISTS: return "a database exists there already";
	}
	return "unknown error";
}
