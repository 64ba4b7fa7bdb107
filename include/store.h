/* The LMDB store: one environment, one named database per record kind, every
 * value sealed (see seal.h), every name in a key replaced by its keyed hash.
 *
 *   db        key                                   value (sealed)
 *   meta      fixed ASCII names                     schema, epoch, key check
 *   msgs      store_id (u64 BE)                     rec_base_msg
 *   queue-log log id (u64 BE)                       rec_queue
 *   queue-index H(client id)                        seq (u64 BE) | log id (u64 BE), one
 *                                                   unsealed pair per entry (DUPFIXED)
 *   sessions  H(client id)                          rec_session
 *   subs      H(client id) | H(topic filter)        rec_sub
 *   retained  H(topic)                              rec_retain
 *   wills     H(client id)                          rec_will
 *   online    H(client id)                          client id (string)
 *   dedup     H(identity | message id)              rec_dedup
 *   seqno     H(client id)                          the session's last sequence number
 *   refs      store_id (u64 BE)                     how many queue entries and retained
 *                                                   entries refer to the body (u64 BE),
 *                                                   once that is not the body's refs0
 *   tallies   H(client id)                          rec_tally: count, bytes and earliest
 *                                                   expiry of the client's outgoing QoS 1/2
 *                                                   entries; kept by the plugin with queue
 *                                                   limits or expiry on disk, and trusted
 *                                                   only while meta "tallies" names the
 *                                                   epoch of the last writable open
 *
 * A queue entry is sealed with its logical key, H(client id) | seq, as
 * associated data, and stored in the log under a log id that only grows
 * ((open epoch << 40) | a counter of the open), so new entries are
 * appended to the log's last page; the index finds a client's entries in
 * seq order. A commit that adds a message to many queues touches the log's
 * end and one small index node per client, where one tree per client
 * (schema 4) had it copy a page per client. The index alone says whose
 * entry is which: an entry named by another pair than its own does not
 * authenticate.
 *
 * `online` marks sessions whose client is connected: the broker reports no
 * session change while a client stays connected, so after a crash this is
 * what tells a connected client's session from one that went offline.
 *
 * Writes are buffered in memory and applied by store_commit() in one write
 * transaction, so a full map can be grown and the transaction replayed
 * without losing anything. Reads see committed data only. */
#ifndef PERSIST_LMDB_STORE_H
#define PERSIST_LMDB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"
#include "seal.h"

/* Schema 5: the queues in a log and an index (above). Schema 4: records
 * sealed under a key of each open (seal.h, version 2), the opens' salts in
 * meta. Earlier releases, which read schemas up to their own, refuse a
 * later one rather than skip its records. A writable open converts schemas
 * 1 to 4; a read-only one refuses them (start the broker once). */
#define STORE_SCHEMA_VERSION 5
#define STORE_DEFAULT_MAP_SIZE (64u * 1024 * 1024)

/* Queue sequence numbers: (open epoch << 40) | broker cmsg_id. The broker
 * numbers a client's messages from 1 in every run, so the epoch keeps a
 * later run's messages after an earlier run's. A restored message is handed
 * back to the broker with its sequence number as cmsg_id; cmsg_ids at or
 * above 2^40 are therefore sequence numbers already. */
#define STORE_SEQ_SHIFT 40

enum store_db {
	DB_META,
	DB_MSGS,
	DB_QUEUE,
	DB_SESSIONS,
	DB_SUBS,
	DB_RETAINED,
	DB_WILLS,
	DB_ONLINE,
	DB_DEDUP,
	DB_SEQNO,
	DB_REFS,
	DB_TALLY,
	DB_QINDEX,  /* no sealed values: DB_QUEUE (the log) is what the queues' records are */
	DB_COUNT
};

enum store_result {
	STORE_OK = 0,
	STORE_ERR_NOMEM,
	STORE_ERR_IO,        /* open/read/write failed at the OS level */
	STORE_ERR_KEY,       /* the key does not match this database */
	STORE_ERR_CORRUPT,   /* the data file is damaged (LMDB structure, truncation) */
	STORE_ERR_VERSION,   /* written by an unknown schema version */
	STORE_ERR_CRYPTO,
	STORE_ERR_READONLY,
	STORE_ERR_BUSY,      /* another process has the database open for writing */
	STORE_ERR_EXISTS,    /* store_create: the directory already holds a database */
};

enum store_flags {
	STORE_READ_ONLY = 1, /* for the CLI's read commands: no epoch bump, no writes, no lock */
	STORE_NO_SYNC = 2,   /* commits do not sync; store_sync_async and store_commit do */
};

struct store;

