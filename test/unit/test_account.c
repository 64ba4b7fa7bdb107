/* Account deletion: topic filter matching, personal topic expansion, and
 * account_plan / account_apply on a temporary store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "account.h"
#include "record.h"
#include "seal.h"
#include "store.h"
#include "unit_util.h"

/* ---- topic_matches ---- */

static void test_topic_matches(void **state)
{
	static const struct {
		const char *filter, *topic;
		bool match;
	} cases[] = {
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a", "a/b", false},
		{"a/b", "ab", false},
		/* + : exactly one level, possibly empty */
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+/+", "a/b", true},
		{"a/+/+", "a/b", false},
		{"a/+", "a/", true},
		{"+/+", "/x", true},
		/* # : any number of levels, including the parent itself */
		{"#", "a/b/c", true},
		{"#", "/", true},
		{"a/#", "a/b/c", true},
		{"a/#", "a", true},
		{"a/#", "a/", true},
		{"a/#", "ab", false},
		{"a/#", "b/a", false},
		{"a/b/#", "a", false},
		{"a/+/#", "a/b", true},
		/* empty levels */
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
		{"a//b", "a/b", false},
		{"/#", "/x", true},
		{"/#", "x", false},
		/* $ topics are not matched by a leading wildcard */
		{"#", "$SYS/broker", false},
		{"+/broker", "$SYS/broker", false},
		{"$SYS/#", "$SYS/broker", true},
		{"$SYS/+", "$SYS/broker", true},
		{"a/#", "a/$x", true},
		/* empty filter or topic */
		{"", "a", false},
		{"a", "", false},
		{"#", "", false},
	};

	(void)state;
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		if(topic_matches(cases[i].filter, cases[i].topic) != cases[i].match){
			fail_msg("topic_matches('%s', '%s') should be %s", cases[i].filter, cases[i].topic,
					cases[i].match ? "true" : "false");
		}
	}
}

/* ---- personal_filters ---- */

static void expect_filters(const char *patterns, const char *username, const char *clientid,
		unsigned want_skipped, int n_want, ...)
{
	char **f = NULL;
	unsigned skipped = ~want_skipped;
	int n = personal_filters(patterns, username, clientid, &f, &skipped);
	va_list ap;

	assert_int_equal(n, n_want);
	assert_int_equal(skipped, want_skipped);
	va_start(ap, n_want);
	for(int i = 0; i < n; i++){
		assert_string_equal(f[i], va_arg(ap, const char *));
	}
	va_end(ap);
	account_strings_free(f, n < 0 ? 0 : (size_t)n);
}

static void test_personal_filters(void **state)
{
	(void)state;
	const unsigned U = PERSONAL_SKIP_USERNAME, C = PERSONAL_SKIP_CLIENTID;

	expect_filters("users/%u/# devices/%c/#", "alice", "phone", 0, 2, "users/alice/#", "devices/phone/#");
	/* absent fields: the patterns naming them are left out */
	expect_filters("users/%u/# devices/%c/#", NULL, "phone", 0, 1, "devices/phone/#");
	expect_filters("users/%u/# devices/%c/#", "alice", NULL, 0, 1, "users/alice/#");
	expect_filters("users/%u/#", NULL, "phone", 0, 0);
	/* both fields, several times, and no field at all */
	expect_filters("%u/%c/%u shared/x", "alice", "phone", 0, 2, "alice/phone/alice", "shared/x");
	/* spaces and tabs separate patterns */
	expect_filters("  a/%u \t b/%c\t", "u", "c", 0, 2, "a/u", "b/c");
	expect_filters(NULL, "alice", "phone", 0, 0);
	expect_filters("", "alice", "phone", 0, 0);
	/* a % that is not a placeholder stays */
	expect_filters("x/%d/%", "alice", "phone", 0, 1, "x/%d/%");
	/* names with wildcards would widen the filter: their patterns go */
	expect_filters("users/%u/#", "al+ce", "phone", U, 0);
	expect_filters("devices/%c/#", "alice", "ph#ne", C, 0);
	/* a name with a level separator would reach into another account's
	 * topics (victim-phone's inbox/victim-phone/settings/...) */
	expect_filters("users/%u/# inbox/%c/#", "mallory", "victim-phone/settings", C, 1, "users/mallory/#");
	expect_filters("users/%u/# inbox/%c/#", "a/b", "phone", U, 1, "inbox/phone/#");
	/* empty, or in the broker's $ space */
	expect_filters("users/%u/# inbox/%c/#", "", "$SYS", U | C, 0);
	/* a pattern naming both goes if either is unusable; an absent field
	 * leaves the pattern out without a skip */
	expect_filters("%u/%c shared/x", "alice", "a/b", C, 1, "shared/x");
	expect_filters("%c/%u", "a/b", NULL, 0, 0);
}

