/* Control API request validation: ctl_request_parse on each command's
 * members, and ctl_payload_parse on whole payloads. The error sentences are
 * the ones the broker sends back (test/integration/test_control_api.py). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control_req.h"

#define OFFSET_ERROR "'offset' must be a whole number from 0 to 2147483647"
#define COUNT_ERROR "'count' must be a whole number from 0 to 1000"
#define ONE_OF_ERROR "Give exactly one of 'username' and 'clientid'"

/* Parses one command object (JSON text); the tree stays in *tree for the
 * strings of req. */
static enum ctl_status parse_cmd(const char *json, cJSON **tree, struct ctl_request *req)
{
	*tree = cJSON_Parse(json);
	assert_non_null(*tree);
	memset(req, 0x5a, sizeof(*req)); /* ctl_request_parse must set everything */
	return ctl_request_parse(*tree, req);
}

/* The command is accepted; its tree is returned for the caller to free. */
static cJSON *accept_cmd(const char *json, struct ctl_request *req)
{
	cJSON *tree;

	if(parse_cmd(json, &tree, req) != CTL_OK){
		fail_msg("%s: rejected with '%s'", json, req->error);
	}
	assert_null(req->error);
	return tree;
}

static void expect_reject(const char *json, enum ctl_status want, const char *error)
{
	struct ctl_request req;
	cJSON *tree;
	enum ctl_status st = parse_cmd(json, &tree, &req);

	if(st != want || !req.error || strcmp(req.error, error) != 0){
		fail_msg("%s: status %d, error '%s'; expected %d, '%s'", json, (int)st,
				req.error ? req.error : "(none)", (int)want, error);
	}
	cJSON_Delete(tree);
}

static void test_delete_account(void **state)
{
	struct ctl_request req;
	cJSON *tree;

	(void)state;
	tree = accept_cmd("{\"command\":\"deleteAccount\",\"username\":\"alice\",\"correlationData\":\"erase-42\"}", &req);
	assert_int_equal(req.command, CTL_DELETE_ACCOUNT);
	assert_string_equal(req.name, "deleteAccount");
	assert_string_equal(req.username, "alice");
	assert_null(req.clientid);
	assert_null(req.clientid_prefix);
	assert_string_equal(req.correlation_data, "erase-42");
	cJSON_Delete(tree);

	tree = accept_cmd("{\"command\":\"deleteAccount\",\"clientid\":\"alice-phone\",\"clientidPrefix\":5}", &req);
	assert_null(req.username);
	assert_string_equal(req.clientid, "alice-phone");
	assert_null(req.clientid_prefix); /* not a member of deleteAccount: ignored */
	assert_null(req.correlation_data);
	cJSON_Delete(tree);

	expect_reject("{\"command\":\"deleteAccount\"}", CTL_REJECT, ONE_OF_ERROR);
	expect_reject("{\"command\":\"deleteAccount\",\"username\":\"a\",\"clientid\":\"b\"}", CTL_REJECT, ONE_OF_ERROR);
	expect_reject("{\"command\":\"deleteAccount\",\"username\":7}", CTL_REJECT,
			"'username' must be a non-empty string");
	expect_reject("{\"command\":\"deleteAccount\",\"username\":\"\"}", CTL_REJECT,
			"'username' must be a non-empty string");
	expect_reject("{\"command\":\"deleteAccount\",\"username\":null}", CTL_REJECT,
			"'username' must be a non-empty string");
	expect_reject("{\"command\":\"deleteAccount\",\"clientid\":[\"x\"]}", CTL_REJECT,
			"'clientid' must be a non-empty string");
	expect_reject("{\"command\":\"deleteAccount\",\"username\":\"a\",\"clientid\":false}", CTL_REJECT,
			"'clientid' must be a non-empty string");
	/* Both wrong: one error, the username's. */
	expect_reject("{\"command\":\"deleteAccount\",\"username\":1,\"clientid\":2}", CTL_REJECT,
			"'username' must be a non-empty string");
	/* Members are case-sensitive: "Username" is not "username". */
	expect_reject("{\"command\":\"deleteAccount\",\"Username\":\"a\"}", CTL_REJECT, ONE_OF_ERROR);
}

