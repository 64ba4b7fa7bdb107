/* handback.c without a broker: a session's stored queue handed to the
 * broker, whole at start-up (handover_session, through the restore steps
 * of the dispatch as restore.c calls them) and
 * in parts at run time with plugin_opt_queue_storage disk (queue_load, as
 * backlog.c calls it). The fake broker records what it is handed, in what
 * order and under which packet ids, and refuses what a test tells it to;
 * the store is a real one. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature_util.h"

#define CLIENT "phone"

struct fx {
	struct feature_fx base;
	struct restore_counts counts;  /* of the last start-up hand-over */
	uint64_t refuse_seq;        /* the entry the broker refuses (its number); 0: none */
	uint64_t move_in_flight[4]; /* the entries the broker moves in flight at a nudge (their numbers) */
	size_t n_move;
	bool moved;                 /* they were: a later nudge finds them in flight already */
	bool updated_stays[4];      /* what features_entry_updated said of each */
	uint64_t journal_pubrel[4]; /* entries the journal says got PUBREL sent */
	uint16_t journal_pubrel_mid[4];  /* under which packet id (0: an earlier version's record) */
	size_t n_journal_pubrel;
	uint64_t journal_released;  /* the incoming entry the journal says was released; 0: none */
};

static int fx_setup(void **state)
{
	return feature_fx_setup(state, sizeof(struct fx), NULL, false) ? 0 : -1;
}

static void put_body(struct store *st, uint64_t store_id)
{
	struct rec_base_msg m = {.topic = "inbox/phone", .payload = {(const uint8_t *)"hi", 2}, .qos = 2};

	assert_int_equal(store_msg_put(st, store_id, &m), STORE_OK);
}

/* Entry n of the client's queue, outgoing, with body 100 + n unless store_id. */
static void put_out(struct store *st, uint64_t n, uint8_t qos, uint16_t mid, uint8_t state, uint64_t store_id)
{
	struct rec_queue q = {.store_id = store_id ? store_id : 100 + n, .mid = mid, .qos = qos,
		.direction = MSG_DIR_OUT, .state = state};

	assert_int_equal(store_queue_append(st, CLIENT, n, &q), STORE_OK);
}

static void put_in(struct store *st, uint64_t n, uint16_t mid)
{
	struct rec_queue q = {.store_id = 100 + n, .mid = mid, .qos = 2, .direction = MSG_DIR_IN,
		.state = MSG_STATE_WAIT_FOR_PUBREL};

	assert_int_equal(store_queue_append(st, CLIENT, n, &q), STORE_OK);
}

/* Entries 1..n, outgoing QoS 1 not sent yet, packet ids 1..n of the run
 * that stored them, each with its body. */
static void seed(struct store *st, uint64_t n)
{
	for(uint64_t i = 1; i <= n; i++){
		put_body(st, 100 + i);
		put_out(st, i, 1, (uint16_t)i, MSG_STATE_QUEUED, 0);
	}
	assert_int_equal(store_commit(st), STORE_OK);
}

/* Start-up: the client's session is restored, its queue handed over as
 * restore.c has it done (journaled: the journal names the session). */
static void restore(struct fx *fx, const struct handover_journal *j, bool journaled)
{
	restore_queue(&fx->base.pl, j, CLIENT, journaled, &fx->counts);
}

/* The packet ids the broker was handed, in order: "500 502 503". */
static const char *handed_mids(void)
{
	static char out[256];
	size_t len = 0;

	out[0] = '\0';
	for(size_t i = 0; i < fake_count(FAKE_ENTRY_ADD); i++){
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%u", len ? " " : "",
				fake_nth(FAKE_ENTRY_ADD, i)->mid);
	}
	return out;
}

static int collect_entry(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	char *out = ctx;
	size_t len = strlen(out);

	snprintf(out + len, 256 - len, "%s%llu%s", len ? " " : "", (unsigned long long)(seq & SEQ_MASK),
			q->state == MSG_STATE_WAIT_FOR_PUBCOMP ? "c" : "");
	return 0;
}

