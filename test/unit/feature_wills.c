/* wills.c without a broker: the rules for the wills the broker publishes
 * unannounced. The plugin is driven through the dispatch (features.c) and
 * wills.c's own functions; what it does shows in will_publishing and in
 * which will records the tick deletes from a real store. */
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

static int fx_setup(void **state)
{
	return feature_fx_setup(state, sizeof(struct feature_fx), NULL, false) ? 0 : -1;
}

static void put_will(struct plugin *pl, const char *clientid)
{
	struct rec_will w = {.clientid = clientid, .topic = "will/t", .payload = {(const uint8_t *)"x", 1}, .qos = 1};

	assert_int_equal(store_will_put(pl->store, &w), STORE_OK);
}

static void ticks(struct plugin *pl, int n)
{
	for(int i = 0; i < n; i++){
		features_tick(pl);
	}
}

/* A delayed will is the client's will being published once its deadline
 * passed, and its record goes at the third tick that sees the deadline (the
 * broker publishes it within two loop iterations of it), not before. */
static void test_delayed_will_ends_at_the_third_tick(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	time_t now = time(NULL);

	put_will(pl, "dev-1");
	put_will(pl, "dev-2");
	will_delay_track(pl, "dev-1", now - 1);
	will_delay_track(pl, "dev-2", now + 3600);
	assert_true(will_publishing(pl, "dev-1"));
	assert_false(will_publishing(pl, "dev-2"));
	assert_false(will_publishing(pl, NULL));

	ticks(pl, 2);
	assert_int_equal(stored_wills(pl, "dev-1"), 1);
	assert_true(will_publishing(pl, "dev-1"));
	ticks(pl, 1);
	assert_int_equal(stored_wills(pl, "dev-1"), 0);
	assert_false(will_publishing(pl, "dev-1"));
	/* The other's delay runs on: its record stays, and goes three ticks
	 * after its own deadline. */
	ticks(pl, 5);
	assert_int_equal(stored_wills(pl, "dev-2"), 1);
	for(int i = 0; i < 2; i++){
		pending_wills_expire(pl, now + 3600);
	}
	assert_int_equal(stored_wills(pl, "dev-2"), 1);
	pending_wills_expire(pl, now + 3600);
	assert_int_equal(stored_wills(pl, "dev-2"), 0);
	assert_int_equal(fake.n_calls, 0);   /* the broker publishes it on its own */
}

/* A session update whose will delay runs (its deadline ahead) tracks it;
 * one without a delay running does not. */
static void test_session_update_tracks_the_delay(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	time_t now = time(NULL);
	struct rec_session delayed = {.clientid = "dev-1", .will_delay_interval = 60, .will_delay_time = now + 60};
	struct rec_session none = {.clientid = "dev-2"};

	put_will(pl, "dev-1");
	put_will(pl, "dev-2");
	features_session_updated(pl, &delayed);
	features_session_updated(pl, &none);
	assert_false(will_publishing(pl, "dev-1"));
	ticks(pl, 5);
	assert_int_equal(stored_wills(pl, "dev-1"), 1);
	for(int i = 0; i < 3; i++){
		pending_wills_expire(pl, now + 60);
	}
	assert_int_equal(stored_wills(pl, "dev-1"), 0);
	assert_int_equal(stored_wills(pl, "dev-2"), 1);
}

/* Tracking a client's delay again replaces the first: one entry, the new
 * deadline. */
static void test_delay_tracked_again_replaces(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	time_t now = time(NULL);

	put_will(pl, "dev-1");
	will_delay_track(pl, "dev-1", now - 10);
	will_delay_track(pl, "dev-1", now + 3600);
	assert_false(will_publishing(pl, "dev-1"));
	ticks(pl, 5);
	assert_int_equal(stored_wills(pl, "dev-1"), 1);   /* the old deadline is gone */
	for(int i = 0; i < 3; i++){
		pending_wills_expire(pl, now + 3600);
	}
	assert_int_equal(stored_wills(pl, "dev-1"), 0);   /* the new one holds */
	/* Only one was tracked: a will of the next connection stays. */
	put_will(pl, "dev-1");
	for(int i = 0; i < 5; i++){
		pending_wills_expire(pl, now + 7200);
	}
	assert_int_equal(stored_wills(pl, "dev-1"), 1);
}

/* What the broker publishes for a client it is taking offline is that
 * client's will until its will is gone or the tick comes; nobody else's. */
static void test_leaving_client(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	features_client_disconnected(pl, "dev-1");
	assert_true(will_publishing(pl, "dev-1"));
	assert_false(will_publishing(pl, "dev-2"));
	features_will_gone(pl, "dev-2");
	assert_true(will_publishing(pl, "dev-1"));
	features_will_gone(pl, "dev-1");
	assert_false(will_publishing(pl, "dev-1"));

	features_client_disconnected(pl, "dev-3");
	assert_true(will_publishing(pl, "dev-3"));
	features_tick(pl);
	assert_false(will_publishing(pl, "dev-3"));
}

/* A will that is gone (deleted, replaced at a connection, its session
 * ended) is no longer tracked: the record of the next will is not deleted
 * later. */
static void test_gone_will_is_forgotten(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	time_t now = time(NULL);
	const char *ids[] = {"deleted", "reconnected", "ended"};

	for(int i = 0; i < 3; i++){
		will_delay_track(pl, ids[i], now - 1);
		assert_true(will_publishing(pl, ids[i]));
	}
	features_will_gone(pl, "deleted");
	features_client_connected(pl, "reconnected");
	features_session_gone(pl, "ended");
	for(int i = 0; i < 3; i++){
		assert_false(will_publishing(pl, ids[i]));
		put_will(pl, ids[i]);   /* a new will of the next connection */
	}
	ticks(pl, 5);
	for(int i = 0; i < 3; i++){
		assert_int_equal(stored_wills(pl, ids[i]), 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delayed_will_ends_at_the_third_tick, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_session_update_tracks_the_delay, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_delay_tracked_again_replaces, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_leaving_client, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_gone_will_is_forgotten, fx_setup, feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
