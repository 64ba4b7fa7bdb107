/* Topic matching and personal topic expansion (account deletion).
 *
 * Input: flags (1 byte) | filter \0 topic \0 patterns \0 username \0 clientid.
 * A missing field is ""; flag bits 0, 1 and 2 make username, clientid and
 * patterns NULL instead.
 *
 * topic_matches must agree with a straightforward level-by-level reference
 * whenever the filter is a valid MQTT filter and the topic has no wildcard,
 * and in every case: a filter without wildcards matches exactly an equal
 * non-empty topic; "#" matches every non-empty topic not starting with $.
 * personal_filters must agree with a reference expansion. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "fuzz_common.h"

#define FIELDS 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool has_wildcard(const char *s)
{
	return s && (strchr(s, '+') || strchr(s, '#'));
}

/* Every level is "+", "#" (last level only), or free of + and #. */
static bool filter_valid(const char *f)
{
	for(;;){
		size_t len = strcspn(f, "/");
		bool plus = memchr(f, '+', len) != NULL, hash = memchr(f, '#', len) != NULL;

		if((plus || hash) && len != 1){
			return false;
		}
		if(hash && f[len] != '\0'){
			return false;
		}
		if(f[len] == '\0'){
			return true;
		}
		f += len + 1;
	}
}

static bool ref_matches(const char *f, const char *t)
{
	if(!*f || !*t){
		return false;
	}
	if(t[0] == '$' && (f[0] == '+' || f[0] == '#')){
		return false;
	}
	for(;;){
		size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");

		if(fl == 1 && f[0] == '#'){
			return true;
		}
		if(!(fl == 1 && f[0] == '+') && (fl != tl || memcmp(f, t, fl) != 0)){
			return false;
		}
		f += fl;
		t += tl;
		if(!*f || !*t){
			/* "a/#" also matches "a". */
			return (!*f && !*t) || (!*t && !strcmp(f, "/#"));
		}
		f++;
		t++;
	}
}

static void check_matches(const char *filter, const char *topic)
{
	bool m = topic_matches(filter, topic);

	if(filter_valid(filter) && !has_wildcard(topic)){
		FUZZ_CHECK(m == ref_matches(filter, topic));
	}
	if(!has_wildcard(filter)){
		FUZZ_CHECK(m == (*topic && !strcmp(filter, topic)));
	}
	FUZZ_CHECK(topic_matches("#", topic) == (*topic && topic[0] != '$'));
	if(*topic && !has_wildcard(topic)){
		FUZZ_CHECK(topic_matches(topic, topic));
	}
}

/* The reference expansion of one pattern, or NULL when it names a field
 * the account lacks. */
static char *ref_expand(const char *p, size_t len, const char *username, const char *clientid)
{
	size_t cap = len + 1;
	char *out, *o;

	for(size_t i = 0; i + 1 < len; i++){
		if(p[i] == '%' && (p[i + 1] == 'u' || p[i + 1] == 'c')){
			const char *v = p[i + 1] == 'u' ? username : clientid;
			if(!v){
				return NULL;
			}
			cap += strlen(v);
			i++;
		}
	}
	out = o = malloc(cap);
	FUZZ_CHECK(out != NULL);
	for(size_t i = 0; i < len; i++){
		if(p[i] == '%' && i + 1 < len && (p[i + 1] == 'u' || p[i + 1] == 'c')){
			const char *v = p[i + 1] == 'u' ? username : clientid;
			memcpy(o, v, strlen(v));
			o += strlen(v);
			i++;
		}else{
			*o++ = p[i];
		}
	}
	*o = '\0';
	return out;
}

/* The reference rule for a name in a personal topic: one whole, ordinary
 * level. */
static bool ref_usable(const char *name)
{
	return *name && !strchr(name, '/') && !has_wildcard(name) && name[0] != '$';
}

/* Which fields pattern p (len bytes) names: 1 the username, 2 the client id. */
static unsigned ref_names(const char *p, size_t len)
{
	unsigned f = 0;

	for(size_t i = 0; i + 1 < len; i++){
		if(p[i] == '%' && (p[i + 1] == 'u' || p[i + 1] == 'c')){
			f |= p[i + 1] == 'u' ? 1u : 2u;
			i++;
		}
	}
	return f;
}

static void check_personal(const char *patterns, const char *username, const char *clientid,
		const char *topic)
{
	char **out = NULL;
	unsigned skipped = 99, want_skipped = 0;
	int n = personal_filters(patterns, username, clientid, &out, &skipped);
	int k = 0;

	FUZZ_CHECK(n >= 0);
	if(!patterns){
		FUZZ_CHECK(n == 0 && skipped == 0);
	}else{
		for(const char *p = patterns; *p;){
			size_t len;
			unsigned names, bad = 0;
			char *want;

			p += strspn(p, " \t");
			len = strcspn(p, " \t");
			if(len == 0){
				break;
			}
			names = ref_names(p, len);
			want = ref_expand(p, len, username, clientid);
			p += len;
			if(!want){
				continue;
			}
			if((names & 1) && !ref_usable(username)){
				bad |= PERSONAL_SKIP_USERNAME;
			}
			if((names & 2) && !ref_usable(clientid)){
				bad |= PERSONAL_SKIP_CLIENTID;
			}
			want_skipped |= bad;
			if(!bad){
				FUZZ_CHECK(k < n && !strcmp(out[k], want));
				k++;
			}
			free(want);
		}
		FUZZ_CHECK(k == n);
		FUZZ_CHECK(skipped == want_skipped);
	}
	for(k = 0; k < n; k++){
		(void)topic_matches(out[k], topic);
		if(*out[k] && !has_wildcard(out[k])){
			FUZZ_CHECK(topic_matches(out[k], out[k]));
		}
	}
	account_strings_free(out, (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *field[FIELDS] = {0};
	size_t i, start, n = 0;
	uint8_t flags;

	if(size < 1){
		return 0;
	}
	flags = data[0];
	/* Each field in its own exactly sized block, so an over-read shows. */
	for(start = i = 1; i <= size && n < FIELDS; i++){
		if(i == size || data[i] == '\0'){
			field[n] = malloc(i - start + 1);
			FUZZ_CHECK(field[n] != NULL);
			memcpy(field[n], data + start, i - start);
			field[n][i - start] = '\0';
			n++;
			start = i + 1;
		}
	}
	for(; n < FIELDS; n++){
		field[n] = calloc(1, 1);
		FUZZ_CHECK(field[n] != NULL);
	}

	check_matches(field[0], field[1]);
	check_matches(field[1], field[0]);
	check_personal((flags & 4) ? NULL : field[2], (flags & 1) ? NULL : field[3],
			(flags & 2) ? NULL : field[4], field[1]);

	for(i = 0; i < FIELDS; i++){
		free(field[i]);
	}
	return 0;
}
