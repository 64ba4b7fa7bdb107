/* The LMDB store on a temporary directory: round trips of every record kind,
 * commit visibility, deletes, queue order across epochs, key and epoch
 * handling, map growth, and detection of tampered, moved and truncated data. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "record.h"

/* plugin/store_walk.c reads records in batches of this many */
#define WALK_BATCH_FOR_TEST 256
#include "seal.h"
#include "store.h"
#include "unit_util.h"

#define MIB ((size_t)1 << 20)

/* ---- log capture ---- */

static unsigned g_log_count[4];
static char g_last_warning[512];
static char g_last_info[512];

static void test_log(int level, const char *msg)
{
	if(level >= 0 && level < 4){
		g_log_count[level]++;
	}
	if(level == STORE_LOG_WARNING){
		snprintf(g_last_warning, sizeof(g_last_warning), "%s", msg);
	}
	if(level == STORE_LOG_INFO){
		snprintf(g_last_info, sizeof(g_last_info), "%s", msg);
	}
}

static void log_reset(void)
{
	memset(g_log_count, 0, sizeof(g_log_count));
	g_last_warning[0] = '\0';
	g_last_info[0] = '\0';
}

/* ---- fixture ---- */

struct fx {
	struct ut_tmp tmp;   /* path: the database */
	char *datafile;
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if(!fx || ut_tmp_make(&fx->tmp, "db", 0xc0, 3) || !(fx->datafile = ut_join(fx->tmp.path, "data.mdb"))){
		if(fx){
			ut_tmp_remove(&fx->tmp);
		}
		free(fx);
		return -1;
	}
	umask(022);
	log_reset();
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	ut_tmp_remove(&fx->tmp);
	free(fx->datafile);
	free(fx);
	return 0;
}

static struct store *open_store(struct fx *fx, size_t map_size, unsigned flags)
{
	struct store *st = NULL;
	char err[512] = "";
	int rc = store_open(&st, fx->tmp.path, map_size, fx->tmp.key, flags, test_log, err, sizeof(err));

	if(rc != STORE_OK){
		fail_msg("store_open(%s) failed: %d %s", fx->tmp.path, rc, err);
	}
	assert_non_null(st);
	return st;
}

static void commit_ok(struct store *st)
{
	int rc = store_commit(st);
	if(rc != STORE_OK){
		fail_msg("store_commit failed: %d %s", rc, store_strerror(rc));
	}
	assert_false(store_has_pending(st));
}

static struct store_stats stats_of(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s;
}

/* ---- walk collectors: each record is kept re-encoded, so comparing against
 * the encoding of the expected record compares every field ---- */

struct item {
	uint64_t id;   /* store_id, queue seq, retained store_id */
	char *name;    /* client id or topic */
	uint8_t *enc;
	size_t len;
};

struct coll {
	struct item *v;
	size_t n, cap;
	size_t stop_after; /* 0: never */
	int stop_rc;
	struct store *st;  /* for nested walks */
	size_t per_session[8], sessions;
};

static int coll_push(struct coll *c, uint64_t id, const char *name, struct buf *b)
{
	assert_false(b->err);
	if(c->n == c->cap){
		c->cap = c->cap ? c->cap * 2 : 16;
		c->v = realloc(c->v, c->cap * sizeof(*c->v));
		assert_non_null(c->v);
	}
	c->v[c->n].id = id;
	c->v[c->n].name = name ? strdup(name) : NULL;
	c->v[c->n].enc = b->data; /* takes the buffer */
	c->v[c->n].len = b->len;
	c->n++;
	if(c->stop_after && c->n == c->stop_after){
		return c->stop_rc;
	}
	return 0;
}

static void coll_free(struct coll *c)
{
	for(size_t i = 0; i < c->n; i++){
		free(c->v[i].name);
		free(c->v[i].enc);
	}
	free(c->v);
	memset(c, 0, sizeof(*c));
}

static int cb_msg(void *ctx, uint64_t id, const struct rec_base_msg *m)
{
	struct buf b = {0};
	record_encode_base_msg(&b, m);
	return coll_push(ctx, id, m->topic, &b);
}

static int cb_session(void *ctx, const struct rec_session *s)
{
	struct buf b = {0};
	record_encode_session(&b, s);
	return coll_push(ctx, 0, s->clientid, &b);
}

static int cb_sub(void *ctx, const struct rec_sub *s)
{
	struct buf b = {0};
	record_encode_sub(&b, s);
	return coll_push(ctx, 0, s->clientid, &b);
}

static int cb_queue(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct buf b = {0};
	record_encode_queue(&b, q);
	return coll_push(ctx, seq, NULL, &b);
}

static int cb_retain(void *ctx, const struct rec_retain *r)
{
	struct buf b = {0};
	record_encode_retain(&b, r);
	return coll_push(ctx, r->store_id, r->topic, &b);
}

static int cb_will(void *ctx, const struct rec_will *w)
{
	struct buf b = {0};
	record_encode_will(&b, w);
	return coll_push(ctx, 0, w->clientid, &b);
}

static size_t count_msgs(struct store *st)
{
	struct coll c = {0};
	assert_int_equal(store_walk_msgs(st, cb_msg, &c), STORE_OK);
	size_t n = c.n;
	coll_free(&c);
	return n;
}

static size_t count_sessions(struct store *st)
{
	struct coll c = {0};
	assert_int_equal(store_walk_sessions(st, cb_session, &c), STORE_OK);
	size_t n = c.n;
	coll_free(&c);
	return n;
}

static size_t count_subs(struct store *st, const char *clientid)
{
	struct coll c = {0};
	assert_int_equal(store_walk_subs(st, clientid, cb_sub, &c), STORE_OK);
	size_t n = c.n;
	coll_free(&c);
	return n;
}

static size_t count_queue(struct store *st, const char *clientid)
{
	struct coll c = {0};
	assert_int_equal(store_walk_queue(st, clientid, cb_queue, &c), STORE_OK);
	size_t n = c.n;
	coll_free(&c);
	return n;
}

static size_t count_retained(struct store *st)
{
	struct coll c = {0};
	assert_int_equal(store_walk_retained(st, cb_retain, &c), STORE_OK);
	size_t n = c.n;
	coll_free(&c);
	return n;
}

static size_t count_wills(struct store *st, const char *clientid)
{
	struct coll c = {0};
	assert_int_equal(store_walk_wills(st, clientid, cb_will, &c), STORE_OK);
	size_t n = c.n;
	coll_free(&c);
	return n;
}

/* ---- record fixtures ---- */

struct msg_fx {
	char topic[64], src[64];
	uint8_t payload[300];
	uint8_t props[8];
	struct rec_base_msg m;
};

static void msg_make(struct msg_fx *f, int i)
{
	snprintf(f->topic, sizeof(f->topic), "topic/%d", i);
	snprintf(f->src, sizeof(f->src), "src-%d", i);
	size_t plen = (size_t)(i * 37 % 300);
	for(size_t j = 0; j < plen; j++){
		f->payload[j] = (uint8_t)(i + j);
	}
	memset(f->props, i, sizeof(f->props));
	f->m = (struct rec_base_msg){
		.expiry_time = (int64_t)i * 1000 - 5,
		.topic = f->topic,
		.source_id = f->src,
		.source_username = (i % 2) ? NULL : "user",
		.payload = {f->payload, plen},
		.properties = {(i % 2) ? NULL : f->props, (i % 2) ? 0 : sizeof(f->props)},
		.source_mid = (uint16_t)(i * 1000),
		.source_port = 1883,
		.qos = (uint8_t)(i % 3),
		.retain = i % 2,
	};
}

static struct rec_session session_make(const char *clientid, const char *username, uint32_t expiry)
{
	return (struct rec_session){
		.clientid = clientid,
		.username = username,
		.auth_method = NULL,
		.will_delay_time = 0,
		.session_expiry_time = 1700000000 + expiry,
		.will_delay_interval = 0,
		.session_expiry_interval = expiry,
		.max_packet_size = 0,
		.listener_port = 1883,
		.max_qos = 2,
		.retain_available = true,
	};
}

static struct rec_queue queue_make(uint64_t store_id, uint16_t mid)
{
	return (struct rec_queue){
		.store_id = store_id,
		.subscription_identifier = (uint32_t)(store_id % 7),
		.mid = mid,
		.qos = (uint8_t)(store_id % 3),
		.retain = store_id % 2,
		.dup = 0,
		.direction = 1,
		.state = 3,
	};
}

static struct rec_will will_make(const char *clientid, const char *topic, const char *payload)
{
	return (struct rec_will){
		.clientid = clientid,
		.topic = topic,
		.payload = {(const uint8_t *)payload, strlen(payload)},
		.properties = {NULL, 0},
		.qos = 1,
		.retain = false,
	};
}

/* The stored body as m encodes, but for its last bytes: the count of the
 * entries that referred to it when it was written (refs0), set by the store. */
static void assert_item_msg(const struct item *it, const struct rec_base_msg *m)
{
	struct buf b = {0};
	record_encode_base_msg(&b, m);
	assert_uint_equal(it->len, b.len);
	assert_memory_equal(it->enc, b.data, b.len - RECORD_REFS0_LEN);
	buf_free(&b);
}

static void assert_item_session(const struct item *it, const struct rec_session *s)
{
	struct buf b = {0};
	record_encode_session(&b, s);
	assert_uint_equal(it->len, b.len);
	assert_memory_equal(it->enc, b.data, b.len);
	buf_free(&b);
}

static void assert_item_sub(const struct item *it, const struct rec_sub *s)
{
	struct buf b = {0};
	record_encode_sub(&b, s);
	assert_uint_equal(it->len, b.len);
	assert_memory_equal(it->enc, b.data, b.len);
	buf_free(&b);
}

static void assert_item_queue(const struct item *it, const struct rec_queue *q)
{
	struct buf b = {0};
	record_encode_queue(&b, q);
	assert_uint_equal(it->len, b.len);
	assert_memory_equal(it->enc, b.data, b.len);
	buf_free(&b);
}

static void assert_item_will(const struct item *it, const struct rec_will *w)
{
	struct buf b = {0};
	record_encode_will(&b, w);
	assert_uint_equal(it->len, b.len);
	assert_memory_equal(it->enc, b.data, b.len);
	buf_free(&b);
}

static const struct item *find_name(const struct coll *c, const char *name)
{
	for(size_t i = 0; i < c->n; i++){
		if(c->v[i].name && !strcmp(c->v[i].name, name)){
			return &c->v[i];
		}
	}
	return NULL;
}

/* ---- direct LMDB access to the data file ---- */

struct raw {
	MDB_env *env;
	MDB_txn *txn;
};

static void raw_open(struct raw *r, const char *path)
{
	assert_int_equal(mdb_env_create(&r->env), 0);
	assert_int_equal(mdb_env_set_maxdbs(r->env, 16), 0);
	assert_int_equal(mdb_env_open(r->env, path, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(r->env, NULL, 0, &r->txn), 0);
}

static MDB_dbi raw_dbi(struct raw *r, const char *name)
{
	MDB_dbi dbi;
	assert_int_equal(mdb_dbi_open(r->txn, name, 0, &dbi), 0);
	return dbi;
}

static void raw_close(struct raw *r, bool commit)
{
	if(commit){
		assert_int_equal(mdb_txn_commit(r->txn), 0);
	}else{
		mdb_txn_abort(r->txn);
	}
	mdb_env_close(r->env);
}

/* malloc'd copy of the value of key (NULL if absent). */
static uint8_t *raw_get(struct raw *r, MDB_dbi dbi, const void *key, size_t klen, size_t *vlen)
{
	MDB_val k = {klen, (void *)key}, v;
	if(mdb_get(r->txn, dbi, &k, &v) != 0){
		return NULL;
	}
	uint8_t *p = malloc(v.mv_size);
	assert_non_null(p);
	memcpy(p, v.mv_data, v.mv_size);
	*vlen = v.mv_size;
	return p;
}

static void raw_put(struct raw *r, MDB_dbi dbi, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	assert_int_equal(mdb_put(r->txn, dbi, &k, &v, 0), 0);
}

/* A seal for records written straight into the file: it seals under an
 * epoch the store never opened (epoch), with a salt stored beside the
 * store's own so that the store opens what it seals. */
static struct seal *raw_seal(struct raw *r, const uint8_t key[SEAL_KEY_LEN], uint32_t epoch)
{
	struct seal *s = seal_new(key, 1);
	uint8_t name[8] = {'s', 'a', 'l', 't'}, salt[SEAL_SALT_LEN];

	assert_non_null(s);
	assert_int_equal(seal_begin_epoch(s, epoch, salt), SEAL_OK);
	put_be32(name + 4, epoch);
	raw_put(r, raw_dbi(r, "meta"), name, sizeof(name), salt, sizeof(salt));
	return s;
}

/* Copies of the n-th key and value of a database, in key order. */
static void raw_nth(struct raw *r, MDB_dbi dbi, size_t n, uint8_t **key, size_t *klen, uint8_t **val, size_t *vlen)
{
	MDB_cursor *cur;
	MDB_val k, v;

	assert_int_equal(mdb_cursor_open(r->txn, dbi, &cur), 0);
	assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
	for(size_t i = 0; i < n; i++){
		assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_NEXT), 0);
	}
	*key = malloc(k.mv_size);
	*val = malloc(v.mv_size);
	assert_non_null(*key);
	assert_non_null(*val);
	memcpy(*key, k.mv_data, k.mv_size);
	memcpy(*val, v.mv_data, v.mv_size);
	*klen = k.mv_size;
	*vlen = v.mv_size;
	mdb_cursor_close(cur);
}

/* Lays the queues out as schemas 2 to 4 did: the log and its index become
 * one DUPSORT database "queues", client hash -> seq | sealed entry. */
static void raw_queues_to_schema4(struct raw *r)
{
	MDB_dbi log = raw_dbi(r, "queue-log"), index = raw_dbi(r, "queue-index"), queues;
	MDB_cursor *cur;
	MDB_val k, v;

	assert_int_equal(mdb_dbi_open(r->txn, "queues", MDB_CREATE | MDB_DUPSORT, &queues), 0);
	assert_int_equal(mdb_cursor_open(r->txn, index, &cur), 0);
	for(int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT){
		MDB_val lk = {8, (uint8_t *)v.mv_data + 8}, lv;
		assert_uint_equal(v.mv_size, 16);
		assert_int_equal(mdb_get(r->txn, log, &lk, &lv), 0);
		uint8_t *dup = malloc(8 + lv.mv_size);
		assert_non_null(dup);
		memcpy(dup, v.mv_data, 8);
		memcpy(dup + 8, lv.mv_data, lv.mv_size);
		MDB_val qk = {HASH_LEN, k.mv_data}, qv = {8 + lv.mv_size, dup};
		assert_int_equal(mdb_put(r->txn, queues, &qk, &qv, 0), 0);
		free(dup);
	}
	mdb_cursor_close(cur);
	assert_int_equal(mdb_drop(r->txn, log, 1), 0);
	assert_int_equal(mdb_drop(r->txn, index, 1), 0);
}

/* A client's n-th queue entry (from 0): its index pair (seq | log id) and
 * its sealed log value. */
static void raw_queue_nth(struct raw *r, const uint8_t hash[HASH_LEN], size_t n, uint8_t pair[16], uint8_t **val,
		size_t *vlen)
{
	MDB_dbi log = raw_dbi(r, "queue-log"), index = raw_dbi(r, "queue-index");
	MDB_cursor *cur;
	MDB_val k = {HASH_LEN, (void *)hash}, v;

	assert_int_equal(mdb_cursor_open(r->txn, index, &cur), 0);
	assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_SET_KEY), 0);
	for(size_t i = 0; i < n; i++){
		assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP), 0);
	}
	assert_uint_equal(v.mv_size, 16);
	memcpy(pair, v.mv_data, 16);
	mdb_cursor_close(cur);
	*val = raw_get(r, log, pair + 8, 8, vlen);
	assert_non_null(*val);
}

