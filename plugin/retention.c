/* Retention of offline sessions' queues: plugin_opt_max_queued_messages and
 * plugin_opt_max_queued_bytes with plugin_opt_queue_full, and
 * plugin_opt_offline_ttl next to MQTT 5 message expiry.
 *
 * Memory mode: the broker holds every queued message in memory and only it
 * can drop one (mosquitto_persist_client_msg_delete, which finds the message
 * by packet id), so each stored session keeps here the order, packet id,
 * size and expiry of its outgoing entries (a ring). At the tick, a session
 * whose client is not connected and that is over a limit or holds an
 * expired entry gets the broker to drop them; the broker's delete event
 * then removes each from the store, as an acknowledgement does. A
 * connected client is sent its queue as it is, under the broker's own
 * limits. The default expiry is written into the stored body
 * (on_base_msg_add), so after a restart the broker enforces it like an
 * MQTT 5 expiry; until then the sweep here does, and a reconnecting
 * client's session is swept at its authentication, before the broker
 * hands it the queue.
 *
 * Disk mode (plugin_opt_queue_storage disk): an offline session's entries
 * are in the store only, so a session keeps here just its tally (count,
 * bytes, a lower bound of its earliest expiry), and the store keeps it too
 * (DB_TALLY), written in the commit that holds the queue changes it counts
 * (retention_flush runs before every journal mark), so a restart reads one
 * record per session instead of every queue. Limits and expiry read the
 * session's stored entries when they act, a bounded number per tick, and
 * remove them from the store; a session the broker still holds, or whose
 * queue has writes not committed yet, waits. A handed-back message that
 * expired is dropped by the broker when it would send it. */
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>

#define DROPS_PER_TICK 1000    /* entries dropped, or read in disk mode: about 2 ms of the broker's time */
#define EXPIRY_SCAN_S 1
#define LOG_EVERY_S 10
/* Packet ids of one client repeat after 65535 messages; past that span the
 * broker's delete could find an older message with the victim's id. */
#define MID_SPAN 65535

struct ret_entry {
	uint64_t cmsg_id;
	uint64_t store_id;
	int64_t expire_at;   /* unix seconds; 0: never */
	uint32_t bytes;
	uint16_t mid;
	uint8_t qos;
	bool gone;           /* removed; popped once it reaches an end */
};

struct ret_session {
	char *clientid;      /* first: a client_table record */
	struct ret_entry *e; /* memory mode, a ring: e[(head + i) % cap] for i < n, oldest first */
	size_t head, n, cap;
	uint64_t popped;     /* entries ever taken off the front: entry i is number popped + i */
	uint64_t live;       /* outgoing QoS 1/2 entries */
	uint64_t bytes;
	int64_t next_expiry; /* no live entry expires before it; 0: none expires */
	/* Disk mode: an expiry pass over the stored queue, over several ticks. */
	uint64_t pass_from;  /* the next sequence number it reads; 0: no pass */
	int64_t pass_min;    /* the earliest expiry it kept so far */
	bool online;
	bool due;            /* in the due list */
	bool dirty;          /* disk mode: in the dirty list, the tally not yet written */
};

/* Queue limits and expiry of offline sessions (retention.c). */
struct retention {
	struct client_table sessions;   /* struct ret_session */
	struct ret_session **due;       /* sessions to apply the limits or expiry to */
	size_t n_due, cap_due;
	struct ret_session **dirty;     /* disk mode: tallies to write */
	size_t n_dirty, cap_dirty;
	bool claim;                     /* disk mode: claim the tallies once they are written */
	bool kept;                      /* disk mode: the stored tallies match the queues */
	bool count_all;                 /* disk mode, at restore: they did not when it began */
	int64_t expiry_scan_at;
	time_t log_at;
	uint64_t dropped_full, dropped_expired;
};

/* ---- sessions ---- */

static struct ret_entry *at(struct ret_session *s, size_t i)
{
	return &s->e[(s->head + i) % s->cap];
}

static void trim(struct ret_session *s)
{
	while(s->n && at(s, 0)->gone){
		s->head = (s->head + 1) % s->cap;
		s->n--;
		s->popped++;
	}
	while(s->n && at(s, s->n - 1)->gone){
		s->n--;
	}
}

