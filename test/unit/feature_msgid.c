/* msgid.c without a broker: idempotent publishes (plugin_opt_dedup_property).
 * Clients and property lists are the test's own (both are opaque to the
 * plugin), as are the broker functions the module reaches; the store is a
 * real one. */
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
	const char *username;
};

/* One user property: name=value. */
struct mqtt5__property {
	const char *name;
	const char *value;
};

const char *mosquitto_client_id(const struct mosquitto *client)
{
	return client->id;
}

const char *mosquitto_client_username(const struct mosquitto *client)
{
	return client->username;
}

void *mosquitto_malloc(size_t size)
{
	return malloc(size);
}

mosquitto_property *mosquitto_property_next(const mosquitto_property *proplist)
{
	(void)proplist;
	return NULL;
}

int mosquitto_property_identifier(const mosquitto_property *property)
{
	(void)property;
	return MQTT_PROP_USER_PROPERTY;
}

const char *mosquitto_property_string_name(const mosquitto_property *property)
{
	return property->name;
}

uint16_t mosquitto_property_string_name_length(const mosquitto_property *property)
{
	return (uint16_t)strlen(property->name);
}

const char *mosquitto_property_string_value(const mosquitto_property *property)
{
	return property->value;
}

uint16_t mosquitto_property_string_value_length(const mosquitto_property *property)
{
	return (uint16_t)strlen(property->value);
}

struct fx {
	struct fstore fs;
	struct plugin pl;
};

static void open_plugin(struct fx *fx)
{
	assert_int_equal(fstore_open(&fx->fs, &fx->pl.store), 0);
	assert_int_equal(dedup_open(&fx->pl), MOSQ_ERR_SUCCESS);
}

static void close_plugin(struct fx *fx)
{
	dedup_close(&fx->pl);
	assert_int_equal(store_commit(fx->pl.store), STORE_OK);
	store_close(fx->pl.store);
	fx->pl.store = NULL;
}

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if(!fx){
		return -1;
	}
	fx->pl.cfg.dedup_property = "msgid";
	fx->pl.cfg.dedup_window = 3600;
	fx->pl.cfg.dedup_max_ids = 1000;
	open_plugin(fx);
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	close_plugin(fx);
	fstore_remove(&fx->fs);
	free(fx);
	return 0;
}

/* MESSAGE_IN of a publish with the property name=value (no property when
 * value is NULL): whether it is a duplicate; a duplicate's topic leads
 * nowhere and it is not retained. */
static bool publish(struct plugin *pl, struct mosquitto *c, uint8_t qos, const char *name, const char *value)
{
	struct mqtt5__property prop = {name, value};
	struct mosquitto_evt_message ed = {.client = c, .topic = "orders/new", .qos = qos, .retain = true,
		.properties = value ? &prop : NULL};
	bool dup = dedup_check(pl, &ed);

	if(dup){
		assert_true(ed.topic != NULL && !strncmp(ed.topic, "$persist-lmdb-duplicate-", 24));
		assert_true(strlen(ed.topic) > 65535);
		assert_false(ed.retain);
		free(ed.topic);
	}else{
		assert_string_equal(ed.topic, "orders/new");
		assert_true(ed.retain);
	}
	return dup;
}

/* The same id from the same identity (the username, else the client id)
 * is a duplicate; from another identity, or without the property, it is
 * not. */
static void test_same_id_same_identity(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto alice_phone = {"phone", "alice"}, alice_laptop = {"laptop", "alice"};
	struct mosquitto bob = {"bob-1", "bob"}, anon = {"sensor-9", NULL}, anon2 = {"sensor-10", NULL};

	assert_false(publish(pl, &alice_phone, 1, "msgid", "m1"));
	assert_true(publish(pl, &alice_phone, 1, "msgid", "m1"));
	assert_true(publish(pl, &alice_laptop, 1, "msgid", "m1"));
	assert_false(publish(pl, &bob, 1, "msgid", "m1"));
	assert_false(publish(pl, &alice_phone, 1, "msgid", "m2"));
	assert_false(publish(pl, &anon, 1, "msgid", "m1"));
	assert_true(publish(pl, &anon, 1, "msgid", "m1"));
	assert_false(publish(pl, &anon2, 1, "msgid", "m1"));
	assert_false(publish(pl, &alice_phone, 1, NULL, NULL));
	assert_false(publish(pl, &alice_phone, 1, NULL, NULL));
	assert_false(publish(pl, &alice_phone, 1, "other", "m1"));
	assert_int_equal(pl->dedup_dropped, 3);
}

/* The ids outlive a restart: they are in the store. */
static void test_ids_survive_a_restart(void **state)
{
	struct fx *fx = *state;
	struct mosquitto c = {"phone", "alice"};

	assert_false(publish(&fx->pl, &c, 1, "msgid", "order-17"));
	close_plugin(fx);
	open_plugin(fx);
	assert_true(publish(&fx->pl, &c, 1, "msgid", "order-17"));
}

/* QoS 2: a resend of an exchange the broker holds for a session is the
 * broker's to match (not diverted); one it dropped with the connection
 * before holding it is forgotten, so the client's resend goes through. */
static void test_qos2_exchanges(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto c = {"phone", "alice"};
	struct mqtt5__property prop = {"msgid", "q2-a"};
	struct mosquitto_base_msg body = {.store_id = 77, .source_id = "phone", .source_username = "alice",
		.properties = &prop};

	assert_false(publish(pl, &c, 2, "msgid", "q2-a"));
	dedup_q2_stored(pl, &body, MSG_DIR_IN);
	assert_false(publish(pl, &c, 2, "msgid", "q2-a"));
	dedup_client_gone(pl, "phone", false);   /* held: kept */
	assert_false(publish(pl, &c, 2, "msgid", "q2-a"));
	dedup_q2_released(pl, 77);
	assert_true(publish(pl, &c, 2, "msgid", "q2-a"));

	assert_false(publish(pl, &c, 2, "msgid", "q2-b"));
	dedup_client_gone(pl, "phone", false);   /* not held: forgotten */
	assert_false(publish(pl, &c, 2, "msgid", "q2-b"));
	assert_true(publish(pl, &c, 1, "msgid", "q2-b"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_same_id_same_identity, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ids_survive_a_restart, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_qos2_exchanges, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
