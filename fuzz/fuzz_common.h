/* Shared by the fuzz targets and fuzz/make_seeds.c. */
#ifndef PERSIST_LMDB_FUZZ_COMMON_H
#define PERSIST_LMDB_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "seal.h"

/* fuzz_open's fixed key, key id and associated data (a DB_SESSIONS-like
 * "db byte | hash" key, as the store binds). */
static const uint8_t fuzz_key[SEAL_KEY_LEN] = {
	0xf0, 0x0d, 0xfa, 0xce, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
	0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c,
};
#define FUZZ_KEY_ID 1
static const uint8_t fuzz_ad[] = "\x03" "fuzz-open-ad-0123";
#define FUZZ_AD_LEN (sizeof(fuzz_ad) - 1)

/* The sealed seeds of fuzz/corpus/fuzz_open: seed i is sealed by a fresh
 * seal (fuzz_key, FUZZ_KEY_ID) with epoch FUZZ_SEED_EPOCH + i, so its nonce
 * is (FUZZ_SEED_EPOCH + i, counter 1). Anything else that authenticates is
 * a forgery. */
#define FUZZ_SEED_EPOCH 0x5eed0000u
#define FUZZ_SEED_COUNT 16

/* The epoch fuzz_open's tamper check seals under (known to every seal). */
#define FUZZ_TAMPER_EPOCH 7u

/* The salt of epoch e (seal.h): fixed, so that seeds stay reproducible. */
static inline void fuzz_salt(uint32_t e, uint8_t salt[SEAL_SALT_LEN])
{
	for(int i = 0; i < SEAL_SALT_LEN; i++){
		salt[i] = (uint8_t)(0xa5 ^ (e >> (8 * (i % 4))) ^ i);
	}
}

/* A seal of the fuzz key sealing under epoch e (and opening the seeds and
 * what seals under FUZZ_TAMPER_EPOCH). */
static inline struct seal *fuzz_seal(uint32_t e)
{
	uint8_t salt[SEAL_SALT_LEN];
	struct seal *s = seal_new(fuzz_key, FUZZ_KEY_ID);

	if(s){
		for(uint32_t i = 0; i < FUZZ_SEED_COUNT; i++){
			fuzz_salt(FUZZ_SEED_EPOCH + i, salt);
			if(seal_learn_epoch(s, FUZZ_SEED_EPOCH + i, salt) != SEAL_OK){
				seal_free(s);
				return NULL;
			}
		}
		fuzz_salt(FUZZ_TAMPER_EPOCH, salt);
		if(seal_learn_epoch(s, FUZZ_TAMPER_EPOCH, salt) != SEAL_OK){
			seal_free(s);
			return NULL;
		}
		fuzz_salt(e, salt);
		if(seal_set_epoch(s, e, salt) != SEAL_OK){
			seal_free(s);
			return NULL;
		}
	}
	return s;
}

/* Aborts with a message: what the targets use instead of assert(), so the
 * checks stay on in every build type. */
#define FUZZ_CHECK(cond) do{ \
		if(!(cond)){ \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort(); \
		} \
	}while(0)

#endif
