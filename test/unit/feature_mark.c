/* mark.c without a broker: the journal mark a commit carries. A commit
 * covers the journal records up to the mark, and the journal gives back
 * the room of those the store made durable. */
#include "feature_util.h"

static int fx_setup(void **state)
{
	return feature_fx_setup(state, sizeof(struct feature_fx), NULL, true) ? 0 : -1;
}

static uint64_t append(struct plugin *pl)
{
	static const uint8_t rec[64];
	uint64_t lsn = 0;

	assert_int_equal(journal_append(pl->journal, rec, sizeof(rec), false, &lsn), JOURNAL_OK);
	return lsn;
}

/* A commit carries the mark of the last record, and then the journal's
 * room is given back. */
static void test_commit_covers_the_last_record(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	uint64_t last = 0;

	for(int i = 0; i < 10; i++){
		last = append(pl);
	}
	assert_true(journal_used(pl->journal) > 0);
	assert_int_equal(features_commit(pl), STORE_OK);
	assert_int_equal(store_journal_committed(pl->store), last);
	assert_int_equal(pl->marked_lsn, last);
	/* Made durable by the next commit's sync, then released. */
	assert_int_equal(features_commit(pl), STORE_OK);
	journal_mark(pl);
	assert_int_equal(journal_used(pl->journal), 0);
}

/* The mark never moves back: a QoS 2 routing in progress marks up to its
 * record only, and a later, lower mark changes nothing. */
static void test_mark_to_is_monotonic(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	uint64_t a = append(pl), b = append(pl), c = append(pl);

	journal_mark_to(pl, b);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_journal_committed(pl->store), b);
	journal_mark_to(pl, a);
	assert_int_equal(pl->marked_lsn, b);
	assert_int_equal(features_commit(pl), STORE_OK);
	assert_int_equal(store_journal_committed(pl->store), c);
}

/* Without a journal there is nothing to mark: a commit still commits. */
static void test_no_journal(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct rec_session s = {.clientid = "c1", .session_expiry_interval = 60};

	journal_close(pl->journal);
	pl->journal = NULL;
	assert_int_equal(store_session_put(pl->store, &s), STORE_OK);
	journal_mark(pl);
	assert_int_equal(features_commit(pl), STORE_OK);
	assert_int_equal(pl->marked_lsn, 0);
	assert_int_equal(store_journal_committed(pl->store), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_covers_the_last_record, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_mark_to_is_monotonic, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_no_journal, fx_setup, feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
