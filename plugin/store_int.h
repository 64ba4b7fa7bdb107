/* The store's insides, shared by its files (store*.c) and nobody else.
 *
 *   store.c         the struct's end, its stats
 *   store_names.c   names: of databases and results, the keyed hashes of client
 *                   ids and topics in keys (cached), associated data, the log
 *   store_buffer.c  the write buffer: each store_* change encoded as an operation
 *   store_commit.c  applying operations in a write transaction, reference counts,
 *                   the environment and its map, the writer thread, commits
 *   store_walk.c    reads: walks in batches, opened by the opener thread
 *   store_open.c    open and create: lock, meta, salts and epoch, schema upgrades
 *   store_check.c   the structure check under a fault guard, compaction, counts,
 *                   cross-references (verify) */
#ifndef PERSIST_LMDB_STORE_INT_H
#define PERSIST_LMDB_STORE_INT_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "bytes.h"
#include "store.h"
#include "u64map.h"

#define KEY_MAX (2 * HASH_LEN + 8)
/* op (1) | database (1) | key length (1) | value length (4, LE) | ref (8, BE):
 * ref is the message body a queue entry or retained entry refers to (its
 * value is sealed by then), 0 for other records. */
#define OP_HEADER 15
/* Well below LMDB's bound on the dirty pages of one write transaction. */
#define OPS_PER_TXN 20000
/* A transaction of more operations leaves enough of LMDB's page buffers
 * behind to be worth opening the environment again (store_release_memory). */
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

extern const char *const store_db_names[DB_COUNT];

/* The queues (store.h): a queue entry's logical key is client hash | seq,
 * the associated data it is sealed with since schema 1. Schema 1 kept one
 * LMDB key per entry (store_legacy_queue_name), schemas 2 to 4 a DUPSORT
 * tree per client whose duplicates were seq | sealed (store_queues4_name);
 * schema 5 the log (DB_QUEUE: log id -> sealed) and its index (DB_QINDEX:
 * client hash -> seq | log id), which alone says whose entry is which. */
#define QUEUE_SEQ_LEN 8
#define QUEUE_KEY_LEN (HASH_LEN + QUEUE_SEQ_LEN)
#define QLOG_ID_LEN 8
#define QINDEX_PAIR_LEN (QUEUE_SEQ_LEN + QLOG_ID_LEN)

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

/* How one transaction changes the reference count of one body (refs), by
 * store id in st->refd. */
struct ref_delta {
	int64_t delta;
	int64_t refs0;   /* with created: the count the body's record holds */
	uint32_t hint;   /* without created: refs0 + 1 as a removal's op carried it; 0: none */
	bool released;   /* the broker released the body (store_msg_release) */
	bool created;    /* the body was put in this transaction */
};

/* A body put in the buffered operations, by store id in st->newb: the
 * stored entries that refer to it from the same buffer are counted into its
 * record (refs0) when it is sealed, so a body whose count never changes
 * needs no refs record. */
struct new_body {
	uint32_t off;    /* its put in st->ops */
	uint32_t refs;
};
extern const char store_legacy_queue_name[]; /* schema 1 */
extern const char store_queues4_name[];      /* schemas 2 to 4 */

static inline unsigned db_flags(int db)
{
	return db == DB_QINDEX ? MDB_DUPSORT | MDB_DUPFIXED : 0;
}


/* The name hash cache starts at HASH_CACHE_MIN slots and grows fourfold
 * while more than half are taken, to HASH_CACHE_MAX (32 bytes a slot plus
 * the name): one HMAC per message otherwise, when more clients take
 * messages in turn than the cache has slots (personal inboxes). */
#define REFS0_HINTS 65536
#define HASH_CACHE_MIN 1024
#define HASH_CACHE_MAX 65536
#define QTOUCH_BYTES (65536 / 8)
#define USED_MEASURE_MS 100
#define COMMIT_RING 1024