static void test_list_sessions(void **state)
{
	struct ctl_request req;
	cJSON *tree;

	(void)state;
	tree = accept_cmd("{\"command\":\"listSessions\"}", &req);
	assert_int_equal(req.command, CTL_LIST_SESSIONS);
	assert_null(req.username);
	assert_null(req.clientid_prefix);
	assert_null(req.clientid);
	assert_int_equal(req.offset, 0);
	assert_int_equal(req.count, CTL_COUNT_DEFAULT);
	assert_int_equal(req.count, 100);
	cJSON_Delete(tree);

	tree = accept_cmd("{\"command\":\"listSessions\",\"username\":\"alice\",\"clientidPrefix\":\"alice-\","
			"\"offset\":2147483647,\"count\":1000,\"clientid\":\"ignored\"}", &req);
	assert_string_equal(req.username, "alice");
	assert_string_equal(req.clientid_prefix, "alice-");
	assert_null(req.clientid);
	assert_int_equal(req.offset, 2147483647);
	assert_int_equal(req.count, 1000);
	cJSON_Delete(tree);

	/* Whole numbers in other spellings. */
	tree = accept_cmd("{\"command\":\"listSessions\",\"offset\":-0,\"count\":1e3}", &req);
	assert_int_equal(req.offset, 0);
	assert_int_equal(req.count, 1000);
	cJSON_Delete(tree);
	tree = accept_cmd("{\"command\":\"listSessions\",\"offset\":2.0,\"count\":0}", &req);
	assert_int_equal(req.offset, 2);
	assert_int_equal(req.count, 0);
	cJSON_Delete(tree);

	expect_reject("{\"command\":\"listSessions\",\"offset\":2147483648}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"offset\":-1}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"offset\":1.5}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"offset\":1e999}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"offset\":-1e999}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"offset\":\"1\"}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"offset\":null}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"count\":1001}", CTL_REJECT, COUNT_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"count\":-1}", CTL_REJECT, COUNT_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"count\":0.5}", CTL_REJECT, COUNT_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"count\":true}", CTL_REJECT, COUNT_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"count\":[5]}", CTL_REJECT, COUNT_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"username\":\"\"}", CTL_REJECT,
			"'username' must be a non-empty string");
	expect_reject("{\"command\":\"listSessions\",\"clientidPrefix\":{}}", CTL_REJECT,
			"'clientidPrefix' must be a non-empty string");
	/* The first wrong member in the order username, clientidPrefix, offset, count. */
	expect_reject("{\"command\":\"listSessions\",\"count\":-1,\"offset\":-1}", CTL_REJECT, OFFSET_ERROR);
	expect_reject("{\"command\":\"listSessions\",\"count\":-1,\"clientidPrefix\":1,\"username\":1}", CTL_REJECT,
			"'username' must be a non-empty string");
}

static void test_one_session(void **state)
{
	static const struct {
		const char *name;
		enum ctl_command command;
	} cmds[] = {{"getSession", CTL_GET_SESSION}, {"purgeQueue", CTL_PURGE_QUEUE}};
	struct ctl_request req;
	char json[256];
	cJSON *tree;

	(void)state;
	for(size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++){
		snprintf(json, sizeof(json), "{\"command\":\"%s\",\"clientid\":\"bob-phone\",\"username\":\"x\","
				"\"count\":-1}", cmds[i].name);
		tree = accept_cmd(json, &req);
		assert_int_equal(req.command, cmds[i].command);
		assert_string_equal(req.name, cmds[i].name);
		assert_string_equal(req.clientid, "bob-phone");
		assert_null(req.username); /* not a member of these commands: ignored */
		assert_null(req.clientid_prefix);
		assert_int_equal(req.count, CTL_COUNT_DEFAULT);
		cJSON_Delete(tree);

		snprintf(json, sizeof(json), "{\"command\":\"%s\"}", cmds[i].name);
		expect_reject(json, CTL_REJECT, "'clientid' is required");
		snprintf(json, sizeof(json), "{\"command\":\"%s\",\"clientID\":\"c\"}", cmds[i].name);
		expect_reject(json, CTL_REJECT, "'clientid' is required");
		snprintf(json, sizeof(json), "{\"command\":\"%s\",\"clientid\":\"\"}", cmds[i].name);
		expect_reject(json, CTL_REJECT, "'clientid' must be a non-empty string");
		snprintf(json, sizeof(json), "{\"command\":\"%s\",\"clientid\":null}", cmds[i].name);
		expect_reject(json, CTL_REJECT, "'clientid' must be a non-empty string");
		snprintf(json, sizeof(json), "{\"command\":\"%s\",\"clientid\":42}", cmds[i].name);
		expect_reject(json, CTL_REJECT, "'clientid' must be a non-empty string");
	}
}

