/* retention.c without a broker: plugin_opt_max_queued_messages,
 * max_queued_bytes, queue_full and offline_ttl over offline sessions, in
 * memory mode and (the tallies) in disk mode, driven through the dispatch
 * (features.c). The fake broker
 * holds the session's queue: its drop (the only way the plugin can drop a
 * message) raises the delete event back within the call, as Mosquitto
 * does. */
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

/* The broker's queue of the session under test. */
struct held_msg {
	uint64_t cmsg_id;
	uint16_t mid;
	bool gone;
};

struct fx {
	struct feature_fx base;
	struct held_msg queue[64];
	size_t n;
};

static const char *const clientid = "phone";
static const uint8_t payload[1000];

/* Message n of the session: store id n, packet id n. */
static struct entry entry_of(uint64_t n)
{
	struct entry e = out_entry(clientid, n, (uint16_t)n, 1);

	e.q.store_id = n;
	return e;
}

/* The broker drops the message with that packet id: its delete event. */
static int broker_drops(const struct fake_call *c, void *ctx)
{
	struct fx *fx = ctx;

	if(strcmp(c->clientid, clientid)){
		return BROKER_NOT_FOUND;
	}
	for(size_t i = 0; i < fx->n; i++){
		if(!fx->queue[i].gone && fx->queue[i].mid == c->mid){
			struct entry e = entry_of(fx->queue[i].cmsg_id);
			fx->queue[i].gone = true;
			assert_true(features_entry_gone(&fx->base.pl, &e));
			return BROKER_OK;
		}
	}
	return BROKER_NOT_FOUND;
}

static int fx_setup(void **state)
{
	if(!feature_fx_setup(state, sizeof(struct fx), NULL, false)){
		return -1;
	}
	fake.hook[FAKE_ENTRY_DROP] = broker_drops;
	return 0;
}

/* The broker stores message number n (store id n, packet id n) of bytes
 * bytes and queues it for the session. */
static void queue(struct fx *fx, uint64_t n, uint32_t bytes, int64_t expiry)
{
	struct message b = {.store_id = n, .m = {.topic = "inbox/phone", .payload = {payload, bytes}, .qos = 1,
		.expiry_time = expiry}};
	struct entry e = entry_of(n);

	assert_true(bytes <= sizeof(payload) && fx->n < 64);
	features_body_added(&fx->base.pl, &b);
	features_entry_added(&fx->base.pl, &e);
	fx->queue[fx->n++] = (struct held_msg){n, (uint16_t)n, false};
}

/* The client acknowledges message n. */
static void acknowledged(struct fx *fx, uint64_t n)
{
	struct entry e = entry_of(n);

	for(size_t i = 0; i < fx->n; i++){
		if(fx->queue[i].cmsg_id == n){
			fx->queue[i].gone = true;
		}
	}
	e.q.state = MSG_STATE_WAIT_FOR_PUBACK;
	assert_true(features_entry_gone(&fx->base.pl, &e));
}

/* The numbers still in the broker's queue, as a string: "1 2 3". */
static const char *kept(const struct fx *fx)
{
	static char out[256];
	size_t len = 0;

	out[0] = '\0';
	for(size_t i = 0; i < fx->n; i++){
		if(!fx->queue[i].gone){
			len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%llu", len ? " " : "",
					(unsigned long long)fx->queue[i].cmsg_id);
		}
	}
	return out;
}

/* drop-new: the newest messages over the limit go. */
static void test_drop_new(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_queued_messages = 3;
	pl->cfg.queue_full = QUEUE_FULL_DROP_NEW;
	for(uint64_t n = 1; n <= 5; n++){
		queue(fx, n, 10, 0);
	}
	assert_string_equal(kept(fx), "1 2 3 4 5");   /* nothing before the tick */
	features_tick(pl);
	assert_string_equal(kept(fx), "1 2 3");
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 2);
	assert_int_equal(fake_nth(FAKE_ENTRY_DROP, 0)->mid, 5);
	assert_int_equal(fake_nth(FAKE_ENTRY_DROP, 1)->mid, 4);
	assert_int_equal(plugin_stats(pl).dropped_queue_full, 2);
	assert_true(fake_logged("dropped 2 new messages (queue full) queued for offline client phone"));
}

