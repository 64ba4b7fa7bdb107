/* Record sealing: AES-256-GCM envelope and keyed index hashes.
 *
 * Envelope: version (1) | key id (1) | nonce (12) | ciphertext | tag (16).
 * The nonce is epoch (4, big-endian) | counter (8, big-endian): the epoch
 * is bumped at every open of the database, the counter counts up in memory.
 *
 * Version 2 (written now): each open has its own key, HKDF of a base key
 * (itself HKDF of the master key) salted with 32 random bytes drawn at that
 * open, the epoch in the info. A file's history can repeat an epoch (a
 * restored backup, a copy opened twice, a rollback), never a salt, so a
 * (key, nonce) pair is never used twice whatever happens to the file: a
 * key seals at most 2^64 records (2^63 per thread, enforced), and the
 * salts of 2^32 opens collide with a probability below 2^-190. The salts
 * are not secret; the store keeps each epoch's in its meta database.
 * Version 1 (earlier releases; still read): one key for every epoch. */
#ifndef PERSIST_LMDB_SEAL_H
#define PERSIST_LMDB_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY_LEN 32
#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16
#define SEAL_HEADER_LEN (2 + SEAL_NONCE_LEN)
#define SEAL_OVERHEAD (SEAL_HEADER_LEN + SEAL_TAG_LEN)
#define SEAL_VERSION 2
#define SEAL_VERSION_V1 1
#define SEAL_SALT_LEN 32
#define HASH_LEN 16

enum seal_result {
	SEAL_OK = 0,
	SEAL_ERR_FORMAT,   /* too short, or unknown envelope version */
	SEAL_ERR_KEY_ID,   /* sealed under a key id this key is not */
	SEAL_ERR_AUTH,     /* tag does not authenticate: tampered, or wrong key */
	SEAL_ERR_CRYPTO,   /* OpenSSL failed */
	SEAL_ERR_NONCE,    /* counter exhausted: reopen the database */
	SEAL_ERR_EPOCH,    /* sealed in an open whose salt this seal was not given */
};

struct seal;

/* Reads a key file: exactly 32 bytes, a regular file that neither group nor
 * others may read, that does not look like anything but random bytes (all
 * bytes alike, a few byte values, or text). On failure returns -1 and
 * writes a reason to err. The buffer is wiped by the caller with
 * seal_wipe(). */
int seal_key_load(const char *path, uint8_t key[SEAL_KEY_LEN], char *err, size_t errlen);

/* Writes a new random key file with mode 0600; fails if path exists. */
int seal_key_create(const char *path, char *err, size_t errlen);

/* Derives the sealing and index subkeys (HKDF-SHA256) from the master key.
 * The master key is not kept. */
struct seal *seal_new(const uint8_t key[SEAL_KEY_LEN], uint8_t key_id);
void seal_free(struct seal *s);

/* A copy of s with contexts of its own, for another thread: it opens what
 * s opens (the epochs s learned so far). Its nonce counter is s's; it is
 * not meant for sealing. */
struct seal *seal_clone(const struct seal *s);

/* A copy of s that seals on another thread: the two split the nonce
 * counters of s's epoch (s keeps the lower half). NULL when s has already
 * been split or has used up the lower half. Set the epoch before. */
struct seal *seal_split(struct seal *s);

uint8_t seal_key_id(const struct seal *s);

/* Gives the salt of an epoch, so that its version 2 records open.
 * SEAL_ERR_FORMAT when the epoch has another salt already. */
int seal_learn_epoch(struct seal *s, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN]);

/* Seals from now on under the key of epoch and salt (learned too); the
 * counter restarts at 1 (and a split ends). Nothing seals before it. */
int seal_set_epoch(struct seal *s, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN]);
/* seal_set_epoch with a new random salt, written to salt: what an open of
 * the database does (the salt is then stored with the epoch). */
int seal_begin_epoch(struct seal *s, uint32_t epoch, uint8_t salt[SEAL_SALT_LEN]);

/* Seals pt into out (pt_len + SEAL_OVERHEAD bytes), binding ad. pt may be
 * out + SEAL_HEADER_LEN (sealed in place); otherwise they must not overlap. */
int seal_record(struct seal *s, const uint8_t *ad, size_t ad_len,
		const uint8_t *pt, size_t pt_len, uint8_t *out);

/* Opens a sealed record into out (in_len - SEAL_OVERHEAD bytes). */
int seal_open(struct seal *s, const uint8_t *ad, size_t ad_len,
		const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len);

/* Keyed hash of a name (client id, topic, ...) for use in LMDB keys; kind
 * separates the name spaces so equal strings of different kinds differ. */
int seal_hash(struct seal *s, uint8_t kind, const void *data, size_t len, uint8_t out[HASH_LEN]);

/* Nonce epoch and counter of the last seal (for tests). */
void seal_last_nonce(const struct seal *s, uint8_t nonce[SEAL_NONCE_LEN]);

void seal_wipe(void *p, size_t len);

const char *seal_strerror(int rc);

#endif
