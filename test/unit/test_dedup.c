/* The in-memory message id index: seen and expiry boundaries, refresh,
 * eviction when full, forget, the expiry sweep, and a seeded differential
 * run against a plain array model with keys that collide in the table. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"

/* A key whose table hash (its first 8 bytes, read as a native uint64) is
 * h; the last bytes tell keys of the same hash apart. */
static void key_make(uint8_t key[HASH_LEN], uint64_t h, uint32_t id)
{
	memset(key, 0, HASH_LEN);
	memcpy(key, &h, sizeof(h));
	for(int i = 0; i < 4; i++){
		key[8 + i] = (uint8_t)(id >> (8 * i));
	}
	key[15] = 0x5a;
}

static void key_n(uint8_t key[HASH_LEN], uint32_t n)
{
	key_make(key, (uint64_t)n * 0x9e3779b97f4a7c15ull, n);
}

static void insert_no_evict(struct dedup *d, const uint8_t key[HASH_LEN], int64_t expiry)
{
	uint8_t evicted[HASH_LEN];
	bool did_evict = true;

	dedup_insert(d, key, expiry, evicted, &did_evict);
	assert_false(did_evict);
}

static void test_new_bounds(void **state)
{
	struct dedup *d;

	(void)state;
	assert_null(dedup_new(0));
	assert_null(dedup_new((size_t)UINT32_MAX / 4 + 1));
	d = dedup_new(1);
	assert_non_null(d);
	assert_uint_equal(dedup_count(d), 0);
	dedup_free(d);
	dedup_free(NULL);
}

static void test_seen_and_expiry(void **state)
{
	struct dedup *d = dedup_new(100);
	uint8_t a[HASH_LEN], b[HASH_LEN], c[HASH_LEN], out[HASH_LEN];

	(void)state;
	assert_non_null(d);
	key_n(a, 1);
	key_n(b, 2);
	key_n(c, 3);
	assert_false(dedup_seen(d, a, 0));
	assert_false(dedup_seen(d, a, INT64_MIN));

	insert_no_evict(d, a, 1000);
	insert_no_evict(d, b, 2000);
	assert_uint_equal(dedup_count(d), 2);
	/* Seen while now <= expiry; no longer once now is past it. */
	assert_true(dedup_seen(d, a, INT64_MIN));
	assert_true(dedup_seen(d, a, 999));
	assert_true(dedup_seen(d, a, 1000));
	assert_false(dedup_seen(d, a, 1001));
	assert_true(dedup_seen(d, b, 1001));
	assert_true(dedup_seen(d, b, 2000));
	assert_false(dedup_seen(d, b, 2001));
	assert_false(dedup_seen(d, c, 0));
	/* A key differing in its last byte only is another key. */
	memcpy(c, a, HASH_LEN);
	c[HASH_LEN - 1] ^= 1;
	assert_false(dedup_seen(d, c, 0));
	c[HASH_LEN - 1] ^= 1;
	c[0] ^= 1;
	assert_false(dedup_seen(d, c, 0));

	/* The sweep: nothing has ended at 1000; a has at 1001. */
	assert_false(dedup_pop_expired(d, 1000, out));
	assert_uint_equal(dedup_count(d), 2);
	assert_true(dedup_pop_expired(d, 1001, out));
	assert_memory_equal(out, a, HASH_LEN);
	assert_uint_equal(dedup_count(d), 1);
	assert_false(dedup_seen(d, a, INT64_MIN));
	assert_false(dedup_pop_expired(d, 2000, out));
	assert_true(dedup_pop_expired(d, INT64_MAX, out));
	assert_memory_equal(out, b, HASH_LEN);
	assert_uint_equal(dedup_count(d), 0);
	assert_false(dedup_pop_expired(d, INT64_MAX, out));

	/* Extreme expiries. */
	insert_no_evict(d, a, INT64_MAX);
	assert_true(dedup_seen(d, a, INT64_MAX));
	assert_false(dedup_pop_expired(d, INT64_MAX, out));
	insert_no_evict(d, b, INT64_MIN + 1);
	assert_true(dedup_seen(d, b, INT64_MIN + 1));
	assert_false(dedup_seen(d, b, INT64_MIN + 2));
	dedup_free(d);
}

