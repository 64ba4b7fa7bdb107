/* Helpers of the persist-lmdb CLI that do not touch the store: the
 * Mosquitto config file, output encodings, and directory operations. */
#ifndef PERSIST_LMDB_CLI_UTIL_H
#define PERSIST_LMDB_CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

/* Exit codes (see persist-lmdb --help and docs/cli.md). */
enum {
	EXIT_DONE = 0,      /* success */
	EXIT_PROBLEMS = 1,  /* the command ran and found problems, or nothing matched */
	EXIT_USAGE = 2,     /* bad command line or config file */
	EXIT_DB = 3,        /* cannot open or write the database */
};

/* One line "persist-lmdb: <message>" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* What the CLI takes from a mosquitto.conf (each malloc'd, or NULL). */
struct mosq_conf {
	char *persistence_location;
	char *db_path;
	char *key_file;
	char *personal_topics;
	char *map_size;
};

/* Reads persistence_location and the plugin_opt_* lines of persist-lmdb
 * (those after a plugin / global_plugin line naming another plugin are not
 * ours). Returns 0, or -1 after printing why. */
int mosq_conf_read(const char *path, struct mosq_conf *conf);
void mosq_conf_free(struct mosq_conf *conf);

/* Writes s for a human: control characters and backslash as \xNN. */
void print_text(FILE *f, const char *s);
/* Writes a payload: as text when it is printable UTF-8, else as 0x<hex>. */
void print_payload(FILE *f, const uint8_t *p, size_t len);

/* JSON helpers; each returns 0, or -1 when out of memory. */
int json_add_u64(cJSON *obj, const char *name, uint64_t v);
int json_add_i64(cJSON *obj, const char *name, int64_t v);
/* A string field; NULL becomes null. */
int json_add_str(cJSON *obj, const char *name, const char *s);
/* A binary field as base64; an absent field (data NULL) becomes null. */
int json_add_b64(cJSON *obj, const char *name, const uint8_t *p, size_t len, bool present);
/* Prints obj as one line on stdout and frees it. Returns 0, or -1. */
int json_emit(cJSON *obj);

/* rm -rf without following symlinks; 0 also when path does not exist. */
int remove_tree(const char *path);
int fsync_path(const char *path);
/* When running as root: gives dir and the files in it that root owns (what
 * the CLI made) to owner_dir's owner, and dir owner_dir's mode, so that a
 * broker running as another user can open them. Returns 0, or -1 with errno
 * set. */
int match_owner(const char *dir, const char *owner_dir);

#endif
