/* Commits: the buffered operations applied in one write transaction with
 * their reference counts, the environment and its map (growth, unmapping),
 * the writer thread that seals and commits off the broker's thread. */
#include "store_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

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
 * zeroed when missing); NULL when out of memory, which body 0 (st->refd0)
 * never is. store_refs_flush writes them. */
static struct ref_delta *refd_entry(struct store *st, uint64_t store_id)
{
	return store_id ? u64map_add(&st->refd, store_id) : &st->refd0;
}

int store_refd_add(struct store *st, uint64_t store_id, int64_t delta)
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

void store_refd_reset(struct store *st)
{
	u64map_clear(&st->refd);
	st->refd0 = (struct ref_delta){0};
}

/* Whether store_refs_flush has anything to write for e. */
static bool refd_changes(const struct ref_delta *e)
{
	return e->delta != 0 || e->released;
}

/* Makes every count change absolute, written as a refs record whatever
 * the body's own record says (refs_upgrade); the number of bodies. */
uint64_t store_refd_absolute(struct store *st)
{
	struct ref_delta *e = &st->refd0;
	uint64_t n = 0;

	for(size_t c = 0; e; e = u64map_next(&st->refd, &c, NULL)){
		if(refd_changes(e)){
			e->created = true;
			e->refs0 = -1;
			n++;
		}
	}
	return n;
}

/* A stored value that could not be opened inside a transaction: its body
 * reference is unknown, so no count is lowered for it. */
void store_reject_in_txn(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	st->stats.records_rejected++;
	pthread_mutex_unlock(&st->lock);
}

/* Opens a value stored under (db, key) with the writer's sealer into
 * st->wpt; false when it does not authenticate. */
bool store_open_in_txn(struct store *st, enum store_db db, const uint8_t *key, size_t klen,
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
	store_ad(db, key, klen, ad);
	return seal_open(st->wseal, ad, 1 + klen, v, vlen, st->wpt.data, &len) == SEAL_OK;
}

int queue_cursors_open(struct store *st, MDB_txn *txn, struct queue_cursors *qc)
{
	int rc = 0;

	if(!qc->log){
		rc = mdb_cursor_open(txn, st->dbi[DB_QUEUE], &qc->log);
	}
	if(rc == 0 && !qc->index){
		rc = mdb_cursor_open(txn, st->dbi[DB_QINDEX], &qc->index);
	}
	return rc;
}

void queue_cursors_close(struct queue_cursors *qc)
{
	if(qc->log){
		mdb_cursor_close(qc->log);
	}
	if(qc->index){
		mdb_cursor_close(qc->index);
	}
	qc->log = qc->index = NULL;
}

/* The body the queue entry at key (logical) refers to, from its sealed log
 * value; the count is left alone when it cannot be read. */
static int unref_queue_value(struct store *st, const uint8_t *key, const MDB_val *v)
{
	struct rec_queue q;

	if(!store_open_in_txn(st, DB_QUEUE, key, QUEUE_KEY_LEN, v->mv_data, v->mv_size)
			|| record_decode_queue(st->wpt.data, v->mv_size - SEAL_OVERHEAD, &q)){
		store_reject_in_txn(st);
		return 0;
	}
	return store_refd_add(st, q.store_id, -1);
}

int store_queue_insert(struct store *st, struct queue_cursors *qc, const uint8_t *key, const uint8_t *sealed,
		size_t slen, bool append_dup)
{
	uint8_t id[QLOG_ID_LEN], pair[QINDEX_PAIR_LEN];
	MDB_val k = {sizeof(id), id}, v = {slen, NULL};
	int rc;

	put_be64(id, st->log_next);
	rc = mdb_cursor_put(qc->log, &k, &v, MDB_APPEND | MDB_RESERVE);
	if(rc){
		/* MDB_KEYEXIST: a log id at or below the log's last, which only
		 * a damaged meta epoch gives. */
		return rc == MDB_KEYEXIST ? MDB_CORRUPTED : rc;
	}
	memcpy(v.mv_data, sealed, slen);
	st->log_next++;
	memcpy(pair, key + HASH_LEN, QUEUE_SEQ_LEN);
	memcpy(pair + QUEUE_SEQ_LEN, id, QLOG_ID_LEN);
	k.mv_data = (void *)key;
	k.mv_size = HASH_LEN;
	v.mv_data = pair;
	v.mv_size = sizeof(pair);
	rc = mdb_cursor_put(qc->index, &k, &v, append_dup ? MDB_APPENDDUP : 0);
	if(rc == MDB_KEYEXIST && append_dup){
		k.mv_data = (void *)key;
		k.mv_size = HASH_LEN;
		v.mv_data = pair;
		v.mv_size = sizeof(pair);
		rc = mdb_cursor_put(qc->index, &k, &v, 0);
	}
	return rc;
}

