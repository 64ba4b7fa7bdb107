/* The LMDB store: schema, sealed reads and writes, one transaction per commit
 * (store.h). This file: the struct's life, its stats and names, and the cache
 * of name hashes; the rest is split by concern (store_int.h). */
#include "store_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const store_db_names[DB_COUNT] = {
	"meta", "msgs", "queues", "sessions", "subs", "retained", "wills", "online", "dedup", "seqno", "refs"
};
const char store_legacy_queue_name[] = "queue";

void store_log(struct store *st, int level, const char *fmt, ...)
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

int store_hash_name(struct store *st, uint8_t kind, const char *name, uint8_t *out)
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


void store_close(struct store *st)
{
	if(!st){
		return;
	}
	store_writer_stop(st);
	store_opener_stop(st);
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
	return (unsigned)db < DB_COUNT ? store_db_names[db] : "?";
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