static int ring_push(struct ret_session *s, const struct ret_entry *e)
{
	if(s->n == s->cap){
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct ret_entry *grown = malloc(cap * sizeof(*grown));
		if(!grown){
			return -1;
		}
		for(size_t i = 0; i < s->n; i++){
			grown[i] = *at(s, i);
		}
		free(s->e);
		s->e = grown;
		s->cap = cap;
		s->head = 0;
	}
	s->e[(s->head + s->n) % s->cap] = *e;
	s->n++;
	return 0;
}

static void session_free(void *rec)
{
	struct ret_session *s = rec;

	free(s->clientid);
	free(s->e);
	free(s);
}

static void mark_due(struct retention *r, struct ret_session *s)
{
	if(s->due || s->online){
		return;
	}
	if(ARRAY_GROW(r->due, r->n_due, r->cap_due, 64)){
		return;   /* marked again at its next message or expiry scan */
	}
	r->due[r->n_due++] = s;
	s->due = true;
}

/* Disk mode: the tally goes to the store at the next flush. */
static void mark_dirty(struct plugin *pl, struct ret_session *s)
{
	struct retention *r = pl->retention;

	if(!backlog_on(pl) || s->dirty){
		return;
	}
	if(ARRAY_GROW(r->dirty, r->n_dirty, r->cap_dirty, 64)){
		/* Behind the queue, the stored tallies are counted again at
		 * the next start (the claim is withdrawn). */
		broker_log(BROKER_LOG_ERR, "persist-lmdb: out of memory: the queue tally of %s is not stored",
				s->clientid);
		r->kept = false;
		r->claim = true;
		return;
	}
	r->dirty[r->n_dirty++] = s;
	s->dirty = true;
}

static void list_forget(struct ret_session **list, size_t *n, struct ret_session *s)
{
	for(size_t i = 0; i < *n; i++){
		if(list[i] == s){
			list[i] = list[--*n];
			return;
		}
	}
}

static bool over_limit(const struct plugin *pl, const struct ret_session *s)
{
	return (pl->cfg.max_queued_messages && s->live > pl->cfg.max_queued_messages)
		|| (pl->cfg.max_queued_bytes && s->bytes > pl->cfg.max_queued_bytes);
}

static void tally_clear(struct ret_session *s)
{
	s->live = s->bytes = 0;
	s->next_expiry = 0;
}

static void tally_more(struct ret_session *s, uint32_t bytes, int64_t expiry)
{
	s->live++;
	s->bytes += bytes;
	if(expiry && (!s->next_expiry || expiry < s->next_expiry)){
		s->next_expiry = expiry;
	}
	if(expiry && s->pass_from && (!s->pass_min || expiry < s->pass_min)){
		s->pass_min = expiry;
	}
}

static void tally_less(struct plugin *pl, struct ret_session *s, uint32_t bytes)
{
	s->live = s->live ? s->live - 1 : 0;
	s->bytes = s->bytes > bytes ? s->bytes - bytes : 0;
	if(!s->live){
		tally_clear(s);
	}
	mark_dirty(pl, s);
}

void retention_add(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid, uint8_t qos,
		uint64_t store_id)
{
	struct retention *r = pl->retention;
	struct ret_entry e = {.cmsg_id = cmsg_id, .store_id = store_id, .mid = mid, .qos = qos};
	struct ret_session *s;

	if(!retention_on(pl) || qos == 0){
		return;
	}
	s = client_get_or_add(&r->sessions, clientid, sizeof(*s));
	const struct body_note *b = bodies_find(pl, store_id);
	if(b){
		e.bytes = b->bytes;
		e.expire_at = b->expiry;
	}
	if(!s || (!backlog_on(pl) && ring_push(s, &e))){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: out of memory: a queued message of %s is not "
				"under the retention limits", clientid);
		return;
	}
	tally_more(s, e.bytes, e.expire_at);
	mark_dirty(pl, s);
	if(over_limit(pl, s)){
		mark_due(r, s);
	}
}

static struct ret_entry *entry_find(struct ret_session *s, uint64_t cmsg_id)
{
	/* The newest (a dropped new message) or one of the oldest (an acknowledgement). */
	if(s->n && at(s, s->n - 1)->cmsg_id == cmsg_id && !at(s, s->n - 1)->gone){
		return at(s, s->n - 1);
	}
	for(size_t i = 0; i < s->n; i++){
		struct ret_entry *e = at(s, i);
		if(e->cmsg_id == cmsg_id && !e->gone){
			return e;
		}
	}
	return NULL;
}

