/* persist-lmdb: the offline tool for a persist-lmdb database.
 *
 *   persist-lmdb [global options] COMMAND [command options]
 *
 * Read commands (stats, sessions, queue, verify, export) open the database
 * read-only: LMDB readers do not block the broker's writer, so they are safe
 * while it runs. Write commands (delete-account, rekey, compact) take the
 * database's writer lock and so refuse to run next to a broker. import-sqlite
 * builds a new database from a persist-sqlite file (tools/import_sqlite.c).
 * See docs/cli.md. */
#define _GNU_SOURCE /* renameat2, RENAME_EXCHANGE */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "account.h"
#include "cli_util.h"
#include "import_sqlite.h"
#include "journal.h"
#include "options.h"
#include "salvage.h"
#include "seal.h"
#include "store.h"

/* A walk callback's value that stops a walk without an error. */
#define WALK_STOP 1000
/* Operations a rekey buffers before committing them. */
#define REKEY_BATCH 10000

/* ---- command line ---- */

enum {
	O_DB = 256,
	O_KEY_FILE,
	O_USERNAME, /* command options from here: one bit each in command.opts */
	O_PREFIX,
	O_JSON,
	O_LIMIT,
	O_CLIENTID,
	O_PERSONAL,
	O_NEW_KEY,
	O_DROP_DAMAGED,
};
#define OPT(o) (1u << ((o) - O_USERNAME))

static const struct option long_options[] = {
	{"db", required_argument, NULL, O_DB},
	{"key-file", required_argument, NULL, O_KEY_FILE},
	{"config", required_argument, NULL, 'c'},
	{"help", no_argument, NULL, 'h'},
	{"username", required_argument, NULL, O_USERNAME},
	{"prefix", required_argument, NULL, O_PREFIX},
	{"json", no_argument, NULL, O_JSON},
	{"limit", required_argument, NULL, O_LIMIT},
	{"clientid", required_argument, NULL, O_CLIENTID},
	{"personal-topics", required_argument, NULL, O_PERSONAL},
	{"new-key-file", required_argument, NULL, O_NEW_KEY},
	{"drop-damaged", no_argument, NULL, O_DROP_DAMAGED},
	{NULL, 0, NULL, 0},
};

struct args {
	const char *db;
	const char *key_file;
	const char *config;
	const char *username;
	const char *prefix;
	const char *clientid;
	const char *personal_topics;
	const char *new_key_file;
	const char *positional;
	uint64_t limit;
	bool has_limit;
	bool json;
	bool help;
	bool drop_damaged;
};

/* The database and key, from the options and the config file. */
struct settings {
	const char *db;
	const char *key_file;
	const char *personal_topics;
	size_t map_size;
	const struct args *a;
};

struct command {
	const char *name;
	int (*run)(const struct settings *s);
	unsigned opts;
	int positional;
	const char *synopsis;
	const char *help;
};

static const char global_help[] =
	"usage: persist-lmdb [global options] COMMAND [command options]\n"
	"\n"
	"Reads and maintains the database of the persist-lmdb Mosquitto plugin.\n"
	"\n"
	"Global options (also accepted after the command):\n"
	"  --db DIR          the database directory (the plugin's plugin_opt_db_path)\n"
	"  --key-file FILE   the key file (the plugin's plugin_opt_key_file)\n"
	"  -c, --config FILE a mosquitto.conf: persistence_location, plugin_opt_db_path,\n"
	"                    plugin_opt_key_file, plugin_opt_personal_topics and\n"
	"                    plugin_opt_map_size are read from it; options given on the\n"
	"                    command line win\n"
	"  -h, --help        this text; COMMAND --help describes a command\n"
	"\n"
	"Read commands (safe while the broker runs):\n"
	"  stats             entries and bytes per database, file and map size, epoch, key id\n"
	"  sessions          one line per session\n"
	"  queue CLIENTID    a client's queued messages in delivery order\n"
	"  verify            checks every record and the references between them\n"
	"  export            every record as JSON lines\n"
	"\n"
	"Write commands (stop the broker first):\n"
	"  delete-account    deletes a user's or a client id's sessions and personal data\n"
	"  rekey             re-encrypts the database under a new key\n"
	"  compact           rewrites the data file without free pages\n"
	"  import-sqlite FILE copies a persist-sqlite database into a new database\n"
	"  salvage NEW_DIR   copies what still authenticates out of a damaged database\n"
	"\n"
	"Exit status:\n"
	"  0  success\n"
	"  1  the command ran and found problems or matched nothing (verify found a\n"
	"     damaged record or a broken reference; delete-account, queue or a filtered\n"
	"     sessions matched nothing)\n"
	"  2  usage error: bad command line or config file\n"
	"  3  cannot open or write the database: wrong key, key file unusable, database\n"
	"     busy (a running broker), damaged, or an I/O error\n";

/* ---- opening ---- */

static void cli_log(int level, const char *msg)
{
	/* The store's lines start with "persist-lmdb: " already. */
	if(level <= STORE_LOG_WARNING){
		fprintf(stderr, "%s\n", msg);
	}
}

static int load_key(const char *path, uint8_t key[SEAL_KEY_LEN])
{
	char err[512];

	if(seal_key_load(path, key, err, sizeof(err))){
		seal_wipe(key, SEAL_KEY_LEN);
		cli_error("%s", err);
		return EXIT_DB;
	}
	return EXIT_DONE;
}

static int open_with_key(const struct settings *s, const uint8_t key[SEAL_KEY_LEN], unsigned flags,
		struct store **st)
{
	char datafile[PATH_MAX], err[512];
	struct stat sb;
	int rc;

	*st = NULL;
	if(snprintf(datafile, sizeof(datafile), "%s/data.mdb", s->db) >= (int)sizeof(datafile)){
		cli_error("database path too long: %s", s->db);
		return EXIT_DB;
	}
	/* A writable open would create a database: only open one that exists. */
	if(stat(datafile, &sb) != 0){
		cli_error("no database in %s: %s", s->db, strerror(errno));
		return EXIT_DB;
	}
	rc = store_open(st, s->db, s->map_size, key, flags, cli_log, err, sizeof(err));
	if(rc == STORE_ERR_BUSY){
		cli_error("the broker (or another process) has the database in %s open; "
				"stop it first, or use the control API", s->db);
		return EXIT_DB;
	}
	if(rc){
		cli_error("%s", err);
		return EXIT_DB;
	}
	/* Running as root, what the open created (lock files) must stay usable
	 * by the broker's user. */
	if(match_owner(s->db, s->db)){
		cli_error("warning: cannot give the files in %s to its owner: %s", s->db, strerror(errno));
	}
	return EXIT_DONE;
}

static int open_db(const struct settings *s, unsigned flags, struct store **st)
{
	uint8_t key[SEAL_KEY_LEN];
	int rc = load_key(s->key_file, key);

	if(rc == EXIT_DONE){
		rc = open_with_key(s, key, flags, st);
		seal_wipe(key, sizeof(key));
	}
	return rc;
}

static int read_failed(const struct settings *s, int rc)
{
	cli_error("cannot read the database in %s: %s", s->db, store_strerror(rc));
	return EXIT_DB;
}

static int stdout_done(void)
{
	if(fflush(stdout) != 0 || ferror(stdout)){
		cli_error("cannot write to standard output: %s", strerror(errno));
		return EXIT_DB;
	}
	return EXIT_DONE;
}

/* ---- the intake journal ---- */

struct journal_count {
	uint64_t records;
};

static int count_record(void *ctx, uint64_t lsn, const uint8_t *pt, size_t len)
{
	(void)lsn;
	(void)pt;
	(void)len;
	((struct journal_count *)ctx)->records++;
	return 0;
}

/* Records of the journal that the broker has not applied yet (it applies
 * them at its next start), and places that did not authenticate. */
