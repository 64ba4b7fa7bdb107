/* seqno.c without a broker: the numbers a session's messages carry
 * (plugin_opt_seq_property), driven through the dispatch (features.c): an
 * entry the broker queues gets its number (e->q.seq_no, stored with it),
 * and MESSAGE_OUT asks for the number of the PUBLISH leaving
 * (features_publish_out). Whether the number goes out as a user property
 * (MQTT 5 only) is events.c's. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature_util.h"

static int fx_setup(void **state)
{
	static const struct plugin_config cfg = {.seq_property = "seq"};

	return feature_fx_setup(state, sizeof(struct feature_fx), &cfg, false) ? 0 : -1;
}

/* Entry cmsg_id of clientid's queue (body 1000 + cmsg_id, packet id cmsg_id), in that state. */
static struct entry entry_of(const char *clientid, uint64_t cmsg_id, uint8_t qos, uint8_t state)
{
	struct entry e = out_entry(clientid, cmsg_id, (uint16_t)cmsg_id, qos);

	e.q.state = state;
	return e;
}

/* The broker queues message cmsg_id for clientid: the number it gets. */
static uint64_t queued(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint8_t qos)
{
	struct entry e = entry_of(clientid, cmsg_id, qos, MSG_STATE_QUEUED);

	features_entry_added(pl, &e);
	return e.q.seq_no;
}

/* The number an update of the entry is stored with. */
static uint64_t lookup(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct entry e = entry_of(clientid, cmsg_id, 1, MSG_STATE_WAIT_FOR_PUBACK);

	assert_true(features_entry_updated(pl, &e));
	return e.q.seq_no;
}

/* The client acknowledged it (QoS 1) or completed it (QoS 2). */
static void acknowledged(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint8_t qos)
{
	struct entry e = entry_of(clientid, cmsg_id, qos, qos == 2 ? MSG_STATE_WAIT_FOR_PUBCOMP
			: MSG_STATE_WAIT_FOR_PUBACK);

	assert_true(features_entry_gone(pl, &e));
}

/* QoS 2: PUBREC came, PUBREL is sent. */
static void pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct entry e = entry_of(clientid, cmsg_id, 2, MSG_STATE_WAIT_FOR_PUBCOMP);

	assert_true(features_entry_updated(pl, &e));
}

/* MESSAGE_OUT of a QoS 1 PUBLISH to client: its number, as a string ("" for none). */
static const char *send_one(struct plugin *pl, const char *client)
{
	static char out[24];
	uint64_t n = features_publish_out(pl, client, 1);

	out[0] = '\0';
	if(n){
		snprintf(out, sizeof(out), "%llu", (unsigned long long)n);
	}
	return out;
}

/* Each session numbers its messages from 1, apart from the others; QoS 0
 * messages get no number; off without the option. */
static void test_numbers_per_session(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	assert_int_equal(queued(pl, "a", 11, 1), 1);
	assert_int_equal(queued(pl, "a", 12, 2), 2);
	assert_int_equal(queued(pl, "b", 40, 1), 1);
	assert_int_equal(queued(pl, "a", 13, 1), 3);
	assert_int_equal(queued(pl, "a", 20, 0), 0);
	assert_int_equal(lookup(pl, "a", 12), 2);
	assert_int_equal(lookup(pl, "b", 12), 0);
	acknowledged(pl, "a", 12, 2);
	assert_int_equal(lookup(pl, "a", 12), 0);
	assert_int_equal(queued(pl, "a", 14, 1), 4);

	pl->cfg.seq_property = NULL;
	assert_int_equal(queued(pl, "c", 1, 1), 0);
	assert_int_equal(features_publish_out(pl, "a", 1), 0);
	assert_int_equal(fake.n_calls, 0);
}

/* Messages go out with their numbers in order; after the connection ends
 * the ones not acknowledged go out again with the same numbers, except a
 * QoS 2 one whose PUBREL was sent (only PUBREL goes out again). A QoS 0
 * PUBLISH takes no number. */
static void test_resend_keeps_numbers(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	queued(pl, "a", 1, 1);
	queued(pl, "a", 2, 2);
	queued(pl, "a", 3, 1);
	queued(pl, "a", 4, 1);
	assert_string_equal(send_one(pl, "a"), "1");
	assert_string_equal(send_one(pl, "a"), "2");
	assert_int_equal(features_publish_out(pl, "a", 0), 0);
	assert_string_equal(send_one(pl, "a"), "3");
	acknowledged(pl, "a", 1, 1);
	pubrel_sent(pl, "a", 2);
	features_client_disconnected(pl, "a");
	assert_string_equal(send_one(pl, "a"), "3");
	assert_string_equal(send_one(pl, "a"), "4");
	assert_string_equal(send_one(pl, "a"), "");   /* nothing numbered left */
	assert_string_equal(send_one(pl, "nobody"), "");
	/* A number handed out is used up, whether or not the client could
	 * carry it (an MQTT 3.1.1 client has no user properties). */
	queued(pl, "a", 5, 1);
	assert_string_equal(send_one(pl, "a"), "5");
	queued(pl, "a", 6, 1);
	assert_string_equal(send_one(pl, "a"), "6");
}

/* After a restart the numbers go on after the highest one stored, whether
 * from a queue entry or the session's last number. */
static void test_restore_goes_on(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	assert_int_equal(seq_restore(pl, "a", 100, 7, false), 0);
	assert_int_equal(seq_restore(pl, "a", 101, 5, true), 0);
	assert_int_equal(queued(pl, "a", 102, 1), 8);
	seq_restore_last(pl, "b", 41);
	seq_restore_last(pl, "b", 12);
	assert_int_equal(queued(pl, "b", 1, 1), 42);
	/* The restored QoS 2 message whose PUBREL was sent is not numbered again. */
	assert_string_equal(send_one(pl, "a"), "7");
	assert_string_equal(send_one(pl, "a"), "8");
}