/* Inserting a known key gives it the new expiry, in place: no new entry,
 * no eviction, and its place in the arrival order is kept. */
static void test_refresh(void **state)
{
	struct dedup *d = dedup_new(3);
	uint8_t a[HASH_LEN], b[HASH_LEN], c[HASH_LEN], e[HASH_LEN], out[HASH_LEN];
	bool did_evict;

	(void)state;
	assert_non_null(d);
	key_n(a, 10);
	key_n(b, 11);
	key_n(c, 12);
	key_n(e, 13);
	insert_no_evict(d, a, 100);
	insert_no_evict(d, b, 100);
	assert_false(dedup_seen(d, a, 150));

	/* Refresh of an entry that has ended. */
	insert_no_evict(d, a, 200);
	assert_uint_equal(dedup_count(d), 2);
	assert_true(dedup_seen(d, a, 150));
	assert_true(dedup_seen(d, a, 200));
	assert_false(dedup_seen(d, a, 201));
	/* Its window now ends later: the sweep stops at it, though b behind it
	 * has ended. */
	assert_false(dedup_pop_expired(d, 150, out));
	assert_uint_equal(dedup_count(d), 2);

	/* A refresh may also shorten the window. */
	insert_no_evict(d, a, 50);
	assert_false(dedup_seen(d, a, 51));
	assert_true(dedup_pop_expired(d, 150, out));
	assert_memory_equal(out, a, HASH_LEN);

	/* Full (b, c, e): refreshing b evicts nothing and b stays the oldest. */
	insert_no_evict(d, c, 300);
	insert_no_evict(d, e, 300);
	assert_uint_equal(dedup_count(d), 3);
	insert_no_evict(d, b, 400);
	assert_uint_equal(dedup_count(d), 3);
	dedup_insert(d, a, 500, out, &did_evict);
	assert_true(did_evict);
	assert_memory_equal(out, b, HASH_LEN);
	assert_false(dedup_seen(d, b, 0));
	dedup_free(d);
}

static void test_eviction_order(void **state)
{
	enum { CAP = 8 };
	struct dedup *d = dedup_new(CAP);
	uint8_t k[3 * CAP][HASH_LEN], out[HASH_LEN];
	bool did_evict;

	(void)state;
	assert_non_null(d);
	for(uint32_t i = 0; i < 3 * CAP; i++){
		key_n(k[i], 100 + i);
	}
	for(uint32_t i = 0; i < CAP; i++){
		insert_no_evict(d, k[i], 1000 + i);
	}
	assert_uint_equal(dedup_count(d), CAP);
	/* Each new key evicts the oldest, and reports it. */
	for(uint32_t i = CAP; i < 3 * CAP; i++){
		memset(out, 0, sizeof(out));
		did_evict = false;
		dedup_insert(d, k[i], 1000 + i, out, &did_evict);
		assert_true(did_evict);
		assert_memory_equal(out, k[i - CAP], HASH_LEN);
		assert_uint_equal(dedup_count(d), CAP);
		assert_false(dedup_seen(d, k[i - CAP], 0));
		assert_true(dedup_seen(d, k[i], 0));
		for(uint32_t j = i - CAP + 1; j <= i; j++){
			assert_true(dedup_seen(d, k[j], 0));
		}
	}
	/* The sweep also goes oldest first. */
	for(uint32_t i = 2 * CAP; i < 3 * CAP; i++){
		assert_true(dedup_pop_expired(d, INT64_MAX, out));
		assert_memory_equal(out, k[i], HASH_LEN);
	}
	assert_uint_equal(dedup_count(d), 0);

	/* Capacity one. */
	dedup_free(d);
	d = dedup_new(1);
	assert_non_null(d);
	insert_no_evict(d, k[0], 5);
	dedup_insert(d, k[1], 5, out, &did_evict);
	assert_true(did_evict);
	assert_memory_equal(out, k[0], HASH_LEN);
	insert_no_evict(d, k[1], 6);
	assert_true(dedup_seen(d, k[1], 6));
	assert_false(dedup_seen(d, k[0], 0));
	dedup_free(d);
}