struct hash_slot {
	char *name;
	uint32_t len;
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
	bool upgrade_queues; /* schema 1: the queues are still in store_legacy_queue_name */
	bool upgrade_refs;   /* schema 1 or 2: no reference counts yet */
	bool upgraded_seal;  /* this open converted schema 3 to 4 */
	bool upgrade_log;    /* schema 4 or earlier: the queues are still in store_queues4_name */
	uint32_t schema;     /* at open */
	uint64_t log_next;   /* the next queue log id: (epoch << STORE_SEQ_SHIFT) | counter; the
	                        thread that commits */
	uint32_t epoch;
	uint32_t tallies_epoch;  /* meta "tallies" at open: the last open that kept them; 0: none */
	size_t map_size;
	/* Buffered writes: OP_HEADER | key | value, applied by store_commit. */
	struct buf ops;
	uint64_t n_ops;
	size_t ops_patched;          /* new bodies before this offset have their count */
	size_t ops_sealed;           /* sealed part, left by a failed commit before the writer runs */
	size_t ops_marked;           /* ops before this offset are before the last OP_MARK */
	struct seal *wseal;          /* the writer's: seals what it commits, opens counts */
	struct u64map refd;          /* the transaction's count changes: store id -> struct ref_delta */
	struct ref_delta refd0;      /* body 0's, which refd cannot hold: all zero, as if absent, until used */
	struct buf wpt;              /* plaintext scratch of the transaction */
	struct u64map newb;          /* store id -> struct new_body */
	/* The refs0 of bodies store_msg_get read (the hand-back reads the body of
	 * every entry it hands over): a removal of an entry of one carries it to
	 * the writer, which then need not open the body to count. store id ->
	 * refs0 + 1 (uint32_t), at most REFS0_HINTS; emptied at rest. */
	struct u64map refs0_read;
	/* Client queues the buffered writes touch, by the first 16 bits of
	 * the client's hash (others sharing them only cost a commit): ops's in
	 * qtouch, the writer's in wqtouch (under lock; kept after a failed
	 * commit, whose writes are retried). */
	uint8_t qtouch[QTOUCH_BYTES];
	uint8_t wqtouch[QTOUCH_BYTES];
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
	atomic_bool marked;          /* a journal mark was ever buffered: transactions end at marks */
	bool short_file;             /* data.mdb ends before its last page number (check_size, store_open.c) */
	long long file_bytes;        /* its size at open */
	atomic_bool unmap_wanted;    /* store_release_memory found the writer busy */
	uint64_t txn_ops_peak;       /* most operations of one commit since the environment opened; txn_lock */
	pthread_mutex_t txn_lock;    /* held by a write transaction or a read walk: a map
	                                resize needs neither to be active in this process */
	struct store_stats stats;
	struct opener *opener;       /* started by the first walk longer than a batch */
	bool opener_failed;
	struct hash_slot *hash_cache;  /* hash_slots entries, hash_taken of them named */
	uint32_t hash_slots;
	uint32_t hash_taken;
};

/* A walk's visitor of one opened record: -1 when the plaintext does not
 * decode; otherwise 0, with the callback's value in *cb_rc. */
typedef int (*decode_visit_fn)(const MDB_val *k, const uint8_t *pt, size_t len, void *fn, void *ctx, int *cb_rc);

/* What the fault guard names when LMDB faults (store_check.c). */
extern const char *volatile store_fault_where;

/* A function run under the fault guard (store_run_guarded). */
struct guarded {
	int (*fn)(struct store *st, struct guarded *g, char *err, size_t errlen);
	void *arg;
	MDB_txn *read_txn; /* open while fn reads; released after a fault */
	MDB_cursor *cursor; /* open in read_txn while fn walks; closed after a fault */
};

void store_log(struct store *st, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* store_names.c */
int store_hash_name(struct store *st, uint8_t kind, const char *name, uint8_t *out);
void store_hash_cache_free(struct store *st);

/* store_buffer.c */
void store_newb_patch(struct store *st);
int store_op_append(struct store *st, enum op op, enum store_db db, const uint8_t *key, size_t klen);
void store_op_header(uint8_t *p, enum op op, enum store_db db, size_t klen, size_t vlen, uint64_t ref);
int store_ops_seal(struct buf *ops, size_t *sealed, struct seal *s);
void store_pending_forget(struct store *st);

/* store_commit.c */
/* The cursors of a transaction's queue changes, opened at their first use. */
struct queue_cursors {
	MDB_cursor *log;
	MDB_cursor *index;
};
int queue_cursors_open(struct store *st, MDB_txn *txn, struct queue_cursors *qc);
void queue_cursors_close(struct queue_cursors *qc);
/* Adds a queue entry (key: logical): the sealed entry under the next log
 * id, appended to the log, and its index pair. append_dup: the seq sorts
 * after the client's others (a new message). */
int store_queue_insert(struct store *st, struct queue_cursors *qc, const uint8_t *key, const uint8_t *sealed,
		size_t slen, bool append_dup);
int store_env_open(struct store *st);
int store_free_page_count(MDB_txn *txn, uint64_t *n);
int store_map_adopt(struct store *st);
uint64_t store_mono_ms(const struct timespec *ts);
bool store_open_in_txn(struct store *st, enum store_db db, const uint8_t *key, size_t klen,
		const uint8_t *v, size_t vlen);
const char *store_rc_strerror(int rc);
uint64_t store_refd_absolute(struct store *st);
int store_refd_add(struct store *st, uint64_t store_id, int64_t delta);
void store_refd_reset(struct store *st);
int store_refs_flush(struct store *st, MDB_txn *txn);
void store_reject_in_txn(struct store *st);
int store_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);
void store_used_measure(struct store *st, bool now);
void store_writer_stop(struct store *st);

/* store_walk.c */
void store_opener_stop(struct store *st);
int store_walk_db(struct store *st, enum store_db db, const uint8_t *prefix, size_t plen,
		decode_visit_fn visit, void *fn, void *ctx);

/* store_check.c */
int store_run_guarded(struct store *st, struct guarded *g, char *err, size_t errlen);
int store_walk_structure(struct store *st, struct guarded *g, char *err, size_t errlen);

#endif
