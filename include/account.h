/* Account deletion (right to erasure), shared by the control API and the CLI.
 *
 * An account is every session whose username is the given one (a user may
 * have several devices, each its own client id), or one client id. Deleting
 * it removes the sessions with their subscriptions, queues and wills, and
 * the retained messages under the account's personal topics. Group data is
 * not touched: message bodies other sessions still reference stay, retained
 * messages outside the personal topics stay. */
#ifndef PERSIST_LMDB_ACCOUNT_H
#define PERSIST_LMDB_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A name personal topics could not use (personal_name_problem), and why. */
struct account_skip {
	char *name;
	bool username;              /* else a client id */
	const char *why;            /* static */
};

struct account_plan {
	char **clientids;           /* sessions to delete */
	size_t n_clientids;
	char **retained_topics;     /* retained messages under personal topics */
	size_t n_retained;
	uint64_t queued;            /* queue entries of those sessions */
	struct account_skip *skipped;  /* names whose patterns were left out */
	size_t n_skipped;
};

/* True when the MQTT topic filter matches the topic (wildcards + and #; a
 * filter starting with a wildcard does not match a topic starting with $). */
bool topic_matches(const char *filter, const char *topic);

/* Why a username or client id cannot stand for a level of a personal
 * topic, or NULL when it can: it must be one whole, ordinary topic level
 * (not empty, no '/', '+' or '#', not starting with '$'), so that the
 * expansion reaches that account's own subtree and nobody else's. */
const char *personal_name_problem(const char *name);

/* Why a plugin_opt_personal_topics value is refused, or NULL: %u and %c
 * must each be a whole level of their pattern (users/%u/#, not u-%u/#),
 * so that two names never expand to the same topic. */
const char *personal_patterns_problem(const char *patterns);

/* Expands personal topic patterns (space-separated filters, %u for the
 * username, %c for the client id) for one account. Patterns that name a
 * field the account lacks are left out; so are those that name one
 * personal_name_problem refuses, which sets PERSONAL_SKIP_USERNAME or
 * PERSONAL_SKIP_CLIENTID in *skipped. Returns the number of filters in
 * *out (free with account_strings_free), or -1. */
#define PERSONAL_SKIP_USERNAME 1u
#define PERSONAL_SKIP_CLIENTID 2u
int personal_filters(const char *patterns, const char *username, const char *clientid,
		char ***out, unsigned *skipped);
void account_strings_free(char **v, size_t n);

/* Finds what deleting the account (username, or clientid when username is
 * NULL) removes. Deleting by client id expands only the %c patterns: the
 * user's %u topics stay for the user's other devices. Reads committed data
 * only. */
int account_plan(struct store *st, const char *username, const char *clientid,
		const char *personal_patterns, struct account_plan *plan);
/* Buffers the deletions of the plan; store_commit applies them. */
int account_apply(struct store *st, const struct account_plan *plan);
void account_plan_free(struct account_plan *plan);

#endif
