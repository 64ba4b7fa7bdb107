/* Retention of offline sessions' queues: plugin_opt_max_queued_messages and
 * plugin_opt_max_queued_bytes with plugin_opt_queue_full, and
 * plugin_opt_offline_ttl next to MQTT 5 message expiry.
 *
 * The broker holds every queued message in memory and only it can drop one
 * (mosquitto_persist_client_msg_delete, which finds the message by packet
 * id), so each stored session keeps here the order, packet id, size and
 * expiry of its outgoing entries. At the tick, a session whose client is not
 * connected and that is over a limit or holds an expired entry gets the
 * broker to drop them; the broker's delete event then removes each from the
 * store, as an acknowledgement does. A connected client is sent its queue as
 * it is, under the broker's own limits.
 *
 * The default expiry is written into the stored body (on_base_msg_add), so
 * after a restart the broker enforces it like an MQTT 5 expiry; until then
 * the sweep here does, and a reconnecting client's session is swept at its
 * authentication, before the broker hands it the queue.
 *
 * With plugin_opt_queue_storage disk the entries of an offline session are
 * in the store only once the tick has released them (backlog.c, which runs
 * first): the limits and expiry remove them from the store directly, and
 * leave alone a session the broker still holds. A handed-back message that
 * expired is dropped by the broker when it would send it. At a restart the
 * entries of sessions that stay stored are read from the store (with their
 * bodies' size and expiry), as the broker's restore reports the others. */
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>

#define DROPS_PER_TICK 1000    /* about 2 ms of the broker's time in one tick */
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
	struct ret_entry *e; /* a ring: e[(head + i) % cap] for i < n, oldest first */
	size_t head, n, cap;
	uint64_t popped;     /* entries ever taken off the front: entry i is number popped + i */
	size_t live;
	uint64_t bytes;
	int64_t next_expiry; /* no live entry expires before it; 0: none expires */
	bool online;
	bool due;            /* in the due list */
};

