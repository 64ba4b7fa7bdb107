/* The journal mark: the last journal record whose effects the store has
 * buffered. It goes into the store with the buffer, so a commit covers
 * exactly the records before it, and the journal keeps the records after
 * it for a restart to replay. */
#include "feature.h"

/* Everything the broker did up to the last journal record is buffered in
 * the store by now (events come before the packets they cause): mark it. */
void journal_mark(struct plugin *pl)
{
	retention_flush(pl);
	if(pl->journal){
		journal_mark_to(pl, journal_last_lsn(pl->journal));
	}
}

/* Marks up to lsn only: a QoS 2 routing in progress (journal_q2_out). */
void journal_mark_to(struct plugin *pl, uint64_t lsn)
{
	retention_flush(pl);
	if(lsn > pl->marked_lsn && store_journal_mark(pl->store, lsn) == STORE_OK){
		pl->marked_lsn = lsn;
	}
	journal_release(pl->journal, store_journal_durable(pl->store));
}

int commit_marked(struct plugin *pl)
{
	journal_mark(pl);
	return store_commit(pl->store);
}

int commit_marked_visible(struct plugin *pl)
{
	journal_mark(pl);
	return store_commit_visible(pl->store);
}
