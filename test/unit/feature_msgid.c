/* msgid.c without a broker: idempotent publishes (plugin_opt_dedup_property),
 * driven through the dispatch (features.c). A publish comes with the
 * message id events.c read from its user property (struct message msg_id);
 * reading the property, and diverting a duplicate to a topic nothing
 * matches, are events.c's and not tested here. The store and the journal
 * (through which the plugin learns that the broker stores a QoS 2
 * message) are real ones. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "feature_util.h"

static int fx_setup(void **state)
{
	static const struct plugin_config cfg = {.dedup_property = "msgid", .dedup_window = 3600, .dedup_max_ids = 1000};

	return feature_fx_setup(state, sizeof(struct feature_fx), &cfg, true) ? 0 : -1;
}

/* What is buffered is committed before the plugin closes. */
static int fx_teardown(void **state)
{
	struct feature_fx *fx = *state;

	assert_int_equal(features_commit(&fx->pl), STORE_OK);
	return feature_fx_teardown(state);
}

/* MESSAGE_IN of a publish from clientid (and username) with message id id
 * (none when NULL): whether it is a duplicate. Anything else the dispatch
 * answers fails the test. */
static bool publish(struct plugin *pl, const char *clientid, const char *username, uint8_t qos, const char *id)
{
	struct message p = {.m = {.topic = "orders/new", .payload = {(const uint8_t *)"x", 1}, .qos = qos,
		.retain = true, .source_id = clientid, .source_username = username}, .msg_id = msg_id(id)};
	enum verdict v = features_publish_in(pl, &p);

	assert_true(v == VERDICT_ACCEPT || v == VERDICT_DUPLICATE);
	return v == VERDICT_DUPLICATE;
}

/* The same id from the same identity (the username, else the client id)
 * is a duplicate; from another identity, or without an id, it is not. */
static void test_same_id_same_identity(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	assert_false(publish(pl, "phone", "alice", 1, "m1"));
	assert_true(publish(pl, "phone", "alice", 1, "m1"));
	assert_true(publish(pl, "laptop", "alice", 1, "m1"));
	assert_false(publish(pl, "bob-1", "bob", 1, "m1"));
	assert_false(publish(pl, "phone", "alice", 1, "m2"));
	assert_false(publish(pl, "sensor-9", NULL, 1, "m1"));
	assert_true(publish(pl, "sensor-9", NULL, 1, "m1"));
	assert_false(publish(pl, "sensor-10", NULL, 1, "m1"));
	assert_false(publish(pl, "phone", "alice", 1, NULL));
	assert_false(publish(pl, "phone", "alice", 1, NULL));
	assert_int_equal(plugin_stats(pl).duplicates_dropped, 3);
	assert_int_equal(plugin_stats(pl).dedup_ids, 5);   /* alice m1 and m2, bob m1, sensor-9 m1, sensor-10 m1 */
}

/* The ids outlive a restart: they are in the store. */
static void test_ids_survive_a_restart(void **state)
{
	struct feature_fx *fx = *state;

	assert_false(publish(&fx->pl, "phone", "alice", 1, "order-17"));
	assert_int_equal(features_commit(&fx->pl), STORE_OK);
	feature_plugin_close(&fx->pl);
	assert_int_equal(feature_plugin_open(&fx->fs, &fx->pl, true), 0);
	assert_int_equal(plugin_stats(&fx->pl).dedup_ids, 1);
	assert_true(publish(&fx->pl, "phone", "alice", 1, "order-17"));
	assert_false(publish(&fx->pl, "phone", "alice", 1, "order-18"));
}

/* The broker stores a QoS 2 PUBLISH of "phone" (a session) as its incoming
 * message store_id, packet id mid. */
static void stored_incoming(struct plugin *pl, uint64_t store_id, uint16_t mid, const char *id)
{
	struct message body = {.store_id = store_id, .m = {.topic = "orders/new", .payload = {(const uint8_t *)"x", 1},
		.qos = 2, .source_id = "phone", .source_username = "alice"}, .msg_id = msg_id(id)};
	struct entry e = in_entry("phone", mid, store_id, mid);

	features_body_added(pl, &body);
	features_entry_added(pl, &e);
}

/* PUBREL: the broker routes the incoming message and deletes its entry. */
static void released_incoming(struct plugin *pl, uint64_t store_id, uint16_t mid)
{
	struct entry e = in_entry("phone", mid, store_id, mid);

	assert_true(features_entry_gone(pl, &e));
}

/* QoS 2: a resend of an exchange the broker holds for a session is the
 * broker's to match (not diverted), until it is released; one it dropped
 * with the connection before holding it is forgotten, so the client's
 * resend goes through. */
static void test_qos2_exchanges(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	assert_false(publish(pl, "phone", "alice", 2, "q2-a"));
	stored_incoming(pl, 77, 1, "q2-a");
	assert_false(publish(pl, "phone", "alice", 2, "q2-a"));
	features_client_disconnected(pl, "phone");   /* held: kept */
	assert_false(publish(pl, "phone", "alice", 2, "q2-a"));
	released_incoming(pl, 77, 1);
	assert_true(publish(pl, "phone", "alice", 2, "q2-a"));

	assert_false(publish(pl, "phone", "alice", 2, "q2-b"));
	features_client_disconnected(pl, "phone");   /* not held: forgotten */
	assert_false(publish(pl, "phone", "alice", 2, "q2-b"));
	assert_true(publish(pl, "phone", "alice", 1, "q2-b"));
	assert_int_equal(plugin_stats(pl).duplicates_dropped, 2);
}

/* QoS 2 from a publisher without a session: the broker routes it at
 * PUBREL from a body it stores then. Before that, the exchange is dropped
 * with the connection and its id forgotten; once a copy is stored the
 * exchange is over and the id stays, whatever the connection does. */
static void test_qos2_routed_ends_the_exchange(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct message body = {.store_id = 90, .m = {.topic = "orders/new", .payload = {(const uint8_t *)"x", 1},
		.qos = 2, .source_id = "kiosk", .source_username = "carol"}, .msg_id = msg_id("q2-c")};
	struct entry copy = {.clientid = "office", .seq = 1, .q = {.store_id = 90, .mid = 1, .qos = 2,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};

	assert_false(publish(pl, "kiosk", "carol", 2, "q2-c"));
	features_body_added(pl, &body);
	features_entry_added(pl, &copy);
	features_client_disconnected(pl, "kiosk");
	assert_true(publish(pl, "kiosk", "carol", 2, "q2-c"));
	assert_true(publish(pl, "kiosk", "carol", 1, "q2-c"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_same_id_same_identity, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ids_survive_a_restart, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_qos2_exchanges, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_qos2_routed_ends_the_exchange, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