static int journal_pending(const struct settings *s, struct store *st, uint64_t *pending, uint64_t *unreadable)
{
	struct journal_count c = {0};
	struct journal *j;
	char err[512];
	int rc;

	*pending = *unreadable = 0;
	rc = journal_open_read(&j, s->db, store_seal(st), err, sizeof(err));
	if(rc){
		cli_error("%s", err);
		return EXIT_DB;
	}
	if(!j){
		return EXIT_DONE;
	}
	rc = journal_replay(j, store_journal_committed(st), count_record, &c, unreadable);
	journal_close(j);
	if(rc){
		cli_error("cannot read the journal in %s: %s", s->db, journal_strerror(rc));
		return EXIT_DB;
	}
	*pending = c.records;
	return EXIT_DONE;
}

/* A command that rewrites the database would leave the journal's records
 * behind (or unreadable, after a rekey): the broker applies them first. */
static int refuse_with_pending_journal(const struct settings *s, struct store *st, const char *cmd)
{
	uint64_t pending, unreadable;
	int rc = journal_pending(s, st, &pending, &unreadable);

	if(rc == EXIT_DONE && pending){
		cli_error("the journal in %s holds %" PRIu64 " record%s the broker has not applied (it did not "
				"stop cleanly): start the broker once and stop it, then run %s again", s->db, pending,
				pending == 1 ? "" : "s", cmd);
		return EXIT_PROBLEMS;
	}
	return rc;
}

/* ---- stats ---- */

static int cmd_stats(const struct settings *s)
{
	struct store_stats ss;
	struct store *st;
	uint64_t file_bytes, map_bytes;
	int rc = open_db(s, STORE_READ_ONLY, &st);

	if(rc){
		return rc;
	}
	rc = store_file_size(st, &file_bytes, &map_bytes);
	if(rc){
		store_close(st);
		return read_failed(s, rc);
	}
	store_get_stats(st, &ss);
	printf("database   %s\n", s->db);
	printf("data file  %" PRIu64 " bytes\n", file_bytes);
	printf("map size   %" PRIu64 " bytes\n", map_bytes);
	printf("epoch      %" PRIu32 "\n", store_epoch(st));
	printf("key id     %u\n", (unsigned)ss.key_id);
	printf("records    %" PRIu64 "\n", ss.records);
	printf("\n%-10s %12s %12s\n", "DATABASE", "ENTRIES", "BYTES");
	for(int db = 0; db < DB_COUNT; db++){
		uint64_t entries, bytes;

		/* The queues' row is the log and its index together. */
		if(db == DB_QINDEX){
			continue;
		}
		rc = store_count(st, (enum store_db)db, &entries, &bytes);
		if(rc){
			store_close(st);
			return read_failed(s, rc);
		}
		printf("%-10s %12" PRIu64 " %12" PRIu64 "\n", db == DB_QUEUE ? "queues" : store_db_name((enum store_db)db),
				entries, bytes);
	}
	store_close(st);
	return stdout_done();
}

/* ---- sessions ---- */

static int count_queue_entry(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	(void)seq;
	(void)q;
	(*(uint64_t *)ctx)++;
	return 0;
}

static int note_will(void *ctx, const struct rec_will *w)
{
	(void)w;
	*(bool *)ctx = true;
	return 0;
}

struct list_walk {
	struct store *st;
	const struct args *a;
	uint64_t listed;
};

static int list_session(void *ctx, const struct rec_session *s)
{
	struct list_walk *lw = ctx;
	const struct args *a = lw->a;
	uint64_t queued = 0;
	bool will = false;
	int rc;

	if((a->username && !(s->username && !strcmp(s->username, a->username)))
			|| (a->prefix && strncmp(s->clientid, a->prefix, strlen(a->prefix)) != 0)){
		return 0;
	}
	rc = store_walk_queue(lw->st, s->clientid, count_queue_entry, &queued);
	if(rc == STORE_OK){
		rc = store_walk_wills(lw->st, s->clientid, note_will, &will);
	}
	if(rc){
		return rc;
	}
	lw->listed++;
	if(a->json){
		cJSON *o = cJSON_CreateObject();
		if(!o || json_add_str(o, "clientid", s->clientid) || json_add_str(o, "username", s->username)
				|| json_add_u64(o, "session_expiry_interval", s->session_expiry_interval)
				|| json_add_u64(o, "queued", queued) || !cJSON_AddBoolToObject(o, "will", will)){
			cJSON_Delete(o);
			return STORE_ERR_NOMEM;
		}
		return json_emit(o) ? STORE_ERR_IO : 0;
	}
	print_text(stdout, s->clientid);
	putchar('\t');
	print_text(stdout, s->username ? s->username : "-");
	if(s->session_expiry_interval == UINT32_MAX){
		printf("\tnever");
	}else{
		printf("\t%" PRIu32, s->session_expiry_interval);
	}
	printf("\t%" PRIu64 "\t%s\n", queued, will ? "yes" : "no");
	return 0;
}

static int cmd_sessions(const struct settings *s)
{
	const struct args *a = s->a;
	struct store *st;
	int rc = open_db(s, STORE_READ_ONLY, &st);

	if(rc){
		return rc;
	}
	struct list_walk lw = {st, a, 0};
	if(!a->json){
		printf("CLIENTID\tUSERNAME\tEXPIRY\tQUEUED\tWILL\n");
	}
	rc = store_walk_sessions(st, list_session, &lw);
	store_close(st);
	if(rc){
		return read_failed(s, rc);
	}
	rc = stdout_done();
	if(rc == EXIT_DONE && lw.listed == 0 && (a->username || a->prefix)){
		cli_error("no session matches");
		return EXIT_PROBLEMS;
	}
	return rc;
}

/* ---- queue ---- */