static void entry_gone(struct plugin *pl, struct ret_session *s, struct ret_entry *e)
{
	e->gone = true;
	tally_less(pl, s, e->bytes);
	trim(s);
}

void retention_remove(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint8_t qos, uint64_t store_id)
{
	struct ret_session *s = client_find(&pl->retention->sessions, clientid);
	struct ret_entry *e;

	if(!s || qos == 0){
		return;
	}
	if(backlog_on(pl)){
		/* The broker held it: it holds its body too. */
		const struct body_note *b = bodies_find(pl, store_id);
		tally_less(pl, s, b ? b->bytes : 0);
	}else if((e = entry_find(s, cmsg_id))){
		entry_gone(pl, s, e);
	}
}

void retention_session_gone(struct plugin *pl, const char *clientid)
{
	struct retention *r = pl->retention;
	struct ret_session *s = client_take(&r->sessions, clientid);

	if(s){
		if(s->due){
			list_forget(r->due, &r->n_due, s);
		}
		if(s->dirty){
			list_forget(r->dirty, &r->n_dirty, s);
		}
		session_free(s);
	}
}

/* The client's queue was emptied (control API purgeQueue). */
void retention_purged(struct plugin *pl, const char *clientid)
{
	struct ret_session *s = client_find(&pl->retention->sessions, clientid);

	if(s && backlog_on(pl)){
		tally_clear(s);
		s->pass_from = 0;
		mark_dirty(pl, s);
	}
}

/* Before every journal mark: the tallies go into the commit that holds the
 * queue changes they count. */
void retention_flush(struct plugin *pl)
{
	struct retention *r = pl->retention;
	size_t left = 0;

	for(size_t i = 0; i < r->n_dirty; i++){
		struct ret_session *s = r->dirty[i];
		struct rec_tally t = {s->live, s->bytes, s->next_expiry};
		if(store_result(store_tally_put(pl->store, s->clientid, &t), "a queue tally") != BROKER_OK){
			r->dirty[left++] = s;
			continue;
		}
		s->dirty = false;
		if(!s->live && !s->online && !s->due){
			retention_session_gone(pl, s->clientid);
		}
	}
	r->n_dirty = left;
	if(r->claim && !left
			&& store_result(store_tallies_claim(pl->store, r->kept), "the queue tallies' mark") == BROKER_OK){
		r->claim = false;
	}
}

/* ---- dropping, memory mode ---- */

/* Asks the broker to drop e; true when it did (its delete event marked it
 * gone: the slot stays in place, a trim only moves the ring's ends). */
static bool drop(struct plugin *pl, struct ret_session *s, struct ret_entry *e)
{
	broker_entry_drop(s->clientid, e->mid, e->qos);
	if(!e->gone){
		/* The broker no longer holds it: forget it rather than try again
		 * at every tick. */
		entry_gone(pl, s, e);
		return false;
	}
	return true;
}

/* Live entries per packet id, when s spans more ids than a client has:
 * the broker's delete by id finds the oldest message with it, so the
 * newest entry is dropped only when its id is unique. *out NULL: every id
 * is unique. -1 when out of memory. */
static int mid_counts(struct ret_session *s, uint8_t **out)
{
	uint8_t *cnt;

	*out = NULL;
	if(s->n <= MID_SPAN){
		return 0;
	}
	if(!(cnt = calloc(65536, 1))){
		return -1;
	}
	for(size_t i = 0; i < s->n; i++){
		struct ret_entry *e = at(s, i);
		if(!e->gone && cnt[e->mid] < UINT8_MAX){
			cnt[e->mid]++;
		}
	}
	*out = cnt;
	return 0;
}

static bool droppable(const uint8_t *cnt, const struct ret_entry *e)
{
	return !cnt || cnt[e->mid] == 1;
}

static bool drop_counted(struct plugin *pl, struct ret_session *s, struct ret_entry *e, uint8_t *cnt)
{
	uint16_t mid = e->mid;
	bool dropped = drop(pl, s, e);

	if(cnt && cnt[mid] < UINT8_MAX){
		cnt[mid]--;
	}
	return dropped;
}

