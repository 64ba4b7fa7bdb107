/* Sealing: AES-256-GCM envelope, nonce uniqueness, index hashes, key files. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "seal.h"
#include "unit_util.h"

static const uint8_t key_a[SEAL_KEY_LEN] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
	0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};

static void key_b_make(uint8_t k[SEAL_KEY_LEN])
{
	memcpy(k, key_a, SEAL_KEY_LEN);
	k[31] ^= 0x01; /* differs from key_a in a single bit */
}

static const uint8_t pt_text[] = "the quick brown fox jumps over the lazy dog";
static const uint8_t ad_text[] = "\x02" "0123456789abcdef"; /* db byte | key */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* A fixed salt per epoch, so that two seals of the same key agree. */
static void fixed_salt(uint32_t epoch, uint8_t salt[SEAL_SALT_LEN])
{
	for(int i = 0; i < SEAL_SALT_LEN; i++){
		salt[i] = (uint8_t)(epoch * 31 + (uint32_t)i);
	}
}

static void set_epoch(struct seal *s, uint32_t epoch)
{
	uint8_t salt[SEAL_SALT_LEN];

	fixed_salt(epoch, salt);
	assert_int_equal(seal_set_epoch(s, epoch, salt), SEAL_OK);
}

static void learn_epoch(struct seal *s, uint32_t epoch)
{
	uint8_t salt[SEAL_SALT_LEN];

	fixed_salt(epoch, salt);
	assert_int_equal(seal_learn_epoch(s, epoch, salt), SEAL_OK);
}

/* Seals pt_text under ad_text; returns a malloc'd envelope. */
static uint8_t *seal_sample(struct seal *s, size_t *len)
{
	*len = sizeof(pt_text) + SEAL_OVERHEAD;
	uint8_t *out = malloc(*len);
	assert_non_null(out);
	assert_int_equal(seal_record(s, ad_text, sizeof(ad_text), pt_text, sizeof(pt_text), out), SEAL_OK);
	return out;
}

/* seal_open into an exactly sized heap block. */
static int open_exact(struct seal *s, const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t in_len,
		uint8_t **pt, size_t *pt_len)
{
	size_t cap = in_len > SEAL_OVERHEAD ? in_len - SEAL_OVERHEAD : 1;
	*pt = malloc(cap);
	assert_non_null(*pt);
	*pt_len = (size_t)-1;
	return seal_open(s, ad, ad_len, in, in_len, *pt, pt_len);
}

/* ---- envelope ---- */