/* The client's stored queue once what is buffered is committed, each entry
 * as fn writes it. */
static const char *stored_as(struct plugin *pl, queue_visit_fn fn)
{
	static char out[256];

	out[0] = '\0';
	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_walk_queue(pl->store, CLIENT, fn, out), STORE_OK);
	return out;
}

/* The entries the store holds: "1 2 3c" (c: PUBREL sent). */
static const char *stored(struct plugin *pl)
{
	return stored_as(pl, collect_entry);
}

static int collect_mid(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	char *out = ctx;
	size_t len = strlen(out);

	(void)seq;
	snprintf(out + len, 256 - len, "%s%u", len ? " " : "", q->mid);
	return 0;
}

/* The packet ids the store holds, in queue order: "7 1". */
static const char *stored_mids(struct plugin *pl)
{
	return stored_as(pl, collect_mid);
}

static int note_body(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	(void)store_id, (void)m;
	*(bool *)ctx = true;
	return 0;
}

/* Whether the store holds body store_id once what is buffered is committed. */
static bool has_body(struct plugin *pl, uint64_t store_id)
{
	bool found = false;

	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(store_msg_get(pl->store, store_id, note_body, &found), STORE_OK);
	return found;
}

/* ---- the broker's side ---- */

static int refuse_one(const struct fake_call *c, void *ctx)
{
	struct fx *fx = ctx;

	return (c->seq & SEQ_MASK) == fx->refuse_seq ? BROKER_INVALID : BROKER_OK;
}

/* At the nudge (a deletion of a packet id nobody has) the broker moves the
 * session's first queued messages in flight: each move is a client message
 * update, the QoS 2 ones in state "publish". */
static int move_in_flight(const struct fake_call *c, void *ctx)
{
	struct fx *fx = ctx;

	assert_string_equal(c->clientid, CLIENT);
	if(fx->moved){
		return BROKER_NOT_FOUND;
	}
	fx->moved = true;
	for(size_t i = 0; i < fx->n_move; i++){
		struct entry e = {.clientid = CLIENT, .seq = store_queue_seq(fx->base.pl.store, fx->move_in_flight[i]),
			.q = {.store_id = 100 + fx->move_in_flight[i], .qos = 2, .direction = MSG_DIR_OUT,
				.state = MSG_STATE_PUBLISH_QOS2}};
		/* The broker kept the packet id it was handed. */
		for(size_t j = 0; j < fake_count(FAKE_ENTRY_ADD); j++){
			const struct fake_call *a = fake_nth(FAKE_ENTRY_ADD, j);
			if((a->seq & SEQ_MASK) == fx->move_in_flight[i]){
				e.q.mid = a->mid;
			}
		}
		fx->updated_stays[i] = features_entry_updated(&fx->base.pl, &e);
	}
	return BROKER_NOT_FOUND;
}

static bool jhook_released_in(void *ctx, const char *clientid, uint64_t seq, uint64_t store_id)
{
	struct fx *fx = ctx;

	(void)store_id;
	return !strcmp(clientid, CLIENT) && (seq & SEQ_MASK) == fx->journal_released;
}

static bool jhook_pubrel_sent(void *ctx, const char *clientid, uint64_t seq, uint16_t *mid)
{
	struct fx *fx = ctx;

	for(size_t i = 0; i < fx->n_journal_pubrel; i++){
		if(!strcmp(clientid, CLIENT) && (seq & SEQ_MASK) == fx->journal_pubrel[i]){
			*mid = fx->journal_pubrel_mid[i];
			return true;
		}
	}
	return false;
}

/* ---- start-up ---- */

/* At start-up (memory mode) the whole queue goes to the broker in its
 * order under the packet ids it was stored with, incoming QoS 2 entries
 * too; the bodies are not the hand-over's (restore.c hands them all). The
 * outgoing entries come under the retention limits. */
