/* Account deletion: which sessions and personal retained messages go. */
#include "account.h"

#include <stdlib.h>
#include <string.h>

bool topic_matches(const char *filter, const char *topic)
{
	const char *f = filter, *t = topic;

	if(!*f || !*t){
		return false;
	}
	if(*t == '$' && (*f == '+' || *f == '#')){
		return false;
	}
	for(;;){
		if(f[0] == '#' && f[1] == '\0'){
			return true;
		}
		if(f[0] == '+' && (f[1] == '/' || f[1] == '\0')){
			while(*t && *t != '/'){
				t++;
			}
			f++;
		}else{
			while(*f && *f != '/'){
				if(*f != *t){
					return false;
				}
				f++;
				t++;
			}
			if(*t && *t != '/'){
				return false;
			}
		}
		/* Both at a level end. */
		if(!*f && !*t){
			return true;
		}
		if(!*f){
			return false;
		}
		/* f at '/'. "a/#" also matches "a". */
		if(!*t){
			return f[1] == '#' && f[2] == '\0';
		}
		f++;
		t++;
	}
}

void account_strings_free(char **v, size_t n)
{
	for(size_t i = 0; i < n; i++){
		free(v[i]);
	}
	free(v);
}

static int strings_add(char ***v, size_t *n, char *s)
{
	char **p = realloc(*v, (*n + 1) * sizeof(*p));

	if(!p){
		free(s);
		return -1;
	}
	p[(*n)++] = s;
	*v = p;
	return 0;
}

static bool has_wildcard(const char *s)
{
	return s && (strchr(s, '+') || strchr(s, '#'));
}

/* One pattern with %u / %c replaced, or NULL with *absent when the pattern
 * names a field the account does not have. */
static char *expand(const char *pat, size_t len, const char *username, const char *clientid, bool *absent)
{
	size_t cap = len + 1;
	char *out, *o;

	*absent = false;
	for(size_t i = 0; i + 1 < len; i++){
		if(pat[i] == '%' && (pat[i + 1] == 'u' || pat[i + 1] == 'c')){
			const char *v = pat[i + 1] == 'u' ? username : clientid;
			if(!v){
				*absent = true;
				return NULL;
			}
			cap += strlen(v);
		}
	}
	out = o = malloc(cap);
	if(!out){
		return NULL;
	}
	for(size_t i = 0; i < len; i++){
		if(pat[i] == '%' && i + 1 < len && (pat[i + 1] == 'u' || pat[i + 1] == 'c')){
			const char *v = pat[i + 1] == 'u' ? username : clientid;
			size_t vl = strlen(v);
			memcpy(o, v, vl);
			o += vl;
			i++;
		}else{
			*o++ = pat[i];
		}
	}
	*o = '\0';
	return out;
}

int personal_filters(const char *patterns, const char *username, const char *clientid,
		char ***out, bool *skipped)
{
	size_t n = 0;
	char **v = NULL;

	*out = NULL;
	*skipped = false;
	if(!patterns){
		return 0;
	}
	if(has_wildcard(username) || has_wildcard(clientid)){
		*skipped = true;
		return 0;
	}
	for(const char *p = patterns; *p;){
		size_t len;
		bool absent;
		char *f;

		while(*p == ' ' || *p == '\t'){
			p++;
		}
		len = strcspn(p, " \t");
		if(len == 0){
			break;
		}
		f = expand(p, len, username, clientid, &absent);
		p += len;
		if(absent){
			continue;
		}
		if(!f || strings_add(&v, &n, f)){
			account_strings_free(v, n);
			return -1;
		}
	}
	*out = v;
	return (int)n;
}

struct plan_walk {
	struct store *st;
	const char *username;
	const char *clientid;
	const char *patterns;
	struct account_plan *plan;
	char **filters;
	size_t n_filters;
	int rc;
};

static int count_queued(void *ctx, uint64_t seq, const struct rec_queue *q)
{
	(void)seq;
	(void)q;
	((struct account_plan *)ctx)->queued++;
	return 0;
}