static void test_get_stats(void **state)
{
	struct ctl_request req;
	cJSON *tree;

	(void)state;
	tree = accept_cmd("{\"command\":\"getStats\",\"clientid\":\"\",\"count\":-1,\"x\":[{}]}", &req);
	assert_int_equal(req.command, CTL_GET_STATS);
	assert_null(req.username);
	assert_null(req.clientid);
	assert_null(req.clientid_prefix);
	assert_int_equal(req.offset, 0);
	assert_int_equal(req.count, CTL_COUNT_DEFAULT);
	cJSON_Delete(tree);
}

/* What Mosquitto checks before a command reaches the plugin, and unknown
 * command names. */
static void test_command_names(void **state)
{
	struct ctl_request req;
	cJSON *tree;

	(void)state;
	assert_int_equal(parse_cmd("{\"command\":\"dropEverything\",\"correlationData\":\"c1\"}", &tree, &req), CTL_REJECT);
	assert_int_equal(req.command, CTL_UNKNOWN);
	assert_string_equal(req.name, "dropEverything");
	assert_string_equal(req.error, "Unknown command");
	assert_string_equal(req.correlation_data, "c1");
	cJSON_Delete(tree);
	expect_reject("{\"command\":\"getstats\"}", CTL_REJECT, "Unknown command");
	expect_reject("{\"command\":\"\"}", CTL_REJECT, "Unknown command");

	/* "command" and "correlationData" are found whatever their case, as
	 * Mosquitto finds them; the first of duplicates counts. */
	tree = accept_cmd("{\"COMMAND\":\"getStats\",\"correlationdata\":\"c2\",\"command\":\"x\"}", &req);
	assert_string_equal(req.name, "getStats");
	assert_string_equal(req.correlation_data, "c2");
	cJSON_Delete(tree);
	tree = accept_cmd("{\"command\":\"getSession\",\"clientid\":\"first\",\"clientid\":\"second\"}", &req);
	assert_string_equal(req.clientid, "first");
	cJSON_Delete(tree);

	assert_int_equal(parse_cmd("\"getStats\"", &tree, &req), CTL_REJECT_STOP);
	assert_string_equal(req.error, "Command not an object");
	assert_string_equal(req.name, CTL_UNKNOWN_NAME);
	assert_int_equal(req.command, CTL_UNKNOWN);
	cJSON_Delete(tree);
	expect_reject("[{\"command\":\"getStats\"}]", CTL_REJECT_STOP, "Command not an object");
	expect_reject("null", CTL_REJECT_STOP, "Command not an object");
	expect_reject("{}", CTL_REJECT_STOP, "Missing command");
	expect_reject("{\"command\":5}", CTL_REJECT_STOP, "Missing command");
	assert_int_equal(parse_cmd("{\"command\":\"getStats\",\"correlationData\":5}", &tree, &req), CTL_REJECT_STOP);
	assert_string_equal(req.error, "Invalid correlationData data type.");
	assert_string_equal(req.name, "getStats");
	assert_null(req.correlation_data);
	cJSON_Delete(tree);
	assert_int_equal(ctl_request_parse(NULL, &req), CTL_REJECT_STOP);
	assert_string_equal(req.error, "Command not an object");
}

static void parse_payload(const char *text, struct ctl_batch *b)
{
	memset(b, 0x5a, sizeof(*b));
	assert_int_equal(ctl_payload_parse(text, strlen(text), b), 0);
}

static void expect_payload_error(const char *text, const char *error)
{
	struct ctl_batch b;

	parse_payload(text, &b);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.reqs[0].error, error);
	assert_string_equal(b.reqs[0].name, CTL_UNKNOWN_NAME);
	assert_null(b.reqs[0].correlation_data);
	ctl_batch_free(&b);
}

/* Who may use the API: only the named users, or with * anyone with a
 * username; never a client without one, never anyone when it is off. */
static void test_user_allowed(void **state)
{
	(void)state;
	assert_false(ctl_user_allowed(NULL, "admin"));
	assert_false(ctl_user_allowed(NULL, NULL));
	assert_true(ctl_user_allowed("admin", "admin"));
	assert_true(ctl_user_allowed(" ops\tadmin ", "admin"));
	assert_true(ctl_user_allowed("ops admin", "ops"));
	assert_false(ctl_user_allowed("admin", "admi"));
	assert_false(ctl_user_allowed("admin", "admin2"));
	assert_false(ctl_user_allowed("admin", "Admin"));
	assert_false(ctl_user_allowed("ops admin", "ops admin"));
	assert_false(ctl_user_allowed("admin", NULL));
	assert_false(ctl_user_allowed("admin", ""));
	assert_true(ctl_user_allowed("*", "anyone"));
	assert_true(ctl_user_allowed(" * ", "x"));
	assert_false(ctl_user_allowed("*", NULL));
	assert_false(ctl_user_allowed("*", ""));
	assert_false(ctl_user_allowed("admin", "*"));
}