static void test_start_up_in_order(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	for(uint64_t n = 1; n <= 5; n++){
		put_body(pl->store, 100 + n);
		put_out(pl->store, n, 1, (uint16_t)(10 + n), MSG_STATE_QUEUED, 0);
	}
	put_body(pl->store, 106);
	put_in(pl->store, 6, 77);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	pl->cfg.max_queued_messages = 3;

	restore(fx, NULL, false);
	assert_int_equal(fx->counts.queued, 6);
	assert_int_equal(fx->counts.failed, 0);
	assert_int_equal(fake_count(FAKE_BODY_ADD), 0);
	/* The incoming entry is not held back with the outgoing ones. */
	assert_string_equal(handed(CLIENT), "6 1 2 3 4 5");
	assert_string_equal(handed_mids(), "77 11 12 13 14 15");
	assert_int_equal(fake_nth(FAKE_ENTRY_ADD, 0)->direction, MSG_DIR_IN);
	assert_int_equal(fake_nth(FAKE_ENTRY_ADD, 1)->direction, MSG_DIR_OUT);
	assert_int_equal(fake_nth(FAKE_ENTRY_ADD, 1)->store_id, 101);
	assert_string_equal(stored(pl), "1 2 3 4 5 6");

	/* Offline and over max_queued_messages 3: the tick drops the newest two. */
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 2);
	assert_int_equal(fake_nth(FAKE_ENTRY_DROP, 0)->mid, 15);
	assert_int_equal(fake_nth(FAKE_ENTRY_DROP, 1)->mid, 14);
}

/* An entry the broker refuses is removed from the store (kept, it would
 * come back after newer messages at a later restart), and so is one whose
 * body is missing; each is logged for what it is. */
static void test_refused_entry_removed(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	seed(pl->store, 4);
	fx->refuse_seq = 2;
	fake.hook[FAKE_ENTRY_ADD] = refuse_one;
	restore(fx, NULL, false);
	assert_string_equal(handed(CLIENT), "1 2 3 4");
	assert_int_equal(fx->counts.queued, 3);
	assert_int_equal(fx->counts.failed, 1);
	assert_string_equal(stored(pl), "1 3 4");
	assert_true(fake_logged("dropped 1 queued messages of client phone when handing them to the broker: it refused"));
	assert_false(fake_logged("bodies are missing"));
}

static void test_missing_body_removed(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct queue_load ql = {0};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	seed(pl->store, 2);
	put_out(pl->store, 3, 1, 3, MSG_STATE_QUEUED, 999);   /* no body 999 */
	assert_int_equal(store_commit(pl->store), STORE_OK);
	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "1 2");
	assert_int_equal(ql.loaded, 2);
	assert_string_equal(stored(pl), "1 2");
	assert_true(fake_logged("their message bodies are missing"));
}

/* Outgoing QoS 2 messages whose PUBREL was sent (stored so, or, in state
 * "wait for PUBREC", journaled so, which the store then records) go to the
 * broker first, ahead of the entries before them, so that they are among
 * the first it puts in flight; the nudge that follows has it put them
 * there, and each is put back in its PUBREL-sent state (its stored state
 * stays). An incoming QoS 2 entry the journal says was released is used
 * up: removed from the store with its body, not handed over. */