/* The last number a session gave is stored at the tick, and a session's
 * queue handed to the broker numbers on from it. */
static void test_last_number_stored(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct restore_counts counts;
	uint64_t last = 0;

	for(uint64_t id = 1; id <= 3; id++){
		queued(pl, "a", id, 1);
	}
	features_tick(pl);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_seqno_get(pl->store, "a", &last), STORE_OK);
	assert_int_equal(last, 3);

	/* A restart: the session's (empty) queue is handed over. */
	features_free(pl);
	assert_int_equal(features_new(pl), 0);
	restore_queue(pl, NULL, "a", false, &counts);
	assert_int_equal(counts.queued, 0);
	assert_int_equal(queued(pl, "a", 1, 1), 4);
}

/* A session that ends takes its numbers with it. */
static void test_session_end_forgets(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	queued(pl, "a", 1, 1);
	queued(pl, "a", 2, 1);
	features_session_gone(pl, "a");
	assert_int_equal(lookup(pl, "a", 1), 0);
	assert_string_equal(send_one(pl, "a"), "");
	assert_int_equal(queued(pl, "a", 3, 1), 1);
}

/* ---- queue_storage disk ---- */

static int fx_disk_setup(void **state)
{
	static const struct plugin_config cfg = {.seq_property = "seq", .queue_storage = QUEUE_STORAGE_DISK,
		.queue_window = 4};

	if(!feature_fx_setup(state, sizeof(struct feature_fx), &cfg, false)){
		return -1;
	}
	/* The plugin nudges the broker to fill a connected client's in-flight
	 * window by deleting a packet id none of its messages has. */
	fake.answer[FAKE_ENTRY_DROP] = BROKER_NOT_FOUND;
	return 0;
}

/* The broker routes message n to "a" (packet id n): numbered by the
 * dispatch and stored as events.c stores it; its number. */
static uint64_t routed(struct plugin *pl, uint64_t n)
{
	struct rec_base_msg m = {.topic = "inbox/a", .payload = {(const uint8_t *)"hi", 2}, .qos = 1};
	struct entry e = out_entry("a", store_queue_seq(pl->store, n), (uint16_t)n, 1);

	features_entry_added(pl, &e);
	assert_int_equal(store_msg_put(pl->store, e.q.store_id, &m), STORE_OK);
	assert_int_equal(store_queue_append(pl->store, "a", e.seq, &e.q), STORE_OK);
	return e.q.seq_no;
}

/* The broker's delete event for the entry the plugin takes back (by packet id = n). */
static int taken_back(const struct fake_call *c, void *ctx)
{
	struct plugin *pl = ctx;
	struct entry e = out_entry("a", store_queue_seq(pl->store, c->mid), c->mid, c->qos);

	assert_false(features_entry_gone(pl, &e));
	return BROKER_OK;
}

/* With stored queues the numbers follow what the broker holds: an offline
 * session's messages are numbered when routed and let go of at the tick;
 * the returning client gets them with their stored numbers, part by part;
 * one routed meanwhile is taken back out of the broker (and out of the
 * send order) and comes in its turn with its number. */
static void test_disk_numbers_follow_the_hand_back(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct rec_session sess = {.clientid = "a", .session_expiry_interval = 3600};
	struct client_auth auth = {.clientid = "a"};

	features_session_added(pl, &sess);
	features_client_connected(pl, "a");
	features_client_disconnected(pl, "a");
	for(uint64_t n = 1; n <= 5; n++){
		assert_int_equal(routed(pl, n), n);
	}
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 1);
	assert_string_equal(send_one(pl, "a"), "");   /* the broker holds none of them */

	/* Back: the first part (window 4), then message 6 routed behind it. */
	assert_false(features_client_auth(pl, &auth));
	features_client_connected(pl, "a");
	assert_int_equal(fake_count(FAKE_ENTRY_ADD), 4);
	assert_int_equal(routed(pl, 6), 6);
	fake.hook[FAKE_ENTRY_TAKE] = taken_back;
	fake.hook_ctx = pl;
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_ENTRY_TAKE), 1);
	for(uint64_t n = 1; n <= 4; n++){
		char want[4];
		snprintf(want, sizeof(want), "%llu", (unsigned long long)n);
		assert_string_equal(send_one(pl, "a"), want);
		acknowledged(pl, "a", fake_nth(FAKE_ENTRY_ADD, n - 1)->seq, 1);
	}
	assert_string_equal(send_one(pl, "a"), "");   /* 6 is out of the broker */
	assert_int_equal(store_commit(pl->store), STORE_OK);
	features_tick(pl);   /* the rest: 5, then 6 */
	assert_int_equal(fake_count(FAKE_ENTRY_ADD), 6);
	assert_string_equal(send_one(pl, "a"), "5");
	assert_string_equal(send_one(pl, "a"), "6");
	assert_int_equal(routed(pl, 7), 7);
	assert_string_equal(send_one(pl, "a"), "7");
}

/* After a restart an offline session's stored queue stays stored, and
 * messages routed to it number on from its stored counter. */
static void test_disk_restart_numbers_on(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct restore_counts counts;

	assert_int_equal(store_seqno_put(pl->store, "a", 41), STORE_OK);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	restore_queue(pl, NULL, "a", false, &counts);
	assert_int_equal(counts.queued, 0);
	assert_int_equal(routed(pl, 1), 42);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_numbers_per_session, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_resend_keeps_numbers, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_restore_goes_on, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_last_number_stored, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_session_end_forgets, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_numbers_follow_the_hand_back, fx_disk_setup,
				feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_restart_numbers_on, fx_disk_setup, feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
