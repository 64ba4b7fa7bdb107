/* features.c without a broker: what the dispatch answers for each step of
 * a message's and a client's life, and that it tells every module that
 * must hear of it. The store and the journal are real ones; a full device
 * is played by failing the store's writes of its data file with ENOSPC
 * (../faults/io_fault.h interposes the write and sync functions). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "feature_util.h"
#include "../faults/io_fault.h"

/* ---- a full device ---- */

static atomic_bool g_device_full;

/* For io_fault.h: writes and syncs of the store's data file fail with
 * ENOSPC while the device is to be full. */
static int io_fault_fails(int fd)
{
	if(!atomic_load(&g_device_full) || !io_fault_on_file(fd, "/data.mdb")){
		return 0;
	}
	errno = ENOSPC;
	return 1;
}

/* ---- the plugin ---- */

struct fx {
	struct feature_fx base;
	uint64_t used;   /* the store's pages in use after the seed */
	/* features_entry_gone's answers to the deletions the broker raised
	 * within its calls (fake.hook) */
	int gone_true, gone_false;
};

/* "phone" has a stored session, offline, with inbox/phone/#. */
static void seed(struct store *st)
{
	struct rec_session s = {.clientid = "phone", .session_expiry_interval = 3600};
	struct rec_sub sub = {.clientid = "phone", .topic_filter = "inbox/phone/#", .options = 1};

	assert_int_equal(store_session_put(st, &s), STORE_OK);
	assert_int_equal(store_sub_put(st, &sub), STORE_OK);
	assert_int_equal(store_commit(st), STORE_OK);
}

static int fx_setup(void **state)
{
	static const struct plugin_config cfg = {.dedup_property = "msgid", .dedup_window = 3600,
		.dedup_max_ids = 1000, .seq_property = "seq"};
	struct fx *fx;

	atomic_store(&g_device_full, false);
	fx = feature_fx_setup(state, sizeof(*fx), &cfg, true);
	if(!fx){
		return -1;
	}
	seed(fx->base.pl.store);
	fx->used = store_used_bytes(fx->base.pl.store);
	return 0;
}

static int fx_teardown(void **state)
{
	atomic_store(&g_device_full, false);
	return feature_fx_teardown(state);
}

static enum verdict publish(struct plugin *pl, const char *topic, uint8_t qos, const char *id)
{
	struct message p = {.m = {.topic = topic, .payload = {(const uint8_t *)"hello", 5}, .qos = qos,
		.source_id = "sensor", .source_username = "alice"}, .msg_id = msg_id(id)};

	return features_publish_in(pl, &p);
}

/* ---- publishes ---- */

/* While the database's device is full, QoS 1/2 publishes are refused
 * (counted, logged), QoS 0 ones pass; a refused publish's message id is
 * not taken (its resend is not a duplicate). Once a commit succeeds,
 * everything is accepted again. */
static void test_disk_full_refuses(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct rec_base_msg m = {.topic = "t", .payload = {(const uint8_t *)"x", 1}, .qos = 1};

	assert_int_equal(store_msg_put(pl->store, 1, &m), STORE_OK);
	atomic_store(&g_device_full, true);
	assert_int_not_equal(store_commit(pl->store), STORE_OK);
	atomic_store(&g_device_full, false);
	assert_true(store_disk_full(pl->store));

	assert_int_equal(publish(pl, "inbox/phone/a", 1, "m1"), VERDICT_REFUSE);
	assert_int_equal(publish(pl, "elsewhere", 2, NULL), VERDICT_REFUSE);
	assert_int_equal(publish(pl, "elsewhere", 0, NULL), VERDICT_ACCEPT);
	assert_int_equal(plugin_stats(pl).refused_disk_full, 2);
	assert_true(fake_logged("is full: refusing QoS 1/2 publishes"));

	assert_int_equal(store_commit(pl->store), STORE_OK);   /* the writes kept buffered go in */
	assert_false(store_disk_full(pl->store));
	assert_int_equal(publish(pl, "inbox/phone/a", 1, "m1"), VERDICT_ACCEPT);
	assert_int_equal(publish(pl, "inbox/phone/a", 1, "m1"), VERDICT_DUPLICATE);
	assert_int_equal(plugin_stats(pl).refused_disk_full, 2);
}

/* At plugin_opt_max_db_size a QoS 1/2 publish for an offline session is
 * refused; its message id is not taken either. */
static void test_over_budget_refuses(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_db_size = (size_t)fx->used;
	assert_int_equal(publish(pl, "inbox/phone/a", 1, "m1"), VERDICT_REFUSE);
	assert_int_equal(publish(pl, "inbox/phone/a", 1, "m1"), VERDICT_REFUSE);
	assert_int_equal(plugin_stats(pl).refused_over_budget, 2);
	assert_int_equal(plugin_stats(pl).duplicates_dropped, 0);
	pl->cfg.max_db_size = 0;
	assert_int_equal(publish(pl, "inbox/phone/a", 1, "m1"), VERDICT_ACCEPT);
}

