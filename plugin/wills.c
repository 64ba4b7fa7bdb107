/* Wills the broker publishes without telling the plugins: one whose delay
 * ends (its record is deleted a few ticks after the deadline, in the same
 * commit as the copies the broker queued for it), and the will of the
 * client whose going offline the broker is handling (what it publishes for
 * that client until its will ends is its will). */
#include "adapter.h"
#include "array.h"

#include <stdlib.h>
#include <string.h>

/* The broker checks will delays after the plugins' tick, against the clock
 * it read while waiting for sockets in the previous iteration. So a will
 * due at the first tick that sees its deadline is published at the latest
 * in the next iteration, and its routed copies are committed at the tick
 * after that: the third tick that sees the deadline. */
#define WILL_DUE_TICKS 3

void pending_will_forget(struct plugin *pl, const char *clientid)
{
	for(size_t i = 0; i < pl->n_pending_wills; i++){
		if(!strcmp(pl->pending_wills[i].clientid, clientid)){
			free(pl->pending_wills[i].clientid);
			pl->pending_wills[i] = pl->pending_wills[--pl->n_pending_wills];
			return;
		}
	}
}

void will_delay_track(struct plugin *pl, const char *clientid, time_t deadline)
{
	struct pending_will *p;

	pending_will_forget(pl, clientid);
	if(ARRAY_GROW(pl->pending_wills, pl->n_pending_wills, pl->cap_pending_wills, 16)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "persist-lmdb: out of memory tracking the will delay of %s; "
				"its will may be published again after a restart", clientid);
		return;
	}
	p = &pl->pending_wills[pl->n_pending_wills];
	p->clientid = strdup(clientid);
	if(p->clientid){
		p->deadline = deadline;
		p->ticks_due = 0;
		pl->n_pending_wills++;
	}
}

static void leaving_end(struct plugin *pl)
{
	free(pl->leaving);
	pl->leaving = NULL;
}

void pending_wills_expire(struct plugin *pl, time_t now)
{
	/* The broker handled the departure in one go, before this tick. */
	leaving_end(pl);
	for(size_t i = 0; i < pl->n_pending_wills;){
		struct pending_will *p = &pl->pending_wills[i];
		if(now >= p->deadline && ++p->ticks_due >= WILL_DUE_TICKS){
			store_result(store_will_delete(pl->store, p->clientid), "a published will");
			free(p->clientid);
			*p = pl->pending_wills[--pl->n_pending_wills];
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
	if(pl->leaving && !strcmp(pl->leaving, clientid)){
		return true;
	}
	for(size_t i = 0; i < pl->n_pending_wills; i++){
		if(pl->pending_wills[i].deadline <= now && !strcmp(pl->pending_wills[i].clientid, clientid)){
			return true;
		}
	}
	return false;
}

void pending_wills_free(struct plugin *pl)
{
	leaving_end(pl);
	for(size_t i = 0; i < pl->n_pending_wills; i++){
		free(pl->pending_wills[i].clientid);
	}
	free(pl->pending_wills);
	pl->pending_wills = NULL;
	pl->n_pending_wills = pl->cap_pending_wills = 0;
}

void will_leaving(struct plugin *pl, const char *clientid)
{
	free(pl->leaving);
	pl->leaving = strdup(clientid);
}

void will_gone(struct plugin *pl, const char *clientid)
{
	pending_will_forget(pl, clientid);
	if(pl->leaving && clientid && !strcmp(pl->leaving, clientid)){
		leaving_end(pl);
	}
}
