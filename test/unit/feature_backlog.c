/* backlog.c without a broker: plugin_opt_queue_storage disk, driven through
 * the dispatch (features.c). The fake broker records which sessions'
 * queues the plugin has it let go of and which stored messages it is
 * handed back, in what order, under which packet ids. The store is a real
 * one, seeded with a session's queue. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature_util.h"

/* The session "phone" with messages 1..n stored (store ids 101.., packet
 * ids 1..n of the broker run that stored them). */
static void seed(struct store *st, uint64_t n)
{
	struct rec_session s = {.clientid = "phone", .session_expiry_interval = 3600};

	assert_int_equal(store_session_put(st, &s), STORE_OK);
	store_phone_queue(st, n);
}

static int fx_setup(void **state)
{
	static const struct plugin_config cfg = {.queue_storage = QUEUE_STORAGE_DISK, .queue_window = 4};
	struct feature_fx *fx = feature_fx_setup(state, sizeof(*fx), &cfg, false);

	if(!fx){
		return -1;
	}
	/* The plugin nudges the broker to fill a connected client's in-flight
	 * window by deleting a packet id none of its messages has. */
	fake.answer[FAKE_ENTRY_DROP] = BROKER_NOT_FOUND;
	seed(fx->pl.store, 10);
	return 0;
}

static void session_added(struct plugin *pl)
{
	struct rec_session s = {.clientid = "phone", .session_expiry_interval = 3600};

	features_session_added(pl, &s);
}

/* The client comes back: BASIC_AUTH, then CONNECT. */
static void returns(struct plugin *pl)
{
	struct client_auth c = {.clientid = "phone"};

	assert_false(features_client_auth(pl, &c));
	features_client_connected(pl, "phone");
}

/* The packet id the broker was handed message n under (its last hand-back). */
static uint16_t mid_of(uint64_t n)
{
	uint16_t mid = 0;
	bool found = false;

	for(size_t i = 0; i < fake_count(FAKE_ENTRY_ADD); i++){
		const struct fake_call *c = fake_nth(FAKE_ENTRY_ADD, i);
		if((c->seq & SEQ_MASK) == n){
			mid = c->mid;
			found = true;
		}
	}
	assert_true(found);
	return mid;
}

/* The broker acknowledges message n of the connected client. */
static void acknowledged(struct plugin *pl, uint64_t n)
{
	struct entry e = {.clientid = "phone", .seq = store_queue_seq(pl->store, n), .q = {.store_id = 100 + n,
		.mid = mid_of(n), .qos = 1, .direction = MSG_DIR_OUT, .state = MSG_STATE_WAIT_FOR_PUBACK}};

	assert_true(features_entry_gone(pl, &e));
}

/* The in-flight nudges (deletions of a packet id) never name a packet id
 * a handed-back message has. */
static void nudges_miss_every_message(void)
{
	assert_true(fake_count(FAKE_ENTRY_DROP) > 0);
	for(size_t i = 0; i < fake_count(FAKE_ENTRY_DROP); i++){
		const struct fake_call *d = fake_nth(FAKE_ENTRY_DROP, i);
		assert_string_equal(d->clientid, "phone");
		for(size_t j = 0; j < fake_count(FAKE_ENTRY_ADD); j++){
			assert_int_not_equal(d->mid, fake_nth(FAKE_ENTRY_ADD, j)->mid);
		}
	}
}

/* An offline session the broker holds messages of is let go of at the
 * tick; a connected one, or one with a PUBREL outstanding, is not. */
static void test_offline_sessions_released(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct entry q2 = {.clientid = "phone", .seq = 7, .q = {.store_id = 107, .mid = 7, .qos = 2,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_WAIT_FOR_PUBCOMP}};

	session_added(pl);
	features_client_connected(pl, "phone");
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 0);

	assert_true(features_entry_updated(pl, &q2));   /* PUBREL sent */
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 0);
	assert_false(backlog_released(pl, "phone"));
	assert_true(features_entry_gone(pl, &q2));   /* PUBCOMP: the exchange is over */
	features_client_connected(pl, "phone");
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 1);
	assert_string_equal(fake_nth(FAKE_QUEUE_RELEASE, 0)->clientid, "phone");
	assert_int_equal(plugin_stats(pl).backlog_releases, 1);
	assert_true(backlog_released(pl, "phone"));
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 1);   /* once */
}

/* A returning client gets its stored queue back in order, queue_window
 * messages at a time, the next part once half of the last is
 * acknowledged; nothing twice. */
