/* Writes the seed corpora of the fuzz targets into DIR/<target>/:
 *   make_seeds DIR      (scripts/fuzz.sh does not run it; the seeds are
 *                        committed, rerun it when a record layout changes)
 * Everything is deterministic: the same engine gives the same files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "record.h"
#include "seal.h"

static const char *dir;

static void write_file(const char *target, const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, target);
	if(mkdir(path, 0755) != 0 && errno != EEXIST){
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
	f = fopen(path, "wb");
	if(!f || fwrite(p, 1, n, f) != n || fclose(f) != 0){
		perror(path);
		exit(1);
	}
}

/* Text seeds: sizeof - 1 drops the literal's own NUL, keeping inner ones. */
#define TEXT(target, name, lit) write_file(target, name, lit, sizeof(lit) - 1)

static struct buf records[16];
static const char *record_names[16];
static int n_records;

static void add_record(const char *name, struct buf *b)
{
	FUZZ_CHECK(!b->err && n_records < 16);
	records[n_records] = *b;
	record_names[n_records++] = name;
	write_file("fuzz_record", name, b->data, b->len);
	memset(b, 0, sizeof(*b));
}

static void record_seeds(void)
{
	static const uint8_t props[] = {0x01, 0x01, 0x03, 0x00, 0x0a, 't', 'e', 'x', 't', '/', 'p', 'l', 'a', 'i', 'n'};
	struct buf b = {0};

	struct rec_base_msg m = {
		.expiry_time = 1767225600, .topic = "inbox/alice", .source_id = "sensor-7",
		.source_username = "bob", .payload = {(const uint8_t *)"while you were away", 19},
		.properties = {props, sizeof(props)}, .source_mid = 42, .source_port = 1883, .qos = 1, .retain = false,
	};
	record_encode_base_msg(&b, &m);
	add_record("base_msg", &b);
	struct rec_base_msg m0 = {
		.expiry_time = -1, .topic = "a", .payload = {(const uint8_t *)"", 0}, .qos = 2, .retain = true,
	};
	record_encode_base_msg(&b, &m0);
	add_record("base_msg_min", &b);

	struct rec_session s = {
		.clientid = "phone", .username = "alice", .auth_method = "SCRAM-SHA-256",
		.will_delay_time = 1767225660, .session_expiry_time = 1767229200,
		.will_delay_interval = 60, .session_expiry_interval = 3600, .max_packet_size = 268435455,
		.listener_port = 8883, .max_qos = 2, .retain_available = true,
	};
	record_encode_session(&b, &s);
	add_record("session", &b);
	struct rec_session s0 = {.clientid = "c", .max_qos = 0};
	record_encode_session(&b, &s0);
	add_record("session_min", &b);

	struct rec_sub sub = {.clientid = "phone", .topic_filter = "inbox/#", .identifier = 7, .options = 0x05};
	record_encode_sub(&b, &sub);
	add_record("sub", &b);

	struct rec_queue q = {
		.store_id = 0x0000012345678901ull, .subscription_identifier = 7, .mid = 65535,
		.qos = 1, .retain = false, .dup = 1, .direction = 1, .state = 3,
	};
	record_encode_queue(&b, &q);
	add_record("queue", &b);

	struct rec_retain rt = {.topic = "status/door", .store_id = 99};
	record_encode_retain(&b, &rt);
	add_record("retain", &b);

	struct rec_will w = {
		.clientid = "phone", .topic = "status/phone", .payload = {(const uint8_t *)"offline", 7},
		.properties = {props, sizeof(props)}, .qos = 1, .retain = true,
	};
	record_encode_will(&b, &w);
	add_record("will", &b);
	struct rec_will w0 = {.clientid = "c", .topic = "t", .payload = {(const uint8_t *)"", 0}};
	record_encode_will(&b, &w0);
	add_record("will_min", &b);
}

/* Seed i: records[i] sealed with epoch FUZZ_SEED_EPOCH + i, counter 1 (the
 * convention fuzz_open checks). */
