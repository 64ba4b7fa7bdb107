/* retention.c without a broker: plugin_opt_max_queued_messages,
 * max_queued_bytes, queue_full and offline_ttl over offline sessions, in
 * memory mode. The test plays the broker: it holds each session's queue,
 * and its delete (the only way the plugin can drop a message) raises the
 * delete event back, as Mosquitto does. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

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
static struct held_msg g_queue[64];
static size_t g_n;
static const char *g_clientid;
static struct plugin *g_pl;

int mosquitto_persist_client_msg_delete(struct mosquitto_client_msg *cm)
{
	if(strcmp(cm->clientid, g_clientid)){
		return MOSQ_ERR_NOT_FOUND;
	}
	for(size_t i = 0; i < g_n; i++){
		if(!g_queue[i].gone && g_queue[i].mid == cm->mid){
			g_queue[i].gone = true;
			retention_remove(g_pl, cm->clientid, g_queue[i].cmsg_id);   /* the delete event */
			return MOSQ_ERR_SUCCESS;
		}
	}
	return MOSQ_ERR_NOT_FOUND;
}

static int setup(void **state)
{
	struct plugin *pl = calloc(1, sizeof(*pl));

	if(!pl){
		return -1;
	}
	g_pl = pl;
	g_clientid = "phone";
	g_n = 0;
	*state = pl;
	return 0;
}

static int teardown(void **state)
{
	struct plugin *pl = *state;

	retention_free(pl);
	free(pl);
	return 0;
}

/* The broker queues message number n (store id n, packet id n) of bytes
 * bytes for the offline session. */
static void queue(struct plugin *pl, uint64_t n, uint32_t bytes, int64_t expiry)
{
	retention_body(pl, n, bytes, expiry);
	retention_add(pl, g_clientid, n, (uint16_t)n, 1, n);
	g_queue[g_n++] = (struct held_msg){n, (uint16_t)n, false};
}

/* The numbers still in the broker's queue, as a string: "1 2 3". */
static const char *kept(void)
{
	static char out[256];
	size_t len = 0;

	out[0] = '\0';
	for(size_t i = 0; i < g_n; i++){
		if(!g_queue[i].gone){
			len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%llu", len ? " " : "",
					(unsigned long long)g_queue[i].cmsg_id);
		}
	}
	return out;
}

static void test_drop_new(void **state)
{
	struct plugin *pl = *state;

	pl->cfg.max_queued_messages = 3;
	pl->cfg.queue_full = QUEUE_FULL_DROP_NEW;
	for(uint64_t n = 1; n <= 5; n++){
		queue(pl, n, 10, 0);
	}
	retention_tick(pl);
	assert_string_equal(kept(), "1 2 3");
	assert_int_equal(pl->retention.dropped_full, 2);
}

static void test_drop_oldest(void **state)
{
	struct plugin *pl = *state;

	pl->cfg.max_queued_messages = 3;
	pl->cfg.queue_full = QUEUE_FULL_DROP_OLDEST;
	for(uint64_t n = 1; n <= 5; n++){
		queue(pl, n, 10, 0);
	}
	retention_tick(pl);
	assert_string_equal(kept(), "3 4 5");
	/* An acknowledged message makes room: nothing more goes. */
	g_queue[2].gone = true;
	retention_remove(pl, g_clientid, 3);
	queue(pl, 6, 10, 0);
	retention_tick(pl);
	assert_string_equal(kept(), "4 5 6");
	assert_int_equal(pl->retention.dropped_full, 2);
}

/* Bytes count the bodies' payload sizes. */
static void test_bytes(void **state)
{
	struct plugin *pl = *state;

	pl->cfg.max_queued_bytes = 250;
	for(uint64_t n = 1; n <= 4; n++){
		queue(pl, n, 100, 0);
	}
	retention_tick(pl);
	assert_string_equal(kept(), "1 2");
}

/* A connected client's queue is left alone; once it goes offline over the
 * limit, the next tick trims it. */
static void test_online_left_alone(void **state)
{
	struct plugin *pl = *state;

	pl->cfg.max_queued_messages = 2;
	retention_online(pl, g_clientid, true);
	for(uint64_t n = 1; n <= 4; n++){
		queue(pl, n, 10, 0);
	}
	retention_tick(pl);
	assert_string_equal(kept(), "1 2 3 4");
	retention_online(pl, g_clientid, false);
	retention_tick(pl);
	assert_string_equal(kept(), "1 2");
}

/* offline_ttl / message expiry: what expired is dropped at the tick that
 * scans for it, counted apart from the queue limits. */
static void test_expiry(void **state)
{
	struct plugin *pl = *state;
	int64_t now = (int64_t)time(NULL);

	pl->cfg.offline_ttl = 60;
	pl->retention.expiry_scan_at = 0;
	queue(pl, 1, 10, now - 5);
	queue(pl, 2, 10, now + 3600);
	queue(pl, 3, 10, now - 1);
	retention_tick(pl);
	assert_string_equal(kept(), "2");
	assert_int_equal(pl->retention.dropped_expired, 2);
	assert_int_equal(pl->retention.dropped_full, 0);
}

/* A session that ends is forgotten: its entries count for nobody. */
static void test_session_gone(void **state)
{
	struct plugin *pl = *state;

	pl->cfg.max_queued_messages = 2;
	retention_online(pl, g_clientid, true);
	for(uint64_t n = 1; n <= 2; n++){
		queue(pl, n, 10, 0);
	}
	retention_session_gone(pl, g_clientid);
	g_n = 0;
	retention_online(pl, g_clientid, true);
	retention_online(pl, g_clientid, false);
	for(uint64_t n = 3; n <= 4; n++){
		queue(pl, n, 10, 0);
	}
	retention_tick(pl);
	assert_string_equal(kept(), "3 4");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_drop_new, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_oldest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_online_left_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_gone, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
