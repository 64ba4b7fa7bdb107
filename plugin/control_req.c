/* Control API request validation (docs/control-api.md): which members each
 * command takes, and the error sentence for each way a request is wrong. */
#include "control_req.h"

#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* A member and the sentence that rejects it. The sentences are static, so a
 * request carries its error without a buffer. */
struct member {
	const char *name;
	const char *invalid;
	const char *too_large;
};

/* An MQTT string (client id, username, topic) is at most 65535 bytes: a
 * longer one names nothing that can exist. */
#define MQTT_STRING_MAX 65535

#define STRING_MEMBER(n) {n, "'" n "' must be a non-empty string", \
	"'" n "' is too large (an MQTT string is at most " STR(MQTT_STRING_MAX) " bytes)"}
#define COUNT_MEMBER(n, max) {n, "'" n "' must be a whole number from 0 to " STR(max), NULL}

static const struct member m_username = STRING_MEMBER("username");
static const struct member m_clientid = STRING_MEMBER("clientid");
static const struct member m_prefix = STRING_MEMBER("clientidPrefix");
static const struct member m_offset = COUNT_MEMBER("offset", CTL_OFFSET_MAX);
static const struct member m_count = COUNT_MEMBER("count", CTL_COUNT_MAX);

static enum ctl_status reject(struct ctl_request *req, const char *error)
{
	req->error = error;
	return CTL_REJECT;
}

/* An optional string member: 0 when absent, 1 when present, -1 (error set)
 * when present but not a non-empty string of at most MQTT_STRING_MAX bytes. */
static int get_string(struct ctl_request *req, const cJSON *command, const struct member *m,
		const char **out)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(command, m->name);
	const char *s;

	if(!j){
		return 0;
	}
	s = cJSON_GetStringValue(j);
	if(!s || !*s){
		reject(req, m->invalid);
		return -1;
	}
	if(strlen(s) > MQTT_STRING_MAX){
		reject(req, m->too_large);
		return -1;
	}
	*out = s;
	return 1;
}

/* An optional whole number from 0 to max; -1 (error set) when not one. */
static int get_count(struct ctl_request *req, const cJSON *command, const struct member *m, int max,
		int *out)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(command, m->name);

	if(!j){
		return 0;
	}
	/* The range before the conversion (NaN fails it too): converting a
	 * double outside int's range to int is undefined. */
	if(!cJSON_IsNumber(j) || !(j->valuedouble >= 0 && j->valuedouble <= max)
			|| j->valuedouble != (int)j->valuedouble){
		reject(req, m->invalid);
		return -1;
	}
	*out = (int)j->valuedouble;
	return 1;
}

static enum ctl_status delete_account(struct ctl_request *req, const cJSON *command)
{
	int u = get_string(req, command, &m_username, &req->username);
	int c = u < 0 ? -1 : get_string(req, command, &m_clientid, &req->clientid);

	if(u < 0 || c < 0){
		return CTL_REJECT;
	}
	if(u + c != 1){
		return reject(req, "Give exactly one of 'username' and 'clientid'");
	}
	return CTL_OK;
}

static enum ctl_status list_sessions(struct ctl_request *req, const cJSON *command)
{
	if(get_string(req, command, &m_username, &req->username) < 0
			|| get_string(req, command, &m_prefix, &req->clientid_prefix) < 0
			|| get_count(req, command, &m_offset, CTL_OFFSET_MAX, &req->offset) < 0
			|| get_count(req, command, &m_count, CTL_COUNT_MAX, &req->count) < 0){
		return CTL_REJECT;
	}
	return CTL_OK;
}

static enum ctl_status one_session(struct ctl_request *req, const cJSON *command)
{
	int n = get_string(req, command, &m_clientid, &req->clientid);

	if(n < 0){
		return CTL_REJECT;
	}
	return n == 0 ? reject(req, "'clientid' is required") : CTL_OK;
}

static enum ctl_status no_members(struct ctl_request *req, const cJSON *command)
{
	(void)req;
	(void)command;
	return CTL_OK;
}

enum ctl_status ctl_request_parse(const cJSON *command, struct ctl_request *req)
{
	static const struct {
		const char *name;
		enum ctl_command command;
		enum ctl_status (*parse)(struct ctl_request *req, const cJSON *command);
	} commands[] = {
		{"deleteAccount", CTL_DELETE_ACCOUNT, delete_account},
		{"listSessions", CTL_LIST_SESSIONS, list_sessions},
		{"getSession", CTL_GET_SESSION, one_session},
		{"purgeQueue", CTL_PURGE_QUEUE, one_session},
		{"getStats", CTL_GET_STATS, no_members},
	};
	const cJSON *j;