static void test_hand_back_in_parts(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	session_added(pl);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 1);

	returns(pl);
	assert_string_equal(handed("phone"), "1 2 3 4");
	/* The broker's in-flight window is full: it queues what comes next. */
	fake.answer[FAKE_ENTRY_ADD] = BROKER_QUEUED_OR_DROPPED;
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4");   /* none acknowledged yet */
	acknowledged(pl, 1);
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4");   /* 3 of 4 still held */
	acknowledged(pl, 2);
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5 6");
	for(uint64_t n = 3; n <= 6; n++){
		acknowledged(pl, n);
	}
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7 8 9 10");
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7 8 9 10");
	assert_int_equal(plugin_stats(pl).backlog_loaded, 10);
	/* Each body went to the broker once, with its message. */
	assert_int_equal(fake_count(FAKE_BODY_ADD), 10);
	nudges_miss_every_message();
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 1);   /* connected: not released again */
}

/* The broker moved stored message n of the connected client into flight. */
static void moved(struct plugin *pl, uint64_t n)
{
	struct entry e = {.clientid = "phone", .seq = store_queue_seq(pl->store, n), .q = {.store_id = 100 + n,
		.mid = mid_of(n), .qos = 1, .direction = MSG_DIR_OUT, .state = MSG_STATE_PUBLISH_QOS1}};

	assert_true(features_entry_updated(pl, &e));
}

/* The client returns and gets 1 to 4; the broker's in-flight window is 2:
 * it sends 1 and 2, 3 and 4 wait, and the next part (5) goes in. */
static void second_part(struct plugin *pl)
{
	session_added(pl);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	returns(pl);
	assert_string_equal(handed("phone"), "1 2 3 4");
	moved(pl, 1);
	moved(pl, 2);
	fake.answer[FAKE_ENTRY_ADD] = BROKER_QUEUED_OR_DROPPED;
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5");
}

/* The next part goes in as soon as no more handed-back messages wait in
 * the broker than it has in flight (the most it can send before the next
 * tick), half acknowledged or not, so that a message routed meanwhile never
 * reaches the front; larger than the window when the broker puts a whole
 * part in flight. */
static void test_part_stays_ahead_of_the_in_flight_window(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	second_part(pl);
	acknowledged(pl, 1);
	acknowledged(pl, 2);
	moved(pl, 3);
	moved(pl, 4);
	features_tick(pl);   /* 5 waits behind 3 and 4 in flight */
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7");
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7");
	/* A broker that takes everything in flight: parts grow past the window. */
	moved(pl, 5);
	moved(pl, 6);
	moved(pl, 7);
	fake.answer[FAKE_ENTRY_ADD] = BROKER_OK;
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7 8 9 10");
	assert_int_equal(plugin_stats(pl).backlog_out_of_order, 0);
}

/* A broker that put the whole first part in flight at the connection gets
 * the next one from CONNECT, before anything routed to the client can land
 * in flight ahead of the rest. */
static void test_whole_first_part_in_flight(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct client_auth c = {.clientid = "phone"};

	session_added(pl);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	assert_false(features_client_auth(pl, &c));
	assert_string_equal(handed("phone"), "1 2 3 4");
	for(uint64_t n = 1; n <= 4; n++){
		moved(pl, n);
	}
	fake.answer[FAKE_ENTRY_ADD] = BROKER_QUEUED_OR_DROPPED;
	features_client_connected(pl, "phone");
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7 8 9");
}

/* What the broker routes to the client during a hand-back, queued behind
 * it, is taken back out at the tick (it stays stored, after the backlog):
 * that deletion is the plugin's own, not recorded. One the broker puts in
 * flight at once went out ahead of the backlog: counted. */
static void test_routed_during_hand_back_taken_back(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct entry routed = {.clientid = "phone", .seq = 11, .q = {.store_id = 111, .mid = 5, .qos = 1,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};
	struct entry ahead = {.clientid = "phone", .seq = 12, .q = {.store_id = 112, .mid = 6, .qos = 1,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_WAIT_FOR_PUBACK}};

	session_added(pl);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	returns(pl);
	assert_string_equal(handed("phone"), "1 2 3 4");
	features_entry_added(pl, &routed);
	features_entry_added(pl, &ahead);
	assert_int_equal(plugin_stats(pl).backlog_out_of_order, 1);
	assert_true(fake_logged("went out ahead of its stored backlog"));
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_ENTRY_TAKE), 1);
	assert_string_equal(fake_nth(FAKE_ENTRY_TAKE, 0)->clientid, "phone");
	assert_int_equal(fake_nth(FAKE_ENTRY_TAKE, 0)->mid, 5);
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_ENTRY_TAKE), 1);   /* once */
}

/* A routed message the broker moves into flight before the tick could take
 * it back has gone out: it stays in the broker (taken back now, it would
 * come again later under a new packet id), counted as ahead of the backlog. */