/* Positions qc->index at the pair of key (logical) and gives its log id;
 * MDB_NOTFOUND when the client has no entry at that seq. */
static int queue_find(struct queue_cursors *qc, const uint8_t *key, uint8_t id[QLOG_ID_LEN])
{
	uint8_t probe[QINDEX_PAIR_LEN] = {0};
	MDB_val k = {HASH_LEN, (void *)key}, v = {sizeof(probe), probe};
	int rc;

	/* Log id 0 is never given: seq | 0 sorts before the seq's pair. */
	memcpy(probe, key + HASH_LEN, QUEUE_SEQ_LEN);
	rc = mdb_cursor_get(qc->index, &k, &v, MDB_GET_BOTH_RANGE);
	if(rc == 0 && (v.mv_size != QINDEX_PAIR_LEN || memcmp(v.mv_data, key + HASH_LEN, QUEUE_SEQ_LEN) != 0)){
		rc = MDB_NOTFOUND;
	}
	if(rc == 0){
		memcpy(id, (const uint8_t *)v.mv_data + QUEUE_SEQ_LEN, QLOG_ID_LEN);
	}
	return rc;
}

/* Deletes every queue entry of a client (prefix: the client's hash),
 * lowering the counts of their bodies. */
static int queue_delete_prefix(struct store *st, MDB_txn *txn, struct queue_cursors *qc, const uint8_t *prefix,
		size_t plen)
{
	uint8_t key[QUEUE_KEY_LEN];
	MDB_val k = {plen, (void *)prefix}, v;
	int rc;

	if(plen != HASH_LEN){
		return MDB_BAD_VALSIZE;
	}
	rc = queue_cursors_open(st, txn, qc);
	if(rc){
		return rc;
	}
	memcpy(key, prefix, HASH_LEN);
	rc = mdb_cursor_get(qc->index, &k, &v, MDB_SET_KEY);
	if(rc == 0){
		rc = mdb_cursor_get(qc->index, &k, &v, MDB_GET_MULTIPLE);
	}
	/* DUPFIXED: the pairs come a page at a time. */
	while(rc == 0){
		for(size_t off = 0; rc == 0 && off + QINDEX_PAIR_LEN <= v.mv_size; off += QINDEX_PAIR_LEN){
			const uint8_t *pair = (const uint8_t *)v.mv_data + off;
			MDB_val lk = {QLOG_ID_LEN, (void *)(pair + QUEUE_SEQ_LEN)}, lv;
			memcpy(key + HASH_LEN, pair, QUEUE_SEQ_LEN);
			rc = mdb_get(txn, st->dbi[DB_QUEUE], &lk, &lv);
			if(rc == 0){
				rc = unref_queue_value(st, key, &lv);
			}
			if(rc == 0){
				rc = mdb_del(txn, st->dbi[DB_QUEUE], &lk, NULL);
			}
			if(rc == MDB_NOTFOUND){
				rc = 0;
			}
		}
		if(rc == 0){
			rc = mdb_cursor_get(qc->index, &k, &v, MDB_NEXT_MULTIPLE);
		}
	}
	if(rc == MDB_NOTFOUND){
		k.mv_data = (void *)prefix;
		k.mv_size = plen;
		rc = mdb_del(txn, st->dbi[DB_QINDEX], &k, NULL);
	}
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
	if(!store_open_in_txn(st, DB_RETAINED, k->mv_data, k->mv_size, v.mv_data, v.mv_size)
			|| record_decode_retain(st->wpt.data, v.mv_size - SEAL_OVERHEAD, &r)){
		store_reject_in_txn(st);
		return 0;
	}
	return store_refd_add(st, r.store_id, -1);
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
	if(!store_open_in_txn(st, DB_MSGS, key, 8, v.mv_data, v.mv_size)
			|| record_decode_base_msg(st->wpt.data, v.mv_size - SEAL_OVERHEAD, &m)){
		store_reject_in_txn(st);
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
int store_refs_flush(struct store *st, MDB_txn *txn)
{
	uint8_t key[8], sealed[8 + SEAL_OVERHEAD], ad[1 + 8], be[8];
	struct ref_delta *e = &st->refd0;
	uint64_t store_id = 0;
	int rc = 0;

	/* Body 0's changes, then the map's. */
	for(size_t c = 0; rc == 0 && e; e = u64map_next(&st->refd, &c, &store_id)){
		MDB_val k = {sizeof(key), key}, v;
		int64_t count = 0, implied = -1;
		bool stored;

		if(!refd_changes(e)){
			continue;
		}
		put_be64(key, store_id);
		rc = mdb_get(txn, st->dbi[DB_REFS], &k, &v);
		stored = rc == 0;
		if(rc == MDB_NOTFOUND){
			rc = 0;
			if(e->created){
				implied = e->refs0;
			}else if(e->hint){
				/* A record's refs0 never changes: as read by the hand-back. */
				count = implied = (int64_t)e->hint - 1;
			}else{
				rc = body_refs0(st, txn, key, &count);
				implied = count;
			}
		}else if(rc){
			break;
		}else if(store_open_in_txn(st, DB_REFS, key, sizeof(key), v.mv_data, v.mv_size)
				&& v.mv_size == sizeof(sealed)){
			count = (int64_t)(get_be64(st->wpt.data) & INT64_MAX);
		}else{
			/* Unknown: keep the body. */
			store_reject_in_txn(st);
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
		store_ad(DB_REFS, key, sizeof(key), ad);
		if(seal_record(st->wseal, ad, sizeof(ad), be, sizeof(be), sealed) != SEAL_OK){
			rc = EINVAL;
			break;
		}
		v.mv_data = sealed;
		v.mv_size = sizeof(sealed);
		rc = mdb_put(txn, st->dbi[DB_REFS], &k, &v, 0);
	}
	store_refd_reset(st);
	return rc;
}

/* Puts (vlen > 0) or deletes one queue entry; key is the logical key,
 * followed in memory by the sealed value when putting. An entry with the
 * same sequence number is replaced in place, under its log id (an entry
 * keeps its body). *added is set when an entry was added; a removed entry's
 * body count is lowered (removed_ref, or the body read from the entry when
 * that is 0). */
static int queue_apply(struct store *st, MDB_txn *txn, struct queue_cursors *qc, bool append, const uint8_t *key,
		size_t klen, size_t vlen, uint64_t removed_ref, uint32_t hint, bool *added)
{
	uint8_t id[QLOG_ID_LEN];
	MDB_val k = {sizeof(id), id}, v;
	int rc;

	*added = false;
	if(klen != QUEUE_KEY_LEN){
		return MDB_BAD_VALSIZE;
	}
	rc = queue_cursors_open(st, txn, qc);
	if(rc){
		return rc;
	}
	/* A new message's seq sorts after the client's others: one look at
	 * its last pair. A hand-back appends a restored entry at its own seq. */
	if(append){
		MDB_val ik = {HASH_LEN, (void *)key}, iv;
		rc = mdb_cursor_get(qc->index, &ik, &iv, MDB_SET_KEY);
		if(rc == 0){
			rc = mdb_cursor_get(qc->index, &ik, &iv, MDB_LAST_DUP);
		}
		append = rc == MDB_NOTFOUND
			|| (rc == 0 && iv.mv_size == QINDEX_PAIR_LEN && memcmp(iv.mv_data, key + HASH_LEN, QUEUE_SEQ_LEN) < 0);
		if(rc && rc != MDB_NOTFOUND){
			return rc;
		}
	}
	rc = append ? MDB_NOTFOUND : queue_find(qc, key, id);
	if(rc == MDB_NOTFOUND){
		if(!vlen){
			return 0;
		}
		rc = store_queue_insert(st, qc, key, key + QUEUE_KEY_LEN, vlen, append);
		*added = rc == 0;
		return rc;
	}
	if(rc){
		return rc;
	}
	if(vlen){
		v.mv_size = vlen;
		rc = mdb_put(txn, st->dbi[DB_QUEUE], &k, &v, MDB_RESERVE);
		if(rc == 0){
			memcpy(v.mv_data, key + QUEUE_KEY_LEN, vlen);
		}
		return rc;
	}
	if(removed_ref){
		struct ref_delta *e = refd_entry(st, removed_ref);
		rc = e ? 0 : ENOMEM;
		if(e){
			e->delta--;
			if(!e->created && !e->hint){
				e->hint = hint;
			}
		}
	}else{
		rc = mdb_get(txn, st->dbi[DB_QUEUE], &k, &v);
		rc = rc == 0 ? unref_queue_value(st, key, &v) : rc == MDB_NOTFOUND ? 0 : rc;
	}
	if(rc == 0){
		rc = mdb_del(txn, st->dbi[DB_QUEUE], &k, NULL);
		rc = rc == MDB_NOTFOUND ? 0 : rc;
	}
	if(rc == 0){
		rc = mdb_cursor_del(qc->index, 0);
	}
	return rc;
}

/* Puts a body. Store ids grow within a run, so a new body's key is almost
 * always the last: MDB_APPEND fills the last leaf page before starting the
 * next, where a plain put splits it in half (measured: 6% fewer body pages
 * on the inbox benchmark). Any other key (a replaced body, ids of an
 * earlier run) takes the plain put. */
static int msgs_put(MDB_txn *txn, MDB_dbi dbi, MDB_cursor **curp, MDB_val *k, MDB_val *v)
{
	int rc = 0;

	if(!*curp){
		rc = mdb_cursor_open(txn, dbi, curp);
	}
	if(rc == 0){
		rc = mdb_cursor_put(*curp, k, v, MDB_APPEND);
	}
	if(rc == MDB_KEYEXIST){
		rc = mdb_put(txn, dbi, k, v, 0);
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
	struct queue_cursors qc = {NULL, NULL};
	MDB_cursor *msgs_cur = NULL;
	uint64_t n = 0;
	uint8_t last = OP_MARK;
	MDB_val k, v;
	int rc = 0;

	store_refd_reset(st);
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
					rc = queue_apply(st, txn, &qc, op == OP_APPEND, k.mv_data, klen, vlen, 0, 0, &added);
					if(rc == 0 && added){
						rc = store_refd_add(st, ref, 1);
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
						rc = store_refd_add(st, ref, 1);
					}
					if(rc){
						break;
					}
				}
				v.mv_data = (void *)(p + OP_HEADER + klen);
				v.mv_size = vlen;
				rc = p[1] == DB_MSGS ? msgs_put(txn, dbi, &msgs_cur, &k, &v) : mdb_put(txn, dbi, &k, &v, 0);
				break;
			case OP_DEL:
				if(p[1] == DB_QUEUE){
					/* Its value, when it has one: the body's refs0 + 1. */
					uint32_t hint = vlen == 4 ? get_be32(p + OP_HEADER + klen) : 0;
					rc = queue_apply(st, txn, &qc, false, k.mv_data, klen, 0, ref, hint, &added);
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
				rc = p[1] == DB_QUEUE ? queue_delete_prefix(st, txn, &qc, k.mv_data, klen)
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
	queue_cursors_close(&qc);
	if(msgs_cur){
		mdb_cursor_close(msgs_cur);
	}
	if(rc == 0){
		rc = store_refs_flush(st, txn);
	}
	if(rc){
		store_refd_reset(st);
		return rc;
	}
	*pos = (size_t)(p - ops->data);
	*count = n;
	return 0;
}

/* Another process (the CLI) grew the map: adopt its size. Called with
 * txn_lock held, so no transaction of ours is active. */
int store_map_adopt(struct store *st)
{
	MDB_envinfo info;
	int rc = mdb_env_set_mapsize(st->env, 0);

	if(rc == 0 && mdb_env_info(st->env, &info) == 0){
		st->map_size = info.me_mapsize;
	}
	return rc;
}

/* Creates and opens st->env at st->path with st->map_size. */
int store_env_open(struct store *st)
{
	int rc = mdb_env_create(&st->env);

	if(!rc){
		rc = mdb_env_set_maxdbs(st->env, DB_COUNT + 2); /* and the queues of schemas 1 and 2 to 4 */
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
	rc = store_env_open(st);
	if(!rc){
		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
		for(int i = 0; !rc && i < DB_COUNT; i++){
			rc = mdb_dbi_open(txn, store_db_names[i], MDB_CREATE | db_flags(i), &st->dbi[i]);
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
int store_free_page_count(MDB_txn *txn, uint64_t *n)
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

uint64_t store_mono_ms(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000 + (uint64_t)ts->tv_nsec / 1000000;
}

/* Measures the pages in use (the file's pages less the free list) into
 * stats.used_bytes, at most every USED_MEASURE_MS: plugin_opt_max_db_size
 * reads it, so a budget is overrun by at most what arrives in that time.
 * txn_lock held, or no other thread yet (open). */
void store_used_measure(struct store *st, bool now)
{
	struct timespec ts;
	MDB_envinfo info;
	MDB_stat ms;
	MDB_txn *txn;
	uint64_t free_pages;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&st->lock);
	if(!now && store_mono_ms(&ts) - st->used_measured_ms < USED_MEASURE_MS){
		st->used_stale = true;
		pthread_mutex_unlock(&st->lock);
		return;
	}
	pthread_mutex_unlock(&st->lock);
	if(!st->env || mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)){
		return;
	}
	if(mdb_env_info(st->env, &info) == 0 && mdb_stat(txn, 0, &ms) == 0
			&& store_free_page_count(txn, &free_pages) == 0){
		uint64_t total = (uint64_t)info.me_last_pgno + 1;
		pthread_mutex_lock(&st->lock);
		st->used_measured_ms = store_mono_ms(&ts);
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

const char *store_rc_strerror(int rc)
{
	return rc >= SEAL_RC_BASE ? seal_strerror(rc - SEAL_RC_BASE) : mdb_strerror(rc);
}

/* A failed commit's result as the store's error. */
static int commit_error(int rc)
{
	return rc >= SEAL_RC_BASE ? STORE_ERR_CRYPTO : STORE_ERR_IO;
}

/* Below this much free space, a failed write is taken for a full device. */
#define NEARLY_FULL_BYTES (64ull << 20)

/* A write that ran out of space part of the way returns a short count,
 * which LMDB reports as EIO, not ENOSPC: a commit of many pages usually
 * fails that way. */
static bool device_full(const struct store *st, int rc)
{
	struct statvfs sv;

	if(rc == ENOSPC){
		return true;
	}
	return rc == EIO && statvfs(st->path, &sv) == 0
		&& (unsigned long long)sv.f_bavail * sv.f_frsize < NEARLY_FULL_BYTES;
}

/* Leaves a failed commit's error for the owner's thread to report. */
static void commit_failed(struct store *st, int rc)
{
	bool full = device_full(st, rc);

	pthread_mutex_lock(&st->lock);
	st->stats.commit_errors++;
	st->last_commit_rc = rc;
	st->disk_full = full;
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
	int rc = store_ops_seal(ops, sealed, s);

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
			rc = store_map_adopt(st);
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
		store_used_measure(st, false);
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
int store_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
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
			if(rc == 0){
				memset(st->wqtouch, 0, sizeof(st->wqtouch));
			}
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
	store_newb_patch(st);
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
	store_pending_forget(st);
	for(size_t i = 0; i < QTOUCH_BYTES; i++){
		st->wqtouch[i] |= st->qtouch[i];
	}
	memset(st->qtouch, 0, sizeof(st->qtouch));
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
		store_log(st, STORE_LOG_NOTICE, "persist-lmdb: map of %s grown to %zu MiB", st->path, st->map_size >> 20);
	}
	now = time(NULL);
	if(rc && now != st->last_error_log){
		st->last_error_log = now;
		store_log(st, STORE_LOG_ERR, "persist-lmdb: commit to %s failed: %s; %llu changes kept in "
				"memory and retried", st->path, store_rc_strerror(rc),
				(unsigned long long)(st->n_ops + st->n_wops));
	}
}

int store_commit_async(struct store *st)
{
	int rc = STORE_OK;

	if(!st->writer_started){
		if(store_thread_start(&st->writer, writer_main, st) != 0){
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
		store_log(st, STORE_LOG_ERR, "persist-lmdb: preparing %llu changes for a commit failed: %s; kept in "
				"memory and retried", (unsigned long long)st->n_ops, store_strerror(rc));
	}
	return rc;
}

int store_commit(struct store *st)
{
	int rc;

	if(!st->writer_started){
		store_newb_patch(st);
		store_pending_forget(st);
		rc = ops_commit(st, &st->ops, &st->n_ops, &st->ops_sealed, st->seal);
		st->ops_patched = st->ops.len;
		st->ops_marked = 0;
		if(!rc){
			memset(st->qtouch, 0, sizeof(st->qtouch));
		}
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
	rc = store_op_append(st, OP_PUT, DB_META, name, sizeof(name) - 1);
	if(rc){
		return rc;
	}
	p = buf_extend(&st->ops, OP_HEADER + 8);
	if(!p){
		st->ops.err = false;
		return STORE_ERR_NOMEM;
	}
	store_op_header(p, OP_MARK, DB_META, 0, 8, 0);
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

struct seal *store_seal(struct store *st)
{
	return st->seal;
}

bool store_queue_settled(struct store *st, const char *clientid)
{
	uint8_t key[HASH_LEN];
	unsigned bit;
	bool settled;

	if(store_hash_name(st, H_CLIENT, clientid, key)){
		return false;
	}
	bit = (unsigned)key[0] << 8 | key[1];
	pthread_mutex_lock(&st->lock);
	settled = !((st->qtouch[bit >> 3] | st->wqtouch[bit >> 3]) & (1u << (bit & 7)));
	pthread_mutex_unlock(&st->lock);
	return settled;
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

void store_writer_stop(struct store *st)
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

/* A burst leaves the write buffers, the writer's and the table of pending
 * queue entries at the size it needed (tens of MiB for a message to
 * thousands of offline sessions). With nothing buffered they go: they are
 * grown again by the next burst, not kept at rest. */
#define IDLE_BUFFER_BYTES (1u << 20)

static void buffers_trim(struct store *st)
{
	if(st->n_ops == 0 && st->ops.len == 0 && st->ops.cap > IDLE_BUFFER_BYTES){
		buf_free(&st->ops);
	}
	if(st->pend_n == 0 && st->pend_cap * sizeof(*st->pend) > IDLE_BUFFER_BYTES){
		free(st->pend);
		st->pend = NULL;
		st->pend_cap = 0;
	}
	if(u64map_count(&st->newb) == 0 && u64map_bytes(&st->newb) > IDLE_BUFFER_BYTES){
		u64map_free(&st->newb);
	}
	if(st->n_ops == 0){
		u64map_free(&st->refs0_read);
	}
	pthread_mutex_lock(&st->lock);
	if(!st->writer_busy && st->wops.len == 0 && st->wops.cap > IDLE_BUFFER_BYTES){
		buf_free(&st->wops);
	}
	pthread_mutex_unlock(&st->lock);
}

void store_release_memory(struct store *st)
{
	buffers_trim(st);
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
