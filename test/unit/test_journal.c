/* The intake journal on a temporary directory with a real seal: append and
 * replay across reopen, lsn continuation, wrap-around of the ring, a full
 * ring and release, the record size bound, torn, forged and foreign records,
 * files that are not a journal, opening for reading, and the size of an
 * existing journal. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "seal.h"
#include "unit_util.h"

/* The file layout documented in journal.h: a 4 KiB header ("PLMDB-J1",
 * size), then records at 16-byte aligned offsets: magic (4, little-endian
 * 0x4a524532; earlier versions' 0x4a524543) | sealed length (4,
 * little-endian) | lsn (8, big-endian) | sealed plaintext. */
#define HDR 4096u
#define REC_HEAD 16u
#define REC_MAGIC 0x4a524532u

static size_t need_of(size_t len)
{
	return (REC_HEAD + len + SEAL_OVERHEAD + 15) & ~(size_t)15;
}

static uint32_t le32_get(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32_put(uint8_t *p, uint32_t v)
{
	for(int i = 0; i < 4; i++){
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint64_t be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for(int i = 0; i < 8; i++){
		v = (v << 8) | p[i];
	}
	return v;
}

static void be64_put(uint8_t *p, uint64_t v)
{
	for(int i = 7; i >= 0; i--){
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

/* ---- fixture ---- */

struct fx {
	struct ut_tmp tmp;   /* path: the journal file */
	uint32_t epoch;  /* a fresh nonce epoch for every seal made */
	struct seal *seal;
	struct journal *j;
};

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if(!fx || ut_tmp_make(&fx->tmp, "journal", 0x31, 7)){
		free(fx);
		return -1;
	}
	fx->epoch = 1;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;

	journal_close(fx->j);
	seal_free(fx->seal);
	ut_tmp_remove(&fx->tmp);
	free(fx);
	return 0;
}

static void epoch_salt(uint32_t epoch, uint8_t salt[SEAL_SALT_LEN])
{
	memset(salt, (int)(epoch * 7 + 1), SEAL_SALT_LEN);
	salt[0] = (uint8_t)epoch;
}

/* A seal of a new epoch that opens what the earlier ones sealed, as the
 * store's seal learns every salt of its database. */
static struct seal *make_seal(struct fx *fx, const uint8_t key[SEAL_KEY_LEN])
{
	struct seal *s = seal_new(key, 1);
	uint8_t salt[SEAL_SALT_LEN];

	assert_non_null(s);
	for(uint32_t e = 1; e < fx->epoch; e++){
		epoch_salt(e, salt);
		assert_int_equal(seal_learn_epoch(s, e, salt), SEAL_OK);
	}
	epoch_salt(fx->epoch, salt);
	assert_int_equal(seal_set_epoch(s, fx->epoch++, salt), SEAL_OK);
	return s;
}

/* Opens fx->tmp.dir's journal with a new seal of fx->tmp.key (closing what is open). */
static struct journal *jopen(struct fx *fx, size_t size)
{
	char err[512] = "";
	int rc;

	journal_close(fx->j);
	fx->j = NULL;
	seal_free(fx->seal);
	fx->seal = make_seal(fx, fx->tmp.key);
	rc = journal_open(&fx->j, fx->tmp.dir, size, fx->seal, false, err, sizeof(err));
	if(rc != JOURNAL_OK){
		fail_msg("journal_open failed: %d %s", rc, err);
	}
	assert_non_null(fx->j);
	return fx->j;
}

static void jclose(struct fx *fx)
{
	journal_close(fx->j);
	fx->j = NULL;
}

/* ---- record content: a function of the lsn ---- */

static size_t len_of(uint64_t lsn)
{
	return (size_t)(lsn * 7919 % 3001);
}

static void fill(uint8_t *p, size_t len, uint64_t lsn, uint8_t salt)
{
	for(size_t i = 0; i < len; i++){
		p[i] = (uint8_t)(lsn * 131 + i * 7 + (i >> 8) + salt);
	}
}

static uint64_t append_ok(struct journal *j, uint64_t want_lsn, size_t len, uint8_t salt, bool sync)
{
	uint8_t *p = malloc(len ? len : 1);
	uint64_t lsn = 0;
	int rc;

	assert_non_null(p);
	fill(p, len, want_lsn, salt);
	rc = journal_append(j, p, len, sync, &lsn);
	free(p);
	if(rc != JOURNAL_OK){
		fail_msg("journal_append of %zu bytes (lsn %llu) failed: %s", len,
				(unsigned long long)want_lsn, journal_strerror(rc));
	}
	assert_uint_equal(lsn, want_lsn);
	assert_uint_equal(journal_last_lsn(j), want_lsn);
	return lsn;
}

/* ---- replay collector ---- */

struct rec {
	uint64_t lsn;
	uint8_t *data;
	size_t len;
};

struct coll {
	struct rec *v;
	size_t n, cap;
	int stop_rc;
};

static int collect(void *ctx, uint64_t lsn, const uint8_t *pt, size_t len)
{
	struct coll *c = ctx;

	if(c->n == c->cap){
		c->cap = c->cap ? c->cap * 2 : 64;
		c->v = realloc(c->v, c->cap * sizeof(*c->v));
		assert_non_null(c->v);
	}
	c->v[c->n].lsn = lsn;
	c->v[c->n].len = len;
	c->v[c->n].data = malloc(len ? len : 1);
	assert_non_null(c->v[c->n].data);
	memcpy(c->v[c->n].data, pt, len);
	c->n++;
	return c->stop_rc;
}

static void coll_free(struct coll *c)
{
	for(size_t i = 0; i < c->n; i++){
		free(c->v[i].data);
	}
	free(c->v);
	memset(c, 0, sizeof(*c));
}

static struct coll replay_ok(struct journal *j, uint64_t after, uint64_t *unreadable)
{
	struct coll c = {0};
	int rc = journal_replay(j, after, collect, &c, unreadable);

	if(rc != JOURNAL_OK){
		fail_msg("journal_replay failed: %s", journal_strerror(rc));
	}
	return c;
}

/* c holds exactly the records first..last (lengths from len_of, content
 * from fill with salt), in lsn order. */
static void assert_records(const struct coll *c, uint64_t first, uint64_t last, uint8_t salt)
{
	uint8_t *want = malloc(70000);

	assert_non_null(want);
	assert_uint_equal(c->n, last >= first ? last - first + 1 : 0);
	for(size_t i = 0; i < c->n; i++){
		uint64_t lsn = first + i;
		size_t len = len_of(lsn);
		assert_uint_equal(c->v[i].lsn, lsn);
		assert_uint_equal(c->v[i].len, len);
		fill(want, len, lsn, salt);
		if(len){
			assert_memory_equal(c->v[i].data, want, len);
		}
	}
	free(want);
}

/* ---- direct access to the file (with the journal closed) ---- */

/* Offsets of the records of a journal that has not wrapped, in file order. */
static size_t rec_offsets(const uint8_t *f, size_t size, size_t *offs, size_t max)
{
	size_t n = 0, off = HDR;

	while(n < max && off + REC_HEAD <= size && le32_get(f + off) == REC_MAGIC){
		offs[n++] = off;
		off += (REC_HEAD + le32_get(f + off + 4) + 15) & ~(size_t)15;
	}
	return n;
}

static uint8_t *file_read(struct fx *fx, size_t *len)
{
	uint8_t *f = ut_read_file(fx->tmp.path, len);
	assert_non_null(f);
	return f;
}

static void file_write(struct fx *fx, const uint8_t *f, size_t len)
{
	assert_int_equal(ut_write_file(fx->tmp.path, f, len, 0600), 0);
}

/* ---- tests ---- */

static void test_append_and_replay(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	uint64_t unreadable = 99;
	size_t used = 0;
	struct coll c;
	struct stat sb;

	assert_uint_equal(journal_size(j), JOURNAL_MIN_SIZE);
	assert_uint_equal(journal_used(j), 0);
	assert_uint_equal(journal_last_lsn(j), 0);
	assert_int_equal(stat(fx->tmp.path, &sb), 0);
	assert_uint_equal((size_t)sb.st_size, JOURNAL_MIN_SIZE);
	assert_int_equal(sb.st_mode & 0777, 0600);

	/* A fresh journal replays nothing. */
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(c.n, 0);
	assert_uint_equal(unreadable, 0);
	coll_free(&c);

	for(uint64_t lsn = 1; lsn <= 50; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, false);
		used += need_of(len_of(lsn));
		assert_uint_equal(journal_used(j), used);
	}
	/* An empty record. */
	{
		uint64_t lsn = 0;
		uint8_t dummy = 0;
		assert_int_equal(journal_append(j, &dummy, 0, false, &lsn), JOURNAL_OK);
		assert_uint_equal(lsn, 51);
		used += need_of(0);
		assert_uint_equal(journal_used(j), used);
	}
	jclose(fx);

	/* Reopened: everything, in order, exactly. */
	j = jopen(fx, JOURNAL_MIN_SIZE);
	assert_uint_equal(journal_last_lsn(j), 0);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_uint_equal(c.n, 51);
	assert_uint_equal(c.v[50].lsn, 51);
	assert_uint_equal(c.v[50].len, 0);
	c.n = 50;
	assert_records(&c, 1, 50, 0);
	c.n = 51;
	coll_free(&c);
	/* Nothing was released: the replayed records still hold their space. */
	assert_uint_equal(journal_used(j), used);
	/* The lsn goes on after the replayed records. */
	assert_uint_equal(journal_last_lsn(j), 51);
	append_ok(j, 52, len_of(52), 0, false);
	jclose(fx);

	/* Only the records above after are returned; the lsn still goes on
	 * after the highest one seen. */
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 30, &unreadable);
	assert_uint_equal(unreadable, 0);
	c.n--; /* 31..50 by len_of, then 51 (empty), then 52 */
	assert_uint_equal(c.v[c.n].lsn, 52);
	c.n--;
	assert_uint_equal(c.v[c.n].lsn, 51);
	assert_records(&c, 31, 50, 0);
	c.n += 2;
	coll_free(&c);
	assert_uint_equal(journal_last_lsn(j), 52);
	jclose(fx);

	/* after above every record: nothing, and the next lsn follows after. */
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 1000, &unreadable);
	assert_uint_equal(c.n, 0);
	assert_uint_equal(unreadable, 0);
	coll_free(&c);
	assert_uint_equal(journal_last_lsn(j), 1000);
	assert_uint_equal(journal_used(j), 0);
	append_ok(j, 1001, len_of(1001), 0, false);
	jclose(fx);

	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 1000, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_records(&c, 1001, 1001, 0);
	coll_free(&c);
}