/* Adds the session's personal filters to the plan's filter list. */
static int add_filters(struct plan_walk *pw, const char *username, const char *clientid)
{
	char **f;
	bool skipped;
	int n = personal_filters(pw->patterns, username, clientid, &f, &skipped);

	if(n < 0){
		return -1;
	}
	pw->plan->personal_skipped |= skipped;
	for(int i = 0; i < n; i++){
		if(strings_add(&pw->filters, &pw->n_filters, f[i])){
			for(int j = i + 1; j < n; j++){
				free(f[j]);
			}
			free(f);
			return -1;
		}
	}
	free(f);
	return 0;
}

static int plan_session(void *ctx, const struct rec_session *s)
{
	struct plan_walk *pw = ctx;
	char *id;

	if(pw->username ? !(s->username && !strcmp(s->username, pw->username))
			: strcmp(s->clientid, pw->clientid) != 0){
		return 0;
	}
	id = strdup(s->clientid);
	/* One device of a user goes: the user's own topics (%u) stay for the
	 * others; only deleting by username expands them. */
	if(!id || strings_add(&pw->plan->clientids, &pw->plan->n_clientids, id)
			|| add_filters(pw, pw->username ? s->username : NULL, s->clientid)){
		pw->rc = STORE_ERR_NOMEM;
		return 1;
	}
	return 0;
}

static int plan_retained(void *ctx, const struct rec_retain *r)
{
	struct plan_walk *pw = ctx;
	char *topic;

	for(size_t i = 0; i < pw->n_filters; i++){
		if(topic_matches(pw->filters[i], r->topic)){
			topic = strdup(r->topic);
			if(!topic || strings_add(&pw->plan->retained_topics, &pw->plan->n_retained, topic)){
				pw->rc = STORE_ERR_NOMEM;
				return 1;
			}
			break;
		}
	}
	return 0;
}

int account_plan(struct store *st, const char *username, const char *clientid,
		const char *personal_patterns, struct account_plan *plan)
{
	struct plan_walk pw = {st, username, clientid, personal_patterns, plan, NULL, 0, STORE_OK};
	int rc;

	memset(plan, 0, sizeof(*plan));
	if(!username && !clientid){
		return STORE_ERR_IO;
	}
	rc = username ? store_walk_sessions(st, plan_session, &pw) : session_get(st, clientid, plan_session, &pw);
	/* A client id with no stored session can still own personal topics. */
	if(rc == STORE_OK && pw.rc == STORE_OK && !username && plan->n_clientids == 0
			&& add_filters(&pw, NULL, clientid)){
		pw.rc = STORE_ERR_NOMEM;
	}
	for(size_t i = 0; rc == STORE_OK && pw.rc == STORE_OK && i < plan->n_clientids; i++){
		rc = store_walk_queue(st, plan->clientids[i], count_queued, plan);
	}
	if(rc == STORE_OK && pw.rc == STORE_OK && pw.n_filters){
		rc = store_walk_retained(st, plan_retained, &pw);
	}
	account_strings_free(pw.filters, pw.n_filters);
	if(rc == STORE_OK){
		rc = pw.rc;
	}
	if(rc){
		account_plan_free(plan);
	}
	return rc;
}

int account_apply(struct store *st, const struct account_plan *plan)
{
	int rc = STORE_OK;

	for(size_t i = 0; rc == STORE_OK && i < plan->n_clientids; i++){
		rc = session_delete(st, plan->clientids[i]);
	}
	for(size_t i = 0; rc == STORE_OK && i < plan->n_retained; i++){
		rc = retain_delete(st, plan->retained_topics[i]);
	}
	return rc;
}

void account_plan_free(struct account_plan *plan)
{
	account_strings_free(plan->clientids, plan->n_clientids);
	account_strings_free(plan->retained_topics, plan->n_retained);
	memset(plan, 0, sizeof(*plan));
}