static void test_personal_names_and_patterns(void **state)
{
	(void)state;
	assert_null(personal_name_problem("alice"));
	assert_null(personal_name_problem("phone-1.x_y"));
	assert_null(personal_name_problem("a$b"));
	assert_non_null(strstr(personal_name_problem("a/b"), "'/'"));
	assert_non_null(strstr(personal_name_problem("/"), "'/'"));
	assert_non_null(strstr(personal_name_problem("a+"), "wildcard"));
	assert_non_null(strstr(personal_name_problem("#"), "wildcard"));
	assert_non_null(strstr(personal_name_problem("$SYS"), "'$'"));
	assert_non_null(strstr(personal_name_problem(""), "empty"));

	assert_null(personal_patterns_problem("users/%u/# inbox/%c/#"));
	assert_null(personal_patterns_problem("%u/# %c"));
	assert_null(personal_patterns_problem("\t%c\t%u/x"));
	assert_null(personal_patterns_problem("x/%d/% 100%"));
	assert_non_null(personal_patterns_problem("users/u-%u/#"));
	assert_non_null(personal_patterns_problem("users/%u-x/#"));
	assert_non_null(personal_patterns_problem("inbox/%c%u/#"));
	assert_non_null(strstr(personal_patterns_problem("a/%cx"), "whole topic level"));
}

/* ---- account_plan / account_apply ---- */

struct fx {
	struct ut_tmp tmp;   /* path: the database */
	struct store *st;
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	char err[512];

	if(!fx || ut_tmp_make(&fx->tmp, "db", 0x31, 7)){
		free(fx);
		return -1;
	}
	if(store_open(&fx->st, fx->tmp.path, 0, fx->tmp.key, 0, NULL, err, sizeof(err)) != STORE_OK){
		fprintf(stderr, "store_open: %s\n", err);
		return -1;
	}
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	store_close(fx->st);
	ut_tmp_remove(&fx->tmp);
	free(fx);
	return 0;
}

static void put_msg(struct store *st, uint64_t id, const char *topic)
{
	struct rec_base_msg m = {
		.topic = topic,
		.payload = {(const uint8_t *)"payload", 7},
		.qos = 1,
	};
	assert_int_equal(store_msg_put(st, id, &m), STORE_OK);
}

/* A session with one subscription, a will, and a message queued per id. */
static void put_session(struct store *st, const char *clientid, const char *username,
		const uint64_t *ids, size_t n)
{
	struct rec_session s = {.clientid = clientid, .username = username, .session_expiry_interval = 3600};
	struct rec_sub sub = {.clientid = clientid, .topic_filter = "group/#", .options = 1};
	struct rec_will w = {.clientid = clientid, .topic = "wills/x", .payload = {(const uint8_t *)"gone", 4}, .qos = 1};

	assert_int_equal(store_session_put(st, &s), STORE_OK);
	assert_int_equal(store_sub_put(st, &sub), STORE_OK);
	assert_int_equal(store_will_put(st, &w), STORE_OK);
	for(size_t i = 0; i < n; i++){
		struct rec_queue q = {.store_id = ids[i], .qos = 1, .direction = 1, .state = 11};
		assert_int_equal(store_queue_append(st, clientid, i + 1, &q), STORE_OK);
	}
}