static void test_forget(void **state)
{
	struct dedup *d = dedup_new(4);
	uint8_t a[HASH_LEN], b[HASH_LEN], c[HASH_LEN], e[HASH_LEN], out[HASH_LEN];
	bool did_evict;

	(void)state;
	assert_non_null(d);
	key_n(a, 20);
	key_n(b, 21);
	key_n(c, 22);
	assert_false(dedup_forget(d, a));
	insert_no_evict(d, a, 100);
	insert_no_evict(d, b, 100);
	assert_true(dedup_forget(d, a));
	assert_false(dedup_seen(d, a, INT64_MIN));
	assert_false(dedup_forget(d, a));
	assert_true(dedup_seen(d, b, 0));
	/* Its ring place stays until the sweep takes it. */
	assert_uint_equal(dedup_count(d), 2);

	/* Back again: seen, with its new window. */
	insert_no_evict(d, a, 300);
	assert_uint_equal(dedup_count(d), 3);
	assert_true(dedup_seen(d, a, 300));
	assert_false(dedup_seen(d, a, 301));

	/* The sweep takes the forgotten place (it has ended for any now) and
	 * leaves the key's new entry in the index. */
	while(dedup_pop_expired(d, INT64_MIN + 1, out)){
	}
	assert_uint_equal(dedup_count(d), 2);
	assert_true(dedup_seen(d, a, 300));
	assert_true(dedup_seen(d, b, 100));
	assert_false(dedup_pop_expired(d, 100, out));

	/* Forgotten, and its place at the head of a full ring when a new key
	 * comes: the key's new entry stays. */
	insert_no_evict(d, c, 400);                /* b, a, c */
	assert_true(dedup_forget(d, b));
	insert_no_evict(d, b, 500);                /* b(forgotten), a, c, b */
	assert_uint_equal(dedup_count(d), 4);
	dedup_insert(d, c, 600, out, &did_evict);  /* a refresh: nothing evicted */
	assert_false(did_evict);
	key_n(e, 23);
	dedup_insert(d, e, 700, out, &did_evict);
	assert_uint_equal(dedup_count(d), 4);
	assert_true(dedup_seen(d, b, 500));
	assert_true(dedup_seen(d, a, 300));
	assert_true(dedup_seen(d, c, 600));
	assert_true(dedup_seen(d, e, 700));

	/* Forget everything: nothing seen, the sweep empties the ring. */
	assert_true(dedup_forget(d, a));
	assert_true(dedup_forget(d, b));
	assert_true(dedup_forget(d, c));
	assert_true(dedup_forget(d, e));
	assert_false(dedup_seen(d, a, INT64_MIN));
	assert_false(dedup_seen(d, b, INT64_MIN));
	assert_false(dedup_seen(d, c, INT64_MIN));
	assert_false(dedup_seen(d, e, INT64_MIN));
	while(dedup_pop_expired(d, INT64_MIN + 1, out)){
	}
	assert_false(dedup_pop_expired(d, INT64_MAX, out));
	assert_uint_equal(dedup_count(d), 0);
	dedup_free(d);
}

/* The sweep takes entries oldest first, and stops at the first one whose
 * window has not ended, even when later ones have. */
