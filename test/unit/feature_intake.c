/* intake.c without a broker: what MESSAGE_IN journals before the broker
 * acknowledges a publish, and what it refuses. Clients are the test's own;
 * the store and the journal are real ones. */
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
	int version;
};

const char *mosquitto_client_id(const struct mosquitto *client)
{
	return client->id;
}

const char *mosquitto_client_username(const struct mosquitto *client)
{
	return client->username;
}

int mosquitto_client_protocol_version(const struct mosquitto *client)
{
	return client->version;
}

struct fx {
	struct fstore fs;
	struct plugin pl;
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	char err[256];

	if(!fx || fstore_open(&fx->fs, &fx->pl.store)
			|| journal_open(&fx->pl.journal, fx->fs.db, JOURNAL_MIN_SIZE, store_seal(fx->pl.store), err,
				sizeof(err)) != JOURNAL_OK){
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	journal_close(fx->pl.journal);
	store_close(fx->pl.store);
	buf_free(&fx->pl.jbuf);
	buf_free(&fx->pl.props);
	fstore_remove(&fx->fs);
	free(fx);
	return 0;
}

struct seen {
	int n;
	uint8_t kind[8];
	char topic[8][32];
	char source[8][32];
};

static int note(void *ctx, uint64_t lsn, const uint8_t *pt, size_t len)
{
	struct seen *s = ctx;
	struct rec_journal r;

	(void)lsn;
	assert_int_equal(record_decode_journal(pt, len, &r), 0);
	assert_true(s->n < 8);
	s->kind[s->n] = r.kind;
	snprintf(s->topic[s->n], sizeof(s->topic[0]), "%s", r.msg.topic ? r.msg.topic : "");
	snprintf(s->source[s->n], sizeof(s->source[0]), "%s", r.msg.source_id ? r.msg.source_id : "");
	s->n++;
	return 0;
}

static struct seen journaled(struct plugin *pl)
{
	struct seen s = {0};
	uint64_t unreadable = 0;

	assert_int_equal(journal_replay(pl->journal, 0, note, &s, &unreadable), JOURNAL_OK);
	assert_int_equal(unreadable, 0);
	return s;
}

static int message_in(struct plugin *pl, struct mosquitto *c, const char *topic, uint8_t qos)
{
	struct mosquitto_evt_message ed = {.client = c, .topic = (char *)topic, .payload = "hello",
		.payloadlen = 5, .qos = qos};

	return on_message_in(0, &ed, pl);
}

/* An accepted QoS 1 publish is journaled, with its source, before the
 * broker acknowledges it (MESSAGE_IN comes before the PUBACK); QoS 0 is not
 * (nothing is acknowledged), and QoS 2 waits for the broker to store it. */
static void test_qos1_journaled(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto c = {"sensor-1", "alice", 5};
	struct seen s;

	assert_int_equal(message_in(pl, &c, "t/1", 1), MOSQ_ERR_SUCCESS);
	assert_int_equal(message_in(pl, &c, "t/0", 0), MOSQ_ERR_SUCCESS);
	assert_int_equal(message_in(pl, &c, "t/2", 2), MOSQ_ERR_SUCCESS);
	assert_int_equal(message_in(pl, &c, "t/1b", 1), MOSQ_ERR_SUCCESS);
	s = journaled(pl);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.kind[0], JREC_PUBLISH);
	assert_string_equal(s.topic[0], "t/1");
	assert_string_equal(s.source[0], "sensor-1");
	assert_string_equal(s.topic[1], "t/1b");
}

/* A QoS 1 message the broker publishes itself (no MESSAGE_IN) is journaled
 * when it stores it: for a client whose will is due as that will (its
 * record also ends the will), another as an ordinary publish. */
static void test_broker_published(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto_base_msg will = {.store_id = 5, .topic = "status/dev-1", .payload = "gone", .payloadlen = 4,
		.qos = 1, .source_id = "dev-1"};
	struct mosquitto_base_msg other = {.store_id = 6, .topic = "sys/x", .payload = "1", .payloadlen = 1,
		.qos = 1, .source_id = "dev-2"};
	struct seen s;

	will_leaving(pl, "dev-1");
	journal_originated(pl, &will);
	journal_originated(pl, &other);
	s = journaled(pl);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.kind[0], JREC_WILL_SENT);
	assert_string_equal(s.source[0], "dev-1");
	assert_int_equal(s.kind[1], JREC_PUBLISH);
	assert_string_equal(s.source[1], "dev-2");
	pending_wills_free(pl);
}

/* A publish the broker itself routes again (the one MESSAGE_IN just saw,
 * the same buffers) is not journaled twice; QoS 0 without retain is not
 * journaled at all. */
static void test_not_twice(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct mosquitto c = {"sensor-1", NULL, 5};
	char topic[] = "t/1", payload[] = "hello";
	struct mosquitto_evt_message ed = {.client = &c, .topic = topic, .payload = payload, .payloadlen = 5,
		.qos = 1};
	struct mosquitto_base_msg body = {.store_id = 9, .topic = topic, .payload = payload, .payloadlen = 5,
		.qos = 1, .source_id = "sensor-1"};
	struct mosquitto_base_msg q0 = {.store_id = 10, .topic = "sys/y", .payload = "1", .payloadlen = 1};

	assert_int_equal(on_message_in(0, &ed, pl), MOSQ_ERR_SUCCESS);
	journal_originated(pl, &body);
	journal_originated(pl, &q0);
	assert_int_equal(journaled(pl).n, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_qos1_journaled, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_broker_published, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_not_twice, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
