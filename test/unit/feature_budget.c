/* budget.c without a broker: what plugin_opt_max_db_size refuses, driven
 * through the dispatch (features.c) with the plugin-owned values the
 * broker-facing files hand it; the store is a real one, its offline
 * sessions' subscriptions matched by the fake broker's topic matcher. How
 * a refusal is told to a client (MQTT 5 reason codes, an MQTT 3.1.1
 * disconnection) is events.c's, not tested here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "feature_util.h"

struct fx {
	struct feature_fx base;
	uint64_t used;    /* the store's pages in use after the seed */
};

static const uint8_t payload[500000];

/* "phone" is offline with inbox/phone/#, "laptop" online with live/+. */
static void seed(struct store *st)
{
	struct rec_session s = {.clientid = "phone", .session_expiry_interval = 3600};
	struct rec_sub sub = {.clientid = "phone", .topic_filter = "inbox/phone/#", .options = 1};
	struct rec_session s2 = {.clientid = "laptop", .session_expiry_interval = 3600};
	struct rec_sub sub2 = {.clientid = "laptop", .topic_filter = "live/+", .options = 1};

	assert_int_equal(store_session_put(st, &s), STORE_OK);
	assert_int_equal(store_sub_put(st, &sub), STORE_OK);
	assert_int_equal(store_session_put(st, &s2), STORE_OK);
	assert_int_equal(store_sub_put(st, &sub2), STORE_OK);
	assert_int_equal(store_session_set_online(st, "laptop", true), STORE_OK);
	assert_int_equal(store_commit(st), STORE_OK);
}

static int fx_setup(void **state)
{
	static const struct plugin_config cfg = {.control_users = "ops"};
	struct fx *fx = feature_fx_setup(state, sizeof(*fx), &cfg, false);

	if(!fx){
		return -1;
	}
	seed(fx->base.pl.store);
	fx->used = store_used_bytes(fx->base.pl.store);
	return 0;
}

static enum verdict publish(struct plugin *pl, const char *from, const char *topic, uint8_t qos, bool retain,
		uint32_t len)
{
	struct message p = {.m = {.topic = topic, .payload = {payload, len}, .qos = qos, .retain = retain,
		.source_id = from}};

	assert_true(len <= sizeof(payload));
	return features_publish_in(pl, &p);
}

/* Whether the connection is refused. transient: an MQTT 3.1.1 clean session. */
static bool connect_refused(struct plugin *pl, const char *id, bool transient, const char *username)
{
	struct client_auth c = {.clientid = id, .username = username, .transient = transient};

	return features_client_auth(pl, &c);
}

/* Under the budget nothing is refused. */
static void test_under_budget(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct feature_stats s;

	pl->cfg.max_db_size = (size_t)fx->used + (1 << 20);
	assert_int_equal(publish(pl, "pub", "inbox/phone/x", 1, false, 100), VERDICT_ACCEPT);
	assert_int_equal(publish(pl, "pub", "news", 1, true, 100), VERDICT_ACCEPT);
	assert_false(connect_refused(pl, "newcomer", false, NULL));
	assert_false(features_subscribe(pl, "phone"));
	s = plugin_stats(pl);
	assert_int_equal(s.refused_over_budget + s.refused_retained + s.refused_sessions + s.refused_subscriptions, 0);
	assert_false(fake_logged("plugin_opt_max_db_size"));
}

/* At the budget, a QoS 1/2 publish an offline session subscribes to is
 * refused (whatever the publisher's protocol); one only a connected
 * session or nobody subscribes to, and QoS 0, pass; each refusal is
 * counted, and logged. */
static void test_offline_messages_refused(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_db_size = (size_t)fx->used;
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 1, false, 10), VERDICT_REFUSE);
	assert_int_equal(publish(pl, "pub3", "inbox/phone/x", 2, false, 10), VERDICT_REFUSE);
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 0, false, 10), VERDICT_ACCEPT);
	assert_int_equal(publish(pl, "pub5", "live/x", 1, false, 10), VERDICT_ACCEPT);
	assert_int_equal(publish(pl, "pub5", "elsewhere", 1, false, 10), VERDICT_ACCEPT);
	assert_int_equal(plugin_stats(pl).refused_over_budget, 2);
	assert_true(fake_logged("plugin_opt_max_db_size"));
}

