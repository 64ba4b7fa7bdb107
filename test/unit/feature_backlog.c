/* backlog.c without a broker: plugin_opt_queue_storage disk. The test plays
 * the broker: it records which sessions' queues the plugin has it let go of
 * and which stored messages it is handed back, in what order. The store is
 * a real one, seeded with a session's queue. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "feature_util.h"

struct mosquitto {
	const char *id;
};

static int g_released;             /* queues the broker was told to let go of */
static uint64_t g_handed[64];      /* messages handed back, as the client's message numbers */
static uint16_t g_mids[64];        /* and the packet ids they were given */
static size_t g_n_handed;

const char *mosquitto_client_id(const struct mosquitto *client)
{
	return client->id;
}

void *mosquitto_malloc(size_t size)
{
	return malloc(size);
}

char *mosquitto_strdup(const char *s)
{
	return strdup(s);
}

void mosquitto_free(void *mem)
{
	free(mem);
}

int mosquitto_persist_client_msg_clear(struct mosquitto_client_msg *cm)
{
	assert_string_equal(cm->clientid, "phone");
	g_released++;
	return MOSQ_ERR_SUCCESS;
}

/* The plugin nudges the broker to fill a connected client's in-flight window
 * by deleting a packet id none of its messages has. */
int mosquitto_persist_client_msg_delete(struct mosquitto_client_msg *cm)
{
	assert_string_equal(cm->clientid, "phone");
	for(size_t i = 0; i < g_n_handed; i++){
		assert_int_not_equal(cm->mid, g_mids[i]);
	}
	return MOSQ_ERR_NOT_FOUND;
}

int mosquitto_persist_base_msg_add(struct mosquitto_base_msg *msg)
{
	free(msg->topic);
	free(msg->payload);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_persist_client_msg_add(struct mosquitto_client_msg *cm)
{
	assert_string_equal(cm->clientid, "phone");
	assert_true(g_n_handed < 64);
	g_mids[g_n_handed] = cm->mid;
	g_handed[g_n_handed++] = cm->cmsg_id & ((1ull << 40) - 1);
	return MOSQ_ERR_SUCCESS;
}

static void nothing_body(struct plugin *pl, uint64_t store_id, uint32_t bytes, int64_t expiry)
{
	(void)pl, (void)store_id, (void)bytes, (void)expiry;
}

static void nothing_incoming(struct plugin *pl, uint64_t store_id, const char *clientid, uint64_t seq)
{
	(void)pl, (void)store_id, (void)clientid, (void)seq;
}

static void nothing_outgoing(struct plugin *pl, const char *clientid, uint64_t seq, uint16_t mid, uint8_t qos,
		uint64_t store_id)
{
	(void)pl, (void)clientid, (void)seq, (void)mid, (void)qos, (void)store_id;
}

static void nothing_refused(struct plugin *pl, const char *clientid, uint64_t seq)
{
	(void)pl, (void)clientid, (void)seq;
}

static const struct handed_notes no_features = {nothing_body, nothing_incoming, nothing_outgoing, nothing_refused};

struct fx {
	struct fstore fs;
	struct plugin pl;
};

/* The session "phone" with messages 1..n stored. */
static void seed(struct store *st, uint64_t n)
{
	struct rec_session s = {.clientid = "phone", .session_expiry_interval = 3600};

	assert_int_equal(store_session_put(st, &s), STORE_OK);
	for(uint64_t i = 1; i <= n; i++){
		struct rec_base_msg m = {.topic = "inbox/phone", .payload = {(const uint8_t *)"hi", 2}, .qos = 1};
		struct rec_queue q = {.store_id = 100 + i, .mid = (uint16_t)i, .qos = 1, .direction = MSG_DIR_OUT,
			.state = MSG_STATE_QUEUED};

		assert_int_equal(store_msg_put(st, 100 + i, &m), STORE_OK);
		assert_int_equal(store_queue_append(st, "phone", i, &q), STORE_OK);
	}
	assert_int_equal(store_commit(st), STORE_OK);
}

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if(!fx || fstore_open(&fx->fs, &fx->pl.store)){
		free(fx);
		return -1;
	}
	fx->pl.cfg.queue_storage = QUEUE_STORAGE_DISK;
	fx->pl.cfg.queue_window = 4;
	fx->pl.handed = &no_features;
	seed(fx->pl.store, 10);
	g_released = 0;
	g_n_handed = 0;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	backlog_free(&fx->pl);
	bodies_free(&fx->pl);
	store_close(fx->pl.store);
	fstore_remove(&fx->fs);
	free(fx);
	return 0;
}

static void returns(struct plugin *pl)
{
	struct mosquitto c = {"phone"};
	struct mosquitto_evt_basic_auth ed = {.client = &c};

	assert_int_equal(on_basic_auth_backlog(0, &ed, pl), MOSQ_ERR_PLUGIN_IGNORE);
	backlog_connected(pl, "phone");
	backlog_online(pl, "phone", true);
}

/* The broker acknowledges message n of the connected client. */
static void acknowledged(struct plugin *pl, uint64_t n)
{
	assert_true(backlog_msg_deleted(pl, "phone", store_queue_seq(pl->store, n), (uint16_t)n));
}

static const char *handed(void)
{
	static char out[256];
	size_t len = 0;

	out[0] = '\0';
	for(size_t i = 0; i < g_n_handed; i++){
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%llu", len ? " " : "",
				(unsigned long long)g_handed[i]);
	}
	return out;
}

/* An offline session the broker holds messages of is let go of at the
 * tick; a connected one, or one with a PUBREL outstanding, is not. */
static void test_offline_sessions_released(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;

	backlog_session_added(pl, "phone");
	backlog_online(pl, "phone", true);
	backlog_tick(pl);
	assert_int_equal(g_released, 0);

	backlog_pubrel_sent(pl, "phone", 7);
	backlog_online(pl, "phone", false);
	backlog_tick(pl);
	assert_int_equal(g_released, 0);
	assert_true(backlog_msg_deleted(pl, "phone", 7, 7));   /* PUBCOMP: the exchange is over */
	backlog_online(pl, "phone", true);
	backlog_online(pl, "phone", false);
	backlog_tick(pl);
	assert_int_equal(g_released, 1);
	assert_int_equal(pl->backlog.evicted, 1);
	assert_true(backlog_released(pl, "phone"));
}

/* A returning client gets its stored queue back in order, queue_window
 * messages at a time, the next part once half of the last is
 * acknowledged; nothing twice. */
static void test_hand_back_in_parts(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;

	backlog_session_added(pl, "phone");
	backlog_online(pl, "phone", false);
	backlog_tick(pl);
	assert_int_equal(g_released, 1);

	returns(pl);
	assert_string_equal(handed(), "1 2 3 4");
	backlog_tick(pl);
	assert_string_equal(handed(), "1 2 3 4");   /* none acknowledged yet */
	acknowledged(pl, 1);
	backlog_tick(pl);
	assert_string_equal(handed(), "1 2 3 4");   /* 3 of 4 still held */
	acknowledged(pl, 2);
	backlog_tick(pl);
	assert_string_equal(handed(), "1 2 3 4 5 6");
	for(uint64_t n = 3; n <= 6; n++){
		acknowledged(pl, n);
	}
	backlog_tick(pl);
	assert_string_equal(handed(), "1 2 3 4 5 6 7 8 9 10");
	backlog_tick(pl);
	assert_string_equal(handed(), "1 2 3 4 5 6 7 8 9 10");
	assert_int_equal(pl->backlog.loaded, 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_offline_sessions_released, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_hand_back_in_parts, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