	*req = (struct ctl_request){.command = CTL_UNKNOWN, .name = CTL_UNKNOWN_NAME, .count = CTL_COUNT_DEFAULT};
	/* Mosquitto's checks, in its order and words, with its case-insensitive
	 * lookup of "command" and "correlationData": the plugin only ever sees
	 * commands that pass them, and must read the same name. */
	if(!cJSON_IsObject(command)){
		req->error = "Command not an object";
		return CTL_REJECT_STOP;
	}
	req->name = cJSON_GetStringValue(cJSON_GetObjectItem(command, "command"));
	if(!req->name){
		req->name = CTL_UNKNOWN_NAME;
		req->error = "Missing command";
		return CTL_REJECT_STOP;
	}
	j = cJSON_GetObjectItem(command, "correlationData");
	if(j){
		if(!cJSON_IsString(j)){
			req->error = "Invalid correlationData data type.";
			return CTL_REJECT_STOP;
		}
		req->correlation_data = j->valuestring;
	}

	for(size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++){
		if(!strcmp(req->name, commands[i].name)){
			req->command = commands[i].command;
			return commands[i].parse(req, command);
		}
	}
	return reject(req, "Unknown command");
}

bool ctl_user_allowed(const char *users, const char *username)
{
	size_t n;

	if(!users || !username || !*username){
		return false;
	}
	n = strlen(username);
	while(*users){
		size_t len;

		users += strspn(users, " \t");
		len = strcspn(users, " \t");
		if((len == 1 && *users == '*') || (len == n && !memcmp(users, username, n))){
			return true;
		}
		users += len;
	}
	return false;
}

/* Whether a JSON string in p holds a NUL, raw or escaped as \u0000. */
static bool string_holds_nul(const char *p, size_t len)
{
	bool in = false;

	for(size_t i = 0; i < len; i++){
		if(!in){
			in = p[i] == '"';
		}else if(p[i] == '\0'){
			return true;
		}else if(p[i] == '"'){
			in = false;
		}else if(p[i] == '\\' && i + 1 < len){
			if(p[i + 1] == 'u' && i + 5 < len && !memcmp(p + i + 2, "0000", 4)){
				return true;
			}
			i++;
		}
	}
	return false;
}

/* b holds one rejected entry: an error about the whole payload. */
static int payload_error(struct ctl_batch *b, const char *error)
{
	b->reqs = malloc(sizeof(*b->reqs));
	if(!b->reqs){
		ctl_batch_free(b);
		return -1;
	}
	b->reqs[0] = (struct ctl_request){.command = CTL_UNKNOWN, .name = CTL_UNKNOWN_NAME, .error = error};
	b->n = 1;
	return 0;
}

int ctl_payload_parse(const void *payload, size_t len, struct ctl_batch *b)
{
	const cJSON *commands, *c;
	int n;

	*b = (struct ctl_batch){0};
	/* The plugin's limit, checked before Mosquitto parses anything. */
	if(len > CTL_MAX_REQUEST_BYTES){
		return payload_error(b, CTL_TOO_LARGE);
	}
	if(string_holds_nul(payload, len)){
		return payload_error(b, CTL_NUL_IN_STRING);
	}
	/* Then the envelope, as mosquitto_control_generic_callback reads it
	 * (its error sentences too), accepting anything after the JSON value. */
	b->tree = cJSON_ParseWithLength(payload, len);
	if(!b->tree){
		return payload_error(b, "Payload not valid JSON");
	}
	commands = cJSON_GetObjectItem(b->tree, "commands");
	if(!cJSON_IsArray(commands)){
		return payload_error(b, "Invalid/missing commands");
	}
	n = cJSON_GetArraySize(commands);
	b->reqs = malloc((n > 0 ? (size_t)n : 1) * sizeof(*b->reqs));
	if(!b->reqs){
		ctl_batch_free(b);
		return -1;
	}
	cJSON_ArrayForEach(c, commands){
		if(ctl_request_parse(c, &b->reqs[b->n++]) == CTL_REJECT_STOP){
			break;
		}
	}
	return 0;
}

void ctl_batch_free(struct ctl_batch *b)
{
	cJSON_Delete(b->tree);
	free(b->reqs);
	*b = (struct ctl_batch){0};
}