static void test_routed_sent_before_the_tick_stays(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct entry routed = {.clientid = "phone", .seq = 11, .q = {.store_id = 111, .mid = 5, .qos = 1,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};

	session_added(pl);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	returns(pl);
	fake.answer[FAKE_ENTRY_ADD] = BROKER_QUEUED_OR_DROPPED;
	features_entry_added(pl, &routed);
	routed.seq = 11;
	routed.q.state = MSG_STATE_PUBLISH_QOS1;
	assert_true(features_entry_updated(pl, &routed));
	assert_int_equal(plugin_stats(pl).backlog_out_of_order, 1);
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_ENTRY_TAKE), 0);
}

/* A client whose CONNECT came without BASIC_AUTH (another plugin decided)
 * still gets its stored queue from the connection on, in parts; what was
 * routed to it since the last tick, which the broker held and sent at the
 * connection (logged), is passed over, and its packet ids stay its own. */
static void test_connected_without_auth(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct rec_base_msg m = {.topic = "inbox/phone", .payload = {(const uint8_t *)"hi", 2}, .qos = 1};
	struct entry recent = {.clientid = "phone", .seq = store_queue_seq(pl->store, 11), .q = {.store_id = 111,
		.mid = 3, .qos = 1, .direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};
	struct entry later = {.clientid = "phone", .seq = store_queue_seq(pl->store, 12), .q = {.store_id = 112,
		.mid = 4, .qos = 1, .direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};

	session_added(pl);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	/* Routed before the next tick: the broker holds it. */
	features_entry_added(pl, &recent);
	assert_int_equal(store_msg_put(pl->store, 111, &m), STORE_OK);
	assert_int_equal(store_queue_append(pl->store, "phone", recent.seq, &recent.q), STORE_OK);
	/* The broker's in-flight window is full with what it held: it queues the rest. */
	fake.answer[FAKE_ENTRY_ADD] = BROKER_QUEUED_OR_DROPPED;
	features_client_connected(pl, "phone");
	assert_true(fake_logged("without this plugin's BASIC_AUTH"));
	assert_string_equal(handed("phone"), "1 2 3 4");
	for(size_t i = 0; i < fake_count(FAKE_ENTRY_ADD); i++){
		assert_int_not_equal(fake_nth(FAKE_ENTRY_ADD, i)->mid, 3);
	}
	/* Routed during the hand-back: taken back, handed after the backlog. */
	features_entry_added(pl, &later);
	assert_int_equal(store_msg_put(pl->store, 112, &m), STORE_OK);
	assert_int_equal(store_queue_append(pl->store, "phone", later.seq, &later.q), STORE_OK);
	for(uint64_t n = 1; n <= 10; n++){
		for(int t = 0; t < 3 && fake_count(FAKE_ENTRY_ADD) < n; t++){
			features_tick(pl);
		}
		acknowledged(pl, n);
	}
	assert_int_equal(fake_count(FAKE_ENTRY_TAKE), 1);
	assert_int_equal(fake_nth(FAKE_ENTRY_TAKE, 0)->mid, 4);
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7 8 9 10 12");
	for(size_t i = 0; i < fake_count(FAKE_ENTRY_ADD); i++){
		assert_int_not_equal(fake_nth(FAKE_ENTRY_ADD, i)->mid, 3);
	}
	assert_int_equal(plugin_stats(pl).backlog_loaded, 11);
}

/* The broker numbers a new connection's messages from 1 again when it held
 * none of the session's (all released): their queue seqs go on after the
 * stored ones instead of repeating them; a connection that takes over
 * held messages goes on from the broker's count, unchanged. */
static void test_numbers_go_on_after_a_fresh_connection(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct entry e;

	session_added(pl);
	for(uint64_t n = 1; n <= 3; n++){
		e = (struct entry){.clientid = "phone", .seq = n, .q = {.store_id = 200 + n, .mid = (uint16_t)n,
			.qos = 1, .direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};
		features_entry_added(pl, &e);
		assert_int_equal(e.seq, store_queue_seq(pl->store, n));
	}
	/* A fresh context: 1 again. Its update and deletion find the same seq. */
	e = (struct entry){.clientid = "phone", .seq = 1, .q = {.store_id = 210, .mid = 9, .qos = 1,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};
	features_entry_added(pl, &e);
	assert_int_equal(e.seq, store_queue_seq(pl->store, 4));
	e.seq = 1;
	e.q.state = MSG_STATE_WAIT_FOR_PUBACK;
	assert_true(features_entry_updated(pl, &e));
	assert_int_equal(e.seq, store_queue_seq(pl->store, 4));
	e.seq = 1;
	assert_true(features_entry_gone(pl, &e));
	assert_int_equal(e.seq, store_queue_seq(pl->store, 4));
	e = (struct entry){.clientid = "phone", .seq = 2, .q = {.store_id = 211, .mid = 10, .qos = 1,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};
	features_entry_added(pl, &e);
	assert_int_equal(e.seq, store_queue_seq(pl->store, 5));
	/* A handed-back entry carries its seq. */
	e.seq = store_queue_seq(pl->store, 2);
	features_entry_added(pl, &e);
	assert_int_equal(e.seq, store_queue_seq(pl->store, 2));
}

/* A message handed back as sent keeps its packet id (the client may hold
 * it); when the broker moves it into flight again without sending it (a
 * connection that leaves at once, a nudge at restart) it reports a publish
 * state with dup 0, and stored so the message would get a new id at the
 * next hand-back: what is stored still says sent (dup). One never sent
 * does not. */
static void test_sent_message_moved_again_keeps_its_id(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct rec_queue sent = {.store_id = 103, .mid = 9, .qos = 1, .direction = MSG_DIR_OUT,
		.state = MSG_STATE_WAIT_FOR_PUBACK, .dup = 1};
	struct entry e;

	assert_int_equal(store_queue_update(pl->store, "phone", 3, &sent), STORE_OK);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	session_added(pl);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	returns(pl);
	assert_string_equal(handed("phone"), "1 2 3 4");
	assert_int_equal(mid_of(3), 9);
	assert_int_not_equal(mid_of(4), 9);

	for(uint64_t n = 3; n <= 4; n++){
		e = (struct entry){.clientid = "phone", .seq = store_queue_seq(pl->store, n), .q = {.store_id = 100 + n,
			.mid = mid_of(n), .qos = 1, .direction = MSG_DIR_OUT, .state = MSG_STATE_PUBLISH_QOS1}};
		assert_true(features_entry_updated(pl, &e));
		assert_int_equal(e.q.dup, n == 3);
		assert_int_equal(store_queue_update(pl->store, "phone", e.seq, &e.q), STORE_OK);
	}
	assert_int_equal(store_commit(pl->store), STORE_OK);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	fake_reset();
	fake.answer[FAKE_ENTRY_DROP] = BROKER_NOT_FOUND;
	returns(pl);
	assert_string_equal(handed("phone"), "1 2 3 4");
	assert_int_equal(mid_of(3), 9);
	assert_int_not_equal(mid_of(4), 9);

	/* Acknowledged, it is forgotten: the plugin remembers only what the
	 * broker holds. */
	e = (struct entry){.clientid = "phone", .seq = store_queue_seq(pl->store, 3), .q = {.store_id = 103,
		.mid = 9, .qos = 1, .dup = 1, .direction = MSG_DIR_OUT, .state = MSG_STATE_WAIT_FOR_PUBACK}};
	assert_true(features_entry_gone(pl, &e));
	e.q.state = MSG_STATE_PUBLISH_QOS1;
	e.q.dup = 0;
	assert_true(features_entry_updated(pl, &e));
	assert_int_equal(e.q.dup, 0);
}

/* A part of a drain reads the store's committed entries from the drain
 * point on: the client's acknowledgements, all behind it, need no commit
 * first; a message routed to the client meanwhile (ahead of it) does. */
static void acked_and_removed(struct plugin *pl, uint64_t n)
{
	acknowledged(pl, n);
	assert_int_equal(store_queue_remove(pl->store, "phone", store_queue_seq(pl->store, n), 100 + n), STORE_OK);
}

static void test_part_commits_only_for_writes_ahead(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct store_stats st;
	uint64_t commits;
	struct entry routed;

	second_part(pl);   /* the first part after the drain started commits */
	acked_and_removed(pl, 1);
	acked_and_removed(pl, 2);
	moved(pl, 3);
	moved(pl, 4);
	assert_false(store_queue_settled(pl->store, "phone"));
	store_get_stats(pl->store, &st);
	commits = st.commits;
	features_tick(pl);
	assert_string_equal(handed("phone"), "1 2 3 4 5 6 7");
	store_get_stats(pl->store, &st);
	assert_int_equal(st.commits, commits);

	/* The broker's next message number (the stored ones were routed in this run). */
	routed = (struct entry){.clientid = "phone", .seq = 11, .q = {.store_id = 300, .mid = 40, .qos = 1,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};
	features_entry_added(pl, &routed);
	assert_int_equal(store_queue_append(pl->store, "phone", routed.seq, &routed.q), STORE_OK);
	acked_and_removed(pl, 3);
	acked_and_removed(pl, 4);
	moved(pl, 5);
	moved(pl, 6);
	features_tick(pl);
	store_get_stats(pl->store, &st);
	assert_true(st.commits > commits);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_offline_sessions_released, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_hand_back_in_parts, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_part_stays_ahead_of_the_in_flight_window, fx_setup,
				feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_whole_first_part_in_flight, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_routed_during_hand_back_taken_back, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_routed_sent_before_the_tick_stays, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_connected_without_auth, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_numbers_go_on_after_a_fresh_connection, fx_setup,
				feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_sent_message_moved_again_keeps_its_id, fx_setup,
				feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_part_commits_only_for_writes_ahead, fx_setup,
				feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
