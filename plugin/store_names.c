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
	"meta", "msgs", "queue-log", "sessions", "subs", "retained", "wills", "online", "dedup", "seqno", "refs",
	"tallies", "queue-index"
};
const char store_legacy_queue_name[] = "queue";
const char store_queues4_name[] = "queues";

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

/* The same names (a subscriber's client id for every message it is
 * queued) are hashed over and over: remember the last hash of each slot. */
static uint32_t name_fnv(uint8_t kind, const char *name, size_t len)
{
	uint32_t h = 2166136261u ^ kind;

	for(size_t i = 0; i < len; i++){
		h = (h ^ (uint8_t)name[i]) * 16777619u;
	}
	return h;
}

/* Moves the named slots into a table of n slots (a power of two); those
 * that meet a taken slot there are dropped. */
static void hash_cache_resize(struct store *st, uint32_t n)
{
	struct hash_slot *t = calloc(n, sizeof(*t));
	uint32_t taken = 0;

	if(!t){
		return;
	}
	for(uint32_t i = 0; i < st->hash_slots; i++){
		struct hash_slot *o = &st->hash_cache[i];
		if(!o->name){
			continue;
		}
		struct hash_slot *d = &t[name_fnv(o->kind, o->name, o->len) & (n - 1)];
		if(d->name){
			seal_wipe(o->name, o->len);
			free(o->name);
		}else{
			*d = *o;
			taken++;
		}
	}
	if(st->hash_cache){
		seal_wipe(st->hash_cache, st->hash_slots * sizeof(*st->hash_cache));
		free(st->hash_cache);
	}
	st->hash_cache = t;
	st->hash_slots = n;
	st->hash_taken = taken;
}

int store_hash_name(struct store *st, uint8_t kind, const char *name, uint8_t *out)
{
	size_t len = strlen(name);
	uint32_t fnv = name_fnv(kind, name, len);
	struct hash_slot *slot = NULL;
	char *copy;

	if(!st->hash_cache){
		hash_cache_resize(st, HASH_CACHE_MIN);
	}
	if(st->hash_cache){
		slot = &st->hash_cache[fnv & (st->hash_slots - 1)];
		if(slot->name && slot->kind == kind && slot->len == len && !memcmp(slot->name, name, len)){
			memcpy(out, slot->hash, HASH_LEN);
			return STORE_OK;
		}
	}
	if(seal_hash(st->seal, kind, name, len, out) != SEAL_OK){
		return STORE_ERR_CRYPTO;
	}
	if(!slot || len > UINT32_MAX){
		return STORE_OK;
	}
	if(slot->name && st->hash_taken * 2 > st->hash_slots && st->hash_slots < HASH_CACHE_MAX){
		hash_cache_resize(st, st->hash_slots * 4);
		slot = &st->hash_cache[fnv & (st->hash_slots - 1)];
	}
	copy = malloc(len + 1);
	if(copy){
		memcpy(copy, name, len + 1);
		if(slot->name){
			seal_wipe(slot->name, slot->len);
			free(slot->name);
		}else{
			st->hash_taken++;
		}
		slot->name = copy;
		slot->len = (uint32_t)len;
		slot->kind = kind;
		memcpy(slot->hash, out, HASH_LEN);
	}
	return STORE_OK;
}

void store_hash_cache_free(struct store *st)
{
	for(uint32_t i = 0; i < st->hash_slots; i++){
		if(st->hash_cache[i].name){
			seal_wipe(st->hash_cache[i].name, st->hash_cache[i].len);
			free(st->hash_cache[i].name);
		}
	}
	if(st->hash_cache){
		seal_wipe(st->hash_cache, st->hash_slots * sizeof(*st->hash_cache));
		free(st->hash_cache);
	}
	st->hash_cache = NULL;
	st->hash_slots = st->hash_taken = 0;
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
