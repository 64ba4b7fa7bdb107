/* The record opener.
 *
 * 1. seal_open of the input under a fixed key and associated data must not
 *    crash, and must not authenticate anything but a genuine seal: when it
 *    succeeds, the input must be one of the known seeds (fuzz_common.h),
 *    i.e. exactly what sealing the opened plaintext with that seed's nonce
 *    gives. The same input must not open under other associated data.
 * 2. A plaintext taken from the input, sealed and then changed in one byte
 *    (position and xor mask from the input), must not open; the unchanged
 *    envelope must open to the plaintext. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "seal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct seal *opener;

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* seal_open succeeded on in: it must be a known seed, byte for byte. */
static void check_genuine(const uint8_t *in, size_t in_len, const uint8_t *pt, size_t pt_len)
{
	const uint8_t *nonce = in + 2;
	uint32_t epoch = be32(nonce);
	struct seal *s;
	uint8_t *again;

	FUZZ_CHECK(pt_len == in_len - SEAL_OVERHEAD);
	FUZZ_CHECK(in[0] == SEAL_VERSION && in[1] == FUZZ_KEY_ID);
	/* Only the seeds' nonces: epoch FUZZ_SEED_EPOCH + i, counter 1. */
	FUZZ_CHECK(epoch >= FUZZ_SEED_EPOCH && epoch - FUZZ_SEED_EPOCH < FUZZ_SEED_COUNT);
	FUZZ_CHECK(be32(nonce + 4) == 0 && be32(nonce + 8) == 1);
	s = fuzz_seal(epoch);
	FUZZ_CHECK(s != NULL);
	again = malloc(in_len);
	FUZZ_CHECK(again != NULL);
	FUZZ_CHECK(seal_record(s, fuzz_ad, FUZZ_AD_LEN, pt, pt_len, again) == SEAL_OK);
	FUZZ_CHECK(memcmp(again, in, in_len) == 0);
	free(again);
	seal_free(s);
}

static void open_input(const uint8_t *data, size_t size)
{
	uint8_t *pt = malloc(size > SEAL_OVERHEAD ? size - SEAL_OVERHEAD : 1);
	size_t pt_len = (size_t)-1;
	int rc;

	FUZZ_CHECK(pt != NULL);
	rc = seal_open(opener, fuzz_ad, FUZZ_AD_LEN, data, size, pt, &pt_len);
	FUZZ_CHECK(rc == SEAL_OK || rc == SEAL_ERR_FORMAT || rc == SEAL_ERR_KEY_ID || rc == SEAL_ERR_AUTH
			|| rc == SEAL_ERR_EPOCH);
	if(size < SEAL_OVERHEAD || (data[0] != SEAL_VERSION && data[0] != SEAL_VERSION_V1)){
		FUZZ_CHECK(rc == SEAL_ERR_FORMAT);
	}else if(data[1] != FUZZ_KEY_ID){
		FUZZ_CHECK(rc == SEAL_ERR_KEY_ID);
	}else if(data[0] == SEAL_VERSION && be32(data + 2) != FUZZ_TAMPER_EPOCH && (be32(data + 2) < FUZZ_SEED_EPOCH
			|| be32(data + 2) - FUZZ_SEED_EPOCH >= FUZZ_SEED_COUNT)){
		/* An epoch whose salt the opener was not given. */
		FUZZ_CHECK(rc == SEAL_ERR_EPOCH);
	}
	if(rc == SEAL_OK){
		check_genuine(data, size, pt, pt_len);
		/* Bound to its associated data: no other opens it. */
		FUZZ_CHECK(seal_open(opener, fuzz_ad, FUZZ_AD_LEN - 1, data, size, pt, &pt_len) == SEAL_ERR_AUTH);
		FUZZ_CHECK(seal_open(opener, NULL, 0, data, size, pt, &pt_len) == SEAL_ERR_AUTH);
	}
	free(pt);
}

/* Input: pos (2 bytes LE) | mask (1 byte) | plaintext. */
static void tamper(const uint8_t *data, size_t size)
{
	static struct seal *sealer;
	const uint8_t *pt;
	uint8_t *env, *out, mask;
	size_t pt_len, env_len, pos, out_len;

	if(size < 3){
		return;
	}
	if(!sealer){
		sealer = fuzz_seal(FUZZ_TAMPER_EPOCH);
		FUZZ_CHECK(sealer != NULL);
	}
	pt = data + 3;
	pt_len = size - 3;
	env_len = pt_len + SEAL_OVERHEAD;
	pos = ((size_t)data[0] | (size_t)data[1] << 8) % env_len;
	mask = data[2] ? data[2] : 0x80;
	env = malloc(env_len);
	out = malloc(pt_len ? pt_len : 1);
	FUZZ_CHECK(env != NULL && out != NULL);
	FUZZ_CHECK(seal_record(sealer, fuzz_ad, FUZZ_AD_LEN, pt, pt_len, env) == SEAL_OK);

	out_len = (size_t)-1;
	FUZZ_CHECK(seal_open(opener, fuzz_ad, FUZZ_AD_LEN, env, env_len, out, &out_len) == SEAL_OK);
	FUZZ_CHECK(out_len == pt_len && (pt_len == 0 || memcmp(out, pt, pt_len) == 0));

	env[pos] ^= mask;
	FUZZ_CHECK(seal_open(opener, fuzz_ad, FUZZ_AD_LEN, env, env_len, out, &out_len) != SEAL_OK);
	/* Truncated by one byte: not an envelope that opens either. */
	env[pos] ^= mask;
	FUZZ_CHECK(seal_open(opener, fuzz_ad, FUZZ_AD_LEN, env, env_len - 1, out, &out_len) != SEAL_OK);
	free(env);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if(!opener){
		opener = fuzz_seal(FUZZ_SEED_EPOCH);
		FUZZ_CHECK(opener != NULL);
	}
	open_input(data, size);
	tamper(data, size);
	return 0;
}
