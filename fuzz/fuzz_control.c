/* Control API request parsing ($CONTROL/persist-lmdb/v1).
 *
 * Input: a request payload, as a client publishes it.
 *
 * ctl_payload_parse must not crash or leak, and must refuse a length over
 * the limit without reading the payload. Each entry of the result is either
 * accepted or carries a non-empty error; only the last may have stopped the
 * request. An accepted command has what its command requires, non-empty,
 * nothing its command does not take, and counts within bounds; whether a
 * command is accepted agrees with a reference validation of its members.
 * Parsing the same bytes again gives the same result, and an accepted
 * command written out again parses to the same request. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control_req.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {
	[CTL_DELETE_ACCOUNT] = "deleteAccount",
	[CTL_LIST_SESSIONS] = "listSessions",
	[CTL_GET_SESSION] = "getSession",
	[CTL_PURGE_QUEUE] = "purgeQueue",
	[CTL_GET_STATS] = "getStats",
};

static bool str_eq(const char *a, const char *b)
{
	return (!a || !b) ? a == b : strcmp(a, b) == 0;
}

static bool nonempty(const char *s)
{
	return s && *s;
}

/* 1 when the member is there and valid, 0 when absent, -1 when invalid. */
static int ref_string(const cJSON *cmd, const char *name)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(cmd, name);

	if(!j){
		return 0;
	}
	return cJSON_IsString(j) && j->valuestring[0] ? 1 : -1;
}

static int ref_count(const cJSON *cmd, const char *name, double max)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(cmd, name);

	if(!j){
		return 0;
	}
	if(!cJSON_IsNumber(j) || !(j->valuedouble >= 0 && j->valuedouble <= max)){
		return -1;
	}
	return j->valuedouble == (double)(long long)j->valuedouble ? 1 : -1;
}

/* Whether a recognised command's members are valid, from the documented
 * rules (docs/control-api.md). */
static bool ref_valid(enum ctl_command command, const cJSON *cmd)
{
	int u, c;

	switch(command){
		case CTL_DELETE_ACCOUNT:
			u = ref_string(cmd, "username");
			c = ref_string(cmd, "clientid");
			return u >= 0 && c >= 0 && u + c == 1;
		case CTL_LIST_SESSIONS:
			return ref_string(cmd, "username") >= 0 && ref_string(cmd, "clientidPrefix") >= 0
				&& ref_count(cmd, "offset", CTL_OFFSET_MAX) >= 0
				&& ref_count(cmd, "count", CTL_COUNT_MAX) >= 0;
		case CTL_GET_SESSION:
		case CTL_PURGE_QUEUE:
			return ref_string(cmd, "clientid") == 1;
		case CTL_GET_STATS:
			return true;
		case CTL_UNKNOWN:
			break;
	}
	return false;
}

static void check_accepted(const struct ctl_request *r)
{
	FUZZ_CHECK(r->command >= CTL_DELETE_ACCOUNT && r->command <= CTL_GET_STATS);
	FUZZ_CHECK(!strcmp(r->name, names[r->command]));
	FUZZ_CHECK(r->offset >= 0 && r->offset <= CTL_OFFSET_MAX);
	FUZZ_CHECK(r->count >= 0 && r->count <= CTL_COUNT_MAX);
	FUZZ_CHECK(!r->username || *r->username);
	FUZZ_CHECK(!r->clientid || *r->clientid);
	FUZZ_CHECK(!r->clientid_prefix || *r->clientid_prefix);
	switch(r->command){
		case CTL_DELETE_ACCOUNT:
			FUZZ_CHECK(nonempty(r->username) != nonempty(r->clientid));
			FUZZ_CHECK(!r->clientid_prefix && r->offset == 0 && r->count == CTL_COUNT_DEFAULT);
			break;
		case CTL_LIST_SESSIONS:
			FUZZ_CHECK(!r->clientid);
			break;
		case CTL_GET_SESSION:
		case CTL_PURGE_QUEUE:
			FUZZ_CHECK(nonempty(r->clientid));
			FUZZ_CHECK(!r->username && !r->clientid_prefix && r->offset == 0 && r->count == CTL_COUNT_DEFAULT);
			break;
		case CTL_GET_STATS:
			FUZZ_CHECK(!r->username && !r->clientid && !r->clientid_prefix);
			FUZZ_CHECK(r->offset == 0 && r->count == CTL_COUNT_DEFAULT);
			break;
		case CTL_UNKNOWN:
			FUZZ_CHECK(r->command != CTL_UNKNOWN);
			break;
	}
}

static bool same_request(const struct ctl_request *a, const struct ctl_request *b)
{
	return a->command == b->command && str_eq(a->name, b->name)
		&& str_eq(a->correlation_data, b->correlation_data) && str_eq(a->error, b->error)
		&& (a->error || (str_eq(a->username, b->username) && str_eq(a->clientid, b->clientid)
			&& str_eq(a->clientid_prefix, b->clientid_prefix)
			&& a->offset == b->offset && a->count == b->count));
}

