/* budget.c without a broker: what plugin_opt_max_db_size refuses, and how.
 * Clients are the test's own (struct mosquitto is opaque to the plugin), as
 * are the broker functions the module reaches; the store is a real one. */
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
	int version;
	bool clean;
};

const char *mosquitto_client_id(const struct mosquitto *client)
{
	return client->id;
}

int mosquitto_client_protocol_version(const struct mosquitto *client)
{
	return client->version;
}

bool mosquitto_client_clean_session(const struct mosquitto *client)
{
	return client->clean;
}

/* Filters of the form a/b, a/+, a/# are all these tests use. */
int mosquitto_topic_matches_sub(const char *sub, const char *topic, bool *result)
{
	size_t n = strlen(sub);

	if(n >= 2 && !strcmp(sub + n - 2, "/#")){
		*result = !strncmp(sub, topic, n - 1) || (strlen(topic) == n - 2 && !strncmp(sub, topic, n - 2));
	}else if(n >= 2 && !strcmp(sub + n - 2, "/+")){
		*result = !strncmp(sub, topic, n - 1) && !strchr(topic + n - 1, '/');
	}else{
		*result = !strcmp(sub, topic);
	}
	return MOSQ_ERR_SUCCESS;
}

struct fx {
	struct fstore fs;
	struct plugin pl;
	uint64_t used;    /* the store's pages in use after the seed */
};

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
	struct fx *fx = calloc(1, sizeof(*fx));

	if(!fx || fstore_open(&fx->fs, &fx->pl.store)){
		free(fx);
		return -1;
	}
	seed(fx->pl.store);
	fx->used = store_used_bytes(fx->pl.store);
	fx->pl.cfg.control_users = "ops";
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	budget_free(&fx->pl);
	store_close(fx->pl.store);
	fstore_remove(&fx->fs);
	free(fx);
	return 0;
}

static int publish(struct plugin *pl, struct mosquitto *from, const char *topic, uint8_t qos, bool retain,
		uint32_t len)
{
	struct mosquitto_evt_message ed = {.client = from, .topic = (char *)topic, .qos = qos, .retain = retain,
		.payloadlen = len};

	return budget_check(pl, &ed);
}

static int connect_as(struct plugin *pl, const char *id, int version, bool clean, const char *username)
{
	struct mosquitto c = {id, version, clean};
	struct mosquitto_evt_basic_auth ed = {.client = &c, .username = (char *)username};

	return on_basic_auth_budget(0, &ed, pl);
}

static int subscribe_as(struct plugin *pl, const char *id)
{
	struct mosquitto c = {id, 5, false};
	struct mosquitto_evt_subscribe ed = {.client = &c, .data = {.topic_filter = "more/#"}};

	return on_subscribe_budget(0, &ed, pl);
}

/* Under the budget nothing is refused. */
static void test_under_budget(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto pub = {"pub", 5, true};

	pl->cfg.max_db_size = (size_t)fx->used + (1 << 20);
	assert_int_equal(publish(pl, &pub, "inbox/phone/x", 1, false, 100), MOSQ_ERR_SUCCESS);
	assert_int_equal(publish(pl, &pub, "news", 1, true, 100), MOSQ_ERR_SUCCESS);
	assert_int_equal(connect_as(pl, "newcomer", 5, false, NULL), MOSQ_ERR_PLUGIN_IGNORE);
	assert_int_equal(subscribe_as(pl, "phone"), MOSQ_ERR_SUCCESS);
}

/* At the budget, a QoS 1/2 publish an offline session subscribes to is
 * refused with the protocol's means (MQTT 5: quota exceeded; 3.1.1: the
 * publisher is disconnected); one only a connected session or nobody
 * subscribes to, and QoS 0, pass; each refusal is counted. */