/* Log sink: level is one of the STORE_LOG_* values. */
enum { STORE_LOG_ERR, STORE_LOG_WARNING, STORE_LOG_NOTICE, STORE_LOG_INFO };
typedef void (*store_log_fn)(int level, const char *msg);

struct store_stats {
	uint64_t commits;
	uint64_t commit_errors;
	uint64_t map_grows;
	uint64_t env_reopens;      /* after LMDB refused further writes (MDB_PANIC) */
	uint64_t env_recycles;     /* opened again by store_release_memory to free LMDB's page buffers */
	uint64_t buffer_bytes;     /* allocated for the write buffers and the pending entries' table */
	uint64_t records_rejected;
	uint64_t records;        /* counted by the last structure check */
	uint64_t commit_us_p50;  /* over the last 1024 commits */
	uint64_t commit_us_p99;
	uint8_t key_id;
	uint64_t pending_ops;
	size_t map_size;
	uint64_t used_bytes;     /* pages in use (not free), measured at most every 100 ms */
};

/* Opens (creating if needed) the database directory path. The key is used to
 * derive subkeys and is not retained. On failure *out is NULL and err holds
 * a sentence for the operator. */
int store_open(struct store **out, const char *path, size_t map_size,
		const uint8_t key[SEAL_KEY_LEN], unsigned flags, store_log_fn log,
		char *err, size_t errlen);
void store_close(struct store *st);

/* Creates a new database in path (which must not hold one) whose records
 * are sealed under key id key_id: what a rekey writes into. Its first open
 * epoch is epoch_floor + 1 (salvage starts above the epochs of the file it
 * reads, which was sealed under the same key). */
int store_create(struct store **out, const char *path, size_t map_size,
		const uint8_t key[SEAL_KEY_LEN], uint8_t key_id, uint32_t epoch_floor, store_log_fn log,
		char *err, size_t errlen);

/* The associated data a value of db stored under key is sealed with:
 * db (1 byte) | key; returns its length. A queue entry's key is its
 * client's hash | its sequence number (the first 8 bytes of the entry). */
size_t store_ad(enum store_db db, const uint8_t *key, size_t klen, uint8_t *ad);

/* Writable opens hold an exclusive lock on <path>/writer.lock for their
 * lifetime: a second writer (a second broker, or the CLI's delete-account
 * while the broker runs) gets STORE_ERR_BUSY. Read-only opens take none. */

/* Moves the database directory path (data file, journal, lock file) aside
 * to <path>.damaged-<UTC time>[-n], whose name goes to dest, so that a new
 * database can be made in its place. STORE_ERR_BUSY while a process has it
 * open for writing. */
int store_set_aside(const char *path, char *dest, size_t destlen, char *err, size_t errlen);

/* Writes a compacted copy (no free pages) of the database into the empty
 * directory dest, with LMDB's own copy. Records stay sealed as they are. */
int store_copy_compact(struct store *st, const char *dest, char *err, size_t errlen);

/* Entries and bytes (pages) of one database. */
int store_count(struct store *st, enum store_db db, uint64_t *entries, uint64_t *bytes);
/* Stored sessions whose client is connected. */
int store_count_online_sessions(struct store *st, uint64_t *n);
/* Size of data.mdb and of the map, in bytes. */
int store_file_size(struct store *st, uint64_t *file_bytes, uint64_t *map_bytes);

/* Gives back what a burst left in the process's memory. Drops the data
 * file's pages from the process's mapping (not from the page cache):
 * reading the file leaves them counted in the process's memory (RSS) until
 * the kernel needs them. After a large write transaction it opens the
 * environment again instead, which also frees the page buffers LMDB keeps
 * from it. With nothing buffered, frees the write buffers a burst grew.
 * Skipped while a transaction runs; not to be called from a walk's
 * callback. */
void store_release_memory(struct store *st);
/* Cross-references of the databases. With delete_orphans, message bodies
 * that no queue entry and no retained entry references are deleted
 * (buffered; commit to apply). */
struct store_refs {
	uint64_t orphan_msgs;            /* bodies nothing references */
	uint64_t dangling_queue;         /* queue entries whose body is missing */
	uint64_t dangling_retained;      /* retained entries whose body is missing */
	uint64_t queue_without_session;  /* queue entries of no session */
	uint64_t subs_without_session;
	uint64_t refs_wrong;             /* bodies whose reference count is not what is stored */
	uint64_t queue_index_wrong;      /* index pairs without their log entry, log entries no
	                                    pair names, log entries two pairs name (not
	                                    repaired) */
};
/* With delete_orphans the wrong counts are corrected too. */
int store_check_refs(struct store *st, bool delete_orphans, struct store_refs *out);
/* The queue tallies against the queues, when the last writer kept them. */
struct store_tallies {
	bool kept;         /* false: none checked (the next start counts the queues) */
	uint64_t checked;  /* clients with a tally or counted entries */
	uint64_t wrong;    /* tallies that do not match their queue */
};
int store_check_tallies(struct store *st, struct store_tallies *out);

