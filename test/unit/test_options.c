/* plugin_opt_* parsing: config_parse and parse_size. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_options),
		cmocka_unit_test(test_key_file_required),
		cmocka_unit_test(test_db_path_needs_a_location),
		cmocka_unit_test(test_unknown_option),
		cmocka_unit_test(test_bad_map_size),
		cmocka_unit_test(test_sync),
		cmocka_unit_test(test_parse_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