static void test_pubrel_sent_first_and_resumed(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct handover_journal j = {fx, jhook_released_in, jhook_pubrel_sent};

	for(uint64_t n = 1; n <= 4; n++){
		put_body(pl->store, 100 + n);
	}
	put_out(pl->store, 1, 1, 1, MSG_STATE_QUEUED, 0);
	put_out(pl->store, 2, 1, 2, MSG_STATE_QUEUED, 0);
	put_out(pl->store, 3, 2, 3, MSG_STATE_WAIT_FOR_PUBCOMP, 0);
	put_out(pl->store, 4, 2, 4, MSG_STATE_WAIT_FOR_PUBREC, 0);
	put_body(pl->store, 105);
	put_in(pl->store, 5, 40);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	fx->journal_pubrel[fx->n_journal_pubrel++] = 4;
	fx->journal_released = 5;
	fx->move_in_flight[fx->n_move++] = 3;
	fx->move_in_flight[fx->n_move++] = 4;
	fake.hook[FAKE_ENTRY_DROP] = move_in_flight;

	restore(fx, &j, false);
	assert_string_equal(handed(CLIENT), "3 4 1 2");
	assert_string_equal(stored(pl), "1 2 3c 4c");
	assert_false(has_body(pl, 105));
	assert_true(has_body(pl, 101));
	/* The nudge: a packet id none of the session's messages has, QoS 2. */
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 1);
	assert_true(fake_nth(FAKE_ENTRY_DROP, 0)->mid > 4);
	assert_int_equal(fake_nth(FAKE_ENTRY_DROP, 0)->qos, 2);
	/* Both back in their state, stored state unchanged. */
	assert_int_equal(fake_count(FAKE_ENTRY_SET_STATE), 2);
	for(size_t i = 0; i < 2; i++){
		const struct fake_call *s = fake_nth(FAKE_ENTRY_SET_STATE, i);
		assert_int_equal(s->mid, 3 + i);
		assert_int_equal(s->qos, 2);
		assert_int_equal(s->state, MSG_STATE_WAIT_FOR_PUBCOMP);
		assert_false(fx->updated_stays[i]);
	}
	assert_int_equal(fx->counts.pubrel_resumed, 2);
	assert_false(fake_logged("are not among the first in flight"));
}

/* One the broker does not put in flight goes out as a new PUBLISH: that
 * is logged, and nothing is set. */
static void test_pubrel_sent_not_in_flight_logged(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	put_body(pl->store, 101);
	put_out(pl->store, 1, 2, 1, MSG_STATE_WAIT_FOR_PUBCOMP, 0);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	restore(fx, NULL, false);
	assert_string_equal(handed(CLIENT), "1");
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 1);
	assert_int_equal(fake_count(FAKE_ENTRY_SET_STATE), 0);
	assert_int_equal(fx->counts.pubrel_resumed, 0);
	assert_true(fake_logged("are not among the first in flight"));
}

/* In disk mode a session's queue stays stored at start-up: nothing of it
 * goes to the broker (bodies neither), and the session counts as released
 * (its client gets it back when it returns). */
static void test_disk_mode_start_up_keeps_queue_stored(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	seed(pl->store, 3);
	restore(fx, NULL, false);
	assert_int_equal(fake.n_calls, 0);
	assert_int_equal(fx->counts.queued, 0);
	assert_true(backlog_released(pl, CLIENT));
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 0);
	assert_string_equal(stored(pl), "1 2 3");
}

/* One the journal names is handed over whole, each body before its first
 * entry, and the broker lets go of it at the first tick (it stays stored). */
static void test_disk_mode_start_up_journaled(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	seed(pl->store, 3);
	restore(fx, NULL, true);
	assert_string_equal(handed(CLIENT), "1 2 3");
	assert_int_equal(fx->counts.queued, 3);
	assert_int_equal(fake_count(FAKE_BODY_ADD), 3);
	for(size_t i = 0; i < 3; i++){
		assert_int_equal(fake.calls[2 * i].kind, FAKE_BODY_ADD);
		assert_int_equal(fake.calls[2 * i].store_id, 101 + i);
		assert_int_equal(fake.calls[2 * i + 1].kind, FAKE_ENTRY_ADD);
	}
	assert_false(backlog_released(pl, CLIENT));
	features_tick(pl);
	assert_int_equal(fake_count(FAKE_QUEUE_RELEASE), 1);
	assert_string_equal(fake_nth(FAKE_QUEUE_RELEASE, 0)->clientid, CLIENT);
	assert_true(backlog_released(pl, CLIENT));
	assert_string_equal(stored(pl), "1 2 3");
}

/* ---- hand-backs at run time (plugin_opt_queue_storage disk) ---- */

/* In disk mode a message not sent yet gets the next packet id free in the
 * broker (after the last one given, skipping those it holds), in queue
 * order; one the client may have received keeps its id. */