static void log_drops(struct plugin *pl, const struct ret_session *s, const char *what, uint64_t n)
{
	struct retention *r = pl->retention;
	time_t now = time(NULL);

	if(!n || (r->log_at && now - r->log_at < LOG_EVERY_S)){
		return;
	}
	r->log_at = now;
	broker_log(BROKER_LOG_WARNING, "persist-lmdb: dropped %llu %s queued for offline client %s "
			"(since start: %llu at the queue limits, %llu expired; more drops within %d s are not logged)",
			(unsigned long long)n, what, s->clientid, (unsigned long long)r->dropped_full,
			(unsigned long long)r->dropped_expired, LOG_EVERY_S);
}

/* Drops s's expired entries, oldest first, up to *budget, and finds its
 * next expiry; returns how many it dropped. Past MID_SPAN entries, one
 * whose packet id an older entry that stays has too is left for later:
 * the broker's delete by id would find that one. */
static uint64_t drop_expired(struct plugin *pl, struct ret_session *s, int64_t now, unsigned *budget)
{
	size_t cap = s->live < *budget ? (size_t)s->live : *budget, nv = 0;
	uint64_t *victims, dropped = 0;   /* entry numbers (popped + index) */
	uint8_t *kept = NULL;             /* bit per packet id of an older entry that stays */

	if(!s->live){
		s->next_expiry = 0;
		return 0;
	}
	if(!cap || !(victims = malloc(cap * sizeof(*victims)))){
		return 0;
	}
	if(s->n > MID_SPAN && !(kept = calloc(65536 / 8, 1))){
		free(victims);
		return 0;
	}
	s->next_expiry = 0;
	for(size_t i = 0; i < s->n; i++){
		struct ret_entry *e = at(s, i);
		if(e->gone){
			continue;
		}
		bool free_id = !kept || !(kept[e->mid >> 3] & (1u << (e->mid & 7)));
		if(e->expire_at && e->expire_at < now && free_id && nv < cap){
			victims[nv++] = s->popped + i;
			continue;
		}
		if(kept){
			kept[e->mid >> 3] |= (uint8_t)(1u << (e->mid & 7));
		}
		if(e->expire_at && (!s->next_expiry || e->expire_at < s->next_expiry)){
			s->next_expiry = e->expire_at;
		}
	}
	free(kept);
	for(size_t i = 0; i < nv; i++){
		/* Drops only take entries off the ends: the rest keep their numbers. */
		size_t idx = (size_t)(victims[i] - s->popped);
		struct ret_entry *e = idx < s->n ? at(s, idx) : NULL;
		(*budget)--;
		if(e && !e->gone && drop(pl, s, e)){
			dropped++;
			pl->retention->dropped_expired++;
		}
	}
	free(victims);
	return dropped;
}

/* drop-oldest takes the front, which the broker's delete by id finds first;
 * drop-new the back, while its id is unique. */
static uint64_t drop_over_limit(struct plugin *pl, struct ret_session *s, unsigned *budget)
{
	bool oldest = pl->cfg.queue_full == QUEUE_FULL_DROP_OLDEST;
	uint64_t dropped = 0;
	uint8_t *cnt = NULL;

	if(!over_limit(pl, s) || (!oldest && mid_counts(s, &cnt))){
		return 0;
	}
	while(*budget && s->n && over_limit(pl, s)){
		struct ret_entry *e = at(s, oldest ? 0 : s->n - 1);
		if(!oldest && !droppable(cnt, e)){
			break;
		}
		(*budget)--;
		if(drop_counted(pl, s, e, cnt)){
			dropped++;
			pl->retention->dropped_full++;
		}
	}
	free(cnt);
	return dropped;
}

/* ---- dropping, disk mode ---- */

/* An outgoing QoS 1/2 entry read from the store, and its body's size and
 * expiry. */
struct stored_entry {
	uint64_t seq;
	uint64_t store_id;
	uint32_t bytes;
	int64_t expire_at;
};

struct entry_read {
	struct stored_entry *e;
	size_t n, cap;
};

#define READ_FULL (-1)   /* the walk's callback: cap entries read */

static int read_entry(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct entry_read *rd = ctx;

	if(q->direction != MSG_DIR_OUT || q->qos == 0){
		return 0;
	}
	rd->e[rd->n++] = (struct stored_entry){.seq = seq, .store_id = q->store_id};
	return rd->n == rd->cap ? READ_FULL : 0;
}

