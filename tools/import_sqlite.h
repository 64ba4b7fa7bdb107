/* persist-lmdb import-sqlite: copies the database of Mosquitto's own
 * persist-sqlite plugin into a new persist-lmdb database (docs/cli.md). */
#ifndef PERSIST_LMDB_IMPORT_SQLITE_H
#define PERSIST_LMDB_IMPORT_SQLITE_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

/* Reads the persist-sqlite file sqlite_file (schema 1.1, Mosquitto 2.1)
 * and writes what the broker would restore from it into a new database in
 * db, sealed under the key in key_file. The database is built next to db
 * and moved there when complete, so an interrupted import leaves nothing at
 * db. With drop_damaged a row that cannot be converted is left out instead
 * of stopping the import. Prints a summary; returns an exit status of
 * cli_util.h. */
int import_sqlite(const char *sqlite_file, const char *db, const char *key_file, size_t map_size,
		bool drop_damaged, store_log_fn log);

#endif