static int stop_at_third(void *ctx, uint64_t lsn, const uint8_t *pt, size_t len)
{
	int *n = ctx;

	(void)lsn;
	(void)pt;
	(void)len;
	return ++*n == 3 ? 77 : 0;
}

static void test_replay_callback_error(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	uint64_t unreadable;
	int n = 0;

	for(uint64_t lsn = 1; lsn <= 5; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, false);
	}
	jclose(fx);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	assert_int_equal(journal_replay(j, 0, stop_at_third, &n, &unreadable), 77);
	assert_int_equal(n, 3);
}

/* The ring at its minimum size wraps many times while records are released
 * behind the head; what is left unreleased at a close is exactly what a
 * replay returns, and the ring state a replay rebuilds carries on. */
static void test_wrap_around(void **state)
{
	static const uint64_t windows[] = {25, 1, 60, 0, 7, 40};
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	const size_t ring = JOURNAL_MIN_SIZE - HDR;
	uint64_t lsn = 0, released = 0, unreadable;
	struct coll c;

	c = replay_ok(j, 0, &unreadable);
	coll_free(&c);
	for(size_t round = 0; round < sizeof(windows) / sizeof(windows[0]); round++){
		const uint64_t w = windows[round];
		size_t bytes = 0;

		while(bytes < 5 * ring){
			lsn++;
			append_ok(j, lsn, len_of(lsn), 0, false);
			bytes += need_of(len_of(lsn));
			if(lsn > w && lsn - w > released){
				released = lsn - w;
				journal_release(j, released);
			}
			/* The unreleased records, plus at most one wrap's waste. */
			size_t held = 0;
			for(uint64_t l = released + 1; l <= lsn; l++){
				held += need_of(len_of(l));
			}
			size_t used = journal_used(j);
			if(used < held || used >= held + need_of(3000)){
				fail_msg("round %zu lsn %llu: %zu bytes used for %zu bytes held", round,
						(unsigned long long)lsn, used, held);
			}
		}
		jclose(fx);

		j = jopen(fx, JOURNAL_MIN_SIZE);
		c = replay_ok(j, released, &unreadable);
		assert_uint_equal(unreadable, 0);
		assert_records(&c, released + 1, lsn, 0);
		assert_uint_equal(c.n, w);
		coll_free(&c);
		assert_uint_equal(journal_last_lsn(j), lsn);
		size_t held = 0;
		for(uint64_t l = released + 1; l <= lsn; l++){
			held += need_of(len_of(l));
		}
		assert_true(journal_used(j) >= held);
		assert_true(journal_used(j) < held + need_of(3000));
	}

	/* Release everything: the ring is empty. */
	journal_release(j, lsn);
	assert_uint_equal(journal_used(j), 0);
}