static void be64_put(uint8_t *p, uint64_t v)
{
	for(int i = 7; i >= 0; i--){
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- tests ---- */

static void test_open_new(void **state)
{
	struct fx *fx = *state;
	struct store *st;
	struct stat sb;
	char err[512];

	/* A read-only open of a missing database fails and creates nothing. */
	st = (struct store *)1;
	assert_int_not_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, STORE_READ_ONLY, test_log, err, sizeof(err)), STORE_OK);
	assert_null(st);
	assert_int_not_equal(stat(fx->tmp.path, &sb), 0);

	st = open_store(fx, 0, 0);
	assert_int_equal(stat(fx->tmp.path, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_int_equal(stat(fx->datafile, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	assert_uint_equal(store_epoch(st), 1);
	assert_false(store_has_pending(st));

	struct store_stats s = stats_of(st);
	assert_uint_equal(s.commits, 0);
	assert_uint_equal(s.records_rejected, 0);
	assert_uint_equal(s.pending_ops, 0);
	assert_uint_equal(s.map_size, STORE_DEFAULT_MAP_SIZE);

	assert_uint_equal(count_msgs(st), 0);
	assert_uint_equal(count_sessions(st), 0);
	assert_uint_equal(count_subs(st, NULL), 0);
	assert_uint_equal(count_queue(st, "nobody"), 0);
	assert_uint_equal(count_retained(st), 0);
	assert_uint_equal(count_wills(st, NULL), 0);
	/* Committing nothing is fine. */
	assert_int_equal(store_commit(st), STORE_OK);
	store_close(st);

	/* The path exists but is not a directory. */
	char *file = ut_join(fx->tmp.dir, "plain-file");
	assert_int_equal(ut_write_file(file, "x", 1, 0600), 0);
	st = (struct store *)1;
	err[0] = 0;
	assert_int_equal(store_open(&st, file, 0, fx->tmp.key, 0, test_log, err, sizeof(err)), STORE_ERR_IO);
	assert_null(st);
	assert_non_null(strstr(err, "not a directory"));
	free(file);

	assert_string_equal(store_db_name(DB_SESSIONS), "sessions");
	assert_string_equal(store_db_name(DB_COUNT), "?");
	assert_string_equal(store_strerror(STORE_ERR_KEY), "the key does not match this database");
	store_close(NULL);
}

static const uint64_t msg_ids[] = {1, 2, 255, 256, 65536, (uint64_t)1 << 40, UINT64_MAX - 1};
#define N_MSG_IDS (sizeof(msg_ids) / sizeof(msg_ids[0]))

static void write_all_kinds(struct store *st)
{
	struct msg_fx mf;

	/* Messages in reverse order: the walk returns them by store_id. */
	for(int i = (int)N_MSG_IDS - 1; i >= 0; i--){
		msg_make(&mf, i);
		assert_int_equal(store_msg_put(st, msg_ids[i], &mf.m), STORE_OK);
	}
	struct rec_session sa = session_make("alice", "alice-user", 3600);
	struct rec_session sb = session_make("bob", NULL, UINT32_MAX);
	sb.auth_method = "SCRAM";
	sb.will_delay_time = INT64_MIN;
	assert_int_equal(store_session_put(st, &sa), STORE_OK);
	assert_int_equal(store_session_put(st, &sb), STORE_OK);

	struct rec_sub subs[] = {
		{"alice", "a/#", 0, 1},
		{"alice", "b/+/c", 12, 2},
		{"bob", "a/#", UINT32_MAX, 0x2e},
	};
	for(size_t i = 0; i < 3; i++){
		assert_int_equal(store_sub_put(st, &subs[i]), STORE_OK);
	}
	for(uint64_t i = 1; i <= 4; i++){
		struct rec_queue q = queue_make(msg_ids[i], (uint16_t)i);
		assert_int_equal(store_queue_append(st, "alice", i, &q), STORE_OK);
	}
	assert_int_equal(store_retain_set(st, "topic/1", msg_ids[1]), STORE_OK);
	assert_int_equal(store_retain_set(st, "topic/2", msg_ids[2]), STORE_OK);
	struct rec_will w = will_make("bob", "bob/status", "gone");
	assert_int_equal(store_will_put(st, &w), STORE_OK);
}

static void check_all_kinds(struct store *st)
{
	struct coll c = {0};
	struct msg_fx mf;

	/* Messages, in store_id order. */
	assert_int_equal(store_walk_msgs(st, cb_msg, &c), STORE_OK);
	assert_uint_equal(c.n, N_MSG_IDS);
	for(size_t i = 0; i < N_MSG_IDS; i++){
		msg_make(&mf, (int)i);
		assert_uint_equal(c.v[i].id, msg_ids[i]);
		assert_item_msg(&c.v[i], &mf.m);
	}
	coll_free(&c);

	/* Sessions. */
	struct rec_session sa = session_make("alice", "alice-user", 3600);
	struct rec_session sb = session_make("bob", NULL, UINT32_MAX);
	sb.auth_method = "SCRAM";
	sb.will_delay_time = INT64_MIN;
	assert_int_equal(store_walk_sessions(st, cb_session, &c), STORE_OK);
	assert_uint_equal(c.n, 2);
	assert_non_null(find_name(&c, "alice"));
	assert_non_null(find_name(&c, "bob"));
	assert_item_session(find_name(&c, "alice"), &sa);
	assert_item_session(find_name(&c, "bob"), &sb);
	coll_free(&c);

	/* Subscriptions: per client and all. */
	struct rec_sub bob_sub = {"bob", "a/#", UINT32_MAX, 0x2e};
	assert_int_equal(store_walk_subs(st, "bob", cb_sub, &c), STORE_OK);
	assert_uint_equal(c.n, 1);
	assert_item_sub(&c.v[0], &bob_sub);
	coll_free(&c);
	assert_int_equal(store_walk_subs(st, "alice", cb_sub, &c), STORE_OK);
	assert_uint_equal(c.n, 2);
	for(size_t i = 0; i < c.n; i++){
		struct rec_sub got;
		assert_int_equal(record_decode_sub(c.v[i].enc, c.v[i].len, &got), 0);
		assert_string_equal(got.clientid, "alice");
		if(!strcmp(got.topic_filter, "a/#")){
			assert_uint_equal(got.identifier, 0);
			assert_uint_equal(got.options, 1);
		}else{
			assert_string_equal(got.topic_filter, "b/+/c");
			assert_uint_equal(got.identifier, 12);
			assert_uint_equal(got.options, 2);
		}
	}
	coll_free(&c);
	assert_uint_equal(count_subs(st, NULL), 3);
	assert_uint_equal(count_subs(st, "carol"), 0);

	/* Queue, in order. */
	uint64_t epoch_at_write = 1;
	assert_int_equal(store_walk_queue(st, "alice", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, 4);
	for(uint64_t i = 1; i <= 4; i++){
		struct rec_queue q = queue_make(msg_ids[i], (uint16_t)i);
		assert_uint_equal(c.v[i - 1].id, (epoch_at_write << STORE_SEQ_SHIFT) | i);
		assert_item_queue(&c.v[i - 1], &q);
	}
	coll_free(&c);
	assert_uint_equal(count_queue(st, "bob"), 0);

	/* Retained. */
	assert_int_equal(store_walk_retained(st, cb_retain, &c), STORE_OK);
	assert_uint_equal(c.n, 2);
	assert_non_null(find_name(&c, "topic/1"));
	assert_non_null(find_name(&c, "topic/2"));
	assert_uint_equal(find_name(&c, "topic/1")->id, msg_ids[1]);
	assert_uint_equal(find_name(&c, "topic/2")->id, msg_ids[2]);
	coll_free(&c);

	/* Wills: per client and all. */
	struct rec_will w = will_make("bob", "bob/status", "gone");
	assert_int_equal(store_walk_wills(st, "bob", cb_will, &c), STORE_OK);
	assert_uint_equal(c.n, 1);
	assert_item_will(&c.v[0], &w);
	coll_free(&c);
	assert_uint_equal(count_wills(st, "alice"), 0);
	assert_uint_equal(count_wills(st, NULL), 1);
}

static void test_roundtrip_all_kinds(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);

	write_all_kinds(st);

	/* Nothing is visible before the commit. */
	assert_true(store_has_pending(st));
	struct store_stats s = stats_of(st);
	assert_uint_equal(s.pending_ops, N_MSG_IDS + 2 + 3 + 4 + 2 + 1);
	assert_uint_equal(count_msgs(st), 0);
	assert_uint_equal(count_sessions(st), 0);
	assert_uint_equal(count_subs(st, NULL), 0);
	assert_uint_equal(count_queue(st, "alice"), 0);
	assert_uint_equal(count_retained(st), 0);
	assert_uint_equal(count_wills(st, NULL), 0);

	commit_ok(st);
	s = stats_of(st);
	assert_uint_equal(s.commits, 1);
	assert_uint_equal(s.commit_errors, 0);
	assert_uint_equal(s.pending_ops, 0);
	check_all_kinds(st);
	assert_uint_equal(stats_of(st).records_rejected, 0);

	/* The store passes its structure check: 4 meta records (schema, key
	 * check, epoch, this open's salt) + ours + refs
	 * records of the 2 bodies retained entries use (a body's queue entries
	 * are counted in its own record, retained entries are not). */
	uint64_t records = 0;
	char err[512];
	assert_int_equal(store_check_structure(st, &records, err, sizeof(err)), STORE_OK);
	assert_uint_equal(records, 4 + N_MSG_IDS + 2 + 3 + 4 + 2 + 1 + 2 + 4 /* the queue entries' index pairs */);
	store_close(st);

	/* Everything persists across a reopen (under a new epoch), read-write
	 * and read-only. */
	st = open_store(fx, 0, 0);
	assert_uint_equal(store_epoch(st), 2);
	check_all_kinds(st);
	store_close(st);
	st = open_store(fx, 0, STORE_READ_ONLY);
	check_all_kinds(st);
	assert_uint_equal(stats_of(st).records_rejected, 0);
	assert_uint_equal(g_log_count[STORE_LOG_WARNING], 0);
	store_close(st);
}

static void test_overwrite_and_delete(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct msg_fx mf;
	struct coll c = {0};

	write_all_kinds(st);
	commit_ok(st);

	/* Replace a session. */
	struct rec_session s2 = session_make("alice", "other-user", 60);
	assert_int_equal(store_session_put(st, &s2), STORE_OK);
	/* Replace a retained entry. */
	assert_int_equal(store_retain_set(st, "topic/1", 999), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_walk_sessions(st, cb_session, &c), STORE_OK);
	assert_uint_equal(c.n, 2);
	assert_item_session(find_name(&c, "alice"), &s2);
	coll_free(&c);
	assert_int_equal(store_walk_retained(st, cb_retain, &c), STORE_OK);
	assert_uint_equal(c.n, 2);
	assert_uint_equal(find_name(&c, "topic/1")->id, 999);
	coll_free(&c);

	/* Single deletes, each of its own record only. */
	assert_int_equal(store_msg_release(st, msg_ids[2]), STORE_OK);
	assert_int_equal(store_sub_delete(st, "alice", "a/#"), STORE_OK);
	assert_int_equal(store_queue_remove(st, "alice", 2, 0), STORE_OK);
	assert_int_equal(store_retain_delete(st, "topic/2"), STORE_OK);
	assert_int_equal(store_will_delete(st, "bob"), STORE_OK);
	/* Deleting what is not there is not an error. */
	assert_int_equal(store_msg_release(st, 123456), STORE_OK);
	assert_int_equal(store_sub_delete(st, "nobody", "x"), STORE_OK);
	assert_int_equal(store_queue_remove(st, "alice", 99, 0), STORE_OK);
	assert_int_equal(store_retain_delete(st, "no/such/topic"), STORE_OK);
	assert_int_equal(store_will_delete(st, "alice"), STORE_OK);
	assert_int_equal(store_session_delete(st, "nobody"), STORE_OK);
	/* Buffered until the commit. */
	assert_uint_equal(count_msgs(st), N_MSG_IDS);
	assert_uint_equal(count_wills(st, NULL), 1);
	commit_ok(st);

	assert_int_equal(store_walk_msgs(st, cb_msg, &c), STORE_OK);
	assert_uint_equal(c.n, N_MSG_IDS - 1);
	for(size_t i = 0, j = 0; i < N_MSG_IDS; i++){
		if(i == 2){
			continue;
		}
		msg_make(&mf, (int)i);
		assert_uint_equal(c.v[j].id, msg_ids[i]);
		assert_item_msg(&c.v[j], &mf.m);
		j++;
	}
	coll_free(&c);
	assert_int_equal(store_walk_subs(st, "alice", cb_sub, &c), STORE_OK);
	assert_uint_equal(c.n, 1);
	struct rec_sub left = {"alice", "b/+/c", 12, 2};
	assert_item_sub(&c.v[0], &left);
	coll_free(&c);
	assert_uint_equal(count_subs(st, "bob"), 1);
	assert_int_equal(store_walk_queue(st, "alice", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, 3);
	assert_uint_equal(c.v[0].id & ((1ull << STORE_SEQ_SHIFT) - 1), 1);
	assert_uint_equal(c.v[1].id & ((1ull << STORE_SEQ_SHIFT) - 1), 3);
	assert_uint_equal(c.v[2].id & ((1ull << STORE_SEQ_SHIFT) - 1), 4);
	coll_free(&c);
	assert_uint_equal(count_retained(st), 1);
	assert_uint_equal(count_wills(st, NULL), 0);
	assert_uint_equal(count_sessions(st), 2);

	/* Operations of one commit apply in order. */
	msg_make(&mf, 50);
	assert_int_equal(store_msg_put(st, 5000, &mf.m), STORE_OK);
	assert_int_equal(store_msg_release(st, 5000), STORE_OK);
	assert_int_equal(store_msg_release(st, 5001), STORE_OK);
	assert_int_equal(store_msg_put(st, 5001, &mf.m), STORE_OK);
	struct rec_will w = will_make("carol", "c/w", "");
	assert_int_equal(store_will_put(st, &w), STORE_OK);
	assert_int_equal(store_session_delete(st, "carol"), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_walk_msgs(st, cb_msg, &c), STORE_OK);
	bool has5000 = false, has5001 = false;
	for(size_t i = 0; i < c.n; i++){
		has5000 |= c.v[i].id == 5000;
		has5001 |= c.v[i].id == 5001;
	}
	assert_false(has5000);
	assert_true(has5001);
	coll_free(&c);
	assert_uint_equal(count_wills(st, "carol"), 0);
	store_close(st);
}

static void add_client(struct store *st, const char *id, uint64_t base)
{
	char name[64];
	struct rec_session s = session_make(id, "u", 100);
	assert_int_equal(store_session_put(st, &s), STORE_OK);
	for(int i = 0; i < 2; i++){
		snprintf(name, sizeof(name), "%s/sub/%d", id, i);
		struct rec_sub sub = {id, name, (uint32_t)i, 1};
		assert_int_equal(store_sub_put(st, &sub), STORE_OK);
	}
	for(uint64_t i = 1; i <= 3; i++){
		struct rec_queue q = queue_make(base + i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, id, i, &q), STORE_OK);
	}
	snprintf(name, sizeof(name), "%s/will", id);
	struct rec_will w = will_make(id, name, "bye");
	assert_int_equal(store_will_put(st, &w), STORE_OK);
}

static void assert_client(struct store *st, const char *id, bool present)
{
	struct coll c = {0};
	size_t want = present ? 1 : 0;

	assert_int_equal(store_walk_sessions(st, cb_session, &c), STORE_OK);
	assert_uint_equal(find_name(&c, id) ? 1 : 0, want);
	coll_free(&c);
	assert_int_equal(store_walk_subs(st, id, cb_sub, &c), STORE_OK);
	assert_uint_equal(c.n, 2 * want);
	for(size_t i = 0; i < c.n; i++){
		assert_string_equal(c.v[i].name, id);
	}
	coll_free(&c);
	assert_int_equal(store_walk_queue(st, id, cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, 3 * want);
	coll_free(&c);
	assert_int_equal(store_walk_wills(st, id, cb_will, &c), STORE_OK);
	assert_uint_equal(c.n, want);
	if(present){
		assert_string_equal(c.v[0].name, id);
	}
	coll_free(&c);
}

/* The budget's two reads: subscriptions of clients not marked online, and
 * the pages in use, which follow what is stored and what is deleted. */
static void test_offline_subs_and_used_bytes(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 1 << 20, 0);
	struct coll c = {0};
	uint64_t empty = store_used_bytes(st);

	assert_true(empty > 0);
	add_client(st, "on", 100);
	add_client(st, "off", 200);
	assert_int_equal(store_session_set_online(st, "on", true), STORE_OK);
	for(int i = 0; i < 300; i++){
		struct msg_fx m;
		msg_make(&m, i);
		assert_int_equal(store_msg_put(st, (uint64_t)1000 + (uint64_t)i, &m.m), STORE_OK);
	}
	commit_ok(st);
	assert_int_equal(store_walk_offline_subs(st, cb_sub, &c), STORE_OK);
	assert_uint_equal(c.n, 2);
	assert_string_equal(c.v[0].name, "off");
	assert_string_equal(c.v[1].name, "off");
	coll_free(&c);

	/* A commit within 100 ms of the last measurement is measured later. */
	usleep(150 * 1000);
	store_used_refresh(st);
	uint64_t full = store_used_bytes(st);
	assert_true(full > empty);

	assert_int_equal(store_session_set_online(st, "on", false), STORE_OK);
	for(int i = 0; i < 300; i++){
		assert_int_equal(store_msg_release(st, (uint64_t)1000 + (uint64_t)i), STORE_OK);
	}
	commit_ok(st);
	usleep(150 * 1000);
	store_used_refresh(st);
	assert_true(store_used_bytes(st) < full);
	assert_int_equal(store_walk_offline_subs(st, cb_sub, &c), STORE_OK);
	assert_uint_equal(c.n, 4);
	coll_free(&c);
	store_close(st);
}

static void test_session_delete_scoped(void **state)
{
	static const char *const ids[] = {"a", "ab", "abc", "b", "A"};
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct msg_fx mf;

	for(size_t i = 0; i < 5; i++){
		add_client(st, ids[i], i * 100);
	}
	msg_make(&mf, 1);
	assert_int_equal(store_msg_put(st, 101, &mf.m), STORE_OK);
	assert_int_equal(store_retain_set(st, "a", 101), STORE_OK);
	commit_ok(st);
	for(size_t i = 0; i < 5; i++){
		assert_client(st, ids[i], true);
	}

	assert_int_equal(store_session_delete(st, "a"), STORE_OK);
	assert_client(st, "a", true); /* not yet committed */
	commit_ok(st);
	assert_client(st, "a", false);
	for(size_t i = 1; i < 5; i++){
		assert_client(st, ids[i], true);
	}
	assert_uint_equal(count_sessions(st), 4);
	assert_uint_equal(count_subs(st, NULL), 8);
	assert_uint_equal(count_wills(st, NULL), 4);
	/* Messages and retained entries are not the session's. */
	assert_uint_equal(count_msgs(st), 1);
	assert_uint_equal(count_retained(st), 1);

	assert_int_equal(store_session_delete(st, "abc"), STORE_OK);
	commit_ok(st);
	assert_client(st, "abc", false);
	assert_client(st, "ab", true);
	assert_client(st, "b", true);
	assert_client(st, "A", true);
	store_close(st);

	/* Still so after a reopen. */
	st = open_store(fx, 0, 0);
	assert_client(st, "a", false);
	assert_client(st, "abc", false);
	assert_client(st, "ab", true);
	assert_uint_equal(count_sessions(st), 3);
	store_close(st);
}

#define QN 300

static void test_queue_order_across_epochs(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct coll c = {0};
	const uint64_t e1 = store_epoch(st);

	assert_uint_equal(e1, 1);
	/* cmsg_ids 1..QN appended in a scrambled order (11 is prime to QN + 1). */
	for(uint64_t i = 1; i <= QN; i++){
		uint64_t id = i * 11 % (QN + 1);
		struct rec_queue q = queue_make(1000 + id, (uint16_t)id);
		assert_int_equal(store_queue_append(st, "c", id, &q), STORE_OK);
	}
	/* Another client's queue, with the same cmsg_ids. */
	for(uint64_t i = 1; i <= 5; i++){
		struct rec_queue q = queue_make(9000 + i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, "c2", i, &q), STORE_OK);
	}
	commit_ok(st);

	assert_int_equal(store_walk_queue(st, "c", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, QN);
	for(uint64_t i = 1; i <= QN; i++){
		struct rec_queue q = queue_make(1000 + i, (uint16_t)i);
		if(c.v[i - 1].id != ((e1 << STORE_SEQ_SHIFT) | i)){
			fail_msg("queue entry %llu has seq %#llx", (unsigned long long)i, (unsigned long long)c.v[i - 1].id);
		}
		assert_item_queue(&c.v[i - 1], &q);
	}
	coll_free(&c);
	assert_uint_equal(count_queue(st, "c2"), 5);
	store_close(st);

	/* A new run: the broker numbers from 1 again. */
	st = open_store(fx, 0, 0);
	const uint64_t e2 = store_epoch(st);
	assert_uint_equal(e2, e1 + 1);
	for(uint64_t id = 1; id <= 3; id++){
		struct rec_queue q = queue_make(5000 + id, (uint16_t)id);
		assert_int_equal(store_queue_append(st, "c", id, &q), STORE_OK);
	}
	commit_ok(st);
	assert_int_equal(store_walk_queue(st, "c", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, QN + 3);
	for(uint64_t i = 1; i <= QN; i++){
		assert_uint_equal(c.v[i - 1].id, (e1 << STORE_SEQ_SHIFT) | i);
	}
	for(uint64_t id = 1; id <= 3; id++){
		struct rec_queue q = queue_make(5000 + id, (uint16_t)id);
		assert_uint_equal(c.v[QN + id - 1].id, (e2 << STORE_SEQ_SHIFT) | id);
		assert_item_queue(&c.v[QN + id - 1], &q);
	}
	coll_free(&c);

	/* Restored entries are addressed by their seq (>= 2^40). */
	const uint64_t old5 = (e1 << STORE_SEQ_SHIFT) | 5, old7 = (e1 << STORE_SEQ_SHIFT) | 7;
	assert_true(old5 >= (1ull << STORE_SEQ_SHIFT));
	assert_int_equal(store_queue_remove(st, "c", old5, 0), STORE_OK);
	struct rec_queue q7 = queue_make(7777, 77);
	q7.state = 9;
	assert_int_equal(store_queue_append(st, "c", old7, &q7), STORE_OK);
	/* A small cmsg_id is this run's. */
	assert_int_equal(store_queue_remove(st, "c", 2, 0), STORE_OK);
	commit_ok(st);

	assert_int_equal(store_walk_queue(st, "c", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, QN + 3 - 2);
	/* Old 1..4, 6, 7 (replaced in place), 8.. */
	assert_uint_equal(c.v[3].id, (e1 << STORE_SEQ_SHIFT) | 4);
	assert_uint_equal(c.v[4].id, (e1 << STORE_SEQ_SHIFT) | 6);
	assert_uint_equal(c.v[5].id, old7);
	assert_item_queue(&c.v[5], &q7);
	assert_uint_equal(c.v[1].id, (e1 << STORE_SEQ_SHIFT) | 2); /* the old 2 stays */
	struct rec_queue q2 = queue_make(1002, 2);
	assert_item_queue(&c.v[1], &q2);
	/* QN - 1 old entries, then this run's 1 and 3. */
	assert_uint_equal(c.v[QN - 2].id, (e1 << STORE_SEQ_SHIFT) | QN);
	assert_uint_equal(c.v[QN - 1].id, (e2 << STORE_SEQ_SHIFT) | 1);
	assert_uint_equal(c.v[QN].id, (e2 << STORE_SEQ_SHIFT) | 3);
	coll_free(&c);
	assert_uint_equal(count_queue(st, "c2"), 5);
	store_close(st);

	/* Third run: its entries come after both earlier runs'. */
	st = open_store(fx, 0, 0);
	const uint64_t e3 = store_epoch(st);
	assert_uint_equal(e3, e2 + 1);
	struct rec_queue q = queue_make(1, 1);
	assert_int_equal(store_queue_append(st, "c", 1, &q), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_walk_queue(st, "c", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, QN + 2);
	assert_uint_equal(c.v[c.n - 1].id, (e3 << STORE_SEQ_SHIFT) | 1);
	for(size_t i = 1; i < c.n; i++){
		assert_true(c.v[i - 1].id < c.v[i].id);
	}
	coll_free(&c);
	store_close(st);
}

/* Queue operations between commits against a model: entries added,
 * updated and removed before a commit (cancelled in the buffer), after one,
 * across journal marks and session deletions, with synchronous and
 * asynchronous commits. */
#define MQ_CLIENTS 3
#define MQ_SEQS 400

struct mq_model {
	bool present[MQ_CLIENTS][MQ_SEQS + 1];
	uint64_t store_id[MQ_CLIENTS][MQ_SEQS + 1];
	uint16_t next[MQ_CLIENTS];
};

static uint32_t mq_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return (uint32_t)(*x >> 16);
}

static void mq_check(struct store *st, const struct mq_model *m, const char *const *ids)
{
	for(int c = 0; c < MQ_CLIENTS; c++){
		struct coll got = {0};
		size_t k = 0;
		assert_int_equal(store_walk_queue(st, ids[c], cb_queue, &got), STORE_OK);
		for(uint16_t seq = 1; seq <= MQ_SEQS; seq++){
			if(!m->present[c][seq]){
				continue;
			}
			assert_true(k < got.n);
			assert_uint_equal(got.v[k].id & ((1ull << STORE_SEQ_SHIFT) - 1), seq);
			struct rec_queue q = queue_make(m->store_id[c][seq], seq);
			assert_item_queue(&got.v[k], &q);
			k++;
		}
		assert_uint_equal(got.n, k);
		coll_free(&got);
	}
}

static void test_queue_ops_between_commits(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	static const char *const ids[MQ_CLIENTS] = {"q-a", "q-b", "q-c"};
	struct mq_model *m = calloc(1, sizeof(*m));
	uint64_t x = 0x9E3779B97F4A7C15ull, version = 1, lsn = 0;
	size_t checks = 0;

	assert_non_null(m);
	for(int c = 0; c < MQ_CLIENTS; c++){
		m->next[c] = 1;
	}
	for(int step = 0; step < 6000; step++){
		int c = (int)(mq_rand(&x) % MQ_CLIENTS);
		uint32_t r = mq_rand(&x) % 100;
		uint16_t seq = (uint16_t)(1 + mq_rand(&x) % MQ_SEQS);
		if(r < 40 && m->next[c] <= MQ_SEQS){
			seq = m->next[c]++;
			struct rec_queue q = queue_make(++version, seq);
			assert_int_equal(store_queue_append(st, ids[c], seq, &q), STORE_OK);
			m->present[c][seq] = true;
			m->store_id[c][seq] = version;
		}else if(r < 65 && m->present[c][seq]){
			struct rec_queue q = queue_make(++version, seq);
			assert_int_equal(store_queue_update(st, ids[c], seq, &q), STORE_OK);
			m->store_id[c][seq] = version;
		}else if(r < 90){
			/* Also of an entry that is not there (the broker's deletes of
			 * what was never stored). */
			assert_int_equal(store_queue_remove(st, ids[c], seq, 0), STORE_OK);
			m->present[c][seq] = false;
		}else if(r < 91){
			assert_int_equal(store_session_delete(st, ids[c]), STORE_OK);
			memset(m->present[c], 0, sizeof(m->present[c]));
		}else if(r < 93){
			/* A later write does not replace an operation before a mark. */
			assert_int_equal(store_journal_mark(st, ++lsn), STORE_OK);
		}else if(r < 96){
			assert_int_equal(store_commit_async(st), STORE_OK);
		}else{
			commit_ok(st);
			mq_check(st, m, ids);
			checks++;
		}
	}
	commit_ok(st);
	mq_check(st, m, ids);
	store_close(st);
	st = open_store(fx, 0, 0);
	mq_check(st, m, ids);
	assert_true(checks > 100);
	store_close(st);
	free(m);
}

/* Body reference counts against a model: bodies shared by several
 * clients' queues and by retained entries, references added and dropped
 * in the same buffer (cancelled) or across commits, session deletions,
 * retained replacements, the broker's releases, sync and async commits.
 * After each commit every stored count is right, no entry lost its body,
 * and a body is gone once nothing refers to it and the broker released it. */
#define BC_BODIES 300
#define BC_CLIENTS 4
#define BC_TOPICS 5

struct bc_model {
	int refs[BC_BODIES + 1];
	bool put[BC_BODIES + 1], released[BC_BODIES + 1], referenced[BC_BODIES + 1];
	uint64_t entry[BC_CLIENTS][BC_BODIES + 1];  /* cmsg_id of the client's entry of body i, 0: none */
	int retained[BC_TOPICS];                    /* body, 0: none */
	uint64_t next_cmsg;
};

static void bc_check(struct store *st, const struct bc_model *m)
{
	struct store_refs refs;
	struct coll c = {0};
	size_t expected = 0;

	assert_int_equal(store_check_refs(st, false, &refs), STORE_OK);
	assert_uint_equal(refs.refs_wrong, 0);
	assert_uint_equal(refs.dangling_queue, 0);
	assert_uint_equal(refs.dangling_retained, 0);
	assert_int_equal(store_walk_msgs(st, cb_msg, &c), STORE_OK);
	for(int b = 1; b <= BC_BODIES; b++){
		bool stored = false;
		for(size_t i = 0; i < c.n; i++){
			stored |= c.v[i].id == (uint64_t)b;
		}
		/* Kept while referred to; gone once released with no references. */
		if(m->refs[b] > 0){
			assert_true(stored);
		}else if(m->put[b] && m->released[b]){
			assert_false(stored);
		}
		expected += stored;
	}
	assert_uint_equal(c.n, expected);
	coll_free(&c);
}

static void test_body_counts(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	static const char *const ids[BC_CLIENTS] = {"b-a", "b-b", "b-c", "b-d"};
	static const char *const topics[BC_TOPICS] = {"r/0", "r/1", "r/2", "r/3", "r/4"};
	struct bc_model *m = calloc(1, sizeof(*m));
	uint64_t x = 0x2545F4914F6CDD1Dull;
	int next_body = 1;
	size_t checks = 0;
	struct msg_fx mf;

	assert_non_null(m);
	for(int step = 0; step < 8000; step++){
		uint32_t r = mq_rand(&x) % 100;
		int b = 1 + (int)(mq_rand(&x) % BC_BODIES);
		int c = (int)(mq_rand(&x) % BC_CLIENTS);
		/* Like the broker: a body gets references while it is new or
		 * still referred to, and is not released twice. */
		bool usable = m->put[b] && !m->released[b] && (m->refs[b] > 0 || !m->referenced[b]);

		if(r < 15 && next_body <= BC_BODIES){
			b = next_body++;
			msg_make(&mf, b);
			assert_int_equal(store_msg_put(st, (uint64_t)b, &mf.m), STORE_OK);
			m->put[b] = true;
		}else if(r < 45 && usable && !m->entry[c][b]){
			struct rec_queue q = queue_make((uint64_t)b, (uint16_t)b);
			m->entry[c][b] = ++m->next_cmsg;
			assert_int_equal(store_queue_append(st, ids[c], m->entry[c][b], &q), STORE_OK);
			m->refs[b]++;
			m->referenced[b] = true;
		}else if(r < 50 && m->entry[c][b]){
			struct rec_queue q = queue_make((uint64_t)b, (uint16_t)b);
			q.state = 3;
			assert_int_equal(store_queue_update(st, ids[c], m->entry[c][b], &q), STORE_OK);
		}else if(r < 70 && m->entry[c][b]){
			/* Half the time read first, as a hand-back does: the removal
			 * then carries the body's refs0 to the writer. */
			if(mq_rand(&x) % 2){
				struct coll got = {0};
				assert_int_equal(store_msg_get(st, (uint64_t)b, cb_msg, &got), STORE_OK);
				coll_free(&got);
			}
			assert_int_equal(store_queue_remove(st, ids[c], m->entry[c][b], mq_rand(&x) % 2 ? (uint64_t)b : 0), STORE_OK);
			m->entry[c][b] = 0;
			m->refs[b]--;
		}else if(r < 76 && usable){
			int t = (int)(mq_rand(&x) % BC_TOPICS);
			assert_int_equal(store_retain_set(st, topics[t], (uint64_t)b), STORE_OK);
			if(m->retained[t]){
				m->refs[m->retained[t]]--;
			}
			m->retained[t] = b;
			m->refs[b]++;
			m->referenced[b] = true;
		}else if(r < 79){
			int t = (int)(mq_rand(&x) % BC_TOPICS);
			assert_int_equal(store_retain_delete(st, topics[t]), STORE_OK);
			if(m->retained[t]){
				m->refs[m->retained[t]]--;
			}
			m->retained[t] = 0;
		}else if(r < 81){
			assert_int_equal(store_session_delete(st, ids[c]), STORE_OK);
			for(int i = 1; i <= BC_BODIES; i++){
				if(m->entry[c][i]){
					m->entry[c][i] = 0;
					m->refs[i]--;
				}
			}
		}else if(r < 90 && m->put[b] && !m->released[b]){
			assert_int_equal(store_msg_release(st, (uint64_t)b), STORE_OK);
			m->released[b] = true;
		}else if(r < 95){
			assert_int_equal(store_commit_async(st), STORE_OK);
		}else{
			commit_ok(st);
			bc_check(st, m);
			checks++;
		}
	}
	commit_ok(st);
	bc_check(st, m);
	store_close(st);
	st = open_store(fx, 0, 0);
	bc_check(st, m);

	/* Nothing refers to anything any more: every body goes. */
	for(int c = 0; c < BC_CLIENTS; c++){
		assert_int_equal(store_session_delete(st, ids[c]), STORE_OK);
	}
	for(int t = 0; t < BC_TOPICS; t++){
		assert_int_equal(store_retain_delete(st, topics[t]), STORE_OK);
	}
	for(int b = 1; b < next_body; b++){
		if(!m->released[b]){
			assert_int_equal(store_msg_release(st, (uint64_t)b), STORE_OK);
		}
	}
	commit_ok(st);
	assert_uint_equal(count_msgs(st), 0);
	uint64_t entries, bytes;
	assert_int_equal(store_count(st, DB_REFS, &entries, &bytes), STORE_OK);
	assert_uint_equal(entries, 0);
	assert_true(checks > 100);
	store_close(st);
	free(m);
}

/* A body read (as a hand-back reads it) and then unreferenced: the removal
 * carries the body's own count, and the count comes out as when the writer
 * reads it from the body. */
static void test_removal_after_read(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	const char *clients[] = {"h-a", "h-b", "h-c"};
	struct store_refs refs;
	struct msg_fx mf;
	uint64_t entries, bytes;

	/* Body 1 for one client, body 2 for three. */
	msg_make(&mf, 1);
	assert_int_equal(store_msg_put(st, 1, &mf.m), STORE_OK);
	struct rec_queue q1 = queue_make(1, 1);
	assert_int_equal(store_queue_append(st, clients[0], 1, &q1), STORE_OK);
	msg_make(&mf, 2);
	assert_int_equal(store_msg_put(st, 2, &mf.m), STORE_OK);
	struct rec_queue q2 = queue_make(2, 2);
	for(int c = 0; c < 3; c++){
		assert_int_equal(store_queue_append(st, clients[c], 2, &q2), STORE_OK);
	}
	commit_ok(st);
	for(uint64_t b = 1; b <= 2; b++){
		struct coll got = {0};
		assert_int_equal(store_msg_get(st, b, cb_msg, &got), STORE_OK);
		assert_uint_equal(got.n, 1);
		coll_free(&got);
	}

	assert_int_equal(store_queue_remove(st, clients[0], 1, 1), STORE_OK);
	assert_int_equal(store_queue_remove(st, clients[0], 2, 2), STORE_OK);
	commit_ok(st);
	assert_uint_equal(count_msgs(st), 1);
	assert_int_equal(store_count(st, DB_REFS, &entries, &bytes), STORE_OK);
	assert_uint_equal(entries, 1);
	assert_int_equal(store_check_refs(st, false, &refs), STORE_OK);
	assert_uint_equal(refs.refs_wrong, 0);
	assert_uint_equal(refs.orphan_msgs, 0);

	assert_int_equal(store_queue_remove(st, clients[1], 2, 2), STORE_OK);
	assert_int_equal(store_queue_remove(st, clients[2], 2, 2), STORE_OK);
	commit_ok(st);
	assert_uint_equal(count_msgs(st), 0);
	assert_int_equal(store_count(st, DB_REFS, &entries, &bytes), STORE_OK);
	assert_uint_equal(entries, 0);
	store_close(st);
}

static void test_wrong_key(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	uint8_t good_key[SEAL_KEY_LEN];
	char err[512];

	struct rec_session s = session_make("keep-me", NULL, 10);
	assert_int_equal(store_session_put(st, &s), STORE_OK);
	commit_ok(st);
	store_close(st);

	memcpy(good_key, fx->tmp.key, SEAL_KEY_LEN);
	for(int bit = 0; bit < 2; bit++){
		fx->tmp.key[bit ? 31 : 0] ^= (uint8_t)(bit ? 0x80 : 0x01);
		for(int ro = 0; ro < 2; ro++){
			st = (struct store *)1;
			err[0] = 0;
			assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, ro ? STORE_READ_ONLY : 0,
					test_log, err, sizeof(err)), STORE_ERR_KEY);
			assert_null(st);
			assert_non_null(strstr(err, "does not match"));
		}
		memcpy(fx->tmp.key, good_key, SEAL_KEY_LEN);
	}

	/* The right key still opens it, and the refused opens did not bump the
	 * epoch. */
	st = open_store(fx, 0, 0);
	assert_uint_equal(store_epoch(st), 2);
	assert_uint_equal(count_sessions(st), 1);
	store_close(st);
}

static void test_epoch_and_read_only(void **state)
{
	struct fx *fx = *state;
	struct store *st;
	struct msg_fx mf;

	for(uint32_t e = 1; e <= 4; e++){
		st = open_store(fx, 0, 0);
		assert_uint_equal(store_epoch(st), e);
		msg_make(&mf, (int)e);
		assert_int_equal(store_msg_put(st, e, &mf.m), STORE_OK);
		commit_ok(st);
		store_close(st);
	}

	/* Each record's nonce carries the epoch of the open that wrote it. */
	struct raw r;
	raw_open(&r, fx->tmp.path);
	MDB_dbi msgs = raw_dbi(&r, "msgs");
	for(uint64_t e = 1; e <= 4; e++){
		uint8_t k[8];
		size_t vlen;
		be64_put(k, e);
		uint8_t *v = raw_get(&r, msgs, k, 8, &vlen);
		assert_non_null(v);
		assert_int_equal(v[0], SEAL_VERSION);
		assert_uint_equal(be32_get(v + 2), e);
		free(v);
	}
	raw_close(&r, false);

	/* Read-only: sees the data, keeps the epoch, refuses writes. */
	for(int i = 0; i < 2; i++){
		st = open_store(fx, 0, STORE_READ_ONLY);
		assert_uint_equal(store_epoch(st), 4);
		assert_uint_equal(count_msgs(st), 4);
		assert_int_equal(store_msg_put(st, 99, &mf.m), STORE_ERR_READONLY);
		assert_int_equal(store_msg_release(st, 1), STORE_ERR_READONLY);
		struct rec_session s = session_make("x", NULL, 1);
		assert_int_equal(store_session_put(st, &s), STORE_ERR_READONLY);
		assert_int_equal(store_session_delete(st, "x"), STORE_ERR_READONLY);
		assert_int_equal(store_retain_set(st, "t", 1), STORE_ERR_READONLY);
		assert_false(store_has_pending(st));
		assert_int_equal(store_commit(st), STORE_OK);
		store_close(st);
	}

	st = open_store(fx, 0, 0);
	assert_uint_equal(store_epoch(st), 5);
	assert_uint_equal(count_msgs(st), 4);
	store_close(st);
}

static void test_map_growth(void **state)
{
	enum { N = 80, SZ = 256 * 1024 }; /* 20 MiB */
	struct fx *fx = *state;
	struct store *st = open_store(fx, MIB, 0);
	uint8_t *payload = malloc(SZ);
	struct coll c = {0};

	assert_non_null(payload);
	/* The open keeps headroom over what is used, but nothing like 20 MiB. */
	assert_true(stats_of(st).map_size >= MIB && stats_of(st).map_size <= 4 * MIB);
	for(int i = 0; i < N; i++){
		memset(payload, i, SZ);
		payload[0] = (uint8_t)~i;
		struct rec_base_msg m = {.topic = "big", .payload = {payload, SZ}, .qos = 1};
		assert_int_equal(store_msg_put(st, (uint64_t)i + 1, &m), STORE_OK);
	}
	commit_ok(st);
	struct store_stats s = stats_of(st);
	assert_true(s.map_grows > 0);
	assert_true(s.map_size >= (size_t)N * SZ);
	assert_uint_equal(s.commits, 1);
	assert_uint_equal(s.commit_errors, 0);
	assert_true(g_log_count[STORE_LOG_NOTICE] >= 1); /* one line per commit that grew it */

	for(int pass = 0; pass < 2; pass++){
		assert_int_equal(store_walk_msgs(st, cb_msg, &c), STORE_OK);
		assert_uint_equal(c.n, N);
		for(int i = 0; i < N; i++){
			struct rec_base_msg got;
			assert_uint_equal(c.v[i].id, (uint64_t)i + 1);
			assert_int_equal(record_decode_base_msg(c.v[i].enc, c.v[i].len, &got), 0);
			assert_uint_equal(got.payload.len, SZ);
			assert_int_equal(got.payload.data[0], (uint8_t)~i);
			memset(payload, i, SZ);
			payload[0] = (uint8_t)~i;
			assert_memory_equal(got.payload.data, payload, SZ);
		}
		coll_free(&c);
		if(pass == 0){
			/* Reopened (default map size): everything is still there. */
			store_close(st);
			st = open_store(fx, 0, 0);
		}
	}
	/* And it can still grow. */
	memset(payload, 0xee, SZ);
	for(int i = 0; i < 8; i++){
		struct rec_base_msg m = {.topic = "more", .payload = {payload, SZ}, .qos = 0};
		assert_int_equal(store_msg_put(st, 1000 + (uint64_t)i, &m), STORE_OK);
	}
	commit_ok(st);
	assert_uint_equal(count_msgs(st), N + 8);
	store_close(st);
	free(payload);
}

/* Writes 5 messages and 2 sessions, closes. */
static void tamper_fixture(struct fx *fx)
{
	struct store *st = open_store(fx, 0, 0);
	struct msg_fx mf;

	for(int i = 1; i <= 5; i++){
		msg_make(&mf, i + 10);
		assert_int_equal(store_msg_put(st, (uint64_t)i, &mf.m), STORE_OK);
	}
	struct rec_session s1 = session_make("s1", NULL, 1), s2 = session_make("s2", NULL, 2);
	assert_int_equal(store_session_put(st, &s1), STORE_OK);
	assert_int_equal(store_session_put(st, &s2), STORE_OK);
	commit_ok(st);
	store_close(st);
}

static void assert_msg_ids(struct store *st, const uint64_t *ids, size_t n)
{
	struct coll c = {0};
	assert_int_equal(store_walk_msgs(st, cb_msg, &c), STORE_OK);
	assert_uint_equal(c.n, n);
	for(size_t i = 0; i < n; i++){
		struct msg_fx mf;
		msg_make(&mf, (int)ids[i] + 10);
		assert_uint_equal(c.v[i].id, ids[i]);
		assert_item_msg(&c.v[i], &mf.m);
	}
	coll_free(&c);
}

static void test_tampered_value_rejected(void **state)
{
	struct fx *fx = *state;
	static const uint64_t all[] = {1, 2, 3, 4, 5}, without3[] = {1, 2, 4, 5};
	struct raw r;
	uint8_t k3[8], *orig;
	size_t vlen;

	tamper_fixture(fx);
	be64_put(k3, 3);
	raw_open(&r, fx->tmp.path);
	orig = raw_get(&r, raw_dbi(&r, "msgs"), k3, 8, &vlen);
	assert_non_null(orig);
	raw_close(&r, false);
	assert_true(vlen > SEAL_OVERHEAD);

	const size_t positions[] = {
		0, 1,                                   /* version, key id */
		2, 5, 6, SEAL_HEADER_LEN - 1,           /* nonce: epoch, counter */
		SEAL_HEADER_LEN, vlen / 2,              /* ciphertext */
		vlen - SEAL_TAG_LEN - 1,
		vlen - SEAL_TAG_LEN, vlen - 1,          /* tag */
	};
	uint8_t *bad = malloc(vlen);
	assert_non_null(bad);
	for(size_t i = 0; i < sizeof(positions) / sizeof(positions[0]); i++){
		memcpy(bad, orig, vlen);
		bad[positions[i]] ^= 0x04;
		raw_open(&r, fx->tmp.path);
		raw_put(&r, raw_dbi(&r, "msgs"), k3, 8, bad, vlen);
		raw_close(&r, true);

		struct store *st = open_store(fx, 0, 0);
		log_reset();
		assert_msg_ids(st, without3, 4);
		assert_uint_equal(stats_of(st).records_rejected, 1);
		assert_uint_equal(g_log_count[STORE_LOG_WARNING], 1);
		assert_non_null(strstr(g_last_warning, "msgs"));
		/* The reason names the envelope field that failed; a changed epoch
		 * names an open this file never had, or one whose key fails. */
		if(positions[i] >= 2 && positions[i] < 6){
			assert_true(strstr(g_last_warning, seal_strerror(SEAL_ERR_EPOCH))
					|| strstr(g_last_warning, seal_strerror(SEAL_ERR_AUTH)));
		}else{
			assert_non_null(strstr(g_last_warning, positions[i] == 0 ? seal_strerror(SEAL_ERR_FORMAT)
					: positions[i] == 1 ? seal_strerror(SEAL_ERR_KEY_ID) : seal_strerror(SEAL_ERR_AUTH)));
		}
		/* The other kinds are unaffected. */
		assert_uint_equal(count_sessions(st), 2);
		/* Each walk that meets it counts it. */
		assert_msg_ids(st, without3, 4);
		assert_uint_equal(stats_of(st).records_rejected, 2);
		store_close(st);
	}
	free(bad);

	/* A value cut short or grown by a byte. */
	for(int grow = 0; grow < 2; grow++){
		uint8_t *v = malloc(vlen + 1);
		assert_non_null(v);
		memcpy(v, orig, vlen);
		v[vlen] = 0;
		raw_open(&r, fx->tmp.path);
		raw_put(&r, raw_dbi(&r, "msgs"), k3, 8, v, grow ? vlen + 1 : vlen - 1);
		raw_close(&r, true);
		free(v);
		struct store *st = open_store(fx, 0, 0);
		assert_msg_ids(st, without3, 4);
		assert_uint_equal(stats_of(st).records_rejected, 1);
		store_close(st);
	}

	/* Restoring the original value makes it readable again. */
	raw_open(&r, fx->tmp.path);
	raw_put(&r, raw_dbi(&r, "msgs"), k3, 8, orig, vlen);
	raw_close(&r, true);
	struct store *st = open_store(fx, 0, 0);
	assert_msg_ids(st, all, 5);
	assert_uint_equal(stats_of(st).records_rejected, 0);
	store_close(st);
	free(orig);

	/* A session (hashed key) with a flipped tag byte. */
	uint8_t *k, *v;
	size_t klen;
	raw_open(&r, fx->tmp.path);
	MDB_dbi sessions = raw_dbi(&r, "sessions");
	raw_nth(&r, sessions, 1, &k, &klen, &v, &vlen);
	assert_uint_equal(klen, HASH_LEN);
	v[vlen - 1] ^= 0x80;
	raw_put(&r, sessions, k, klen, v, vlen);
	raw_close(&r, true);
	free(k);
	free(v);
	st = open_store(fx, 0, 0);
	log_reset();
	assert_uint_equal(count_sessions(st), 1);
	assert_uint_equal(stats_of(st).records_rejected, 1);
	assert_non_null(strstr(g_last_warning, "sessions"));
	assert_msg_ids(st, all, 5);
	store_close(st);
}

static void test_moved_value_rejected(void **state)
{
	struct fx *fx = *state;
	static const uint64_t only1_3[] = {1, 3, 4, 5};
	struct raw r;
	uint8_t k1[8], k2[8], *v1;
	size_t vlen;

	tamper_fixture(fx);

	/* msgs: the value of store_id 1 copied over store_id 2. */
	be64_put(k1, 1);
	be64_put(k2, 2);
	raw_open(&r, fx->tmp.path);
	MDB_dbi msgs = raw_dbi(&r, "msgs");
	v1 = raw_get(&r, msgs, k1, 8, &vlen);
	assert_non_null(v1);
	raw_put(&r, msgs, k2, 8, v1, vlen);
	raw_close(&r, true);
	struct store *st = open_store(fx, 0, 0);
	log_reset();
	assert_msg_ids(st, only1_3, 4);
	assert_uint_equal(stats_of(st).records_rejected, 1);
	assert_non_null(strstr(g_last_warning, "msgs"));
	assert_non_null(strstr(g_last_warning, seal_strerror(SEAL_ERR_AUTH)));

	/* Add subscriptions, a queue and a will to move values among. */
	struct rec_sub sa = {"s1", "f/1", 1, 0}, sb = {"s1", "f/2", 2, 0};
	assert_int_equal(store_sub_put(st, &sa), STORE_OK);
	assert_int_equal(store_sub_put(st, &sb), STORE_OK);
	for(uint64_t i = 1; i <= 2; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, "s1", i, &q), STORE_OK);
	}
	commit_ok(st);
	store_close(st);

	uint8_t *k, *v, *k2b, *v2b;
	size_t klen, k2len, v2len;
	raw_open(&r, fx->tmp.path);
	/* subs: first subscription's value over the second's key. */
	MDB_dbi subs = raw_dbi(&r, "subs");
	raw_nth(&r, subs, 0, &k, &klen, &v, &vlen);
	raw_nth(&r, subs, 1, &k2b, &k2len, &v2b, &v2len);
	raw_put(&r, subs, k2b, k2len, v, vlen);
	free(k);
	free(v);
	free(k2b);
	free(v2b);
	/* queues: the first entry's sealed value under the second's log id. */
	MDB_dbi log = raw_dbi(&r, "queue-log");
	raw_nth(&r, log, 0, &k, &klen, &v, &vlen);
	raw_nth(&r, log, 1, &k2b, &k2len, &v2b, &v2len);
	assert_uint_equal(klen, 8);
	raw_put(&r, log, k2b, k2len, v, vlen);
	free(k);
	free(v);
	free(k2b);
	free(v2b);
	/* sessions -> wills: the same key in another database. */
	MDB_dbi sessions = raw_dbi(&r, "sessions"), wills = raw_dbi(&r, "wills");
	raw_nth(&r, sessions, 0, &k, &klen, &v, &vlen);
	raw_put(&r, wills, k, klen, v, vlen);
	free(k);
	free(v);
	raw_close(&r, true);

	/* Each is refused by the seal (the key and database are associated data),
	 * not merely by luck of the decoder. */
	st = open_store(fx, 0, 0);
	log_reset();
	assert_uint_equal(count_subs(st, "s1"), 1);
	assert_uint_equal(stats_of(st).records_rejected, 1);
	assert_non_null(strstr(g_last_warning, "subs"));
	assert_non_null(strstr(g_last_warning, seal_strerror(SEAL_ERR_AUTH)));
	log_reset();
	assert_uint_equal(count_queue(st, "s1"), 1);
	assert_uint_equal(stats_of(st).records_rejected, 2);
	assert_non_null(strstr(g_last_warning, "queue"));
	assert_non_null(strstr(g_last_warning, seal_strerror(SEAL_ERR_AUTH)));
	log_reset();
	assert_uint_equal(count_wills(st, NULL), 0);
	assert_uint_equal(stats_of(st).records_rejected, 3);
	assert_non_null(strstr(g_last_warning, "wills"));
	assert_non_null(strstr(g_last_warning, seal_strerror(SEAL_ERR_AUTH)));
	assert_uint_equal(count_sessions(st), 2);
	assert_uint_equal(stats_of(st).records_rejected, 3);
	store_close(st);
	free(v1);
}

static void test_malformed_entries_skipped(void **state)
{
	struct fx *fx = *state;
	static const uint64_t all[] = {1, 2, 3, 4, 5};
	struct raw r;
	uint8_t k[HASH_LEN * 3], v[64];

	tamper_fixture(fx);
	memset(v, 0x01, sizeof(v));
	raw_open(&r, fx->tmp.path);
	MDB_dbi msgs = raw_dbi(&r, "msgs");
	be64_put(k, 0);
	raw_put(&r, msgs, k, 8, v, SEAL_OVERHEAD - 1);     /* too short to be sealed */
	be64_put(k, 6);
	raw_put(&r, msgs, k, 8, "", 0);                     /* empty */
	memset(k, 0xff, sizeof(k));
	raw_put(&r, msgs, k, sizeof(k), v, sizeof(v));      /* key too long */
	raw_put(&r, msgs, k, 3, v, sizeof(v));              /* key of a wrong size */
	raw_close(&r, true);

	struct store *st = open_store(fx, 0, 0);
	assert_msg_ids(st, all, 5);
	assert_uint_equal(stats_of(st).records_rejected, 4);
	store_close(st);
}

static void test_truncated_file(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	uint8_t payload[8192];
	size_t size, psize = (size_t)sysconf(_SC_PAGESIZE);
	char err[512];

	for(int i = 0; i < 40; i++){
		memset(payload, i, sizeof(payload));
		struct rec_base_msg m = {.topic = "t", .payload = {payload, sizeof(payload)}};
		assert_int_equal(store_msg_put(st, (uint64_t)i + 1, &m), STORE_OK);
	}
	commit_ok(st);
	store_close(st);

	uint8_t *orig = ut_read_file(fx->datafile, &size);
	assert_non_null(orig);
	assert_true(size > 40 * sizeof(payload));

	const size_t cuts[] = {size - 1, size - psize, size - psize - 1, size / 2, 3 * psize, 2 * psize};
	for(size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++){
		for(int ro = 0; ro < 2; ro++){
			assert_int_equal(ut_write_file(fx->datafile, orig, cuts[i], 0600), 0);
			st = (struct store *)1;
			err[0] = 0;
			int rc = store_open(&st, fx->tmp.path, 0, fx->tmp.key, ro ? STORE_READ_ONLY : 0, test_log, err, sizeof(err));
			if(rc != STORE_ERR_CORRUPT){
				store_close(st);
				fail_msg("data file cut to %zu of %zu bytes: store_open gave %d (%s), not STORE_ERR_CORRUPT",
						cuts[i], size, rc, err);
			}
			assert_null(st);
			assert_non_null(strstr(err, "truncated"));
			/* The refused open left the file alone. */
			struct stat sb;
			assert_int_equal(stat(fx->datafile, &sb), 0);
			assert_uint_equal((size_t)sb.st_size, cuts[i]);
		}
	}

	/* Less than the two meta pages: damaged, whatever the wording. */
	assert_int_equal(ut_write_file(fx->datafile, orig, psize + 100, 0600), 0);
	st = (struct store *)1;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, 0, test_log, err, sizeof(err)), STORE_ERR_CORRUPT);
	assert_null(st);

	/* Emptied beside a journal (made after the first commit): LMDB alone
	 * would start a new database over it. */
	char journal[4096];
	snprintf(journal, sizeof(journal), "%s/journal", fx->tmp.path);
	assert_int_equal(ut_write_file(journal, (const uint8_t *)"j", 1, 0600), 0);
	assert_int_equal(ut_write_file(fx->datafile, orig, 0, 0600), 0);
	st = (struct store *)1;
	err[0] = 0;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, 0, test_log, err, sizeof(err)), STORE_ERR_CORRUPT);
	assert_null(st);
	assert_non_null(strstr(err, "empty"));
	assert_int_equal(unlink(journal), 0);

	/* The whole file back: everything is there. */
	assert_int_equal(ut_write_file(fx->datafile, orig, size, 0600), 0);
	st = open_store(fx, 0, 0);
	assert_uint_equal(count_msgs(st), 40);
	assert_uint_equal(stats_of(st).records_rejected, 0);
	store_close(st);
	free(orig);
}

