/* Reads: walks over a database in batches of records, opened (unsealed) by
 * the opener thread while the next batch is read; single-record gets. */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- reads ---- */

struct walk {
	struct store *st;
	enum store_db db;
	const uint8_t *prefix;
	size_t plen;
	bool offline_only;  /* skip records whose client hash (the key's start) is in DB_ONLINE */
	const uint8_t *from;  /* DB_QUEUE with a client's prefix: the first seq (u64 BE), or NULL */
	bool back;            /* DB_QUEUE with a client's prefix: newest first */
};

static void reject(struct store *st, enum store_db db, const char *why)
{
	pthread_mutex_lock(&st->lock);
	st->stats.records_rejected++;
	pthread_mutex_unlock(&st->lock);
	store_log(st, STORE_LOG_WARNING, "persist-lmdb: rejected a %s record that %s; skipped, not served",
			store_db_names[db], why);
}

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
			store_ad(b->db, it->k.mv_data, it->k.mv_size, ad);
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

void store_opener_stop(struct store *st)
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
			if(store_thread_start(&o->thread, opener_main, o) == 0){
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
		uint8_t probe[QINDEX_PAIR_LEN] = {0};
		if(*op == MDB_SET_RANGE && w->from){
			/* A client's pairs sort by seq; no log id is 0. */
			memcpy(probe, w->from, QUEUE_SEQ_LEN);
			v.mv_data = probe;
			v.mv_size = sizeof(probe);
			*op = MDB_GET_BOTH_RANGE;
		}
		if(*op == MDB_SET){
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
			if(rc == 0){
				rc = mdb_cursor_get(cur, &k, &v, MDB_LAST_DUP);
			}
		}else{
			rc = mdb_cursor_get(cur, &k, &v, *op);
		}
		*op = w->back ? MDB_PREV_DUP : MDB_NEXT;
		if(rc == MDB_NOTFOUND
				|| (rc == 0 && w->plen && (k.mv_size < w->plen || memcmp(k.mv_data, w->prefix, w->plen) != 0))){
			*end = true;
			break;
		}
		if(rc){
			store_log(st, STORE_LOG_ERR, "persist-lmdb: reading %s from %s failed: %s",
					store_db_names[w->db], st->path, mdb_strerror(rc));
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
			/* An index pair, then its sealed log value: opened with the
			 * pair's logical key, it authenticates only as that entry. */
			MDB_val lk, lv;
			if(k.mv_size != HASH_LEN || v.mv_size != QINDEX_PAIR_LEN){
				continue;
			}
			memcpy(it->key, k.mv_data, HASH_LEN);
			memcpy(it->key + HASH_LEN, v.mv_data, QUEUE_SEQ_LEN);
			it->k.mv_size = QUEUE_KEY_LEN;
			lk.mv_data = (uint8_t *)v.mv_data + QUEUE_SEQ_LEN;
			lk.mv_size = QLOG_ID_LEN;
			rc = mdb_get(mdb_cursor_txn(cur), st->dbi[DB_QUEUE], &lk, &lv);
			if(rc && rc != MDB_NOTFOUND){
				store_log(st, STORE_LOG_ERR, "persist-lmdb: reading %s from %s failed: %s",
						store_db_names[w->db], st->path, mdb_strerror(rc));
				return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ? STORE_ERR_CORRUPT : STORE_ERR_IO;
			}
			if(rc == MDB_NOTFOUND){
				continue;
			}
			v = lv;
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

/* A read transaction, after adopting the map another process grew. Call
 * with txn_lock held. */
static int read_begin(struct store *st, MDB_txn **txn)
{
	int rc = st->env ? mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn) : MDB_PANIC;

	if(rc == MDB_MAP_RESIZED && store_map_adopt(st) == 0){
		rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
	}
	return rc;
}

static int walk_run(struct walk *w, decode_visit_fn visit, void *fn, void *ctx)
{
	struct store *st = w->st;
	struct walk_batch *batch[2] = {NULL, NULL};
	MDB_cursor *cur = NULL;
	MDB_txn *txn = NULL;
	bool end = false;
	int rc, op;

	/* A queue walk goes through the index. */
	MDB_dbi dbi = w->db == DB_QUEUE ? st->dbi[DB_QINDEX] : st->dbi[w->db];
	if((dbi == 0 || st->dbi[w->db] == 0) && w->db != DB_META){
		return STORE_OK;
	}
	pthread_mutex_lock(&st->txn_lock);
	rc = read_begin(st, &txn);
	if(rc == 0){
		rc = mdb_cursor_open(txn, dbi, &cur);
	}
	if(rc){
		store_log(st, STORE_LOG_ERR, "persist-lmdb: cannot read %s from %s: %s",
				store_db_names[w->db], st->path, mdb_strerror(rc));
		if(txn){
			mdb_txn_abort(txn);
		}
		pthread_mutex_unlock(&st->txn_lock);
		return STORE_ERR_IO;
	}
	batch[0] = batch_new();
	batch[1] = batch_new();
	op = w->back ? MDB_SET : w->plen ? MDB_SET_RANGE : MDB_FIRST;
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

/* One record by its whole key, opened on this thread: a walk without its
 * batches, transaction per batch and opener (a hand-back reads the body of
 * every entry it hands over: 9,000 instructions each as a walk). */
static int get_one(struct store *st, enum store_db db, const uint8_t *key, size_t klen, decode_visit_fn visit,
		void *fn, void *ctx)
{
	uint8_t ad[1 + KEY_MAX], small[512], *pt = small;
	MDB_val k = {klen, (void *)key}, v;
	MDB_txn *txn = NULL;
	size_t len = 0, cap = sizeof(small);
	int rc, result = STORE_OK;

	if(!st->dbi[db] || klen > KEY_MAX){
		return STORE_OK;
	}
	pthread_mutex_lock(&st->txn_lock);
	rc = read_begin(st, &txn);
	if(rc == 0){
		rc = mdb_get(txn, st->dbi[db], &k, &v);
	}
	if(rc && rc != MDB_NOTFOUND){
		store_log(st, STORE_LOG_ERR, "persist-lmdb: reading %s from %s failed: %s", store_db_names[db], st->path,
				mdb_strerror(rc));
		result = rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ? STORE_ERR_CORRUPT : STORE_ERR_IO;
	}else if(rc == 0 && v.mv_size < SEAL_OVERHEAD){
		reject(st, db, "has a malformed key or value");
	}else if(rc == 0){
		if(v.mv_size - SEAL_OVERHEAD > cap){
			cap = v.mv_size - SEAL_OVERHEAD;
			pt = malloc(cap);
		}
		if(!pt){
			result = STORE_ERR_NOMEM;
		}else{
			store_ad(db, key, klen, ad);
			int src = seal_open(st->seal, ad, 1 + klen, v.mv_data, v.mv_size, pt, &len);
			if(src != SEAL_OK){
				reject(st, db, seal_strerror(src));
			}else if(visit(&k, pt, len, fn, ctx, &result) < 0){
				reject(st, db, "does not decode");
				result = STORE_OK;
			}
			seal_wipe(pt, cap);
		}
		if(pt != small){
			free(pt);
		}
	}
	if(txn){
		mdb_txn_abort(txn);
	}
	pthread_mutex_unlock(&st->txn_lock);
	return result;
}

int store_walk_db(struct store *st, enum store_db db, const uint8_t *prefix, size_t plen,
		decode_visit_fn visit, void *fn, void *ctx)
{
	struct walk w = {st, db, prefix, plen, false, NULL, false};
	return walk_run(&w, visit, fn, ctx);
}

int store_walk_msgs(struct store *st, msg_visit_fn fn, void *ctx)
{
	return store_walk_db(st, DB_MSGS, NULL, 0, visit_msg, (void *)fn, ctx);
}

int store_walk_sessions(struct store *st, session_visit_fn fn, void *ctx)
{
	return store_walk_db(st, DB_SESSIONS, NULL, 0, visit_session, (void *)fn, ctx);
}

struct msg_get {
	struct store *st;
	msg_visit_fn fn;
	void *ctx;
};

/* Notes the body's refs0 (refs0_read) on its way to the caller. */
static int noted_msg(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct msg_get *g = ctx;
	struct u64map *seen = &g->st->refs0_read;

	if(store_id && m->refs0 < UINT32_MAX && (u64map_count(seen) < REFS0_HINTS || u64map_get(seen, store_id))){
		uint32_t *h = u64map_add(seen, store_id);
		if(h){
			*h = m->refs0 + 1;
		}
	}
	return g->fn(g->ctx, store_id, m);
}

int store_msg_get(struct store *st, uint64_t store_id, msg_visit_fn fn, void *ctx)
{
	struct msg_get g = {st, fn, ctx};
	uint8_t key[8];

	put_be64(key, store_id);
	return get_one(st, DB_MSGS, key, sizeof(key), visit_msg, (void *)noted_msg, &g);
}

int store_session_get(struct store *st, const char *clientid, session_visit_fn fn, void *ctx)
{
	uint8_t key[HASH_LEN];

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return get_one(st, DB_SESSIONS, key, sizeof(key), visit_session, (void *)fn, ctx);
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

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	rc = get_one(st, DB_ONLINE, key, sizeof(key), visit_online, NULL, &found);
	return rc ? -rc : found;
}

int store_walk_subs(struct store *st, const char *clientid, sub_visit_fn fn, void *ctx)
{
	uint8_t prefix[HASH_LEN];

	if(!clientid){
		return store_walk_db(st, DB_SUBS, NULL, 0, visit_sub, (void *)fn, ctx);
	}
	if(store_hash_name(st, H_CLIENT, clientid, prefix)){
		return STORE_ERR_CRYPTO;
	}
	return store_walk_db(st, DB_SUBS, prefix, sizeof(prefix), visit_sub, (void *)fn, ctx);
}

int store_walk_offline_subs(struct store *st, sub_visit_fn fn, void *ctx)
{
	struct walk w = {st, DB_SUBS, NULL, 0, true, NULL, false};
	return walk_run(&w, visit_sub, (void *)fn, ctx);
}

void store_used_refresh(struct store *st)
{
	struct timespec ts;
	bool stale;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&st->lock);
	stale = st->used_stale && store_mono_ms(&ts) - st->used_measured_ms >= USED_MEASURE_MS;
	pthread_mutex_unlock(&st->lock);
	if(stale){
		pthread_mutex_lock(&st->txn_lock);
		store_used_measure(st, false);
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
		return store_walk_db(st, DB_QUEUE, NULL, 0, visit_queue, (void *)fn, ctx);
	}
	if(store_hash_name(st, H_CLIENT, clientid, prefix)){
		return STORE_ERR_CRYPTO;
	}
	return store_walk_db(st, DB_QUEUE, prefix, sizeof(prefix), visit_queue, (void *)fn, ctx);
}

int store_walk_queue_from(struct store *st, const char *clientid, uint64_t from, queue_visit_fn fn, void *ctx)
{
	uint8_t prefix[HASH_LEN], seq[8];
	struct walk w = {st, DB_QUEUE, prefix, sizeof(prefix), false, seq, false};

	if(store_hash_name(st, H_CLIENT, clientid, prefix)){
		return STORE_ERR_CRYPTO;
	}
	put_be64(seq, from);
	return walk_run(&w, visit_queue, (void *)fn, ctx);
}

int store_walk_queue_back(struct store *st, const char *clientid, queue_visit_fn fn, void *ctx)
{
	uint8_t prefix[HASH_LEN];
	struct walk w = {st, DB_QUEUE, prefix, sizeof(prefix), false, NULL, true};

	if(store_hash_name(st, H_CLIENT, clientid, prefix)){
		return STORE_ERR_CRYPTO;
	}
	return walk_run(&w, visit_queue, (void *)fn, ctx);
}

int store_walk_retained(struct store *st, retain_visit_fn fn, void *ctx)
{
	return store_walk_db(st, DB_RETAINED, NULL, 0, visit_retain, (void *)fn, ctx);
}

int store_walk_wills(struct store *st, const char *clientid, will_visit_fn fn, void *ctx)
{
	uint8_t key[HASH_LEN];

	if(!clientid){
		return store_walk_db(st, DB_WILLS, NULL, 0, visit_will, (void *)fn, ctx);
	}
	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return get_one(st, DB_WILLS, key, sizeof(key), visit_will, (void *)fn, ctx);
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
	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	return get_one(st, DB_SEQNO, key, sizeof(key), visit_seqno, NULL, last);
}

struct tally_read {
	struct rec_tally *out;
	bool found;
};

static int visit_tally(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct tally_read *tr = ctx;

	(void)k;
	(void)fn;
	if(record_decode_tally(pt, len, tr->out)){
		*tr->out = (struct rec_tally){0};
		return -1;
	}
	tr->found = true;
	*cb_rc = 0;
	return 0;
}

/* A record there that does not authenticate or decode: STORE_ERR_CORRUPT. */
int store_tally_get(struct store *st, const char *clientid, struct rec_tally *out)
{
	uint8_t key[HASH_LEN];
	struct tally_read tr = {out, false};
	uint64_t rejected;
	int rc;

	*out = (struct rec_tally){0};
	if(!st->dbi[DB_TALLY]){
		return STORE_OK;
	}
	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return STORE_ERR_CRYPTO;
	}
	pthread_mutex_lock(&st->lock);
	rejected = st->stats.records_rejected;
	pthread_mutex_unlock(&st->lock);
	rc = get_one(st, DB_TALLY, key, sizeof(key), visit_tally, NULL, &tr);
	pthread_mutex_lock(&st->lock);
	if(rc == STORE_OK && !tr.found && st->stats.records_rejected != rejected){
		rc = STORE_ERR_CORRUPT;
	}
	pthread_mutex_unlock(&st->lock);
	return rc;
}

int store_walk_dedup(struct store *st, dedup_visit_fn fn, void *ctx)
{
	if(!st->dbi[DB_DEDUP]){
		return STORE_OK;
	}
	return store_walk_db(st, DB_DEDUP, NULL, 0, visit_dedup, (void *)fn, ctx);
}
