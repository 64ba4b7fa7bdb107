/* plugin_opt_queue_storage disk: the messages of offline sessions live in
 * the database only.
 *
 * The broker keeps every queued message in memory. At the tick it is told
 * to let go of the outgoing messages of each stored session whose client is
 * not connected (broker_queue_release, which raises no
 * client message deletion, so the stored entries stay; the bodies stay in
 * the store while entries refer to them). When such a client authenticates
 * (BASIC_AUTH), before the broker hands it its session, the stored queue is
 * handed back in its order (queue_load in handback.c), a window of
 * plugin_opt_queue_window messages at a time: the next part goes in at the
 * tick once the client has acknowledged half of the last. What the broker
 * routes to the client meanwhile is queued behind the window; the tick
 * takes it back out (it stays stored, later in the queue than the rest of
 * the backlog) so that it comes in its turn. At start-up only sessions,
 * subscriptions, retained messages and wills are restored. */
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>

/* Warnings (a client that skipped BASIC_AUTH, a message sent ahead of a
 * backlog), at most this often. */
#define LOG_INTERVAL_S 10

/* plugin_opt_queue_storage disk (backlog.c): offline sessions' messages
 * are taken out of the broker at the tick and handed back when the client
 * returns. */
struct backlog {
	struct client_table sessions;   /* struct backlog_session */
	char **due;                     /* offline sessions the broker holds messages of */
	size_t n_due, cap_due;
	char **draining;                /* connected sessions whose stored queue is handed back in parts */
	size_t n_draining, cap_draining;
	uint64_t out_of_order;          /* routed during a hand-back and sent ahead of it */
	uint64_t evicted, loaded;       /* messages taken out of / handed back to the broker */
	time_t log_at;
};

/* Seqs (or cmsg_ids) of one session, sorted: as many as it had in flight. */
struct seq_set {
	uint64_t *v;
	size_t n, cap;
};

struct backlog_session {
	char *clientid;
	bool online;
	bool persisted;   /* the broker keeps the session (session expiry > 0) */
	bool on_disk;     /* stored messages the broker does not hold */
	bool due;         /* in the due list: the broker may hold messages of the offline client */
	bool in_held;     /* the broker holds the session's incoming QoS 2 messages (never released) */
	bool draining;    /* connected, with stored messages not handed back yet */
	uint64_t drain_next;  /* the seq of the first of them */
	bool written_ahead;   /* while draining: its queue written at or after drain_next since the
	                         last part was read */
	size_t held;      /* while draining: handed back and not yet acknowledged */
	size_t waiting;   /* of them, those the broker has not moved into flight yet (<= held) */
	bool loading;     /* a part is being handed over */
	size_t moved_loading;  /* handed-back messages the broker moved into flight meanwhile */
	unsigned next_mid;    /* the last packet id given to a handed-back message */
	uint8_t *mids;        /* while draining: packet ids of handed-back messages the broker holds */
	struct pushback { uint16_t mid; uint8_t qos; } *push;  /* routed while draining: to take back */
	size_t n_push, cap_push;
	uint64_t held_from;  /* the seq of the first message queued since the last release; 0: none */
	uint64_t held_to;    /* and of the last one */
	uint16_t *recent;    /* their packet ids (QoS 1/2) */
	size_t n_recent, cap_recent;
	uint64_t skip_from, skip_to;  /* while draining: seqs the broker held at the connection; 0: none */
	uint64_t cmsg_last;   /* the broker's last message number (cmsg_id) for the session */
	uint64_t cmsg_base;   /* added to its numbers: they went back to 1 at a connection */
	struct seq_set pubrel;  /* cmsg_ids of held messages whose PUBREL was sent */
	struct seq_set sent;    /* seqs of messages handed back that the client may have received: the
	                           broker's copies say nothing of it (dup 0) until it sends them again */
};

