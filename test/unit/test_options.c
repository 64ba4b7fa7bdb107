/* plugin_opt_* parsing: config_parse, parse_size and parse_duration. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "journal.h"
#include "options.h"
#include "store.h"

#define KV(k, v) {(k), (v)}

static int parse(struct plugin_config *cfg, const struct option_kv *opts, int count,
		const char *location, char *err, size_t errlen)
{
	memset(cfg, 0x5a, sizeof(*cfg)); /* config_parse must initialise everything */
	err[0] = '\0';
	return config_parse(cfg, opts, count, location, err, errlen);
}

static void test_defaults(void **state)
{
	const struct option_kv opts[] = {KV("key_file", "/etc/mosquitto/persist.key")};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	assert_int_equal(parse(&cfg, opts, 1, "/var/lib/mosquitto", err, sizeof(err)), 0);
	assert_string_equal(cfg.db_path, "/var/lib/mosquitto/persist-lmdb");
	assert_string_equal(cfg.key_file, "/etc/mosquitto/persist.key");
	assert_uint_equal(cfg.map_size, STORE_DEFAULT_MAP_SIZE);
	assert_uint_equal(cfg.map_size, 64u * 1024 * 1024);
	assert_int_equal(cfg.sync, SYNC_TICK);
	assert_uint_equal(cfg.max_db_size, 0);
	config_free(&cfg);
	assert_null(cfg.db_path);
	assert_null(cfg.key_file);
	config_free(&cfg); /* idempotent */

	/* A trailing slash on persistence_location gives no double slash. */
	assert_int_equal(parse(&cfg, opts, 1, "/var/lib/mosquitto/", err, sizeof(err)), 0);
	assert_string_equal(cfg.db_path, "/var/lib/mosquitto/persist-lmdb");
	config_free(&cfg);
	assert_int_equal(parse(&cfg, opts, 1, "/", err, sizeof(err)), 0);
	assert_string_equal(cfg.db_path, "/persist-lmdb");
	config_free(&cfg);
	assert_int_equal(parse(&cfg, opts, 1, "relative", err, sizeof(err)), 0);
	assert_string_equal(cfg.db_path, "relative/persist-lmdb");
	config_free(&cfg);
}

static void test_all_options(void **state)
{
	const struct option_kv opts[] = {
		KV("db_path", "/data/db"),
		KV("key_file", "/k"),
		KV("map_size", "2g"),
		KV("sync", "tick"),
	};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	assert_int_equal(parse(&cfg, opts, 4, "/ignored", err, sizeof(err)), 0);
	assert_string_equal(cfg.db_path, "/data/db");
	assert_string_equal(cfg.key_file, "/k");
	assert_uint_equal(cfg.map_size, (size_t)2 << 30);
	assert_int_equal(cfg.sync, SYNC_TICK);
	config_free(&cfg);

	/* db_path given: persistence_location is not needed. */
	assert_int_equal(parse(&cfg, opts, 2, NULL, err, sizeof(err)), 0);
	assert_string_equal(cfg.db_path, "/data/db");
	config_free(&cfg);

	/* A repeated option: the last one wins. */
	const struct option_kv twice[] = {
		KV("key_file", "/first"), KV("key_file", "/second"),
		KV("map_size", "8m"), KV("map_size", "16m"),
	};
	assert_int_equal(parse(&cfg, twice, 4, "/loc", err, sizeof(err)), 0);
	assert_string_equal(cfg.key_file, "/second");
	assert_uint_equal(cfg.map_size, (size_t)16 << 20);
	config_free(&cfg);
}

