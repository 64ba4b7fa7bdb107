/* The LMDB store: schema, sealed reads and writes, one transaction per commit
 * (store.h). This file: the end of a store and its stats; the rest is split
 * by concern (store_int.h). */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void store_close(struct store *st)
{
	if(!st){
		return;
	}
	store_writer_stop(st);
	store_opener_stop(st);
	if(st->env){
		mdb_env_close(st->env);
	}
	if(st->lock_fd >= 0){
		close(st->lock_fd);
	}
	pthread_mutex_destroy(&st->txn_lock);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->wake);
	pthread_cond_destroy(&st->idle);
	seal_free(st->seal);
	seal_free(st->wseal);
	store_hash_cache_free(st);
	/* Plaintext: the scratch records, and values not sealed yet. */
	struct buf *plain[] = {&st->pt, &st->wpt, &st->ops, &st->wops};
	for(size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++){
		if(plain[i]->data){
			seal_wipe(plain[i]->data, plain[i]->cap);
		}
		buf_free(plain[i]);
	}
	free(st->pend);
	u64map_free(&st->refd);
	u64map_free(&st->newb);
	u64map_free(&st->refs0_read);
	free(st->path);
	free(st);
}

uint32_t store_epoch(const struct store *st)
{
	return st->epoch;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void store_get_stats(const struct store *st, struct store_stats *out)
{
	struct store *m = (struct store *)st;

	uint64_t lat[COMMIT_RING];
	size_t n;

	pthread_mutex_lock(&m->lock);
	*out = st->stats;
	out->pending_ops = st->n_ops + st->n_wops;
	out->map_size = st->map_size;
	out->buffer_bytes = st->ops.cap + st->wops.cap + st->pend_cap * sizeof(*st->pend)
		+ u64map_bytes(&st->newb);
	n = st->n_commit_us < COMMIT_RING ? st->n_commit_us : COMMIT_RING;
	memcpy(lat, st->commit_us, n * sizeof(lat[0]));
	pthread_mutex_unlock(&m->lock);
	out->key_id = st->seal ? seal_key_id(st->seal) : 0;
	qsort(lat, n, sizeof(lat[0]), cmp_u64);
	out->commit_us_p50 = n ? lat[n / 2] : 0;
	out->commit_us_p99 = n ? lat[(n * 99) / 100] : 0;
}
