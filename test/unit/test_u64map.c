/* u64map: maps and sets of store ids (the write buffer's new bodies, the
 * bodies the broker holds in disk mode). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "u64map.h"

/* A value as the retention limits keep one per body. */
struct body {
	uint32_t bytes;
	int64_t expiry;
	bool held;
};

static struct body body_of(uint64_t key, int round)
{
	return (struct body){(uint32_t)key, (int64_t)round, round & 1};
}

static void assert_body(const struct body *b, struct body want)
{
	assert_non_null(b);
	assert_int_equal(b->bytes, want.bytes);
	assert_int_equal(b->expiry, want.expiry);
	assert_int_equal(b->held, want.held);
}

/* Keys that share their low bits collide in the table: added, found and
 * removed in an order that leaves holes in runs, every key is found exactly
 * while it is in m, with the value last given, against a plain array as the
 * model. The table grows on the way. */
static void against_a_model(struct u64map *m)
{
	enum { N = 5000 };
	bool *in = calloc(N + 1, sizeof(*in));
	struct body *want = calloc(N + 1, sizeof(*want));
	uint64_t seed = 42;
	size_t caps = 0, last_cap = 0;

	assert_non_null(in);
	assert_non_null(want);
	assert_null(u64map_get(m, 7));
	assert_false(u64map_remove(m, 7));
	for(int round = 0; round < 200000; round++){
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t k = (seed >> 33) % N + 1;
		uint64_t key = k << 40 | 0x1234;
		if((seed >> 20) & 1){
			struct body *b = u64map_add(m, key);
			assert_non_null(b);
			if(m->value_size){
				if(!in[k]){
					assert_body(b, (struct body){0});
				}
				*b = want[k] = body_of(key, round);
			}
			in[k] = true;
		}else{
			assert_int_equal(u64map_remove(m, key), in[k]);
			in[k] = false;
		}
		if(m->cap != last_cap){
			caps++;
			last_cap = m->cap;
		}
	}
	size_t n = 0;
	for(uint64_t k = 1; k <= N; k++){
		void *v = u64map_get(m, k << 40 | 0x1234);
		assert_int_equal(v != NULL, in[k]);
		if(in[k] && m->value_size){
			assert_body(v, want[k]);
		}
		n += in[k];
	}
	assert_true(caps > 1);
	assert_int_equal(u64map_count(m), n);
	assert_int_equal(m->cap & (m->cap - 1), 0);
	assert_true(m->cap >= 2 * n);
	assert_null(u64map_get(m, 0));
	free(want);
	free(in);
}

static void test_set(void **state)
{
	struct u64map s = {0};

	(void)state;
	against_a_model(&s);
	u64map_free(&s);
	assert_null(s.keys);
	assert_int_equal(s.cap, 0);
	assert_int_equal(u64map_count(&s), 0);
}

static void test_map(void **state)
{
	struct u64map m;

	(void)state;
	u64map_init(&m, sizeof(struct body));
	against_a_model(&m);
	u64map_free(&m);
	assert_null(m.keys);
	assert_int_equal(m.value_size, sizeof(struct body));
	/* Freed, it is still a map of the same values. */
	assert_non_null(u64map_add(&m, 1));
	u64map_free(&m);
}

/* A key whose probe starts at slot i of m's table (m empty, allocated). */
static uint64_t key_at(struct u64map *m, size_t i, uint64_t *from)
{
	for(uint64_t key = *from;; key++){
		assert_non_null(u64map_add(m, key));
		bool there = m->keys[i] == key;
		assert_true(u64map_remove(m, key));
		if(there){
			*from = key + 1;
			return key;
		}
	}
}

/* A run that wraps from the last slot to the first: removing its head
 * moves back every key that would be lost past the hole, and only those. */
static void test_remove_across_the_wrap(void **state)
{
	struct u64map m;
	uint64_t from = 1;

	(void)state;
	u64map_init(&m, sizeof(struct body));
	assert_non_null(u64map_add(&m, 1));
	assert_true(u64map_remove(&m, 1));
	size_t last = m.cap - 1;
	uint64_t a = key_at(&m, last, &from), b = key_at(&m, last, &from), c = key_at(&m, last, &from);
	uint64_t d = key_at(&m, 0, &from), f = key_at(&m, 2, &from), e = key_at(&m, 4, &from);
	uint64_t keys[] = {a, b, c, d, f, e};
	for(size_t i = 0; i < 6; i++){
		struct body *v = u64map_add(&m, keys[i]);
		assert_non_null(v);
		*v = body_of(keys[i], (int)i);
	}
	/* a, b, c, d, f, e in slots last, 0, 1, 2, 3, 4 */
	assert_int_equal(m.keys[last], a);
	assert_int_equal(m.keys[2], d);
	assert_int_equal(m.keys[3], f);
	assert_int_equal(m.keys[4], e);

	assert_true(u64map_remove(&m, a));
	assert_null(u64map_get(&m, a));
	assert_int_equal(m.keys[last], b);
	assert_int_equal(m.keys[0], c);
	assert_int_equal(m.keys[1], d);
	assert_int_equal(m.keys[2], f);
	assert_int_equal(m.keys[3], 0);
	assert_int_equal(m.keys[4], e);   /* at its own slot: stays */
	for(size_t i = 1; i < 6; i++){
		assert_body(u64map_get(&m, keys[i]), body_of(keys[i], (int)i));
	}

	/* A hole in the middle of the wrapped part. */
	assert_true(u64map_remove(&m, c));
	assert_int_equal(m.keys[0], d);
	assert_int_equal(m.keys[1], 0);
	assert_int_equal(m.keys[2], f);   /* at its own slot: stays */
	assert_body(u64map_get(&m, b), body_of(b, 1));
	assert_body(u64map_get(&m, d), body_of(d, 3));
	assert_int_equal(u64map_count(&m), 4);
	u64map_free(&m);
}

