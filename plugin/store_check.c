/* The structure check (every tree walked under a fault guard, so damage is
 * an error and not a dead broker), compaction, counts for the CLI, and the
 * cross-references of verify. */
#include "store_int.h"
#include "array.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* LMDB keeps no checksums: a damaged page can hold a page number past the
 * end of the file (SIGBUS on the mapping), a wild pointer (SIGSEGV) or fail
 * one of LMDB's assertions (SIGABRT), when it is read or when it is first
 * written. Until the store is open these become an error, not a dead broker. */
static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_armed;
const char *volatile store_fault_where;

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

/* Runs g->fn, or returns STORE_ERR_CORRUPT with a message when LMDB faulted
 * in it. A write transaction cut short by a fault is left alone: the caller
 * only closes the environment and refuses to start. */
int store_run_guarded(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	struct sigaction sa, old[N_FAULT_SIGNALS];
	volatile int rc = 0;
	int sig;

	store_fault_where = "meta";
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
					"its end (%lld bytes)", st->path, store_fault_where, st->file_bytes);
		}else{
			snprintf(err, errlen, "data file in %s is damaged: LMDB faulted (%s) in the %s database",
					st->path, strsignal(sig), store_fault_where);
		}
		return STORE_ERR_CORRUPT;
	}
	return rc;
}

static int damage_error(struct store *st, int rc, char *err, size_t errlen)
{
	snprintf(err, errlen, "data file in %s is damaged (%s database: %s)",
			st->path, store_fault_where, mdb_strerror(rc));
	return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID
		|| rc == MDB_BAD_DBI || rc == MDB_INCOMPATIBLE ? STORE_ERR_CORRUPT : STORE_ERR_IO;
}

/* The named databases, then the queues of schema 1 and of schemas 2 to 4
 * (until an upgrade moved them). */
static const char *legacy_or_db_name(int i)
{
	return i == DB_COUNT ? store_legacy_queue_name : i == DB_COUNT + 1 ? store_queues4_name : store_db_names[i];
}

/* The unnamed database holds the named ones' records, and nothing else. */
static bool known_db_name(const MDB_val *k)
{
	for(int i = 0; i <= DB_COUNT + 1; i++){
		const char *name = legacy_or_db_name(i);
		if(k->mv_size == strlen(name) && !memcmp(k->mv_data, name, k->mv_size)){
			return true;
		}
	}
	return false;
}

/* Visits every key of the free-page list, the list of named databases and
 * each named database, and touches both ends of every value (which brings
 * in overflow pages), in one read transaction. */
