/* array_grow: the growable arrays of the engine and the plugin. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "array.h"

struct pair {
	uint64_t a;
	uint32_t b;
};

/* Doubling from first, room kept until the count reaches the capacity, the
 * elements kept across each growth. */
static void test_grows_by_doubling(void **state)
{
	struct pair *v = NULL;
	size_t n = 0, cap = 0;

	(void)state;
	for(uint32_t i = 0; i < 1000; i++){
		assert_int_equal(ARRAY_GROW(v, n, cap, 8), 0);
		assert_true(cap > n);
		v[n++] = (struct pair){(uint64_t)i << 32, i};
		if(i == 0){
			assert_int_equal(cap, 8);
		}
	}
	assert_int_equal(cap, 1024);
	for(uint32_t i = 0; i < 1000; i++){
		assert_true(v[i].a == (uint64_t)i << 32 && v[i].b == i);
	}
	/* Below the capacity nothing moves. */
	{
		struct pair *before = v;
		size_t cap_before = cap;

		assert_int_equal(ARRAY_GROW(v, 500, cap, 8), 0);
		assert_ptr_equal(v, before);
		assert_int_equal(cap, cap_before);
	}
	free(v);
}

/* A size that overflows is refused and leaves the array as it was. */
static void test_overflow_refused(void **state)
{
	char *v = malloc(4);
	size_t cap = (SIZE_MAX / 2) + 1;
	char *before = v;

	(void)state;
	assert_non_null(v);
	assert_int_equal(array_grow(&v, &cap, cap, 1, 8), -1);
	assert_ptr_equal(v, before);
	assert_int_equal(cap, (SIZE_MAX / 2) + 1);
	cap = 4;
	assert_int_equal(array_grow(&v, &cap, 4, SIZE_MAX / 4, 8), -1);
	assert_int_equal(cap, 4);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grows_by_doubling),
		cmocka_unit_test(test_overflow_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