static const char *state_name(uint8_t state)
{
	/* Mosquitto's enum mosquitto_msg_state. */
	static const char *const names[] = {
		"invalid", "publish_qos0", "publish_qos1", "wait_for_puback", "publish_qos2",
		"wait_for_pubrec", "resend_pubrel", "wait_for_pubrel", "resend_pubcomp",
		"wait_for_pubcomp", "send_pubrec", "queued",
	};

	return state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

static const char *direction_name(uint8_t direction)
{
	return direction == 0 ? "in" : direction == 1 ? "out" : "unknown";
}

struct queue_walk {
	struct store *st;
	const struct args *a;
	uint64_t shown;
	bool header;
	/* the entry being shown */
	uint64_t seq;
	const struct rec_queue *q;
	bool found;
};

static void queue_header(struct queue_walk *qw)
{
	if(!qw->a->json && !qw->header){
		printf("SEQ\tDIR\tQOS\tSTATE\tMID\tSTORE_ID\tTOPIC\tPAYLOAD\n");
	}
	qw->header = true;
}

/* Prints the current entry with its body m (NULL: the body is missing). */
static int show_entry(struct queue_walk *qw, const struct rec_base_msg *m)
{
	const struct rec_queue *q = qw->q;

	if(qw->a->json){
		cJSON *o = cJSON_CreateObject();
		if(!o || json_add_u64(o, "seq", qw->seq)
				|| !cJSON_AddStringToObject(o, "direction", direction_name(q->direction))
				|| json_add_u64(o, "qos", q->qos)
				|| !cJSON_AddStringToObject(o, "state", state_name(q->state))
				|| json_add_u64(o, "mid", q->mid) || json_add_u64(o, "store_id", q->store_id)
				|| json_add_u64(o, "dup", q->dup) || !cJSON_AddBoolToObject(o, "retain", q->retain)
				|| json_add_u64(o, "subscription_identifier", q->subscription_identifier)
				|| json_add_str(o, "topic", m ? m->topic : NULL)
				|| json_add_b64(o, "payload", m ? m->payload.data : NULL, m ? m->payload.len : 0,
					m && m->payload.data)){
			cJSON_Delete(o);
			return STORE_ERR_NOMEM;
		}
		return json_emit(o) ? STORE_ERR_IO : 0;
	}
	printf("%" PRIu64 "\t%s\t%u\t%s\t%u\t%" PRIu64 "\t", qw->seq, direction_name(q->direction),
			(unsigned)q->qos, state_name(q->state), (unsigned)q->mid, q->store_id);
	if(m){
		print_text(stdout, m->topic ? m->topic : "");
		putchar('\t');
		print_payload(stdout, m->payload.data, m->payload.len);
		putchar('\n');
	}else{
		printf("-\t(message body missing)\n");
	}
	return 0;
}

static int show_with_body(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct queue_walk *qw = ctx;

	(void)store_id;
	qw->found = true;
	return show_entry(qw, m);
}

static int queue_entry(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct queue_walk *qw = ctx;
	int rc;

	if(qw->a->has_limit && qw->shown >= qw->a->limit){
		return WALK_STOP;
	}
	queue_header(qw);
	qw->seq = seq;
	qw->q = q;
	qw->found = false;
	rc = store_msg_get(qw->st, q->store_id, show_with_body, qw);
	if(rc == STORE_OK && !qw->found){
		rc = show_entry(qw, NULL);
	}
	qw->shown++;
	return rc;
}

static int note_session(void *ctx, const struct rec_session *s)
{
	(void)s;
	*(bool *)ctx = true;
	return 0;
}

static int cmd_queue(const struct settings *s)
{
	const char *clientid = s->a->positional;
	bool has_session = false;
	struct store *st;
	int rc = open_db(s, STORE_READ_ONLY, &st);

	if(rc){
		return rc;
	}
	struct queue_walk qw = {st, s->a, 0, false, 0, NULL, false};
	rc = store_session_get(st, clientid, note_session, &has_session);
	if(rc == STORE_OK){
		rc = store_walk_queue(st, clientid, queue_entry, &qw);
	}
	store_close(st);
	if(rc && rc != WALK_STOP){
		return read_failed(s, rc);
	}
	if(qw.shown == 0){
		if(!has_session){
			cli_error("client id '%s' has no session and no queued messages", clientid);
			return EXIT_PROBLEMS;
		}
		queue_header(&qw);
	}
	return stdout_done();
}

/* ---- verify ---- */

struct counts {
	uint64_t msgs, sessions, subs, queue, retained, wills;
};

static int count_msg(void *ctx, uint64_t id, const struct rec_base_msg *m)
{
	(void)id;
	(void)m;
	((struct counts *)ctx)->msgs++;
	return 0;
}

static int count_session(void *ctx, const struct rec_session *s)
{
	(void)s;
	((struct counts *)ctx)->sessions++;
	return 0;
}

static int count_sub(void *ctx, const struct rec_sub *s)
{
	(void)s;
	((struct counts *)ctx)->subs++;
	return 0;
}

static int count_queue(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	(void)seq;
	(void)q;
	((struct counts *)ctx)->queue++;
	return 0;
}

static int count_retained(void *ctx, const struct rec_retain *r)
{
	(void)r;
	((struct counts *)ctx)->retained++;
	return 0;
}

static int count_will(void *ctx, const struct rec_will *w)
{
	(void)w;
	((struct counts *)ctx)->wills++;
	return 0;
}

static int cmd_verify(const struct settings *s)
{
	struct counts c = {0};
	struct store_refs refs;
	struct store_tallies tallies;
	struct store_stats ss;
	struct store *st;
	uint64_t problems;
	int rc = open_db(s, STORE_READ_ONLY, &st);

	if(rc){
		return rc;
	}
	rc = store_walk_msgs(st, count_msg, &c);
	if(rc == STORE_OK){
		rc = store_walk_sessions(st, count_session, &c);
	}
	if(rc == STORE_OK){
		rc = store_walk_subs(st, NULL, count_sub, &c);
	}
	if(rc == STORE_OK){
		rc = store_walk_queue(st, NULL, count_queue, &c);
	}
	if(rc == STORE_OK){
		rc = store_walk_retained(st, count_retained, &c);
	}
	if(rc == STORE_OK){
		rc = store_walk_wills(st, NULL, count_will, &c);
	}
	if(rc == STORE_OK){
		rc = store_check_refs(st, false, &refs);
	}
	if(rc == STORE_OK){
		rc = store_check_tallies(st, &tallies);
	}
	uint64_t pending = 0, cut_short = 0;
	if(rc == STORE_OK && journal_pending(s, st, &pending, &cut_short) != EXIT_DONE){
		store_close(st);
		return EXIT_DB;
	}
	store_get_stats(st, &ss);
	store_close(st);
	if(rc){
		return read_failed(s, rc);
	}
	printf("message bodies                 %12" PRIu64 "\n", c.msgs);
	printf("sessions                       %12" PRIu64 "\n", c.sessions);
	printf("subscriptions                  %12" PRIu64 "\n", c.subs);
	printf("queued messages                %12" PRIu64 "\n", c.queue);
	printf("retained messages              %12" PRIu64 "\n", c.retained);
	printf("wills                          %12" PRIu64 "\n", c.wills);
	printf("records (structure check)      %12" PRIu64 "\n", ss.records);
	printf("rejected records               %12" PRIu64 "\n", ss.records_rejected);
	printf("orphan message bodies          %12" PRIu64 "\n", refs.orphan_msgs);
	printf("dangling queue entries         %12" PRIu64 "\n", refs.dangling_queue);
	printf("dangling retained entries      %12" PRIu64 "\n", refs.dangling_retained);
	printf("queue entries without session  %12" PRIu64 "\n", refs.queue_without_session);
	printf("subscriptions without session  %12" PRIu64 "\n", refs.subs_without_session);
	printf("wrong reference counts         %12" PRIu64 "\n", refs.refs_wrong);
	printf("queue index mismatches         %12" PRIu64 "\n", refs.queue_index_wrong);
	if(tallies.kept){
		printf("queue tallies checked          %12" PRIu64 "\n", tallies.checked);
		printf("wrong queue tallies            %12" PRIu64 "\n", tallies.wrong);
	}else{
		printf("queue tallies                  not kept by the last run (counted at the next start)\n");
	}
	/* Not problems: what a crash leaves, applied at the next start. */
	printf("journal records to apply       %12" PRIu64 "\n", pending);
	printf("journal records cut short      %12" PRIu64 "\n", cut_short);
	problems = ss.records_rejected + refs.orphan_msgs + refs.dangling_queue + refs.dangling_retained
		+ refs.queue_without_session + refs.subs_without_session + refs.refs_wrong + refs.queue_index_wrong
		+ tallies.wrong;
	if(problems){
		printf("verify: %" PRIu64 " problem%s found\n", problems, problems == 1 ? "" : "s");
	}else{
		printf("verify: no problems found\n");
	}
	rc = stdout_done();
	return rc ? rc : problems ? EXIT_PROBLEMS : EXIT_DONE;
}

/* ---- export ---- */

struct export_walk {
	struct store *st;
	const char *clientid; /* of the session whose queue is walked */
};

static cJSON *record_object(const char *kind)
{
	cJSON *o = cJSON_CreateObject();

	if(o && !cJSON_AddStringToObject(o, "kind", kind)){
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* Emits o if it was completed (ok), else frees it. */
static int export_emit(cJSON *o, bool ok)
{
	if(!ok){
		cJSON_Delete(o);
		return STORE_ERR_NOMEM;
	}
	return json_emit(o) ? STORE_ERR_IO : 0;
}

static int export_msg(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	cJSON *o = record_object("message");

	(void)ctx;
	return export_emit(o, o && !json_add_u64(o, "store_id", store_id) && !json_add_str(o, "topic", m->topic)
			&& !json_add_b64(o, "payload", m->payload.data, m->payload.len, m->payload.data)
			&& !json_add_b64(o, "properties", m->properties.data, m->properties.len, m->properties.data)
			&& !json_add_u64(o, "qos", m->qos) && cJSON_AddBoolToObject(o, "retain", m->retain)
			&& !json_add_i64(o, "expiry_time", m->expiry_time)
			&& !json_add_str(o, "source_id", m->source_id)
			&& !json_add_str(o, "source_username", m->source_username)
			&& !json_add_u64(o, "source_mid", m->source_mid)
			&& !json_add_u64(o, "source_port", m->source_port));
}

static int export_retained(void *ctx, const struct rec_retain *r)
{
	cJSON *o = record_object("retained");

	(void)ctx;
	return export_emit(o, o && !json_add_str(o, "topic", r->topic) && !json_add_u64(o, "store_id", r->store_id));
}

static int export_session(void *ctx, const struct rec_session *s)
{
	struct export_walk *ew = ctx;
	cJSON *o = record_object("session");
	int online = store_session_was_online(ew->st, s->clientid);

	if(online != 0 && online != 1){
		cJSON_Delete(o);
		return online;
	}
	return export_emit(o, o && !json_add_str(o, "clientid", s->clientid)
			&& !json_add_str(o, "username", s->username)
			&& !json_add_str(o, "auth_method", s->auth_method)
			&& !json_add_i64(o, "will_delay_time", s->will_delay_time)
			&& !json_add_i64(o, "session_expiry_time", s->session_expiry_time)
			&& !json_add_u64(o, "will_delay_interval", s->will_delay_interval)
			&& !json_add_u64(o, "session_expiry_interval", s->session_expiry_interval)
			&& !json_add_u64(o, "max_packet_size", s->max_packet_size)
			&& !json_add_u64(o, "listener_port", s->listener_port)
			&& !json_add_u64(o, "max_qos", s->max_qos)
			&& cJSON_AddBoolToObject(o, "retain_available", s->retain_available)
			&& cJSON_AddBoolToObject(o, "online", online == 1));
}

static int export_sub(void *ctx, const struct rec_sub *s)
{
	cJSON *o = record_object("subscription");

	(void)ctx;
	return export_emit(o, o && !json_add_str(o, "clientid", s->clientid)
			&& !json_add_str(o, "topic_filter", s->topic_filter)
			&& !json_add_u64(o, "identifier", s->identifier) && !json_add_u64(o, "options", s->options));
}

static int export_queue(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct export_walk *ew = ctx;
	cJSON *o = record_object("queue");

	return export_emit(o, o && !json_add_str(o, "clientid", ew->clientid) && !json_add_u64(o, "seq", seq)
			&& !json_add_u64(o, "store_id", q->store_id)
			&& !json_add_u64(o, "subscription_identifier", q->subscription_identifier)
			&& !json_add_u64(o, "mid", q->mid) && !json_add_u64(o, "qos", q->qos)
			&& cJSON_AddBoolToObject(o, "retain", q->retain) && !json_add_u64(o, "dup", q->dup)
			&& !json_add_u64(o, "direction", q->direction) && !json_add_u64(o, "state", q->state));
}

static int export_session_queue(void *ctx, const struct rec_session *s)
{
	struct export_walk *ew = ctx;

	ew->clientid = s->clientid;
	return store_walk_queue(ew->st, s->clientid, export_queue, ew);
}

static int export_will(void *ctx, const struct rec_will *w)
{
	cJSON *o = record_object("will");

	(void)ctx;
	return export_emit(o, o && !json_add_str(o, "clientid", w->clientid) && !json_add_str(o, "topic", w->topic)
			&& !json_add_b64(o, "payload", w->payload.data, w->payload.len, w->payload.data)
			&& !json_add_b64(o, "properties", w->properties.data, w->properties.len, w->properties.data)
			&& !json_add_u64(o, "qos", w->qos) && cJSON_AddBoolToObject(o, "retain", w->retain));
}

static int cmd_export(const struct settings *s)
{
	struct store_stats ss;
	struct store *st;
	int rc = open_db(s, STORE_READ_ONLY, &st);

	if(rc){
		return rc;
	}
	struct export_walk ew = {st, NULL};
	rc = store_walk_msgs(st, export_msg, &ew);
	if(rc == STORE_OK){
		rc = store_walk_retained(st, export_retained, &ew);
	}
	if(rc == STORE_OK){
		rc = store_walk_sessions(st, export_session, &ew);
	}
	if(rc == STORE_OK){
		rc = store_walk_subs(st, NULL, export_sub, &ew);
	}
	if(rc == STORE_OK){
		rc = store_walk_sessions(st, export_session_queue, &ew);
	}
	if(rc == STORE_OK){
		rc = store_walk_wills(st, NULL, export_will, &ew);
	}
	store_get_stats(st, &ss);
	store_close(st);
	if(rc){
		return read_failed(s, rc);
	}
	rc = stdout_done();
	if(rc == EXIT_DONE && ss.records_rejected){
		cli_error("%" PRIu64 " damaged record%s not exported (see verify)", ss.records_rejected,
				ss.records_rejected == 1 ? "" : "s");
		return EXIT_PROBLEMS;
	}
	return rc;
}

/* ---- delete-account ---- */

static int commit_failed(const struct settings *s, struct store *st, int rc)
{
	cli_error("cannot write the database in %s: %s", s->db, store_strerror(rc));
	store_close(st);
	return EXIT_DB;
}

static int print_account_json(const struct account_plan *plan, uint64_t bodies_deleted)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *ids = cJSON_AddArrayToObject(o, "sessions");
	cJSON *topics = cJSON_AddArrayToObject(o, "retained");
	bool ok = o && ids && topics;

	for(size_t i = 0; ok && i < plan->n_clientids; i++){
		ok = cJSON_AddItemToArray(ids, cJSON_CreateString(plan->clientids[i]));
	}
	for(size_t i = 0; ok && i < plan->n_retained; i++){
		ok = cJSON_AddItemToArray(topics, cJSON_CreateString(plan->retained_topics[i]));
	}
	ok = ok && !json_add_u64(o, "queued", plan->queued) && !json_add_u64(o, "message_bodies", bodies_deleted)
		&& cJSON_AddBoolToObject(o, "personal_topics_skipped", plan->n_skipped > 0);
	cJSON *skipped = ok ? cJSON_AddArrayToObject(o, "skipped") : NULL;
	ok = skipped != NULL;
	for(size_t i = 0; ok && i < plan->n_skipped; i++){
		cJSON *s = cJSON_CreateObject();
		if(!s || !cJSON_AddItemToArray(skipped, s)){
			cJSON_Delete(s);
			ok = false;
			break;
		}
		ok = cJSON_AddStringToObject(s, plan->skipped[i].username ? "username" : "clientid", plan->skipped[i].name)
			&& cJSON_AddStringToObject(s, "reason", plan->skipped[i].why);
	}
	if(!ok){
		cJSON_Delete(o);
		return -1;
	}
	return json_emit(o);
}

static void print_account(const struct account_plan *plan, uint64_t bodies_deleted)
{
	printf("sessions deleted: %zu\n", plan->n_clientids);
	for(size_t i = 0; i < plan->n_clientids; i++){
		fputs("  ", stdout);
		print_text(stdout, plan->clientids[i]);
		putchar('\n');
	}
	printf("queued messages deleted: %" PRIu64 "\n", plan->queued);
	printf("retained messages deleted: %zu\n", plan->n_retained);
	for(size_t i = 0; i < plan->n_retained; i++){
		fputs("  ", stdout);
		print_text(stdout, plan->retained_topics[i]);
		putchar('\n');
	}
	printf("message bodies deleted: %" PRIu64 "\n", bodies_deleted);
}

static int cmd_delete_account(const struct settings *s)
{
	const struct args *a = s->a;
	struct account_plan plan;
	struct store_refs refs = {0};
	uint64_t bodies_before = 0, bodies_after = 0, bytes;
	struct store *st;
	bool matched;
	int rc;

	if(!a->username == !a->clientid){
		cli_error("delete-account needs exactly one of --username and --clientid");
		return EXIT_USAGE;
	}
	rc = open_db(s, 0, &st);
	if(rc){
		return rc;
	}
	rc = refuse_with_pending_journal(s, st, "delete-account");
	if(rc){
		store_close(st);
		return rc;
	}
	rc = account_plan(st, a->username, a->username ? NULL : a->clientid, s->personal_topics, &plan);
	if(rc){
		store_close(st);
		return read_failed(s, rc);
	}
	matched = plan.n_clientids || plan.n_retained;
	for(size_t i = 0; i < plan.n_skipped; i++){
		fprintf(stderr, "persist-lmdb: warning: the personal topics of %s '", plan.skipped[i].username ? "username"
				: "client id");
		print_text(stderr, plan.skipped[i].name);
		fprintf(stderr, "' were not searched: it %s\n", plan.skipped[i].why);
	}
	if(matched){
		/* Bodies go with their last reference, in the commit of the
		 * deletions; store_check_refs then removes what nothing referred
		 * to before (it reads committed data). */
		rc = store_count(st, DB_MSGS, &bodies_before, &bytes);
		if(rc == STORE_OK){
			rc = account_apply(st, &plan);
		}
		if(rc == STORE_OK){
			rc = store_commit(st);
		}
		if(rc == STORE_OK){
			rc = store_check_refs(st, true, &refs);
		}
		if(rc == STORE_OK){
			rc = store_commit(st);
		}
		if(rc == STORE_OK){
			rc = store_count(st, DB_MSGS, &bodies_after, &bytes);
		}
		if(rc){
			account_plan_free(&plan);
			return commit_failed(s, st, rc);
		}
	}
	store_close(st);
	if(a->json){
		if(print_account_json(&plan, bodies_before - bodies_after)){
			account_plan_free(&plan);
			cli_error("cannot write to standard output");
			return EXIT_DB;
		}
	}else if(matched){
		print_account(&plan, bodies_before - bodies_after);
	}
	account_plan_free(&plan);
	rc = stdout_done();
	if(rc == EXIT_DONE && !matched){
		cli_error("nothing matched: no session %s '%s'%s", a->username ? "with username" : "with client id",
				a->username ? a->username : a->clientid,
				s->personal_topics ? " and no retained message under its personal topics" : "");
		return EXIT_PROBLEMS;
	}
	return rc;
}

/* ---- rekey and compact: a new directory exchanged with the old ---- */

/* malloc'd "<db><suffix>", or NULL. */
static char *sibling(const char *db, const char *suffix)
{
	size_t n = strlen(db) + strlen(suffix) + 1;
	char *p = malloc(n);

	if(p){
		snprintf(p, n, "%s%s", db, suffix);
	}
	return p;
}

/* Makes the finished database in fresh take the place of the one in db,
 * atomically: afterwards the old one is in fresh. The parent directory is
 * synced so that the exchange survives a crash. */
static int exchange_dirs(const char *fresh, const char *db)
{
	char *parent = strdup(db);
	char *slash;
	int rc = -1;

	if(!parent){
		cli_error("out of memory");
		return -1;
	}
	slash = strrchr(parent, '/');
	if(slash == parent){
		slash[1] = '\0';
	}else if(slash){
		*slash = '\0';
	}
	if(match_owner(fresh, db) != 0){
		cli_error("cannot give %s the owner and mode of %s: %s", fresh, db, strerror(errno));
	}else if(fsync_path(fresh) != 0){
		cli_error("cannot sync %s: %s", fresh, strerror(errno));
	}else if(renameat2(AT_FDCWD, fresh, AT_FDCWD, db, RENAME_EXCHANGE) != 0){
		cli_error("cannot exchange %s with %s: %s", fresh, db, strerror(errno));
	}else{
		rc = 0;
		if(fsync_path(parent) != 0){
			cli_error("warning: cannot sync %s: %s", parent, strerror(errno));
		}
	}
	free(parent);
	return rc;
}

/* After a successful exchange: the old database goes. */
static int remove_old(const char *old)
{
	if(remove_tree(old) != 0){
		cli_error("cannot remove the old database in %s: %s; remove it yourself", old, strerror(errno));
		return EXIT_DB;
	}
	return EXIT_DONE;
}

struct rekey {
	struct store *from;
	struct store *to;
	uint64_t n_msgs, n_retained, n_sessions, n_subs, n_queue, n_wills;
	uint64_t pending;     /* operations buffered in to since its last commit */
	const char *clientid; /* of the session whose queue is copied */
	uint64_t next_seq;
};

static int rekey_op(struct rekey *rk, int rc)
{
	if(rc == STORE_OK && ++rk->pending >= REKEY_BATCH){
		rk->pending = 0;
		rc = store_commit(rk->to);
	}
	return rc;
}

static int rekey_msg(void *ctx, uint64_t store_id, const struct rec_base_msg *m)
{
	struct rekey *rk = ctx;

	rk->n_msgs++;
	return rekey_op(rk, store_msg_put(rk->to, store_id, m));
}

static int rekey_retained(void *ctx, const struct rec_retain *r)
{
	struct rekey *rk = ctx;

	rk->n_retained++;
	return rekey_op(rk, store_retain_set(rk->to, r->topic, r->store_id));
}

static int rekey_sub(void *ctx, const struct rec_sub *s)
{
	struct rekey *rk = ctx;

	rk->n_subs++;
	return rekey_op(rk, store_sub_put(rk->to, s));
}

static int rekey_queue(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	struct rekey *rk = ctx;

	(void)seq;
	rk->n_queue++;
	/* Renumbered under the new database's epoch, in the same order: the
	 * new database counts its epochs from 1 again, so the old numbers
	 * would sort after everything the broker queues from now on. */
	return rekey_op(rk, store_queue_append(rk->to, rk->clientid, rk->next_seq++, q));
}

static int rekey_online(struct rekey *rk, const char *clientid)
{
	int online = store_session_was_online(rk->from, clientid);

	if(online == 1){
		return rekey_op(rk, store_session_set_online(rk->to, clientid, true));
	}
	return online;
}

static int rekey_session(void *ctx, const struct rec_session *s)
{
	struct rekey *rk = ctx;
	int rc;

	rk->n_sessions++;
	rc = rekey_op(rk, store_session_put(rk->to, s));
	if(rc == STORE_OK){
		rc = rekey_online(rk, s->clientid);
	}
	if(rc == STORE_OK){
		rc = store_walk_subs(rk->from, s->clientid, rekey_sub, rk);
	}
	if(rc == STORE_OK){
		rk->clientid = s->clientid;
		rk->next_seq = ((uint64_t)store_epoch(rk->to) << STORE_SEQ_SHIFT) | 1;
		rc = store_walk_queue(rk->from, s->clientid, rekey_queue, rk);
	}
	uint64_t last;
	if(rc == STORE_OK){
		rc = store_seqno_get(rk->from, s->clientid, &last);
	}
	if(rc == STORE_OK && last){
		rc = rekey_op(rk, store_seqno_put(rk->to, s->clientid, last));
	}
	return rc;
}

/* Message ids are keyed by a hash under the key: computed anew. */
static int rekey_dedup(void *ctx, const uint8_t key[HASH_LEN], const struct rec_dedup *d)
{
	struct rekey *rk = ctx;
	uint8_t new_key[HASH_LEN];
	int rc;

	(void)key;
	rc = store_dedup_key(rk->to, d, new_key);
	return rc ? rc : rekey_op(rk, store_dedup_put(rk->to, new_key, d));
}

static int rekey_will(void *ctx, const struct rec_will *w)
{
	struct rekey *rk = ctx;
	int rc;

	rk->n_wills++;
	rc = rekey_op(rk, store_will_put(rk->to, w));
	/* A will without a session (a clean-session client that was connected
	 * at a crash) is published at start-up only if the marker is there. */
	return rc == STORE_OK ? rekey_online(rk, w->clientid) : rc;
}

static int rekey_copy(struct rekey *rk)
{
	int rc = store_walk_msgs(rk->from, rekey_msg, rk);

	if(rc == STORE_OK){
		rc = store_walk_retained(rk->from, rekey_retained, rk);
	}
	if(rc == STORE_OK){
		rc = store_walk_sessions(rk->from, rekey_session, rk);
	}
	if(rc == STORE_OK){
		rc = store_walk_wills(rk->from, NULL, rekey_will, rk);
	}
	if(rc == STORE_OK){
		rc = store_walk_dedup(rk->from, rekey_dedup, rk);
	}
	if(rc == STORE_OK){
		rc = store_commit(rk->to);
	}
	return rc;
}

/* Opens the old database and creates the new one in fresh. */
static int rekey_open(const struct settings *s, const char *fresh, struct rekey *rk, uint8_t *new_id)
{
	uint8_t key[SEAL_KEY_LEN], new_key[SEAL_KEY_LEN];
	struct store_stats ss;
	char err[512];
	int rc = load_key(s->key_file, key);

	if(rc){
		return rc;
	}
	rc = load_key(s->a->new_key_file, new_key);
	if(rc == EXIT_DONE && !memcmp(key, new_key, sizeof(key))){
		cli_error("the new key in %s is the current key", s->a->new_key_file);
		rc = EXIT_USAGE;
	}
	if(rc == EXIT_DONE){
		rc = open_with_key(s, key, 0, &rk->from);
	}
	seal_wipe(key, sizeof(key));
	if(rc == EXIT_DONE){
		rc = refuse_with_pending_journal(s, rk->from, "rekey");
		if(rc){
			store_close(rk->from);
			rk->from = NULL;
		}
	}
	if(rc == EXIT_DONE){
		store_get_stats(rk->from, &ss);
		*new_id = ss.key_id == 255 ? 1 : ss.key_id + 1;
		/* Under the lock of the old database: a leftover of an interrupted
		 * rekey is nobody's. */
		if(remove_tree(fresh) != 0){
			cli_error("cannot remove the leftover %s: %s", fresh, strerror(errno));
			rc = EXIT_DB;
		}else if(store_create(&rk->to, fresh, ss.map_size, new_key, *new_id, 0, cli_log, err, sizeof(err))){
			cli_error("%s", err);
			rc = EXIT_DB;
		}
		if(rc){
			store_close(rk->from);
			rk->from = NULL;
		}
	}
	seal_wipe(new_key, sizeof(new_key));
	return rc;
}

static int cmd_rekey(const struct settings *s)
{
	struct rekey rk = {0};
	struct store_stats ss;
	uint8_t new_id = 0;
	char *fresh = sibling(s->db, ".rekey-new");
	int rc;

	if(!fresh){
		cli_error("out of memory");
		return EXIT_DB;
	}
	rc = rekey_open(s, fresh, &rk, &new_id);
	if(rc){
		free(fresh);
		return rc;
	}
	rc = rekey_copy(&rk);
	store_get_stats(rk.from, &ss);
	store_close(rk.to);
	if(rc){
		cli_error("cannot copy the database into %s: %s", fresh, store_strerror(rc));
		rc = EXIT_DB;
	}else if(ss.records_rejected && !s->a->drop_damaged){
		cli_error("%" PRIu64 " damaged record%s could not be read (see verify); rekey would lose %s: "
				"nothing changed (--drop-damaged rekeys without %s)", ss.records_rejected,
				ss.records_rejected == 1 ? "" : "s", ss.records_rejected == 1 ? "it" : "them",
				ss.records_rejected == 1 ? "it" : "them");
		rc = EXIT_PROBLEMS;
	}else if(exchange_dirs(fresh, s->db) != 0){
		rc = EXIT_DB;
	}
	store_close(rk.from);
	if(rc){
		/* The old database is untouched: the new one goes. */
		if(remove_tree(fresh) != 0){
			cli_error("cannot remove %s: %s", fresh, strerror(errno));
		}
		free(fresh);
		return rc;
	}
	rc = remove_old(fresh);
	free(fresh);
	printf("re-encrypted under key id %u: %" PRIu64 " message bodies, %" PRIu64 " retained messages, %"
			PRIu64 " sessions, %" PRIu64 " subscriptions, %" PRIu64 " queued messages, %" PRIu64 " wills\n",
			(unsigned)new_id, rk.n_msgs, rk.n_retained, rk.n_sessions, rk.n_subs, rk.n_queue, rk.n_wills);
	if(ss.records_rejected){
		printf("dropped %" PRIu64 " damaged records\n", ss.records_rejected);
	}
	printf("The database in %s now opens with the key in %s only.\n"
			"Point the broker's plugin_opt_key_file at it before starting the broker,\n"
			"then destroy the old key %s: data deleted before the rekey may remain in\n"
			"freed disk blocks, and without the old key it is unrecoverable.\n",
			s->db, s->a->new_key_file, s->key_file);
	return rc ? rc : stdout_done();
}

static int cmd_compact(const struct settings *s)
{
	char *fresh = sibling(s->db, ".compact-new");
	char err[512];
	struct stat old_sb, new_sb;
	struct store *st;
	uint64_t before, map_bytes;
	int rc;

	if(!fresh){
		cli_error("out of memory");
		return EXIT_DB;
	}
	rc = open_db(s, 0, &st);
	if(rc == EXIT_DONE){
		rc = refuse_with_pending_journal(s, st, "compact");
		if(rc){
			store_close(st);
		}
	}
	if(rc){
		free(fresh);
		return rc;
	}
	char *old_file = sibling(s->db, "/data.mdb"), *new_file = sibling(fresh, "/data.mdb");
	if(!old_file || !new_file){
		cli_error("out of memory");
		rc = EXIT_DB;
	}else if(store_file_size(st, &before, &map_bytes) != STORE_OK || stat(old_file, &old_sb) != 0){
		cli_error("cannot read the size of %s: %s", old_file, strerror(errno));
		rc = EXIT_DB;
	}else if(remove_tree(fresh) != 0 || mkdir(fresh, 0700) != 0){
		cli_error("cannot make an empty directory %s: %s", fresh, strerror(errno));
		rc = EXIT_DB;
	}else if(store_copy_compact(st, fresh, err, sizeof(err)) != STORE_OK){
		cli_error("%s", err);
		rc = EXIT_DB;
	}else if(chmod(new_file, old_sb.st_mode & 07777) != 0 || fsync_path(new_file) != 0
			|| stat(new_file, &new_sb) != 0){
		cli_error("cannot finish %s: %s", new_file, strerror(errno));
		rc = EXIT_DB;
	}else if(exchange_dirs(fresh, s->db) != 0){
		rc = EXIT_DB;
	}
	store_close(st);
	if(rc){
		if(remove_tree(fresh) != 0){
			cli_error("cannot remove %s: %s", fresh, strerror(errno));
		}
	}else{
		rc = remove_old(fresh);
		printf("data file: %" PRIu64 " bytes before, %" PRIu64 " bytes after\n", before,
				(uint64_t)new_sb.st_size);
		if(rc == EXIT_DONE){
			rc = stdout_done();
		}
	}
	free(old_file);
	free(new_file);
	free(fresh);
	return rc;
}

/* ---- salvage ---- */

/* A directory salvage may fill: absent (made here) or empty. */
static int empty_target(const char *dir)
{
	struct stat sb;
	int rc = rmdir(dir);

	if(rc != 0 && errno != ENOENT){
		cli_error("%s exists and is not an empty directory: salvage writes into a new one", dir);
		return EXIT_USAGE;
	}
	if(stat(dir, &sb) == 0 || mkdir(dir, 0700) != 0){
		cli_error("cannot make the directory %s: %s", dir, strerror(errno));
		return EXIT_DB;
	}
	return EXIT_DONE;
}

static int cmd_salvage(const struct settings *s)
{
	static const char *const what[DB_COUNT] = {
		[DB_MSGS] = "message bodies", [DB_QUEUE] = "queued messages", [DB_SESSIONS] = "sessions",
		[DB_SUBS] = "subscriptions", [DB_RETAINED] = "retained messages", [DB_WILLS] = "wills",
		[DB_ONLINE] = "connection marks", [DB_DEDUP] = "message ids", [DB_SEQNO] = "sequence counters",
	};
	const char *dst = s->a->positional;
	struct salvage_report rep;
	uint8_t key[SEAL_KEY_LEN];
	uint64_t lost = 0;
	char err[512];
	int rc = load_key(s->key_file, key);

	if(rc == EXIT_DONE){
		rc = empty_target(dst);
	}
	if(rc == EXIT_DONE){
		rc = salvage_run(s->db, dst, key, s->map_size, cli_log, &rep, err, sizeof(err));
		if(rc){
			cli_error("%s", err);
			if(remove_tree(dst) != 0){
				cli_error("cannot remove %s: %s", dst, strerror(errno));
			}
			rc = EXIT_DB;
		}else if(match_owner(dst, s->db) != 0){
			cli_error("warning: cannot give %s the owner of %s: %s", dst, s->db, strerror(errno));
		}
	}
	seal_wipe(key, sizeof(key));
	if(rc){
		return rc;
	}
	printf("salvaged into %s (from the commit with LMDB txnid %" PRIu64 "):\n", dst, rep.txnid);
	for(int db = 0; db < DB_COUNT; db++){
		if(what[db] && (rep.copied[db] || rep.rejected[db])){
			printf("  %-18s %12" PRIu64 " copied", what[db], rep.copied[db]);
			if(rep.rejected[db]){
				printf(", %" PRIu64 " that did not authenticate left out", rep.rejected[db]);
			}
			putchar('\n');
		}
		lost += rep.rejected[db];
	}
	if(rep.orphaned_queue){
		printf("left out: %" PRIu64 " queued messages whose session was lost\n", rep.orphaned_queue);
	}
	if(rep.bodiless_queue){
		printf("left out: %" PRIu64 " queued messages whose message body was lost\n", rep.bodiless_queue);
	}
	if(rep.orphan_msgs){
		printf("left out: %" PRIu64 " message bodies nothing refers to\n", rep.orphan_msgs);
	}
	if(rep.pages_skipped){
		printf("damaged: %" PRIu64 " pages could not be read (what they held is lost)\n", rep.pages_skipped);
	}
	if(rep.journal_kept){
		printf("journal: kept; its records after %" PRIu64 " are applied at the next start\n", rep.journal_mark);
	}else{
		printf("journal: not kept (none, or no readable journal mark)\n");
	}
	printf("Point plugin_opt_db_path at %s (or move it in place of the damaged one) and start the broker.\n", dst);
	rc = stdout_done();
	return rc ? rc : lost || rep.pages_skipped || rep.orphaned_queue || rep.bodiless_queue ? EXIT_PROBLEMS : EXIT_DONE;
}

/* ---- import-sqlite (tools/import_sqlite.c) ---- */

static int cmd_import_sqlite(const struct settings *s)
{
	return import_sqlite(s->a->positional, s->db, s->key_file, s->map_size, s->a->drop_damaged, cli_log);
}

/* ---- commands ---- */

static const struct command commands[] = {
	{"stats", cmd_stats, 0, 0, "stats",
		"Entries and bytes (pages) of each database, data file and map size, the open\n"
		"epoch, the key id the records are sealed under, and the number of records\n"
		"counted by the structure check. Read-only.\n"},
	{"sessions", cmd_sessions, OPT(O_USERNAME) | OPT(O_PREFIX) | OPT(O_JSON), 0,
		"sessions [--username U] [--prefix P] [--json]",
		"One line per session (tab-separated, after a header): client id, username,\n"
		"session expiry interval in seconds (never: does not expire), queued messages,\n"
		"whether a will is stored. --username lists the sessions of one username,\n"
		"--prefix those whose client id starts with P (exit status 1 when a filter\n"
		"matches nothing). --json: one JSON object per line. Read-only.\n"},
	{"queue", cmd_queue, OPT(O_LIMIT) | OPT(O_JSON), 1, "queue CLIENTID [--limit N] [--json]",
		"The client's queued and in-flight messages in delivery order: sequence number,\n"
		"direction, QoS, state, packet id, store id, topic and payload (as text when it\n"
		"is printable UTF-8, else 0x and hex). --limit shows the first N. --json: one\n"
		"JSON object per line, payload in base64. Exit status 1 when the client id has\n"
		"no session and no queue. Read-only.\n"},
	{"verify", cmd_verify, 0, 0, "verify",
		"Decrypts every record of every database, runs the structure check, and checks\n"
		"the references: message bodies nothing references, queue and retained entries\n"
		"whose body is missing, queue entries and subscriptions without a session.\n"
		"Prints a summary; exit status 1 when a record was rejected or a reference is\n"
		"broken. Read-only; while the broker runs, a count may catch a change half-way.\n"},
	{"export", cmd_export, 0, 0, "export",
		"Every record as one JSON object per line on standard output, with \"kind\" one\n"
		"of message, retained, session, subscription, queue, will, and every field of\n"
		"the record (binary fields in base64, 64-bit numbers exact). Exit status 1 when\n"
		"a damaged record could not be exported. Read-only.\n"},
	{"delete-account", cmd_delete_account, OPT(O_USERNAME) | OPT(O_CLIENTID) | OPT(O_PERSONAL) | OPT(O_JSON), 0,
		"delete-account (--username U | --clientid C) [--personal-topics 'PATTERNS'] [--json]",
		"Deletes every session of the username (or the one client id) with its\n"
		"subscriptions, queue and will, the retained messages under the account's\n"
		"personal topics, and then the message bodies no one references any more.\n"
		"PATTERNS (default: plugin_opt_personal_topics of the -c config) are topic\n"
		"filters separated by spaces, %u standing for the username and %c for the\n"
		"client id, e.g. 'users/%u/# devices/%c/#'. Prints what was removed; exit\n"
		"status 1 when nothing matched. Needs the broker stopped (the control API's\n"
		"deleteAccount does the same on a running broker).\n"},
	{"rekey", cmd_rekey, OPT(O_NEW_KEY) | OPT(O_DROP_DAMAGED), 0, "rekey --new-key-file FILE [--drop-damaged]",
		"Re-encrypts every record under the key in FILE (32 random bytes, mode 0600),\n"
		"into a new database in <db>.rekey-new that then atomically takes the old one's\n"
		"place; the old one is removed. Interrupted before that exchange, the old\n"
		"database is untouched; after it, the new one is complete. A damaged record\n"
		"stops the rekey unless --drop-damaged. Afterwards point plugin_opt_key_file at\n"
		"the new key and destroy the old one. Needs the broker stopped.\n"},
	{"compact", cmd_compact, 0, 0, "compact",
		"Rewrites the data file without its free pages (LMDB's compacting copy into\n"
		"<db>.compact-new, exchanged atomically with the old). Records stay sealed as\n"
		"they are. Prints the size before and after. Needs the broker stopped.\n"},
	{"salvage", cmd_salvage, 0, 1, "salvage NEW_DIR",
		"Copies every record of the damaged database in --db that still authenticates\n"
		"into a new database in NEW_DIR (which must not exist or be empty), reading the\n"
		"data file without LMDB so that no damage can stop it: pages that fail a check\n"
		"are skipped and counted, records that do not authenticate are left out and\n"
		"counted, and queued messages whose session was lost are left out. Older\n"
		"versions of records in free pages are never read. The journal's pending\n"
		"records are kept. Exit status 1 when anything was left out. --db is only read;\n"
		"use it on a copy the broker does not run on (plugin_opt_on_damage quarantine\n"
		"moves it aside).\n"},
	{"import-sqlite", cmd_import_sqlite, OPT(O_DROP_DAMAGED), 1, "import-sqlite FILE [--drop-damaged]",
		"Copies the database FILE of Mosquitto's persist-sqlite plugin (schema 1.1,\n"
		"Mosquitto 2.1; stop that broker first) into a new database in --db, which must\n"
		"not exist or be an empty directory: sessions, subscriptions, message bodies,\n"
		"queued messages in order, retained messages. Wills are not copied: the broker\n"
		"published them when it stopped. What the broker would drop at start-up is\n"
		"left out and counted. A row that cannot be converted stops the import\n"
		"(exit status 1, nothing created) unless --drop-damaged. FILE is only read.\n"},
};

static const struct command *find_command(const char *name)
{
	for(size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++){
		if(!strcmp(commands[i].name, name)){
			return &commands[i];
		}
	}
	return NULL;
}

static void command_help(const struct command *c)
{
	printf("usage: persist-lmdb [global options] %s\n\n%s\n"
			"Global options: --db DIR, --key-file FILE, -c/--config mosquitto.conf (see\n"
			"persist-lmdb --help, which also lists the exit status).\n", c->synopsis, c->help);
}

static int parse_limit(const char *v, uint64_t *out)
{
	char *end;

	if(!v || *v < '0' || *v > '9'){
		return -1;
	}
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if(errno || *end || n == 0){
		return -1;
	}
	*out = n;
	return 0;
}

/* Parses options into a; cmd NULL: the global options before the command. */
static int parse_options(int argc, char **argv, const struct command *cmd, struct args *a)
{
	int o, idx;

	while((o = getopt_long(argc, argv, cmd ? ":c:h" : "+:c:h", long_options, &idx)) != -1){
		if(o == '?'){
			if(optopt){
				cli_error("unknown option '-%c'; see persist-lmdb --help", optopt);
			}else{
				cli_error("unknown option '%s'; see persist-lmdb --help", argv[optind - 1]);
			}
			return EXIT_USAGE;
		}
		if(o == ':'){
			cli_error("option '%s' needs a value", argv[optind - 1]);
			return EXIT_USAGE;
		}
		if(o >= O_USERNAME && !(cmd && (cmd->opts & OPT(o)))){
			cli_error("option --%s does not apply %s%s", long_options[idx].name,
					cmd ? "to " : "before the command", cmd ? cmd->name : "");
			return EXIT_USAGE;
		}
		switch(o){
			case O_DB: a->db = optarg; break;
			case O_KEY_FILE: a->key_file = optarg; break;
			case 'c': a->config = optarg; break;
			case 'h': a->help = true; break;
			case O_USERNAME: a->username = optarg; break;
			case O_PREFIX: a->prefix = optarg; break;
			case O_JSON: a->json = true; break;
			case O_LIMIT:
				if(parse_limit(optarg, &a->limit)){
					cli_error("--limit '%s' is not a positive number", optarg);
					return EXIT_USAGE;
				}
				a->has_limit = true;
				break;
			case O_CLIENTID: a->clientid = optarg; break;
			case O_PERSONAL: a->personal_topics = optarg; break;
			case O_NEW_KEY: a->new_key_file = optarg; break;
			case O_DROP_DAMAGED: a->drop_damaged = true; break;
		}
	}
	return EXIT_DONE;
}

/* Fills s from the options and the config file; *db_buf owns a derived db path. */
static int resolve(const struct args *a, struct mosq_conf *conf, struct settings *s, char **db_buf)
{
	memset(s, 0, sizeof(*s));
	s->a = a;
	if(a->config && mosq_conf_read(a->config, conf)){
		return EXIT_USAGE;
	}
	s->db = a->db ? a->db : conf->db_path;
	if(!s->db && conf->persistence_location){
		const char *pl = conf->persistence_location;
		size_t n = strlen(pl);
		*db_buf = sibling(pl, n && pl[n - 1] == '/' ? "persist-lmdb" : "/persist-lmdb");
		if(!*db_buf){
			cli_error("out of memory");
			return EXIT_USAGE;
		}
		s->db = *db_buf;
	}
	if(!s->db){
		cli_error("no database: give --db DIR, or -c with a mosquitto.conf that sets "
				"plugin_opt_db_path or persistence_location");
		return EXIT_USAGE;
	}
	s->key_file = a->key_file ? a->key_file : conf->key_file;
	if(!s->key_file){
		cli_error("no key: give --key-file FILE, or -c with a mosquitto.conf that sets plugin_opt_key_file");
		return EXIT_USAGE;
	}
	s->personal_topics = a->personal_topics ? a->personal_topics : conf->personal_topics;
	if(s->personal_topics && personal_patterns_problem(s->personal_topics)){
		cli_error("personal topics '%s': %s", s->personal_topics, personal_patterns_problem(s->personal_topics));
		return EXIT_USAGE;
	}
	if(conf->map_size && parse_size(conf->map_size, &s->map_size)){
		cli_error("plugin_opt_map_size '%s' in %s is not a size", conf->map_size, a->config);
		return EXIT_USAGE;
	}
	return EXIT_DONE;
}

int main(int argc, char **argv)
{
	struct args a = {0};
	struct mosq_conf conf = {0};
	struct settings s;
	const struct command *cmd;
	char *db_buf = NULL, *real_db = NULL;
	int rc;

	opterr = 0;
	rc = parse_options(argc, argv, NULL, &a);
	if(rc){
		return rc;
	}
	if(optind >= argc){
		fputs(global_help, a.help ? stdout : stderr);
		return a.help ? EXIT_DONE : EXIT_USAGE;
	}
	cmd = find_command(argv[optind]);
	if(!cmd){
		cli_error("unknown command '%s'; see persist-lmdb --help", argv[optind]);
		return EXIT_USAGE;
	}
	argc -= optind;
	argv += optind;
	optind = 0; /* glibc: start over, at argv[1] */
	rc = parse_options(argc, argv, cmd, &a);
	if(rc){
		return rc;
	}
	if(a.help){
		command_help(cmd);
		return stdout_done();
	}
	if(argc - optind != cmd->positional){
		cli_error("usage: persist-lmdb [global options] %s", cmd->synopsis);
		return EXIT_USAGE;
	}
	a.positional = cmd->positional ? argv[optind] : NULL;
	if(cmd->run == cmd_rekey && !a.new_key_file){
		cli_error("rekey needs --new-key-file FILE");
		return EXIT_USAGE;
	}
	rc = resolve(&a, &conf, &s, &db_buf);
	if(rc == EXIT_DONE && (cmd->run == cmd_rekey || cmd->run == cmd_compact)){
		/* The directory itself is exchanged, not a symlink to it. */
		real_db = realpath(s.db, NULL);
		if(!real_db){
			cli_error("no database in %s: %s", s.db, strerror(errno));
			rc = EXIT_DB;
		}
		s.db = real_db;
	}
	if(rc == EXIT_DONE){
		rc = cmd->run(&s);
	}
	free(real_db);
	free(db_buf);
	mosq_conf_free(&conf);
	return rc;
}