/* Nothing released: the ring fills up; a release makes room again. */
static void test_full_and_release(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	const size_t ring = JOURNAL_MIN_SIZE - HDR, len = 1000, need = need_of(len);
	uint8_t pt[1000];
	uint64_t lsn = 0, got;
	uint64_t unreadable;
	struct coll c;
	int rc;

	c = replay_ok(j, 0, &unreadable);
	coll_free(&c);
	for(;;){
		fill(pt, len, lsn + 1, 0);
		rc = journal_append(j, pt, len, false, &got);
		if(rc != JOURNAL_OK){
			break;
		}
		assert_uint_equal(got, ++lsn);
	}
	assert_int_equal(rc, JOURNAL_FULL);
	assert_uint_equal(lsn, ring / need);
	assert_uint_equal(journal_used(j), lsn * need);
	/* A failed append takes no lsn and no space; it stays full. */
	assert_uint_equal(journal_last_lsn(j), lsn);
	assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_FULL);
	assert_int_equal(journal_append(j, pt, len, true, &got), JOURNAL_FULL);
	assert_uint_equal(journal_last_lsn(j), lsn);
	assert_uint_equal(journal_used(j), lsn * need);

	/* Releasing nothing (mark 0) changes nothing. */
	journal_release(j, 0);
	assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_FULL);

	/* One record released: one record of the same size fits (at the start
	 * of the ring), and no more. */
	journal_release(j, 1);
	assert_uint_equal(journal_used(j), (lsn - 1) * need);
	fill(pt, len, lsn + 1, 0);
	assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_OK);
	assert_uint_equal(got, ++lsn);
	assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_FULL);

	/* Three more released: three fit. */
	journal_release(j, 4);
	for(int i = 0; i < 3; i++){
		fill(pt, len, lsn + 1, 0);
		assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_OK);
		assert_uint_equal(got, ++lsn);
	}
	assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_FULL);
	jclose(fx);

	/* What was not released replays, across the wrap. */
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 4, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_uint_equal(c.n, lsn - 4);
	for(size_t i = 0; i < c.n; i++){
		assert_uint_equal(c.v[i].lsn, 5 + i);
		assert_uint_equal(c.v[i].len, len);
		fill(pt, len, 5 + i, 0);
		assert_memory_equal(c.v[i].data, pt, len);
	}
	coll_free(&c);
	/* Still full after the replay; all of it released, all of it free. */
	assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_FULL);
	journal_release(j, lsn);
	assert_uint_equal(journal_used(j), 0);
	fill(pt, len, lsn + 1, 0);
	assert_int_equal(journal_append(j, pt, len, false, &got), JOURNAL_OK);
	assert_uint_equal(got, lsn + 1);
	assert_uint_equal(journal_used(j), need);
}