static void test_no_plaintext_on_disk(void **state)
{
	static const char *const secrets[] = {
		"VERY-SECRET-CLIENT", "SECRET/TOPIC", "SECRET-PAYLOAD", "SECRET-USERNAME",
		"SECRET/WILL", "SECRET-WILL-PAYLOAD", "SECRET/FILTER/#", "SECRET-AUTH",
	};
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	static const char payload[] = "SECRET-PAYLOAD";

	struct rec_session s = session_make("VERY-SECRET-CLIENT", "SECRET-USERNAME", 100);
	s.auth_method = "SECRET-AUTH";
	assert_int_equal(store_session_put(st, &s), STORE_OK);
	struct rec_sub sub = {"VERY-SECRET-CLIENT", "SECRET/FILTER/#", 1, 1};
	assert_int_equal(store_sub_put(st, &sub), STORE_OK);
	struct rec_base_msg m = {
		.topic = "SECRET/TOPIC",
		.source_id = "VERY-SECRET-CLIENT",
		.source_username = "SECRET-USERNAME",
		.payload = {(const uint8_t *)payload, strlen(payload)},
		.qos = 1,
	};
	assert_int_equal(store_msg_put(st, 1, &m), STORE_OK);
	struct rec_queue q = queue_make(1, 1);
	assert_int_equal(store_queue_append(st, "VERY-SECRET-CLIENT", 1, &q), STORE_OK);
	assert_int_equal(store_retain_set(st, "SECRET/TOPIC", 1), STORE_OK);
	struct rec_will w = will_make("VERY-SECRET-CLIENT", "SECRET/WILL", "SECRET-WILL-PAYLOAD");
	assert_int_equal(store_will_put(st, &w), STORE_OK);
	commit_ok(st);
	/* Overwrite and delete, so freed pages could hold old copies; through
	 * the writer thread, which seals what it commits. */
	assert_int_equal(store_session_put(st, &s), STORE_OK);
	assert_int_equal(store_retain_delete(st, "SECRET/TOPIC"), STORE_OK);
	assert_int_equal(store_msg_put(st, 2, &m), STORE_OK);
	q = queue_make(2, 2);
	assert_int_equal(store_queue_append(st, "VERY-SECRET-CLIENT", 2, &q), STORE_OK);
	assert_int_equal(store_commit_async(st), STORE_OK);
	commit_ok(st);
	store_close(st);

	char *lockfile = ut_join(fx->tmp.path, "lock.mdb");
	const char *files[] = {fx->datafile, lockfile};
	for(size_t f = 0; f < 2; f++){
		size_t len;
		uint8_t *data = ut_read_file(files[f], &len);
		assert_non_null(data);
		assert_true(len > 0);
		for(size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++){
			if(ut_find(data, len, secrets[i], strlen(secrets[i]))){
				free(data);
				fail_msg("'%s' appears in plaintext in %s", secrets[i], files[f]);
			}
		}
		/* "SECRET" alone would catch a partial leak, e.g. a split string. */
		assert_null(ut_find(data, len, "SECRET", 6));
		/* Nor does the key. */
		assert_null(ut_find(data, len, fx->tmp.key, SEAL_KEY_LEN));
		if(f == 0){
			/* The scan works: LMDB's own database names are plaintext. */
			assert_non_null(ut_find(data, len, "sessions", 8));
			assert_non_null(ut_find(data, len, "keycheck", 8));
		}
		free(data);
	}
	free(lockfile);

	/* And the data is still all there. */
	st = open_store(fx, 0, 0);
	assert_uint_equal(count_sessions(st), 1);
	assert_uint_equal(count_subs(st, "VERY-SECRET-CLIENT"), 1);
	assert_uint_equal(count_queue(st, "VERY-SECRET-CLIENT"), 2);
	assert_uint_equal(count_wills(st, "VERY-SECRET-CLIENT"), 1);
	assert_uint_equal(count_msgs(st), 2);
	assert_uint_equal(count_retained(st), 0);
	store_close(st);
}