/* Walks every key and value of every database without decrypting, to find
 * structural damage; a fault inside LMDB while doing so (SIGBUS, SIGSEGV,
 * SIGABRT) is caught and reported. store_open runs it before any write and
 * keeps the count in store_stats.records. Not thread-safe (signal handlers). */
int store_check_structure(struct store *st, uint64_t *records, char *err, size_t errlen);

/* Buffered writes. Each returns STORE_OK or STORE_ERR_NOMEM/CRYPTO. */
/* A body lives while queue entries or retained entries refer to it: the
 * store counts them (refs) and deletes the body when the count drops to
 * zero, in the transaction that drops it. store_msg_release says the broker holds
 * the body no more: it is deleted then if nothing stored refers to it (a
 * body whose references never reached the database). */
int store_msg_put(struct store *st, uint64_t store_id, const struct rec_base_msg *m);
int store_msg_release(struct store *st, uint64_t store_id);
int store_session_put(struct store *st, const struct rec_session *s);
/* Deletes a session with its subscriptions, queue and will. */
int store_session_delete(struct store *st, const char *clientid);
int store_sub_put(struct store *st, const struct rec_sub *s);
int store_sub_delete(struct store *st, const char *clientid, const char *topic_filter);
/* Adds an entry to a client's queue at a cmsg_id the queue does not hold
 * (the broker's cmsg_ids are new). Until the next commit, a store_queue_update
 * replaces it and a store_queue_remove cancels it: neither reaches the database. */
int store_queue_append(struct store *st, const char *clientid, uint64_t cmsg_id, const struct rec_queue *q);
/* Replaces (or adds) the entry of a client's queue at cmsg_id. */
int store_queue_update(struct store *st, const char *clientid, uint64_t cmsg_id, const struct rec_queue *q);
/* store_id: the entry's body, as the broker reports it; 0 when not known
 * (then it is read from the stored entry). */
int store_queue_remove(struct store *st, const char *clientid, uint64_t cmsg_id, uint64_t store_id);
int store_retain_set(struct store *st, const char *topic, uint64_t store_id);
int store_retain_delete(struct store *st, const char *topic);
int store_will_put(struct store *st, const struct rec_will *w);
int store_will_delete(struct store *st, const char *clientid);
int store_will_delete_all(struct store *st);
/* Publish deduplication: the key of an identity's message id, and its entry. */
int store_dedup_key(struct store *st, const struct rec_dedup *d, uint8_t key[HASH_LEN]);
int store_dedup_put(struct store *st, const uint8_t key[HASH_LEN], const struct rec_dedup *d);
int store_dedup_delete(struct store *st, const uint8_t key[HASH_LEN]);
/* The last sequence number given to a session's messages (plugin_opt_seq_property). */
int store_seqno_put(struct store *st, const char *clientid, uint64_t last);
int store_seqno_get(struct store *st, const char *clientid, uint64_t *last);
/* A client's tally (tallies above); a count of 0 deletes it. The writes
 * that change the queue and the tally go in one commit. */
int store_tally_put(struct store *st, const char *clientid, const struct rec_tally *t);
/* Zeroes *out when the client has none; STORE_ERR_CORRUPT (zeroed) when
 * its record does not authenticate or decode. */
int store_tally_get(struct store *st, const char *clientid, struct rec_tally *out);
/* Whether the last writable open before this one (read-only: the last
 * writable open) kept the tallies, so they match the queues: any other
 * writer (the CLI, an earlier release, a run without limits) leaves meta
 * "tallies" behind its epoch. */
bool store_tallies_kept(const struct store *st);
/* Buffers meta "tallies" = this open's epoch (kept: this run keeps them),
 * or 0 (they are to be counted again). */
int store_tallies_claim(struct store *st, bool kept);
int store_session_set_online(struct store *st, const char *clientid, bool online);
int store_online_clear(struct store *st);

/* Applies the buffered writes in one transaction and syncs, and returns
 * when they are on disk (meta page included). On an I/O error the writes
 * stay buffered for the next call. */
int store_commit(struct store *st);
/* The same without the last sync: returns once the transaction is
 * committed (a process crash keeps it; its meta page reaches the disk with
 * the next commit's sync, as with every commit). */
int store_commit_visible(struct store *st);
/* Hands the buffered writes to the store's writer thread (started on first
 * use) and returns at once; the writer commits and syncs them in one
 * transaction. While it is busy, later writes stay buffered and go in the
 * next transaction together. Errors of earlier commits are logged from here
 * (the writer does not log). */