/* The batch against the payload's own "commands" array. */
static void check_batch(const struct ctl_batch *b)
{
	const cJSON *commands = b->tree ? cJSON_GetObjectItem(b->tree, "commands") : NULL;
	const cJSON *c;
	size_t i = 0;

	for(size_t k = 0; k < b->n; k++){
		FUZZ_CHECK(b->reqs[k].name != NULL);
		FUZZ_CHECK(!b->reqs[k].error || b->reqs[k].error[0]);
	}
	if(!cJSON_IsArray(commands)){
		FUZZ_CHECK(b->n == 1 && b->reqs[0].error && b->reqs[0].command == CTL_UNKNOWN);
		return;
	}
	cJSON_ArrayForEach(c, commands){
		struct ctl_request again;
		enum ctl_status st = ctl_request_parse(c, &again);
		const struct ctl_request *r = &b->reqs[i];

		FUZZ_CHECK(i < b->n);
		FUZZ_CHECK(same_request(r, &again));
		FUZZ_CHECK((st == CTL_OK) == !r->error);
		if(r->command != CTL_UNKNOWN){
			FUZZ_CHECK(!strcmp(r->name, names[r->command]));
			FUZZ_CHECK(ref_valid(r->command, c) == !r->error);
		}
		if(!r->error){
			check_accepted(r);
		}
		i++;
		if(st == CTL_REJECT_STOP){
			FUZZ_CHECK(r->command == CTL_UNKNOWN && (cJSON_IsObject(c) || !strcmp(r->name, CTL_UNKNOWN_NAME)));
			break;
		}
	}
	FUZZ_CHECK(i == b->n);
}

/* An accepted command written out by itself parses to the same request. */
static void check_round_trip(const struct ctl_request *r)
{
	cJSON *tree = cJSON_CreateObject(), *cmds, *o;
	struct ctl_batch again;
	char *text;

	FUZZ_CHECK(tree && (cmds = cJSON_AddArrayToObject(tree, "commands")));
	FUZZ_CHECK((o = cJSON_CreateObject()) && cJSON_AddItemToArray(cmds, o));
	FUZZ_CHECK(cJSON_AddStringToObject(o, "command", r->name));
	FUZZ_CHECK(!r->correlation_data || cJSON_AddStringToObject(o, "correlationData", r->correlation_data));
	FUZZ_CHECK(!r->username || cJSON_AddStringToObject(o, "username", r->username));
	FUZZ_CHECK(!r->clientid || cJSON_AddStringToObject(o, "clientid", r->clientid));
	FUZZ_CHECK(!r->clientid_prefix || cJSON_AddStringToObject(o, "clientidPrefix", r->clientid_prefix));
	if(r->command == CTL_LIST_SESSIONS){
		FUZZ_CHECK(cJSON_AddNumberToObject(o, "offset", r->offset));
		FUZZ_CHECK(cJSON_AddNumberToObject(o, "count", r->count));
	}
	text = cJSON_PrintUnformatted(tree);
	FUZZ_CHECK(text != NULL);
	cJSON_Delete(tree);
	FUZZ_CHECK(ctl_payload_parse(text, strlen(text), &again) == 0);
	FUZZ_CHECK(again.n == 1 && same_request(r, &again.reqs[0]));
	ctl_batch_free(&again);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_batch a, b;
	uint8_t *copy;

	/* Over the limit: refused from the length alone (reading data beyond
	 * size would be caught by AddressSanitizer). */
	FUZZ_CHECK(ctl_payload_parse(data, size + CTL_MAX_REQUEST_BYTES + 1, &a) == 0);
	FUZZ_CHECK(!a.tree && a.n == 1 && !strcmp(a.reqs[0].error, CTL_TOO_LARGE));
	ctl_batch_free(&a);
	if(size > CTL_MAX_REQUEST_BYTES){
		return 0;
	}

	FUZZ_CHECK(ctl_payload_parse(data, size, &a) == 0);
	check_batch(&a);

	/* The same bytes in another buffer: the same answer. */
	copy = malloc(size ? size : 1);
	FUZZ_CHECK(copy != NULL);
	memcpy(copy, data, size);
	FUZZ_CHECK(ctl_payload_parse(copy, size, &b) == 0);
	FUZZ_CHECK(a.n == b.n);
	for(size_t i = 0; i < a.n; i++){
		FUZZ_CHECK(same_request(&a.reqs[i], &b.reqs[i]));
		if(!a.reqs[i].error){
			check_round_trip(&a.reqs[i]);
		}
	}
	ctl_batch_free(&b);
	ctl_batch_free(&b); /* idempotent */
	free(copy);
	ctl_batch_free(&a);
	return 0;
}
