/* plugin_opt_* parsing.
 *
 * Input: flags (1 byte) | pieces separated by NUL or newline. With flag bit 0
 * the first piece is persistence_location (else NULL); the rest alternate
 * key, value (an odd last key gets a NULL value); bits 1-2 pick the size of
 * the error buffer. config_parse must not crash or leak, must leave nothing
 * allocated when it fails, and its result must agree with the options given
 * (last one wins). parse_size on every piece must agree with a reference. */
#include <ctype.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "fuzz_common.h"
#include "journal.h"
#include "options.h"
#include "store.h"

#define MAX_PIECES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The documented grammar: digits, then an optional k/m/g (either case). */
static int ref_parse_size(const char *s, size_t *out)
{
	unsigned long long v = 0, mult = 1;

	if(!isdigit((unsigned char)*s)){
		return -1;
	}
	for(; isdigit((unsigned char)*s); s++){
		unsigned d = (unsigned)(*s - '0');
		if(v > (ULLONG_MAX - d) / 10){
			return -1;
		}
		v = v * 10 + d;
	}
	switch(*s){
		case '\0': break;
		case 'k': case 'K': mult = 1ull << 10; s++; break;
		case 'm': case 'M': mult = 1ull << 20; s++; break;
		case 'g': case 'G': mult = 1ull << 30; s++; break;
		default: return -1;
	}
	if(*s != '\0' || v > SIZE_MAX / mult){
		return -1;
	}
	*out = (size_t)(v * mult);
	return 0;
}

static void check_parse_size(const char *s)
{
	size_t got = 12345, want = 54321;
	int rc = parse_size(s, &got), ref = ref_parse_size(s, &want);

	FUZZ_CHECK(rc == ref);
	if(rc == 0){
		FUZZ_CHECK(got == want);
	}
}