static void test_key_file_required(void **state)
{
	const struct option_kv opts[] = {KV("db_path", "/data/db")};
	const struct option_kv empty[] = {KV("key_file", "")};
	const struct option_kv null_value[] = {KV("key_file", NULL)};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	assert_int_equal(parse(&cfg, opts, 1, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_key_file is required"));
	assert_null(cfg.db_path); /* freed on failure */
	assert_null(cfg.key_file);

	assert_int_equal(parse(&cfg, NULL, 0, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_key_file is required"));

	assert_int_equal(parse(&cfg, empty, 1, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_key_file needs a value"));
	assert_int_equal(parse(&cfg, null_value, 1, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_key_file needs a value"));
}

static void test_db_path_needs_a_location(void **state)
{
	const struct option_kv opts[] = {KV("key_file", "/k")};
	const struct option_kv empty_path[] = {KV("key_file", "/k"), KV("db_path", "")};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	assert_int_equal(parse(&cfg, opts, 1, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_db_path"));
	assert_non_null(strstr(err, "persistence_location"));
	assert_null(cfg.key_file);
	assert_int_equal(parse(&cfg, opts, 1, "", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_db_path"));
	assert_int_equal(parse(&cfg, empty_path, 2, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_db_path needs a value"));
}

static void test_unknown_option(void **state)
{
	static const char *const names[] = {"banana", "map-size", "MAP_SIZE", "db_path ", "", "keyfile"};
	struct plugin_config cfg;
	char err[512], want[128];

	(void)state;
	for(size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++){
		const struct option_kv opts[] = {KV("key_file", "/k"), KV(names[i], "1")};
		assert_int_equal(parse(&cfg, opts, 2, "/loc", err, sizeof(err)), -1);
		snprintf(want, sizeof(want), "unknown option plugin_opt_%s", names[i]);
		assert_string_equal(err, want);
		assert_null(cfg.key_file);
	}
}

static void test_max_db_size(void **state)
{
	static const char *const bad[] = {"banana", "", "-1", "1023k", "1048575", "5mb", "1.5g"};
	static const struct {
		const char *text;
		size_t bytes;
	} good[] = {{"0", 0}, {"1m", (size_t)1 << 20}, {"1048576", (size_t)1 << 20}, {"10g", (size_t)10 << 30}};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		const struct option_kv opts[] = {KV("key_file", "/k"), KV("max_db_size", bad[i])};
		if(parse(&cfg, opts, 2, "/loc", err, sizeof(err)) != -1){
			config_free(&cfg);
			fail_msg("plugin_opt_max_db_size '%s' was accepted", bad[i]);
		}
		assert_non_null(strstr(err, "plugin_opt_max_db_size"));
		assert_non_null(strstr(err, bad[i]));
	}
	for(size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++){
		const struct option_kv opts[] = {KV("key_file", "/k"), KV("max_db_size", good[i].text)};
		assert_int_equal(parse(&cfg, opts, 2, "/loc", err, sizeof(err)), 0);
		assert_uint_equal(cfg.max_db_size, good[i].bytes);
		config_free(&cfg);
	}
}

static void test_retention_options(void **state)
{
	const struct option_kv opts[] = {
		KV("key_file", "/k"), KV("max_queued_messages", "500"), KV("max_queued_bytes", "10m"),
		KV("queue_full", "drop-oldest"), KV("offline_ttl", "7d"),
	};
	static const struct {
		const char *key, *value;
	} bad[] = {
		{"max_queued_messages", "-1"}, {"max_queued_messages", "100000001"}, {"max_queued_messages", "5k"},
		{"max_queued_bytes", "lots"}, {"queue_full", "drop-random"}, {"queue_full", ""},
		{"offline_ttl", "3651d"}, {"offline_ttl", "1w"},
	};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	assert_int_equal(parse(&cfg, opts, 1, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.max_queued_messages, 0);
	assert_uint_equal(cfg.max_queued_bytes, 0);
	assert_int_equal(cfg.queue_full, QUEUE_FULL_DROP_NEW);
	assert_uint_equal(cfg.offline_ttl, 0);
	config_free(&cfg);
	assert_int_equal(parse(&cfg, opts, 5, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.max_queued_messages, 500);
	assert_uint_equal(cfg.max_queued_bytes, (size_t)10 << 20);
	assert_int_equal(cfg.queue_full, QUEUE_FULL_DROP_OLDEST);
	assert_uint_equal(cfg.offline_ttl, 7u * 86400);
	config_free(&cfg);
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		const struct option_kv one[] = {KV("key_file", "/k"), KV(bad[i].key, bad[i].value)};
		if(parse(&cfg, one, 2, "/loc", err, sizeof(err)) != -1){
			config_free(&cfg);
			fail_msg("plugin_opt_%s '%s' was accepted", bad[i].key, bad[i].value);
		}
		assert_non_null(strstr(err, bad[i].key));
	}
}

static void test_queue_storage_options(void **state)
{
	const struct option_kv disk[] = {KV("key_file", "/k"), KV("queue_storage", "disk"), KV("queue_window", "5000")};
	const struct option_kv memory[] = {KV("key_file", "/k"), KV("queue_storage", "memory")};
	static const struct {
		const char *key, *value;
	} bad[] = {
		{"queue_storage", "ssd"}, {"queue_storage", ""}, {"queue_window", "63"},
		{"queue_window", "10000001"}, {"queue_window", "many"},
	};
	static const struct option_kv limits[] = {KV("key_file", "/k"), KV("queue_storage", "disk"),
		KV("max_queued_messages", "5"), KV("max_queued_bytes", "5000"), KV("offline_ttl", "60")};
	static const struct option_kv numbered[] = {KV("key_file", "/k"), KV("queue_storage", "disk"),
		KV("seq_property", "seq")};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	/* Stored queues by default; the broker's memory on request. */
	assert_int_equal(parse(&cfg, disk, 1, "/loc", err, sizeof(err)), 0);
	assert_int_equal(cfg.queue_storage, QUEUE_STORAGE_DISK);
	assert_uint_equal(cfg.queue_window, QUEUE_WINDOW_DEFAULT);
	config_free(&cfg);
	assert_int_equal(parse(&cfg, memory, 2, "/loc", err, sizeof(err)), 0);
	assert_int_equal(cfg.queue_storage, QUEUE_STORAGE_MEMORY);
	config_free(&cfg);
	assert_int_equal(parse(&cfg, disk, 3, "/loc", err, sizeof(err)), 0);
	assert_int_equal(cfg.queue_storage, QUEUE_STORAGE_DISK);
	assert_uint_equal(cfg.queue_window, 5000);
	config_free(&cfg);
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		const struct option_kv one[] = {KV("key_file", "/k"), KV(bad[i].key, bad[i].value)};
		if(parse(&cfg, one, 2, "/loc", err, sizeof(err)) != -1){
			config_free(&cfg);
			fail_msg("plugin_opt_%s '%s' was accepted", bad[i].key, bad[i].value);
		}
		assert_non_null(strstr(err, bad[i].key));
	}
	/* Queue limits and expiry apply to stored queues too. */
	assert_int_equal(parse(&cfg, limits, 5, "/loc", err, sizeof(err)), 0);
	assert_int_equal(cfg.queue_storage, QUEUE_STORAGE_DISK);
	assert_uint_equal(cfg.max_queued_messages, 5);
	assert_uint_equal(cfg.max_queued_bytes, 5000);
	assert_uint_equal(cfg.offline_ttl, 60);
	config_free(&cfg);
	/* Sequence numbers go with stored queues too. */
	assert_int_equal(parse(&cfg, numbered, 3, "/loc", err, sizeof(err)), 0);
	assert_int_equal(cfg.queue_storage, QUEUE_STORAGE_DISK);
	assert_string_equal(cfg.seq_property, "seq");
	config_free(&cfg);
}

static void test_bad_map_size(void **state)
{
	static const char *const bad[] = {
		"banana", "", "10x", "0", "0k", "1023k", "1048575", "-1", "+5m", " 5m", "5m ", "5 m",
		"5mb", "5kk", "1.5g", "0x100000", "k", "m",
		"99999999999999999999999",  /* does not fit unsigned long long */
		"18446744073709551615g",    /* overflows when multiplied */
		"17179869184g",             /* 2^64 bytes */
	};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		const struct option_kv opts[] = {KV("key_file", "/k"), KV("map_size", bad[i])};
		if(parse(&cfg, opts, 2, "/loc", err, sizeof(err)) != -1){
			config_free(&cfg);
			fail_msg("plugin_opt_map_size '%s' was accepted", bad[i]);
		}
		assert_non_null(strstr(err, "plugin_opt_map_size"));
		assert_non_null(strstr(err, bad[i]));
	}
	const struct option_kv null_value[] = {KV("key_file", "/k"), KV("map_size", NULL)};
	assert_int_equal(parse(&cfg, null_value, 2, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_map_size"));

	/* The smallest accepted size is 1 MiB. */
	const struct option_kv min[] = {KV("key_file", "/k"), KV("map_size", "1m")};
	assert_int_equal(parse(&cfg, min, 2, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.map_size, 1u << 20);
	config_free(&cfg);
	const struct option_kv min_bytes[] = {KV("key_file", "/k"), KV("map_size", "1048576")};
	assert_int_equal(parse(&cfg, min_bytes, 2, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.map_size, 1u << 20);
	config_free(&cfg);
}

static void test_sync(void **state)
{
	static const char *const bad[] = {"", "none", "always", "TICK", "tick ", "ticks"};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		const struct option_kv opts[] = {KV("key_file", "/k"), KV("sync", bad[i])};
		assert_int_equal(parse(&cfg, opts, 2, "/loc", err, sizeof(err)), -1);
		assert_non_null(strstr(err, "plugin_opt_sync"));
		assert_non_null(strstr(err, "tick"));
	}
	const struct option_kv null_value[] = {KV("key_file", "/k"), KV("sync", NULL)};
	assert_int_equal(parse(&cfg, null_value, 2, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_sync"));

	const struct option_kv ok[] = {KV("sync", "tick"), KV("key_file", "/k")};
	assert_int_equal(parse(&cfg, ok, 2, "/loc", err, sizeof(err)), 0);
	assert_int_equal(cfg.sync, SYNC_TICK);
	config_free(&cfg);
}

static void test_parse_size(void **state)
{
	static const struct {
		const char *s;
		size_t v;
	} good[] = {
		{"0", 0},
		{"1", 1},
		{"4096", 4096},
		{"1k", 1024},
		{"1K", 1024},
		{"64m", (size_t)64 << 20},
		{"64M", (size_t)64 << 20},
		{"1g", (size_t)1 << 30},
		{"3G", (size_t)3 << 30},
		{"007k", 7 * 1024},
		{"16384g", (size_t)16384 << 30},
		{"18446744073709551615", SIZE_MAX},
	};
	static const char *const bad[] = {
		"", "k", "-1", "+1", " 1", "1 ", "1t", "1kb", "1.0", "0x10", "1e3",
		"18446744073709551616", "17179869184g", "18014398509481984m",
	};
	size_t out;

	(void)state;
	assert_int_equal(SIZE_MAX, UINT64_MAX); /* the table assumes a 64-bit size_t */
	for(size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++){
		out = 12345;
		if(parse_size(good[i].s, &out) != 0){
			fail_msg("parse_size(\"%s\") failed", good[i].s);
		}
		assert_uint_equal(out, good[i].v);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		out = 12345;
		if(parse_size(bad[i], &out) != -1){
			fail_msg("parse_size(\"%s\") was accepted as %zu", bad[i], out);
		}
		assert_uint_equal(out, 12345); /* untouched on failure */
	}
	assert_int_equal(parse_size(NULL, &out), -1);
}

/* Parses key_file plus one option; returns config_parse's result. */
static int parse_one(struct plugin_config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
	const struct option_kv opts[] = {KV("key_file", "/k"), KV(key, value)};
	return parse(cfg, opts, 2, "/loc", err, errlen);
}

static void expect_refused(const char *key, const char *value)
{
	struct plugin_config cfg;
	char err[512], want[64];

	if(parse_one(&cfg, key, value, err, sizeof(err)) != -1){
		config_free(&cfg);
		fail_msg("plugin_opt_%s '%s' was accepted", key, value ? value : "(null)");
	}
	snprintf(want, sizeof(want), "plugin_opt_%s", key);
	assert_non_null(strstr(err, want));
	if(value){
		assert_non_null(strstr(err, value));
	}
	assert_null(cfg.key_file);
	assert_null(cfg.dedup_property);
	assert_null(cfg.seq_property);
}

static void test_sync_modes(void **state)
{
	static const struct {
		const char *v;
		enum sync_mode m;
	} ok[] = {{"tick", SYNC_TICK}, {"publish", SYNC_PUBLISH}, {"periodic", SYNC_PERIODIC}};
	static const char *const bad[] = {"Publish", "periodic ", "periodical", "sync", "1", "on"};
	struct plugin_config cfg;
	char err[512];

	(void)state;
	for(size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++){
		assert_int_equal(parse_one(&cfg, "sync", ok[i].v, err, sizeof(err)), 0);
		assert_int_equal(cfg.sync, ok[i].m);
		assert_string_equal(sync_mode_name(cfg.sync), ok[i].v);
		config_free(&cfg);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		expect_refused("sync", bad[i]);
	}
	/* The last one wins. */
	const struct option_kv twice[] = {KV("key_file", "/k"), KV("sync", "publish"), KV("sync", "periodic")};
	assert_int_equal(parse(&cfg, twice, 3, "/loc", err, sizeof(err)), 0);
	assert_int_equal(cfg.sync, SYNC_PERIODIC);
	config_free(&cfg);
	assert_string_equal(sync_mode_name((enum sync_mode)99), "?");
}

static void test_sync_interval(void **state)
{
	static const struct {
		const char *v;
		unsigned ms;
	} ok[] = {{"1", 1}, {"250", 250}, {"1000", 1000}, {"3600000", 3600000}, {"0001", 1}};
	static const char *const bad[] = {
		"0", "3600001", "junk", "", "-1", "+5", " 5", "5 ", "5ms", "1.5", "0x10",
		"99999999999999999999999",
	};
	struct plugin_config cfg;
	char err[512];
	const struct option_kv none[] = {KV("key_file", "/k")};

	(void)state;
	assert_int_equal(parse(&cfg, none, 1, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.sync_interval_ms, SYNC_INTERVAL_DEFAULT_MS);
	assert_uint_equal(cfg.sync_interval_ms, 1000);
	config_free(&cfg);
	for(size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++){
		assert_int_equal(parse_one(&cfg, "sync_interval_ms", ok[i].v, err, sizeof(err)), 0);
		assert_uint_equal(cfg.sync_interval_ms, ok[i].ms);
		config_free(&cfg);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		expect_refused("sync_interval_ms", bad[i]);
	}
	expect_refused("sync_interval_ms", NULL);
}

static void test_commit_interval(void **state)
{
	static const struct {
		const char *v;
		unsigned ms;
	} ok[] = {{"0", 0}, {"1", 1}, {"100", 100}, {"10000", 10000}, {"0250", 250}};
	static const char *const bad[] = {
		"10001", "junk", "", "-1", "+5", " 5", "5 ", "5ms", "1.5", "0x10", "99999999999999999999999",
	};
	struct plugin_config cfg;
	char err[512];
	const struct option_kv none[] = {KV("key_file", "/k")};

	(void)state;
	assert_int_equal(parse(&cfg, none, 1, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.commit_interval_ms, COMMIT_INTERVAL_DEFAULT_MS);
	assert_uint_equal(cfg.commit_interval_ms, 100);
	config_free(&cfg);
	for(size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++){
		assert_int_equal(parse_one(&cfg, "commit_interval_ms", ok[i].v, err, sizeof(err)), 0);
		assert_uint_equal(cfg.commit_interval_ms, ok[i].ms);
		config_free(&cfg);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		expect_refused("commit_interval_ms", bad[i]);
	}
	expect_refused("commit_interval_ms", NULL);
}

static void test_journal_size(void **state)
{
	static const struct {
		const char *v;
		size_t size;
	} ok[] = {
		{"256k", 256u * 1024},
		{"262144", 256u * 1024},
		{"16m", 16u << 20},
		{"1g", (size_t)1 << 30},
		{"4g", (size_t)4 << 30},
		{"4194304k", (size_t)4 << 30},
		{"4294967296", (size_t)4 << 30},
	};
	static const char *const bad[] = {
		"255k", "262143", "0", "", "junk", "4194305k", "4294967297", "5g", "4097m", "1t",
	};
	struct plugin_config cfg;
	char err[512];
	const struct option_kv none[] = {KV("key_file", "/k")};

	(void)state;
	assert_int_equal(parse(&cfg, none, 1, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.journal_size, JOURNAL_DEFAULT_SIZE);
	assert_uint_equal(cfg.journal_size, 16u << 20);
	config_free(&cfg);
	assert_uint_equal(JOURNAL_MIN_SIZE, 256u * 1024);
	for(size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++){
		assert_int_equal(parse_one(&cfg, "journal_size", ok[i].v, err, sizeof(err)), 0);
		assert_uint_equal(cfg.journal_size, ok[i].size);
		config_free(&cfg);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		expect_refused("journal_size", bad[i]);
	}
	expect_refused("journal_size", NULL);
}

static void test_dedup_window(void **state)
{
	static const struct {
		const char *v;
		unsigned s;
	} ok[] = {
		{"0", 0}, {"90", 90}, {"90s", 90}, {"15m", 900}, {"2h", 7200}, {"30d", 2592000},
		{"2592000", 2592000}, {"720h", 2592000}, {"1s", 1},
	};
	static const char *const bad[] = {
		"31d", "5x", "", "2592001", "721h", "-1", "1.5h", "1w", "1ms", "1S", "1H", " 1", "1 ",
		"h", "99999999999999999999999",
	};
	struct plugin_config cfg;
	char err[512];
	const struct option_kv none[] = {KV("key_file", "/k")};

	(void)state;
	assert_int_equal(parse(&cfg, none, 1, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.dedup_window, DEDUP_WINDOW_DEFAULT_S);
	assert_uint_equal(cfg.dedup_window, 3600);
	config_free(&cfg);
	for(size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++){
		assert_int_equal(parse_one(&cfg, "dedup_window", ok[i].v, err, sizeof(err)), 0);
		assert_uint_equal(cfg.dedup_window, ok[i].s);
		config_free(&cfg);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		expect_refused("dedup_window", bad[i]);
	}
	expect_refused("dedup_window", NULL);
}

static void test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		unsigned long long v;
	} good[] = {
		{"0", 0}, {"0s", 0}, {"1", 1}, {"90", 90}, {"90s", 90}, {"15m", 900}, {"2h", 7200},
		{"7d", 604800}, {"30d", 2592000}, {"007m", 420},
		{"4294967295", 4294967295ull}, {"4294967295s", 4294967295ull},
		{"71582788m", 71582788ull * 60}, {"1193046h", 1193046ull * 3600},
		{"49710d", 49710ull * 86400},
	};
	static const char *const bad[] = {
		"", "s", "m", "-1", "+1", " 1", "1 ", "1x", "1S", "1M", "1ms", "1sm", "1.5", "0x10",
		"4294967296", "71582789m", "1193047h", "49711d", "18446744073709551616",
		"99999999999999999999999d",
	};
	unsigned long long out;

	(void)state;
	for(size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++){
		out = 12345;
		if(parse_duration(good[i].s, &out) != 0){
			fail_msg("parse_duration(\"%s\") failed", good[i].s);
		}
		assert_uint_equal(out, good[i].v);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		out = 12345;
		if(parse_duration(bad[i], &out) != -1){
			fail_msg("parse_duration(\"%s\") was accepted as %llu", bad[i], out);
		}
		assert_uint_equal(out, 12345); /* untouched on failure */
	}
	assert_int_equal(parse_duration(NULL, &out), -1);
}

static void test_dedup_max_ids(void **state)
{
	static const struct {
		const char *v;
		size_t n;
	} ok[] = {{"1", 1}, {"100000", 100000}, {"10000000", 10000000}, {"010", 10}};
	static const char *const bad[] = {
		"0", "10000001", "", "junk", "-5", "+5", "5k", "1e6", " 5", "5 ", "18446744073709551617",
	};
	struct plugin_config cfg;
	char err[512];
	const struct option_kv none[] = {KV("key_file", "/k")};

	(void)state;
	assert_int_equal(parse(&cfg, none, 1, "/loc", err, sizeof(err)), 0);
	assert_uint_equal(cfg.dedup_max_ids, DEDUP_MAX_IDS_DEFAULT);
	assert_uint_equal(cfg.dedup_max_ids, 100000);
	config_free(&cfg);
	for(size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++){
		assert_int_equal(parse_one(&cfg, "dedup_max_ids", ok[i].v, err, sizeof(err)), 0);
		assert_uint_equal(cfg.dedup_max_ids, ok[i].n);
		config_free(&cfg);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		expect_refused("dedup_max_ids", bad[i]);
	}
	expect_refused("dedup_max_ids", NULL);
}

/* plugin_opt_control_users: off when absent; usernames, or * alone. */
static void test_control_users(void **state)
{
	static const char *const good[] = {"ops", "ops admin", " ops\tadmin ", "*", " * "};
	static const char *const bad[] = {"", "  ", "* ops", "ops *", "**", "ad*min", NULL};
	struct plugin_config cfg;
	char err[512];
	const struct option_kv none[] = {KV("key_file", "/k")};

	(void)state;
	assert_int_equal(parse(&cfg, none, 1, "/loc", err, sizeof(err)), 0);
	assert_null(cfg.control_users);
	config_free(&cfg);
	for(size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++){
		const struct option_kv opts[] = {KV("key_file", "/k"), KV("control_users", good[i])};
		assert_int_equal(parse(&cfg, opts, 2, "/loc", err, sizeof(err)), 0);
		assert_string_equal(cfg.control_users, good[i]);
		config_free(&cfg);
		assert_null(cfg.control_users);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		const struct option_kv opts[] = {KV("key_file", "/k"), KV("control_users", bad[i])};
		assert_int_equal(parse(&cfg, opts, 2, "/loc", err, sizeof(err)), -1);
		if(!strstr(err, "plugin_opt_control_users") || !strstr(err, "or * alone")){
			fail_msg("control_users '%s': %s", bad[i] ? bad[i] : "(null)", err);
		}
	}
}

static void test_dedup_and_seq_property(void **state)
{
	struct plugin_config cfg;
	char err[512];
	const struct option_kv none[] = {KV("key_file", "/k")};

	(void)state;
	assert_int_equal(parse(&cfg, none, 1, "/loc", err, sizeof(err)), 0);
	assert_non_null(cfg.dedup_property);
	assert_string_equal(cfg.dedup_property, DEDUP_PROPERTY_DEFAULT);
	assert_string_equal(cfg.dedup_property, "msg-id");
	assert_null(cfg.seq_property);
	assert_null(cfg.personal_topics);
	config_free(&cfg);
	assert_null(cfg.dedup_property);
	assert_null(cfg.seq_property);

	const struct option_kv set[] = {
		KV("key_file", "/k"), KV("dedup_property", "x-request-id"), KV("seq_property", "seq"),
	};
	assert_int_equal(parse(&cfg, set, 3, "/loc", err, sizeof(err)), 0);
	assert_string_equal(cfg.dedup_property, "x-request-id");
	assert_string_equal(cfg.seq_property, "seq");
	config_free(&cfg);
	assert_null(cfg.dedup_property);
	assert_null(cfg.seq_property);
	config_free(&cfg); /* idempotent */

	/* The last one wins. */
	const struct option_kv twice[] = {
		KV("seq_property", "a"), KV("key_file", "/k"), KV("seq_property", "b"),
		KV("dedup_property", "c"), KV("dedup_property", "d"),
	};
	assert_int_equal(parse(&cfg, twice, 5, "/loc", err, sizeof(err)), 0);
	assert_string_equal(cfg.seq_property, "b");
	assert_string_equal(cfg.dedup_property, "d");
	config_free(&cfg);

	/* Both need a value. */
	const struct option_kv empty_seq[] = {KV("key_file", "/k"), KV("seq_property", "")};
	assert_int_equal(parse(&cfg, empty_seq, 2, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_seq_property needs a value"));
	assert_null(cfg.seq_property);
	const struct option_kv null_dedup[] = {KV("key_file", "/k"), KV("dedup_property", NULL)};
	assert_int_equal(parse(&cfg, null_dedup, 2, "/loc", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "plugin_opt_dedup_property needs a value"));
	assert_null(cfg.dedup_property);

	/* A failure after them frees them. */
	const struct option_kv late_fail[] = {
		KV("key_file", "/k"), KV("seq_property", "s"), KV("dedup_property", "d"), KV("sync", "x"),
	};
	assert_int_equal(parse(&cfg, late_fail, 4, "/loc", err, sizeof(err)), -1);
	assert_null(cfg.seq_property);
	assert_null(cfg.dedup_property);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_options),
		cmocka_unit_test(test_key_file_required),
		cmocka_unit_test(test_db_path_needs_a_location),
		cmocka_unit_test(test_unknown_option),
		cmocka_unit_test(test_bad_map_size),
		cmocka_unit_test(test_max_db_size),
		cmocka_unit_test(test_retention_options),
		cmocka_unit_test(test_queue_storage_options),
		cmocka_unit_test(test_sync),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_sync_modes),
		cmocka_unit_test(test_sync_interval),
		cmocka_unit_test(test_commit_interval),
		cmocka_unit_test(test_journal_size),
		cmocka_unit_test(test_dedup_window),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_dedup_max_ids),
		cmocka_unit_test(test_dedup_and_seq_property),
		cmocka_unit_test(test_control_users),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