static void put_retained(struct store *st, uint64_t id, const char *topic)
{
	put_msg(st, id, topic);
	assert_int_equal(store_retain_set(st, topic, id), STORE_OK);
}

/* Sessions: phone and laptop of alice, phone-2 of bob (phone is a prefix
 * of it), anon without a username. Bodies 1-3 are queued for alice only,
 * 4 for alice and bob, 5 for bob only, 6 for anon. Retained: alice's and
 * bob's personal topics, device topics, and a group topic. */
static void seed(struct store *st)
{
	static const uint64_t phone[] = {1, 2, 4}, laptop[] = {3, 4}, phone2[] = {4, 5}, anon[] = {6};

	for(uint64_t id = 1; id <= 6; id++){
		put_msg(st, id, "group/news");
	}
	put_session(st, "phone", "alice", phone, 3);
	put_session(st, "laptop", "alice", laptop, 2);
	put_session(st, "phone-2", "bob", phone2, 2);
	put_session(st, "anon", NULL, anon, 1);
	put_retained(st, 10, "users/alice/status");
	put_retained(st, 11, "devices/phone/state");
	put_retained(st, 12, "devices/phone-2/state");
	put_retained(st, 13, "users/bob/status");
	put_retained(st, 14, "group/news");
	put_retained(st, 15, "users/alice");
	assert_int_equal(store_commit(st), STORE_OK);
}

static int found(void *ctx)
{
	(*(unsigned *)ctx)++;
	return 0;
}

static int on_session(void *ctx, const struct rec_session *s)
{
	(void)s;
	return found(ctx);
}

static int on_sub(void *ctx, const struct rec_sub *s)
{
	(void)s;
	return found(ctx);
}

static int on_queue(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	(void)seq;
	(void)q;
	return found(ctx);
}

static int on_will(void *ctx, const struct rec_will *w)
{
	(void)w;
	return found(ctx);
}

static int on_msg(void *ctx, uint64_t id, const struct rec_base_msg *m)
{
	(void)id;
	(void)m;
	return found(ctx);
}

struct topic_search {
	const char *topic;
	unsigned found;
};

static int on_retained(void *ctx, const struct rec_retain *r)
{
	struct topic_search *ts = ctx;

	if(!strcmp(r->topic, ts->topic)){
		ts->found++;
	}
	return 0;
}

static bool has_retained(struct store *st, const char *topic)
{
	struct topic_search ts = {topic, 0};

	assert_int_equal(store_walk_retained(st, on_retained, &ts), STORE_OK);
	return ts.found == 1;
}

/* Session, subscriptions, queue entries and will of one client id. */
static void expect_client(struct store *st, const char *clientid, unsigned sessions, unsigned queued)
{
	unsigned n_session = 0, n_subs = 0, n_queue = 0, n_wills = 0;

	assert_int_equal(store_session_get(st, clientid, on_session, &n_session), STORE_OK);
	assert_int_equal(store_walk_subs(st, clientid, on_sub, &n_subs), STORE_OK);
	assert_int_equal(store_walk_queue(st, clientid, on_queue, &n_queue), STORE_OK);
	assert_int_equal(store_walk_wills(st, clientid, on_will, &n_wills), STORE_OK);
	if(n_session != sessions || n_subs != sessions || n_wills != sessions || n_queue != queued){
		fail_msg("%s: %u sessions, %u subscriptions, %u wills, %u queued; want %u, %u, %u, %u", clientid,
				n_session, n_subs, n_wills, n_queue, sessions, sessions, sessions, queued);
	}
}

static bool plan_has(char **v, size_t n, const char *s)
{
	for(size_t i = 0; i < n; i++){
		if(!strcmp(v[i], s)){
			return true;
		}
	}
	return false;
}

static unsigned count_msgs(struct store *st)
{
	unsigned n = 0;

	assert_int_equal(store_walk_msgs(st, on_msg, &n), STORE_OK);
	return n;
}