static int read_body(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct stored_entry *e = ctx;

	(void)store_id;
	e->bytes = (uint32_t)m->payload.len;
	e->expire_at = m->expiry_time;
	return 0;
}

/* Reads up to cap of s's stored entries: oldest first from seq from on,
 * or newest first (back); with each body's size and expiry (a body not
 * found counts 0 bytes and no expiry). *end: the walk reached the end. */
static int entries_read(struct plugin *pl, struct ret_session *s, uint64_t from, bool back, size_t cap,
		struct entry_read *rd, bool *end)
{
	int rc;

	rd->n = 0;
	rd->cap = cap;
	if(!cap || !(rd->e = malloc(cap * sizeof(*rd->e)))){
		return STORE_ERR_NOMEM;
	}
	rc = back ? store_walk_queue_back(pl->store, s->clientid, read_entry, rd)
		: store_walk_queue_from(pl->store, s->clientid, from, read_entry, rd);
	*end = rc == STORE_OK;
	if(rc == READ_FULL){
		rc = STORE_OK;
	}
	for(size_t i = 0; rc == STORE_OK && i < rd->n; i++){
		const struct body_note *b = bodies_find(pl, rd->e[i].store_id);
		if(b){
			rd->e[i].bytes = b->bytes;
			rd->e[i].expire_at = b->expiry;
		}else{
			rc = store_msg_get(pl->store, rd->e[i].store_id, read_body, &rd->e[i]);
		}
	}
	if(rc != STORE_OK){
		free(rd->e);
		rd->e = NULL;
	}
	return rc;
}

static bool stored_drop(struct plugin *pl, struct ret_session *s, const struct stored_entry *e)
{
	if(store_queue_remove(pl->store, s->clientid, e->seq, e->store_id) != STORE_OK){
		return false;
	}
	tally_less(pl, s, e->bytes);
	return true;
}

/* A pass over the stored queue drops what expired and finds the earliest
 * expiry of the rest; it reads up to *budget entries per call and goes on
 * at the next. */
static uint64_t stored_expired(struct plugin *pl, struct ret_session *s, int64_t now, unsigned *budget)
{
	struct entry_read rd;
	uint64_t dropped = 0;
	bool end;

	if(!s->pass_from){
		s->pass_from = 1;
		s->pass_min = 0;
	}
	if(entries_read(pl, s, s->pass_from, false, *budget, &rd, &end) != STORE_OK){
		return 0;
	}
	*budget -= (unsigned)rd.n;
	for(size_t i = 0; i < rd.n; i++){
		const struct stored_entry *e = &rd.e[i];
		if(e->expire_at && e->expire_at < now){
			if(stored_drop(pl, s, e)){
				dropped++;
				pl->retention->dropped_expired++;
			}
		}else if(e->expire_at && (!s->pass_min || e->expire_at < s->pass_min)){
			s->pass_min = e->expire_at;
		}
	}
	if(rd.n){
		s->pass_from = rd.e[rd.n - 1].seq + 1;
	}
	if(end){
		s->next_expiry = s->live ? s->pass_min : 0;
		s->pass_from = 0;
		mark_dirty(pl, s);
	}
	free(rd.e);
	return dropped;
}

/* drop-oldest from the front of the stored queue, drop-new from its back;
 * reads what the count limit says is too many, or a few for the bytes. */
static uint64_t stored_over_limit(struct plugin *pl, struct ret_session *s, unsigned *budget)
{
	bool oldest = pl->cfg.queue_full == QUEUE_FULL_DROP_OLDEST;
	uint64_t over = pl->cfg.max_queued_messages && s->live > pl->cfg.max_queued_messages
		? s->live - pl->cfg.max_queued_messages : 0;
	size_t cap = over > 64 ? (over < *budget ? (size_t)over : *budget) : (64 < *budget ? 64 : *budget);
	struct entry_read rd;
	uint64_t dropped = 0;
	size_t i;
	bool end;

	if(entries_read(pl, s, 0, !oldest, cap, &rd, &end) != STORE_OK){
		return 0;
	}
	*budget -= (unsigned)rd.n;
	for(i = 0; i < rd.n && over_limit(pl, s); i++){
		if(stored_drop(pl, s, &rd.e[i])){
			dropped++;
			pl->retention->dropped_full++;
		}
	}
	if(end && i == rd.n && over_limit(pl, s)){
		/* Nothing counted is left: the tally was off. */
		tally_clear(s);
		mark_dirty(pl, s);
	}
	free(rd.e);
	return dropped;
}