static void session_free(void *rec)
{
	struct backlog_session *s = rec;

	if(s){
		free(s->clientid);
		free(s->push);
		free(s->recent);
		free(s->mids);
		free(s->pubrel.v);
		free(s->sent.v);
		free(s);
	}
}

/* The position of seq in set, or where it would go. */
static size_t seq_set_at(const struct seq_set *set, uint64_t seq)
{
	size_t lo = 0, hi = set->n;

	while(lo < hi){
		size_t mid = lo + (hi - lo) / 2;
		if(set->v[mid] < seq){
			lo = mid + 1;
		}else{
			hi = mid;
		}
	}
	return lo;
}

static bool seq_set_has(const struct seq_set *set, uint64_t seq)
{
	size_t at = seq_set_at(set, seq);

	return at < set->n && set->v[at] == seq;
}

/* false: out of memory. */
static bool seq_set_add(struct seq_set *set, uint64_t seq)
{
	size_t at = seq_set_at(set, seq);

	if(at < set->n && set->v[at] == seq){
		return true;
	}
	if(ARRAY_GROW(set->v, set->n, set->cap, 8)){
		return false;
	}
	memmove(&set->v[at + 1], &set->v[at], (set->n - at) * sizeof(*set->v));
	set->v[at] = seq;
	set->n++;
	return true;
}

static void seq_set_remove(struct seq_set *set, uint64_t seq)
{
	size_t at = seq_set_at(set, seq);

	if(at < set->n && set->v[at] == seq){
		memmove(&set->v[at], &set->v[at + 1], (set->n - at - 1) * sizeof(*set->v));
		set->n--;
	}
}

/* Appends a copy of clientid to a list of client ids. */
static bool list_add(char ***list, size_t *n, size_t *cap, const char *clientid)
{
	char *id;

	if(ARRAY_GROW(*list, *n, *cap, 64)){
		return false;
	}
	id = strdup(clientid);
	if(!id){
		return false;
	}
	(*list)[(*n)++] = id;
	return true;
}

/* Offline, released at the last tick (or stored since the restart), not
 * handed back since, and no PUBREL outstanding. */
bool backlog_released(const struct plugin *pl, const char *clientid)
{
	const struct backlog_session *s = client_find(&pl->backlog->sessions, clientid);

	return s && !s->online && !s->draining && !s->due && !s->pubrel.n && !s->held_from;
}

static void mark_due(struct plugin *pl, struct backlog_session *s)
{
	struct backlog *b = pl->backlog;

	if(s->due){
		return;
	}
	if(!list_add(&b->due, &b->n_due, &b->cap_due, s->clientid)){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: out of memory: the queue of offline "
				"client %s stays in the broker's memory", s->clientid);
		return;
	}
	s->due = true;
}

static void drain_stop(struct backlog_session *s)
{
	free(s->mids);
	s->mids = NULL;
	s->draining = false;
	s->drain_next = 0;
	s->written_ahead = false;
	s->held = 0;
	s->waiting = 0;
	s->n_push = 0;
	s->skip_from = s->skip_to = 0;
}

static struct backlog_session *record_get(struct plugin *pl, const char *clientid)
{
	struct backlog_session *s = client_get_or_add(&pl->backlog->sessions, clientid, sizeof(*s));

	if(!s){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: out of memory: the queue of client %s "
				"stays in the broker's memory", clientid);
	}
	return s;
}

static void push_back(struct plugin *pl, struct backlog_session *s, uint16_t mid, uint8_t qos)
{
	if(ARRAY_GROW(s->push, s->n_push, s->cap_push, 64)){
		/* Left where it is, it comes before the rest of the backlog. */
		pl->backlog->out_of_order++;
		return;
	}
	s->push[s->n_push].mid = mid;
	s->push[s->n_push].qos = qos;
	s->n_push++;
}

/* A message routed to a draining client goes out ahead of the rest of its
 * backlog. The broker holds it: the part that reaches it passes it over
 * (handback.c). Counted and logged. */
