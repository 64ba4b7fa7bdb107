/* The feature modules as the broker-facing files reach them: one function
 * per step of a client's life, naming every module that keeps something
 * about it, in a fixed order. */
#include "adapter.h"

#include <string.h>

void features_session_gone(struct plugin *pl, const char *clientid)
{
	pending_will_forget(pl, clientid);
	dedup_client_gone(pl, clientid, true);
	seq_session_ended(pl, clientid);
	retention_session_gone(pl, clientid);
	backlog_session_gone(pl, clientid);
	incoming_forget(pl, clientid);
}

void features_stats(const struct plugin *pl, struct feature_stats *out)
{
	memset(out, 0, sizeof(*out));
	msgid_stats(pl, out);
	intake_stats(pl, out);
	budget_stats(pl, out);
	retention_stats(pl, out);
	backlog_stats(pl, out);
}

const struct handed_notes features_handed = {
	.body = retention_body,
	.incoming = incoming_add,
	.outgoing = retention_add,
	.refused = retention_remove,
};