static void test_walk_stops_on_callback_value(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct msg_fx mf;
	struct coll c = {0};

	for(int i = 1; i <= 10; i++){
		msg_make(&mf, i);
		assert_int_equal(store_msg_put(st, (uint64_t)i, &mf.m), STORE_OK);
		char id[16];
		snprintf(id, sizeof(id), "c%d", i);
		struct rec_session s = session_make(id, NULL, 1);
		assert_int_equal(store_session_put(st, &s), STORE_OK);
	}
	commit_ok(st);

	c.stop_after = 3;
	c.stop_rc = 7;
	assert_int_equal(store_walk_msgs(st, cb_msg, &c), 7);
	assert_uint_equal(c.n, 3);
	assert_uint_equal(c.v[2].id, 3);
	coll_free(&c);
	c.stop_after = 1;
	c.stop_rc = 42;
	assert_int_equal(store_walk_sessions(st, cb_session, &c), 42);
	assert_uint_equal(c.n, 1);
	coll_free(&c);
	assert_uint_equal(stats_of(st).records_rejected, 0);

	/* Pending-op accounting: store_session_delete is seven operations (session,
	 * subscriptions, queue, will, online marker, sequence number, queue tally). */
	assert_int_equal(store_msg_release(st, 1), STORE_OK);
	assert_int_equal(store_session_delete(st, "c1"), STORE_OK);
	assert_uint_equal(stats_of(st).pending_ops, 8);
	commit_ok(st);
	assert_uint_equal(stats_of(st).pending_ops, 0);
	assert_uint_equal(stats_of(st).commits, 2);
	assert_uint_equal(count_msgs(st), 9);
	assert_uint_equal(count_sessions(st), 9);

	uint64_t records = 0;
	char err[256];
	assert_int_equal(store_check_structure(st, &records, err, sizeof(err)), STORE_OK);
	assert_uint_equal(records, 4 + 9 + 9); /* meta (with a salt) + messages + sessions */
	store_close(st);
}