static void test_disk_mode_packet_ids(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	uint8_t mids[MID_MAP_BYTES] = {0};
	struct queue_load ql = {.mids = mids};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	for(uint64_t n = 1; n <= 4; n++){
		put_body(pl->store, 100 + n);
	}
	put_out(pl->store, 1, 1, 500, MSG_STATE_WAIT_FOR_PUBACK, 0);
	put_out(pl->store, 2, 1, 7, MSG_STATE_QUEUED, 0);
	put_out(pl->store, 3, 1, 8, MSG_STATE_QUEUED, 0);
	put_out(pl->store, 4, 1, 9, MSG_STATE_QUEUED, 0);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	mids[501 >> 3] |= 1u << (501 & 7);   /* the broker holds 501 */

	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "1 2 3 4");
	assert_string_equal(handed_mids(), "500 502 503 504");
	assert_int_equal(ql.loaded, 4);
	assert_int_equal(ql.next_mid, 504);
	assert_int_equal(ql.next_seq, 0);
	for(unsigned mid = 500; mid <= 504; mid++){
		assert_true(mids[mid >> 3] & (1u << (mid & 7)));
	}
	/* Memory mode keeps every stored id. */
	fake_reset();
	pl->cfg.queue_storage = QUEUE_STORAGE_MEMORY;
	restore(fx, NULL, false);
	assert_string_equal(handed_mids(), "500 7 8 9");
}

/* A hand-back in parts: at most max outgoing entries, from a given entry,
 * none from before on; it says where the next part starts. A part for a
 * connected client ends with a nudge that has the broker send it. */
static void test_queue_load_parts(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	uint8_t mids[MID_MAP_BYTES] = {0};
	struct queue_load ql = {.max = 2, .mids = mids};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	seed(pl->store, 6);
	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "1 2");
	assert_int_equal(ql.loaded, 2);
	assert_int_equal(ql.next_seq & SEQ_MASK, 3);
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 0);   /* not kicked */

	ql = (struct queue_load){.from = ql.next_seq, .before = store_queue_seq(pl->store, 6), .kick = true,
		.next_mid = ql.next_mid, .mids = mids};
	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "1 2 3 4 5");
	assert_string_equal(handed_mids(), "1 2 3 4 5");
	assert_int_equal(ql.loaded, 3);
	assert_int_equal(ql.next_seq, 0);
	assert_int_equal(fake_count(FAKE_ENTRY_DROP), 1);
	assert_int_equal(fake_nth(FAKE_ENTRY_DROP, 0)->mid, 6);
	assert_string_equal(stored(pl), "1 2 3 4 5 6");   /* a hand-back removes nothing */
}

/* An entry the broker queues behind a full in-flight window (or drops)
 * ends a part that is not kicked: it and the rest stay stored for the
 * next; for a connected client it counts as handed over. */
static void test_queued_or_dropped(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	uint8_t mids[MID_MAP_BYTES] = {0};
	struct queue_load ql = {.mids = mids};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	seed(pl->store, 3);
	fake.answer[FAKE_ENTRY_ADD] = BROKER_QUEUED_OR_DROPPED;
	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_int_equal(ql.loaded, 0);
	assert_int_equal(ql.next_seq & SEQ_MASK, 1);
	assert_string_equal(stored(pl), "1 2 3");

	fake_reset();
	fake.answer[FAKE_ENTRY_ADD] = BROKER_QUEUED_OR_DROPPED;
	ql = (struct queue_load){.kick = true, .mids = (uint8_t[MID_MAP_BYTES]){0}};
	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_int_equal(ql.loaded, 3);
	assert_int_equal(ql.next_seq, 0);
	assert_string_equal(stored(pl), "1 2 3");
}

/* In disk mode a body goes to the broker with the first entry that needs
 * it, before that entry, once: not again for another entry, nor at a later
 * hand-back, nor when the broker holds it already (it stored it since);
 * once the broker let it go, it is handed again. */