static void open_seeds(void)
{
	for(int i = 0; i < n_records && i < FUZZ_SEED_COUNT; i++){
		struct seal *s = fuzz_seal(FUZZ_SEED_EPOCH + (uint32_t)i);
		size_t n = records[i].len + SEAL_OVERHEAD;
		uint8_t *env = malloc(n);
		char name[64];

		FUZZ_CHECK(s && env);
		FUZZ_CHECK(seal_record(s, fuzz_ad, FUZZ_AD_LEN, records[i].data, records[i].len, env) == SEAL_OK);
		snprintf(name, sizeof(name), "sealed_%s", record_names[i]);
		write_file("fuzz_open", name, env, n);
		free(env);
		seal_free(s);
	}
	/* Not openable: another key id, another version, too short. */
	uint8_t bad[SEAL_OVERHEAD + 4] = {SEAL_VERSION, FUZZ_KEY_ID + 1};
	write_file("fuzz_open", "other_key_id", bad, sizeof(bad));
	bad[0] = SEAL_VERSION + 1;
	bad[1] = FUZZ_KEY_ID;
	write_file("fuzz_open", "other_version", bad, sizeof(bad));
	bad[0] = SEAL_VERSION;
	write_file("fuzz_open", "too_short", bad, SEAL_OVERHEAD - 1);
}

static void option_seeds(void)
{
	/* flags | [persistence_location] | key, value, ... */
	TEXT("fuzz_options", "full", "\x01/var/lib/mosquitto/\nkey_file\n/etc/mosquitto/persist-lmdb.key\n"
			"db_path\n/srv/plmdb\nmap_size\n64M\nsync\ntick\npersonal_topics\nusers/%u/# devices/%c/#");
	TEXT("fuzz_options", "location_only", "\x01/var/lib/mosquitto\nkey_file\nk");
	TEXT("fuzz_options", "nul_separated", "\x00key_file\0/k\0map_size\0" "1g\0db_path\0/d");
	TEXT("fuzz_options", "bad_size", "\x02key_file\n/k\nmap_size\n1023k");
	TEXT("fuzz_options", "huge_size", "\x00key_file\n/k\nmap_size\n18446744073709551615g");
	TEXT("fuzz_options", "bad_sync", "\x04key_file\n/k\nsync\nfsync");
	TEXT("fuzz_options", "unknown", "\x06" "bogus\nvalue");
	TEXT("fuzz_options", "no_value", "\x00key_file\n/k\ndb_path");
	TEXT("fuzz_options", "no_key_file", "\x01/var/lib/mosquitto\npersonal_topics\nx/%u");
}

static void topic_seeds(void)
{
	/* flags | filter \0 topic \0 patterns \0 username \0 clientid */
	TEXT("fuzz_topic", "plus", "\x00sport/tennis/+\0sport/tennis/player1\0users/%u/# devices/%c/+\0alice\0phone");
	TEXT("fuzz_topic", "hash_parent", "\x00sport/#\0sport\0inbox/%c\0bob\0tablet");
	TEXT("fuzz_topic", "dollar", "\x00#\0$SYS/broker/uptime\0%u %c\0u\0c");
	TEXT("fuzz_topic", "empty_levels", "\x00+/+/#\0/a/\0\t%u/x\t\t%c/y \0a b\0");
	TEXT("fuzz_topic", "no_username", "\x01" "a/b/c\0a/b/c\0users/%u/# devices/%c/#\0\0phone");
	TEXT("fuzz_topic", "wildcard_name", "\x00+\0x\0users/%u/#\0al+ce\0c");
	TEXT("fuzz_topic", "percent", "\x00" "a/+/c\0a//c\0%%u%c%x%\0%u\0%c");
}