/* Queue limits and expiry of offline sessions (retention.c). */
struct retention {
	struct client_table sessions;   /* struct ret_session */
	struct ret_session **due;       /* sessions to apply the limits or expiry to */
	size_t n_due, cap_due;
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

static bool over_limit(const struct plugin *pl, const struct ret_session *s)
{
	return (pl->cfg.max_queued_messages && s->live > pl->cfg.max_queued_messages)
		|| (pl->cfg.max_queued_bytes && s->bytes > pl->cfg.max_queued_bytes);
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
	if(!s || ring_push(s, &e)){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: out of memory: a queued message of %s is not "
				"under the retention limits", clientid);
		return;
	}
	s->live++;
	s->bytes += e.bytes;
	if(e.expire_at && (!s->next_expiry || e.expire_at < s->next_expiry)){
		s->next_expiry = e.expire_at;
	}
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

static void entry_gone(struct ret_session *s, struct ret_entry *e)
{
	e->gone = true;
	s->live--;
	s->bytes -= e->bytes;
	trim(s);
}

void retention_remove(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct ret_session *s = client_find(&pl->retention->sessions, clientid);
	struct ret_entry *e = s ? entry_find(s, cmsg_id) : NULL;

	if(e){
		entry_gone(s, e);
	}
}

static void due_forget(struct retention *r, struct ret_session *s)
{
	for(size_t i = 0; i < r->n_due; i++){
		if(r->due[i] == s){
			r->due[i] = r->due[--r->n_due];
			return;
		}
	}
}

void retention_session_gone(struct plugin *pl, const char *clientid)
{
	struct retention *r = pl->retention;
	struct ret_session *s = client_take(&r->sessions, clientid);

	if(s){
		if(s->due){
			due_forget(r, s);
		}
		session_free(s);
	}
}

/* ---- dropping ---- */

/* Asks the broker to drop e; true when it did (its delete event marked it
 * gone: the slot stays in place, a trim only moves the ring's ends). In
 * disk mode the session is released and e is removed from the store. */
static bool drop(struct plugin *pl, struct ret_session *s, struct ret_entry *e)
{
	if(backlog_on(pl)){
		if(store_queue_remove(pl->store, s->clientid, e->cmsg_id, e->store_id) != STORE_OK){
			return false;
		}
		entry_gone(s, e);
		return true;
	}
	broker_entry_drop(s->clientid, e->mid, e->qos);
	if(!e->gone){
		/* The broker no longer holds it: forget it rather than try again
		 * at every tick. */
		entry_gone(s, e);
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
 * the broker's delete by id would find that one (not in disk mode, which
 * removes by sequence number). */
static uint64_t drop_expired(struct plugin *pl, struct ret_session *s, int64_t now, unsigned *budget)
{
	size_t cap = s->live < *budget ? s->live : *budget, nv = 0;
	uint64_t *victims, dropped = 0;   /* entry numbers (popped + index) */
	uint8_t *kept = NULL;             /* bit per packet id of an older entry that stays */

	if(!s->live){
		s->next_expiry = 0;
		return 0;
	}
	if(!cap || !(victims = malloc(cap * sizeof(*victims)))){
		return 0;
	}
	if(s->n > MID_SPAN && !backlog_on(pl) && !(kept = calloc(65536 / 8, 1))){
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

	if(!over_limit(pl, s) || (!oldest && !backlog_on(pl) && mid_counts(s, &cnt))){
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

/* Applies expiry and the limits to s (not connected); false when the
 * budget ran out first. */
static bool session_apply(struct plugin *pl, struct ret_session *s, int64_t now, unsigned *budget)
{
	uint64_t expired = drop_expired(pl, s, now, budget);
	uint64_t full = drop_over_limit(pl, s, budget);

	log_drops(pl, s, "expired messages", expired);
	log_drops(pl, s, pl->cfg.queue_full == QUEUE_FULL_DROP_OLDEST ? "oldest messages (queue full)"
			: "new messages (queue full)", full);
	return *budget > 0;
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
	while(r->n_due && budget){
		struct ret_session *s = r->due[r->n_due - 1];
		/* Disk mode: one the broker still holds (PUBRELs outstanding) is
		 * marked again by the expiry scan or its next message. */
		bool apply = !s->online && (!backlog_on(pl) || backlog_released(pl, s->clientid));
		if(apply && !session_apply(pl, s, now, &budget)){
			break;   /* the rest at the next tick */
		}
		s->due = false;
		r->n_due--;
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
		if(s->due){
			due_forget(r, s);
			s->due = false;
		}
		return;
	}
	if(!(s = client_find(&r->sessions, clientid))){
		return;
	}
	s->online = false;
	if(!s->n){
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

/* One walk over the bodies: a lookup per queue entry would take longer. */
void retention_stored_begin(struct plugin *pl)
{
	if(retention_on(pl) && store_walk_msgs(pl->store, note_body, pl) != STORE_OK){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: cannot read the stored messages' sizes and expiry: "
				"stored queues count them as empty and never expiring");
	}
}

struct stored_walk {
	struct plugin *pl;
	const char *clientid;
};

static int note_entry(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct stored_walk *w = ctx;

	if(q->direction == MSG_DIR_OUT){
		retention_add(w->pl, w->clientid, seq, q->mid, q->qos, q->store_id);
	}
	return 0;
}

void retention_stored(struct plugin *pl, const char *clientid)
{
	struct stored_walk w = {pl, clientid};

	if(retention_on(pl) && store_walk_queue(pl->store, clientid, note_entry, &w) != STORE_OK){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: cannot read the stored queue of client %s: "
				"its messages are not under the retention limits", clientid);
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
	free(r);
}

void retention_stats(const struct retention *r, struct feature_stats *out)
{
	out->dropped_queue_full = r->dropped_full;
	out->dropped_expired = r->dropped_expired;
}
