/* What the feature_<module>.c tests share: the plugin as the features see
 * it, the fake broker (fake_broker.h) and a real store in a temporary
 * directory; the fixture each test runs in, and the small readers and
 * builders more than one test uses. Header-only (static inline): each
 * feature test is one translation unit with fake_broker.c. */
#ifndef PERSIST_LMDB_FEATURE_UTIL_H
#define PERSIST_LMDB_FEATURE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "fake_broker.h"
#include "feature.h"
#include "unit_util.h"

/* A queue entry's number within its client's queue (store_queue_seq's low bits). */
#define SEQ_MASK ((1ull << STORE_SEQ_SHIFT) - 1)

/* ---- the store and the plugin ---- */

/* Opens the store in fs (made at the first call, the same one after); 0 or -1. */
static inline int fstore_open(struct ut_tmp *fs, struct store **st)
{
	char err[256];

	if(!fs->dir && ut_tmp_make(fs, "db", 0x3c, 7)){
		return -1;
	}
	return store_open(st, fs->path, 0, fs->key, 0, NULL, err, sizeof(err)) == STORE_OK ? 0 : -1;
}

/* Frees the features and closes the journal and the store; their files
 * stay (feature_plugin_open opens them again). */
static inline void feature_plugin_close(struct plugin *pl)
{
	features_free(pl);
	journal_close(pl->journal);
	store_close(pl->store);
	buf_free(&pl->props);
	pl->journal = NULL;
	pl->store = NULL;
}

/* Opens the store (fs: made at the first call), the journal beside it when
 * with_journal, and the features: made (features_new) and loaded
 * (features_open) with the pl->cfg the caller set. 0, or -1 with what it
 * opened closed again. */
static inline int feature_plugin_open(struct ut_tmp *fs, struct plugin *pl, bool with_journal)
{
	char err[256] = "";

	if(fstore_open(fs, &pl->store)){
		pl->store = NULL;
		return -1;
	}
	if(with_journal && journal_open(&pl->journal, fs->path, JOURNAL_MIN_SIZE, store_seal(pl->store), false, err,
				sizeof(err)) != JOURNAL_OK){
		print_error("journal: %s\n", err);
		pl->journal = NULL;
		store_close(pl->store);
		pl->store = NULL;
		return -1;
	}
	if(features_new(pl) || features_open(pl) != BROKER_OK){
		feature_plugin_close(pl);
		return -1;
	}
	return 0;
}

/* ---- the fixture ---- */

/* What a feature test runs in. A test that keeps more has a struct of its
 * own with this one as its first member, "base". */
struct feature_fx {
	struct ut_tmp fs;
	struct plugin pl;
};

/* A feature test's setup: a zeroed fixture of size bytes (a struct
 * feature_fx, or a test's struct that begins with one) in *state, the fake
 * broker reset (its hooks given the fixture), the plugin opened with
 * configuration cfg (NULL: all zero), and a journal when with_journal.
 * The fixture, or NULL (nothing left behind). */
static inline void *feature_fx_setup(void **state, size_t size, const struct plugin_config *cfg, bool with_journal)
{
	struct feature_fx *fx = size >= sizeof(*fx) ? calloc(1, size) : NULL;

	fake_reset();
	if(!fx){
		return NULL;
	}
	if(cfg){
		fx->pl.cfg = *cfg;
	}
	if(feature_plugin_open(&fx->fs, &fx->pl, with_journal)){
		ut_tmp_remove(&fx->fs);
		free(fx);
		return NULL;
	}
	fake.hook_ctx = fx;
	*state = fx;
	return fx;
}

/* The teardown: the plugin closed, its directory removed. */
static inline int feature_fx_teardown(void **state)
{
	struct feature_fx *fx = *state;

	feature_plugin_close(&fx->pl);
	ut_tmp_remove(&fx->fs);
	free(fx);
	return 0;
}

/* ---- readers ---- */

static inline struct feature_stats plugin_stats(const struct plugin *pl)
{
	struct feature_stats s;

	features_stats(pl, &s);
	return s;
}

static inline int count_will(void *ctx, const struct rec_will *w)
{
	(void)w;
	(*(int *)ctx)++;
	return 0;
}

/* The will records of clientid the store holds, once what is buffered is committed. */
static inline int stored_wills(struct plugin *pl, const char *clientid)
{
	int n = 0;

	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_walk_wills(pl->store, clientid, count_will, &n), STORE_OK);
	return n;
}

