/* Sequence numbers for clients (plugin_opt_seq_property): every message a
 * stored session is given gets the next number of that session, kept with
 * its queue entry; the number goes out as a user property with the message,
 * and again with a resend, so a client sees a gap or a duplicate itself.
 *
 * MESSAGE_OUT does not say which queue entry it sends. The broker sends a
 * session's entries in their order, starting again from the first one not
 * acknowledged when the client reconnects, so each session keeps its
 * numbered entries in order with a "sent on this connection" mark: the
 * next send is the first entry not sent.
 *
 * With plugin_opt_queue_storage disk the list holds what the broker holds:
 * entries handed back come in with their stored number (seq_restore), one
 * the plugin takes back out of the broker leaves (seq_remove), and when the
 * broker lets go of an offline session's messages the list empties
 * (seq_let_go); the counter stays. */
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>

/* plugin_opt_seq_property: the numbered entries of each stored session. */
struct seqno {
	struct client_table sessions;   /* struct seq_session */
};

struct seq_entry {
	uint64_t cmsg_id;
	uint64_t n;
	bool sent;       /* sent on this connection */
	bool released;   /* QoS 2, PUBREL sent: only PUBREL goes out again */
};

struct seq_session {
	char *clientid;     /* first: a client_table record */
	uint64_t last;
	bool dirty;
	struct seq_entry *e;
	size_t n, cap;
	size_t first_unsent;   /* entries before it are sent (a hint, kept exact) */
};

static struct seq_session *session_find(struct plugin *pl, const char *clientid)
{
	return client_find(&pl->seqno->sessions, clientid);
}

static struct seq_session *session_get_or_add(struct plugin *pl, const char *clientid)
{
	return client_get_or_add(&pl->seqno->sessions, clientid, sizeof(struct seq_session));
}

static void session_free(void *rec)
{
	struct seq_session *s = rec;

	free(s->clientid);
	free(s->e);
	free(s);
}

static int entry_push(struct seq_session *s, uint64_t cmsg_id, uint64_t n)
{
	if(ARRAY_GROW(s->e, s->n, s->cap, 16)){
		return -1;
	}
	s->e[s->n++] = (struct seq_entry){cmsg_id, n, false, false};
	return 0;
}

static struct seq_entry *entry_find(struct seq_session *s, uint64_t cmsg_id)
{
	/* Acknowledgements and updates concern the oldest entries: search from the front. */
	for(size_t i = 0; i < s->n; i++){
		if(s->e[i].cmsg_id == cmsg_id){
			return &s->e[i];
		}
	}
	return NULL;
}

uint64_t seq_assign(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct seq_session *s;

	if(!pl->cfg.seq_property || !(s = session_get_or_add(pl, clientid))){
		return 0;
	}
	if(entry_push(s, cmsg_id, s->last + 1)){
		return 0;
	}
	s->dirty = true;
	return ++s->last;
}

uint64_t seq_lookup(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct seq_session *s = session_find(pl, clientid);
	struct seq_entry *e = s ? entry_find(s, cmsg_id) : NULL;

	return e ? e->n : 0;
}

void seq_remove(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct seq_session *s = session_find(pl, clientid);
	struct seq_entry *e = s ? entry_find(s, cmsg_id) : NULL;

	if(e){
		size_t i = (size_t)(e - s->e);
		memmove(e, e + 1, (s->n - i - 1) * sizeof(*e));
		s->n--;
		if(s->first_unsent > i){
			s->first_unsent--;
		}
	}
}

void seq_let_go(struct plugin *pl, const char *clientid)
{
	struct seq_session *s = session_find(pl, clientid);

	if(s){
		s->n = 0;
		s->first_unsent = 0;
	}
}

void seq_connection_ended(struct plugin *pl, const char *clientid)
{
	struct seq_session *s = session_find(pl, clientid);

	if(s){
		for(size_t i = 0; i < s->n; i++){
			s->e[i].sent = s->e[i].released;
		}
		s->first_unsent = 0;
	}
}

void seq_released(struct plugin *pl, const char *clientid, uint64_t cmsg_id)
{
	struct seq_session *s = session_find(pl, clientid);
	struct seq_entry *e = s ? entry_find(s, cmsg_id) : NULL;

	if(e){
		e->released = e->sent = true;
	}
}

void seq_session_ended(struct plugin *pl, const char *clientid)
{
	struct seq_session *s = client_take(&pl->seqno->sessions, clientid);

	if(s){
		session_free(s);
	}
}

int seq_restore(struct plugin *pl, const char *clientid, uint64_t cmsg_id, uint64_t n, bool released)
{
	struct seq_session *s;

	if(!pl->cfg.seq_property || !n || !(s = session_get_or_add(pl, clientid))){
		return 0;
	}
	if(n > s->last){
		s->last = n;
	}
	if(entry_push(s, cmsg_id, n)){
		return -1;
	}
	s->e[s->n - 1].released = s->e[s->n - 1].sent = released;
	return 0;
}

/* A session's queue is handed to the broker: its numbering goes on from the stored counter. */
void seq_handover(struct plugin *pl, const char *clientid)
{
	uint64_t last;

	if(pl->cfg.seq_property && store_seqno_get(pl->store, clientid, &last) == STORE_OK){
		seq_restore_last(pl, clientid, last);
	}
}

void seq_restore_last(struct plugin *pl, const char *clientid, uint64_t last)
{
	struct seq_session *s;

	if(pl->cfg.seq_property && last && (s = session_get_or_add(pl, clientid)) && last > s->last){
		s->last = last;
	}
}

void seq_flush(struct plugin *pl)
{
	struct client_table *t = &pl->seqno->sessions;

	for(size_t i = 0; i < t->cap; i++){
		struct seq_session *s = t->slots[i];
		if(s && s->dirty){
			if(store_result(store_seqno_put(pl->store, s->clientid, s->last), "a sequence number") == BROKER_OK){
				s->dirty = false;
			}
		}
	}
}

struct seqno *seqno_new(void)
{
	return calloc(1, sizeof(struct seqno));
}

void seqno_free(struct seqno *sq)
{
	if(sq){
		client_table_free(&sq->sessions, session_free);
		free(sq);
	}
}

/* The broker sends a session's messages in queue order: the one leaving
 * now is the first not sent yet. */
uint64_t seq_next_out(struct plugin *pl, const char *clientid)
{
	struct seq_session *s = session_find(pl, clientid);

	if(!s){
		return 0;
	}
	while(s->first_unsent < s->n && s->e[s->first_unsent].sent){
		s->first_unsent++;
	}
	if(s->first_unsent == s->n){
		return 0;
	}
	s->e[s->first_unsent].sent = true;
	return s->e[s->first_unsent].n;
}
