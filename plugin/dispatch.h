/* The dispatch (features.c): the one way from the broker-facing files
 * (events.c, restore.c, control.c, metrics.c, plugin.c) to the feature
 * modules. */
#ifndef PERSIST_LMDB_DISPATCH_H
#define PERSIST_LMDB_DISPATCH_H

#include "state.h"

struct handover;

/* One function per step of a message's and a client's life, each naming
 * the modules that act on it, in a fixed order. */
enum verdict {
	VERDICT_ACCEPT,
	VERDICT_REFUSE,      /* refused: the broker answers the client so */
	VERDICT_DUPLICATE,   /* accepted and dropped (deduplication) */
};
/* A PUBLISH arrived, before routing. */
enum verdict features_publish_in(struct plugin *pl, const struct message *p);
/* A QoS 1/2 PUBLISH is about to leave for clientid: the number
 * plugin_opt_seq_property gives it, 0 when none. */
uint64_t features_publish_out(struct plugin *pl, const char *clientid, uint8_t qos);
void features_body_added(struct plugin *pl, const struct message *b);
void features_body_gone(struct plugin *pl, uint64_t store_id);
/* The broker set a retained message to body store_id. */
void features_retained(struct plugin *pl, uint64_t store_id);
/* The entry functions take e->seq as the broker's message number (cmsg_id)
 * and leave there the entry's queue seq, which the store is given. */
/* An entry added to a client's queue: fills e->q.seq_no. */
void features_entry_added(struct plugin *pl, struct entry *e);
/* An entry's state changed: fills e->q.seq_no; false when the stored state stays. */
bool features_entry_updated(struct plugin *pl, struct entry *e);
/* An entry left the broker's queue; false when the plugin took it (not a deletion). */
bool features_entry_gone(struct plugin *pl, struct entry *e);
void features_session_added(struct plugin *pl, const struct rec_session *s);
/* A stored session changed (will_delay_time: when its will's delay ends, 0: none running). */
void features_session_updated(struct plugin *pl, const struct rec_session *s);
/* Every feature forgets the session of clientid. */
void features_session_gone(struct plugin *pl, const char *clientid);
/* An operator emptied the client's stored queue. */
void features_queue_purged(struct plugin *pl, const char *clientid);
void features_subscription(struct plugin *pl, const struct rec_sub *s, bool gone);
void features_will(struct plugin *pl, const struct rec_will *w);
void features_will_gone(struct plugin *pl, const char *clientid);
/* A client authenticates / subscribes: whether a feature refuses it. */
bool features_client_auth(struct plugin *pl, const struct client_auth *c);
bool features_subscribe(struct plugin *pl, const char *clientid);
void features_client_connected(struct plugin *pl, const char *clientid);
void features_client_disconnected(struct plugin *pl, const char *clientid);
/* Every loop iteration, before the commit. */
void features_tick(struct plugin *pl);
/* Start-up (restore.c): bodies, retained messages and each session's
 * queue as they are handed to the broker, through one hand-over (NULL
 * when out of memory; the journal's word on entries through hooks). */
struct handover *features_restore_begin(struct plugin *pl, const struct handover_journal *hooks);
/* BROKER_OK or why not. */
int features_restore_body(struct plugin *pl, uint64_t store_id, const struct rec_base_msg *m);
int features_restore_retained(struct plugin *pl, uint64_t store_id);
/* clientid's queue (journaled: the journal names its entries, which go to
 * the broker; changed: the journal's changes were applied to its stored
 * queue); -1 on failure. */
int features_restore_queue(struct plugin *pl, struct handover *h, const char *clientid, bool journaled,
		bool changed);
/* What the hand-over did; it is freed (h may be NULL). */
struct restore_counts {
	unsigned long queued;           /* entries handed to the broker */
	unsigned long failed;           /* refused by it, or without a body */
	unsigned long pubrel_resumed;   /* QoS 2 exchanges put back at PUBREL */
};
void features_restore_done(struct plugin *pl, struct handover *h, struct restore_counts *out);
void features_replayed(struct plugin *pl, const struct message *p);
/* The features' state; -1 when out of memory (features_free frees what was made). */
int features_new(struct plugin *pl);
/* Loads what the features keep in the store; BROKER_OK or why not. */
int features_open(struct plugin *pl);
/* Commits what is buffered, with the journal mark that covers it (STORE_OK or why not). */
int features_commit(struct plugin *pl);
/* At shutdown: what the features hold in memory goes to the store. */
void features_flush(struct plugin *pl);
void features_free(struct plugin *pl);

void features_stats(const struct plugin *pl, struct feature_stats *out);

#endif