/* drop-oldest: the oldest make room; an acknowledged message makes room
 * too, and then nothing more goes. */
static void test_drop_oldest(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_queued_messages = 3;
	pl->cfg.queue_full = QUEUE_FULL_DROP_OLDEST;
	for(uint64_t n = 1; n <= 5; n++){
		queue(fx, n, 10, 0);
	}
	features_tick(pl);
	assert_string_equal(kept(fx), "3 4 5");
	acknowledged(fx, 3);
	queue(fx, 6, 10, 0);
	features_tick(pl);
	assert_string_equal(kept(fx), "4 5 6");
	assert_int_equal(plugin_stats(pl).dropped_queue_full, 2);
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 2);
}

/* Bytes count the bodies' payload sizes. */
static void test_bytes(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_queued_bytes = 250;
	for(uint64_t n = 1; n <= 4; n++){
		queue(fx, n, 100, 0);
	}
	features_tick(pl);
	assert_string_equal(kept(fx), "1 2");
	assert_int_equal(plugin_stats(pl).dropped_queue_full, 2);
}

/* A connected client's queue is left alone; once it goes offline over the
 * limit, the next tick trims it. */
static void test_online_left_alone(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_queued_messages = 2;
	features_client_connected(pl, clientid);
	for(uint64_t n = 1; n <= 4; n++){
		queue(fx, n, 10, 0);
	}
	features_tick(pl);
	assert_string_equal(kept(fx), "1 2 3 4");
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 0);
	features_client_disconnected(pl, clientid);
	features_tick(pl);
	assert_string_equal(kept(fx), "1 2");
}

/* offline_ttl / message expiry: what expired is dropped at the tick that
 * scans for it, counted apart from the queue limits. */
static void test_expiry(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	int64_t now = (int64_t)time(NULL);

	pl->cfg.offline_ttl = 60;
	queue(fx, 1, 10, now - 5);
	queue(fx, 2, 10, now + 3600);
	queue(fx, 3, 10, now - 1);
	features_tick(pl);
	assert_string_equal(kept(fx), "2");
	assert_int_equal(plugin_stats(pl).dropped_expired, 2);
	assert_int_equal(plugin_stats(pl).dropped_queue_full, 0);
}

/* A client that returns is not handed what expired since the last sweep:
 * its authentication drops it, before the broker hands it the session. */
static void test_expired_dropped_at_auth(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	int64_t now = (int64_t)time(NULL);
	struct client_auth c = {.clientid = clientid};

	pl->cfg.offline_ttl = 60;
	queue(fx, 1, 10, now + 3600);
	queue(fx, 2, 10, now - 1);
	assert_false(features_client_auth(pl, &c));
	assert_string_equal(kept(fx), "1");
	assert_int_equal(plugin_stats(pl).dropped_expired, 1);
}

/* A session that ends is forgotten: its entries count for nobody. */
static void test_session_gone(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.max_queued_messages = 2;
	features_client_connected(pl, clientid);
	for(uint64_t n = 1; n <= 2; n++){
		queue(fx, n, 10, 0);
	}
	features_session_gone(pl, clientid);
	fx->n = 0;   /* the broker dropped them with the session */
	features_client_connected(pl, clientid);
	features_client_disconnected(pl, clientid);
	for(uint64_t n = 3; n <= 4; n++){
		queue(fx, n, 10, 0);
	}
	features_tick(pl);
	assert_string_equal(kept(fx), "3 4");
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 0);
}

/* ---- disk mode: tallies ---- */

static const struct plugin_config disk_cfg = {.queue_storage = QUEUE_STORAGE_DISK, .queue_window = 4,
	.max_queued_messages = 3};

static int disk_setup(void **state)
{
	struct feature_fx *fx = feature_fx_setup(state, sizeof(*fx), &disk_cfg, false);
	struct rec_session s = {.clientid = "phone", .session_expiry_interval = 3600};

	if(!fx){
		return -1;
	}
	assert_int_equal(store_session_put(fx->pl.store, &s), STORE_OK);
	return 0;
}

static int note_seq(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	char *out = ctx;
	size_t len = strlen(out);

	(void)q;
	snprintf(out + len, 256 - len, "%s%llu", len ? " " : "", (unsigned long long)(seq & SEQ_MASK));
	return 0;
}