static void test_body_handed_once(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct message held = {.store_id = 103, .m = {.topic = "inbox/phone", .payload = {(const uint8_t *)"hi", 2},
		.qos = 1}};
	struct queue_load ql = {0};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	for(uint64_t id = 101; id <= 103; id++){
		put_body(pl->store, id);
	}
	put_out(pl->store, 1, 1, 1, MSG_STATE_QUEUED, 101);
	put_out(pl->store, 2, 1, 2, MSG_STATE_QUEUED, 101);
	put_out(pl->store, 3, 1, 3, MSG_STATE_QUEUED, 102);
	put_out(pl->store, 4, 1, 4, MSG_STATE_QUEUED, 103);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	features_body_added(pl, &held);

	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "1 2 3 4");
	assert_int_equal(fake_count(FAKE_BODY_ADD), 2);
	assert_int_equal(fake_nth(FAKE_BODY_ADD, 0)->store_id, 101);
	assert_int_equal(fake_nth(FAKE_BODY_ADD, 1)->store_id, 102);
	/* Each before its first entry. */
	assert_int_equal(fake.calls[0].kind, FAKE_BODY_ADD);
	assert_int_equal(fake.calls[1].kind, FAKE_ENTRY_ADD);
	assert_int_equal(fake.calls[3].kind, FAKE_BODY_ADD);
	assert_int_equal(fake.calls[3].store_id, 102);

	fake_reset();
	ql = (struct queue_load){0};
	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_int_equal(ql.loaded, 4);
	assert_int_equal(fake_count(FAKE_BODY_ADD), 0);

	features_body_gone(pl, 101);
	fake_reset();
	ql = (struct queue_load){0};
	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_int_equal(fake_count(FAKE_BODY_ADD), 1);
	assert_int_equal(fake_nth(FAKE_BODY_ADD, 0)->store_id, 101);
}

/* A body the broker refuses is not noted as held: handed again next time
 * (and its entry is dropped as refused, not as one without a body). */
static void test_refused_body_not_held(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	put_body(pl->store, 101);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	fake.answer[FAKE_BODY_ADD] = BROKER_NOMEM;
	assert_int_equal(body_ensure(pl, 101), BROKER_NOMEM);
	fake.answer[FAKE_BODY_ADD] = BROKER_OK;
	assert_int_equal(body_ensure(pl, 101), BROKER_OK);
	assert_int_equal(body_ensure(pl, 101), BROKER_OK);
	assert_int_equal(fake_count(FAKE_BODY_ADD), 2);
	assert_int_equal(body_ensure(pl, 999), BROKER_NOT_FOUND);
}

/* queue_storage disk: a hand-back gave the message a new packet id, the
 * client got it and the PUBREL under that id, and the broker stopped before
 * the store had any of it: the journal's record says which id. The message
 * is handed over under it, and stored so; the message not sent yet that
 * comes ahead of it in the queue does not get that id. */
static void test_pubrel_sent_under_the_journaled_id(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	struct handover_journal j = {fx, jhook_released_in, jhook_pubrel_sent};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	put_body(pl->store, 101);
	put_body(pl->store, 102);
	put_out(pl->store, 1, 1, 7, MSG_STATE_QUEUED, 0);
	put_out(pl->store, 2, 2, 8, MSG_STATE_QUEUED, 0);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	fx->journal_pubrel[fx->n_journal_pubrel] = 2;
	fx->journal_pubrel_mid[fx->n_journal_pubrel++] = 1;
	fx->move_in_flight[fx->n_move++] = 2;
	fake.hook[FAKE_ENTRY_DROP] = move_in_flight;

	restore(fx, &j, true);
	assert_string_equal(handed(CLIENT), "2 1");
	assert_string_equal(handed_mids(), "1 2");
	assert_string_equal(stored(pl), "1 2c");
	assert_string_equal(stored_mids(pl), "7 1");
	assert_int_equal(fake_count(FAKE_ENTRY_SET_STATE), 1);
	assert_int_equal(fake_nth(FAKE_ENTRY_SET_STATE, 0)->mid, 1);
	assert_int_equal(fx->counts.pubrel_resumed, 1);
}

/* A hand-back at run time in which a message sent before (it keeps its
 * packet id) comes after one not sent yet: the new id the first gets is
 * not the one the second keeps. */