static void went_ahead(struct plugin *pl, struct backlog_session *s, const char *clientid, uint16_t mid)
{
	time_t now = time(NULL);

	if(s->mids){
		s->mids[mid >> 3] |= (uint8_t)(1u << (mid & 7));
	}
	pl->backlog->out_of_order++;
	if(now - pl->backlog->log_at >= LOG_INTERVAL_S){
		pl->backlog->log_at = now;
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: a message for client %s went out ahead of "
				"its stored backlog: plugin_opt_queue_window (%zu) should exceed the broker's "
				"max_inflight_messages", clientid, pl->cfg.queue_window);
	}
}

void backlog_msg_added(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid,
		uint8_t qos, uint8_t state)
{
	struct backlog_session *s;

	if(!backlog_on(pl)){
		return;
	}
	s = record_get(pl, clientid);
	if(!s){
		return;
	}
	s->persisted = true;
	if(s->online || s->draining){
		if(!s->draining){
			return;
		}
		/* The broker numbers from the last id it gave: the next part goes on after it. */
		if(qos){
			s->next_mid = mid;
		}
		if(state == MSG_STATE_QUEUED){
			push_back(pl, s, mid, qos);
			return;
		}
		/* Nothing handed back was waiting in the broker: this one goes
		 * out now, ahead of the rest of the backlog. */
		if(qos){
			went_ahead(pl, s, clientid, mid);
		}
		return;
	}
	if(!s->held_from){
		s->held_from = store_queue_seq(pl->store, cmsg_id);
	}
	s->held_to = store_queue_seq(pl->store, cmsg_id);
	/* Without room for its id, a client connecting before the tick could
	 * be handed a stored message under the same id. */
	if(qos && !ARRAY_GROW(s->recent, s->n_recent, s->cap_recent, 8)){
		s->recent[s->n_recent++] = mid;
	}
	mark_due(pl, s);
}

void backlog_online(struct plugin *pl, const char *clientid, bool online)
{
	struct backlog_session *s;

	if(!backlog_on(pl)){
		return;
	}
	if(online){
		s = record_get(pl, clientid);
		if(s){
			s->online = true;
		}
		return;
	}
	s = client_find(&pl->backlog->sessions, clientid);
	if(!s){
		return;
	}
	/* A hand-back goes on if a new connection takes the session over
	 * (its CONNECT follows in the same call); otherwise the tick stops it
	 * and releases what was handed back; the rest stays stored. */
	s->online = false;
	if(s->persisted){
		/* What it had in flight or queued goes at the next tick. */
		mark_due(pl, s);
	}else if(!s->due){
		session_free(client_take(&pl->backlog->sessions, clientid));
	}
}

int backlog_defer(struct plugin *pl, const char *clientid, bool held)
{
	struct backlog_session *s = record_get(pl, clientid);

	if(!s){
		return -1;
	}
	s->persisted = true;
	s->in_held = held;
	if(held){
		/* Stored only once released at the next tick. */
		mark_due(pl, s);
	}else{
		s->on_disk = true;
	}
	return 0;
}

void backlog_session_added(struct plugin *pl, const char *clientid)
{
	struct backlog_session *s;

	if(backlog_on(pl) && (s = record_get(pl, clientid))){
		s->persisted = true;
		s->in_held = true;
	}
}

void backlog_session_gone(struct plugin *pl, const char *clientid)
{
	if(backlog_on(pl)){
		session_free(client_take(&pl->backlog->sessions, clientid));
	}
}

/* Has the broker drop what it holds of the client's outgoing messages.
 * Not while it holds one whose PUBREL was sent: handed back, such a
 * message keeps that state only if the broker puts it in flight at once,
 * and the clear leaves the session's in-flight quota used up, so it would
 * go out as a new PUBLISH, a second delivery. The broker keeps the
 * session until the client completes those exchanges. */
