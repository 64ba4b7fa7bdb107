/* seqno.c without a broker: the numbers a session's messages carry
 * (plugin_opt_seq_property). The broker functions the module reaches are the
 * test's own: MESSAGE_OUT's client and the property it adds are recorded. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature_util.h"

static const char *g_client;     /* the client MESSAGE_OUT is for */
static int g_version = 5;
static char g_added[64];         /* the user property the module added */

const char *mosquitto_client_id(const struct mosquitto *client)
{
	(void)client;
	return g_client;
}

int mosquitto_client_protocol_version(const struct mosquitto *client)
{
	(void)client;
	return g_version;
}

int mosquitto_property_copy_all(mosquitto_property **dest, const mosquitto_property *src)
{
	(void)src;
	*dest = NULL;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_property_add_string_pair(mosquitto_property **proplist, int identifier, const char *name,
		const char *value)
{
	assert_int_equal(identifier, MQTT_PROP_USER_PROPERTY);
	snprintf(g_added, sizeof(g_added), "%s=%s", name, value);
	*proplist = (mosquitto_property *)g_added;
	return MOSQ_ERR_SUCCESS;
}

void mosquitto_property_free_all(mosquitto_property **properties)
{
	*properties = NULL;
}

static int setup(void **state)
{
	struct plugin *pl = calloc(1, sizeof(*pl));

	if(!pl){
		return -1;
	}
	pl->cfg.seq_property = "seq";
	*state = pl;
	return 0;
}

static int teardown(void **state)
{
	struct plugin *pl = *state;

	seq_free(pl);
	free(pl);
	return 0;
}

/* What MESSAGE_OUT adds for one QoS 1 message to client (the number, or ""
 * when nothing is added). */
static const char *send_one(struct plugin *pl, const char *client)
{
	struct mosquitto_evt_message ed = {.qos = 1};

	g_client = client;
	g_added[0] = '\0';
	assert_int_equal(on_message_out(0, &ed, pl), MOSQ_ERR_SUCCESS);
	return g_added[0] ? strchr(g_added, '=') + 1 : "";
}

/* Each session numbers its messages from 1, apart from the others; off
 * without the option. */
static void test_numbers_per_session(void **state)
{
	struct plugin *pl = *state;

	assert_int_equal(seq_assign(pl, "a", 11), 1);
	assert_int_equal(seq_assign(pl, "a", 12), 2);
	assert_int_equal(seq_assign(pl, "b", 40), 1);
	assert_int_equal(seq_assign(pl, "a", 13), 3);
	assert_int_equal(seq_lookup(pl, "a", 12), 2);
	assert_int_equal(seq_lookup(pl, "b", 12), 0);
	seq_remove(pl, "a", 12);
	assert_int_equal(seq_lookup(pl, "a", 12), 0);
	assert_int_equal(seq_assign(pl, "a", 14), 4);

	pl->cfg.seq_property = NULL;
	assert_int_equal(seq_assign(pl, "c", 1), 0);
}

/* Messages go out with their numbers in order; after the connection ends
 * the ones not acknowledged go out again with the same numbers, except a
 * QoS 2 one whose PUBREL was sent (only PUBREL goes out again). */
static void test_resend_keeps_numbers(void **state)
{
	struct plugin *pl = *state;

	for(uint64_t id = 1; id <= 4; id++){
		seq_assign(pl, "a", id);
	}
	assert_string_equal(send_one(pl, "a"), "1");
	assert_string_equal(send_one(pl, "a"), "2");
	assert_string_equal(send_one(pl, "a"), "3");
	seq_remove(pl, "a", 1);     /* acknowledged */
	seq_released(pl, "a", 2);   /* PUBREL sent */
	seq_connection_ended(pl, "a");
	assert_string_equal(send_one(pl, "a"), "3");
	assert_string_equal(send_one(pl, "a"), "4");
	assert_string_equal(send_one(pl, "a"), "");   /* nothing numbered left */
	assert_string_equal(send_one(pl, "nobody"), "");
	/* An MQTT 3.1.1 client has no user properties: the number is used up
	 * all the same. */
	seq_assign(pl, "a", 5);
	g_version = 4;
	assert_string_equal(send_one(pl, "a"), "");
	g_version = 5;
	seq_assign(pl, "a", 6);
	assert_string_equal(send_one(pl, "a"), "6");
}

/* After a restart the numbers go on after the highest one stored, whether
 * from a queue entry or the session's last number. */
static void test_restore_goes_on(void **state)
{
	struct plugin *pl = *state;

	assert_int_equal(seq_restore(pl, "a", 100, 7, false), 0);
	assert_int_equal(seq_restore(pl, "a", 101, 5, true), 0);
	assert_int_equal(seq_assign(pl, "a", 102), 8);
	seq_restore_last(pl, "b", 41);
	seq_restore_last(pl, "b", 12);
	assert_int_equal(seq_assign(pl, "b", 1), 42);
	/* The restored QoS 2 message whose PUBREL was sent is not numbered again. */
	assert_string_equal(send_one(pl, "a"), "7");
	assert_string_equal(send_one(pl, "a"), "8");
}

/* A session that ends takes its numbers with it. */
static void test_session_end_forgets(void **state)
{
	struct plugin *pl = *state;

	seq_assign(pl, "a", 1);
	seq_assign(pl, "a", 2);
	seq_session_ended(pl, "a");
	assert_int_equal(seq_lookup(pl, "a", 1), 0);
	assert_int_equal(seq_assign(pl, "a", 3), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_numbers_per_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resend_keeps_numbers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_goes_on, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_end_forgets, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