static void test_queue_load_new_ids_avoid_kept_ones(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	uint8_t mids[MID_MAP_BYTES] = {0};
	struct queue_load ql = {.mids = mids};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	put_body(pl->store, 101);
	put_body(pl->store, 102);
	put_out(pl->store, 1, 1, 40, MSG_STATE_QUEUED, 0);
	put_out(pl->store, 2, 1, 1, MSG_STATE_WAIT_FOR_PUBACK, 0);
	assert_int_equal(store_commit(pl->store), STORE_OK);

	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "1 2");
	assert_string_equal(handed_mids(), "2 1");
}

/* A later part of a hand-back passes over a sent message the broker holds
 * already under its id (handed over out of order by the first part, or
 * routed during the hand-back and sent ahead of it); the next one goes. */
static void test_queue_load_later_part_skips_held(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	uint8_t mids[MID_MAP_BYTES] = {0};
	struct queue_load ql = {.mids = mids};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	put_body(pl->store, 101);
	put_body(pl->store, 102);
	put_body(pl->store, 103);
	put_out(pl->store, 1, 1, 5, MSG_STATE_QUEUED, 0);
	put_out(pl->store, 2, 1, 7, MSG_STATE_WAIT_FOR_PUBACK, 0);
	put_out(pl->store, 3, 1, 8, MSG_STATE_QUEUED, 0);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	mids[7 >> 3] |= 1u << (7 & 7);
	ql.from = store_queue_seq(pl->store, 2);
	ql.next_mid = 7;

	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "3");
	assert_string_equal(handed_mids(), "8");
	assert_int_equal(ql.loaded, 1);
}

/* A hand-back at run time with QoS 2 messages whose PUBREL was sent: they
 * keep their packet ids and are put back in their state at the nudge. */
static void test_queue_load_pubrel_sent(void **state)
{
	struct fx *fx = *state;
	struct plugin *pl = &fx->base.pl;
	uint8_t mids[MID_MAP_BYTES] = {0};
	struct queue_load ql = {.kick = true, .mids = mids};

	pl->cfg.queue_storage = QUEUE_STORAGE_DISK;
	put_body(pl->store, 101);
	put_body(pl->store, 102);
	put_out(pl->store, 1, 2, 300, MSG_STATE_WAIT_FOR_PUBCOMP, 0);
	put_out(pl->store, 2, 1, 9, MSG_STATE_QUEUED, 0);
	assert_int_equal(store_commit(pl->store), STORE_OK);
	fx->move_in_flight[fx->n_move++] = 1;
	fake.hook[FAKE_ENTRY_DROP] = move_in_flight;

	assert_int_equal(queue_load(pl, CLIENT, &ql), STORE_OK);
	assert_string_equal(handed(CLIENT), "1 2");
	assert_string_equal(handed_mids(), "300 301");
	assert_true(fx->moved);
	assert_int_equal(fake_count(FAKE_ENTRY_SET_STATE), 1);
	assert_int_equal(fake_nth(FAKE_ENTRY_SET_STATE, 0)->mid, 300);
	assert_int_equal(fake_nth(FAKE_ENTRY_SET_STATE, 0)->state, MSG_STATE_WAIT_FOR_PUBCOMP);
	assert_false(fx->updated_stays[0]);
	assert_false(fake_logged("are not among the first in flight"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_start_up_in_order, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_refused_entry_removed, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_missing_body_removed, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_pubrel_sent_first_and_resumed, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_pubrel_sent_not_in_flight_logged, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_mode_start_up_keeps_queue_stored, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_mode_start_up_journaled, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_disk_mode_packet_ids, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_queue_load_parts, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_queued_or_dropped, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_body_handed_once, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_refused_body_not_held, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_queue_load_pubrel_sent, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_pubrel_sent_under_the_journaled_id, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_queue_load_new_ids_avoid_kept_ones, fx_setup, feature_fx_teardown),
		cmocka_unit_test_setup_teardown(test_queue_load_later_part_skips_held, fx_setup, feature_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