/* A record may take at most a quarter of the ring. */
static void test_too_large(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	const size_t quarter = ((JOURNAL_MIN_SIZE - HDR) / 4) & ~(size_t)15;
	const size_t max_len = quarter - REC_HEAD - SEAL_OVERHEAD;
	uint8_t *pt = calloc(1, max_len + 100);
	uint64_t lsn = 0, unreadable;
	struct coll c;

	assert_non_null(pt);
	c = replay_ok(j, 0, &unreadable);
	coll_free(&c);
	assert_uint_equal(need_of(max_len), quarter);
	assert_int_equal(journal_append(j, pt, max_len + 1, false, &lsn), JOURNAL_TOO_LARGE);
	assert_int_equal(journal_append(j, pt, max_len + 100, true, &lsn), JOURNAL_TOO_LARGE);
	assert_uint_equal(journal_last_lsn(j), 0);
	assert_uint_equal(journal_used(j), 0);
	fill(pt, max_len, 1, 0);
	assert_int_equal(journal_append(j, pt, max_len, false, &lsn), JOURNAL_OK);
	assert_uint_equal(lsn, 1);
	assert_uint_equal(journal_used(j), quarter);
	/* Four of the largest fill the ring exactly. */
	for(uint64_t l = 2; l <= 4; l++){
		fill(pt, max_len, l, 0);
		assert_int_equal(journal_append(j, pt, max_len, false, &lsn), JOURNAL_OK);
		assert_uint_equal(lsn, l);
	}
	assert_uint_equal(journal_used(j), 4 * quarter);
	assert_int_equal(journal_append(j, pt, 1, false, &lsn), JOURNAL_FULL);
	jclose(fx);

	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_uint_equal(c.n, 4);
	for(size_t i = 0; i < 4; i++){
		assert_uint_equal(c.v[i].lsn, i + 1);
		assert_uint_equal(c.v[i].len, max_len);
		fill(pt, max_len, i + 1, 0);
		assert_memory_equal(c.v[i].data, pt, max_len);
	}
	coll_free(&c);
	/* Replayed without a release, the whole ring is still held. */
	assert_uint_equal(journal_used(j), 4 * quarter);
	assert_int_equal(journal_append(j, pt, 1, false, &lsn), JOURNAL_FULL);
	journal_release(j, 2);
	assert_int_equal(journal_append(j, pt, max_len, false, &lsn), JOURNAL_OK);
	assert_uint_equal(lsn, 5);
	free(pt);
}

/* The last record torn by a crash: not returned; counted as unreadable when
 * it still looks like a record; its lsn and place are used again. */