static int release(struct plugin *pl, struct backlog_session *s)
{
	int rc;

	if(s->pubrel.n){
		return BROKER_FAILED;
	}
	rc = broker_queue_release(s->clientid);
	if(rc != BROKER_OK && rc != BROKER_NOT_FOUND){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: cannot take the queue of offline client %s "
				"out of the broker's memory: %s", s->clientid, broker_strerror(rc));
		return rc;
	}
	s->on_disk = true;
	s->held_from = s->held_to = 0;
	s->n_recent = 0;
	s->sent.n = 0;
	pl->backlog->evicted++;
	pl->handed->let_go(pl, s->clientid);
	return BROKER_OK;
}

void backlog_pubrel_sent(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct backlog_session *s;

	if(!backlog_on(pl) || !(s = record_get(pl, clientid))){
		return;
	}
	if(!seq_set_add(&s->pubrel, cmsg_id)){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: out of memory: a QoS 2 message of client %s "
				"may be sent again as a new PUBLISH", clientid);
	}
}

/* A message handed back keeps its packet id if the client may have
 * received it (handback.c), but the broker takes it as new (dup 0) and,
 * moving it into flight or resetting it at a connection, reports a publish
 * state: stored so, it would be taken for never sent at the next hand-back
 * and get a new id, under which a QoS 2 receiver takes it a second time. */
void backlog_handed_sent(struct plugin *pl, const char *clientid, uint64_t seq)
{
	struct backlog_session *s;

	if(!backlog_on(pl) || !(s = record_get(pl, clientid))){
		return;
	}
	if(!seq_set_add(&s->sent, seq)){
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: out of memory: a message of client %s "
				"may be sent again under a new packet id", clientid);
	}
}

void backlog_queue_written(struct plugin *pl, const char *clientid, uint64_t seq)
{
	struct backlog_session *s;

	/* Most writes happen with no drain going on: no lookup then. */
	if(backlog_on(pl) && pl->backlog->n_draining && (s = client_find(&pl->backlog->sessions, clientid))
			&& s->draining && seq >= s->drain_next){
		s->written_ahead = true;
	}
}

/* The broker numbers a session's messages (cmsg_id) from the number its
 * session had when a new connection takes it over, but only if it holds
 * some of its messages then; otherwise from 1 again. With stored queues it
 * often holds none (released) while stored entries of this run carry the
 * old numbers: the numbers go on after the last one. Handed-back entries
 * carry their queue seq, already above the broker's range. */
uint64_t backlog_entry_seq(struct plugin *pl, const char *clientid, uint64_t cmsg_id, bool added)
{
	struct backlog_session *s;

	if(!backlog_on(pl) || cmsg_id >> STORE_SEQ_SHIFT){
		return cmsg_id;
	}
	s = added ? record_get(pl, clientid) : client_find(&pl->backlog->sessions, clientid);
	if(!s){
		return cmsg_id;
	}
	if(added){
		if(cmsg_id <= s->cmsg_last){
			s->cmsg_base += s->cmsg_last;
		}
		s->cmsg_last = cmsg_id;
	}
	return store_queue_seq(pl->store, s->cmsg_base + cmsg_id);
}

/* A message of the current hand-back (one routed meanwhile comes later in
 * the queue; the broker held the skipped ones itself). */
static bool handed(const struct backlog_session *s, uint64_t cmsg_id)
{
	return s->draining && cmsg_id < s->drain_next && !(cmsg_id >= s->skip_from && cmsg_id <= s->skip_to);
}