static void test_delete_by_username(void **state)
{
	struct fx *fx = *state;
	struct account_plan plan;
	struct store_refs refs;

	seed(fx->st);
	assert_int_equal(account_plan(fx->st, "alice", NULL, "users/%u/# devices/%c/#", &plan), STORE_OK);
	assert_int_equal(plan.n_clientids, 2);
	assert_true(plan_has(plan.clientids, plan.n_clientids, "phone"));
	assert_true(plan_has(plan.clientids, plan.n_clientids, "laptop"));
	assert_int_equal(plan.queued, 5);
	assert_int_equal(plan.n_retained, 3);
	assert_true(plan_has(plan.retained_topics, plan.n_retained, "users/alice/status"));
	assert_true(plan_has(plan.retained_topics, plan.n_retained, "users/alice"));
	assert_true(plan_has(plan.retained_topics, plan.n_retained, "devices/phone/state"));
	assert_int_equal(plan.n_skipped, 0);

	/* Planning reads only. */
	expect_client(fx->st, "phone", 1, 3);

	assert_int_equal(account_apply(fx->st, &plan), STORE_OK);
	assert_int_equal(store_commit(fx->st), STORE_OK);
	account_plan_free(&plan);
	assert_int_equal(plan.n_clientids, 0);

	expect_client(fx->st, "phone", 0, 0);
	expect_client(fx->st, "laptop", 0, 0);
	/* Others keep everything; phone-2 starts with "phone". */
	expect_client(fx->st, "phone-2", 1, 2);
	expect_client(fx->st, "anon", 1, 1);
	assert_false(has_retained(fx->st, "users/alice/status"));
	assert_false(has_retained(fx->st, "users/alice"));
	assert_false(has_retained(fx->st, "devices/phone/state"));
	assert_true(has_retained(fx->st, "devices/phone-2/state"));
	assert_true(has_retained(fx->st, "users/bob/status"));
	assert_true(has_retained(fx->st, "group/news"));

	/* Bodies 1-3 and the three retained ones were no one's any more: gone
	 * with the commit; 4 is still bob's. */
	assert_int_equal(count_msgs(fx->st), 12 - 6);
	assert_int_equal(store_check_refs(fx->st, false, &refs), STORE_OK);
	assert_int_equal(refs.orphan_msgs, 0);
	assert_int_equal(refs.dangling_queue + refs.dangling_retained + refs.queue_without_session
			+ refs.subs_without_session, 0);
}

static void test_delete_by_clientid(void **state)
{
	struct fx *fx = *state;
	struct account_plan plan;

	seed(fx->st);
	/* By client id, the user's own topics (%u) stay for the other device. */
	assert_int_equal(account_plan(fx->st, NULL, "phone", "users/%u/# devices/%c/#", &plan), STORE_OK);
	assert_int_equal(plan.n_clientids, 1);
	assert_string_equal(plan.clientids[0], "phone");
	assert_int_equal(plan.queued, 3);
	assert_int_equal(plan.n_retained, 1);
	assert_string_equal(plan.retained_topics[0], "devices/phone/state");
	assert_int_equal(account_apply(fx->st, &plan), STORE_OK);
	assert_int_equal(store_commit(fx->st), STORE_OK);
	account_plan_free(&plan);

	expect_client(fx->st, "phone", 0, 0);
	/* alice's other device and the client id phone is a prefix of stay. */
	expect_client(fx->st, "laptop", 1, 2);
	expect_client(fx->st, "phone-2", 1, 2);
	expect_client(fx->st, "anon", 1, 1);
	assert_true(has_retained(fx->st, "devices/phone-2/state"));
	assert_true(has_retained(fx->st, "users/alice/status"));
}