static void test_payload(void **state)
{
	struct ctl_batch b;

	(void)state;
	parse_payload("{\"commands\":[{\"command\":\"getStats\"},{\"command\":\"getSession\"},"
			"{\"command\":\"listSessions\",\"count\":5,\"correlationData\":\"c\"}]} trailing", &b);
	assert_int_equal(b.n, 3);
	assert_null(b.reqs[0].error);
	assert_int_equal(b.reqs[0].command, CTL_GET_STATS);
	assert_string_equal(b.reqs[1].error, "'clientid' is required");
	assert_null(b.reqs[2].error);
	assert_int_equal(b.reqs[2].count, 5);
	assert_string_equal(b.reqs[2].correlation_data, "c");
	ctl_batch_free(&b);
	assert_null(b.tree);
	assert_null(b.reqs);
	ctl_batch_free(&b); /* idempotent */

	parse_payload("{\"commands\":[]}", &b);
	assert_int_equal(b.n, 0);
	ctl_batch_free(&b);

	/* Mosquitto answers up to the first command it cannot hand over. */
	parse_payload("{\"commands\":[{\"command\":\"getStats\"},7,{\"command\":\"getStats\"}]}", &b);
	assert_int_equal(b.n, 2);
	assert_null(b.reqs[0].error);
	assert_string_equal(b.reqs[1].error, "Command not an object");
	ctl_batch_free(&b);
	parse_payload("{\"commands\":[{\"command\":\"getStats\",\"correlationData\":[]},{\"command\":\"getStats\"}]}", &b);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.reqs[0].error, "Invalid correlationData data type.");
	ctl_batch_free(&b);
	parse_payload("{\"commands\":[{\"command\":\"nope\"},{\"cmd\":\"getStats\"},{\"command\":\"getStats\"}]}", &b);
	assert_int_equal(b.n, 2);
	assert_string_equal(b.reqs[0].error, "Unknown command");
	assert_string_equal(b.reqs[1].error, "Missing command");
	ctl_batch_free(&b);

	expect_payload_error("not json", "Payload not valid JSON");
	expect_payload_error("", "Payload not valid JSON");
	expect_payload_error("{\"commands\":[", "Payload not valid JSON");
	expect_payload_error("{\"commands\": 5}", "Invalid/missing commands");
	expect_payload_error("{\"command\":\"getStats\"}", "Invalid/missing commands");
	expect_payload_error("[{\"command\":\"getStats\"}]", "Invalid/missing commands");
	expect_payload_error("{\"commands\":{}}", "Invalid/missing commands");
	/* The first "commands", whatever its case. */
	parse_payload("{\"Commands\":[{\"command\":\"getStats\"}],\"commands\":5}", &b);
	assert_int_equal(b.n, 1);
	assert_null(b.reqs[0].error);
	ctl_batch_free(&b);
	/* Only len bytes are parsed. */
	assert_int_equal(ctl_payload_parse("{\"commands\":[]}xyz", 3, &b), 0);
	assert_string_equal(b.reqs[0].error, "Payload not valid JSON");
	ctl_batch_free(&b);
}

/* A string with a NUL in it is refused as a whole, never cut at the NUL
 * ("victim-phone\u0000-not-this-one" named victim-phone). */
