/* Validation of control API requests ($CONTROL/persist-lmdb/v1,
 * docs/control-api.md), apart from the broker so that unit tests and a fuzz
 * target can drive it: the plugin parses each request payload with
 * ctl_payload_parse (the envelope as Mosquitto's dynamic-security reads
 * it, then each command) and asks ctl_user_allowed who may send one. */
#ifndef PERSIST_LMDB_CONTROL_REQ_H
#define PERSIST_LMDB_CONTROL_REQ_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* Room for a client id of the protocol's 65,535 bytes written with \u
 * escapes (6 bytes each), twice over. */
#define CTL_MAX_REQUEST_BYTES (1024 * 1024)
#define CTL_TOO_LARGE "Request too large (at most 1048576 bytes)"
/* cJSON would cut such a string at the NUL: "alice\u0000x" would name alice. */
#define CTL_NUL_IN_STRING "Strings must not hold a NUL character (\\u0000)"
/* The response's "command" when a request has no usable command name. */
#define CTL_UNKNOWN_NAME "Unknown command"
#define CTL_OFFSET_MAX 2147483647
#define CTL_COUNT_DEFAULT 100
#define CTL_COUNT_MAX 1000

enum ctl_command {
	CTL_UNKNOWN,        /* rejected before the command was recognised */
	CTL_DELETE_ACCOUNT,
	CTL_LIST_SESSIONS,
	CTL_GET_SESSION,
	CTL_PURGE_QUEUE,
	CTL_GET_STATS,
};

enum ctl_status {
	CTL_OK,
	CTL_REJECT,       /* answered with the error; the next commands still run */
	CTL_REJECT_STOP,  /* answered with the error; Mosquitto runs no later command */
};

/* One command. The strings point into the cJSON tree it came from (or are
 * static); NULL when absent. A rejected command has only command (when its
 * name was known), name, correlation_data and error set reliably. */
struct ctl_request {
	enum ctl_command command;
	const char *name;              /* the response's "command" */
	const char *correlation_data;
	const char *error;             /* NULL when valid, else the reply's sentence */
	/* deleteAccount: exactly one of username and clientid.
	 * listSessions: optional username, clientid_prefix, offset, count.
	 * getSession, purgeQueue: clientid. getStats: nothing. */
	const char *username;
	const char *clientid;
	const char *clientid_prefix;
	int offset;                    /* 0 .. CTL_OFFSET_MAX, default 0 */
	int count;                     /* 0 .. CTL_COUNT_MAX, default CTL_COUNT_DEFAULT */
};

/* Validates one element of "commands": the checks Mosquitto makes before
 * handing a command to the plugin (an object, a string "command", a string
 * "correlationData" if any), then the command's own members. Members not
 * named above are ignored. */
enum ctl_status ctl_request_parse(const cJSON *command, struct ctl_request *req);

/* A whole request payload: what the plugin answers, one entry per response. */
struct ctl_batch {
	cJSON *tree;                   /* owns the strings of reqs */
	struct ctl_request *reqs;
	size_t n;
};

/* Whether a client with this username (NULL: none) may use the API under
 * plugin_opt_control_users users (NULL: not set, the API is off): its
 * username is one of the space-separated names, or users is "*" and it has
 * one. A client without a username never may. */
bool ctl_user_allowed(const char *users, const char *username);

/* Parses {"commands":[...]} as Mosquitto's control plugins do: a payload over
 * CTL_MAX_REQUEST_BYTES, a string holding a NUL (raw or \u0000: refused,
 * not cut), invalid JSON or a missing "commands" array gives a
 * single rejected entry; processing stops after a CTL_REJECT_STOP entry.
 * Returns 0, or -1 when out of memory (b is then empty). */
int ctl_payload_parse(const void *payload, size_t len, struct ctl_batch *b);
void ctl_batch_free(struct ctl_batch *b);

#endif