static void test_torn_record(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	uint64_t unreadable;
	size_t flen, offs[16], n;
	uint8_t *f;
	struct coll c;

	for(uint64_t lsn = 1; lsn <= 5; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, false);
	}
	jclose(fx);

	/* Garbage over the sealed part of record 5. */
	f = file_read(fx, &flen);
	n = rec_offsets(f, flen, offs, 16);
	assert_uint_equal(n, 5);
	assert_uint_equal(be64_get(f + offs[4] + 8), 5);
	memset(f + offs[4] + REC_HEAD + 20, 0xa5, 64);
	file_write(fx, f, flen);
	free(f);

	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 1);
	assert_records(&c, 1, 4, 0);
	coll_free(&c);
	assert_uint_equal(journal_last_lsn(j), 4);
	/* lsn 5 is written again, over the torn record. */
	append_ok(j, 5, len_of(5), 9, false);
	jclose(fx);
	f = file_read(fx, &flen);
	assert_uint_equal(rec_offsets(f, flen, offs + 8, 8), 5);
	assert_uint_equal(offs[8 + 4], offs[4]);
	free(f);

	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_uint_equal(c.n, 5);
	c.n = 4;
	assert_records(&c, 1, 4, 0);
	c.n = 5;
	{
		uint8_t want[3001];
		fill(want, len_of(5), 5, 9);
		assert_uint_equal(c.v[4].lsn, 5);
		assert_uint_equal(c.v[4].len, len_of(5));
		assert_memory_equal(c.v[4].data, want, len_of(5));
	}
	coll_free(&c);
	append_ok(j, 6, len_of(6), 0, false);
	jclose(fx);

	/* Record 6 stopped before its magic was written: no record at all. */
	f = file_read(fx, &flen);
	n = rec_offsets(f, flen, offs, 16);
	assert_uint_equal(n, 6);
	le32_put(f + offs[5], 0);
	file_write(fx, f, flen);
	free(f);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_uint_equal(c.n, 5);
	assert_uint_equal(c.v[4].lsn, 5);
	coll_free(&c);
	assert_uint_equal(journal_last_lsn(j), 5);
	append_ok(j, 6, len_of(6), 0, false);
	append_ok(j, 7, len_of(7), 0, false);
	jclose(fx);

	/* A magic with a length that cannot be a record (beyond the file, or
	 * shorter than the seal) does not look like a record either. */
	f = file_read(fx, &flen);
	n = rec_offsets(f, flen, offs, 16);
	assert_uint_equal(n, 7);
	le32_put(f + offs[6] + 4, 0xfffffff0u);
	file_write(fx, f, flen);
	free(f);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_uint_equal(c.n, 6);
	coll_free(&c);
	jclose(fx);
	f = file_read(fx, &flen);
	le32_put(f + offs[6] + 4, SEAL_OVERHEAD - 1);
	file_write(fx, f, flen);
	free(f);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_uint_equal(c.n, 6);
	coll_free(&c);
	jclose(fx);

	/* With a plausible length but a wrong one, it looks like a record. */
	f = file_read(fx, &flen);
	le32_put(f + offs[6] + 4, (uint32_t)(len_of(7) + SEAL_OVERHEAD - 1));
	file_write(fx, f, flen);
	free(f);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 1);
	assert_uint_equal(c.n, 6);
	coll_free(&c);
}

/* Records sealed under another key, and a record whose lsn field was
 * changed in the file, do not authenticate. */
static void test_forged_records(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	uint8_t other_key[SEAL_KEY_LEN];
	struct seal *other;
	struct journal *oj = NULL;
	uint64_t unreadable;
	size_t flen, offs[8];
	uint8_t *f;
	struct coll c;
	char err[512];

	for(uint64_t lsn = 1; lsn <= 3; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, false);
	}
	jclose(fx);

	memcpy(other_key, fx->tmp.key, sizeof(other_key));
	other_key[0] ^= 1;
	other = make_seal(fx, other_key);
	assert_int_equal(journal_open(&oj, fx->tmp.dir, JOURNAL_MIN_SIZE, other, false, err, sizeof(err)), JOURNAL_OK);
	c = replay_ok(oj, 0, &unreadable);
	assert_uint_equal(c.n, 0);
	assert_uint_equal(unreadable, 3);
	coll_free(&c);
	assert_uint_equal(journal_last_lsn(oj), 0);
	journal_close(oj);
	seal_free(other);

	/* The right key still reads them all. */
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_records(&c, 1, 3, 0);
	coll_free(&c);
	jclose(fx);

	/* Record 2 claims lsn 7. */
	f = file_read(fx, &flen);
	assert_uint_equal(rec_offsets(f, flen, offs, 8), 3);
	assert_uint_equal(be64_get(f + offs[1] + 8), 2);
	be64_put(f + offs[1] + 8, 7);
	file_write(fx, f, flen);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 1);
	assert_uint_equal(c.n, 2);
	assert_uint_equal(c.v[0].lsn, 1);
	assert_uint_equal(c.v[1].lsn, 3);
	coll_free(&c);
	assert_uint_equal(journal_last_lsn(j), 3);
	jclose(fx);

	/* Records 2 and 3 swap lsns: neither authenticates. */
	be64_put(f + offs[1] + 8, 3);
	be64_put(f + offs[2] + 8, 2);
	file_write(fx, f, flen);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 2);
	assert_records(&c, 1, 1, 0);
	coll_free(&c);
	jclose(fx);
	free(f);
}

/* A record is bound to its place in the ring: a copy of it elsewhere does
 * not authenticate, and a record moved elsewhere is not replayed. */
