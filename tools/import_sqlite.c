/* persist-lmdb import-sqlite: the database of Mosquitto 2.1's persist-sqlite
 * plugin (schema 1.1) into a new persist-lmdb database, written through the
 * engine as the plugin's persistence events would have written it.
 *
 *   persist-sqlite   persist-lmdb
 *   base_msgs        msgs       properties: JSON into the plugin's encoding
 *   retains          retained
 *   clients          sessions
 *   subscriptions    subs
 *   client_msgs      queue      per client in rowid order, renumbered
 *   wills            -          the broker published them when it stopped
 *
 * What the broker would drop when restoring (subscriptions and queued
 * messages of no session, references to a missing body, bodies nothing
 * references) is left out and counted. */
#include "import_sqlite.h"
#include "array.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cli_util.h"
#include "record.h"
#include "seal.h"
#include "sqlite_props.h"

/* Operations buffered before a commit, as in rekey. */
#define IMPORT_BATCH 10000
/* row_end(): the row is damaged and left out. */
#define ROW_LEFT_OUT (-1)

enum table { T_BASE_MSGS, T_RETAINS, T_CLIENTS, T_SUBSCRIPTIONS, T_CLIENT_MSGS, T_COUNT };

static const char *const table_names[T_COUNT] = {
	"base_msgs", "retains", "clients", "subscriptions", "client_msgs",
};

/* Every query, prepared before anything is created: a file that lacks a
 * table or column persist-sqlite 1.1 has is refused up front. Column 0 is
 * the rowid, which names a damaged row. */
enum query { Q_COUNTS, Q_MSGS, Q_RETAINS, Q_CLIENTS, Q_SUBS, Q_QUEUE, Q_COUNT };

static const char *const queries[Q_COUNT] = {
	[Q_COUNTS] = "SELECT (SELECT count(*) FROM subscriptions), (SELECT count(*) FROM client_msgs), "
		"(SELECT count(*) FROM wills)",
	[Q_MSGS] = "SELECT rowid, store_id, expiry_time, topic, payload, payloadlen, source_id, source_username, "
		"source_mid, source_port, qos, retain, properties FROM base_msgs",
	[Q_RETAINS] = "SELECT rowid, topic, store_id FROM retains",
	[Q_CLIENTS] = "SELECT rowid, client_id, username, will_delay_time, session_expiry_time, listener_port, "
		"max_packet_size, max_qos, retain_available, session_expiry_interval, will_delay_interval FROM clients",
	[Q_SUBS] = "SELECT rowid, topic, subscription_options, subscription_identifier FROM subscriptions "
		"WHERE client_id = ?",
	/* The broker restores client_msgs in rowid order: cmsg_id starts from 1
	 * again in every run of the broker. */
	[Q_QUEUE] = "SELECT rowid, store_id, dup, direction, mid, qos, retain, state, subscription_identifier "
		"FROM client_msgs WHERE client_id = ? ORDER BY rowid",
};

struct import {
	const char *file;           /* the persist-sqlite file */
	sqlite3 *db;
	sqlite3_stmt *q[Q_COUNT];
	const char *dir;            /* where the new database is built */
	struct store *st;
	bool drop_damaged;
	uint64_t pending;           /* operations buffered since the last commit */
	uint64_t *ids;              /* store ids of the bodies written (sorted once all are) */
	size_t n_ids, cap_ids;
	struct buf props;           /* one row's properties in the plugin's encoding */
	const char *clientid;       /* of the session whose rows are read */
	uint64_t next_seq;          /* its next queue sequence number */
	uint64_t rows[T_COUNT];     /* subscriptions and client_msgs: rows in the file */
	uint64_t imported[T_COUNT];
	uint64_t damaged[T_COUNT];
	uint64_t no_body[T_COUNT];  /* retains and client_msgs whose body is missing */
	uint64_t numeric_text;      /* rows with a topic or name SQLite stored as a number */
	uint64_t wills;
	uint64_t orphans;
};

/* The row being converted: the column readers note the first reason why it
 * cannot be. */
struct row {
	sqlite3_stmt *stmt;
	enum table table;
	bool nomem;
	bool numeric_text;
	char why[192];
};

typedef int (*row_fn)(struct import *im, struct row *r);