int store_commit_async(struct store *st);
bool store_has_pending(const struct store *st);
/* True when no buffered write, and none a commit in progress holds, touches
 * clientid's queue: a read of it now sees all there is. False also for
 * some other clients' writes (it is a 16-bit filter). */
bool store_queue_settled(struct store *st, const char *clientid);
/* True from a commit that found the device full until a commit succeeds. */
bool store_disk_full(const struct store *st);
/* Asks the writer thread to sync what was committed without a sync. */
void store_sync_async(struct store *st);

/* Buffers the journal mark lsn (journal.h): when the transaction holding it
 * commits, everything the broker did up to journal record lsn is in the
 * store. Buffer it after the writes it covers. */
int store_journal_mark(struct store *st, uint64_t lsn);
/* Stores and learns the salt (seal.h) of an epoch of another database
 * below this one's epochs, so that what that database sealed opens here:
 * salvage keeps the journal of the file it reads. Committed at once, with
 * nothing buffered. */
int store_salt_adopt(struct store *st, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN]);
/* The last mark committed (read at open, then updated by commits). */
uint64_t store_journal_committed(const struct store *st);
/* The last mark on the disk: commits sync their data pages, and the meta
 * page that makes a commit durable goes with the next commit's sync
 * (MDB_NOMETASYNC), or with a store_commit; in STORE_NO_SYNC, with the
 * last sync. Journal records up to it survive a power loss without the
 * journal. */
uint64_t store_journal_durable(const struct store *st);

/* The queue sequence number a broker cmsg_id has in this run. */
uint64_t store_queue_seq(const struct store *st, uint64_t cmsg_id);
/* The store's sealer, shared with the journal (one nonce counter). */
struct seal *store_seal(struct store *st);

/* Read walks over committed data, in key order. A record that fails to
 * authenticate or decode is logged once with its kind, counted and skipped.
 * A callback returning non-zero stops the walk with that value. */
typedef int (*msg_visit_fn)(void *ctx, uint64_t store_id, const struct rec_base_msg *m);
typedef int (*session_visit_fn)(void *ctx, const struct rec_session *s);
typedef int (*sub_visit_fn)(void *ctx, const struct rec_sub *s);
typedef int (*queue_visit_fn)(void *ctx, uint64_t seq, const struct rec_queue *q);
typedef int (*retain_visit_fn)(void *ctx, const struct rec_retain *r);
typedef int (*will_visit_fn)(void *ctx, const struct rec_will *w);
typedef int (*dedup_visit_fn)(void *ctx, const uint8_t key[HASH_LEN], const struct rec_dedup *d);

int store_walk_msgs(struct store *st, msg_visit_fn fn, void *ctx);
int store_walk_sessions(struct store *st, session_visit_fn fn, void *ctx);
/* Calls fn with the message body store_id, if there is one. */
int store_msg_get(struct store *st, uint64_t store_id, msg_visit_fn fn, void *ctx);
/* Calls fn with clientid's session, if it has one. */
int store_session_get(struct store *st, const char *clientid, session_visit_fn fn, void *ctx);
/* 1 when clientid was marked online, 0 when not, minus a STORE_ERR_* otherwise. */
int store_session_was_online(struct store *st, const char *clientid);
/* clientid NULL walks every client's subscriptions. */
int store_walk_subs(struct store *st, const char *clientid, sub_visit_fn fn, void *ctx);
/* The subscriptions of sessions whose client is not marked online. */
int store_walk_offline_subs(struct store *st, sub_visit_fn fn, void *ctx);
/* stats.used_bytes, without the rest of the stats. */
uint64_t store_used_bytes(const struct store *st);
/* Measures used_bytes again if commits since the last measurement were not
 * measured (the writer measures at most every 100 ms): call it now and then. */
void store_used_refresh(struct store *st);
/* clientid NULL walks every client's queue (client order is by hash). */
int store_walk_queue(struct store *st, const char *clientid, queue_visit_fn fn, void *ctx);
/* A client's queue from sequence number from on. */
int store_walk_queue_from(struct store *st, const char *clientid, uint64_t from, queue_visit_fn fn, void *ctx);
/* A client's queue from its newest entry back. */
int store_walk_queue_back(struct store *st, const char *clientid, queue_visit_fn fn, void *ctx);
int store_walk_retained(struct store *st, retain_visit_fn fn, void *ctx);
/* clientid NULL walks every will. */
int store_walk_wills(struct store *st, const char *clientid, will_visit_fn fn, void *ctx);
int store_walk_dedup(struct store *st, dedup_visit_fn fn, void *ctx);

uint32_t store_epoch(const struct store *st);
void store_get_stats(const struct store *st, struct store_stats *out);
const char *store_db_name(enum store_db db);
const char *store_strerror(int rc);

#endif
