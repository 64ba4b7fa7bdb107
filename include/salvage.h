/* Salvage: copies every record that still authenticates out of a damaged
 * database into a new one.
 *
 * The damaged data file is read without LMDB, by a reader of LMDB's page
 * format that checks every page number, offset and length against the file
 * before it follows it, so that no damage can crash it: it starts from the
 * newest valid meta page, walks the list of named databases and each tree,
 * skips what does not check out (a page out of the file, a page whose
 * header does not name it, a node out of its page) and counts it. A record
 * reached that way is kept when its seal authenticates under its database
 * and key; it is then decoded and written into the new database through the
 * store, sealed anew. Queue entries need their session's client id, so a
 * queue whose session was lost is left out (counted). Reference counts are
 * recomputed at the end and bodies nothing refers to are dropped. Records
 * in free pages (older versions) are never read.
 *
 * The new database's first open epoch is above every epoch the damaged
 * file shows (in its epoch record and in every nonce read), so that its
 * records never share a nonce with the damaged file's under the same key.
 * The journal's records after the damaged database's committed mark are
 * kept: the journal file is copied and the mark carried over, so the next
 * start applies them. */
#ifndef PERSIST_LMDB_SALVAGE_H
#define PERSIST_LMDB_SALVAGE_H

#include <stdint.h>
#include <stddef.h>

#include "seal.h"
#include "store.h"

struct salvage_report {
	uint64_t copied[DB_COUNT];     /* records written into the new database */
	uint64_t rejected[DB_COUNT];   /* records reached that did not authenticate or decode */
	uint64_t orphaned_queue;       /* queue entries whose session was not found */
	uint64_t bodiless_queue;       /* queue entries whose message body was not found */
	uint64_t pages_skipped;        /* pages reached that failed a check (with what they lead to) */
	uint64_t orphan_msgs;          /* bodies nothing referred to, dropped at the end */
	uint64_t journal_mark;         /* carried over (0: none, or the journal was not kept) */
	int journal_kept;              /* the journal was copied */
	uint64_t txnid;                /* of the meta page read */
};

/* src: the damaged database directory (only read); dst: a directory that
 * does not exist or is empty. Returns STORE_OK, or an error with err set
 * (nothing usable in dst then). */
int salvage_run(const char *src, const char *dst, const uint8_t key[SEAL_KEY_LEN], size_t map_size,
		store_log_fn log, struct salvage_report *rep, char *err, size_t errlen);

#endif