bool backlog_msg_moved(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid)
{
	struct backlog_session *s;
	bool sent;

	if(!backlog_on(pl) || !(s = client_find(&pl->backlog->sessions, clientid))){
		return false;
	}
	sent = seq_set_has(&s->sent, cmsg_id);
	/* The part's own, or ones waiting before it (nothing is routed meanwhile). */
	if(s->loading){
		s->moved_loading++;
		return sent;
	}
	if(handed(s, cmsg_id)){
		if(s->waiting){
			s->waiting--;
		}
		return sent;
	}
	/* A routed one the tick was to take back reached the front first: it
	 * goes out now, so it stays in the broker (taken back after it was
	 * sent, it would come again under a new id). */
	for(size_t i = 0; i < s->n_push; i++){
		if(s->push[i].mid == mid){
			s->push[i] = s->push[--s->n_push];
			went_ahead(pl, s, clientid, mid);
			break;
		}
	}
	return sent;
}

void backlog_msg_deleted(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint16_t mid, uint8_t state)
{
	struct backlog_session *s;

	if(!backlog_on(pl)){
		return;
	}
	s = client_find(&pl->backlog->sessions, clientid);
	if(!s){
		return;
	}
	if(s->draining && s->held){
		s->held--;
		/* One the broker dropped before sending it (expired). */
		if(state == MSG_STATE_QUEUED && handed(s, cmsg_id) && s->waiting){
			s->waiting--;
		}
		if(s->waiting > s->held){
			s->waiting = s->held;
		}
	}
	if(s->mids){
		s->mids[mid >> 3] &= (uint8_t)~(1u << (mid & 7));
	}
	seq_set_remove(&s->pubrel, cmsg_id);
	seq_set_remove(&s->sent, cmsg_id);
}

static void drain_tick(struct plugin *pl);

void backlog_tick(struct plugin *pl)
{
	struct backlog *b = pl->backlog;
	size_t n;

	if(!backlog_on(pl)){
		return;
	}
	drain_tick(pl);
	n = b->n_due;
	if(!n){
		return;
	}
	b->n_due = 0;
	for(size_t i = 0; i < n; i++){
		struct backlog_session *s = client_find(&b->sessions, b->due[i]);

		if(s && s->due){
			s->due = false;
			if(!s->online){
				release(pl, s);
			}
		}
		free(b->due[i]);
	}
}

/* Hands stored messages to the broker: from seq from (0: the start),
 * before seq before (0: to the end), at most max (0: all); kick for a
 * connected client. Returns the seq of the first one left over (0: none),
 * or -1 when nothing could be read. */
static int64_t load(struct plugin *pl, struct backlog_session *s, uint64_t from, uint64_t before, size_t max,
		bool kick)
{
	struct queue_load ql = {
		.from = from, .before = before, .max = max, .incoming = !s->in_held, .kick = kick,
		.next_mid = s->next_mid, .mids = s->mids,
	};
	int rc;

	/* Reads see committed data: what was written to the client's queue
	 * since the last commit is committed first (visible: the walk needs no
	 * sync). In a reconnect storm most clients need none; in a drain only
	 * writes at or after the part's start do (routed messages), not the
	 * acknowledgements, which are all behind it. */
	bool ahead = !s->draining || from < s->drain_next || s->written_ahead;

	s->written_ahead = false;
	if(ahead && !store_queue_settled(pl->store, s->clientid) && commit_marked_visible(pl) != STORE_OK){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: cannot commit before handing client %s its "
				"stored messages; they are sent at its next connection", s->clientid);
		return -1;
	}
	s->loading = true;
	s->moved_loading = 0;
	rc = queue_load(pl, s->clientid, &ql);
	s->loading = false;
	if(rc != STORE_OK){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: cannot read the stored messages of client %s; "
				"they are sent at its next connection", s->clientid);
		return -1;
	}
	pl->backlog->loaded += ql.loaded;
	s->in_held = true;
	s->next_mid = ql.next_mid;
	s->held += ql.loaded;
	s->waiting += ql.queued;
	s->waiting = s->waiting > s->moved_loading ? s->waiting - s->moved_loading : 0;
	return (int64_t)ql.next_seq;
}