/* store_open(map_size) below the size the data has grown to: LMDB alone
 * would size the map to exactly the used pages and the epoch write of
 * store_open would fail with MDB_MAP_FULL. */
static void test_reopen_after_growth(void **state)
{
	enum { N = 80, SZ = 256 * 1024 }; /* 20 MiB */
	struct fx *fx = *state;
	uint8_t *payload;
	struct store *st;
	char err[512];

	payload = calloc(1, SZ);
	assert_non_null(payload);
	st = open_store(fx, MIB, 0);
	for(int i = 0; i < N; i++){
		struct rec_base_msg m = {.topic = "big", .payload = {payload, SZ}};
		assert_int_equal(store_msg_put(st, (uint64_t)i + 1, &m), STORE_OK);
	}
	commit_ok(st);
	store_close(st);
	free(payload);

	st = NULL;
	err[0] = 0;
	int rc = store_open(&st, fx->tmp.path, MIB, fx->tmp.key, 0, test_log, err, sizeof(err));
	if(rc != STORE_OK){
		fail_msg("reopen with the configured 1 MiB map failed: %d %s", rc, err);
	}
	assert_uint_equal(count_msgs(st), N);
	/* And it takes new writes. */
	struct rec_base_msg m = {.topic = "after", .payload = {(const uint8_t *)"x", 1}};
	assert_int_equal(store_msg_put(st, N + 1, &m), STORE_OK);
	commit_ok(st);
	assert_uint_equal(count_msgs(st), N + 1);
	store_close(st);
}

/* A negative callback value stops the walk too; it is not a decode failure. */
static void test_negative_callback_value(void **state)
{
	struct fx *fx = *state;
	struct store *st;
	struct msg_fx mf;
	struct coll c = {0};

	st = open_store(fx, 0, 0);
	for(int i = 1; i <= 3; i++){
		msg_make(&mf, i);
		assert_int_equal(store_msg_put(st, (uint64_t)i, &mf.m), STORE_OK);
	}
	commit_ok(st);
	c.stop_after = 1;
	c.stop_rc = -1;
	int rc = store_walk_msgs(st, cb_msg, &c);
	size_t n = c.n;
	coll_free(&c);
	uint64_t rejected = stats_of(st).records_rejected;
	store_close(st);
	assert_int_equal(rc, -1);
	assert_uint_equal(n, 1);
	assert_uint_equal(rejected, 0);
}

/* A backlog larger than one write transaction takes (the commit is applied
 * in several) and a map that must grow meanwhile: everything arrives, in
 * order. */
static void test_large_backlog_commit(void **state)
{
	enum { PER_CLIENT = 15000 };
	static const char *const clients[] = {"x", "y", "z"};
	struct fx *fx = *state;
	struct store *st = open_store(fx, MIB, 0);
	struct coll c = {0};

	for(uint64_t i = 1; i <= PER_CLIENT; i++){
		for(size_t k = 0; k < 3; k++){
			struct rec_queue q = queue_make(i * 3 + k, (uint16_t)i);
			assert_int_equal(store_queue_append(st, clients[k], i, &q), STORE_OK);
		}
	}
	assert_uint_equal(stats_of(st).pending_ops, 3 * PER_CLIENT);
	commit_ok(st);
	struct store_stats s = stats_of(st);
	assert_uint_equal(s.pending_ops, 0);
	assert_uint_equal(s.commit_errors, 0);
	assert_true(s.commits >= 1);
	assert_true(s.map_grows > 0);
	for(size_t k = 0; k < 3; k++){
		assert_int_equal(store_walk_queue(st, clients[k], cb_queue, &c), STORE_OK);
		assert_uint_equal(c.n, PER_CLIENT);
		for(uint64_t i = 1; i <= PER_CLIENT; i++){
			struct rec_queue got;
			if(c.v[i - 1].id != ((uint64_t)1 << STORE_SEQ_SHIFT | i)){
				fail_msg("client %s entry %llu has seq %#llx", clients[k], (unsigned long long)i,
						(unsigned long long)c.v[i - 1].id);
			}
			assert_int_equal(record_decode_queue(c.v[i - 1].enc, c.v[i - 1].len, &got), 0);
			assert_uint_equal(got.store_id, i * 3 + k);
		}
		coll_free(&c);
	}
	/* And the whole backlog can be deleted in one go. */
	for(size_t k = 0; k < 3; k++){
		assert_int_equal(store_session_delete(st, clients[k]), STORE_OK);
	}
	commit_ok(st);
	for(size_t k = 0; k < 3; k++){
		assert_uint_equal(count_queue(st, clients[k]), 0);
	}
	store_close(st);
}

/* A burst grows the write buffers to what it needed; once nothing is
 * buffered, store_release_memory frees them, and the next writes grow them
 * again. */
static void test_buffers_freed_at_rest(void **state)
{
	enum { N = 30000 };
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	char client[32];

	for(uint64_t i = 1; i <= N; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		snprintf(client, sizeof(client), "c%llu", (unsigned long long)(i % 3000));
		assert_int_equal(store_queue_append(st, client, i, &q), STORE_OK);
	}
	assert_true(stats_of(st).buffer_bytes > (2u << 20));
	/* Something buffered: nothing freed. */
	store_release_memory(st);
	assert_true(stats_of(st).buffer_bytes > (2u << 20));
	commit_ok(st);
	store_release_memory(st);
	assert_true(stats_of(st).buffer_bytes < (1u << 20));
	assert_uint_equal(count_queue(st, "c7"), N / 3000);
	struct rec_queue q = queue_make(N + 1, 1);
	assert_int_equal(store_queue_append(st, "c7", N + 1, &q), STORE_OK);
	assert_int_equal(store_queue_remove(st, "c7", 7, 0), STORE_OK);
	commit_ok(st);
	assert_uint_equal(count_queue(st, "c7"), N / 3000);
	assert_uint_equal(stats_of(st).commit_errors, 0);
	store_close(st);
}

/* store_queue_settled: false from a buffered write to the client's queue
 * until a commit applied it, through the writer thread too; another
 * client's queue and other records do not unsettle it. */
