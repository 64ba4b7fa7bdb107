/* idset: the set of store ids (the bodies the broker holds in disk mode). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "idset.h"

/* Ids that share low bits and collide in the table, added, found, removed
 * in an order that leaves holes in runs: every id is found exactly while it
 * is in the set, against a plain array as the model. */
static void test_against_a_model(void **state)
{
	enum { N = 5000 };
	struct idset s = {0};
	bool *in = calloc(N + 1, sizeof(*in));
	uint64_t seed = 42;

	(void)state;
	assert_non_null(in);
	assert_false(idset_has(&s, 7));
	assert_false(idset_remove(&s, 7));
	for(int round = 0; round < 200000; round++){
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t k = (seed >> 33) % N + 1;
		uint64_t id = k << 40 | 0x1234;   /* same low bits for all */
		if((seed >> 20) & 1){
			assert_int_equal(idset_add(&s, id), 0);
			in[k] = true;
		}else{
			assert_int_equal(idset_remove(&s, id), in[k]);
			in[k] = false;
		}
	}
	size_t n = 0;
	for(uint64_t k = 1; k <= N; k++){
		assert_int_equal(idset_has(&s, k << 40 | 0x1234), in[k]);
		n += in[k];
	}
	assert_int_equal(s.n, n);
	assert_true(s.cap >= 2 * s.n);
	assert_false(idset_has(&s, 0));
	idset_free(&s);
	assert_null(s.slots);
	assert_int_equal(s.cap, 0);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_against_a_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