static void test_payload_nul(void **state)
{
	static const char esc[] = "{\"commands\":[{\"command\":\"deleteAccount\","
		"\"clientid\":\"victim-phone\\u0000-not-this-one\"}]}";
	static const char user[] = "{\"commands\":[{\"command\":\"deleteAccount\",\"username\":\"\\u0000\"}]}";
	static const char raw[] = "{\"commands\":[{\"command\":\"getSession\",\"clientid\":\"a\0b\"}]}";
	static const char escaped_backslash[] = "{\"commands\":[{\"command\":\"getSession\",\"clientid\":\"a\\\\u0000\"}]}";
	static const char after[] = "{\"commands\":[]}\0trailing";
	struct ctl_batch b;

	(void)state;
	assert_int_equal(ctl_payload_parse(esc, sizeof(esc) - 1, &b), 0);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.reqs[0].error, CTL_NUL_IN_STRING);
	assert_string_equal(b.reqs[0].error, "Strings must not hold a NUL character (\\u0000)");
	ctl_batch_free(&b);
	assert_int_equal(ctl_payload_parse(user, sizeof(user) - 1, &b), 0);
	assert_string_equal(b.reqs[0].error, CTL_NUL_IN_STRING);
	ctl_batch_free(&b);
	assert_int_equal(ctl_payload_parse(raw, sizeof(raw) - 1, &b), 0);
	assert_string_equal(b.reqs[0].error, CTL_NUL_IN_STRING);
	ctl_batch_free(&b);
	/* A backslash, then the text u0000: no NUL. */
	assert_int_equal(ctl_payload_parse(escaped_backslash, sizeof(escaped_backslash) - 1, &b), 0);
	assert_int_equal(b.n, 1);
	assert_null(b.reqs[0].error);
	assert_string_equal(b.reqs[0].clientid, "a\\u0000");
	ctl_batch_free(&b);
	/* Outside a string, after the value: ignored as before. */
	assert_int_equal(ctl_payload_parse(after, sizeof(after) - 1, &b), 0);
	assert_int_equal(b.n, 0);
	ctl_batch_free(&b);
}

/* Writes {"command":"<command>","<member>":"x...x"} (len x's) into json. */
static void long_member(char *json, const char *command, const char *member, size_t len)
{
	int n = sprintf(json, "{\"command\":\"%s\",\"%s\":\"", command, member);

	memset(json + n, 'x', len);
	strcpy(json + n + len, "\"}");
}

/* A name of 65,535 bytes (the longest MQTT string) is taken; one byte more
 * names nothing and is refused by name, for each string member. */
static void test_string_length(void **state)
{
	const size_t max = 65535;
	char *json = malloc(max + 100);
	struct ctl_request req;
	cJSON *tree;

	(void)state;
	assert_non_null(json);
	long_member(json, "deleteAccount", "username", max);
	tree = accept_cmd(json, &req);
	assert_int_equal(strlen(req.username), max);
	cJSON_Delete(tree);
	long_member(json, "deleteAccount", "username", max + 1);
	expect_reject(json, CTL_REJECT, "'username' is too large (an MQTT string is at most 65535 bytes)");

	long_member(json, "getSession", "clientid", max);
	tree = accept_cmd(json, &req);
	assert_int_equal(strlen(req.clientid), max);
	cJSON_Delete(tree);
	long_member(json, "getSession", "clientid", max + 1);
	expect_reject(json, CTL_REJECT, "'clientid' is too large (an MQTT string is at most 65535 bytes)");

	long_member(json, "listSessions", "clientidPrefix", max + 1);
	expect_reject(json, CTL_REJECT,
			"'clientidPrefix' is too large (an MQTT string is at most 65535 bytes)");
	free(json);
}

static void test_payload_size(void **state)
{
	static const char head[] = "{\"commands\":[{\"command\":\"getStats\"}]}";
	char *p = malloc(CTL_MAX_REQUEST_BYTES + 1);
	struct ctl_batch b;

	(void)state;
	assert_non_null(p);
	/* At the limit: parsed (the padding is JSON whitespace). */
	memset(p, ' ', CTL_MAX_REQUEST_BYTES + 1);
	memcpy(p, head, sizeof(head) - 1);
	assert_int_equal(ctl_payload_parse(p, CTL_MAX_REQUEST_BYTES, &b), 0);
	assert_int_equal(b.n, 1);
	assert_null(b.reqs[0].error);
	ctl_batch_free(&b);
	/* One byte more: refused as a whole. */
	assert_int_equal(ctl_payload_parse(p, CTL_MAX_REQUEST_BYTES + 1, &b), 0);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.reqs[0].error, CTL_TOO_LARGE);
	assert_string_equal(b.reqs[0].error, "Request too large (at most 1048576 bytes)");
	assert_string_equal(b.reqs[0].name, CTL_UNKNOWN_NAME);
	ctl_batch_free(&b);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_delete_account),
		cmocka_unit_test(test_user_allowed),
		cmocka_unit_test(test_payload_nul),
		cmocka_unit_test(test_list_sessions),
		cmocka_unit_test(test_one_session),
		cmocka_unit_test(test_get_stats),
		cmocka_unit_test(test_command_names),
		cmocka_unit_test(test_payload),
		cmocka_unit_test(test_payload_size),
		cmocka_unit_test(test_string_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