static void test_queue_settled(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct rec_queue q = queue_make(1, 1);
	struct rec_session sess = {.clientid = "a", .session_expiry_interval = 60};

	assert_true(store_queue_settled(st, "a"));
	assert_int_equal(store_session_put(st, &sess), STORE_OK);
	assert_true(store_queue_settled(st, "a"));
	assert_int_equal(store_queue_append(st, "a", 1, &q), STORE_OK);
	assert_false(store_queue_settled(st, "a"));
	assert_true(store_queue_settled(st, "b"));
	commit_ok(st);
	assert_true(store_queue_settled(st, "a"));
	/* Through the writer thread: unsettled while it holds the write. */
	assert_int_equal(store_queue_remove(st, "a", 1, 0), STORE_OK);
	assert_int_equal(store_commit_async(st), STORE_OK);
	assert_int_equal(store_commit_visible(st), STORE_OK);
	assert_true(store_queue_settled(st, "a"));
	assert_uint_equal(count_queue(st, "a"), 0);
	store_close(st);
}

/* More clients take messages in turn than the name cache has slots at
 * first: it grows, evicts on collisions, and every client's entries stay
 * under the hash a fresh open computes. */
static void test_many_clients_in_turn(void **state)
{
	enum { CLIENTS = 5000, ROUNDS = 3 };
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	char id[32];

	for(uint64_t r = 1; r <= ROUNDS; r++){
		for(int c = 0; c < CLIENTS; c++){
			struct rec_queue q = queue_make(r, (uint16_t)r);
			snprintf(id, sizeof(id), "inbox-%d", c);
			assert_int_equal(store_queue_append(st, id, r, &q), STORE_OK);
		}
	}
	commit_ok(st);
	store_close(st);
	st = open_store(fx, 0, 0);
	for(int c = 0; c < CLIENTS; c++){
		snprintf(id, sizeof(id), "inbox-%d", c);
		assert_uint_equal(count_queue(st, id), ROUNDS);
	}
	store_close(st);
}

/* LMDB keeps the page buffers of its largest write transaction until the
 * environment closes: after a large one, store_release_memory opens it again,
 * and what was written before and after stays readable and writable. */
static void test_env_recycled_after_large_commit(void **state)
{
	enum { N = 5000 };
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);

	for(uint64_t i = 1; i <= N; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, "big", i, &q), STORE_OK);
	}
	commit_ok(st);
	assert_uint_equal(stats_of(st).env_recycles, 0);
	store_release_memory(st);
	assert_uint_equal(stats_of(st).env_recycles, 1);
	assert_uint_equal(count_queue(st, "big"), N);
	for(uint64_t i = N + 1; i <= N + 10; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, "big", i, &q), STORE_OK);
	}
	assert_int_equal(store_queue_remove(st, "big", 1, 0), STORE_OK);
	commit_ok(st);
	/* Small transactions since: only the map's pages are dropped. */
	store_release_memory(st);
	struct store_stats s = stats_of(st);
	assert_uint_equal(s.env_recycles, 1);
	assert_uint_equal(s.env_reopens, 0);
	assert_uint_equal(s.commit_errors, 0);
	assert_uint_equal(count_queue(st, "big"), N + 9);
	store_close(st);

	st = open_store(fx, 0, 0);
	assert_uint_equal(count_queue(st, "big"), N + 9);
	store_close(st);
}

/* The tick's path: writes handed to the writer thread while more arrive.
 * Whatever the interleaving, a final store_commit leaves every write on
 * disk, in order, with no commit per hand-over required. */
static void test_async_commit(void **state)
{
	enum { N = 20000 };
	struct fx *fx = *state;
	struct store *st = open_store(fx, MIB, 0);
	struct coll c = {0};

	for(uint64_t i = 1; i <= N; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, "async", i, &q), STORE_OK);
		if(i % 37 == 0){
			assert_int_equal(store_commit_async(st), STORE_OK);
		}
		if(i % 5000 == 0){
			assert_int_equal(store_queue_remove(st, "async", i - 1, 0), STORE_OK);
		}
	}
	assert_true(store_has_pending(st) || stats_of(st).commits > 0);
	commit_ok(st);
	assert_false(store_has_pending(st));
	struct store_stats s = stats_of(st);
	assert_uint_equal(s.pending_ops, 0);
	assert_uint_equal(s.commit_errors, 0);
	/* Group commit: fewer transactions than hand-overs were asked for. */
	assert_true(s.commits >= 1 && s.commits <= N / 37 + 2);
	assert_int_equal(store_walk_queue(st, "async", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, N - N / 5000);
	uint64_t prev = 0;
	for(size_t i = 0; i < c.n; i++){
		assert_true(c.v[i].id > prev);
		assert_true((c.v[i].id & ((1ull << STORE_SEQ_SHIFT) - 1)) % 5000 != 4999);
		prev = c.v[i].id;
	}
	coll_free(&c);
	store_close(st);

	/* Reopened: all there. */
	st = open_store(fx, 0, 0);
	assert_uint_equal(count_queue(st, "async"), N - N / 5000);
	store_close(st);
}

/* ---- journal mark ---- */

/* A large buffer is committed in several transactions; once the store has
 * journal marks, each ends at one, never between two (see ops_apply). */
static void test_transactions_end_at_marks(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct rec_queue q = queue_make(1, 1);
	uint64_t commits;

	/* No mark yet: split by size alone. */
	for(uint64_t i = 1; i <= 25000; i++){
		assert_int_equal(store_queue_append(st, "a", i, &q), STORE_OK);
	}
	commits = stats_of(st).commits;
	commit_ok(st);
	assert_uint_equal(stats_of(st).commits - commits, 2);

	/* 25,000 operations before the first mark, 100 before the second: one
	 * transaction up to each mark. */
	for(uint64_t i = 1; i <= 25000; i++){
		assert_int_equal(store_queue_append(st, "b", i, &q), STORE_OK);
	}
	assert_int_equal(store_journal_mark(st, 3), STORE_OK);
	for(uint64_t i = 1; i <= 100; i++){
		assert_int_equal(store_queue_append(st, "c", i, &q), STORE_OK);
	}
	assert_int_equal(store_journal_mark(st, 4), STORE_OK);
	commits = stats_of(st).commits;
	commit_ok(st);
	assert_uint_equal(stats_of(st).commits - commits, 2);
	assert_uint_equal(store_journal_committed(st), 4);
	assert_uint_equal(count_queue(st, "b"), 25000);
	assert_uint_equal(count_queue(st, "c"), 100);
	store_close(st);
}

static void test_journal_mark(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);

	assert_uint_equal(store_journal_committed(st), 0);
	assert_int_equal(store_journal_mark(st, 5), STORE_OK);
	assert_true(store_has_pending(st));
	/* Buffered is not committed. */
	assert_uint_equal(store_journal_committed(st), 0);
	commit_ok(st);
	assert_uint_equal(store_journal_committed(st), 5);

	/* Several marks in one transaction, among other writes: the last. */
	struct rec_queue q = queue_make(1, 1);
	assert_int_equal(store_queue_append(st, "c", 1, &q), STORE_OK);
	assert_int_equal(store_journal_mark(st, 7), STORE_OK);
	assert_int_equal(store_queue_append(st, "c", 2, &q), STORE_OK);
	assert_int_equal(store_journal_mark(st, 8), STORE_OK);
	assert_uint_equal(store_journal_committed(st), 5);
	commit_ok(st);
	assert_uint_equal(store_journal_committed(st), 8);
	/* A commit without a mark keeps it. */
	assert_int_equal(store_queue_append(st, "c", 3, &q), STORE_OK);
	commit_ok(st);
	assert_uint_equal(store_journal_committed(st), 8);

	/* A mark left buffered at close is lost with its writes. */
	assert_int_equal(store_queue_append(st, "c", 4, &q), STORE_OK);
	assert_int_equal(store_journal_mark(st, 9), STORE_OK);
	assert_uint_equal(store_journal_committed(st), 8);
	store_close(st);

	st = open_store(fx, 0, 0);
	assert_uint_equal(store_journal_committed(st), 8);
	assert_uint_equal(count_queue(st, "c"), 3);
	/* Through the writer thread. */
	assert_int_equal(store_journal_mark(st, 12), STORE_OK);
	assert_int_equal(store_commit_async(st), STORE_OK);
	commit_ok(st);
	assert_uint_equal(store_journal_committed(st), 12);
	store_close(st);

	/* Read-only: reads the mark, writes none. */
	st = open_store(fx, 0, STORE_READ_ONLY);
	assert_uint_equal(store_journal_committed(st), 12);
	assert_int_equal(store_journal_mark(st, 13), STORE_ERR_READONLY);
	assert_false(store_has_pending(st));
	store_close(st);

	/* A mark behind a backlog of more than one transaction's worth: one
	 * transaction up to it (test_transactions_end_at_marks). */
	st = open_store(fx, 0, 0);
	assert_uint_equal(store_journal_committed(st), 12);
	for(uint64_t i = 10; i < 10 + 25000; i++){
		assert_int_equal(store_queue_append(st, "big", i, &q), STORE_OK);
	}
	assert_int_equal(store_journal_mark(st, 1000), STORE_OK);
	uint64_t commits = stats_of(st).commits;
	commit_ok(st);
	assert_uint_equal(stats_of(st).commits - commits, 1);
	assert_uint_equal(store_journal_committed(st), 1000);
	store_close(st);
	st = open_store(fx, 0, 0);
	assert_uint_equal(store_journal_committed(st), 1000);
	assert_uint_equal(count_queue(st, "big"), 25000);
	store_close(st);
}

/* ---- message ids (dedup) ---- */

struct dedup_item {
	uint8_t key[HASH_LEN];
	int64_t expiry;
	char identity[64];
	uint8_t id[64];
	size_t id_len;
};

struct dedup_coll {
	struct dedup_item v[16];
	size_t n;
	size_t stop_after;
};

static int cb_dedup(void *ctx, const uint8_t key[HASH_LEN], const struct rec_dedup *d)
{
	struct dedup_coll *c = ctx;
	struct dedup_item *it;

	assert_true(c->n < 16);
	it = &c->v[c->n++];
	memcpy(it->key, key, HASH_LEN);
	it->expiry = d->expiry;
	assert_non_null(d->identity);
	assert_true(strlen(d->identity) < sizeof(it->identity));
	strcpy(it->identity, d->identity);
	assert_non_null(d->msg_id.data);
	assert_true(d->msg_id.len <= sizeof(it->id));
	memcpy(it->id, d->msg_id.data, d->msg_id.len);
	it->id_len = d->msg_id.len;
	return c->stop_after && c->n == c->stop_after ? 42 : 0;
}

static const struct dedup_item *dedup_find(const struct dedup_coll *c, const uint8_t key[HASH_LEN])
{
	for(size_t i = 0; i < c->n; i++){
		if(!memcmp(c->v[i].key, key, HASH_LEN)){
			return &c->v[i];
		}
	}
	return NULL;
}

static void assert_dedup_item(const struct dedup_item *it, const struct rec_dedup *d)
{
	assert_non_null(it);
	assert_int_equal(it->expiry, d->expiry);
	assert_string_equal(it->identity, d->identity);
	assert_uint_equal(it->id_len, d->msg_id.len);
	assert_memory_equal(it->id, d->msg_id.data, d->msg_id.len);
}

static struct dedup_coll walk_dedup(struct store *st)
{
	struct dedup_coll c;

	memset(&c, 0, sizeof(c));
	assert_int_equal(store_walk_dedup(st, cb_dedup, &c), STORE_OK);
	return c;
}

static void test_dedup_key(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct rec_dedup d = {.expiry = 0, .identity = "alice", .msg_id = {(const uint8_t *)"id-1", 4}};
	uint8_t k1[HASH_LEN], k[HASH_LEN];

	assert_int_equal(store_dedup_key(st, &d, k1), STORE_OK);
	/* Deterministic, whatever the expiry. */
	d.expiry = 12345;
	assert_int_equal(store_dedup_key(st, &d, k), STORE_OK);
	assert_memory_equal(k, k1, HASH_LEN);

	/* Another identity, another id: another key. */
	d.identity = "bob";
	assert_int_equal(store_dedup_key(st, &d, k), STORE_OK);
	assert_memory_not_equal(k, k1, HASH_LEN);
	d.identity = "alice";
	d.msg_id = (struct bytes){(const uint8_t *)"id-2", 4};
	assert_int_equal(store_dedup_key(st, &d, k), STORE_OK);
	assert_memory_not_equal(k, k1, HASH_LEN);
	d.msg_id = (struct bytes){(const uint8_t *)"id-1\0", 5};
	assert_int_equal(store_dedup_key(st, &d, k), STORE_OK);
	assert_memory_not_equal(k, k1, HASH_LEN);

	/* The split between identity and id counts: "ab"+"c" is not "a"+"bc". */
	uint8_t ka[HASH_LEN], kb[HASH_LEN];
	struct rec_dedup x = {.identity = "ab", .msg_id = {(const uint8_t *)"c", 1}};
	struct rec_dedup y = {.identity = "a", .msg_id = {(const uint8_t *)"bc", 2}};
	assert_int_equal(store_dedup_key(st, &x, ka), STORE_OK);
	assert_int_equal(store_dedup_key(st, &y, kb), STORE_OK);
	assert_memory_not_equal(ka, kb, HASH_LEN);
	/* An empty id is an id. */
	struct rec_dedup z = {.identity = "abc", .msg_id = {(const uint8_t *)"", 0}};
	assert_int_equal(store_dedup_key(st, &z, kb), STORE_OK);
	assert_memory_not_equal(ka, kb, HASH_LEN);

	d.msg_id = (struct bytes){(const uint8_t *)"id-1", 4};
	store_close(st);

	/* The same under the same key after a reopen or in another database;
	 * another under another key. */
	st = open_store(fx, 0, 0);
	assert_int_equal(store_dedup_key(st, &d, k), STORE_OK);
	assert_memory_equal(k, k1, HASH_LEN);
	store_close(st);

	char *db2 = ut_join(fx->tmp.dir, "db2");
	char err[512];
	assert_int_equal(store_open(&st, db2, 0, fx->tmp.key, 0, test_log, err, sizeof(err)), STORE_OK);
	assert_int_equal(store_dedup_key(st, &d, k), STORE_OK);
	assert_memory_equal(k, k1, HASH_LEN);
	store_close(st);

	uint8_t other[SEAL_KEY_LEN];
	memcpy(other, fx->tmp.key, sizeof(other));
	other[SEAL_KEY_LEN - 1] ^= 0x80;
	char *db3 = ut_join(fx->tmp.dir, "db3");
	assert_int_equal(store_open(&st, db3, 0, other, 0, test_log, err, sizeof(err)), STORE_OK);
	assert_int_equal(store_dedup_key(st, &d, k), STORE_OK);
	assert_memory_not_equal(k, k1, HASH_LEN);
	store_close(st);
	free(db2);
	free(db3);
}

static void test_dedup_store(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct rec_dedup d[3] = {
		{.expiry = 1700003600, .identity = "alice", .msg_id = {(const uint8_t *)"order-1", 7}},
		{.expiry = -5, .identity = "bob", .msg_id = {(const uint8_t *)"\0\x01\xff", 3}},
		{.expiry = INT64_MAX, .identity = "", .msg_id = {(const uint8_t *)"", 0}},
	};
	uint8_t k[3][HASH_LEN];
	struct dedup_coll c;

	for(int i = 0; i < 3; i++){
		assert_int_equal(store_dedup_key(st, &d[i], k[i]), STORE_OK);
		assert_int_equal(store_dedup_put(st, k[i], &d[i]), STORE_OK);
	}
	/* Not before the commit. */
	c = walk_dedup(st);
	assert_uint_equal(c.n, 0);
	commit_ok(st);
	c = walk_dedup(st);
	assert_uint_equal(c.n, 3);
	for(int i = 0; i < 3; i++){
		assert_dedup_item(dedup_find(&c, k[i]), &d[i]);
	}
	/* In key order. */
	assert_true(memcmp(c.v[0].key, c.v[1].key, HASH_LEN) < 0);
	assert_true(memcmp(c.v[1].key, c.v[2].key, HASH_LEN) < 0);

	/* A walk stops on a callback's value. */
	memset(&c, 0, sizeof(c));
	c.stop_after = 2;
	assert_int_equal(store_walk_dedup(st, cb_dedup, &c), 42);
	assert_uint_equal(c.n, 2);

	/* Replace one, delete one (and one that is not there). */
	d[0].expiry = 1700007200;
	assert_int_equal(store_dedup_put(st, k[0], &d[0]), STORE_OK);
	assert_int_equal(store_dedup_delete(st, k[1]), STORE_OK);
	uint8_t absent[HASH_LEN];
	memset(absent, 0x11, sizeof(absent));
	assert_int_equal(store_dedup_delete(st, absent), STORE_OK);
	c = walk_dedup(st);
	assert_uint_equal(c.n, 3);
	commit_ok(st);
	c = walk_dedup(st);
	assert_uint_equal(c.n, 2);
	assert_dedup_item(dedup_find(&c, k[0]), &d[0]);
	assert_null(dedup_find(&c, k[1]));
	assert_dedup_item(dedup_find(&c, k[2]), &d[2]);
	store_close(st);

	/* Durable; readable read-only; deleted for good. */
	st = open_store(fx, 0, STORE_READ_ONLY);
	c = walk_dedup(st);
	assert_uint_equal(c.n, 2);
	assert_dedup_item(dedup_find(&c, k[0]), &d[0]);
	assert_dedup_item(dedup_find(&c, k[2]), &d[2]);
	assert_int_equal(store_dedup_put(st, k[1], &d[1]), STORE_ERR_READONLY);
	assert_int_equal(store_dedup_delete(st, k[0]), STORE_ERR_READONLY);
	store_close(st);
	st = open_store(fx, 0, 0);
	assert_int_equal(store_dedup_delete(st, k[0]), STORE_OK);
	assert_int_equal(store_dedup_delete(st, k[2]), STORE_OK);
	commit_ok(st);
	c = walk_dedup(st);
	assert_uint_equal(c.n, 0);
	assert_uint_equal(stats_of(st).records_rejected, 0);
	store_close(st);
}