int store_walk_structure(struct store *st, struct guarded *g, char *err, size_t errlen)
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
		return damage_error(st, rc, err, errlen);
	}
	g->read_txn = txn;
	for(int i = -2; i <= DB_COUNT + 1 && rc == 0; i++){
		if(i == -2){
			store_fault_where = "free-page";
			dbi = 0; /* LMDB's FREE_DBI, readable in a read transaction */
		}else{
			/* The unnamed database lists the named ones: a damaged page
			 * there can make a named database look absent. */
			store_fault_where = i < 0 ? "main" : legacy_or_db_name(i);
			rc = mdb_dbi_open(txn, i < 0 ? NULL : store_fault_where, i < 0 || i >= DB_COUNT ? 0 : db_flags(i), &dbi);
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
		/* Every tree, the stored queues too: a damaged page found later, by
		 * a hand-back in the running broker, would stop it (LMDB aborts on
		 * it) and every start after that. */
		for(int op = MDB_FIRST; (rc = mdb_cursor_get(cur, &k, &v, op)) == 0;
				op = i == DB_QINDEX ? MDB_NEXT_NODUP : MDB_NEXT){
			if(i == -1 && !known_db_name(&k)){
				unknown_name = true;
				break;
			}
			if(i == DB_QINDEX){
				/* A client's pairs a page at a time: one call per page,
				 * not per pair, and every page read all the same. */
				rc = mdb_cursor_get(cur, &k, &v, MDB_GET_MULTIPLE);
				while(rc == 0){
					sink ^= ((const uint8_t *)v.mv_data)[0] ^ ((const uint8_t *)v.mv_data)[v.mv_size - 1];
					*records += v.mv_size / QINDEX_PAIR_LEN;
					rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_MULTIPLE);
				}
				if(rc != MDB_NOTFOUND){
					break;
				}
				continue;
			}
			if(v.mv_size){
				sink ^= ((const uint8_t *)v.mv_data)[0] ^ ((const uint8_t *)v.mv_data)[v.mv_size - 1];
			}
			if(i >= 0){
				(*records)++;
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
		return damage_error(st, rc, err, errlen);
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
	struct guarded g = {.fn = store_walk_structure, .arg = records};
	int rc;

	*records = 0;
	rc = store_run_guarded(st, &g, err, errlen);
	store_release_memory(st);
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
 * queue index's share is what the others leave. */
static int index_bytes(struct store *st, MDB_txn *txn, uint64_t *bytes)
{
	MDB_envinfo info;
	MDB_stat ms;
	uint64_t other = 2, free_pages = 0;
	int rc;

	rc = mdb_env_info(st->env, &info);
	for(int i = -2; rc == 0 && i < DB_COUNT; i++){
		if(i == DB_QINDEX || (i >= 0 && !st->dbi[i])){
			continue;
		}
		rc = mdb_stat(txn, i == -2 ? 0 : i == -1 ? 1 : st->dbi[i], &ms); /* FREE_DBI, MAIN_DBI */
		other += db_pages(&ms);
	}
	if(rc == 0){
		rc = store_free_page_count(txn, &free_pages);
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
		/* The queues: the log and its index. */
		uint64_t ib = 0;
		if(rc == 0 && (db == DB_QUEUE || db == DB_QINDEX) && st->dbi[DB_QINDEX]){
			rc = index_bytes(st, txn, &ib);
		}
		if(rc == 0 && db == DB_QUEUE){
			*bytes += ib;
		}else if(rc == 0 && db == DB_QINDEX){
			*bytes = ib;
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
	if(array_grow(&s->v, &s->cap, s->n, s->width, 1024)){
		return -1;
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
	return store_op_append(st, OP_PUT, DB_REFS, key, sizeof(key));
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

		store_ad(DB_MSGS, key, 8, ad);
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

static int id_cmp(const void *a, const void *b)
{
	uint64_t x = get_be64(a), y = get_be64(b);

	return x < y ? -1 : x > y;
}

/* Index pairs whose log entry is missing, log entries no pair names, and
 * pairs beyond the first that name one entry: damage, or a bug. Walks skip
 * a pair of the first kind as a rejected record (an entry under another
 * pair than its own does not authenticate). */
static int check_queue_index(struct store *st, uint64_t *wrong)
{
	MDB_cursor *cur = NULL;
	uint8_t *ids = NULL;
	size_t n = 0, cap = 0, at = 0;
	MDB_txn *txn;
	MDB_val k, v;
	int rc;

	if(!st->dbi[DB_QUEUE] || !st->dbi[DB_QINDEX]){
		return STORE_OK;
	}
	rc = st->env ? mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) : MDB_PANIC;
	if(rc){
		return STORE_ERR_IO;
	}
	rc = mdb_cursor_open(txn, st->dbi[DB_QINDEX], &cur);
	for(int op = MDB_FIRST; rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0; op = MDB_NEXT){
		MDB_val lk = {QLOG_ID_LEN, (uint8_t *)v.mv_data + QUEUE_SEQ_LEN}, lv;
		if(k.mv_size != HASH_LEN || v.mv_size != QINDEX_PAIR_LEN || mdb_get(txn, st->dbi[DB_QUEUE], &lk, &lv)){
			(*wrong)++;
			continue;
		}
		if(n == cap){
			size_t c = cap ? 2 * cap : 4096;
			uint8_t *p = realloc(ids, c * QLOG_ID_LEN);
			if(!p){
				rc = ENOMEM;
				break;
			}
			ids = p;
			cap = c;
		}
		memcpy(ids + n++ * QLOG_ID_LEN, lk.mv_data, QLOG_ID_LEN);
	}
	if(cur){
		mdb_cursor_close(cur);
		cur = NULL;
	}
	if(rc == MDB_NOTFOUND){
		if(n){
			qsort(ids, n, QLOG_ID_LEN, id_cmp);
		}
		for(size_t i = 1; i < n; i++){
			*wrong += !memcmp(ids + i * QLOG_ID_LEN, ids + (i - 1) * QLOG_ID_LEN, QLOG_ID_LEN);
		}
		rc = mdb_cursor_open(txn, st->dbi[DB_QUEUE], &cur);
	}
	/* Both in key order: the log's keys against the named ids. */
	for(int op = MDB_FIRST; rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0; op = MDB_NEXT){
		while(k.mv_size == QLOG_ID_LEN && at < n && memcmp(ids + at * QLOG_ID_LEN, k.mv_data, QLOG_ID_LEN) < 0){
			at++;
		}
		if(k.mv_size != QLOG_ID_LEN || at == n || memcmp(ids + at * QLOG_ID_LEN, k.mv_data, QLOG_ID_LEN) != 0){
			(*wrong)++;
		}
	}
	if(cur){
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	free(ids);
	return rc == MDB_NOTFOUND ? STORE_OK : rc == ENOMEM ? STORE_ERR_NOMEM : STORE_ERR_IO;
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
		rc = check_queue_index(st, &out->queue_index_wrong);
	}
	if(rc == STORE_OK){
		rc = store_walk_db(st, DB_QUEUE, NULL, 0, visit_queue_refs, NULL, &rw);
	}
	if(rc == STORE_OK){
		rc = store_walk_db(st, DB_RETAINED, NULL, 0, visit_retain_refs, NULL, &rw);
	}
	for(size_t i = 0; rc == STORE_OK && i < subs.n; i++){
		if(id_set_find(&sessions, subs.v + i * subs.width) < 0){
			out->subs_without_session++;
		}
	}
	if(rc == STORE_OK && st->dbi[DB_REFS]){
		struct refs_check chk = {st, &msgs, out, delete_orphans, STORE_OK};
		rc = store_walk_db(st, DB_REFS, NULL, 0, visit_refs, NULL, &chk);
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

/* ---- queue tallies ---- */

/* One client's tally, stored or summed from its queue, by client hash. */
struct tally_of {
	uint8_t hash[HASH_LEN];
	struct rec_tally t;
};

struct tally_list {
	struct tally_of *v;
	size_t n, cap;
};

struct body_size {
	uint64_t bytes;
	int64_t expiry;
};

struct queue_sum {
	struct tally_list *list;
	const struct u64map *bodies;
};

/* The walks come in key order: a client's records follow each other. */
static struct tally_of *tally_at(struct tally_list *l, const uint8_t *hash)
{
	if(l->n && !memcmp(l->v[l->n - 1].hash, hash, HASH_LEN)){
		return &l->v[l->n - 1];
	}
	if(ARRAY_GROW(l->v, l->n, l->cap, 64)){
		return NULL;
	}
	memset(&l->v[l->n], 0, sizeof(l->v[0]));
	memcpy(l->v[l->n].hash, hash, HASH_LEN);
	return &l->v[l->n++];
}

static int note_body_size(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct body_size *b = u64map_add(ctx, store_id);

	if(!b){
		return STORE_ERR_NOMEM;
	}
	*b = (struct body_size){m->payload.len, m->expiry_time};
	return 0;
}

static int visit_queue_sum(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct queue_sum *qs = ctx;
	const struct body_size *b;
	struct tally_of *s;
	struct rec_queue q;

	(void)fn;
	if(k->mv_size != QUEUE_KEY_LEN || record_decode_queue(pt, len, &q)){
		return -1;
	}
	*cb_rc = 0;
	if(q.direction != REC_DIR_OUT || q.qos == 0){
		return 0;
	}
	if(!(s = tally_at(qs->list, k->mv_data))){
		*cb_rc = STORE_ERR_NOMEM;
		return 0;
	}
	s->t.count++;
	if((b = u64map_get(qs->bodies, q.store_id))){
		s->t.bytes += b->bytes;
		if(b->expiry && (!s->t.earliest_expiry || b->expiry < s->t.earliest_expiry)){
			s->t.earliest_expiry = b->expiry;
		}
	}
	return 0;
}

static int visit_tally_sum(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc)
{
	struct tally_of *s;
	struct rec_tally t;

	(void)fn;
	if(k->mv_size != HASH_LEN || record_decode_tally(pt, len, &t)){
		return -1;
	}
	*cb_rc = 0;
	if(!(s = tally_at(ctx, k->mv_data))){
		*cb_rc = STORE_ERR_NOMEM;
		return 0;
	}
	s->t = t;
	return 0;
}

/* The same count and bytes, and an earliest expiry no later than the
 * queue's: the stored one is a lower bound, 0 only when nothing expires. */
static bool tally_agrees(const struct rec_tally *stored, const struct rec_tally *sum)
{
	return stored->count == sum->count && stored->bytes == sum->bytes
		&& (!sum->earliest_expiry || (stored->earliest_expiry && stored->earliest_expiry <= sum->earliest_expiry));
}

int store_check_tallies(struct store *st, struct store_tallies *out)
{
	struct tally_list sums = {0}, stored = {0};
	struct u64map bodies;
	struct queue_sum qs = {&sums, &bodies};
	int rc = STORE_OK;

	memset(out, 0, sizeof(*out));
	out->kept = store_tallies_kept(st);
	if(!out->kept){
		return STORE_OK;
	}
	u64map_init(&bodies, sizeof(struct body_size));
	pthread_mutex_lock(&st->txn_lock);
	rc = store_walk_msgs(st, note_body_size, &bodies);
	if(rc == STORE_OK){
		rc = store_walk_db(st, DB_QUEUE, NULL, 0, visit_queue_sum, NULL, &qs);
	}
	if(rc == STORE_OK){
		rc = store_walk_db(st, DB_TALLY, NULL, 0, visit_tally_sum, NULL, &stored);
	}
	pthread_mutex_unlock(&st->txn_lock);
	for(size_t i = 0, j = 0; rc == STORE_OK && (i < sums.n || j < stored.n);){
		int cmp = i == sums.n ? 1 : j == stored.n ? -1 : memcmp(sums.v[i].hash, stored.v[j].hash, HASH_LEN);
		if(cmp < 0){
			out->wrong++;   /* counted entries, no tally */
			i++;
		}else if(cmp > 0){
			out->wrong += stored.v[j].t.count != 0;
			j++;
		}else{
			out->wrong += !tally_agrees(&stored.v[j].t, &sums.v[i].t);
			i++;
			j++;
		}
		out->checked++;
	}
	free(sums.v);
	free(stored.v);
	u64map_free(&bodies);
	return rc;
}