static void control_seeds(void)
{
	/* Every command, valid. */
	TEXT("fuzz_control", "delete_by_username",
			"{\"commands\":[{\"command\":\"deleteAccount\",\"username\":\"alice\",\"correlationData\":\"erase-42\"}]}");
	TEXT("fuzz_control", "delete_by_clientid", "{\"commands\":[{\"command\":\"deleteAccount\",\"clientid\":\"alice-phone\"}]}");
	TEXT("fuzz_control", "list_sessions",
			"{\"commands\":[{\"command\":\"listSessions\",\"username\":\"alice\",\"clientidPrefix\":\"alice-\","
			"\"offset\":2147483647,\"count\":1000}]}");
	TEXT("fuzz_control", "list_sessions_defaults", "{\"commands\":[{\"command\":\"listSessions\"}]}");
	TEXT("fuzz_control", "get_session", "{\"commands\":[{\"command\":\"getSession\",\"clientid\":\"bob-phone\"}]}");
	TEXT("fuzz_control", "purge_queue", "{\"commands\":[{\"command\":\"purgeQueue\",\"clientid\":\"bob-phone\"}]}");
	TEXT("fuzz_control", "get_stats", "{\"commands\":[{\"command\":\"getStats\",\"correlationData\":\"\"}]}");
	TEXT("fuzz_control", "several",
			"{\"commands\":[{\"command\":\"getStats\"},{\"command\":\"dropEverything\"},"
			"{\"command\":\"getSession\"},{\"command\":\"listSessions\",\"count\":0}]}");
	/* Edge cases: numbers out of range or not whole, wrong types, both or
	 * neither of two, duplicate keys, case, nesting, non-UTF-8, envelope
	 * errors that stop the request. */
	TEXT("fuzz_control", "huge_numbers",
			"{\"commands\":[{\"command\":\"listSessions\",\"offset\":2147483648},"
			"{\"command\":\"listSessions\",\"count\":1e999},{\"command\":\"listSessions\",\"offset\":-1e308}]}");
	TEXT("fuzz_control", "negative_float",
			"{\"commands\":[{\"command\":\"listSessions\",\"count\":-1},{\"command\":\"listSessions\",\"offset\":1.5},"
			"{\"command\":\"listSessions\",\"offset\":-0,\"count\":1e3}]}");
	TEXT("fuzz_control", "wrong_types",
			"{\"commands\":[{\"command\":\"deleteAccount\",\"username\":7,\"clientid\":null},"
			"{\"command\":\"getSession\",\"clientid\":[\"x\"]},{\"command\":\"listSessions\",\"count\":\"5\"},"
			"{\"command\":\"purgeQueue\",\"clientid\":\"\"}]}");
	TEXT("fuzz_control", "both_neither",
			"{\"commands\":[{\"command\":\"deleteAccount\",\"username\":\"a\",\"clientid\":\"b\"},"
			"{\"command\":\"deleteAccount\"}]}");
	TEXT("fuzz_control", "duplicate_keys",
			"{\"commands\":[{\"command\":\"getSession\",\"command\":\"getStats\",\"clientid\":\"\",\"clientid\":\"c\"}],"
			"\"commands\":5}");
	TEXT("fuzz_control", "case",
			"{\"COMMANDS\":[{\"Command\":\"getStats\",\"CorrelationData\":\"x\"},"
			"{\"command\":\"getSession\",\"ClientId\":\"c\"},{\"command\":\"getstats\"}]}");
	TEXT("fuzz_control", "nested_junk",
			"{\"commands\":[{\"command\":\"listSessions\",\"username\":{\"a\":[[[{}]]]},\"x\":[1,{\"y\":null}]}]} trailing");
	TEXT("fuzz_control", "non_utf8",
			"{\"commands\":[{\"command\":\"getSession\",\"clientid\":\"\xff\xfe\xc0\x80\"},"
			"{\"command\":\"deleteAccount\",\"username\":\"\\u0000\"},{\"command\":\"getSession\",\"clientid\":\"\\ud800\"}]}");
	TEXT("fuzz_control", "stop_not_object", "{\"commands\":[{\"command\":\"getStats\"},\"getStats\",{\"command\":\"getStats\"}]}");
	TEXT("fuzz_control", "stop_missing_command",
			"{\"commands\":[{\"command\":\"getStats\",\"correlationData\":\"1\"},{\"command\":5},{\"command\":\"getStats\"}]}");
	TEXT("fuzz_control", "stop_correlation", "{\"commands\":[{\"command\":\"getStats\",\"correlationData\":5},{\"command\":\"getStats\"}]}");
	TEXT("fuzz_control", "no_commands", "{\"commands\":{\"command\":\"getStats\"}}");
	TEXT("fuzz_control", "empty_commands", "{\"commands\":[]}");
	TEXT("fuzz_control", "not_json", "{\"commands\":[{\"command\":\"getStats\"}");
	TEXT("fuzz_control", "nul_inside", "{\"commands\":[{\"command\":\"getStats\"}]}\0{\"commands\":[]}");
}

int main(int argc, char **argv)
{
	if(argc != 2){
		fprintf(stderr, "usage: make_seeds DIR\n");
		return 2;
	}
	dir = argv[1];
	if(mkdir(dir, 0755) != 0 && errno != EEXIST){
		perror(dir);
		return 1;
	}
	record_seeds();
	open_seeds();
	option_seeds();
	topic_seeds();
	control_seeds();
	for(int i = 0; i < n_records; i++){
		buf_free(&records[i]);
	}
	return 0;
}