/* The first part of the stored queue of a client about to be connected. */
static void drain_start(struct plugin *pl, struct backlog_session *s)
{
	int64_t next;

	drain_stop(s);
	s->next_mid = 0;
	/* Parts after the first need the ids the broker still holds. */
	s->mids = calloc(1, MID_MAP_BYTES);
	next = load(pl, s, 0, 0, pl->cfg.queue_window, false);
	if(next < 0){
		return;
	}
	s->on_disk = false;
	if(next == 0){
		free(s->mids);
		s->mids = NULL;
	}else if(!s->mids){
		/* Out of memory: the rest stays stored, for the next connection. */
		s->on_disk = true;
	}else{
		if(!list_add(&pl->backlog->draining, &pl->backlog->n_draining, &pl->backlog->cap_draining, s->clientid)){
			/* The rest stays stored, for the next connection. */
			s->on_disk = true;
			return;
		}
		s->draining = true;
		s->drain_next = (uint64_t)next;
		s->written_ahead = true;   /* not followed until now */
	}
}

/* How many stored messages the next part hands over (0: none yet).
 *
 * Order: a message routed to the client during the hand-back waits in the
 * broker behind the handed-back ones still queued there (waiting), until
 * the tick takes it back out. Between two ticks the broker moves at most as
 * many into flight as it has in flight (each needs an acknowledgement, and
 * the client acknowledges only what it was sent before), so once waiting is
 * no more than that, the next part goes in now, whatever is acknowledged,
 * and large enough to wait behind them, beyond the window if the broker's
 * in-flight window is larger: the routed message never reaches the front.
 * Otherwise the next part goes in once half the window is acknowledged. */
static size_t part_size(const struct plugin *pl, const struct backlog_session *s)
{
	size_t window = pl->cfg.queue_window, in_flight = s->held - s->waiting, want = 0;

	if(s->held * 2 <= window){
		want = window - s->held;
	}
	if(s->waiting <= in_flight && in_flight - s->waiting + 1 > want){
		want = in_flight - s->waiting + 1;
	}
	return want;
}

/* Hands over the next parts of a draining client's stored queue while
 * part_size says so: a broker whose in-flight window takes a whole part
 * gets the next one at once, until some of it waits (or the queue ends). */
static void drain_fill(struct plugin *pl, struct backlog_session *s)
{
	size_t want;

	while(s->draining && (want = part_size(pl, s))){
		uint64_t before = s->skip_to && s->drain_next < s->skip_from ? s->skip_from : 0;
		size_t held = s->held;
		int64_t next = load(pl, s, s->drain_next, before, want, true);

		if(next < 0){
			return;
		}
		if(!next && before){
			/* Up to what the broker held at the connection: on after it
			 * with what was routed since. */
			s->drain_next = s->skip_to + 1;
			continue;
		}
		s->drain_next = (uint64_t)next;
		if(!next){
			drain_stop(s);
			return;
		}
		if(s->held == held){
			return;   /* nothing taken: the next tick tries again */
		}
	}
}

/* Takes back what was routed to a draining client, then hands over the next
 * parts of its stored queue; false once the drain is over. */
static bool drain_step(struct plugin *pl, struct backlog_session *s)
{
	for(size_t i = 0; i < s->n_push; i++){
		broker_entry_take(s->clientid, s->push[i].mid, s->push[i].qos);
	}
	s->n_push = 0;
	if(s->online){
		drain_fill(pl, s);
	}
	return s->draining;
}

static void drain_tick(struct plugin *pl)
{
	struct backlog *b = pl->backlog;
	size_t kept = 0;

	for(size_t i = 0; i < b->n_draining; i++){
		struct backlog_session *s = client_find(&b->sessions, b->draining[i]);

		/* A client that left with PUBRELs outstanding keeps its session
		 * in the broker (release): its hand-back pauses until it returns. */
		if(s && s->draining && (s->online || s->pubrel.n) && drain_step(pl, s)){
			b->draining[kept++] = b->draining[i];
		}else{
			if(s && !s->online){
				drain_stop(s);
			}
			free(b->draining[i]);
		}
	}
	b->n_draining = kept;
}

