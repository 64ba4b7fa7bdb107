/* wills.c without a broker: the rules for the wills the broker publishes
 * unannounced. The broker functions the module reaches are the test's own
 * (the plugin refers to them weakly); the store is a real one. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "feature_util.h"

/* The broker's log, as the plugin reaches it. */
struct fx {
	struct fstore fs;
	struct plugin pl;
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if(!fx || fstore_open(&fx->fs, &fx->pl.store)){
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	pending_wills_free(&fx->pl);
	store_close(fx->pl.store);
	fstore_remove(&fx->fs);
	free(fx);
	return 0;
}

static int count_will(void *ctx, const struct rec_will *w)
{
	(void)w;
	(*(int *)ctx)++;
	return 0;
}

static int stored_wills(struct plugin *pl, const char *clientid)
{
	int n = 0;

	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_walk_wills(pl->store, clientid, count_will, &n), STORE_OK);
	return n;
}

static void put_will(struct plugin *pl, const char *clientid)
{
	struct rec_will w = {.clientid = clientid, .topic = "will/t", .payload = {(const uint8_t *)"x", 1}, .qos = 1};

	assert_int_equal(store_will_put(pl->store, &w), STORE_OK);
}

/* A delayed will is the client's will being published once its deadline
 * passed, and its record goes at the third tick that sees the deadline (the
 * broker publishes it within two loop iterations of it), not before. */
static void test_delayed_will_ends_at_the_third_tick(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	time_t now = time(NULL);

	put_will(pl, "dev-1");
	put_will(pl, "dev-2");
	will_delay_track(pl, "dev-1", now - 1);
	will_delay_track(pl, "dev-2", now + 3600);
	assert_true(will_publishing(pl, "dev-1"));
	assert_false(will_publishing(pl, "dev-2"));
	assert_false(will_publishing(pl, NULL));

	pending_wills_expire(pl, now);
	pending_wills_expire(pl, now);
	assert_int_equal(stored_wills(pl, "dev-1"), 1);
	pending_wills_expire(pl, now);
	assert_int_equal(stored_wills(pl, "dev-1"), 0);
	assert_false(will_publishing(pl, "dev-1"));
	/* The other's delay runs on. */
	assert_int_equal(stored_wills(pl, "dev-2"), 1);
	assert_int_equal(pl->n_pending_wills, 1);
}

/* Tracking a client's delay again replaces the first: one entry, the new
 * deadline. */
static void test_delay_tracked_again_replaces(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	time_t now = time(NULL);

	will_delay_track(pl, "dev-1", now - 10);
	will_delay_track(pl, "dev-1", now + 3600);
	assert_int_equal(pl->n_pending_wills, 1);
	assert_false(will_publishing(pl, "dev-1"));
	for(int i = 0; i < 5; i++){
		pending_wills_expire(pl, now);
	}
	assert_int_equal(pl->n_pending_wills, 1);
}

/* What the broker publishes for a client it is taking offline is that
 * client's will until its will is gone or the tick comes; nobody else's. */
static void test_leaving_client(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;

	will_leaving(pl, "dev-1");
	assert_true(will_publishing(pl, "dev-1"));
	assert_false(will_publishing(pl, "dev-2"));
	will_gone(pl, "dev-2");
	assert_true(will_publishing(pl, "dev-1"));
	will_gone(pl, "dev-1");
	assert_false(will_publishing(pl, "dev-1"));

	will_leaving(pl, "dev-3");
	pending_wills_expire(pl, time(NULL));
	assert_false(will_publishing(pl, "dev-3"));
}

/* A will that is gone (deleted, replaced at a connection, its session
 * ended) is no longer tracked: its record is not deleted later. */
static void test_gone_will_is_forgotten(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	time_t now = time(NULL);

	will_delay_track(pl, "dev-1", now - 1);
	will_gone(pl, "dev-1");
	assert_int_equal(pl->n_pending_wills, 0);
	put_will(pl, "dev-1");   /* a new will of the next connection */
	for(int i = 0; i < 5; i++){
		pending_wills_expire(pl, now);
	}
	assert_int_equal(stored_wills(pl, "dev-1"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delayed_will_ends_at_the_third_tick, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_delay_tracked_again_replaces, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_leaving_client, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_gone_will_is_forgotten, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
