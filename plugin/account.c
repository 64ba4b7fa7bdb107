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

const char *personal_name_problem(const char *name)
{
	if(!*name){
		return "is empty";
	}
	if(strchr(name, '/')){
		return "contains '/', which would reach into another account's topics";
	}
	if(strchr(name, '+') || strchr(name, '#')){
		return "contains a wildcard (+ or #), which would widen the filter";
	}
	if(name[0] == '$'){
		return "starts with '$', as the broker's own topics do";
	}
	return NULL;
}

const char *personal_patterns_problem(const char *patterns)
{
	for(const char *p = patterns; *p; p++){
		if(p[0] == '%' && (p[1] == 'u' || p[1] == 'c')){
			bool starts = p == patterns || p[-1] == '/' || p[-1] == ' ' || p[-1] == '\t';
			bool ends = p[2] == '\0' || p[2] == '/' || p[2] == ' ' || p[2] == '\t';
			if(!starts || !ends){
				return "%u and %c must each be a whole topic level (as in users/%u/#), so that two "
					"accounts never expand to the same topic";
			}
		}
	}
	return NULL;
}

/* One pattern with %u / %c replaced, or NULL with *absent when the pattern
 * names a field the account does not have, or with *unusable (the field's
 * PERSONAL_SKIP_ bit) when it names one personal_name_problem refuses. */
static char *expand(const char *pat, size_t len, const char *username, const char *clientid, bool *absent,
		unsigned *unusable)
{
	size_t cap = len + 1;
	char *out, *o;

	*absent = false;
	*unusable = 0;
	for(size_t i = 0; i + 1 < len; i++){
		if(pat[i] == '%' && (pat[i + 1] == 'u' || pat[i + 1] == 'c')){
			const char *v = pat[i + 1] == 'u' ? username : clientid;
			if(!v){
				*absent = true;
				*unusable = 0;
				return NULL;
			}
			if(personal_name_problem(v)){
				*unusable |= pat[i + 1] == 'u' ? PERSONAL_SKIP_USERNAME : PERSONAL_SKIP_CLIENTID;
			}
			cap += strlen(v);
		}
	}
	if(*unusable){
		return NULL;
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
		char ***out, unsigned *skipped)
{
	size_t n = 0;
	char **v = NULL;

	*out = NULL;
	*skipped = 0;
	if(!patterns){
		return 0;
	}
	for(const char *p = patterns; *p;){
		size_t len;
		bool absent;
		unsigned unusable;
		char *f;

		while(*p == ' ' || *p == '\t'){
			p++;
		}
		len = strcspn(p, " \t");
		if(len == 0){
			break;
		}
		f = expand(p, len, username, clientid, &absent, &unusable);
		p += len;
		*skipped |= unusable;
		if(absent || unusable){
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

/* Notes a name whose patterns were left out (once per name and kind). */
static int skip_add(struct account_plan *plan, const char *name, bool username)
{
	struct account_skip *p;

	for(size_t i = 0; i < plan->n_skipped; i++){
		if(plan->skipped[i].username == username && !strcmp(plan->skipped[i].name, name)){
			return 0;
		}
	}
	p = realloc(plan->skipped, (plan->n_skipped + 1) * sizeof(*p));
	if(!p){
		return -1;
	}
	plan->skipped = p;
	p[plan->n_skipped] = (struct account_skip){strdup(name), username, personal_name_problem(name)};
	if(!p[plan->n_skipped].name){
		return -1;
	}
	plan->n_skipped++;
	return 0;
}

/* Adds the session's personal filters to the plan's filter list. */
static int add_filters(struct plan_walk *pw, const char *username, const char *clientid)
{
	char **f;
	unsigned skipped;
	int n = personal_filters(pw->patterns, username, clientid, &f, &skipped);

	if(n < 0){
		return -1;
	}
	if(((skipped & PERSONAL_SKIP_USERNAME) && skip_add(pw->plan, username, true))
			|| ((skipped & PERSONAL_SKIP_CLIENTID) && skip_add(pw->plan, clientid, false))){
		account_strings_free(f, (size_t)n);
		return -1;
	}
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
	rc = username ? store_walk_sessions(st, plan_session, &pw) : store_session_get(st, clientid, plan_session, &pw);
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
		rc = store_session_delete(st, plan->clientids[i]);
	}
	for(size_t i = 0; rc == STORE_OK && i < plan->n_retained; i++){
		rc = store_retain_delete(st, plan->retained_topics[i]);
	}
	return rc;
}

void account_plan_free(struct account_plan *plan)
{
	account_strings_free(plan->clientids, plan->n_clientids);
	account_strings_free(plan->retained_topics, plan->n_retained);
	for(size_t i = 0; i < plan->n_skipped; i++){
		free(plan->skipped[i].name);
	}
	free(plan->skipped);
	memset(plan, 0, sizeof(*plan));
}
