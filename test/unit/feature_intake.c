/* intake.c without a broker: what the plugin journals before the broker
 * acknowledges a publish, driven through the dispatch (features.c) as the
 * broker-facing files drive it. The store and the journal are real ones;
 * the journal is read back to see what was written. */
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
	return feature_fx_setup(state, sizeof(struct feature_fx), NULL, true) ? 0 : -1;
}

struct seen {
	int n;
	uint8_t kind[8];
	char topic[8][32];
	char source[8][32];
	char clientid[8][32];
};

static void note(void *ctx, const struct rec_journal *r)
{
	struct seen *s = ctx;

	assert_true(s->n < 8);
	s->kind[s->n] = r->kind;
	snprintf(s->topic[s->n], sizeof(s->topic[0]), "%s", r->msg.topic ? r->msg.topic : "");
	snprintf(s->source[s->n], sizeof(s->source[0]), "%s", r->msg.source_id ? r->msg.source_id : "");
	snprintf(s->clientid[s->n], sizeof(s->clientid[0]), "%s", r->clientid ? r->clientid : "");
	s->n++;
}

static struct seen journaled(struct plugin *pl)
{
	struct seen s = {0};

	assert_int_equal(journal_records(pl->journal, note, &s), 0);
	return s;
}

/* A PUBLISH as the broker's MESSAGE_IN hands it over. */
static enum verdict message_in(struct plugin *pl, const char *clientid, const char *username, const char *topic,
		uint8_t qos)
{
	struct message p = {.m = {.topic = topic, .payload = {(const uint8_t *)"hello", 5}, .qos = qos,
		.source_id = clientid, .source_username = username}};

	return features_publish_in(pl, &p);
}

/* An accepted QoS 1 publish is journaled, with its source, before the
 * broker acknowledges it (MESSAGE_IN comes before the PUBACK); QoS 0 is not
 * (nothing is acknowledged), and QoS 2 waits for the broker to store it. */
static void test_qos1_journaled(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct seen s;

	assert_int_equal(message_in(pl, "sensor-1", "alice", "t/1", 1), VERDICT_ACCEPT);
	assert_int_equal(message_in(pl, "sensor-1", "alice", "t/0", 0), VERDICT_ACCEPT);
	assert_int_equal(message_in(pl, "sensor-1", "alice", "t/2", 2), VERDICT_ACCEPT);
	assert_int_equal(message_in(pl, "sensor-1", "alice", "t/1b", 1), VERDICT_ACCEPT);
	s = journaled(pl);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.kind[0], JREC_PUBLISH);
	assert_string_equal(s.topic[0], "t/1");
	assert_string_equal(s.source[0], "sensor-1");
	assert_int_equal(s.kind[1], JREC_PUBLISH);
	assert_string_equal(s.topic[1], "t/1b");
	assert_int_equal(fake.n_calls, 0);
}

/* A QoS 1 message the broker publishes itself (no MESSAGE_IN) is journaled
 * when it stores it: for a client whose will is due (the broker is taking
 * it offline) as that will (its record also ends the will), another as an
 * ordinary publish. */
static void test_broker_published(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct message will = {.store_id = 5, .m = {.topic = "status/dev-1", .payload = {(const uint8_t *)"gone", 4},
		.qos = 1, .source_id = "dev-1"}};
	struct message other = {.store_id = 6, .m = {.topic = "sys/x", .payload = {(const uint8_t *)"1", 1},
		.qos = 1, .source_id = "dev-2"}};
	struct seen s;

	features_client_disconnected(pl, "dev-1");
	features_body_added(pl, &will);
	features_body_added(pl, &other);
	s = journaled(pl);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.kind[0], JREC_ONLINE);   /* the disconnection itself */
	assert_string_equal(s.clientid[0], "dev-1");
	assert_int_equal(s.kind[1], JREC_WILL_SENT);
	assert_string_equal(s.source[1], "dev-1");
	assert_string_equal(s.topic[1], "status/dev-1");
	assert_int_equal(s.kind[2], JREC_PUBLISH);
	assert_string_equal(s.source[2], "dev-2");
}

/* A publish the broker itself routes again (the one MESSAGE_IN just saw,
 * the same buffers) is not journaled twice; QoS 0 without retain is not
 * journaled at all, a retained QoS 0 one is. */
static void test_not_twice(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	static const char topic[] = "t/1";
	static const uint8_t payload[] = "hello";
	struct message in = {.m = {.topic = topic, .payload = {payload, 5}, .qos = 1, .source_id = "sensor-1"}};
	struct message body = {.store_id = 9, .m = in.m};
	struct message q0 = {.store_id = 10, .m = {.topic = "sys/y", .payload = {(const uint8_t *)"1", 1}}};
	struct message q0_retained = {.store_id = 11, .m = {.topic = "sys/z", .payload = {(const uint8_t *)"1", 1},
		.retain = true}};
	struct seen s;

	assert_int_equal(features_publish_in(pl, &in), VERDICT_ACCEPT);
	features_body_added(pl, &body);
	features_body_added(pl, &q0);
	assert_int_equal(journaled(pl).n, 1);
	features_body_added(pl, &q0_retained);
	s = journaled(pl);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.kind[1], JREC_PUBLISH);
	assert_string_equal(s.topic[1], "sys/z");
}

struct sent_seen {
	int n;
	struct rec_journal last;
};

static void note_entry(void *ctx, const struct rec_journal *r)
{
	struct sent_seen *s = ctx;

	if(r->kind == JREC_ENTRY){
		s->n++;
		s->last = *r;
		s->last.clientid = NULL;
	}
}

/* With stored queues a QoS 2 PUBLISH that went out (the entry's update to
 * "wait for PUBREC") is journaled with its packet id and state, so that a
 * restore knows it was sent and a hand-back keeps its id; QoS 1 and memory
 * mode need no record. */
static void test_qos2_send_journaled_with_stored_queues(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct entry q2 = out_entry("a", 7, 7, 2), q1 = out_entry("a", 8, 8, 1);
	struct sent_seen seen = {0};

	q2.q.state = MSG_STATE_WAIT_FOR_PUBREC;
	q1.q.state = MSG_STATE_WAIT_FOR_PUBACK;
	assert_true(features_entry_updated(pl, &q2));
	assert_true(features_entry_updated(pl, &q1));
	assert_int_equal(journal_records(pl->journal, note_entry, &seen), 0);
	assert_int_equal(seen.n, 0);

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	q2.seq = 7;
	q1.seq = 8;
	assert_true(features_entry_updated(pl, &q2));
	assert_true(features_entry_updated(pl, &q1));
	assert_int_equal(journal_records(pl->journal, note_entry, &seen), 0);
	assert_int_equal(seen.n, 1);
	assert_int_equal(seen.last.seq, store_queue_seq(pl->store, 7));
	assert_int_equal(seen.last.entry.mid, 7);
	assert_int_equal(seen.last.entry.qos, 2);
	assert_int_equal(seen.last.entry.state, MSG_STATE_WAIT_FOR_PUBREC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_qos1_journaled, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_broker_published, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_not_twice, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_qos2_send_journaled_with_stored_queues, fx_setup,
				feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
