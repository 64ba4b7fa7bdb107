/* Wills the broker publishes without telling the plugins: one whose delay
 * ends (its record is deleted a few ticks after the deadline, in the same
 * commit as the copies the broker queued for it), and the will of the
 * client whose going offline the broker is handling (what it publishes for
 * that client until its will ends is its will). */
#include "feature.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>

/* The broker checks will delays after the plugins' tick, against the clock
 * it read while waiting for sockets in the previous iteration. So a will
 * due at the first tick that sees its deadline is published at the latest
 * in the next iteration, and its routed copies are committed at the tick
 * after that: the third tick that sees the deadline. */
#define WILL_DUE_TICKS 3

/* A will whose delay is running. The broker publishes it when the delay
 * ends and tells no plugin, so its record is deleted here, in the same
 * commit as the copies the broker queued for offline subscribers. */
struct pending_will {
	char *clientid;
	time_t deadline;
	unsigned ticks_due;   /* ticks seen since the deadline passed */
};

struct wills {
	struct pending_will *pending;
	size_t n_pending, cap_pending;
	char *leaving;        /* the client whose going offline the broker is handling: what it
	                         publishes for it, until that client's will ends, is its will */
};

void pending_will_forget(struct plugin *pl, const char *clientid)
{
	for(size_t i = 0; i < pl->wills->n_pending; i++){
		if(!strcmp(pl->wills->pending[i].clientid, clientid)){
			free(pl->wills->pending[i].clientid);
			pl->wills->pending[i] = pl->wills->pending[--pl->wills->n_pending];
			return;
		}
	}
}

void will_delay_track(struct plugin *pl, const char *clientid, time_t deadline)
{
	struct pending_will *p;

	pending_will_forget(pl, clientid);
	if(ARRAY_GROW(pl->wills->pending, pl->wills->n_pending, pl->wills->cap_pending, 16)){
		broker_log(BROKER_LOG_ERR, "persist-lmdb: out of memory tracking the will delay of %s; "
				"its will may be published again after a restart", clientid);
		return;
	}
	p = &pl->wills->pending[pl->wills->n_pending];
	p->clientid = strdup(clientid);
	if(p->clientid){
		p->deadline = deadline;
		p->ticks_due = 0;
		pl->wills->n_pending++;
	}
}

static void leaving_end(struct plugin *pl)
{
	free(pl->wills->leaving);
	pl->wills->leaving = NULL;
}

void pending_wills_expire(struct plugin *pl, time_t now)
{
	/* The broker handled the departure in one go, before this tick. */
	leaving_end(pl);
	for(size_t i = 0; i < pl->wills->n_pending;){
		struct pending_will *p = &pl->wills->pending[i];
		if(now >= p->deadline && ++p->ticks_due >= WILL_DUE_TICKS){
			store_result(store_will_delete(pl->store, p->clientid), "a published will");
			free(p->clientid);
			*p = pl->wills->pending[--pl->wills->n_pending];
		}else{
			i++;
		}
	}
}

bool will_publishing(const struct plugin *pl, const char *clientid)
{
	time_t now = time(NULL);

	if(!clientid){
		return false;
	}
	if(pl->wills->leaving && !strcmp(pl->wills->leaving, clientid)){
		return true;
	}
	for(size_t i = 0; i < pl->wills->n_pending; i++){
		if(pl->wills->pending[i].deadline <= now && !strcmp(pl->wills->pending[i].clientid, clientid)){
			return true;
		}
	}
	return false;
}

struct wills *wills_new(void)
{
	return calloc(1, sizeof(struct wills));
}

void wills_free(struct wills *w)
{
	if(!w){
		return;
	}
	free(w->leaving);
	for(size_t i = 0; i < w->n_pending; i++){
		free(w->pending[i].clientid);
	}
	free(w->pending);
	free(w);
}

void will_leaving(struct plugin *pl, const char *clientid)
{
	free(pl->wills->leaving);
	pl->wills->leaving = strdup(clientid);
}

void will_gone(struct plugin *pl, const char *clientid)
{
	pending_will_forget(pl, clientid);
	if(pl->wills->leaving && clientid && !strcmp(pl->wills->leaving, clientid)){
		leaving_end(pl);
	}
}
