/* Names in the store: of its databases and results, and the keyed hashes
 * that stand for client ids, topics and filters in LMDB keys (with a cache
 * of the last hash of each slot); the associated data of a sealed value;
 * the store's log. */
#include "store_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const store_db_names[DB_COUNT] = {
	"meta", "msgs", "queues", "sessions", "subs", "retained", "wills", "online", "dedup", "seqno", "refs", "tallies"
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

void store_hash_cache_free(struct store *st)
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