/* At the budget a retained message that sets a topic is refused (QoS 0
 * too), one that clears a topic passes. */
static void test_retained_refused_clearing_passes(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_db_size = (size_t)fx->used;
	assert_int_equal(publish(pl, "pub5", "status/x", 1, true, 500000), VERDICT_REFUSE);
	assert_int_equal(publish(pl, "pub5", "status/x", 0, true, 5), VERDICT_REFUSE);
	assert_int_equal(publish(pl, "pub5", "status/x", 1, true, 0), VERDICT_ACCEPT);
	assert_int_equal(plugin_stats(pl).refused_retained, 2);
	assert_int_equal(plugin_stats(pl).refused_over_budget, 0);
}

/* At the budget a connection that would start a stored session is refused;
 * a stored session, a clean MQTT 3.1.1 client (transient) and an operator
 * of plugin_opt_control_users get in. A stored session's subscription is
 * refused, a clean client's is not. */
static void test_sessions_and_subscriptions(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_db_size = (size_t)fx->used;
	/* MQTT 5 (clean start or not) and MQTT 3.1.1 without a clean session. */
	assert_true(connect_refused(pl, "newcomer", false, NULL));
	assert_true(connect_refused(pl, "newcomer", false, NULL));
	assert_true(connect_refused(pl, "newcomer", false, NULL));
	assert_false(connect_refused(pl, "newcomer", true, NULL));
	assert_false(connect_refused(pl, "phone", false, NULL));
	assert_false(connect_refused(pl, "console", false, "ops"));
	assert_true(connect_refused(pl, "console", false, "alice"));
	assert_int_equal(plugin_stats(pl).refused_sessions, 4);

	assert_true(features_subscribe(pl, "phone"));
	assert_false(features_subscribe(pl, "transient"));
	assert_int_equal(plugin_stats(pl).refused_subscriptions, 1);
	assert_int_equal(fake.n_calls, 0);
}

/* What is let in between two measurements counts: a few large messages
 * cannot overrun the budget many times before the next one. */
static void test_admitted_bytes_count(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_db_size = (size_t)fx->used + 1000;
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 1, false, 600), VERDICT_ACCEPT);
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 1, false, 600), VERDICT_ACCEPT);
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 1, false, 600), VERDICT_REFUSE);
	assert_int_equal(plugin_stats(pl).refused_over_budget, 1);
}

/* Once the store is back under the budget, what was refused is accepted
 * again (and that is logged). */
static void test_back_under_budget(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_db_size = (size_t)fx->used;
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 1, false, 10), VERDICT_REFUSE);
	assert_true(connect_refused(pl, "newcomer", false, NULL));
	pl->cfg.max_db_size = (size_t)fx->used + (1 << 20);
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 1, false, 10), VERDICT_ACCEPT);
	assert_false(connect_refused(pl, "newcomer", false, NULL));
	assert_true(fake_logged("back under"));
	assert_int_equal(plugin_stats(pl).refused_over_budget, 1);
	assert_int_equal(plugin_stats(pl).refused_sessions, 1);
}

/* QoS 0 without retain is not stored: it does not count. */
static void test_qos0_not_admitted(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_db_size = (size_t)fx->used + 1000;
	for(int i = 0; i < 10; i++){
		assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 0, false, 600), VERDICT_ACCEPT);
	}
	assert_int_equal(publish(pl, "pub5", "inbox/phone/x", 1, false, 10), VERDICT_ACCEPT);
	assert_int_equal(plugin_stats(pl).refused_over_budget, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_under_budget, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_offline_messages_refused, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_retained_refused_clearing_passes, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_sessions_and_subscriptions, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_admitted_bytes_count, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_qos0_not_admitted, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_back_under_budget, fx_setup, feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