static bool str_eq(const char *a, const char *b)
{
	return (!a || !b) ? a == b : strcmp(a, b) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t errlens[4] = {256, 1, 0, 40};
	char *pieces[MAX_PIECES];
	struct option_kv opts[MAX_PIECES / 2];
	struct plugin_config cfg;
	const char *location = NULL;
	const char *want_key_file = NULL, *want_db_path = NULL, *want_topics = NULL, *want_control_users = NULL;
	const char *want_dedup_property = DEDUP_PROPERTY_DEFAULT, *want_seq_property = NULL;
	size_t want_map_size = STORE_DEFAULT_MAP_SIZE, want_journal_size = JOURNAL_DEFAULT_SIZE;
	enum sync_mode want_sync = SYNC_TICK;
	unsigned long long want_window = DEDUP_WINDOW_DEFAULT_S, want_ttl = 0;
	size_t want_db_size = 0, want_queued_bytes = 0;
	enum queue_full want_queue_full = QUEUE_FULL_DROP_NEW;
	enum queue_storage want_storage = QUEUE_STORAGE_DISK;
	char err[256];
	size_t errlen, i, start, n = 0;
	int count = 0, rc;
	uint8_t flags;

	if(size < 1){
		return 0;
	}
	flags = data[0];
	errlen = errlens[(flags >> 1) & 3];
	/* Each piece in its own exactly sized block, so an over-read shows. */
	for(start = i = 1; i <= size && n < MAX_PIECES; i++){
		if(i == size || data[i] == '\0' || data[i] == '\n'){
			pieces[n] = malloc(i - start + 1);
			FUZZ_CHECK(pieces[n] != NULL);
			memcpy(pieces[n], data + start, i - start);
			pieces[n][i - start] = '\0';
			n++;
			start = i + 1;
		}
	}
	for(i = 0; i < n; i++){
		check_parse_size(pieces[i]);
	}

	i = 0;
	if((flags & 1) && n > 0){
		location = pieces[i++];
	}
	for(; i < n; i += 2){
		opts[count].key = pieces[i];
		opts[count].value = i + 1 < n ? pieces[i + 1] : NULL;
		count++;
	}

	memset(err, 0x55, sizeof(err));
	rc = config_parse(&cfg, opts, count, location, err, errlen);
	FUZZ_CHECK(rc == 0 || rc == -1);
	if(rc == 0){
		for(int k = 0; k < count; k++){
			const char *key = opts[k].key, *v = opts[k].value;
			if(!strcmp(key, "key_file")){
				want_key_file = v;
			}else if(!strcmp(key, "db_path")){
				want_db_path = v;
			}else if(!strcmp(key, "personal_topics")){
				want_topics = v;
				FUZZ_CHECK(v && !personal_patterns_problem(v));
			}else if(!strcmp(key, "control_users")){
				want_control_users = v;
				/* names, or * alone */
				FUZZ_CHECK(v && strspn(v, " \t") < strlen(v));
				FUZZ_CHECK(!strchr(v, '*') || strspn(v, " \t*") == strlen(v));
			}else if(!strcmp(key, "map_size")){
				FUZZ_CHECK(parse_size(v, &want_map_size) == 0);
			}else if(!strcmp(key, "journal_size")){
				FUZZ_CHECK(parse_size(v, &want_journal_size) == 0);
			}else if(!strcmp(key, "sync")){
				FUZZ_CHECK(v != NULL);
				want_sync = !strcmp(v, "tick") ? SYNC_TICK : !strcmp(v, "publish") ? SYNC_PUBLISH : SYNC_PERIODIC;
				FUZZ_CHECK(want_sync != SYNC_PERIODIC || !strcmp(v, "periodic"));
			}else if(!strcmp(key, "dedup_property")){
				want_dedup_property = v;
			}else if(!strcmp(key, "seq_property")){
				want_seq_property = v;
			}else if(!strcmp(key, "dedup_window")){
				FUZZ_CHECK(parse_duration(v, &want_window) == 0);
			}else if(!strcmp(key, "max_db_size")){
				FUZZ_CHECK(parse_size(v, &want_db_size) == 0);
			}else if(!strcmp(key, "max_queued_bytes")){
				FUZZ_CHECK(parse_size(v, &want_queued_bytes) == 0);
			}else if(!strcmp(key, "queue_full")){
				FUZZ_CHECK(v != NULL);
				want_queue_full = !strcmp(v, "drop-oldest") ? QUEUE_FULL_DROP_OLDEST : QUEUE_FULL_DROP_NEW;
				FUZZ_CHECK(want_queue_full == QUEUE_FULL_DROP_OLDEST || !strcmp(v, "drop-new"));
			}else if(!strcmp(key, "offline_ttl")){
				FUZZ_CHECK(parse_duration(v, &want_ttl) == 0);
			}else if(!strcmp(key, "queue_storage")){
				FUZZ_CHECK(v != NULL);
				want_storage = !strcmp(v, "disk") ? QUEUE_STORAGE_DISK : QUEUE_STORAGE_MEMORY;
				FUZZ_CHECK(want_storage == QUEUE_STORAGE_DISK || !strcmp(v, "memory"));
			}else{
				FUZZ_CHECK(!strcmp(key, "sync_interval_ms") || !strcmp(key, "dedup_max_ids")
						|| !strcmp(key, "metrics_interval") || !strcmp(key, "max_queued_messages")
						|| !strcmp(key, "queue_window"));
			}
		}
		FUZZ_CHECK(want_key_file && str_eq(cfg.key_file, want_key_file));
		FUZZ_CHECK(str_eq(cfg.personal_topics, want_topics));
		FUZZ_CHECK(str_eq(cfg.control_users, want_control_users));
		FUZZ_CHECK(cfg.map_size == want_map_size && cfg.map_size >= (1u << 20));
		FUZZ_CHECK(cfg.journal_size == want_journal_size && cfg.journal_size >= JOURNAL_MIN_SIZE);
		FUZZ_CHECK(cfg.sync == want_sync);
		FUZZ_CHECK(cfg.sync_interval_ms >= 1 && cfg.sync_interval_ms <= 3600000);
		FUZZ_CHECK(str_eq(cfg.dedup_property, want_dedup_property));
		FUZZ_CHECK(str_eq(cfg.seq_property, want_seq_property));
		FUZZ_CHECK(cfg.dedup_window == want_window && want_window <= 30ull * 86400);
		FUZZ_CHECK(cfg.dedup_max_ids >= 1 && cfg.dedup_max_ids <= 10000000);
		FUZZ_CHECK(cfg.max_db_size == want_db_size && (want_db_size == 0 || want_db_size >= (1u << 20)));
		FUZZ_CHECK(cfg.max_queued_bytes == want_queued_bytes);
		FUZZ_CHECK(cfg.max_queued_messages <= 100000000);
		FUZZ_CHECK(cfg.queue_full == want_queue_full);
		FUZZ_CHECK(cfg.offline_ttl == want_ttl && want_ttl <= 3650ull * 86400);
		FUZZ_CHECK(cfg.queue_storage == want_storage);
		FUZZ_CHECK(cfg.queue_window >= 64 && cfg.queue_window <= 10000000);
		FUZZ_CHECK(cfg.db_path != NULL);
		if(want_db_path){
			FUZZ_CHECK(!strcmp(cfg.db_path, want_db_path));
		}else{
			size_t ll;
			FUZZ_CHECK(location && *location);
			ll = strlen(location);
			FUZZ_CHECK(!strncmp(cfg.db_path, location, ll));
			FUZZ_CHECK(!strcmp(cfg.db_path + ll, location[ll - 1] == '/' ? "persist-lmdb" : "/persist-lmdb"));
		}
	}else{
		FUZZ_CHECK(!cfg.db_path && !cfg.key_file && !cfg.personal_topics && !cfg.dedup_property
				&& !cfg.seq_property && !cfg.control_users);
		if(errlen > 0){
			FUZZ_CHECK(memchr(err, '\0', errlen) != NULL);
			FUZZ_CHECK(errlen == 1 || err[0] != '\0');
		}
		for(size_t k = errlen; k < sizeof(err); k++){
			FUZZ_CHECK(err[k] == 0x55); /* nothing written past errlen */
		}
	}
	config_free(&cfg);
	config_free(&cfg); /* idempotent */
	FUZZ_CHECK(!cfg.db_path && !cfg.key_file && !cfg.personal_topics);

	for(i = 0; i < n; i++){
		free(pieces[i]);
	}
	return 0;
}