static void test_roundtrip(void **state)
{
	struct seal *s = seal_new(key_a, 7);
	uint8_t *env, *pt;
	size_t len, pt_len;

	(void)state;
	assert_non_null(s);
	assert_int_equal(seal_key_id(s), 7);
	set_epoch(s, 0x01020304);
	env = seal_sample(s, &len);

	assert_int_equal(env[0], SEAL_VERSION);
	assert_int_equal(env[1], 7);
	assert_uint_equal(be32(env + 2), 0x01020304);
	assert_uint_equal(be64(env + 6), 1);
	/* The ciphertext is not the plaintext. */
	assert_memory_not_equal(env + SEAL_HEADER_LEN, pt_text, sizeof(pt_text));

	assert_int_equal(open_exact(s, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_OK);
	assert_uint_equal(pt_len, sizeof(pt_text));
	assert_memory_equal(pt, pt_text, sizeof(pt_text));
	free(pt);

	/* A second seal instance from the same key and id opens it once it
	 * knows the epoch's salt. */
	struct seal *s2 = seal_new(key_a, 7);
	assert_non_null(s2);
	assert_int_equal(open_exact(s2, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_ERR_EPOCH);
	free(pt);
	learn_epoch(s2, 0x01020304);
	assert_int_equal(open_exact(s2, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_OK);
	assert_memory_equal(pt, pt_text, sizeof(pt_text));
	free(pt);
	seal_free(s2);
	free(env);
	seal_free(s);
}

static void test_roundtrip_sizes(void **state)
{
	static const size_t sizes[] = {0, 1, 15, 16, 17, 31, 32, 33, 255, 4096, 1 << 20};
	struct seal *s = seal_new(key_a, 1);
	uint8_t ad[41];

	(void)state;
	assert_non_null(s);
	set_epoch(s, 9);
	memset(ad, 0x3c, sizeof(ad));
	for(size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++){
		size_t n = sizes[i], pt_len;
		uint8_t *in = malloc(n ? n : 1), *env = malloc(n + SEAL_OVERHEAD), *pt;
		assert_non_null(in);
		assert_non_null(env);
		for(size_t j = 0; j < n; j++){
			in[j] = (uint8_t)(j * 7 + i);
		}
		for(size_t ad_len = 0; ad_len <= sizeof(ad); ad_len += 41){
			assert_int_equal(seal_record(s, ad, ad_len, in, n, env), SEAL_OK);
			assert_int_equal(open_exact(s, ad, ad_len, env, n + SEAL_OVERHEAD, &pt, &pt_len), SEAL_OK);
			assert_uint_equal(pt_len, n);
			if(n){
				assert_memory_equal(pt, in, n);
			}
			free(pt);
		}
		/* In place, as the store seals a buffered value: the plaintext at
		 * env + SEAL_HEADER_LEN becomes the ciphertext. */
		memcpy(env + SEAL_HEADER_LEN, in, n);
		assert_int_equal(seal_record(s, ad, sizeof(ad), env + SEAL_HEADER_LEN, n, env), SEAL_OK);
		if(n >= 16){
			assert_memory_not_equal(env + SEAL_HEADER_LEN, in, n);
		}
		assert_int_equal(open_exact(s, ad, sizeof(ad), env, n + SEAL_OVERHEAD, &pt, &pt_len), SEAL_OK);
		assert_uint_equal(pt_len, n);
		if(n){
			assert_memory_equal(pt, in, n);
		}
		free(pt);
		free(in);
		free(env);
	}
	seal_free(s);
}

static void test_every_byte_change_detected(void **state)
{
	static const uint8_t patterns[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff, 0x55, 0xaa, 0x81};
	struct seal *s = seal_new(key_a, 1);
	uint8_t *env, *pt;
	size_t len, pt_len;
	unsigned checked = 0;

	(void)state;
	assert_non_null(s);
	set_epoch(s, 3);
	env = seal_sample(s, &len);
	for(size_t pos = 0; pos < len; pos++){
		for(size_t p = 0; p < sizeof(patterns); p++){
			env[pos] ^= patterns[p];
			int rc = open_exact(s, ad_text, sizeof(ad_text), env, len, &pt, &pt_len);
			if(rc == SEAL_OK){
				free(pt);
				fail_msg("changing byte %zu of %zu (xor 0x%02x) was not detected", pos, len, patterns[p]);
			}
			if(pos == 0){
				assert_int_equal(rc, SEAL_ERR_FORMAT);
			}else if(pos == 1){
				assert_int_equal(rc, SEAL_ERR_KEY_ID);
			}else if(pos < 6){
				/* The nonce's epoch names a key this seal was not given. */
				assert_int_equal(rc, SEAL_ERR_EPOCH);
			}else{
				assert_int_equal(rc, SEAL_ERR_AUTH);
				/* A rejected plaintext is not left behind. */
				for(size_t i = 0; i < sizeof(pt_text); i++){
					if(pt[i] != 0){
						free(pt);
						fail_msg("seal_open left plaintext in out after SEAL_ERR_AUTH (byte %zu)", pos);
					}
				}
			}
			free(pt);
			env[pos] ^= patterns[p];
			checked++;
		}
	}
	assert_uint_equal(checked, len * sizeof(patterns));

	/* Every region was covered: header, nonce, ciphertext, tag. */
	assert_true(len == 2 + SEAL_NONCE_LEN + sizeof(pt_text) + SEAL_TAG_LEN);

	/* The untouched envelope still opens (the context survives failures). */
	assert_int_equal(open_exact(s, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_OK);
	assert_memory_equal(pt, pt_text, sizeof(pt_text));
	free(pt);
	free(env);
	seal_free(s);
}

static void test_truncated_or_extended_envelope(void **state)
{
	struct seal *s = seal_new(key_a, 1);
	uint8_t *env, *pt, *longer;
	size_t len, pt_len;

	(void)state;
	assert_non_null(s);
	set_epoch(s, 3);
	env = seal_sample(s, &len);
	for(size_t n = 0; n < len; n++){
		uint8_t *copy = malloc(n ? n : 1);
		assert_non_null(copy);
		memcpy(copy, env, n);
		int rc = open_exact(s, ad_text, sizeof(ad_text), copy, n, &pt, &pt_len);
		free(pt);
		free(copy);
		if(rc == SEAL_OK){
			fail_msg("an envelope cut to %zu of %zu bytes opened", n, len);
		}
		if(n < SEAL_OVERHEAD){
			assert_int_equal(rc, SEAL_ERR_FORMAT);
		}
	}
	longer = malloc(len + 1);
	assert_non_null(longer);
	memcpy(longer, env, len);
	longer[len] = 0;
	assert_int_not_equal(open_exact(s, ad_text, sizeof(ad_text), longer, len + 1, &pt, &pt_len), SEAL_OK);
	free(pt);
	free(longer);
	free(env);
	seal_free(s);
}

static void test_associated_data_bound(void **state)
{
	struct seal *s = seal_new(key_a, 1);
	uint8_t *env, *pt, ad[sizeof(ad_text) + 1];
	size_t len, pt_len;

	(void)state;
	assert_non_null(s);
	set_epoch(s, 3);
	env = seal_sample(s, &len);
	for(size_t i = 0; i < sizeof(ad_text); i++){
		for(unsigned bit = 0; bit < 8; bit++){
			memcpy(ad, ad_text, sizeof(ad_text));
			ad[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(open_exact(s, ad, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_ERR_AUTH);
			free(pt);
		}
	}
	/* Shorter, longer and empty associated data. */
	memcpy(ad, ad_text, sizeof(ad_text));
	ad[sizeof(ad_text)] = 0;
	assert_int_equal(open_exact(s, ad, sizeof(ad_text) - 1, env, len, &pt, &pt_len), SEAL_ERR_AUTH);
	free(pt);
	assert_int_equal(open_exact(s, ad, sizeof(ad_text) + 1, env, len, &pt, &pt_len), SEAL_ERR_AUTH);
	free(pt);
	assert_int_equal(open_exact(s, ad, 0, env, len, &pt, &pt_len), SEAL_ERR_AUTH);
	free(pt);
	/* The right one still works. */
	assert_int_equal(open_exact(s, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_OK);
	free(pt);
	free(env);
	seal_free(s);
}

static void test_wrong_key_and_key_id(void **state)
{
	uint8_t kb[SEAL_KEY_LEN];
	struct seal *a1 = seal_new(key_a, 1), *b1, *a2;
	uint8_t *env, *pt;
	size_t len, pt_len;

	(void)state;
	key_b_make(kb);
	b1 = seal_new(kb, 1);
	a2 = seal_new(key_a, 2);
	assert_non_null(a1);
	assert_non_null(b1);
	assert_non_null(a2);
	set_epoch(a1, 3);
	set_epoch(b1, 3);
	set_epoch(a2, 3);
	env = seal_sample(a1, &len);

	assert_int_equal(open_exact(b1, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_ERR_AUTH);
	free(pt);
	assert_int_equal(open_exact(a2, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_ERR_KEY_ID);
	free(pt);
	/* Relabelling the key id does not help: the id is not a key. */
	env[1] = 2;
	assert_int_equal(open_exact(a2, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_OK);
	free(pt);
	env[1] = 1;
	/* An unknown envelope version. */
	env[0] = SEAL_VERSION + 1;
	assert_int_equal(open_exact(a1, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_ERR_FORMAT);
	free(pt);
	env[0] = SEAL_VERSION;
	assert_int_equal(open_exact(a1, ad_text, sizeof(ad_text), env, len, &pt, &pt_len), SEAL_OK);
	free(pt);

	/* Two keys seal the same plaintext with the same nonce differently. */
	uint8_t *env_b = seal_sample(b1, &len);
	uint8_t *env_a = seal_sample(a2, &len);
	assert_memory_equal(env_a + 2, env_b + 2, SEAL_NONCE_LEN);
	assert_memory_not_equal(env_a + SEAL_HEADER_LEN, env_b + SEAL_HEADER_LEN, len - SEAL_HEADER_LEN);
	free(env_a);
	free(env_b);
	free(env);
	seal_free(a1);
	seal_free(b1);
	seal_free(a2);
}

/* ---- nonces ---- */

#define N_NONCES 100000

static int cmp_nonce(const void *a, const void *b)
{
	return memcmp(a, b, SEAL_NONCE_LEN);
}

static void test_nonces_never_repeat(void **state)
{
	const uint32_t epoch1 = 0xA1B2C3D4u, epoch2 = epoch1 + 1;
	struct seal *s = seal_new(key_a, 1);
	uint8_t (*n1)[SEAL_NONCE_LEN] = malloc((size_t)N_NONCES * SEAL_NONCE_LEN);
	uint8_t env[8 + SEAL_OVERHEAD], last[SEAL_NONCE_LEN], prev_ct[8];
	uint8_t pt[8] = {0};

	(void)state;
	assert_non_null(s);
	assert_non_null(n1);
	set_epoch(s, epoch1);
	for(uint64_t i = 0; i < N_NONCES; i++){
		assert_int_equal(seal_record(s, NULL, 0, pt, sizeof(pt), env), SEAL_OK);
		seal_last_nonce(s, last);
		if(memcmp(last, env + 2, SEAL_NONCE_LEN) != 0){
			fail_msg("seal_last_nonce differs from the envelope's nonce at record %llu", (unsigned long long)i);
		}
		if(be32(last) != epoch1 || be64(last + 4) != i + 1){
			fail_msg("record %llu has nonce epoch %08x counter %llu, expected %08x / %llu",
					(unsigned long long)i, be32(last), (unsigned long long)be64(last + 4),
					epoch1, (unsigned long long)i + 1);
		}
		/* The same plaintext never seals to the same ciphertext twice in a row. */
		if(i && memcmp(prev_ct, env + SEAL_HEADER_LEN, sizeof(prev_ct)) == 0){
			fail_msg("records %llu and %llu have the same ciphertext", (unsigned long long)i - 1,
					(unsigned long long)i);
		}
		memcpy(prev_ct, env + SEAL_HEADER_LEN, sizeof(prev_ct));
		memcpy(n1[i], last, SEAL_NONCE_LEN);
	}
	qsort(n1, N_NONCES, SEAL_NONCE_LEN, cmp_nonce);
	for(size_t i = 1; i < N_NONCES; i++){
		if(memcmp(n1[i - 1], n1[i], SEAL_NONCE_LEN) == 0){
			fail_msg("nonce repeated among %d seals", N_NONCES);
		}
	}

	/* A new epoch: counter restarts, epoch changes, no nonce of the old epoch
	 * comes back. */
	set_epoch(s, epoch2);
	for(uint64_t i = 0; i < 1000; i++){
		assert_int_equal(seal_record(s, NULL, 0, pt, sizeof(pt), env), SEAL_OK);
		assert_uint_equal(be32(env + 2), epoch2);
		assert_uint_equal(be64(env + 6), i + 1);
		if(bsearch(env + 2, n1, N_NONCES, SEAL_NONCE_LEN, cmp_nonce)){
			fail_msg("a nonce of epoch %08x reappeared in epoch %08x", epoch1, epoch2);
		}
	}
	/* The last record of the new epoch opens. */
	uint8_t out[8];
	size_t out_len;
	assert_int_equal(seal_open(s, NULL, 0, env, sizeof(env), out, &out_len), SEAL_OK);
	free(n1);
	seal_free(s);
}

static void test_epoch_in_nonce_high_bytes(void **state)
{
	static const uint32_t epochs[] = {0, 1, 0x100, 0xffffff, UINT32_MAX};
	struct seal *s = seal_new(key_a, 1);
	uint8_t env[1 + SEAL_OVERHEAD], nonce[SEAL_NONCE_LEN];
	uint8_t b = 'x';

	(void)state;
	assert_non_null(s);
	for(size_t i = 0; i < sizeof(epochs) / sizeof(epochs[0]); i++){
		set_epoch(s, epochs[i]);
		for(uint64_t c = 1; c <= 3; c++){
			assert_int_equal(seal_record(s, &b, 1, &b, 1, env), SEAL_OK);
			seal_last_nonce(s, nonce);
			assert_uint_equal(be32(nonce), epochs[i]);
			assert_uint_equal(be64(nonce + 4), c);
		}
	}
	seal_free(s);
}

/* A clone (the store's second thread for walks) opens what the original
 * sealed and refuses what it refuses; the original is unaffected. */
static void test_clone_opens(void **state)
{
	struct seal *s = seal_new(key_a, 1), *c;
	uint8_t ad[3] = {1, 2, 3}, pt[40], env[40 + SEAL_OVERHEAD], out[40];
	size_t out_len;

	(void)state;
	assert_non_null(s);
	set_epoch(s, 5);
	memset(pt, 'p', sizeof(pt));
	assert_int_equal(seal_record(s, ad, sizeof(ad), pt, sizeof(pt), env), SEAL_OK);
	c = seal_clone(s);
	assert_non_null(c);
	assert_int_equal(seal_open(c, ad, sizeof(ad), env, sizeof(env), out, &out_len), SEAL_OK);
	assert_uint_equal(out_len, sizeof(pt));
	assert_memory_equal(out, pt, sizeof(pt));
	ad[0] ^= 1;
	assert_int_equal(seal_open(c, ad, sizeof(ad), env, sizeof(env), out, &out_len), SEAL_ERR_AUTH);
	ad[0] ^= 1;
	uint8_t h1[HASH_LEN], h2[HASH_LEN];
	assert_int_equal(seal_hash(s, 'c', "x", 1, h1), SEAL_OK);
	assert_int_equal(seal_hash(c, 'c', "x", 1, h2), SEAL_OK);
	assert_memory_equal(h1, h2, HASH_LEN);
	seal_free(c);
	assert_int_equal(seal_open(s, ad, sizeof(ad), env, sizeof(env), out, &out_len), SEAL_OK);
	seal_free(s);
}

/* ---- epochs and salts ---- */

/* Two histories of one file (a restored backup, a copy opened twice) open
 * the same epoch with different salts: the same nonce goes with different
 * keys, so the XOR of the two ciphertexts is not the XOR of the
 * plaintexts, and neither history's records open under the other's key. */
static void test_same_epoch_other_salt(void **state)
{
	struct seal *a = seal_new(key_a, 1), *b = seal_new(key_a, 1), *reader = seal_new(key_a, 1);
	uint8_t salt_a[SEAL_SALT_LEN], salt_b[SEAL_SALT_LEN];
	uint8_t secret[32], known[32], ea[32 + SEAL_OVERHEAD], eb[32 + SEAL_OVERHEAD], out[32];
	size_t out_len;
	int same = 0;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(reader);
	memset(secret, 'S', sizeof(secret));
	memset(known, 'K', sizeof(known));
	assert_int_equal(seal_begin_epoch(a, 7, salt_a), SEAL_OK);
	assert_int_equal(seal_begin_epoch(b, 7, salt_b), SEAL_OK);
	assert_memory_not_equal(salt_a, salt_b, SEAL_SALT_LEN);
	assert_int_equal(seal_record(a, ad_text, sizeof(ad_text), secret, sizeof(secret), ea), SEAL_OK);
	assert_int_equal(seal_record(b, ad_text, sizeof(ad_text), known, sizeof(known), eb), SEAL_OK);
	assert_memory_equal(ea + 2, eb + 2, SEAL_NONCE_LEN);
	for(size_t i = 0; i < sizeof(secret); i++){
		same += (ea[SEAL_HEADER_LEN + i] ^ eb[SEAL_HEADER_LEN + i] ^ known[i]) == secret[i];
	}
	/* By chance about 32/256 bytes agree; all of them did with one key. */
	assert_true(same < 16);

	/* A reader given a's salt opens a's record, not b's. */
	assert_int_equal(seal_learn_epoch(reader, 7, salt_a), SEAL_OK);
	assert_int_equal(seal_open(reader, ad_text, sizeof(ad_text), ea, sizeof(ea), out, &out_len), SEAL_OK);
	assert_memory_equal(out, secret, sizeof(secret));
	assert_int_equal(seal_open(reader, ad_text, sizeof(ad_text), eb, sizeof(eb), out, &out_len), SEAL_ERR_AUTH);
	/* An epoch keeps its first salt. */
	assert_int_equal(seal_learn_epoch(reader, 7, salt_b), SEAL_ERR_FORMAT);
	assert_int_equal(seal_learn_epoch(reader, 7, salt_a), SEAL_OK);
	assert_int_equal(seal_set_epoch(a, 7, salt_b), SEAL_ERR_FORMAT);
	seal_free(a);
	seal_free(b);
	seal_free(reader);
}

/* Records of many opens mix in a file: more epochs than the seal keeps
 * derived keys for, read in an order that evicts them, all open. */
static void test_many_epochs_open(void **state)
{
	enum { EPOCHS = 20 };
	struct seal *w = seal_new(key_a, 1), *r = seal_new(key_a, 1);
	uint8_t env[EPOCHS][sizeof(pt_text) + SEAL_OVERHEAD], out[sizeof(pt_text)];
	size_t out_len;

	(void)state;
	assert_non_null(w);
	assert_non_null(r);
	for(uint32_t e = 0; e < EPOCHS; e++){
		set_epoch(w, 100 + e * 3);
		learn_epoch(r, 100 + e * 3);
		assert_int_equal(seal_record(w, ad_text, sizeof(ad_text), pt_text, sizeof(pt_text), env[e]), SEAL_OK);
	}
	for(int round = 0; round < 3; round++){
		for(uint32_t i = 0; i < EPOCHS; i++){
			uint32_t e = (i * 7 + (uint32_t)round) % EPOCHS;
			assert_int_equal(seal_open(r, ad_text, sizeof(ad_text), env[e], sizeof(env[e]), out, &out_len),
					SEAL_OK);
			assert_memory_equal(out, pt_text, sizeof(pt_text));
		}
	}
	/* An epoch in between, never given, does not open. */
	env[0][5] ^= 1;
	assert_int_equal(seal_open(r, ad_text, sizeof(ad_text), env[0], sizeof(env[0]), out, &out_len),
			SEAL_ERR_EPOCH);
	seal_free(w);
	seal_free(r);
}

/* Nothing seals before an epoch is set (there is no key to seal with);
 * a clone of such a seal opens what the original learned. */
static void test_unkeyed_seal(void **state)
{
	struct seal *w = seal_new(key_a, 1), *r = seal_new(key_a, 1), *c;
	uint8_t env[sizeof(pt_text) + SEAL_OVERHEAD], out[sizeof(pt_text)];
	size_t out_len;

	(void)state;
	assert_non_null(w);
	assert_non_null(r);
	assert_int_equal(seal_record(r, NULL, 0, pt_text, sizeof(pt_text), env), SEAL_ERR_CRYPTO);
	set_epoch(w, 11);
	assert_int_equal(seal_record(w, NULL, 0, pt_text, sizeof(pt_text), env), SEAL_OK);
	learn_epoch(r, 11);
	c = seal_clone(r);
	assert_non_null(c);
	assert_int_equal(seal_open(c, NULL, 0, env, sizeof(env), out, &out_len), SEAL_OK);
	assert_int_equal(seal_record(c, NULL, 0, pt_text, sizeof(pt_text), env), SEAL_ERR_CRYPTO);
	seal_free(c);
	seal_free(w);
	seal_free(r);
}

/* Version 1 records (one key for every epoch, earlier releases) still
 * open; nothing new is written in that version. */
static void test_v1_records_open(void **state)
{
	struct seal *s = seal_new(key_a, 1);
	uint8_t k1[SEAL_KEY_LEN], env[sizeof(pt_text) + SEAL_OVERHEAD], out[sizeof(pt_text)];
	OSSL_PARAM params[4];
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kctx;
	EVP_CIPHER_CTX *enc = EVP_CIPHER_CTX_new();
	size_t out_len;
	int len;

	(void)state;
	assert_non_null(s);
	assert_non_null(kdf);
	assert_non_null(enc);
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	assert_non_null(kctx);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key_a, SEAL_KEY_LEN);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)"persist-lmdb seal v1", 20);
	params[3] = OSSL_PARAM_construct_end();
	assert_int_equal(EVP_KDF_derive(kctx, k1, sizeof(k1), params), 1);
	EVP_KDF_CTX_free(kctx);

	env[0] = SEAL_VERSION_V1;
	env[1] = 1;
	memset(env + 2, 0, SEAL_NONCE_LEN);
	env[5] = 4; /* epoch 4, counter 9: an epoch this seal never learned */
	env[13] = 9;
	assert_int_equal(EVP_EncryptInit_ex2(enc, EVP_aes_256_gcm(), k1, env + 2, NULL), 1);
	assert_int_equal(EVP_EncryptUpdate(enc, NULL, &len, ad_text, sizeof(ad_text)), 1);
	assert_int_equal(EVP_EncryptUpdate(enc, env + SEAL_HEADER_LEN, &len, pt_text, sizeof(pt_text)), 1);
	assert_int_equal(EVP_EncryptFinal_ex(enc, env + SEAL_HEADER_LEN + len, &len), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN,
				env + SEAL_HEADER_LEN + sizeof(pt_text)), 1);
	EVP_CIPHER_CTX_free(enc);

	assert_int_equal(seal_open(s, ad_text, sizeof(ad_text), env, sizeof(env), out, &out_len), SEAL_OK);
	assert_memory_equal(out, pt_text, sizeof(pt_text));
	/* The version byte is bound: read as version 2 it does not open. */
	env[0] = SEAL_VERSION;
	learn_epoch(s, 4);
	assert_int_equal(seal_open(s, ad_text, sizeof(ad_text), env, sizeof(env), out, &out_len), SEAL_ERR_AUTH);
	seal_wipe(k1, sizeof(k1));
	seal_free(s);
}

/* ---- index hash ---- */

static void test_hash(void **state)
{
	uint8_t kb[SEAL_KEY_LEN];
	uint8_t h1[HASH_LEN], h2[HASH_LEN], h3[HASH_LEN], zero[HASH_LEN] = {0};
	struct seal *a = seal_new(key_a, 1), *a_other_id = seal_new(key_a, 9), *b;

	(void)state;
	key_b_make(kb);
	b = seal_new(kb, 1);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(a_other_id);

	/* Deterministic, also across instances (the index must survive restarts). */
	assert_int_equal(seal_hash(a, 'c', "client", 6, h1), SEAL_OK);
	assert_int_equal(seal_hash(a, 'c', "client", 6, h2), SEAL_OK);
	assert_memory_equal(h1, h2, HASH_LEN);
	assert_int_equal(seal_hash(a_other_id, 'c', "client", 6, h2), SEAL_OK);
	assert_memory_equal(h1, h2, HASH_LEN);
	assert_memory_not_equal(h1, zero, HASH_LEN);

	/* Kind-separated. */
	assert_int_equal(seal_hash(a, 't', "client", 6, h2), SEAL_OK);
	assert_memory_not_equal(h1, h2, HASH_LEN);
	assert_int_equal(seal_hash(a, 'f', "client", 6, h3), SEAL_OK);
	assert_memory_not_equal(h1, h3, HASH_LEN);
	assert_memory_not_equal(h2, h3, HASH_LEN);

	/* Input-dependent, including length and a single bit. */
	assert_int_equal(seal_hash(a, 'c', "client", 5, h2), SEAL_OK);
	assert_memory_not_equal(h1, h2, HASH_LEN);
	assert_int_equal(seal_hash(a, 'c', "clienu", 6, h2), SEAL_OK);
	assert_memory_not_equal(h1, h2, HASH_LEN);
	assert_int_equal(seal_hash(a, 'c', "", 0, h2), SEAL_OK);
	assert_memory_not_equal(h1, h2, HASH_LEN);

	/* Key-dependent. */
	assert_int_equal(seal_hash(b, 'c', "client", 6, h2), SEAL_OK);
	assert_memory_not_equal(h1, h2, HASH_LEN);

	/* Not the plain HMAC input, nor a prefix of it. */
	assert_memory_not_equal(h1, "cclient", 7);

	/* Interleaving seals and hashes does not disturb either. */
	size_t len;
	set_epoch(a, 1);
	uint8_t *env = seal_sample(a, &len);
	assert_int_equal(seal_hash(a, 'c', "client", 6, h2), SEAL_OK);
	assert_memory_equal(h1, h2, HASH_LEN);
	free(env);

	seal_free(a);
	seal_free(b);
	seal_free(a_other_id);
}

static int cmp_hash(const void *a, const void *b)
{
	return memcmp(a, b, HASH_LEN);
}

static void test_hash_distinct_many(void **state)
{
	enum { N = 5000 };
	struct seal *a = seal_new(key_a, 1);
	uint8_t (*h)[HASH_LEN] = malloc((size_t)N * 2 * HASH_LEN);
	char name[32];

	(void)state;
	assert_non_null(a);
	assert_non_null(h);
	for(int i = 0; i < N; i++){
		int n = snprintf(name, sizeof(name), "client-%d", i);
		assert_int_equal(seal_hash(a, 'c', name, (size_t)n, h[2 * i]), SEAL_OK);
		assert_int_equal(seal_hash(a, 't', name, (size_t)n, h[2 * i + 1]), SEAL_OK);
	}
	qsort(h, (size_t)N * 2, HASH_LEN, cmp_hash);
	for(size_t i = 1; i < (size_t)N * 2; i++){
		if(memcmp(h[i - 1], h[i], HASH_LEN) == 0){
			fail_msg("two of %d names hash alike", N * 2);
		}
	}
	free(h);
	seal_free(a);
}

/* ---- key files ---- */

struct keydir {
	char *dir;
};

static int keydir_setup(void **state)
{
	struct keydir *kd = calloc(1, sizeof(*kd));
	if(!kd || !(kd->dir = ut_mkdtemp())){
		free(kd);
		return -1;
	}
	umask(022);
	*state = kd;
	return 0;
}

static int keydir_teardown(void **state)
{
	struct keydir *kd = *state;
	ut_rm_rf(kd->dir);
	free(kd->dir);
	free(kd);
	return 0;
}

static void test_key_load_valid(void **state)
{
	struct keydir *kd = *state;
	char *path = ut_join(kd->dir, "key");
	uint8_t key[SEAL_KEY_LEN];
	char err[512] = "";

	assert_int_equal(ut_write_file(path, key_a, SEAL_KEY_LEN, 0600), 0);
	memset(key, 0xee, sizeof(key));
	assert_int_equal(seal_key_load(path, key, err, sizeof(err)), 0);
	assert_memory_equal(key, key_a, SEAL_KEY_LEN);

	/* Owner-only modes other than 0600 are fine too. */
	assert_int_equal(chmod(path, 0400), 0);
	memset(key, 0, sizeof(key));
	assert_int_equal(seal_key_load(path, key, err, sizeof(err)), 0);
	assert_memory_equal(key, key_a, SEAL_KEY_LEN);
	free(path);
}

static void test_key_load_bad_modes(void **state)
{
	static const mode_t modes[] = {0644, 0640, 0604, 0660, 0606, 0666, 0620, 0602, 0610, 0601};
	struct keydir *kd = *state;
	char *path = ut_join(kd->dir, "key");
	uint8_t key[SEAL_KEY_LEN];
	char err[512];

	for(size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++){
		assert_int_equal(ut_write_file(path, key_a, SEAL_KEY_LEN, modes[i]), 0);
		err[0] = 0;
		if(seal_key_load(path, key, err, sizeof(err)) != -1){
			fail_msg("a key file of mode %04o was accepted", (unsigned)modes[i]);
		}
		assert_non_null(strstr(err, "readable by group or others"));
		assert_non_null(strstr(err, path));
	}
	free(path);
}

static void test_key_load_bad_lengths(void **state)
{
	static const size_t lens[] = {0, 1, 16, 31, 33, 64, 4096};
	struct keydir *kd = *state;
	char *path = ut_join(kd->dir, "key");
	uint8_t data[4096], key[SEAL_KEY_LEN];
	char err[512], want[64];

	memset(data, 0x42, sizeof(data));
	for(size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++){
		assert_int_equal(ut_write_file(path, data, lens[i], 0600), 0);
		err[0] = 0;
		memset(key, 0xaa, sizeof(key));
		if(seal_key_load(path, key, err, sizeof(err)) != -1){
			fail_msg("a key file of %zu bytes was accepted", lens[i]);
		}
		assert_non_null(strstr(err, "exactly 32 bytes"));
		snprintf(want, sizeof(want), "(has %zu)", lens[i]);
		assert_non_null(strstr(err, want));
		/* Whatever was read is wiped. */
		for(size_t j = 0; j < SEAL_KEY_LEN; j++){
			assert_int_equal(key[j], 0);
		}
	}
	free(path);
}

/* Keys that are obviously not random are refused, with what is wrong and
 * how to make one; a random key is not (the rule fails 32 random bytes
 * with a probability below 1e-13). */
static void test_key_load_weak(void **state)
{
	struct keydir *kd = *state;
	char *path = ut_join(kd->dir, "key");
	uint8_t data[SEAL_KEY_LEN], key[SEAL_KEY_LEN];
	char err[512];
	static const struct {
		const char *what;
		const char *says;
	} cases[] = {
		{"zeros", "are all 0x00"},
		{"ones", "are all 0xff"},
		{"hex", "holds text"},
		{"pass", "holds text"},
		{"few", "only 8 different byte values"},
	};

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		const char *w = cases[i].what;
		if(!strcmp(w, "zeros")){
			memset(data, 0, sizeof(data));
		}else if(!strcmp(w, "ones")){
			memset(data, 0xff, sizeof(data));
		}else if(!strcmp(w, "hex")){
			memcpy(data, "9f86d081884c7d659a2feaa0c55ad015", SEAL_KEY_LEN);
		}else if(!strcmp(w, "pass")){
			memcpy(data, "correct horse battery staple!!!!", SEAL_KEY_LEN);
		}else{
			for(size_t j = 0; j < sizeof(data); j++){
				data[j] = (uint8_t)(0x80 + (j * 5) % 8);
			}
		}
		assert_int_equal(ut_write_file(path, data, sizeof(data), 0600), 0);
		err[0] = 0;
		memset(key, 0xaa, sizeof(key));
		if(seal_key_load(path, key, err, sizeof(err)) != -1){
			fail_msg("a key of %s was accepted", w);
		}
		if(!strstr(err, cases[i].says) || !strstr(err, "head -c 32 /dev/urandom")){
			fail_msg("the refusal of a key of %s says: %s", w, err);
		}
		for(size_t j = 0; j < SEAL_KEY_LEN; j++){
			assert_int_equal(key[j], 0);
		}
	}
	/* Random keys pass, many of them. */
	for(int n = 0; n < 2000; n++){
		assert_int_equal(RAND_bytes(data, sizeof(data)), 1);
		assert_int_equal(ut_write_file(path, data, sizeof(data), 0600), 0);
		if(seal_key_load(path, key, err, sizeof(err)) != 0){
			fail_msg("a random key was refused: %s", err);
		}
		assert_memory_equal(key, data, SEAL_KEY_LEN);
	}
	free(path);
}

static void test_key_load_missing_dir_symlink(void **state)
{
	struct keydir *kd = *state;
	char *missing = ut_join(kd->dir, "no-such-key");
	char *sub = ut_join(kd->dir, "subdir");
	char *real = ut_join(kd->dir, "real-key");
	char *link = ut_join(kd->dir, "link-key");
	uint8_t key[SEAL_KEY_LEN];
	char err[512];

	err[0] = 0;
	assert_int_equal(seal_key_load(missing, key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open key file"));
	assert_non_null(strstr(err, missing));

	assert_int_equal(mkdir(sub, 0700), 0);
	err[0] = 0;
	assert_int_equal(seal_key_load(sub, key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));

	/* A symlink is not followed, even to a valid key. */
	assert_int_equal(ut_write_file(real, key_a, SEAL_KEY_LEN, 0600), 0);
	assert_int_equal(seal_key_load(real, key, err, sizeof(err)), 0);
	assert_int_equal(symlink(real, link), 0);
	err[0] = 0;
	assert_int_equal(seal_key_load(link, key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open key file"));

	/* A tiny err buffer is not overrun and is terminated. */
	char tiny[8];
	memset(tiny, 'z', sizeof(tiny));
	assert_int_equal(seal_key_load(missing, key, tiny, 4), -1);
	assert_int_equal(tiny[3], '\0');
	assert_int_equal(tiny[4], 'z');
	free(missing);
	free(sub);
	free(real);
	free(link);
}

static void test_key_create(void **state)
{
	struct keydir *kd = *state;
	char *p1 = ut_join(kd->dir, "new-key-1");
	char *p2 = ut_join(kd->dir, "new-key-2");
	char *nodir = ut_join(kd->dir, "missing-dir/key");
	uint8_t k1[SEAL_KEY_LEN], k2[SEAL_KEY_LEN], again[SEAL_KEY_LEN], zero[SEAL_KEY_LEN] = {0};
	struct stat sb;
	char err[512];

	umask(0); /* the file mode must not rely on the umask */
	assert_int_equal(seal_key_create(p1, err, sizeof(err)), 0);
	umask(022);
	assert_int_equal(stat(p1, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0600);
	assert_int_equal(sb.st_size, SEAL_KEY_LEN);
	assert_int_equal(seal_key_load(p1, k1, err, sizeof(err)), 0);
	assert_memory_not_equal(k1, zero, SEAL_KEY_LEN);

	/* Refuses to overwrite; the existing key is untouched. */
	err[0] = 0;
	assert_int_equal(seal_key_create(p1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot create key file"));
	assert_int_equal(seal_key_load(p1, again, err, sizeof(err)), 0);
	assert_memory_equal(k1, again, SEAL_KEY_LEN);

	/* Also refuses an existing file that is not a key. */
	assert_int_equal(ut_write_file(p2, "x", 1, 0644), 0);
	assert_int_equal(seal_key_create(p2, err, sizeof(err)), -1);
	assert_int_equal(stat(p2, &sb), 0);
	assert_int_equal(sb.st_size, 1);
	assert_int_equal(unlink(p2), 0);

	/* Two new keys differ. */
	assert_int_equal(seal_key_create(p2, err, sizeof(err)), 0);
	assert_int_equal(seal_key_load(p2, k2, err, sizeof(err)), 0);
	assert_memory_not_equal(k1, k2, SEAL_KEY_LEN);

	/* A missing directory is an error, not a crash. */
	err[0] = 0;
	assert_int_equal(seal_key_create(nodir, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot create key file"));
	free(p1);
	free(p2);
	free(nodir);
}

static void test_strerror(void **state)
{
	(void)state;
	for(int rc = SEAL_OK; rc <= SEAL_ERR_EPOCH; rc++){
		assert_non_null(seal_strerror(rc));
		assert_string_not_equal(seal_strerror(rc), "unknown error");
	}
	assert_string_equal(seal_strerror(-1), "unknown error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_roundtrip_sizes),
		cmocka_unit_test(test_every_byte_change_detected),
		cmocka_unit_test(test_truncated_or_extended_envelope),
		cmocka_unit_test(test_associated_data_bound),
		cmocka_unit_test(test_wrong_key_and_key_id),
		cmocka_unit_test(test_nonces_never_repeat),
		cmocka_unit_test(test_epoch_in_nonce_high_bytes),
		cmocka_unit_test(test_clone_opens),
		cmocka_unit_test(test_same_epoch_other_salt),
		cmocka_unit_test(test_many_epochs_open),
		cmocka_unit_test(test_unkeyed_seal),
		cmocka_unit_test(test_v1_records_open),
		cmocka_unit_test(test_hash),
		cmocka_unit_test(test_hash_distinct_many),
		cmocka_unit_test_setup_teardown(test_key_load_valid, keydir_setup, keydir_teardown),
		cmocka_unit_test_setup_teardown(test_key_load_bad_modes, keydir_setup, keydir_teardown),
		cmocka_unit_test_setup_teardown(test_key_load_bad_lengths, keydir_setup, keydir_teardown),
		cmocka_unit_test_setup_teardown(test_key_load_weak, keydir_setup, keydir_teardown),
		cmocka_unit_test_setup_teardown(test_key_load_missing_dir_symlink, keydir_setup, keydir_teardown),
		cmocka_unit_test_setup_teardown(test_key_create, keydir_setup, keydir_teardown),
		cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
