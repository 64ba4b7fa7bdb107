/* The feature modules as the broker-facing files reach them: one function
 * per step of a client's life, naming every module that keeps something
 * about it, in a fixed order. */
#include "adapter.h"

void features_session_gone(struct plugin *pl, const char *clientid)
{
	pending_will_forget(pl, clientid);
	dedup_client_gone(pl, clientid, true);
	seq_session_ended(pl, clientid);
	retention_session_gone(pl, clientid);
	backlog_session_gone(pl, clientid);
	incoming_forget(pl, clientid);
}

const struct handed_notes features_handed = {
	.body = retention_body,
	.incoming = incoming_add,
	.outgoing = retention_add,
	.refused = retention_remove,
};