/* Applies expiry and the limits to s (not connected); true when s is done
 * with. In disk mode one step per call: what it removed is read again
 * only once committed. */
static bool session_apply(struct plugin *pl, struct ret_session *s, int64_t now, unsigned *budget)
{
	uint64_t expired = 0, full = 0;
	bool done;

	if(!backlog_on(pl)){
		expired = drop_expired(pl, s, now, budget);
		full = drop_over_limit(pl, s, budget);
		done = *budget > 0;
	}else if(s->pass_from || (s->next_expiry && s->next_expiry < now)){
		expired = stored_expired(pl, s, now, budget);
		done = !s->pass_from && !expired && !over_limit(pl, s);
	}else{
		full = over_limit(pl, s) ? stored_over_limit(pl, s, budget) : 0;
		done = !over_limit(pl, s);
	}
	log_drops(pl, s, "expired messages", expired);
	log_drops(pl, s, pl->cfg.queue_full == QUEUE_FULL_DROP_OLDEST ? "oldest messages (queue full)"
			: "new messages (queue full)", full);
	return done;
}

/* Disk mode: what the broker holds of a session, or what is not committed
 * of its queue, waits. */
static bool stored_ready(struct plugin *pl, const struct ret_session *s)
{
	return !backlog_on(pl) || (backlog_released(pl, s->clientid) && store_queue_settled(pl->store, s->clientid));
}

void retention_tick(struct plugin *pl)
{
	struct retention *r = pl->retention;
	unsigned budget = DROPS_PER_TICK;
	int64_t now;

	if(!retention_on(pl)){
		return;
	}
	now = (int64_t)time(NULL);
	if(now - r->expiry_scan_at >= EXPIRY_SCAN_S){
		r->expiry_scan_at = now;
		for(size_t i = 0; i < r->sessions.cap; i++){
			struct ret_session *s = r->sessions.slots[i];
			if(s && s->next_expiry && s->next_expiry < now){
				mark_due(r, s);
			}
		}
	}
	for(size_t i = r->n_due; i-- > 0 && budget;){
		struct ret_session *s = r->due[i];
		if(!s->online && (!stored_ready(pl, s) || !session_apply(pl, s, now, &budget))){
			continue;   /* the rest at a later tick */
		}
		s->due = false;
		r->due[i] = r->due[--r->n_due];
	}
}

/* A connected client gets a record to carry the mark; one that leaves
 * nothing queued loses it (clean sessions never queue anything). */
void retention_online(struct plugin *pl, const char *clientid, bool online)
{
	struct retention *r = pl->retention;
	struct ret_session *s;

	if(!retention_on(pl)){
		return;
	}
	if(online){
		s = client_get_or_add(&r->sessions, clientid, sizeof(*s));
		if(!s){
			return;   /* its messages come under the limits as if it were offline */
		}
		s->online = true;
		s->pass_from = 0;
		if(s->due){
			list_forget(r->due, &r->n_due, s);
			s->due = false;
		}
		return;
	}
	if(!(s = client_find(&r->sessions, clientid))){
		return;
	}
	s->online = false;
	if(!s->live && !s->dirty){
		retention_session_gone(pl, clientid);
	}else if(over_limit(pl, s)){
		mark_due(r, s);
	}
}

/* Before the broker hands a reconnecting client its session: what expired
 * since the last sweep is not delivered. In disk mode the broker drops what
 * expired when it would send it. */
void retention_auth(struct plugin *pl, const char *clientid)
{
	struct ret_session *s;
	unsigned budget = UINT32_MAX;

	if(!pl->cfg.offline_ttl || backlog_on(pl)){
		return;
	}
	s = client_find(&pl->retention->sessions, clientid);
	if(s && !s->online && s->next_expiry && s->next_expiry < (int64_t)time(NULL)){
		log_drops(pl, s, "expired messages", drop_expired(pl, s, (int64_t)time(NULL), &budget));
	}
}

/* ---- a restart in disk mode ---- */

static int note_body(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	bodies_stored(ctx, store_id, (uint32_t)m->payload.len, m->expiry_time);
	return 0;
}