/* What the broker was handed (its entry adds), all for clientid, as entry
 * numbers: "1 2 3". */
static inline const char *handed(const char *clientid)
{
	static char out[256];
	size_t len = 0;

	out[0] = '\0';
	for(size_t i = 0; i < fake_count(FAKE_ENTRY_ADD); i++){
		const struct fake_call *c = fake_nth(FAKE_ENTRY_ADD, i);
		assert_string_equal(c->clientid, clientid);
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%llu", len ? " " : "",
				(unsigned long long)(c->seq & SEQ_MASK));
	}
	return out;
}

typedef void (*journal_record_fn)(void *ctx, const struct rec_journal *r);

struct journal_walk {
	journal_record_fn fn;
	void *ctx;
};

static inline int journal_walk_one(void *ctx, uint64_t lsn, const uint8_t *pt, size_t len)
{
	struct journal_walk *w = ctx;
	struct rec_journal r;

	(void)lsn;
	assert_int_equal(record_decode_journal(pt, len, &r), 0);
	w->fn(w->ctx, &r);
	return 0;
}

/* Hands fn every record of the journal, decoded (each must decode; r's
 * strings last only the call); returns how many places did not
 * authenticate (journal_replay's unreadable). */
static inline uint64_t journal_records(struct journal *j, journal_record_fn fn, void *ctx)
{
	struct journal_walk w = {fn, ctx};
	uint64_t unreadable = 0;

	assert_int_equal(journal_replay(j, 0, journal_walk_one, &w, &unreadable), JOURNAL_OK);
	return unreadable;
}

/* ---- builders ---- */

/* A message id as events.c reads it from a publish's user property (NULL: none). */
static inline struct bytes msg_id(const char *id)
{
	return (struct bytes){(const uint8_t *)id, id ? strlen(id) : 0};
}

/* Entry seq of clientid's queue: outgoing, not sent yet, with body 1000 + seq. */
static inline struct entry out_entry(const char *clientid, uint64_t seq, uint16_t mid, uint8_t qos)
{
	return (struct entry){.clientid = clientid, .seq = seq, .q = {.store_id = 1000 + seq, .mid = mid, .qos = qos,
		.direction = MSG_DIR_OUT, .state = MSG_STATE_QUEUED}};
}

/* Entry seq of clientid's queue: an incoming QoS 2 message (body store_id,
 * the publisher's packet id mid) waiting for its PUBREL. */
static inline struct entry in_entry(const char *clientid, uint64_t seq, uint64_t store_id, uint16_t mid)
{
	return (struct entry){.clientid = clientid, .seq = seq, .q = {.store_id = store_id, .mid = mid, .qos = 2,
		.direction = MSG_DIR_IN, .state = MSG_STATE_WAIT_FOR_PUBREL}};
}

/* "phone"'s stored queue, entries 1..n not sent yet: QoS 1, on inbox/phone,
 * bodies 101.., packet ids 1..n of the broker run that stored them;
 * committed. */
static inline void store_phone_queue(struct store *st, uint64_t n)
{
	for(uint64_t i = 1; i <= n; i++){
		struct rec_base_msg m = {.topic = "inbox/phone", .payload = {(const uint8_t *)"hi", 2}, .qos = 1};
		struct rec_queue q = {.store_id = 100 + i, .mid = (uint16_t)i, .qos = 1, .direction = MSG_DIR_OUT,
			.state = MSG_STATE_QUEUED};

		assert_int_equal(store_msg_put(st, 100 + i, &m), STORE_OK);
		assert_int_equal(store_queue_append(st, "phone", i, &q), STORE_OK);
	}
	assert_int_equal(store_commit(st), STORE_OK);
}

/* Start-up: clientid's queue handed to the broker as restore.c has it done
 * (journaled: the journal names the session; j: the journal's word on its
 * entries, or NULL); what the hand-over did in *counts. */
static inline void restore_queue(struct plugin *pl, const struct handover_journal *j, const char *clientid,
		bool journaled, struct restore_counts *counts)
{
	struct handover *h = features_restore_begin(pl, j);

	assert_non_null(h);
	assert_int_equal(features_restore_queue(pl, h, clientid, journaled, false), 0);
	features_restore_done(pl, h, counts);
}

#endif