static void test_add_keeps_a_present_value(void **state)
{
	struct u64map m;

	(void)state;
	u64map_init(&m, sizeof(struct body));
	assert_null(u64map_add(&m, 0));
	assert_int_equal(u64map_count(&m), 0);
	struct body *v = u64map_add(&m, 99);
	assert_non_null(v);
	*v = body_of(99, 5);
	assert_ptr_equal(u64map_add(&m, 99), v);
	assert_body(v, body_of(99, 5));
	assert_int_equal(u64map_count(&m), 1);
	assert_false(u64map_remove(&m, 0));
	u64map_free(&m);
}

/* Every key once, with its value; filtering into a new map keeps the kept. */
static void test_next_and_filter(void **state)
{
	enum { N = 3000 };
	struct u64map m, kept;
	uint64_t key;
	struct body *v;
	size_t seen = 0;
	bool *met = calloc(N + 1, sizeof(*met));

	(void)state;
	assert_non_null(met);
	u64map_init(&m, sizeof(struct body));
	size_t c = 0;
	assert_null(u64map_next(&m, &c, &key));
	for(uint64_t k = 1; k <= N; k++){
		v = u64map_add(&m, k * 7919);
		assert_non_null(v);
		*v = body_of(k * 7919, (int)k);
	}
	u64map_init(&kept, sizeof(struct body));
	for(c = 0; (v = u64map_next(&m, &c, &key));){
		assert_int_equal(key % 7919, 0);
		assert_false(met[key / 7919]);
		met[key / 7919] = true;
		assert_body(v, body_of(key, (int)(key / 7919)));
		seen++;
		if(v->held){
			struct body *w = u64map_add(&kept, key);
			assert_non_null(w);
			*w = *v;
		}
	}
	assert_int_equal(seen, N);
	assert_null(u64map_next(&m, &c, NULL));
	u64map_free(&m);
	m = kept;
	assert_int_equal(u64map_count(&m), (N + 1) / 2);
	for(uint64_t k = 1; k <= N; k++){
		v = u64map_get(&m, k * 7919);
		assert_int_equal(v != NULL, k & 1);
		if(v){
			assert_body(v, body_of(k * 7919, (int)k));
		}
	}
	u64map_free(&m);
	free(met);
}

/* A clear keeps the slots the keys fill; far more, left by a peak, it frees. */
static void test_clear(void **state)
{
	struct u64map s = {0};

	(void)state;
	u64map_clear(&s);
	for(uint64_t k = 1; k <= 100; k++){
		assert_non_null(u64map_add(&s, k));
	}
	size_t cap = s.cap;
	u64map_clear(&s);
	assert_int_equal(u64map_count(&s), 0);
	assert_int_equal(s.cap, cap);
	for(uint64_t k = 1; k <= 100; k++){
		assert_null(u64map_get(&s, k));
	}

	for(uint64_t k = 1; k <= 10000; k++){
		assert_non_null(u64map_add(&s, k));
	}
	cap = s.cap;
	u64map_clear(&s);
	assert_int_equal(s.cap, cap);   /* as full as a grown table is: kept */
	for(uint64_t k = 1; k <= 10; k++){
		assert_non_null(u64map_add(&s, k));
	}
	u64map_clear(&s);
	assert_int_equal(s.cap, 0);
	assert_null(s.keys);
	assert_null(u64map_get(&s, 1));
	assert_non_null(u64map_add(&s, 1));
	assert_non_null(u64map_get(&s, 1));
	u64map_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set),
		cmocka_unit_test(test_map),
		cmocka_unit_test(test_remove_across_the_wrap),
		cmocka_unit_test(test_add_keeps_a_present_value),
		cmocka_unit_test(test_next_and_filter),
		cmocka_unit_test(test_clear),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