/* ---- sequence numbers ---- */

static uint64_t seqno_of(struct store *st, const char *clientid)
{
	uint64_t v = 777;

	assert_int_equal(store_seqno_get(st, clientid, &v), STORE_OK);
	return v;
}

static void test_seqno(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);

	assert_uint_equal(seqno_of(st, "alice"), 0);
	assert_int_equal(store_seqno_put(st, "alice", 42), STORE_OK);
	assert_uint_equal(seqno_of(st, "alice"), 0); /* not yet committed */
	commit_ok(st);
	assert_uint_equal(seqno_of(st, "alice"), 42);
	assert_uint_equal(seqno_of(st, "alic"), 0);
	assert_uint_equal(seqno_of(st, "alicea"), 0);

	assert_int_equal(store_seqno_put(st, "alice", 43), STORE_OK);
	assert_int_equal(store_seqno_put(st, "bob", UINT64_MAX), STORE_OK);
	assert_int_equal(store_seqno_put(st, "carol", 0), STORE_OK);
	assert_int_equal(store_seqno_put(st, "dave", 128), STORE_OK);
	commit_ok(st);
	assert_uint_equal(seqno_of(st, "alice"), 43);
	assert_uint_equal(seqno_of(st, "bob"), UINT64_MAX);
	assert_uint_equal(seqno_of(st, "carol"), 0);
	assert_uint_equal(seqno_of(st, "dave"), 128);
	store_close(st);

	st = open_store(fx, 0, STORE_READ_ONLY);
	assert_uint_equal(seqno_of(st, "alice"), 43);
	assert_uint_equal(seqno_of(st, "bob"), UINT64_MAX);
	assert_int_equal(store_seqno_put(st, "alice", 1), STORE_ERR_READONLY);
	store_close(st);

	/* store_session_delete takes the session's number with it, only its. */
	st = open_store(fx, 0, 0);
	struct rec_session s = session_make("alice", NULL, 60);
	assert_int_equal(store_session_put(st, &s), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_session_delete(st, "alice"), STORE_OK);
	assert_uint_equal(seqno_of(st, "alice"), 43);
	commit_ok(st);
	assert_uint_equal(seqno_of(st, "alice"), 0);
	assert_uint_equal(seqno_of(st, "bob"), UINT64_MAX);
	assert_uint_equal(seqno_of(st, "dave"), 128);
	/* Also when there was no session record. */
	assert_int_equal(store_session_delete(st, "dave"), STORE_OK);
	commit_ok(st);
	assert_uint_equal(seqno_of(st, "dave"), 0);
	assert_uint_equal(seqno_of(st, "bob"), UINT64_MAX);
	store_close(st);

	st = open_store(fx, 0, 0);
	assert_uint_equal(seqno_of(st, "alice"), 0);
	assert_uint_equal(seqno_of(st, "dave"), 0);
	assert_uint_equal(seqno_of(st, "bob"), UINT64_MAX);
	assert_uint_equal(stats_of(st).records_rejected, 0);
	store_close(st);
}

/* ---- commits without sync (plugin_opt_sync periodic) ---- */

static void test_no_sync(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, STORE_NO_SYNC);
	struct msg_fx mf;

	for(int i = 1; i <= 10; i++){
		msg_make(&mf, i);
		assert_int_equal(store_msg_put(st, (uint64_t)i, &mf.m), STORE_OK);
	}
	commit_ok(st);
	assert_uint_equal(count_msgs(st), 10);
	store_sync_async(st);
	assert_uint_equal(count_msgs(st), 10);

	/* Through the writer thread, with syncs asked for in between. */
	for(int i = 11; i <= 500; i++){
		msg_make(&mf, i);
		assert_int_equal(store_msg_put(st, (uint64_t)i, &mf.m), STORE_OK);
		if(i % 50 == 0){
			assert_int_equal(store_journal_mark(st, (uint64_t)i), STORE_OK);
			assert_int_equal(store_commit_async(st), STORE_OK);
		}
		if(i % 75 == 0){
			store_sync_async(st);
		}
	}
	store_sync_async(st);
	commit_ok(st);
	assert_uint_equal(count_msgs(st), 500);
	assert_uint_equal(store_journal_committed(st), 500);
	struct store_stats s = stats_of(st);
	assert_uint_equal(s.commit_errors, 0);
	assert_uint_equal(s.pending_ops, 0);
	store_sync_async(st);
	store_close(st);

	/* All there, opened either way. */
	st = open_store(fx, 0, 0);
	assert_uint_equal(count_msgs(st), 500);
	assert_uint_equal(store_journal_committed(st), 500);
	store_close(st);
	st = open_store(fx, 0, STORE_NO_SYNC);
	assert_uint_equal(count_msgs(st), 500);
	assert_int_equal(store_msg_release(st, 1), STORE_OK);
	commit_ok(st);
	store_close(st);
	st = open_store(fx, 0, STORE_READ_ONLY);
	assert_uint_equal(count_msgs(st), 499);
	assert_uint_equal(g_log_count[STORE_LOG_ERR], 0);
	store_close(st);
}

/* A schema 1 file (one LMDB key per queue entry, in "queue") is converted
 * when opened for writing: same entries, same order, every record still
 * authenticates; a read-only open refuses it with a clear message. The
 * schema 1 file is made from a schema 2 one by moving the entries back. */
/* A schema 2 database (no counts) gets its counts at the first writable
 * open; a read-only open reads it as it is. */
static void test_schema2_counts_built(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct store_refs refs;
	uint64_t entries, bytes;
	struct raw r;

	write_all_kinds(st);
	commit_ok(st);
	store_close(st);

	raw_open(&r, fx->tmp.path);
	MDB_dbi counts = raw_dbi(&r, "refs"), meta = raw_dbi(&r, "meta");
	assert_int_equal(mdb_drop(r.txn, counts, 1), 0);
	struct seal *seal = raw_seal(&r, fx->tmp.key, 0xFFFFFE);
	uint8_t ad[1 + 6] = {DB_META, 's', 'c', 'h', 'e', 'm', 'a'}, two[4] = {0, 0, 0, 2};
	uint8_t sealed[4 + SEAL_OVERHEAD];
	assert_int_equal(seal_record(seal, ad, sizeof(ad), two, sizeof(two), sealed), SEAL_OK);
	seal_free(seal);
	raw_put(&r, meta, "schema", 6, sealed, sizeof(sealed));
	raw_queues_to_schema4(&r);
	raw_close(&r, true);

	char err[512] = "";
	st = NULL;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, STORE_READ_ONLY, test_log, err, sizeof(err)),
			STORE_ERR_VERSION);
	assert_non_null(strstr(err, "schema 2"));

	log_reset();
	st = open_store(fx, 0, 0);
	/* The queues moved to the log, then the counts built. */
	assert_int_equal(g_log_count[STORE_LOG_INFO], 2);
	assert_int_equal(store_count(st, DB_REFS, &entries, &bytes), STORE_OK);
	assert_uint_equal(entries, 4);
	assert_int_equal(store_check_refs(st, false, &refs), STORE_OK);
	assert_uint_equal(refs.refs_wrong, 0);
	check_all_kinds(st);
	store_close(st);

	/* A wrong count is found, and corrected by the repairing check. */
	uint8_t key[8], seven[8] = {0, 0, 0, 0, 0, 0, 0, 7}, ad2[1 + 8], sealed2[8 + SEAL_OVERHEAD];
	put_be64(key, msg_ids[1]);
	ad2[0] = DB_REFS;
	memcpy(ad2 + 1, key, 8);
	raw_open(&r, fx->tmp.path);
	seal = raw_seal(&r, fx->tmp.key, 0xFFFFFF);
	assert_int_equal(seal_record(seal, ad2, sizeof(ad2), seven, sizeof(seven), sealed2), SEAL_OK);
	seal_free(seal);
	raw_put(&r, raw_dbi(&r, "refs"), key, sizeof(key), sealed2, sizeof(sealed2));
	raw_close(&r, true);
	st = open_store(fx, 0, 0);
	assert_int_equal(store_check_refs(st, false, &refs), STORE_OK);
	assert_uint_equal(refs.refs_wrong, 1);
	assert_int_equal(store_check_refs(st, true, &refs), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_check_refs(st, false, &refs), STORE_OK);
	assert_uint_equal(refs.refs_wrong, 0);
	/* The repair also deleted the 3 bodies nothing refers to. */
	assert_uint_equal(count_msgs(st), 4);
	store_close(st);
}

/* Each client's queue holds what before[c] collected, in order and byte for
 * byte (before[] is freed). */
static void queues_as_before(struct store *st, const char *const *clients, int n, struct coll *before)
{
	for(int c = 0; c < n; c++){
		struct coll after = {0};
		assert_int_equal(store_walk_queue(st, clients[c], cb_queue, &after), STORE_OK);
		assert_uint_equal(after.n, before[c].n);
		for(size_t i = 0; i < after.n; i++){
			assert_uint_equal(after.v[i].id, before[c].v[i].id);
			assert_uint_equal(after.v[i].len, before[c].v[i].len);
			assert_memory_equal(after.v[i].enc, before[c].v[i].enc, after.v[i].len);
		}
		coll_free(&after);
		coll_free(&before[c]);
	}
}

/* Writes a schema record of version v straight into the file. */
static void schema_set(struct fx *fx, uint32_t v)
{
	uint8_t ad[1 + 6] = {DB_META, 's', 'c', 'h', 'e', 'm', 'a'}, be[4], sealed[4 + SEAL_OVERHEAD];
	struct seal *seal;
	struct raw r;

	raw_open(&r, fx->tmp.path);
	seal = raw_seal(&r, fx->tmp.key, 0xFFFFF0 + v);
	put_be32(be, v);
	assert_int_equal(seal_record(seal, ad, sizeof(ad), be, sizeof(be), sealed), SEAL_OK);
	seal_free(seal);
	raw_put(&r, raw_dbi(&r, "meta"), "schema", 6, sealed, sizeof(sealed));
	raw_close(&r, true);
}

/* A schema 3 database (the release before per-open keys) is refused by a
 * read-only open, and becomes schema 4, then 5, at its first writable open,
 * where earlier releases refuse it instead of skipping records they cannot
 * open; a schema this release does not know is refused, with nothing
 * written. */
static void test_schema3_converted(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	char err[512] = "";
	uint8_t *before, *after;
	size_t blen, alen;
	struct raw r;

	write_all_kinds(st);
	commit_ok(st);
	store_close(st);
	raw_open(&r, fx->tmp.path);
	raw_queues_to_schema4(&r);
	raw_close(&r, true);
	schema_set(fx, 3);

	log_reset();
	st = NULL;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, STORE_READ_ONLY, test_log, err, sizeof(err)),
			STORE_ERR_VERSION);
	assert_non_null(strstr(err, "schema 3"));
	assert_int_equal(g_log_count[STORE_LOG_INFO], 0);

	st = open_store(fx, 0, 0);
	assert_int_equal(g_log_count[STORE_LOG_INFO], 2);
	assert_non_null(strstr(g_last_info, "to schema 5"));
	check_all_kinds(st);
	store_close(st);
	log_reset();
	st = open_store(fx, 0, 0);
	assert_int_equal(g_log_count[STORE_LOG_INFO], 0);
	check_all_kinds(st);
	store_close(st);

	schema_set(fx, 6);
	raw_open(&r, fx->tmp.path);
	before = raw_get(&r, raw_dbi(&r, "meta"), "epoch", 5, &blen);
	raw_close(&r, false);
	assert_non_null(before);
	st = NULL;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, 0, test_log, err, sizeof(err)), STORE_ERR_VERSION);
	assert_null(st);
	assert_non_null(strstr(err, "has schema version 6; this persist-lmdb reads versions 1 to 5"));
	raw_open(&r, fx->tmp.path);
	after = raw_get(&r, raw_dbi(&r, "meta"), "epoch", 5, &alen);
	raw_close(&r, false);
	assert_non_null(after);
	assert_uint_equal(alen, blen);
	assert_memory_equal(after, before, blen);
	free(before);
	free(after);
}

/* A schema 4 database (a DUPSORT tree per client) has its queues moved to
 * the log and its index at its first writable open, over several
 * transactions: the same entries, in the same order, sealed as they were;
 * new entries sort after them. verify's index check finds a log entry no
 * pair names and a pair whose log entry is gone, which walks skip. */
static void test_schema4_converted(void **state)
{
	enum { PER = 12000 };
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	const char *clients[] = {"c1", "c2"};
	struct coll before[2] = {{0}}, after = {0};
	struct store_refs refs;
	char err[512] = "";
	struct raw r;

	for(uint64_t i = 1; i <= 2 * PER; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, clients[i % 2], i, &q), STORE_OK);
	}
	commit_ok(st);
	for(int c = 0; c < 2; c++){
		assert_int_equal(store_walk_queue(st, clients[c], cb_queue, &before[c]), STORE_OK);
		assert_uint_equal(before[c].n, PER);
	}
	store_close(st);
	raw_open(&r, fx->tmp.path);
	raw_queues_to_schema4(&r);
	raw_close(&r, true);
	schema_set(fx, 4);

	st = NULL;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, STORE_READ_ONLY, test_log, err, sizeof(err)),
			STORE_ERR_VERSION);
	assert_non_null(strstr(err, "schema 4"));

	log_reset();
	st = open_store(fx, 0, 0);
	assert_int_equal(g_log_count[STORE_LOG_INFO], 1);
	assert_non_null(strstr(g_last_info, "to schema 5 (24000 queued entries moved"));
	queues_as_before(st, clients, 2, before);
	assert_int_equal(store_check_refs(st, false, &refs), STORE_OK);
	assert_uint_equal(refs.queue_index_wrong, 0);
	assert_uint_equal(refs.refs_wrong, 0);
	struct rec_queue q = queue_make(99, 99);
	assert_int_equal(store_queue_append(st, "c1", 7, &q), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_walk_queue(st, "c1", cb_queue, &after), STORE_OK);
	assert_uint_equal(after.n, PER + 1);
	assert_uint_equal(after.v[PER].id, ((uint64_t)store_epoch(st) << STORE_SEQ_SHIFT) | 7);
	coll_free(&after);
	store_close(st);
	log_reset();
	st = open_store(fx, 0, 0);
	assert_int_equal(g_log_count[STORE_LOG_INFO], 0);
	store_close(st);

	/* One pair deleted (its log entry stays), one log entry deleted (its
	 * pair stays). */
	uint8_t hash[HASH_LEN], pair[16], *val;
	size_t vlen;
	raw_open(&r, fx->tmp.path);
	MDB_dbi index = raw_dbi(&r, "queue-index");
	MDB_cursor *cur;
	MDB_val k, v;
	assert_int_equal(mdb_cursor_open(r.txn, index, &cur), 0);
	assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
	memcpy(hash, k.mv_data, HASH_LEN);
	mdb_cursor_close(cur);
	raw_queue_nth(&r, hash, 3, pair, &val, &vlen);
	free(val);
	MDB_val dk = {HASH_LEN, hash}, dv = {16, pair};
	assert_int_equal(mdb_del(r.txn, index, &dk, &dv), 0);
	raw_queue_nth(&r, hash, 5, pair, &val, &vlen);
	free(val);
	MDB_val lk = {8, pair + 8};
	assert_int_equal(mdb_del(r.txn, raw_dbi(&r, "queue-log"), &lk, NULL), 0);
	raw_close(&r, true);
	st = open_store(fx, 0, 0);
	assert_int_equal(store_check_refs(st, false, &refs), STORE_OK);
	assert_uint_equal(refs.queue_index_wrong, 2);
	log_reset();
	uint64_t n = count_queue(st, "c1") + count_queue(st, "c2");
	assert_uint_equal(n, 2 * PER + 1 - 2);
	/* The pair without its entry, once by the check's walk, once here. */
	assert_uint_equal(stats_of(st).records_rejected, 2);
	store_close(st);
}