/* A message id seen before from the same identity is a duplicate: accepted
 * and dropped, counted, not journaled again. */
static void test_duplicate(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	uint64_t lsn;

	assert_int_equal(publish(pl, "orders", 1, "o-1"), VERDICT_ACCEPT);
	lsn = journal_last_lsn(pl->journal);
	assert_true(lsn > 0);   /* the accepted QoS 1 publish */
	assert_int_equal(publish(pl, "orders", 1, "o-1"), VERDICT_DUPLICATE);
	assert_int_equal(publish(pl, "orders", 2, "o-1"), VERDICT_DUPLICATE);
	assert_int_equal(journal_last_lsn(pl->journal), lsn);
	assert_int_equal(publish(pl, "orders", 1, "o-2"), VERDICT_ACCEPT);
	assert_int_equal(plugin_stats(pl).duplicates_dropped, 2);
	assert_int_equal(plugin_stats(pl).dedup_ids, 2);
}

/* A PUBLISH leaving gets its number only at QoS 1/2, only with
 * plugin_opt_seq_property. */
static void test_publish_out_numbers(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct entry e1 = out_entry("phone", 1, 1, 1), e2 = out_entry("phone", 2, 2, 1);

	features_entry_added(pl, &e1);
	features_entry_added(pl, &e2);
	assert_int_equal(e1.q.seq_no, 1);
	assert_int_equal(e2.q.seq_no, 2);
	assert_int_equal(features_publish_out(pl, "phone", 0), 0);
	assert_int_equal(features_publish_out(pl, "phone", 1), 1);
	pl->cfg.seq_property = NULL;
	assert_int_equal(features_publish_out(pl, "phone", 1), 0);
}

/* ---- a session's end ---- */

/* Counts the journal's records by kind. */
static void count_kind(void *ctx, const struct rec_journal *r)
{
	int *counts = ctx;

	counts[r->kind & 31]++;
}

/* features_session_gone: every module forgets the client. Its will delay
 * is no longer tracked (a will stored since is not deleted at the ticks
 * after the old deadline), the id of its QoS 2 exchange the broker held is
 * forgotten (a resend of the id goes through), its incoming QoS 2 message
 * is no longer one whose release is journaled, its numbering starts again,
 * and its old queue's entries no longer count under the retention limits. */
static void test_session_gone_forgets_everything(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct message publish_q2 = {.m = {.topic = "orders", .payload = {(const uint8_t *)"x", 1}, .qos = 2,
		.source_id = "phone", .source_username = "bob"}, .msg_id = msg_id("q2")};
	struct message body = publish_q2, publish_q1 = publish_q2;
	struct entry in = in_entry("phone", 50, 77, 9);
	struct rec_will w = {.clientid = "phone", .topic = "will/phone", .payload = {(const uint8_t *)"x", 1}, .qos = 1};
	int kinds[32] = {0};

	body.store_id = 77;
	publish_q1.m.qos = 1;
	pl->cfg.max_queued_messages = 2;
	/* Connected: two messages queued, numbered 1 and 2. */
	features_client_connected(pl, "phone");
	for(uint64_t n = 1; n <= 2; n++){
		struct entry e = out_entry("phone", n, (uint16_t)n, 1);
		features_entry_added(pl, &e);
		assert_int_equal(e.q.seq_no, n);
	}
	/* Its QoS 2 PUBLISH, which the broker holds as the session's incoming message. */
	assert_int_equal(features_publish_in(pl, &publish_q2), VERDICT_ACCEPT);
	features_body_added(pl, &body);
	features_entry_added(pl, &in);
	/* Offline (the tick ends the departure: what the broker publishes for
	 * the client is no longer its will), with a delayed will that is due. */
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	assert_false(will_publishing(pl, "phone"));
	assert_int_equal(features_publish_in(pl, &publish_q2), VERDICT_ACCEPT);   /* the broker's to match */
	will_delay_track(pl, "phone", time(NULL) - 1);
	assert_true(will_publishing(pl, "phone"));

	features_session_gone(pl, "phone");

	assert_false(will_publishing(pl, "phone"));
	assert_int_equal(store_will_put(pl->store, &w), STORE_OK);
	for(int i = 0; i < 5; i++){
		features_tick(pl);
	}
	assert_int_equal(stored_wills(pl, "phone"), 1);
	/* The id is forgotten: even at QoS 1 it is no duplicate. */
	assert_int_equal(features_publish_in(pl, &publish_q1), VERDICT_ACCEPT);
	/* The old incoming entry's deletion journals no release. */
	assert_true(features_entry_gone(pl, &in));
	journal_records(pl->journal, count_kind, kinds);
	assert_int_equal(kinds[JREC_INCOMING], 1);
	assert_int_equal(kinds[JREC_SESSION_GONE], 1);
	assert_int_equal(kinds[JREC_RELEASED_IN], 0);

	/* A new session: two more messages, numbered from 1; offline, they are
	 * within the limit of 2. */
	features_client_connected(pl, "phone");
	for(uint64_t n = 3; n <= 4; n++){
		struct entry e = out_entry("phone", n, (uint16_t)n, 1);
		features_entry_added(pl, &e);
		assert_int_equal(e.q.seq_no, n - 2);
	}
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 0);
}