static void test_pop_expired_order_and_bound(void **state)
{
	struct dedup *d = dedup_new(16);
	uint8_t k[6][HASH_LEN], out[HASH_LEN];
	static const int64_t exp[6] = {10, 30, 20, 50, 5, 40};

	(void)state;
	assert_non_null(d);
	for(uint32_t i = 0; i < 6; i++){
		key_n(k[i], 40 + i);
		insert_no_evict(d, k[i], exp[i]);
	}
	assert_false(dedup_pop_expired(d, 10, out));
	assert_true(dedup_pop_expired(d, 11, out));
	assert_memory_equal(out, k[0], HASH_LEN);
	/* k[1] (30) blocks k[2] (20) at now 25. */
	assert_false(dedup_pop_expired(d, 25, out));
	assert_true(dedup_seen(d, k[1], 25));
	assert_false(dedup_seen(d, k[2], 25));
	assert_uint_equal(dedup_count(d), 5);
	assert_true(dedup_pop_expired(d, 31, out));
	assert_memory_equal(out, k[1], HASH_LEN);
	assert_true(dedup_pop_expired(d, 31, out));
	assert_memory_equal(out, k[2], HASH_LEN);
	assert_false(dedup_pop_expired(d, 31, out));
	assert_true(dedup_pop_expired(d, 51, out));
	assert_memory_equal(out, k[3], HASH_LEN);
	assert_true(dedup_pop_expired(d, 51, out));
	assert_memory_equal(out, k[4], HASH_LEN);
	assert_true(dedup_pop_expired(d, 51, out));
	assert_memory_equal(out, k[5], HASH_LEN);
	assert_false(dedup_pop_expired(d, 51, out));
	assert_uint_equal(dedup_count(d), 0);

	/* The ring wraps: fill, sweep part, fill again (past the ring's end),
	 * sweep all: always in arrival order. */
	for(uint32_t round = 0; round < 5; round++){
		uint8_t key[HASH_LEN];
		const int64_t t0 = 100 * (int64_t)round;
		for(uint32_t i = 0; i < 16; i++){
			key_n(key, 1000 * round + i);
			insert_no_evict(d, key, t0 + i);
		}
		for(uint32_t i = 0; i < 7; i++){
			key_n(key, 1000 * round + i);
			assert_true(dedup_pop_expired(d, t0 + 7, out));
			assert_memory_equal(out, key, HASH_LEN);
		}
		assert_false(dedup_pop_expired(d, t0 + 7, out));
		assert_uint_equal(dedup_count(d), 9);
		for(uint32_t i = 16; i < 23; i++){
			key_n(key, 1000 * round + i);
			insert_no_evict(d, key, t0 + i);
		}
		assert_uint_equal(dedup_count(d), 16);
		for(uint32_t i = 7; i < 23; i++){
			key_n(key, 1000 * round + i);
			assert_true(dedup_seen(d, key, t0 + i));
			assert_true(dedup_pop_expired(d, t0 + 23, out));
			assert_memory_equal(out, key, HASH_LEN);
		}
		assert_uint_equal(dedup_count(d), 0);
	}
	dedup_free(d);
}

/* Keys whose table hashes coincide, or sit at both ends of the table, probe
 * past each other: forgetting and evicting in the middle of such a run must
 * keep every other key findable (backward-shift deletion). */
static void test_colliding_keys(void **state)
{
	enum { CAP = 8 }; /* a table of 16 slots */
	struct dedup *d = dedup_new(CAP);
	uint8_t k[CAP][HASH_LEN], out[HASH_LEN];
	static const uint64_t homes[CAP] = {15, 15, 0, 14, 15, 0, 1, 14};

	(void)state;
	assert_non_null(d);
	for(uint32_t i = 0; i < CAP; i++){
		key_make(k[i], homes[i] + 16 * (i + 1), i);
		insert_no_evict(d, k[i], 100);
	}
	for(uint32_t drop = 0; drop < CAP; drop++){
		assert_true(dedup_forget(d, k[drop]));
		for(uint32_t i = 0; i < CAP; i++){
			if(dedup_seen(d, k[i], 0) != (i > drop)){
				fail_msg("after forgetting %u of %u, key %u is %s", drop, CAP, i,
						i > drop ? "lost" : "still seen");
			}
		}
	}
	assert_uint_equal(dedup_count(d), CAP);
	/* Back in reverse order, into a ring of forgotten places. */
	for(uint32_t i = CAP; i-- > 0;){
		bool did_evict;
		dedup_insert(d, k[i], 200 + i, out, &did_evict);
		for(uint32_t j = 0; j < CAP; j++){
			if(dedup_seen(d, k[j], 0) != (j >= i)){
				fail_msg("after re-inserting %u, key %u is %s", i, j, j >= i ? "lost" : "seen");
			}
		}
	}
	assert_uint_equal(dedup_count(d), CAP);
	for(uint32_t i = CAP; i-- > 0;){
		assert_true(dedup_pop_expired(d, INT64_MAX, out));
		assert_memory_equal(out, k[i], HASH_LEN);
		for(uint32_t j = 0; j < CAP; j++){
			assert_int_equal(dedup_seen(d, k[j], 0), j < i);
		}
	}
	assert_uint_equal(dedup_count(d), 0);
	dedup_free(d);
}