static int read_failed(const struct import *im)
{
	cli_error("cannot read %s: %s", im->file, sqlite3_errmsg(im->db));
	return EXIT_DB;
}

static int out_of_memory(void)
{
	cli_error("out of memory");
	return EXIT_DB;
}

/* malloc'd "<a><b>", or NULL. */
static char *join(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	char *p = malloc(na + nb + 1);

	if(p){
		memcpy(p, a, na);
		memcpy(p + na, b, nb + 1);
	}
	return p;
}

/* ---- reading columns ---- */

static void row_bad(struct row *r, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void row_bad(struct row *r, int col, const char *fmt, ...)
{
	const char *name = sqlite3_column_name(r->stmt, col);
	va_list ap;
	int n;

	if(r->why[0]){
		return;
	}
	n = snprintf(r->why, sizeof(r->why), "column %s ", name ? name : "?");
	if(n < 0 || (size_t)n >= sizeof(r->why)){
		return;
	}
	va_start(ap, fmt);
	vsnprintf(r->why + n, sizeof(r->why) - (size_t)n, fmt, ap);
	va_end(ap);
}

/* An integer column within [min, max] (min <= 0). NULL reads as 0, as
 * persist-sqlite's own restore reads it. */
static int64_t col_int(struct row *r, int col, int64_t min, int64_t max)
{
	int64_t v;

	switch(sqlite3_column_type(r->stmt, col)){
		case SQLITE_NULL:
			return 0;
		case SQLITE_INTEGER:
			v = sqlite3_column_int64(r->stmt, col);
			if(v >= min && v <= max){
				return v;
			}
			row_bad(r, col, "holds %" PRId64 ", outside %" PRId64 "..%" PRId64, v, min, max);
			return 0;
		default:
			row_bad(r, col, "is not an integer");
			return 0;
	}
}

/* persist-sqlite binds these unsigned 32-bit fields as int: 4294967295 (a
 * session that never expires) is stored as -1. */
static uint32_t col_u32(struct row *r, int col)
{
	return (uint32_t)col_int(r, col, INT32_MIN, UINT32_MAX);
}

/* A store id: persist-sqlite binds the unsigned 64-bit id as int64. */
static uint64_t col_id(struct row *r, int col)
{
	if(sqlite3_column_type(r->stmt, col) == SQLITE_NULL){
		row_bad(r, col, "is NULL");
		return 0;
	}
	return (uint64_t)col_int(r, col, INT64_MIN, INT64_MAX);
}

/* A text column, read as persist-sqlite reads it back. Its STRING columns
 * have SQLite's numeric affinity: a topic such as "0123" was stored as the
 * number 123 and reads back as "123"; such rows are counted for a warning. */
static const char *col_text(struct row *r, int col, bool required)
{
	int type = sqlite3_column_type(r->stmt, col);
	const char *s;

	if(type == SQLITE_NULL){
		if(required){
			row_bad(r, col, "is NULL");
		}
		return NULL;
	}
	if(type == SQLITE_BLOB){
		row_bad(r, col, "is not text");
		return NULL;
	}
	s = (const char *)sqlite3_column_text(r->stmt, col);
	if(!s){
		r->nomem = true;
		return NULL;
	}
	if((size_t)sqlite3_column_bytes(r->stmt, col) != strlen(s)){
		row_bad(r, col, "holds a NUL byte");
		return NULL;
	}
	if(type != SQLITE_TEXT){
		r->numeric_text = true;
	}
	return s;
}

/* A payload column: NULL is no payload. Its length must be the one in
 * len_col, which is what persist-sqlite's restore copies. */
static struct bytes col_payload(struct row *r, int col, int len_col)
{
	static const uint8_t empty[1];
	int type = sqlite3_column_type(r->stmt, col);
	int64_t len = col_int(r, len_col, 0, UINT32_MAX);
	struct bytes b = {NULL, 0};

	if(type == SQLITE_NULL){
		if(len){
			row_bad(r, len_col, "holds %" PRId64 " for no payload", len);
		}
		return b;
	}
	if(type != SQLITE_BLOB && type != SQLITE_TEXT){
		row_bad(r, col, "is not a blob");
		return b;
	}
	b.data = sqlite3_column_blob(r->stmt, col);
	if(!b.data && sqlite3_errcode(sqlite3_db_handle(r->stmt)) == SQLITE_NOMEM){
		r->nomem = true;
		return b;
	}
	b.len = (size_t)sqlite3_column_bytes(r->stmt, col);
	if(!b.data){
		/* SQLite gives no pointer for an empty blob; an empty payload is
		 * still a payload. */
		b.data = empty;
	}
	if((int64_t)b.len != len){
		row_bad(r, len_col, "holds %" PRId64 ", the payload has %zu bytes", len, b.len);
	}
	return b;
}

/* A properties column (persist-sqlite's JSON array) in the plugin's
 * encoding, in im->props until the next row. NULL, or an empty list, is no
 * properties. */
static struct bytes col_props(struct import *im, struct row *r, int col)
{
	const char *json = col_text(r, col, false);
	struct bytes out = {NULL, 0};
	const char *why;

	if(!json){
		return out;
	}
	buf_reset(&im->props);
	why = props_from_sqlite_json(json, &im->props);
	if(why){
		row_bad(r, col, "%s", why);
	}else if(im->props.err){
		r->nomem = true;
	}else if(im->props.len){
		out.data = im->props.data;
		out.len = im->props.len;
	}
	return out;
}

/* After a row's columns are read: EXIT_DONE to write it, ROW_LEFT_OUT when
 * it is damaged (reported and counted), or an exit status. */
static int row_end(struct import *im, struct row *r)
{
	if(r->nomem){
		return out_of_memory();
	}
	if(!r->why[0]){
		im->numeric_text += r->numeric_text;
		return EXIT_DONE;
	}
	im->damaged[r->table]++;
	cli_error("%s: %s row %" PRId64 " cannot be imported: %s%s", im->file, table_names[r->table],
			(int64_t)sqlite3_column_int64(r->stmt, 0), r->why, im->drop_damaged ? "; left out" : "");
	return ROW_LEFT_OUT;
}

/* Steps stmt to its end, converting each row with fn. */
static int each_row(struct import *im, sqlite3_stmt *stmt, enum table t, row_fn fn)
{
	int rc;

	while((rc = sqlite3_step(stmt)) == SQLITE_ROW){
		struct row r = {.stmt = stmt, .table = t};
		int ex = fn(im, &r);

		if(ex){
			return ex;
		}
	}
	return rc == SQLITE_DONE ? EXIT_DONE : read_failed(im);
}

/* ---- writing ---- */

/* Counts a buffered write and commits every IMPORT_BATCH. */
static int put(struct import *im, int rc)
{
	if(rc == STORE_OK && ++im->pending >= IMPORT_BATCH){
		im->pending = 0;
		rc = store_commit(im->st);
	}
	if(rc){
		cli_error("cannot write the new database in %s: %s", im->dir, store_strerror(rc));
		return EXIT_DB;
	}
	return EXIT_DONE;
}

static int cmp_id(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool have_body(const struct import *im, uint64_t store_id)
{
	return im->n_ids && bsearch(&store_id, im->ids, im->n_ids, sizeof(*im->ids), cmp_id);
}

static int import_msg(struct import *im, struct row *r)
{
	struct rec_base_msg m;
	uint64_t store_id;
	int rc;

	memset(&m, 0, sizeof(m));
	store_id = col_id(r, 1);
	m.expiry_time = col_int(r, 2, INT64_MIN, INT64_MAX);
	m.topic = col_text(r, 3, true);
	m.payload = col_payload(r, 4, 5);
	m.source_id = col_text(r, 6, false);
	m.source_username = col_text(r, 7, false);
	m.source_mid = (uint16_t)col_int(r, 8, 0, UINT16_MAX);
	m.source_port = (uint16_t)col_int(r, 9, 0, UINT16_MAX);
	m.qos = (uint8_t)col_int(r, 10, 0, 2);
	m.retain = col_int(r, 11, 0, 1);
	m.properties = col_props(im, r, 12);
	rc = row_end(im, r);
	if(rc){
		return rc == ROW_LEFT_OUT ? EXIT_DONE : rc;
	}
	if(ARRAY_GROW(im->ids, im->n_ids, im->cap_ids, 1024)){
		return out_of_memory();
	}
	rc = put(im, store_msg_put(im->st, store_id, &m));
	if(rc == EXIT_DONE){
		im->ids[im->n_ids++] = store_id;
		im->imported[T_BASE_MSGS]++;
	}
	return rc;
}

static int import_retained(struct import *im, struct row *r)
{
	const char *topic = col_text(r, 1, true);
	uint64_t store_id = col_id(r, 2);
	int rc = row_end(im, r);

	if(rc){
		return rc == ROW_LEFT_OUT ? EXIT_DONE : rc;
	}
	if(!have_body(im, store_id)){
		im->no_body[T_RETAINS]++;
		return EXIT_DONE;
	}
	rc = put(im, store_retain_set(im->st, topic, store_id));
	im->imported[T_RETAINS] += rc == EXIT_DONE;
	return rc;
}

static int import_sub(struct import *im, struct row *r)
{
	struct rec_sub s;
	int rc;

	memset(&s, 0, sizeof(s));
	s.clientid = im->clientid;
	s.topic_filter = col_text(r, 1, true);
	s.options = (uint8_t)col_int(r, 2, 0, UINT8_MAX);
	s.identifier = col_u32(r, 3);
	rc = row_end(im, r);
	if(rc){
		return rc == ROW_LEFT_OUT ? EXIT_DONE : rc;
	}
	rc = put(im, store_sub_put(im->st, &s));
	im->imported[T_SUBSCRIPTIONS] += rc == EXIT_DONE;
	return rc;
}

static int import_queued(struct import *im, struct row *r)
{
	struct rec_queue q;
	int rc;

	memset(&q, 0, sizeof(q));
	q.store_id = col_id(r, 1);
	q.dup = (uint8_t)col_int(r, 2, 0, 1);
	q.direction = (uint8_t)col_int(r, 3, 0, 1);
	q.mid = (uint16_t)col_int(r, 4, 0, UINT16_MAX);
	q.qos = (uint8_t)col_int(r, 5, 0, 2);
	q.retain = col_int(r, 6, 0, 1);
	q.state = (uint8_t)col_int(r, 7, 0, UINT8_MAX);
	q.subscription_identifier = col_u32(r, 8);
	rc = row_end(im, r);
	if(rc){
		return rc == ROW_LEFT_OUT ? EXIT_DONE : rc;
	}
	if(!have_body(im, q.store_id)){
		im->no_body[T_CLIENT_MSGS]++;
		return EXIT_DONE;
	}
	/* Numbered in order under the new database's epoch, as rekey does. */
	rc = put(im, store_queue_append(im->st, im->clientid, im->next_seq++, &q));
	im->imported[T_CLIENT_MSGS] += rc == EXIT_DONE;
	return rc;
}

/* Converts the rows of one client that stmt (Q_SUBS, Q_QUEUE) selects. */
static int client_rows(struct import *im, sqlite3_stmt *stmt, enum table t, row_fn fn)
{
	int rc;

	if(sqlite3_bind_text(stmt, 1, im->clientid, -1, SQLITE_TRANSIENT) != SQLITE_OK){
		return read_failed(im);
	}
	rc = each_row(im, stmt, t, fn);
	/* After a failed step, reset repeats its error, reported already. */
	if(sqlite3_reset(stmt) != SQLITE_OK && rc == EXIT_DONE){
		rc = read_failed(im);
	}
	return rc;
}

static int import_session(struct import *im, struct row *r)
{
	struct rec_session s;
	int rc;

	/* persist-sqlite keeps no auth_method: it stays NULL. */
	memset(&s, 0, sizeof(s));
	s.clientid = col_text(r, 1, true);
	s.username = col_text(r, 2, false);
	s.will_delay_time = col_int(r, 3, INT64_MIN, INT64_MAX);
	s.session_expiry_time = col_int(r, 4, INT64_MIN, INT64_MAX);
	s.listener_port = (uint16_t)col_int(r, 5, 0, UINT16_MAX);
	s.max_packet_size = col_u32(r, 6);
	s.max_qos = (uint8_t)col_int(r, 7, 0, 2);
	s.retain_available = col_int(r, 8, 0, 1);
	s.session_expiry_interval = col_u32(r, 9);
	s.will_delay_interval = col_u32(r, 10);
	rc = row_end(im, r);
	if(rc){
		return rc == ROW_LEFT_OUT ? EXIT_DONE : rc;
	}
	rc = put(im, store_session_put(im->st, &s));
	if(rc == EXIT_DONE){
		im->imported[T_CLIENTS]++;
		im->clientid = s.clientid;
		rc = client_rows(im, im->q[Q_SUBS], T_SUBSCRIPTIONS, import_sub);
	}
	if(rc == EXIT_DONE){
		im->next_seq = ((uint64_t)store_epoch(im->st) << STORE_SEQ_SHIFT) | 1;
		rc = client_rows(im, im->q[Q_QUEUE], T_CLIENT_MSGS, import_queued);
	}
	im->clientid = NULL;
	return rc;
}

static int count_rows(struct import *im)
{
	sqlite3_stmt *s = im->q[Q_COUNTS];
	int rc = sqlite3_step(s);

	if(rc != SQLITE_ROW){
		return read_failed(im);
	}
	im->rows[T_SUBSCRIPTIONS] = (uint64_t)sqlite3_column_int64(s, 0);
	im->rows[T_CLIENT_MSGS] = (uint64_t)sqlite3_column_int64(s, 1);
	im->wills = (uint64_t)sqlite3_column_int64(s, 2);
	return EXIT_DONE;
}

/* Bodies first (the others refer to them), then retained messages, then
 * each session with its subscriptions and queue; then the bodies nothing
 * references go, as the broker drops them after restoring. */
static int copy_rows(struct import *im)
{
	struct store_refs refs;
	int rc = count_rows(im);

	if(rc == EXIT_DONE){
		rc = each_row(im, im->q[Q_MSGS], T_BASE_MSGS, import_msg);
	}
	if(rc == EXIT_DONE){
		if(im->n_ids){
			qsort(im->ids, im->n_ids, sizeof(*im->ids), cmp_id);
		}
		rc = each_row(im, im->q[Q_RETAINS], T_RETAINS, import_retained);
	}
	if(rc == EXIT_DONE){
		rc = each_row(im, im->q[Q_CLIENTS], T_CLIENTS, import_session);
	}
	if(rc != EXIT_DONE){
		return rc;
	}
	/* store_check_refs reads committed data. */
	rc = store_commit(im->st);
	if(rc == STORE_OK){
		rc = store_check_refs(im->st, true, &refs);
	}
	if(rc == STORE_OK){
		rc = store_commit(im->st);
	}
	if(rc){
		cli_error("cannot write the new database in %s: %s", im->dir, store_strerror(rc));
		return EXIT_DB;
	}
	im->orphans = refs.orphan_msgs;
	return EXIT_DONE;
}

/* ---- the persist-sqlite file ---- */

/* A URI for the file with immutable=1: SQLite then creates no -wal or -shm
 * file next to it (as root, ones the broker's user could not open). That is
 * only safe on a file nobody writes: a broker that has it open keeps a
 * write-ahead log next to it, which open_sqlite refuses first. */
static char *sqlite_uri(const char *path)
{
	static const char suffix[] = "?immutable=1";
	char *uri = malloc(sizeof("file://") + 3 * strlen(path) + sizeof(suffix)), *p;

	if(!uri){
		return NULL;
	}
	/* An absolute path after an empty authority. */
	p = uri + sprintf(uri, "%s", path[0] == '/' ? "file://" : "file:");
	for(const unsigned char *c = (const unsigned char *)path; *c; c++){
		if((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("/-._~", *c)){
			*p++ = (char)*c;
		}else{
			p += sprintf(p, "%%%02X", (unsigned)*c);
		}
	}
	memcpy(p, suffix, sizeof(suffix));
	return uri;
}

static int check_schema(struct import *im)
{
	sqlite3_stmt *s;
	int64_t v[3] = {0, 0, 0};
	int rc = sqlite3_prepare_v2(im->db,
			"SELECT major, minor, patch FROM version_info WHERE component = 'database_schema'", -1, &s, NULL);

	/* SQLITE_ERROR: no such table. */
	if(rc == SQLITE_ERROR || rc == SQLITE_NOTADB){
		cli_error("%s is not a persist-sqlite database: %s", im->file, sqlite3_errmsg(im->db));
		return EXIT_USAGE;
	}
	if(rc != SQLITE_OK){
		return read_failed(im);
	}
	rc = sqlite3_step(s);
	if(rc == SQLITE_ROW){
		for(int i = 0; i < 3; i++){
			v[i] = sqlite3_column_int64(s, i);
		}
	}
	/* Its result repeats the step's. */
	sqlite3_finalize(s);
	if(rc == SQLITE_DONE){
		cli_error("%s is not a persist-sqlite database: it has no schema version", im->file);
		return EXIT_USAGE;
	}
	if(rc != SQLITE_ROW){
		return read_failed(im);
	}
	if(v[0] != 1 || v[1] != 1){
		cli_error("%s has persist-sqlite schema version %" PRId64 ".%" PRId64 ".%" PRId64
				"; import-sqlite reads 1.1 (Mosquitto 2.1)", im->file, v[0], v[1], v[2]);
		return EXIT_USAGE;
	}
	return EXIT_DONE;
}

static int open_sqlite(struct import *im)
{
	struct stat sb;
	char *wal, *uri;
	int rc;

	if(stat(im->file, &sb) != 0){
		cli_error("cannot read %s: %s", im->file, strerror(errno));
		return EXIT_USAGE;
	}
	if(!S_ISREG(sb.st_mode)){
		cli_error("cannot read %s: not a file", im->file);
		return EXIT_USAGE;
	}
	/* persist-sqlite runs SQLite in WAL mode: a log left next to the file
	 * means a broker has it open, or was killed and the log holds committed
	 * data the file does not. */
	wal = join(im->file, "-wal");
	if(!wal){
		return out_of_memory();
	}
	rc = stat(wal, &sb) == 0 && sb.st_size > 0;
	if(rc){
		cli_error("%s has a write-ahead log %s: a broker has the database open, or did not stop cleanly; "
				"stop the broker (or start it with persist-sqlite once and stop it), then run import-sqlite again",
				im->file, wal);
	}
	free(wal);
	if(rc){
		return EXIT_DB;
	}
	uri = sqlite_uri(im->file);
	if(!uri){
		return out_of_memory();
	}
	rc = sqlite3_open_v2(uri, &im->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
	free(uri);
	if(rc != SQLITE_OK){
		cli_error("cannot open %s: %s", im->file, im->db ? sqlite3_errmsg(im->db) : sqlite3_errstr(rc));
		return rc == SQLITE_NOMEM ? EXIT_DB : EXIT_USAGE;
	}
	rc = check_schema(im);
	for(int i = 0; rc == EXIT_DONE && i < Q_COUNT; i++){
		int prc = sqlite3_prepare_v2(im->db, queries[i], -1, &im->q[i], NULL);
		if(prc == SQLITE_ERROR){
			/* A table or column of schema 1.1 is missing. */
			cli_error("%s is not a persist-sqlite database: %s", im->file, sqlite3_errmsg(im->db));
			rc = EXIT_USAGE;
		}else if(prc != SQLITE_OK){
			rc = read_failed(im);
		}
	}
	return rc;
}

static void close_sqlite(struct import *im)
{
	/* Their results repeat the steps', handled already. */
	for(int i = 0; i < Q_COUNT; i++){
		sqlite3_finalize(im->q[i]);
	}
	if(sqlite3_close(im->db) != SQLITE_OK){
		cli_error("warning: cannot close %s: %s", im->file, sqlite3_errmsg(im->db));
	}
}

/* ---- the new database ---- */

static int dir_is_empty(const char *path)
{
	struct dirent *de;
	DIR *d = opendir(path);
	int rc = 1;

	if(!d){
		return -1;
	}
	errno = 0;
	while(rc == 1 && (de = readdir(d)) != NULL){
		rc = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
	}
	if(rc == 1 && errno){
		rc = -1;
	}
	closedir(d);
	return rc;
}

/* The directory the database goes to: db, or what a symlink there points
 * to. It must not exist yet, or be an empty directory. */
static int new_target(const char *db, char **target, bool *exists)
{
	size_t n = strlen(db);
	struct stat sb;
	char *path;
	int empty;

	if(!n){
		cli_error("no database directory given");
		return EXIT_USAGE;
	}
	while(n > 1 && db[n - 1] == '/'){
		n--;
	}
	path = strndup(db, n);
	if(!path){
		return out_of_memory();
	}
	*exists = lstat(path, &sb) == 0;
	if(!*exists){
		if(errno != ENOENT){
			cli_error("cannot use %s: %s", path, strerror(errno));
			free(path);
			return EXIT_DB;
		}
		*target = path;
		return EXIT_DONE;
	}
	*target = realpath(path, NULL);
	if(!*target){
		cli_error("cannot use %s: %s", path, strerror(errno));
		free(path);
		return EXIT_DB;
	}
	free(path);
	char *datafile = join(*target, "/data.mdb");
	if(!datafile){
		return out_of_memory();
	}
	if(stat(datafile, &sb) == 0){
		cli_error("%s already holds a database: import-sqlite creates a new one; give --db a new or empty directory",
				*target);
		free(datafile);
		return EXIT_DB;
	}
	free(datafile);
	empty = dir_is_empty(*target);
	if(empty < 0){
		cli_error("cannot use %s: %s", *target, errno == ENOTDIR ? "not a directory" : strerror(errno));
		return EXIT_DB;
	}
	if(!empty){
		cli_error("%s is not empty: import-sqlite creates a new database; give --db a new or empty directory",
				*target);
		return EXIT_DB;
	}
	return EXIT_DONE;
}

/* A new database in a new directory <target>.import-XXXXXX (*tmp). */
static int create_store(struct import *im, const char *target, const char *key_file, size_t map_size,
		store_log_fn log, char **tmp)
{
	uint8_t key[SEAL_KEY_LEN];
	char err[512];
	char *dir;
	int rc;

	*tmp = NULL;
	if(seal_key_load(key_file, key, err, sizeof(err))){
		seal_wipe(key, sizeof(key));
		cli_error("%s", err);
		return EXIT_DB;
	}
	dir = join(target, ".import-XXXXXX");
	if(!dir){
		seal_wipe(key, sizeof(key));
		return out_of_memory();
	}
	if(!mkdtemp(dir)){
		seal_wipe(key, sizeof(key));
		cli_error("cannot make a directory next to %s: %s", target, strerror(errno));
		free(dir);
		return EXIT_DB;
	}
	*tmp = dir;
	im->dir = dir;
	rc = store_create(&im->st, dir, map_size, key, 1, 0, log, err, sizeof(err));
	seal_wipe(key, sizeof(key));
	if(rc){
		cli_error("%s", err);
		return EXIT_DB;
	}
	return EXIT_DONE;
}

/* Moves the finished database in tmp to target. Run as root, it is given
 * the owner (and mode) of the empty directory it replaces, or else the
 * owner of the directory it goes into, so that a broker running as another
 * user can open it. */
static int put_in_place(const char *tmp, const char *target, bool exists)
{
	char *parent = strdup(target), *slash;
	struct stat sb;
	int rc = EXIT_DB;

	if(!parent){
		return out_of_memory();
	}
	slash = strrchr(parent, '/');
	if(!slash){
		strcpy(parent, ".");
	}else{
		slash[slash == parent] = '\0';
	}
	if(exists ? match_owner(tmp, target) != 0
			: geteuid() == 0 && (stat(parent, &sb) != 0 || lchown(tmp, sb.st_uid, sb.st_gid) != 0
				|| match_owner(tmp, tmp) != 0)){
		cli_error("cannot give %s the owner of %s: %s", tmp, exists ? target : parent, strerror(errno));
	}else if(fsync_path(tmp) != 0){
		cli_error("cannot sync %s: %s", tmp, strerror(errno));
	}else if(rename(tmp, target) != 0){
		cli_error("cannot move the new database from %s to %s: %s", tmp, target, strerror(errno));
	}else{
		rc = EXIT_DONE;
		if(fsync_path(parent) != 0){
			cli_error("warning: cannot sync %s: %s", parent, strerror(errno));
		}
	}
	free(parent);
	return rc;
}

static uint64_t damaged_rows(const struct import *im)
{
	uint64_t n = 0;

	for(int t = 0; t < T_COUNT; t++){
		n += im->damaged[t];
	}
	return n;
}

static void print_left_out(uint64_t n, const char *one, const char *many, const char *why)
{
	if(n){
		printf("not imported: %" PRIu64 " %s (%s)\n", n, n == 1 ? one : many, why);
	}
}

static void print_summary(const struct import *im, const char *target)
{
	static const char dropped[] = "the broker drops them when it restores";
	uint64_t subs_alone = im->rows[T_SUBSCRIPTIONS] - im->imported[T_SUBSCRIPTIONS] - im->damaged[T_SUBSCRIPTIONS];
	uint64_t queue_alone = im->rows[T_CLIENT_MSGS] - im->imported[T_CLIENT_MSGS] - im->damaged[T_CLIENT_MSGS]
		- im->no_body[T_CLIENT_MSGS];

	printf("imported into %s: %" PRIu64 " message bodies, %" PRIu64 " retained messages, %" PRIu64
			" sessions, %" PRIu64 " subscriptions, %" PRIu64 " queued messages\n", target,
			im->imported[T_BASE_MSGS] - im->orphans, im->imported[T_RETAINS], im->imported[T_CLIENTS],
			im->imported[T_SUBSCRIPTIONS], im->imported[T_CLIENT_MSGS]);
	print_left_out(im->wills, "will", "wills", "the broker published them when it stopped");
	print_left_out(subs_alone, "subscription of no session", "subscriptions of no session", dropped);
	print_left_out(queue_alone, "queued message of no session", "queued messages of no session", dropped);
	print_left_out(im->no_body[T_CLIENT_MSGS], "queued message whose message body is missing",
			"queued messages whose message body is missing", dropped);
	print_left_out(im->no_body[T_RETAINS], "retained message whose message body is missing",
			"retained messages whose message body is missing", dropped);
	print_left_out(im->orphans, "message body nothing refers to", "message bodies nothing refers to", dropped);
	print_left_out(damaged_rows(im), "damaged row", "damaged rows", "--drop-damaged");
	if(im->numeric_text){
		cli_error("warning: %" PRIu64 " row%s a topic or publisher name that persist-sqlite stored as a "
				"number (its STRING columns turn text like \"0123\" into 123): imported as persist-sqlite reads "
				"%s back", im->numeric_text, im->numeric_text == 1 ? " holds" : "s hold",
				im->numeric_text == 1 ? "it" : "them");
	}
}

int import_sqlite(const char *sqlite_file, const char *db, const char *key_file, size_t map_size,
		bool drop_damaged, store_log_fn log)
{
	struct import im;
	char *target = NULL, *tmp = NULL;
	bool exists = false;
	uint64_t damaged;
	int rc;

	memset(&im, 0, sizeof(im));
	im.file = sqlite_file;
	im.drop_damaged = drop_damaged;
	rc = open_sqlite(&im);
	if(rc == EXIT_DONE){
		rc = new_target(db, &target, &exists);
	}
	if(rc == EXIT_DONE){
		rc = create_store(&im, target, key_file, map_size, log, &tmp);
	}
	if(rc == EXIT_DONE){
		rc = copy_rows(&im);
	}
	if(im.st){
		store_close(im.st);
	}
	damaged = damaged_rows(&im);
	if(rc == EXIT_DONE && damaged && !drop_damaged){
		cli_error("%" PRIu64 " damaged row%s in %s: nothing imported (--drop-damaged imports without %s)",
				damaged, damaged == 1 ? "" : "s", sqlite_file, damaged == 1 ? "it" : "them");
		rc = EXIT_PROBLEMS;
	}
	if(rc == EXIT_DONE){
		rc = put_in_place(tmp, target, exists);
	}
	if(rc != EXIT_DONE && tmp && remove_tree(tmp) != 0){
		cli_error("cannot remove %s: %s", tmp, strerror(errno));
	}
	if(rc == EXIT_DONE){
		print_summary(&im, target);
		if(fflush(stdout) != 0 || ferror(stdout)){
			cli_error("cannot write to standard output: %s", strerror(errno));
			rc = EXIT_DB;
		}
	}
	close_sqlite(&im);
	buf_free(&im.props);
	free(im.ids);
	free(tmp);
	free(target);
	return rc;
}