/* The stored tallies are read if the last run kept them; if not, every
 * stored queue is counted once, with one walk over the bodies first (a
 * lookup per queue entry would take longer), and they are kept from now. */
void retention_stored_begin(struct plugin *pl)
{
	struct retention *r = pl->retention;
	uint64_t entries = 0, bytes;

	if(!retention_on(pl)){
		return;
	}
	r->claim = true;
	r->kept = true;
	r->count_all = !store_tallies_kept(pl->store)
		&& (store_count(pl->store, DB_QUEUE, &entries, &bytes) != STORE_OK || entries);
	if(!r->count_all){
		return;
	}
	broker_log(BROKER_LOG_NOTICE, "persist-lmdb: counting the stored queues for the queue limits and "
			"expiry once (the last run did not keep their tallies)");
	if(store_walk_msgs(pl->store, note_body, pl) != STORE_OK){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: cannot read the stored messages' sizes and expiry: "
				"stored queues count them as empty and never expiring");
	}
}

/* Counts s's stored queue, reading each body's size and expiry (from the
 * notes a count of every queue made first, else from the store). */
static int count_stored(struct plugin *pl, struct ret_session *s)
{
	struct entry_read rd;
	uint64_t from = 0;
	bool end = false;
	int rc = STORE_OK;

	tally_clear(s);
	while(!end && (rc = entries_read(pl, s, from, false, DROPS_PER_TICK, &rd, &end)) == STORE_OK){
		for(size_t i = 0; i < rd.n; i++){
			tally_more(s, rd.e[i].bytes, rd.e[i].expire_at);
		}
		if(rd.n){
			from = rd.e[rd.n - 1].seq + 1;
		}
		end = end || !rd.n;
		free(rd.e);
	}
	mark_dirty(pl, s);
	return rc;
}

/* A session whose queue stays stored: its tally, read, or counted when the
 * stored one cannot be trusted (see retention_stored_begin), cannot be
 * read, or misses the journal's changes to the queue. */
void retention_stored(struct plugin *pl, const char *clientid, bool changed)
{
	struct retention *r = pl->retention;
	struct rec_tally t;
	struct ret_session *s;
	int rc = STORE_OK;

	if(!retention_on(pl)){
		return;
	}
	if(!(s = client_get_or_add(&r->sessions, clientid, sizeof(*s)))){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: out of memory: the stored queue of client %s is not "
				"under the retention limits", clientid);
		return;
	}
	if(!r->count_all && !changed && (rc = store_tally_get(pl->store, clientid, &t)) == STORE_OK){
		s->live = t.count;
		s->bytes = t.bytes;
		s->next_expiry = t.earliest_expiry;
	}else{
		if(rc != STORE_OK){
			broker_log(BROKER_LOG_WARNING, "persist-lmdb: the queue tally of client %s is unreadable: "
					"counting its stored queue", clientid);
		}
		if(count_stored(pl, s) != STORE_OK){
			broker_log(BROKER_LOG_ERR, "persist-lmdb: cannot read the stored queue of client %s: "
					"its messages are not all under the retention limits", clientid);
		}
	}
	if(!s->live && !s->dirty){
		retention_session_gone(pl, clientid);
	}else if(over_limit(pl, s) || (s->next_expiry && s->next_expiry < (int64_t)time(NULL))){
		mark_due(r, s);
	}
}

/* A session the journal names is handed over whole at a restart: the
 * journal's changes to its queue are not in its stored tally, so the
 * hand-over counts it again. */
void retention_recount(struct plugin *pl, const char *clientid)
{
	struct ret_session *s;

	if(!retention_on(pl) || !backlog_on(pl)){
		return;
	}
	if((s = client_get_or_add(&pl->retention->sessions, clientid, sizeof(*s)))){
		tally_clear(s);
		mark_dirty(pl, s);
	}
}

struct retention *retention_new(void)
{
	return calloc(1, sizeof(struct retention));
}

void retention_free(struct retention *r)
{
	if(!r){
		return;
	}
	client_table_free(&r->sessions, session_free);
	free(r->due);
	free(r->dirty);
	free(r);
}

void retention_stats(const struct retention *r, struct feature_stats *out)
{
	out->dropped_queue_full = r->dropped_full;
	out->dropped_expired = r->dropped_expired;
}