static void test_moved_record_not_replayed(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	uint64_t unreadable;
	size_t flen, offs[8], far = HDR + 100 * 1024;
	uint8_t *f;
	struct coll c;

	for(uint64_t lsn = 1; lsn <= 3; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, false);
	}
	jclose(fx);
	f = file_read(fx, &flen);
	assert_uint_equal(rec_offsets(f, flen, offs, 8), 3);
	assert_true(offs[2] + need_of(len_of(3)) < far);

	/* A copy of record 2 far away: the original is returned, once. */
	memcpy(f + far, f + offs[1], need_of(len_of(2)));
	file_write(fx, f, flen);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 1);
	assert_records(&c, 1, 3, 0);
	coll_free(&c);
	jclose(fx);

	/* Record 3 moved there (its place wiped): it is not replayed. */
	memcpy(f + far, f + offs[2], need_of(len_of(3)));
	memset(f + offs[2], 0, need_of(len_of(3)));
	file_write(fx, f, flen);
	free(f);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 1);
	assert_records(&c, 1, 2, 0);
	coll_free(&c);
}

static void expect_format_error(struct fx *fx, const char *why)
{
	struct journal *j = (struct journal *)fx; /* any non-NULL value: must come back NULL */
	struct seal *s = make_seal(fx, fx->tmp.key);
	char err[512] = "";
	int rc = journal_open(&j, fx->tmp.dir, JOURNAL_MIN_SIZE, s, false, err, sizeof(err));

	seal_free(s);
	if(rc != JOURNAL_ERR_FORMAT){
		journal_close(rc == JOURNAL_OK ? j : NULL);
		fail_msg("%s: journal_open gave %d, not JOURNAL_ERR_FORMAT", why, rc);
	}
	assert_null(j);
	assert_true(err[0] != '\0');
}

static void test_not_a_journal(void **state)
{
	struct fx *fx = *state;
	uint8_t *f, *good, *back;
	size_t glen, blen;

	/* Zeros of the right size: no magic. */
	f = calloc(1, 2 * JOURNAL_MIN_SIZE);
	assert_non_null(f);
	file_write(fx, f, JOURNAL_MIN_SIZE);
	expect_format_error(fx, "zeros");
	/* Left as it was, not recreated. */
	back = file_read(fx, &blen);
	assert_uint_equal(blen, JOURNAL_MIN_SIZE);
	assert_memory_equal(back, f, blen);
	free(back);

	/* Too small, or not a multiple of the header size. */
	file_write(fx, f, 100);
	expect_format_error(fx, "100 bytes");
	file_write(fx, f, 0);
	expect_format_error(fx, "empty");
	file_write(fx, f, JOURNAL_MIN_SIZE - HDR);
	expect_format_error(fx, "below the minimum");
	file_write(fx, f, JOURNAL_MIN_SIZE + 1);
	expect_format_error(fx, "one byte over");

	/* A real journal... */
	unlink(fx->tmp.path);
	jopen(fx, JOURNAL_MIN_SIZE);
	append_ok(fx->j, 1, 10, 0, false);
	jclose(fx);
	good = file_read(fx, &glen);
	assert_uint_equal(glen, JOURNAL_MIN_SIZE);
	assert_memory_equal(good, "PLMDB-J1", 8);

	/* ...with one byte of its magic changed. */
	memcpy(f, good, glen);
	f[7] = '2';
	file_write(fx, f, glen);
	expect_format_error(fx, "magic");

	/* ...grown on disk: the header's size no longer matches. */
	memcpy(f, good, glen);
	memset(f + glen, 0, glen);
	file_write(fx, f, 2 * glen);
	expect_format_error(fx, "grown");

	/* ...with the size in its header changed. */
	memcpy(f, good, glen);
	be64_put(f + 8, 2 * glen);
	file_write(fx, f, glen);
	expect_format_error(fx, "header size");

	/* Restored, it opens and replays. */
	file_write(fx, good, glen);
	{
		uint64_t unreadable;
		jopen(fx, JOURNAL_MIN_SIZE);
		struct coll c = replay_ok(fx->j, 0, &unreadable);
		assert_uint_equal(c.n, 1);
		coll_free(&c);
		jclose(fx);
	}
	free(good);
	free(f);

	/* A directory that does not exist is an I/O error. */
	{
		struct journal *j = NULL;
		struct seal *s = make_seal(fx, fx->tmp.key);
		char *missing = ut_join(fx->tmp.dir, "missing");
		char err[512] = "";
		assert_int_equal(journal_open(&j, missing, JOURNAL_MIN_SIZE, s, false, err, sizeof(err)),
				JOURNAL_ERR_IO);
		assert_null(j);
		assert_true(err[0] != '\0');
		free(missing);
		seal_free(s);
	}
}

/* Opening for reading never creates a journal, and reads one like
 * journal_open does. */
