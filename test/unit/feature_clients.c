/* clients.c: the per-client records the features keep (retention, backlog,
 * sequence numbers), by client id. */
#include "feature_util.h"

struct rec {
	char *clientid;   /* first, owned by the record */
	int value;
};

static int freed;

static void rec_free(void *r)
{
	struct rec *x = r;

	free(x->clientid);
	free(x);
	freed++;
}

/* Records are found by id after the table grows, a taken one is gone and
 * the others stay findable around the hole, and freeing the table frees
 * every record left. */
static void test_add_find_take(void **state)
{
	struct client_table t = {0};
	char id[32];

	(void)state;
	freed = 0;
	for(int i = 0; i < 3000; i++){
		snprintf(id, sizeof(id), "client-%d", i);
		struct rec *r = client_get_or_add(&t, id, sizeof(*r));
		assert_non_null(r);
		assert_string_equal(r->clientid, id);
		assert_int_equal(r->value, 0);
		r->value = i;
	}
	assert_int_equal(t.count, 3000);
	/* Present: the same record, not a new one. */
	assert_int_equal(((struct rec *)client_get_or_add(&t, "client-7", sizeof(struct rec)))->value, 7);
	assert_int_equal(t.count, 3000);
	for(int i = 0; i < 3000; i += 3){
		snprintf(id, sizeof(id), "client-%d", i);
		struct rec *r = client_take(&t, id);
		assert_non_null(r);
		assert_int_equal(r->value, i);
		rec_free(r);
	}
	for(int i = 0; i < 3000; i++){
		snprintf(id, sizeof(id), "client-%d", i);
		struct rec *r = client_find(&t, id);
		if(i % 3 == 0){
			assert_null(r);
		}else{
			assert_non_null(r);
			assert_int_equal(r->value, i);
		}
	}
	assert_null(client_take(&t, "nobody"));
	assert_null(client_find(&t, ""));
	freed = 0;
	client_table_free(&t, rec_free);
	assert_int_equal(freed, 2000);
	assert_null(client_find(&t, "client-1"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_find_take),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