static void test_offline_messages_refused(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto v5 = {"pub5", 5, true}, v3 = {"pub3", 4, true};

	pl->cfg.max_db_size = (size_t)fx->used;
	assert_int_equal(publish(pl, &v5, "inbox/phone/x", 1, false, 10), MOSQ_ERR_QUOTA_EXCEEDED);
	assert_int_equal(publish(pl, &v3, "inbox/phone/x", 2, false, 10), MOSQ_ERR_ADMINISTRATIVE_ACTION);
	assert_int_equal(publish(pl, &v5, "inbox/phone/x", 0, false, 10), MOSQ_ERR_SUCCESS);
	assert_int_equal(publish(pl, &v5, "live/x", 1, false, 10), MOSQ_ERR_SUCCESS);
	assert_int_equal(publish(pl, &v5, "elsewhere", 1, false, 10), MOSQ_ERR_SUCCESS);
	assert_int_equal(pl->budget.refused, 2);
}

/* At the budget a retained message that sets a topic is refused (QoS 0:
 * dropped), one that clears a topic passes. */
static void test_retained_refused_clearing_passes(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto v5 = {"pub5", 5, true};

	pl->cfg.max_db_size = (size_t)fx->used;
	assert_int_equal(publish(pl, &v5, "status/x", 1, true, 500000), MOSQ_ERR_QUOTA_EXCEEDED);
	assert_int_equal(publish(pl, &v5, "status/x", 0, true, 5), MOSQ_ERR_QUOTA_EXCEEDED);
	assert_int_equal(publish(pl, &v5, "status/x", 1, true, 0), MOSQ_ERR_SUCCESS);
	assert_int_equal(pl->budget.refused_retained, 2);
}

/* At the budget a connection that would start a stored session is refused
 * (server busy); a stored session, a clean MQTT 3.1.1 client and an
 * operator of plugin_opt_control_users get in. A stored session's
 * subscription is refused, a clean client's is not. */
static void test_sessions_and_subscriptions(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;

	pl->cfg.max_db_size = (size_t)fx->used;
	assert_int_equal(connect_as(pl, "newcomer", 5, false, NULL), MOSQ_ERR_SERVER_BUSY);
	assert_int_equal(connect_as(pl, "newcomer", 5, true, NULL), MOSQ_ERR_SERVER_BUSY);
	assert_int_equal(connect_as(pl, "newcomer", 4, false, NULL), MOSQ_ERR_SERVER_BUSY);
	assert_int_equal(connect_as(pl, "newcomer", 4, true, NULL), MOSQ_ERR_PLUGIN_IGNORE);
	assert_int_equal(connect_as(pl, "phone", 5, false, NULL), MOSQ_ERR_PLUGIN_IGNORE);
	assert_int_equal(connect_as(pl, "console", 5, false, "ops"), MOSQ_ERR_PLUGIN_IGNORE);
	assert_int_equal(connect_as(pl, "console", 5, false, "alice"), MOSQ_ERR_SERVER_BUSY);
	assert_int_equal(pl->budget.refused_sessions, 4);

	assert_int_equal(subscribe_as(pl, "phone"), MOSQ_ERR_QUOTA_EXCEEDED);
	assert_int_equal(subscribe_as(pl, "transient"), MOSQ_ERR_SUCCESS);
	assert_int_equal(pl->budget.refused_subscriptions, 1);
}

/* What is let in between two measurements counts: a few large messages
 * cannot overrun the budget many times before the next one. */
static void test_admitted_bytes_count(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto v5 = {"pub5", 5, true};

	pl->cfg.max_db_size = (size_t)fx->used + 1000;
	assert_int_equal(publish(pl, &v5, "inbox/phone/x", 1, false, 600), MOSQ_ERR_SUCCESS);
	assert_int_equal(publish(pl, &v5, "inbox/phone/x", 1, false, 600), MOSQ_ERR_SUCCESS);
	assert_int_equal(publish(pl, &v5, "inbox/phone/x", 1, false, 600), MOSQ_ERR_QUOTA_EXCEEDED);
	/* QoS 0 without retain is not stored: it does not count. */
	pl->cfg.max_db_size = (size_t)fx->used + 1000;
	pl->budget.admitted = 0;
	for(int i = 0; i < 10; i++){
		assert_int_equal(publish(pl, &v5, "inbox/phone/x", 0, false, 600), MOSQ_ERR_SUCCESS);
	}
	assert_int_equal(publish(pl, &v5, "inbox/phone/x", 1, false, 10), MOSQ_ERR_SUCCESS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_under_budget, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_offline_messages_refused, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_retained_refused_clearing_passes, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sessions_and_subscriptions, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_admitted_bytes_count, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