static void test_open_read(void **state)
{
	struct fx *fx = *state;
	struct journal *rj = (struct journal *)fx;
	struct seal *s = make_seal(fx, fx->tmp.key);
	uint64_t unreadable;
	struct coll c;
	char err[512] = "";

	assert_int_equal(journal_open_read(&rj, fx->tmp.dir, s, err, sizeof(err)), JOURNAL_OK);
	assert_null(rj);
	assert_int_equal(access(fx->tmp.path, F_OK), -1);

	struct journal *j = jopen(fx, 2 * JOURNAL_MIN_SIZE);
	for(uint64_t lsn = 1; lsn <= 9; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, false);
	}
	/* A reader knows the writer's epoch, as the store's seal learns it. */
	seal_free(s);
	s = make_seal(fx, fx->tmp.key);
	/* Read while the writer has it open, then after it closed. */
	for(int round = 0; round < 2; round++){
		assert_int_equal(journal_open_read(&rj, fx->tmp.dir, s, err, sizeof(err)), JOURNAL_OK);
		assert_non_null(rj);
		assert_uint_equal(journal_size(rj), 2 * JOURNAL_MIN_SIZE);
		c = replay_ok(rj, 3, &unreadable);
		assert_uint_equal(unreadable, 0);
		assert_records(&c, 4, 9, 0);
		coll_free(&c);
		assert_uint_equal(journal_last_lsn(rj), 9);
		journal_close(rj);
		jclose(fx);
	}

	/* Not a journal. */
	uint8_t zeros[64] = {0};
	assert_int_equal(ut_write_file(fx->tmp.path, zeros, sizeof(zeros), 0600), 0);
	rj = (struct journal *)fx;
	assert_int_equal(journal_open_read(&rj, fx->tmp.dir, s, err, sizeof(err)), JOURNAL_ERR_FORMAT);
	assert_null(rj);
	seal_free(s);
}

static size_t file_size(const char *path)
{
	struct stat sb;

	assert_int_equal(stat(path, &sb), 0);
	return (size_t)sb.st_size;
}

static void test_size(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	char *tmp = ut_join(fx->tmp.dir, "journal.new");

	assert_uint_equal(journal_size(j), JOURNAL_MIN_SIZE);
	append_ok(j, 1, len_of(1), 0, false);
	jclose(fx);
	assert_int_equal(access(tmp, F_OK), -1);

	/* An existing journal keeps its size, larger or smaller asked. */
	j = jopen(fx, 4 * JOURNAL_MIN_SIZE);
	assert_uint_equal(journal_size(j), JOURNAL_MIN_SIZE);
	assert_uint_equal(file_size(fx->tmp.path), JOURNAL_MIN_SIZE);
	{
		uint64_t unreadable;
		struct coll c = replay_ok(j, 0, &unreadable);
		assert_records(&c, 1, 1, 0);
		coll_free(&c);
	}
	jclose(fx);

	/* New journals: rounded up to whole 4 KiB, at least the minimum. */
	static const struct {
		size_t ask, want;
	} cases[] = {
		{0, JOURNAL_MIN_SIZE},
		{1000, JOURNAL_MIN_SIZE},
		{JOURNAL_MIN_SIZE - 1, JOURNAL_MIN_SIZE},
		{JOURNAL_MIN_SIZE + 1, JOURNAL_MIN_SIZE + HDR},
		{300000, 303104},
		{1u << 20, 1u << 20},
	};
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		assert_int_equal(unlink(fx->tmp.path), 0);
		j = jopen(fx, cases[i].ask);
		assert_uint_equal(journal_size(j), cases[i].want);
		assert_uint_equal(file_size(fx->tmp.path), cases[i].want);
		assert_uint_equal(journal_used(j), 0);
		jclose(fx);
		assert_int_equal(access(tmp, F_OK), -1);
		j = jopen(fx, JOURNAL_MIN_SIZE);
		assert_uint_equal(journal_size(j), cases[i].want);
		jclose(fx);
	}

	/* A bigger ring takes bigger records: a quarter of it. */
	{
		const size_t size = 1u << 20;
		const size_t max_len = ((size - HDR) / 4 & ~(size_t)15) - REC_HEAD - SEAL_OVERHEAD;
		uint8_t *pt = calloc(1, max_len + 1);
		uint64_t lsn;
		assert_non_null(pt);
		j = jopen(fx, size);
		assert_int_equal(journal_append(j, pt, max_len + 1, false, &lsn), JOURNAL_TOO_LARGE);
		assert_int_equal(journal_append(j, pt, max_len, false, &lsn), JOURNAL_OK);
		free(pt);
	}
	free(tmp);
}

/* Dropping the mapping's pages loses nothing: records written through it
 * before (not synced), and after into the same pages, replay whole, in the
 * open journal and after it is opened again. */
static void test_release_memory(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	uint64_t unreadable;
	struct coll c;

	c = replay_ok(j, 0, &unreadable);
	coll_free(&c);
	for(uint64_t lsn = 1; lsn <= 100; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, false);
		if(lsn % 50 == 25){
			journal_release_memory(j);
		}
	}
	journal_release_memory(j);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_records(&c, 1, 100, 0);
	coll_free(&c);
	jclose(fx);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 0, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_records(&c, 1, 100, 0);
	coll_free(&c);
	journal_release_memory(NULL);
}