/* ---- deletions the plugin makes itself ---- */

/* The broker raises the delete event of a message it takes back for the
 * plugin within the call (broker_taking). */
static int broker_takes(const struct fake_call *c, void *ctx)
{
	struct fx *fx = ctx;
	struct entry e = out_entry(c->clientid, 11, c->mid, c->qos);

	if(features_entry_gone(&fx->base.pl, &e)){
		fx->gone_true++;
	}else{
		fx->gone_false++;
	}
	return BROKER_OK;
}

/* features_entry_gone says false (not a deletion: the store keeps it; only
 * the send order of sequence numbers lets it go) for an entry the plugin
 * takes back itself: a
 * message routed to a client while its stored backlog is handed back,
 * taken out at the tick to come in its turn. A deletion by the broker
 * (an acknowledgement) says true. */
static void test_taken_entry_not_gone(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct rec_session s = {.clientid = "phone", .session_expiry_interval = 3600};
	struct client_auth c = {.clientid = "phone"};
	struct entry routed = out_entry("phone", 11, 5, 1);

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	pl->cfg.queue_window = 2;
	store_phone_queue(pl->store, 4);
	features_session_added(pl, &s);
	features_client_disconnected(pl, "phone");
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 1);

	assert_false(features_client_auth(pl, &c));
	features_client_connected(pl, "phone");
	assert_int_equal(fake_count(FAKE_ENTRY_ADD), 2);   /* the first window */
	features_entry_added(pl, &routed);
	assert_int_equal(routed.q.seq_no, 1);

	fake.hook[FAKE_ENTRY_TAKE] = broker_takes;
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_ENTRY_TAKE), 1);
	assert_int_equal(fx->gone_false, 1);
	assert_int_equal(fx->gone_true, 0);
	/* Out of the broker's send order: no PUBLISH leaves with its number
	 * until it is handed back (with the number stored with it). */
	assert_int_equal(features_publish_out(pl, "phone", 1), 0);

	/* The broker's deletion of a handed-back message (an acknowledgement) is one. */
	{
		const struct fake_call *a = fake_nth(FAKE_ENTRY_ADD, 0);
		struct entry acked = out_entry("phone", a->seq, a->mid, 1);
		acked.q.store_id = a->store_id;
		assert_true(features_entry_gone(pl, &acked));
	}
	/* An incoming entry's deletion always is. */
	{
		struct entry in = in_entry("phone", 20, 120, 3);
		assert_true(features_entry_gone(pl, &in));
	}
}

/* ---- authentication ---- */

/* features_client_auth: a client the budget refuses keeps what is queued
 * for it (nothing expired is dropped for a client not let in); one let in
 * has its expired messages dropped before the broker hands it its session. */
static void test_auth_refused_drops_nothing(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	int64_t now = (int64_t)time(NULL);
	struct client_auth ghost = {.clientid = "ghost"}, phone = {.clientid = "phone"};
	const char *ids[] = {"ghost", "phone"};

	pl->cfg.offline_ttl = 60;
	for(int i = 0; i < 2; i++){
		struct message b = {.store_id = 500 + (uint64_t)i, .m = {.topic = "t", .payload = {(const uint8_t *)"x", 1},
			.qos = 1, .expiry_time = now - 1}};
		struct entry e = out_entry(ids[i], 1, 1, 1);
		e.q.store_id = b.store_id;
		features_body_added(pl, &b);
		features_entry_added(pl, &e);
	}
	pl->cfg.max_db_size = 1;   /* over it: "ghost", with no stored session, is refused */
	assert_true(features_client_auth(pl, &ghost));
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 0);
	assert_false(features_client_auth(pl, &phone));
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 1);
	assert_string_equal(fake_nth(FAKE_ENTRY_DROP, 0)->clientid, "phone");
	assert_int_equal(plugin_stats(pl).refused_sessions, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_disk_full_refuses, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_over_budget_refuses, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_duplicate, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_publish_out_numbers, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_session_gone_forgets_everything, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_taken_entry_not_gone, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_auth_refused_drops_nothing, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
