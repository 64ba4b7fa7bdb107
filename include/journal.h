/* The intake journal: a fixed-size ring file, mapped into memory, holding
 * what the broker acknowledges before the store has committed it (accepted
 * publishes, QoS 2 exchanges that moved on). A record is written into the
 * shared mapping, so it survives the process at once; with sync it is
 * written with pwrite on an O_DSYNC descriptor, on the disk when
 * journal_append returns.
 *
 * A record becomes obsolete when the store has everything the broker did
 * up to it on the disk (store_journal_mark, store_journal_durable); only
 * obsolete records are overwritten. At start-up the records after the last
 * committed mark are read back and applied.
 *
 * File: a 4 KiB header ("PLMDB-J1", size), then records at 16-byte aligned
 * offsets: magic (4) | sealed length (4) | lsn (8, big-endian) | sealed
 * plaintext. The sealed plaintext is bound to its lsn and its offset in the
 * file, so a torn record, a record of an earlier lap, one moved elsewhere
 * or a forged one never authenticates. (Records of earlier versions, with
 * another magic, are bound to their lsn only, and still read.) */
#ifndef PERSIST_LMDB_JOURNAL_H
#define PERSIST_LMDB_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "seal.h"

#define JOURNAL_DEFAULT_SIZE (16u * 1024 * 1024)
#define JOURNAL_MIN_SIZE (256u * 1024)

enum journal_result {
	JOURNAL_OK = 0,
	JOURNAL_FULL,      /* no obsolete space for the record: commit, release, retry */
	JOURNAL_TOO_LARGE, /* larger than a quarter of the ring: not journaled */
	JOURNAL_ERR_IO,
	JOURNAL_ERR_NOMEM,
	JOURNAL_ERR_CRYPTO,
	JOURNAL_ERR_FORMAT, /* the file is not a journal */
};

struct journal;

/* Opens <dir>/journal, creating it with size bytes whose blocks are
 * allocated, so that writes through the mapping never need new ones; with
 * written_out they are written too (zeros), which spares a journal synced at
 * every record the extent conversions of its first lap. An existing journal
 * keeps its size. The seal is the store's and must outlive the journal. */
int journal_open(struct journal **out, const char *dir, size_t size, struct seal *seal, bool written_out,
		char *err, size_t errlen);
/* For reading only (journal_replay; the CLI): never creates the file. No
 * journal gives JOURNAL_OK with *out NULL. */
int journal_open_read(struct journal **out, const char *dir, struct seal *seal, char *err, size_t errlen);
void journal_close(struct journal *j);
/* Closes the journal and cuts its file down to the header: at a clean
 * stop, once every record is in the store on the disk. The file stays as
 * the sign that a database was here (store_open); journal_open makes it
 * whole again, empty, and lsns go on from the store's last mark
 * (journal_replay); journal_open_read finds nothing in it. */
int journal_close_stopped(struct journal *j);

/* Calls fn, in lsn order, with every authentic record whose lsn is above
 * after; *unreadable counts places that looked like a record and did not
 * authenticate (a record torn by a crash while being written). The next
 * appended lsn follows the highest lsn seen and after. */
typedef int (*journal_visit_fn)(void *ctx, uint64_t lsn, const uint8_t *pt, size_t len);
int journal_replay(struct journal *j, uint64_t after, journal_visit_fn fn, void *ctx,
		uint64_t *unreadable);

/* Seals and writes one record; with sync, returns once it is on disk. */
int journal_append(struct journal *j, const uint8_t *pt, size_t len, bool sync, uint64_t *lsn);

/* Flushes every record written to the mapping to the disk (fdatasync). */
int journal_sync(struct journal *j);

/* The lsn of the last record appended (0: none yet). */
uint64_t journal_last_lsn(const struct journal *j);

/* Everything up to committed is in the store: its space may be reused. */
void journal_release(struct journal *j, uint64_t committed);

/* Drops the file's pages from the process's mapping: they stay in the page
 * cache (written back as usual, read back on the next access), but a ring
 * written through once would otherwise count whole in the process's RSS. */
void journal_release_memory(struct journal *j);

size_t journal_size(const struct journal *j);
/* Bytes held by records not yet released. */
size_t journal_used(const struct journal *j);

const char *journal_strerror(int rc);

#endif