/* Appends that sync before returning read back like the others. */
static void test_sync_append(void **state)
{
	struct fx *fx = *state;
	struct journal *j = jopen(fx, JOURNAL_MIN_SIZE);
	uint64_t unreadable;
	struct coll c;

	c = replay_ok(j, 0, &unreadable);
	coll_free(&c);
	for(uint64_t lsn = 1; lsn <= 200; lsn++){
		append_ok(j, lsn, len_of(lsn), 0, lsn % 3 != 0);
		if(lsn > 20){
			journal_release(j, lsn - 20);
		}
	}
	jclose(fx);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 180, &unreadable);
	assert_uint_equal(unreadable, 0);
	assert_records(&c, 181, 200, 0);
	coll_free(&c);
	append_ok(j, 201, len_of(201), 0, true);
	jclose(fx);
	j = jopen(fx, JOURNAL_MIN_SIZE);
	c = replay_ok(j, 200, &unreadable);
	assert_records(&c, 201, 201, 0);
	coll_free(&c);
}

static void test_strerror(void **state)
{
	static const int codes[] = {JOURNAL_OK, JOURNAL_FULL, JOURNAL_TOO_LARGE, JOURNAL_ERR_IO,
		JOURNAL_ERR_NOMEM, JOURNAL_ERR_CRYPTO, JOURNAL_ERR_FORMAT};
	const size_t n = sizeof(codes) / sizeof(codes[0]);

	(void)state;
	for(size_t i = 0; i < n; i++){
		const char *s = journal_strerror(codes[i]);
		assert_non_null(s);
		assert_true(s[0] != '\0');
		assert_string_not_equal(s, journal_strerror(-1));
		for(size_t k = 0; k < i; k++){
			assert_string_not_equal(s, journal_strerror(codes[k]));
		}
	}
}

/* A clean stop cuts the journal to its header; the next open makes it whole again, its
 * lsns go on from the store's mark. Made with its blocks written out or
 * only allocated, a new journal reads as empty and takes records alike. */
static void test_removed_and_made_again(void **state)
{
	struct fx *fx = *state;
	struct journal *rj = (struct journal *)fx;
	uint64_t unreadable;
	struct stat sb;
	char err[512] = "";
	struct coll c;

	for(int written_out = 0; written_out < 2; written_out++){
		struct journal *j = jopen(fx, 2 * JOURNAL_MIN_SIZE);
		c = replay_ok(j, 5 * (uint64_t)written_out, &unreadable);
		coll_free(&c);
		for(uint64_t lsn = 1; lsn <= 5; lsn++){
			append_ok(j, lsn + 5 * (uint64_t)written_out, len_of(lsn + 5 * (uint64_t)written_out), 0, false);
		}
		assert_int_equal(journal_close_stopped(j), JOURNAL_OK);
		fx->j = NULL;
		assert_int_equal(stat(fx->tmp.path, &sb), 0);
		assert_uint_equal(sb.st_size, 4096);
		assert_int_equal(journal_open_read(&rj, fx->tmp.dir, fx->seal, err, sizeof(err)), JOURNAL_OK);
		assert_null(rj);

		seal_free(fx->seal);
		fx->seal = make_seal(fx, fx->tmp.key);
		assert_int_equal(journal_open(&fx->j, fx->tmp.dir, JOURNAL_MIN_SIZE, fx->seal, written_out, err,
				sizeof(err)), JOURNAL_OK);
		assert_int_equal(stat(fx->tmp.path, &sb), 0);
		assert_uint_equal(sb.st_size, JOURNAL_MIN_SIZE);
		/* Allocated: no block of it is left to find at the first write. */
		assert_true((uint64_t)sb.st_blocks * 512 >= JOURNAL_MIN_SIZE);
		c = replay_ok(fx->j, 5 + 5 * (uint64_t)written_out, &unreadable);
		assert_uint_equal(c.n, 0);
		assert_uint_equal(unreadable, 0);
		coll_free(&c);
		append_ok(fx->j, 6 + 5 * (uint64_t)written_out, len_of(6 + 5 * (uint64_t)written_out), 0, false);
		jopen(fx, JOURNAL_MIN_SIZE);
		c = replay_ok(fx->j, 0, &unreadable);
		assert_records(&c, 6 + 5 * (uint64_t)written_out, 6 + 5 * (uint64_t)written_out, 0);
		coll_free(&c);
		jclose(fx);
		unlink(fx->tmp.path);
	}
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_append_and_replay),
		T(test_replay_callback_error),
		T(test_wrap_around),
		T(test_full_and_release),
		T(test_too_large),
		T(test_torn_record),
		T(test_forged_records),
		T(test_moved_record_not_replayed),
		T(test_not_a_journal),
		T(test_open_read),
		T(test_size),
		T(test_release_memory),
		T(test_sync_append),
		T(test_removed_and_made_again),
		cmocka_unit_test(test_strerror),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