/* ---- differential run against a model ---- */

struct mentry {
	uint8_t key[HASH_LEN];
	int64_t expiry;
	bool live; /* false: forgotten, its place waits for the sweep */
};

struct model {
	struct mentry *v; /* arrival order, oldest first */
	size_t n, cap;
};

static struct mentry *model_find(struct model *m, const uint8_t *key)
{
	for(size_t i = 0; i < m->n; i++){
		if(m->v[i].live && !memcmp(m->v[i].key, key, HASH_LEN)){
			return &m->v[i];
		}
	}
	return NULL;
}

static bool model_seen(struct model *m, const uint8_t *key, int64_t now)
{
	struct mentry *e = model_find(m, key);
	return e && e->expiry >= now;
}

static void model_pop(struct model *m, uint8_t *key)
{
	memcpy(key, m->v[0].key, HASH_LEN);
	memmove(m->v, m->v + 1, (m->n - 1) * sizeof(*m->v));
	m->n--;
}

/* Forgotten entries at the head leave without a report. */
static void model_drop_forgotten(struct model *m)
{
	uint8_t scratch[HASH_LEN];

	while(m->n && !m->v[0].live){
		model_pop(m, scratch);
	}
}

static bool model_insert(struct model *m, const uint8_t *key, int64_t expiry, uint8_t *evicted)
{
	struct mentry *e = model_find(m, key);
	bool ev = false;

	if(e){
		e->expiry = expiry;
		return false;
	}
	if(m->n == m->cap){
		model_drop_forgotten(m);
	}
	if(m->n == m->cap){
		model_pop(m, evicted);
		ev = true;
	}
	memcpy(m->v[m->n].key, key, HASH_LEN);
	m->v[m->n].expiry = expiry;
	m->v[m->n].live = true;
	m->n++;
	return ev;
}

static bool model_forget(struct model *m, const uint8_t *key)
{
	struct mentry *e = model_find(m, key);

	if(!e){
		return false;
	}
	e->live = false;
	e->expiry = INT64_MIN;
	return true;
}

static bool model_pop_expired(struct model *m, int64_t now, uint8_t *key)
{
	model_drop_forgotten(m);
	if(!m->n || m->v[0].expiry >= now){
		return false;
	}
	model_pop(m, key);
	return true;
}

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The table of dedup_new(cap) has the smallest power of two >= 2 * cap
 * (and >= 16) slots; the keys' hashes take only a few values modulo it,
 * clustered at both ends of the table so probe runs wrap around. */
