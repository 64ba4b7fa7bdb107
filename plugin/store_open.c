/* Opening and creating a store: directories, the writer lock, the map size,
 * the meta records (schema, epoch, salts, key check), schema upgrades. */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static const char key_check_text[] = "persist-lmdb key check v1";

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
	store_ad(DB_META, k.mv_data, k.mv_size, ad);
	rc = seal_open(st->seal, ad, 1 + k.mv_size, v.mv_data, v.mv_size, out, len);
	return rc ? SEAL_RC_BASE + rc : 0;
}

static int meta_put(struct store *st, MDB_txn *txn, const char *name, const void *val, size_t len)
{
	uint8_t ad[1 + KEY_MAX], sealed[64 + SEAL_OVERHEAD];
	MDB_val k = {strlen(name), (void *)name}, v;

	store_ad(DB_META, k.mv_data, k.mv_size, ad);
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
				store_rc_strerror(rc));
		return rc >= SEAL_RC_BASE ? STORE_ERR_CORRUPT : STORE_ERR_IO;
	}else if(len != sizeof(key_check_text) || memcmp(val, key_check_text, len) != 0){
		snprintf(err, errlen, "the key check of %s has unexpected contents", st->path);
		return STORE_ERR_CORRUPT;
	}else{
		if(meta_get(st, txn, "schema", val, sizeof(val), &len) || len != 4){
			snprintf(err, errlen, "the schema record of %s is missing or damaged", st->path);
			return STORE_ERR_CORRUPT;
		}
		st->schema = get_be32(val);
		if(st->schema < 1 || st->schema > STORE_SCHEMA_VERSION){
			snprintf(err, errlen, "%s has schema version %u; this persist-lmdb reads versions 1 to %u",
					st->path, st->schema, STORE_SCHEMA_VERSION);
			return STORE_ERR_VERSION;
		}
		if(st->schema < STORE_SCHEMA_VERSION && st->read_only){
			snprintf(err, errlen, "%s was written by an earlier persist-lmdb (schema %u): start the "
					"broker on it once, or run a write command such as compact, to convert it",
					st->path, st->schema);
			return STORE_ERR_VERSION;
		}
		st->upgrade_queues = st->schema == 1;
		st->upgrade_refs = st->schema == 1 || st->schema == 2;
		st->upgraded_seal = st->schema == 3;
		st->upgrade_log = st->schema < 5;
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
		/* Unreadable, it only means the tallies are counted again. */
		if(meta_get(st, txn, "tallies", val, sizeof(val), &len) == 0 && len == 4){
			st->tallies_epoch = get_be32(val);
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
		/* Schema 4 until the queues are in the log (log_upgrade). */
		put_be32(be, 4);
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
	st->log_next = ((uint64_t)epoch << STORE_SEQ_SHIFT) + 1;
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
 * walk then reads every tree whole (store_walk_structure), where a page past the
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

/* The end of a conversion: drops the database name left behind (if it is
 * there) and, unless schema is 0, records schema, in txn. */
static int converted(struct store *st, MDB_txn *txn, const char *name, uint32_t schema)
{
	MDB_dbi old;
	int rc = mdb_dbi_open(txn, name, 0, &old);

	rc = rc == 0 ? mdb_drop(txn, old, 1) : rc == MDB_NOTFOUND ? 0 : rc;
	if(rc == 0 && schema){
		uint8_t be[4];
		put_be32(be, schema);
		rc = meta_put(st, txn, "schema", be, 4);
	}
	return rc;
}

/* Schema 1 to 2: moves the entries of the legacy queue database into the
 * DUPSORT one of schemas 2 to 4 (which log_upgrade then moves on), at most
 * OPS_PER_TXN per transaction (each moves and deletes its entries, so a
 * crash in between resumes where it stopped), then drops the legacy
 * database and records schema 2 in the same transaction. */
static int queues_upgrade(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	struct buf entry = {0};
	uint64_t moved = 0;
	bool done = false;
	int rc = 0;

	(void)g;
	store_fault_where = store_legacy_queue_name;
	while(rc == 0 && !done){
		MDB_cursor *cur = NULL;
		MDB_txn *txn;
		MDB_dbi legacy, queues;
		MDB_val k, v;
		size_t n = 0;

		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
		if(rc){
			break;
		}
		rc = mdb_dbi_open(txn, store_queues4_name, MDB_CREATE | MDB_DUPSORT, &queues);
		if(rc == 0){
			rc = mdb_dbi_open(txn, store_legacy_queue_name, 0, &legacy);
		}
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
				rc = mdb_put(txn, queues, &dk, &dv, 0);
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
			rc = converted(st, txn, store_legacy_queue_name, 2);
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
	store_log(st, STORE_LOG_INFO, "persist-lmdb: converted %s to schema 2 (%" PRIu64 " queued entries moved)",
			st->path, moved);
	return STORE_OK;
}

/* Schema 4 to 5: moves the entries of the DUPSORT queue database of
 * schemas 2 to 4 (client hash -> seq | sealed) into the log and its index,
 * sealed as they are (the associated data, client hash | seq, is the same),
 * at most OPS_PER_TXN per transaction, each moving and deleting its
 * entries, so a crash in between resumes where it stopped; then drops the
 * old database and, unless the reference counts are still to be built
 * (refs_upgrade records the schema then), records schema 5 in the same
 * transaction. */
static int log_upgrade(struct store *st, struct guarded *g, char *err, size_t errlen)
{
	uint8_t key[QUEUE_KEY_LEN];
	uint64_t moved = 0;
	bool done = false;
	int rc = 0;

	(void)g;
	store_fault_where = store_queues4_name;
	while(rc == 0 && !done){
		struct queue_cursors qc = {NULL, NULL};
		MDB_cursor *cur = NULL;
		MDB_txn *txn;
		MDB_dbi old;
		MDB_val k, v;
		size_t n = 0;

		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
		if(rc){
			break;
		}
		rc = mdb_dbi_open(txn, store_queues4_name, MDB_DUPSORT, &old);
		if(rc == 0){
			rc = mdb_cursor_open(txn, old, &cur);
		}
		if(rc == 0){
			rc = queue_cursors_open(st, txn, &qc);
		}
		while(rc == 0 && n < OPS_PER_TXN && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0){
			if(k.mv_size != HASH_LEN || v.mv_size < QUEUE_SEQ_LEN + SEAL_OVERHEAD){
				rc = MDB_CORRUPTED;
				break;
			}
			memcpy(key, k.mv_data, HASH_LEN);
			memcpy(key + HASH_LEN, v.mv_data, QUEUE_SEQ_LEN);
			/* A client's duplicates come in seq order: each sorts last. */
			rc = store_queue_insert(st, &qc, key, (const uint8_t *)v.mv_data + QUEUE_SEQ_LEN,
					v.mv_size - QUEUE_SEQ_LEN, true);
			if(rc == 0){
				rc = mdb_cursor_del(cur, 0);
				n++;
			}
		}
		if(cur){
			mdb_cursor_close(cur);
		}
		queue_cursors_close(&qc);
		if(rc == MDB_NOTFOUND){
			/* Every entry moved (or no such database at all). */
			done = true;
			rc = converted(st, txn, store_queues4_name, st->upgrade_refs ? 0 : STORE_SCHEMA_VERSION);
		}
		if(rc == 0){
			rc = mdb_txn_commit(txn);
			moved += n;
		}else{
			mdb_txn_abort(txn);
		}
	}
	if(rc){
		snprintf(err, errlen, "cannot convert the queues of %s to schema %u: %s", st->path,
				STORE_SCHEMA_VERSION, rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
		return rc == MDB_CORRUPTED ? STORE_ERR_CORRUPT : STORE_ERR_IO;
	}
	st->upgrade_log = false;
	store_log(st, STORE_LOG_INFO, "persist-lmdb: converted %s to schema %u (%" PRIu64 " queued entries "
			"moved to the queue log)", st->path, STORE_SCHEMA_VERSION, moved);
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
	store_fault_where = "refs";
	rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if(rc){
		goto out;
	}
	store_refd_reset(st);
	rc = mdb_drop(txn, st->dbi[DB_REFS], 0);
	if(rc == 0){
		rc = mdb_cursor_open(txn, st->dbi[DB_QINDEX], &cur);
	}
	for(int op = MDB_FIRST; rc == 0; op = MDB_NEXT){
		struct rec_queue q;
		MDB_val lk, lv;
		rc = mdb_cursor_get(cur, &k, &v, op);
		if(rc){
			break;
		}
		/* The queues, in the log already (log_upgrade): through the index. */
		if(k.mv_size != HASH_LEN || v.mv_size != QINDEX_PAIR_LEN){
			rc = MDB_CORRUPTED;
			break;
		}
		memcpy(key, k.mv_data, HASH_LEN);
		memcpy(key + HASH_LEN, v.mv_data, QUEUE_SEQ_LEN);
		lk.mv_data = (uint8_t *)v.mv_data + QUEUE_SEQ_LEN;
		lk.mv_size = QLOG_ID_LEN;
		rc = mdb_get(txn, st->dbi[DB_QUEUE], &lk, &lv);
		if(rc == MDB_NOTFOUND){
			/* A pair without its entry: nothing to count. */
			store_reject_in_txn(st);
			rc = 0;
			continue;
		}
		if(rc){
			break;
		}
		if(!store_open_in_txn(st, DB_QUEUE, key, QUEUE_KEY_LEN, lv.mv_data, lv.mv_size)
				|| record_decode_queue(st->wpt.data, lv.mv_size - SEAL_OVERHEAD, &q)){
			store_reject_in_txn(st);
			continue;
		}
		rc = store_refd_add(st, q.store_id, 1);
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
		if(!store_open_in_txn(st, DB_RETAINED, k.mv_data, k.mv_size, v.mv_data, v.mv_size)
				|| record_decode_retain(st->wpt.data, v.mv_size - SEAL_OVERHEAD, &r)){
			store_reject_in_txn(st);
			continue;
		}
		rc = store_refd_add(st, r.store_id, 1);
		entries++;
	}
	if(cur){
		mdb_cursor_close(cur);
	}
	if(rc == MDB_NOTFOUND){
		bodies = store_refd_absolute(st);
		rc = store_refs_flush(st, txn);
	}
	if(rc == 0){
		uint8_t be[4];
		put_be32(be, STORE_SCHEMA_VERSION);
		rc = meta_put(st, txn, "schema", be, 4);
	}
	if(rc == 0){
		rc = mdb_txn_commit(txn);
	}else{
		store_refd_reset(st);
		mdb_txn_abort(txn);
	}
out:
	if(rc){
		snprintf(err, errlen, "cannot count the message references of %s (schema 3): %s", st->path,
				rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
		return rc == MDB_CORRUPTED ? STORE_ERR_CORRUPT : STORE_ERR_IO;
	}
	st->upgrade_refs = false;
	store_log(st, STORE_LOG_INFO, "persist-lmdb: converted %s to schema %u (%" PRIu64 " references to %"
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

	store_fault_where = "main";
	rc = mdb_txn_begin(st->env, NULL, st->read_only ? MDB_RDONLY : 0, &txn);
	if(rc){
		return env_error(st, rc, err, errlen);
	}
	for(int i = 0; i < DB_COUNT; i++){
		rc = mdb_dbi_open(txn, store_db_names[i], (st->read_only ? 0 : MDB_CREATE) | db_flags(i), &st->dbi[i]);
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
	store_fault_where = "meta";
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
		store_log(st, STORE_LOG_INFO, "persist-lmdb: converted %s to schema 4 (records are sealed under a key "
				"of each open from now on; earlier releases do not read it)", st->path);
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
	u64map_init(&st->newb, sizeof(struct new_body));
	u64map_init(&st->refs0_read, sizeof(uint32_t));
	u64map_init(&st->refd, sizeof(struct ref_delta));
	st->read_only = flags & STORE_READ_ONLY;
	st->no_sync = flags & STORE_NO_SYNC;
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

	rc = store_env_open(st);
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
		rc = store_run_guarded(st, &g, err, errlen);
	}
	if(rc == STORE_OK && st->upgrade_queues){
		struct guarded g = {.fn = queues_upgrade};
		rc = store_run_guarded(st, &g, err, errlen);
	}
	if(rc == STORE_OK && st->upgrade_log && !st->read_only){
		struct guarded g = {.fn = log_upgrade};
		rc = store_run_guarded(st, &g, err, errlen);
	}
	if(rc == STORE_OK && st->upgrade_refs && !st->read_only){
		struct guarded g = {.fn = refs_upgrade};
		rc = store_run_guarded(st, &g, err, errlen);
	}
	if(rc){
		goto fail;
	}
	store_used_measure(st, true);
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