static void test_plan_without_match(void **state)
{
	struct fx *fx = *state;
	struct account_plan plan;

	seed(fx->st);
	/* No such user; a username is not a client id. */
	assert_int_equal(account_plan(fx->st, "carol", NULL, "users/%u/#", &plan), STORE_OK);
	assert_int_equal(plan.n_clientids + plan.n_retained + plan.queued, 0);
	account_plan_free(&plan);
	assert_int_equal(account_plan(fx->st, "phone", NULL, NULL, &plan), STORE_OK);
	assert_int_equal(plan.n_clientids, 0);
	account_plan_free(&plan);
	/* A client id without a session still owns its personal topics. */
	put_retained(fx->st, 20, "devices/ghost/state");
	assert_int_equal(store_commit(fx->st), STORE_OK);
	assert_int_equal(account_plan(fx->st, NULL, "ghost", "devices/%c/#", &plan), STORE_OK);
	assert_int_equal(plan.n_clientids, 0);
	assert_int_equal(plan.n_retained, 1);
	assert_string_equal(plan.retained_topics[0], "devices/ghost/state");
	account_plan_free(&plan);
	/* Without patterns no retained message is personal. */
	assert_int_equal(account_plan(fx->st, "alice", NULL, NULL, &plan), STORE_OK);
	assert_int_equal(plan.n_clientids, 2);
	assert_int_equal(plan.n_retained, 0);
	account_plan_free(&plan);
}

static void test_wildcard_name_skips_personal_topics(void **state)
{
	struct fx *fx = *state;
	struct account_plan plan;
	static const uint64_t none[] = {0};

	seed(fx->st);
	put_session(fx->st, "dev", "a+", none, 0);
	assert_int_equal(store_commit(fx->st), STORE_OK);
	assert_int_equal(account_plan(fx->st, "a+", NULL, "users/%u/#", &plan), STORE_OK);
	assert_int_equal(plan.n_clientids, 1);
	assert_int_equal(plan.n_retained, 0);
	assert_int_equal(plan.n_skipped, 1);
	assert_string_equal(plan.skipped[0].name, "a+");
	assert_true(plan.skipped[0].username);
	assert_non_null(strstr(plan.skipped[0].why, "wildcard"));
	account_plan_free(&plan);
}

/* Issue 20: a user who connects as victim-phone/settings and deletes their
 * own account must not take the retained messages of victim-phone's
 * inbox/victim-phone/settings/...; the plan says what it left out. */
static void test_plan_client_id_with_slash(void **state)
{
	struct fx *fx = *state;
	struct account_plan plan;
	static const uint64_t none[] = {0};

	put_session(fx->st, "victim-phone", "victim", none, 0);
	put_session(fx->st, "victim-phone/settings", "mallory", none, 0);
	put_retained(fx->st, 50, "inbox/victim-phone/settings/theme");
	put_retained(fx->st, 51, "inbox/victim-phone/x");
	assert_int_equal(store_commit(fx->st), STORE_OK);
	assert_int_equal(account_plan(fx->st, NULL, "victim-phone/settings", "users/%u/# inbox/%c/#", &plan),
			STORE_OK);
	assert_int_equal(plan.n_clientids, 1);
	assert_string_equal(plan.clientids[0], "victim-phone/settings");
	assert_int_equal(plan.n_retained, 0);
	assert_int_equal(plan.n_skipped, 1);
	assert_false(plan.skipped[0].username);
	assert_string_equal(plan.skipped[0].name, "victim-phone/settings");
	assert_non_null(strstr(plan.skipped[0].why, "another account"));
	account_plan_free(&plan);
	/* Deleting victim-phone itself takes both. */
	assert_int_equal(account_plan(fx->st, NULL, "victim-phone", "users/%u/# inbox/%c/#", &plan), STORE_OK);
	assert_int_equal(plan.n_retained, 2);
	assert_int_equal(plan.n_skipped, 0);
	account_plan_free(&plan);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topic_matches),
		cmocka_unit_test(test_personal_filters),
		cmocka_unit_test(test_personal_names_and_patterns),
		T(test_delete_by_username),
		T(test_delete_by_clientid),
		T(test_plan_without_match),
		T(test_wildcard_name_skips_personal_topics),
		T(test_plan_client_id_with_slash),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