static void differential(uint64_t seed, size_t cap, size_t nkeys, size_t ops, size_t check_every)
{
	struct dedup *d = dedup_new(cap);
	struct model m = {calloc(cap, sizeof(struct mentry)), 0, cap};
	uint8_t (*keys)[HASH_LEN] = calloc(nkeys, HASH_LEN);
	size_t slots = 16;
	uint64_t rng = seed;
	int64_t now = 1000;

	assert_non_null(d);
	assert_non_null(m.v);
	assert_non_null(keys);
	while(slots < 2 * cap){
		slots *= 2;
	}
	const uint64_t homes[] = {0, 1, 2, 3, slots - 3, slots - 2, slots - 1, slots / 2};
	for(size_t i = 0; i < nkeys; i++){
		uint64_t hi = rng_next(&rng) % 5;  /* also collide above the mask */
		key_make(keys[i], homes[rng_next(&rng) % 8] + slots * hi, (uint32_t)i);
	}

	for(size_t op = 0; op < ops; op++){
		uint64_t r = rng_next(&rng);
		const uint8_t *key = keys[(r >> 8) % nkeys];
		uint8_t got[HASH_LEN], want[HASH_LEN];
		bool g, w;

		switch(r % 16){
			case 0: case 1: case 2: case 3: case 4: case 5: {
				int64_t expiry = now + (int64_t)((r >> 40) % 40) - 5;
				g = false;
				dedup_insert(d, key, expiry, got, &g);
				w = model_insert(&m, key, expiry, want);
				if(g != w || (g && memcmp(got, want, HASH_LEN))){
					fail_msg("seed %llu op %zu: insert evicted %d, model %d",
							(unsigned long long)seed, op, g, w);
				}
				break;
			}
			case 6: case 7: case 8:
				g = dedup_forget(d, key);
				w = model_forget(&m, key);
				if(g != w){
					fail_msg("seed %llu op %zu: forget %d, model %d", (unsigned long long)seed, op, g, w);
				}
				break;
			case 9: case 10: case 11: case 12: {
				int64_t at = now + (int64_t)((r >> 40) % 30) - 15;
				g = dedup_seen(d, key, at);
				w = model_seen(&m, key, at);
				if(g != w){
					fail_msg("seed %llu op %zu: seen %d, model %d", (unsigned long long)seed, op, g, w);
				}
				break;
			}
			case 13: case 14:
				g = dedup_pop_expired(d, now, got);
				w = model_pop_expired(&m, now, want);
				if(g != w || (g && memcmp(got, want, HASH_LEN))){
					fail_msg("seed %llu op %zu: pop_expired %d, model %d",
							(unsigned long long)seed, op, g, w);
				}
				break;
			case 15:
				now += (int64_t)((r >> 40) % 3);
				break;
		}
		if(dedup_count(d) != m.n){
			fail_msg("seed %llu op %zu: count %zu, model %zu", (unsigned long long)seed, op,
					dedup_count(d), m.n);
		}
		/* Now and then every key, live or not, is looked up. */
		if(op % check_every == 0){
			for(size_t i = 0; i < nkeys; i++){
				if(dedup_seen(d, keys[i], INT64_MIN) != model_seen(&m, keys[i], INT64_MIN)
						|| dedup_seen(d, keys[i], now) != model_seen(&m, keys[i], now)){
					fail_msg("seed %llu op %zu: key %zu answers differently", (unsigned long long)seed,
							op, i);
				}
			}
		}
	}
	/* Drain: the sweep gives the model's order. */
	for(;;){
		uint8_t got[HASH_LEN], want[HASH_LEN];
		bool g = dedup_pop_expired(d, INT64_MAX, got);
		bool w = model_pop_expired(&m, INT64_MAX, want);
		assert_int_equal(g, w);
		if(!g){
			break;
		}
		assert_memory_equal(got, want, HASH_LEN);
	}
	assert_uint_equal(m.n, 0);
	assert_uint_equal(dedup_count(d), 0);
	free(keys);
	free(m.v);
	dedup_free(d);
}

static void test_differential_small(void **state)
{
	(void)state;
	/* 64 places, 128 slots; 300 keys on 8 hashes: heavy eviction. */
	differential(1, 64, 300, 100000, 499);
	/* 8 places, 16 slots: the table always nearly half full of one run. */
	differential(2, 8, 40, 20000, 97);
}

static void test_differential_large(void **state)
{
	(void)state;
	/* 1000 places, 2048 slots; 700 keys: long runs, rare eviction. */
	differential(3, 1000, 700, 80000, 4999);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_bounds),
		cmocka_unit_test(test_seen_and_expiry),
		cmocka_unit_test(test_refresh),
		cmocka_unit_test(test_eviction_order),
		cmocka_unit_test(test_forget),
		cmocka_unit_test(test_pop_expired_order_and_bound),
		cmocka_unit_test(test_colliding_keys),
		cmocka_unit_test(test_differential_small),
		cmocka_unit_test(test_differential_large),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