/* "phone"'s stored queue, once what is buffered is committed: "3 4 5". */
static const char *stored(struct plugin *pl)
{
	static char out[256];

	out[0] = '\0';
	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_walk_queue(pl->store, "phone", note_seq, out), STORE_OK);
	return out;
}

static struct rec_tally tally(struct plugin *pl)
{
	struct rec_tally t;

	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_tally_get(pl->store, "phone", &t), STORE_OK);
	return t;
}

/* A restart: the plugin opened again on its files, "phone"'s queue left
 * stored (not named by the journal). */
static void restart(struct feature_fx *fx)
{
	struct restore_counts counts;

	feature_plugin_close(&fx->pl);
	fake_reset();
	fake.hook_ctx = fx;
	assert_int_equal(feature_plugin_open(&fx->fs, &fx->pl, false), 0);
	restore_queue(&fx->pl, NULL, "phone", false, &counts);
	assert_int_equal(counts.queued, 0);
}

/* A database whose tallies nobody kept is counted once at the start; the
 * tick drops the oldest from the store; the tally is stored with the drop,
 * and the next start reads it instead of the queue. */
static void test_disk_tally_kept(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	pl->cfg.queue_full = QUEUE_FULL_DROP_OLDEST;
	store_phone_queue(pl->store, 5);
	restart(fx);
	assert_true(fake_logged("counting the stored queues"));
	features_tick(pl);
	assert_string_equal(stored(pl), "3 4 5");
	assert_int_equal(plugin_stats(pl).dropped_queue_full, 2);
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 0);   /* the broker holds none of it */
	struct rec_tally t = tally(pl);
	assert_int_equal(t.count, 3);
	assert_int_equal(t.bytes, 6);

	restart(fx);
	assert_false(fake_logged("counting the stored queues"));
	features_tick(pl);
	assert_string_equal(stored(pl), "3 4 5");
	assert_int_equal(plugin_stats(pl).dropped_queue_full, 0);

	/* A limit lowered across a restart acts on the stored tally. */
	pl->cfg.max_queued_messages = 1;
	restart(fx);
	assert_false(fake_logged("counting the stored queues"));
	features_tick(pl);
	assert_string_equal(stored(pl), "5");
	assert_int_equal(tally(pl).count, 1);
}

/* drop-new: the newest stored entries go, read from the back. */
static void test_disk_drop_new(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	pl->cfg.queue_full = QUEUE_FULL_DROP_NEW;
	store_phone_queue(pl->store, 5);
	restart(fx);
	features_tick(pl);
	assert_string_equal(stored(pl), "1 2 3");
	assert_int_equal(tally(pl).count, 3);
}

/* Expired entries go from the store; the tally's earliest expiry becomes
 * that of what stays. */
static void test_disk_expiry(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	int64_t now = (int64_t)time(NULL);
	int64_t expiry[] = {now - 5, now + 3600, now - 1, now + 60};

	pl->cfg.max_queued_messages = 0;
	pl->cfg.offline_ttl = 3600;
	for(uint64_t i = 1; i <= 4; i++){
		struct rec_base_msg m = {.topic = "inbox/phone", .payload = {payload, 10}, .qos = 1,
			.expiry_time = expiry[i - 1]};
		struct rec_queue q = {.store_id = 100 + i, .mid = (uint16_t)i, .qos = 1, .direction = MSG_DIR_OUT,
			.state = MSG_STATE_QUEUED};
		assert_int_equal(store_msg_put(pl->store, 100 + i, &m), STORE_OK);
		assert_int_equal(store_queue_append(pl->store, "phone", i, &q), STORE_OK);
	}
	assert_int_equal(store_commit(pl->store), STORE_OK);
	restart(fx);
	features_tick(pl);
	assert_string_equal(stored(pl), "2 4");
	assert_int_equal(plugin_stats(pl).dropped_expired, 2);
	struct rec_tally t = tally(pl);
	assert_int_equal(t.count, 2);
	assert_int_equal(t.bytes, 20);
	assert_int_equal(t.earliest_expiry, now + 60);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_drop_new, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_drop_oldest, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_bytes, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_online_left_alone, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_expiry, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_expired_dropped_at_auth, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_session_gone, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_tally_kept, disk_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_drop_new, disk_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_expiry, disk_setup, feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
