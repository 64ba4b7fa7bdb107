/* bodies.c without a broker: the one table of message bodies the features
 * track, fed through the dispatch: which bodies it keeps, what it knows of
 * each, and what a restart in disk mode leaves in it. */
#include "feature_util.h"

static int fx_setup(void **state)
{
	return feature_fx_setup(state, sizeof(struct feature_fx), NULL, false) ? 0 : -1;
}

static void body_added(struct plugin *pl, uint64_t store_id, size_t bytes, int64_t expiry)
{
	static const uint8_t payload[512];
	struct message b = {.store_id = store_id, .m = {.topic = "t", .payload = {payload, bytes}, .qos = 1,
		.expiry_time = expiry}};

	features_body_added(pl, &b);
}

/* With no queue limit, no expiry and queues in memory nothing reads the
 * table: nothing is kept. */
static void test_kept_only_where_read(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	body_added(pl, 1, 10, 0);
	assert_null(bodies_find(pl, 1));
	pl->cfg.max_queued_messages = 5;
	body_added(pl, 2, 10, 0);
	assert_non_null(bodies_find(pl, 2));
}

/* Retention limits: size and expiry by store id; the broker's deletion
 * forgets a body; in memory mode no body counts as held. */
static void test_size_and_expiry(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	const struct body_note *n;

	pl->cfg.offline_ttl = 60;
	body_added(pl, 7, 300, 1900000000);
	body_added(pl, 8, 0, 0);
	n = bodies_find(pl, 7);
	assert_non_null(n);
	assert_int_equal(n->bytes, 300);
	assert_int_equal(n->expiry, 1900000000);
	assert_false(bodies_resident(pl, 7));
	assert_int_equal(bodies_find(pl, 8)->bytes, 0);
	features_body_gone(pl, 7);
	assert_null(bodies_find(pl, 7));
	assert_non_null(bodies_find(pl, 8));
	assert_null(bodies_find(pl, 0));
}

/* Disk mode: what the broker stores or is handed it holds; what a restart
 * reads from the store it does not, and goes once the restore is done,
 * unless the broker took it meanwhile. */
static void test_held_in_disk_mode(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;
	struct restore_counts counts;
	struct handover *h;

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	pl->cfg.max_queued_bytes = 1 << 20;
	body_added(pl, 1, 10, 0);
	bodies_stored(pl, 2, 20, 0);
	bodies_stored(pl, 3, 30, 0);
	bodies_held(pl, 3, 30, 0);
	assert_true(bodies_resident(pl, 1));
	assert_false(bodies_resident(pl, 2));
	assert_true(bodies_resident(pl, 3));
	bodies_stored(pl, 1, 10, 0);
	assert_true(bodies_resident(pl, 1));

	h = features_restore_begin(pl, NULL);
	assert_non_null(h);
	features_restore_done(pl, h, &counts);
	assert_true(bodies_resident(pl, 1));
	assert_null(bodies_find(pl, 2));
	assert_int_equal(bodies_find(pl, 3)->bytes, 30);
}

/* Thousands of bodies: each found by its id, each gone once deleted. */
static void test_many(void **state)
{
	struct feature_fx *fx = *state;
	struct plugin *pl = &fx->pl;

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	for(uint64_t id = 1; id <= 5000; id++){
		body_added(pl, id, id % 500, 0);
	}
	for(uint64_t id = 1; id <= 5000; id += 2){
		features_body_gone(pl, id);
	}
	for(uint64_t id = 1; id <= 5000; id++){
		const struct body_note *n = bodies_find(pl, id);
		if(id % 2){
			assert_null(n);
		}else{
			assert_non_null(n);
			assert_int_equal(n->bytes, id % 500);
			assert_true(n->held);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kept_only_where_read, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_size_and_expiry, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_held_in_disk_mode, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_many, fx_setup, feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