/* The salts are the one unsealed meta record: a damaged one (another
 * length) or a missing one (the key check's) is refused by name, not read
 * as a wrong key. */
static void test_salt_record_damaged(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	uint8_t name[8] = {'s', 'a', 'l', 't'}, *salt;
	char err[512] = "";
	size_t len;
	struct raw r;

	write_all_kinds(st);
	commit_ok(st);
	store_close(st);

	put_be32(name + 4, 1);
	raw_open(&r, fx->tmp.path);
	salt = raw_get(&r, raw_dbi(&r, "meta"), name, sizeof(name), &len);
	assert_non_null(salt);
	assert_uint_equal(len, SEAL_SALT_LEN);
	raw_put(&r, raw_dbi(&r, "meta"), name, sizeof(name), salt, len - 1);
	raw_close(&r, true);
	st = NULL;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, 0, test_log, err, sizeof(err)), STORE_ERR_CORRUPT);
	assert_non_null(strstr(err, "salt records"));

	raw_open(&r, fx->tmp.path);
	MDB_val k = {sizeof(name), name};
	assert_int_equal(mdb_del(r.txn, raw_dbi(&r, "meta"), &k, NULL), 0);
	raw_close(&r, true);
	err[0] = 0;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, 0, test_log, err, sizeof(err)), STORE_ERR_CORRUPT);
	assert_non_null(strstr(err, "key check"));
	assert_non_null(strstr(err, seal_strerror(SEAL_ERR_EPOCH)));

	/* Put back, everything is there. */
	raw_open(&r, fx->tmp.path);
	raw_put(&r, raw_dbi(&r, "meta"), name, sizeof(name), salt, SEAL_SALT_LEN);
	raw_close(&r, true);
	free(salt);
	st = open_store(fx, 0, 0);
	check_all_kinds(st);
	store_close(st);
}

static void test_schema1_queues_converted(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	const char *clients[] = {"c1", "c2", "c3"};
	struct coll before[3] = {{0}};
	struct raw r;

	/* Interleaved, and more than one conversion transaction's worth. */
	for(uint64_t i = 1; i <= 9000; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, clients[i % 3], i, &q), STORE_OK);
	}
	commit_ok(st);
	for(int c = 0; c < 3; c++){
		assert_int_equal(store_walk_queue(st, clients[c], cb_queue, &before[c]), STORE_OK);
		assert_uint_equal(before[c].n, 3000);
	}
	store_close(st);

	raw_open(&r, fx->tmp.path);
	raw_queues_to_schema4(&r);
	MDB_dbi queues = raw_dbi(&r, "queues"), legacy, meta = raw_dbi(&r, "meta");
	assert_int_equal(mdb_dbi_open(r.txn, "queue", MDB_CREATE, &legacy), 0);
	MDB_cursor *cur;
	MDB_val k, v;
	size_t moved = 0;
	assert_int_equal(mdb_cursor_open(r.txn, queues, &cur), 0);
	for(int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT){
		uint8_t key[HASH_LEN + 8];
		assert_uint_equal(k.mv_size, HASH_LEN);
		memcpy(key, k.mv_data, HASH_LEN);
		memcpy(key + HASH_LEN, v.mv_data, 8);
		raw_put(&r, legacy, key, sizeof(key), (uint8_t *)v.mv_data + 8, v.mv_size - 8);
		moved++;
	}
	mdb_cursor_close(cur);
	assert_uint_equal(moved, 9000);
	assert_int_equal(mdb_drop(r.txn, queues, 1), 0);
	struct seal *seal = raw_seal(&r, fx->tmp.key, 0xFFFFFE);
	uint8_t ad[1 + 6] = {DB_META, 's', 'c', 'h', 'e', 'm', 'a'}, one[4] = {0, 0, 0, 1};
	uint8_t sealed[4 + SEAL_OVERHEAD];
	assert_int_equal(seal_record(seal, ad, sizeof(ad), one, sizeof(one), sealed), SEAL_OK);
	seal_free(seal);
	raw_put(&r, meta, "schema", 6, sealed, sizeof(sealed));
	raw_close(&r, true);

	char err[512] = "";
	st = NULL;
	assert_int_equal(store_open(&st, fx->tmp.path, 0, fx->tmp.key, STORE_READ_ONLY, test_log, err, sizeof(err)),
			STORE_ERR_VERSION);
	assert_null(st);
	assert_non_null(strstr(err, "schema 1"));

	log_reset();
	st = open_store(fx, 0, 0);
	/* Converted to schema 2, the queues moved to the log, the counts built. */
	assert_int_equal(g_log_count[STORE_LOG_INFO], 3);
	queues_as_before(st, clients, 3, before);
	assert_uint_equal(stats_of(st).records_rejected, 0);
	store_close(st);

	raw_open(&r, fx->tmp.path);
	assert_int_equal(mdb_dbi_open(r.txn, "queue", 0, &legacy), MDB_NOTFOUND);
	assert_int_equal(mdb_dbi_open(r.txn, "queues", 0, &legacy), MDB_NOTFOUND);
	raw_close(&r, false);
	log_reset();
	st = open_store(fx, 0, STORE_READ_ONLY);
	assert_uint_equal(count_queue(st, "c2"), 3000);
	store_close(st);
	assert_int_equal(g_log_count[STORE_LOG_INFO], 0);
}

/* Walks longer than a batch (256 records) open the next batch on a second
 * thread while the caller visits the current one: order, a rejected record
 * in a later batch, a stop in the middle of a batch and a walk nested in a
 * visit (restore walks each session's queue from the session walk) all
 * behave as in a walk of one batch. */
static int cb_nested_queue(void *ctx, const struct rec_session *s)
{
	struct coll *c = ctx;
	size_t before = c->n;
	int rc = store_walk_queue(c->st, s->clientid, cb_queue, c);
	assert_int_equal(rc, STORE_OK);
	c->per_session[c->sessions++] = c->n - before;
	return 0;
}

/* Queues of n entries ("big") and n / 2 ("odd", "even"), buffered. */
static void append_big_odd_even(struct store *st, size_t n)
{
	for(uint64_t i = 1; i <= n; i++){
		struct rec_queue q = queue_make(i, (uint16_t)i);
		assert_int_equal(store_queue_append(st, "big", i, &q), STORE_OK);
		assert_int_equal(store_queue_append(st, i % 2 ? "odd" : "even", i, &q), STORE_OK);
	}
}

/* A client's queue newest first, across batches, and no other client's. */
static void test_walk_queue_back(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct coll c = {0};
	const size_t n = 700;

	append_big_odd_even(st, n);
	commit_ok(st);

	assert_int_equal(store_walk_queue_back(st, "big", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, n);
	for(size_t i = 0; i < n; i++){
		assert_uint_equal(c.v[i].id & ((UINT64_C(1) << STORE_SEQ_SHIFT) - 1), n - i);
	}
	coll_free(&c);
	assert_int_equal(store_walk_queue_back(st, "odd", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, n / 2);
	assert_uint_equal(c.v[0].id & ((UINT64_C(1) << STORE_SEQ_SHIFT) - 1), n - 1);
	coll_free(&c);
	c.stop_after = 3;
	c.stop_rc = 5;
	assert_int_equal(store_walk_queue_back(st, "even", cb_queue, &c), 5);
	assert_uint_equal(c.n, 3);
	assert_uint_equal(c.v[2].id & ((UINT64_C(1) << STORE_SEQ_SHIFT) - 1), n - 4);
	coll_free(&c);
	assert_int_equal(store_walk_queue_back(st, "nobody", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, 0);
	store_close(st);
}

/* A read-only open and close, then a writable open that finds the tallies
 * kept or not, claims them (claim) or withdraws them, and closes. */
static void reopen_and_claim(struct fx *fx, bool kept, bool claim)
{
	struct store *st = open_store(fx, 0, STORE_READ_ONLY);

	store_close(st);
	st = open_store(fx, 0, 0);
	assert_int_equal(store_tallies_kept(st), kept);
	assert_int_equal(store_tallies_claim(st, claim), STORE_OK);
	commit_ok(st);
	store_close(st);
}

/* Queue tallies: stored, deleted at a count of 0 and with the session, and
 * trusted at the next open only after the open before it claimed them. */
static void test_tallies(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct rec_tally t = {3, 300, 1700000000}, got;

	assert_false(store_tallies_kept(st));
	assert_int_equal(store_tally_put(st, "a", &t), STORE_OK);
	t.count = 5;
	assert_int_equal(store_tally_put(st, "b", &t), STORE_OK);
	assert_int_equal(store_tallies_claim(st, true), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_tally_get(st, "a", &got), STORE_OK);
	assert_uint_equal(got.count, 3);
	assert_uint_equal(got.bytes, 300);
	assert_int_equal(got.earliest_expiry, 1700000000);
	assert_int_equal(store_tally_get(st, "nobody", &got), STORE_OK);
	assert_uint_equal(got.count, 0);
	store_close(st);

	st = open_store(fx, 0, 0);
	assert_true(store_tallies_kept(st));
	t.count = 0;
	assert_int_equal(store_tally_put(st, "a", &t), STORE_OK);
	assert_int_equal(store_session_delete(st, "b"), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_tally_get(st, "a", &got), STORE_OK);
	assert_uint_equal(got.count, 0);
	assert_int_equal(store_tally_get(st, "b", &got), STORE_OK);
	assert_uint_equal(got.count, 0);
	store_close(st);

	/* That open did not claim them; a read-only open changes nothing. */
	reopen_and_claim(fx, false, true);
	reopen_and_claim(fx, true, false);
	reopen_and_claim(fx, false, false);
}

/* verify's tally check: a stored tally agrees with its queue's outgoing
 * QoS 1/2 entries (count, bytes, an earliest expiry no later than theirs);
 * one that does not, or one with no entries behind it, is wrong. */
static void test_tallies_checked(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct msg_fx m1, m2;
	struct rec_queue q1 = queue_make(1, 1), q2 = queue_make(2, 2), q3 = queue_make(3, 3);
	struct rec_tally a = {2, 37 + 74, 995}, b = {1, 37, 900}, wrong_b = {1, 38, 900}, c = {1, 5, 0};
	struct store_tallies chk;

	msg_make(&m1, 1);   /* 37 bytes, expiry 995 */
	msg_make(&m2, 2);   /* 74 bytes, expiry 1995 */
	assert_int_equal(store_msg_put(st, 1, &m1.m), STORE_OK);
	assert_int_equal(store_msg_put(st, 2, &m2.m), STORE_OK);
	assert_int_equal(store_queue_append(st, "a", 1, &q1), STORE_OK);
	assert_int_equal(store_queue_append(st, "a", 2, &q2), STORE_OK);
	assert_int_equal(store_queue_append(st, "a", 3, &q3), STORE_OK);   /* QoS 0: not counted */
	assert_int_equal(store_queue_append(st, "b", 1, &q1), STORE_OK);
	assert_int_equal(store_tally_put(st, "a", &a), STORE_OK);
	assert_int_equal(store_tally_put(st, "b", &b), STORE_OK);
	commit_ok(st);
	assert_int_equal(store_check_tallies(st, &chk), STORE_OK);
	assert_false(chk.kept);
	assert_int_equal(store_tallies_claim(st, true), STORE_OK);
	commit_ok(st);
	store_close(st);

	st = open_store(fx, 0, STORE_READ_ONLY);
	assert_int_equal(store_check_tallies(st, &chk), STORE_OK);
	assert_true(chk.kept);
	assert_uint_equal(chk.checked, 2);
	assert_uint_equal(chk.wrong, 0);
	store_close(st);

	st = open_store(fx, 0, 0);
	assert_int_equal(store_tally_put(st, "b", &wrong_b), STORE_OK);
	assert_int_equal(store_tally_put(st, "c", &c), STORE_OK);
	assert_int_equal(store_tallies_claim(st, true), STORE_OK);
	commit_ok(st);
	store_close(st);
	st = open_store(fx, 0, STORE_READ_ONLY);
	assert_int_equal(store_check_tallies(st, &chk), STORE_OK);
	assert_uint_equal(chk.checked, 3);
	assert_uint_equal(chk.wrong, 2);
	store_close(st);
}

static void test_walk_in_batches(void **state)
{
	struct fx *fx = *state;
	struct store *st = open_store(fx, 0, 0);
	struct coll c = {0};
	const size_t n = 1000;

	append_big_odd_even(st, n);
	const char *ids[] = {"big", "odd", "even"};
	for(int i = 0; i < 3; i++){
		struct rec_session s = session_make(ids[i], NULL, 1);
		assert_int_equal(store_session_put(st, &s), STORE_OK);
	}
	commit_ok(st);

	assert_int_equal(store_walk_queue(st, "big", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, n);
	for(size_t i = 0; i < n; i++){
		assert_uint_equal(c.v[i].id & ((UINT64_C(1) << STORE_SEQ_SHIFT) - 1), i + 1);
	}
	coll_free(&c);

	c.stop_after = 600;
	c.stop_rc = 9;
	assert_int_equal(store_walk_queue(st, "big", cb_queue, &c), 9);
	assert_uint_equal(c.n, 600);
	coll_free(&c);

	c.st = st;
	assert_int_equal(store_walk_sessions(st, cb_nested_queue, &c), STORE_OK);
	assert_uint_equal(c.sessions, 3);
	assert_uint_equal(c.n, 2 * n);
	size_t halves = 0, whole = 0;
	for(size_t i = 0; i < c.sessions; i++){
		halves += c.per_session[i] == n / 2;
		whole += c.per_session[i] == n;
	}
	assert_uint_equal(halves, 2);
	assert_uint_equal(whole, 1);
	coll_free(&c);
	store_close(st);

	/* One record of "big" in its third batch damaged: the others come. */
	struct raw r;
	raw_open(&r, fx->tmp.path);
	MDB_dbi index = raw_dbi(&r, "queue-index");
	MDB_cursor *cur;
	MDB_val k, v;
	uint8_t hash[HASH_LEN], pair[16];
	size_t seen = 0;
	assert_int_equal(mdb_cursor_open(r.txn, index, &cur), 0);
	for(int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT_NODUP){
		size_t count;
		assert_int_equal(mdb_cursor_count(cur, &count), 0);
		if(count == n){
			memcpy(hash, k.mv_data, HASH_LEN);
			seen++;
		}
	}
	mdb_cursor_close(cur);
	assert_uint_equal(seen, 1);
	uint8_t *val;
	size_t vlen, target = 2 * WALK_BATCH_FOR_TEST + 10;
	raw_queue_nth(&r, hash, target, pair, &val, &vlen);
	val[vlen - 1] ^= 1;
	raw_put(&r, raw_dbi(&r, "queue-log"), pair + 8, 8, val, vlen);
	free(val);
	raw_close(&r, true);

	st = open_store(fx, 0, 0);
	log_reset();
	assert_int_equal(store_walk_queue(st, "big", cb_queue, &c), STORE_OK);
	assert_uint_equal(c.n, n - 1);
	assert_uint_equal(stats_of(st).records_rejected, 1);
	for(size_t i = 0, want = 1; i < c.n; i++, want++){
		if(want == target + 1){
			want++;
		}
		assert_uint_equal(c.v[i].id & ((UINT64_C(1) << STORE_SEQ_SHIFT) - 1), want);
	}
	coll_free(&c);
	store_close(st);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_open_new),
		T(test_roundtrip_all_kinds),
		T(test_overwrite_and_delete),
		T(test_session_delete_scoped),
		T(test_offline_subs_and_used_bytes),
		T(test_queue_order_across_epochs),
		T(test_queue_ops_between_commits),
		T(test_body_counts),
		T(test_removal_after_read),
		T(test_wrong_key),
		T(test_epoch_and_read_only),
		T(test_map_growth),
		T(test_tampered_value_rejected),
		T(test_moved_value_rejected),
		T(test_malformed_entries_skipped),
		T(test_truncated_file),
		T(test_no_plaintext_on_disk),
		T(test_walk_stops_on_callback_value),
		T(test_large_backlog_commit),
		T(test_reopen_after_growth),
		T(test_negative_callback_value),
		T(test_buffers_freed_at_rest),
		T(test_queue_settled),
		T(test_many_clients_in_turn),
		T(test_env_recycled_after_large_commit),
		T(test_async_commit),
		T(test_journal_mark),
		T(test_transactions_end_at_marks),
		T(test_dedup_key),
		T(test_dedup_store),
		T(test_seqno),
		T(test_no_sync),
		T(test_schema1_queues_converted),
		T(test_schema2_counts_built),
		T(test_schema3_converted),
		T(test_schema4_converted),
		T(test_salt_record_damaged),
		T(test_walk_queue_back),
		T(test_tallies),
		T(test_tallies_checked),
		T(test_walk_in_batches),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