/* Before the broker hands the session to the new connection: what the
 * broker still holds of it goes first (it is newer than what is stored
 * only), then the first part of the stored queue comes back. */
void backlog_auth(struct plugin *pl, const char *clientid)
{
	struct backlog_session *s;

	if(!backlog_on(pl)){
		return;
	}
	s = clientid ? client_find(&pl->backlog->sessions, clientid) : NULL;
	/* With PUBRELs outstanding, the broker still holds the session; a
	 * paused hand-back goes on once the client is connected. */
	if(!s || s->online || s->pubrel.n || !(s->on_disk || s->due)){
		return;
	}
	if(s->due && release(pl, s) != BROKER_OK){
		return;
	}
	drain_start(pl, s);
	/* If the connection is refused, the next tick takes it back out. */
	mark_due(pl, s);
}

void backlog_connected(struct plugin *pl, const char *clientid)
{
	struct backlog_session *s;
	time_t now;

	if(!backlog_on(pl)){
		return;
	}
	s = client_find(&pl->backlog->sessions, clientid);
	if(!s || s->online){
		return;
	}
	if(s->draining){
		/* BASIC_AUTH handed the first part over and the broker has just
		 * put what it could of it in flight: if that was all, the next
		 * part goes in before anything routed can go ahead of it. */
		drain_fill(pl, s);
		return;
	}
	if(!s->on_disk){
		return;
	}
	/* BASIC_AUTH was not called (TLS identity as username, extended
	 * authentication, or an authentication plugin loaded before this one
	 * decided): the broker has sent what was routed to the client since the
	 * last tick, which is newer than the stored messages it did not hold.
	 * The stored ones follow in parts, passing over those. */
	now = time(NULL);
	if(s->held_from && now - pl->backlog->log_at >= LOG_INTERVAL_S){
		pl->backlog->log_at = now;
		broker_log(BROKER_LOG_WARNING, "persist-lmdb: client %s connected without this plugin's "
				"BASIC_AUTH callback; messages routed to it in the same loop iteration went out ahead "
				"of its stored ones (load persist-lmdb before authentication plugins)", clientid);
	}
	drain_stop(s);
	s->mids = calloc(1, MID_MAP_BYTES);
	if(!s->mids){
		/* The rest stays stored, for the next connection. */
		return;
	}
	s->next_mid = 0;
	for(size_t i = 0; i < s->n_recent; i++){
		s->mids[s->recent[i] >> 3] |= (uint8_t)(1u << (s->recent[i] & 7));
		s->next_mid = s->recent[i];
	}
	if(!list_add(&pl->backlog->draining, &pl->backlog->n_draining, &pl->backlog->cap_draining, s->clientid)){
		drain_stop(s);
		return;
	}
	s->skip_from = s->held_from;
	s->skip_to = s->held_to;
	s->held_from = s->held_to = 0;
	s->n_recent = 0;
	s->draining = true;
	s->drain_next = 0;   /* the queue's start */
	s->written_ahead = true;   /* not followed until now */
	s->on_disk = false;
	drain_fill(pl, s);
}

struct backlog *backlog_new(void)
{
	return calloc(1, sizeof(struct backlog));
}

void backlog_free(struct backlog *b)
{
	if(!b){
		return;
	}
	client_table_free(&b->sessions, session_free);
	for(size_t i = 0; i < b->n_due; i++){
		free(b->due[i]);
	}
	free(b->due);
	for(size_t i = 0; i < b->n_draining; i++){
		free(b->draining[i]);
	}
	free(b->draining);
	free(b);
}

void backlog_stats(const struct backlog *b, struct feature_stats *out)
{
	out->backlog_releases = b->evicted;
	out->backlog_loaded = b->loaded;
	out->backlog_out_of_order = b->out_of_order;
}
