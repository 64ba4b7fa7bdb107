/* AES-256-GCM record envelope and HMAC-SHA256 index hashes (OpenSSL 3 EVP). */
#include "seal.h"
#include "array.h"
#include "bytes.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

/* Keys of version 2 records: one per open of the database (epoch), derived
 * from the base key and the open's random salt, so that a nonce (epoch |
 * counter) used again by another history of the file (a restored backup,
 * a copy opened twice) goes with another key. */
struct epoch_salt {
	uint32_t epoch;
	uint8_t salt[SEAL_SALT_LEN];
};

/* Derived opening keys of recent epochs (records of several opens mix). */
#define KEY_SLOTS 8

struct key_slot {
	EVP_CIPHER_CTX *dec;   /* NULL: empty */
	uint32_t epoch;
	uint64_t used;         /* for replacing the least recently used */
};

struct seal {
	EVP_CIPHER_CTX *enc;     /* the current epoch's key (version 2) */
	EVP_CIPHER_CTX *dec_v1;  /* version 1 records: one subkey for every epoch */
	EVP_MAC_CTX *mac;
	uint8_t *base;           /* SEAL_KEY_LEN bytes the epoch keys come from (heap, locked) */
	struct epoch_salt *salts;  /* sorted by epoch */
	size_t n_salts, cap_salts;
	struct key_slot slots[KEY_SLOTS];
	uint64_t slot_clock;
	uint8_t key_id;
	bool keyed;              /* seal_set_epoch gave enc a key */
	uint32_t epoch;
	uint64_t counter;
	uint64_t counter_end;    /* the last counter this instance may use */
	uint8_t last_nonce[SEAL_NONCE_LEN];
};

void seal_wipe(void *p, size_t len)
{
	OPENSSL_cleanse(p, len);
}

/* A key file that is obviously not 32 random bytes: all bytes alike, a
 * handful of byte values, or text (a passphrase, or a random key written as
 * hex or base64). 32 random bytes are each of these with a probability
 * below 1e-13. */
static int key_weakness(const char *path, uint8_t key[SEAL_KEY_LEN], char *err, size_t errlen)
{
	bool seen[256] = {false};
	size_t distinct = 0, text = 0;

	for(size_t i = 0; i < SEAL_KEY_LEN; i++){
		distinct += !seen[key[i]];
		seen[key[i]] = true;
		text += key[i] >= 0x20 && key[i] < 0x7f;
	}
	if(distinct >= 12 && text < SEAL_KEY_LEN){
		return 0;
	}
	if(distinct == 1){
		snprintf(err, errlen, "key file %s is not a random key: its 32 bytes are all 0x%02x; make one with "
				"head -c 32 /dev/urandom", path, key[0]);
	}else if(text == SEAL_KEY_LEN){
		snprintf(err, errlen, "key file %s holds text, not 32 random bytes (a passphrase, or a key written "
				"as hex or base64?); make one with head -c 32 /dev/urandom", path);
	}else{
		snprintf(err, errlen, "key file %s is not a random key: only %zu different byte values in 32; "
				"make one with head -c 32 /dev/urandom", path, distinct);
	}
	seal_wipe(key, SEAL_KEY_LEN);
	return -1;
}

int seal_key_load(const char *path, uint8_t key[SEAL_KEY_LEN], char *err, size_t errlen)
{
	struct stat st;
	uint8_t extra;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if(fd < 0){
		snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
		return -1;
	}
	if(fstat(fd, &st) != 0){
		snprintf(err, errlen, "cannot stat key file %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if(!S_ISREG(st.st_mode)){
		snprintf(err, errlen, "key file %s is not a regular file", path);
		close(fd);
		return -1;
	}
	if(st.st_mode & (S_IRWXG | S_IRWXO)){
		snprintf(err, errlen, "key file %s is readable by group or others (mode %04o); "
				"chmod 600 it", path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -1;
	}
	n = read(fd, key, SEAL_KEY_LEN);
	if(n == SEAL_KEY_LEN && read(fd, &extra, 1) == 0){
		close(fd);
		return key_weakness(path, key, err, errlen);
	}
	if(n < 0){
		snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
	}else{
		snprintf(err, errlen, "key file %s must hold exactly 32 bytes (has %lld)",
				path, (long long)st.st_size);
	}
	seal_wipe(key, SEAL_KEY_LEN);
	close(fd);
	return -1;
}

int seal_key_create(const char *path, char *err, size_t errlen)
{
	uint8_t key[SEAL_KEY_LEN];
	int fd, rc = -1;

	if(RAND_priv_bytes(key, sizeof(key)) != 1){
		snprintf(err, errlen, "cannot get random bytes for a new key");
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if(fd < 0){
		snprintf(err, errlen, "cannot create key file %s: %s", path, strerror(errno));
	}else if(write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) || fsync(fd) != 0){
		snprintf(err, errlen, "cannot write key file %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
	}else if(close(fd) != 0){
		snprintf(err, errlen, "cannot write key file %s: %s", path, strerror(errno));
		unlink(path);
	}else{
		rc = 0;
	}
	seal_wipe(key, sizeof(key));
	return rc;
}

/* HKDF-SHA256 of key with info, and salt when given (saltlen bytes). */
static int derive_salted(const uint8_t key[SEAL_KEY_LEN], const void *info, size_t infolen,
		const uint8_t *salt, size_t saltlen, uint8_t out[SEAL_KEY_LEN])
{
	EVP_KDF *kdf;
	EVP_KDF_CTX *kctx;
	OSSL_PARAM params[5], *p = params;
	int rc;

	kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if(!kdf){
		return -1;
	}
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if(!kctx){
		return -1;
	}
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, SEAL_KEY_LEN);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
	if(salt){
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
	}
	*p = OSSL_PARAM_construct_end();
	rc = EVP_KDF_derive(kctx, out, SEAL_KEY_LEN, params) == 1 ? 0 : -1;
	EVP_KDF_CTX_free(kctx);
	return rc;
}

static int derive(const uint8_t key[SEAL_KEY_LEN], const char *info, uint8_t out[SEAL_KEY_LEN])
{
	return derive_salted(key, info, strlen(info), NULL, 0, out);
}

/* The key of one epoch: HKDF of the base key, salted with the epoch's salt,
 * the epoch in the info. */
static int epoch_key(const struct seal *s, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN],
		uint8_t out[SEAL_KEY_LEN])
{
	static const char label[] = "persist-lmdb seal v2 epoch ";
	uint8_t info[sizeof(label) - 1 + 4];

	memcpy(info, label, sizeof(label) - 1);
	put_be32(info + sizeof(label) - 1, epoch);
	return derive_salted(s->base, info, sizeof(info), salt, SEAL_SALT_LEN, out);
}

/* The base key lives on the heap, kept out of swap. */
static uint8_t *base_alloc(void)
{
	uint8_t *b = malloc(SEAL_KEY_LEN);

	if(b){
		(void)mlock(b, SEAL_KEY_LEN);
	}
	return b;
}

static void base_free(uint8_t *b)
{
	if(b){
		seal_wipe(b, SEAL_KEY_LEN);
		(void)munlock(b, SEAL_KEY_LEN);
		free(b);
	}
}

struct seal *seal_new(const uint8_t key[SEAL_KEY_LEN], uint8_t key_id)
{
	uint8_t sk[SEAL_KEY_LEN], ik[SEAL_KEY_LEN];
	OSSL_PARAM params[2];
	struct seal *s;
	EVP_MAC *mac;
	bool ok = false;

	s = calloc(1, sizeof(*s));
	if(!s){
		return NULL;
	}
	/* Keep the subkeys out of swap while they are on the stack. */
	(void)mlock(sk, sizeof(sk));
	(void)mlock(ik, sizeof(ik));
	s->key_id = key_id;
	s->counter_end = UINT64_MAX;
	s->enc = EVP_CIPHER_CTX_new();
	s->dec_v1 = EVP_CIPHER_CTX_new();
	s->base = base_alloc();
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if(mac){
		s->mac = EVP_MAC_CTX_new(mac);
		EVP_MAC_free(mac);
	}
	if(s->enc && s->dec_v1 && s->mac && s->base
			&& derive(key, "persist-lmdb seal v1", sk) == 0
			&& derive(key, "persist-lmdb index v1", ik) == 0
			&& derive(key, "persist-lmdb seal v2 base", s->base) == 0
			&& EVP_DecryptInit_ex2(s->dec_v1, EVP_aes_256_gcm(), sk, NULL, NULL) == 1){
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		ok = EVP_MAC_init(s->mac, ik, sizeof(ik), params) == 1;
	}
	seal_wipe(sk, sizeof(sk));
	seal_wipe(ik, sizeof(ik));
	(void)munlock(sk, sizeof(sk));
	(void)munlock(ik, sizeof(ik));
	if(!ok){
		seal_free(s);
		return NULL;
	}
	return s;
}

struct seal *seal_clone(const struct seal *s)
{
	struct seal *c = calloc(1, sizeof(*c));

	if(!c){
		return NULL;
	}
	*c = *s;
	memset(c->slots, 0, sizeof(c->slots));
	c->salts = NULL;
	c->enc = EVP_CIPHER_CTX_new();
	c->dec_v1 = EVP_CIPHER_CTX_new();
	c->mac = EVP_MAC_CTX_dup(s->mac);
	c->base = base_alloc();
	if(c->base){
		memcpy(c->base, s->base, SEAL_KEY_LEN);
	}
	if(s->n_salts && (c->salts = malloc(s->n_salts * sizeof(*c->salts))) != NULL){
		memcpy(c->salts, s->salts, s->n_salts * sizeof(*c->salts));
	}
	c->cap_salts = c->salts ? s->n_salts : 0;
	if(!c->enc || !c->dec_v1 || !c->mac || !c->base || (s->n_salts && !c->salts)
			|| (s->keyed && EVP_CIPHER_CTX_copy(c->enc, s->enc) != 1)
			|| EVP_CIPHER_CTX_copy(c->dec_v1, s->dec_v1) != 1){
		seal_free(c);
		return NULL;
	}
	return c;
}

void seal_free(struct seal *s)
{
	if(!s){
		return;
	}
	EVP_CIPHER_CTX_free(s->enc);
	EVP_CIPHER_CTX_free(s->dec_v1);
	for(int i = 0; i < KEY_SLOTS; i++){
		EVP_CIPHER_CTX_free(s->slots[i].dec);
	}
	EVP_MAC_CTX_free(s->mac);
	base_free(s->base);
	free(s->salts);
	seal_wipe(s, sizeof(*s));
	free(s);
}

uint8_t seal_key_id(const struct seal *s)
{
	return s->key_id;
}

static struct epoch_salt *salt_find(const struct seal *s, uint32_t epoch, size_t *at)
{
	size_t lo = 0, hi = s->n_salts;

	while(lo < hi){
		size_t mid = lo + (hi - lo) / 2;
		if(s->salts[mid].epoch < epoch){
			lo = mid + 1;
		}else{
			hi = mid;
		}
	}
	*at = lo;
	return lo < s->n_salts && s->salts[lo].epoch == epoch ? &s->salts[lo] : NULL;
}

int seal_learn_epoch(struct seal *s, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN])
{
	struct epoch_salt *e;
	size_t at;

	if((e = salt_find(s, epoch, &at)) != NULL){
		return memcmp(e->salt, salt, SEAL_SALT_LEN) ? SEAL_ERR_FORMAT : SEAL_OK;
	}
	if(ARRAY_GROW(s->salts, s->n_salts, s->cap_salts, 16)){
		return SEAL_ERR_CRYPTO;
	}
	memmove(&s->salts[at + 1], &s->salts[at], (s->n_salts - at) * sizeof(*s->salts));
	s->salts[at].epoch = epoch;
	memcpy(s->salts[at].salt, salt, SEAL_SALT_LEN);
	s->n_salts++;
	return SEAL_OK;
}

int seal_set_epoch(struct seal *s, uint32_t epoch, const uint8_t salt[SEAL_SALT_LEN])
{
	uint8_t k[SEAL_KEY_LEN];
	int rc = seal_learn_epoch(s, epoch, salt);

	if(rc){
		return rc;
	}
	(void)mlock(k, sizeof(k));
	rc = epoch_key(s, epoch, salt, k) == 0
		&& EVP_EncryptInit_ex2(s->enc, EVP_aes_256_gcm(), k, NULL, NULL) == 1 ? SEAL_OK : SEAL_ERR_CRYPTO;
	seal_wipe(k, sizeof(k));
	(void)munlock(k, sizeof(k));
	s->keyed = rc == SEAL_OK;
	s->epoch = epoch;
	s->counter = 0;
	s->counter_end = UINT64_MAX;
	return rc;
}

int seal_begin_epoch(struct seal *s, uint32_t epoch, uint8_t salt[SEAL_SALT_LEN])
{
	if(RAND_bytes(salt, SEAL_SALT_LEN) != 1){
		return SEAL_ERR_CRYPTO;
	}
	return seal_set_epoch(s, epoch, salt);
}

/* The opening context of epoch's key: a slot, derived into the least
 * recently used one when missing; NULL when the epoch is unknown. */
static EVP_CIPHER_CTX *epoch_dec(struct seal *s, uint32_t epoch)
{
	struct key_slot *victim = &s->slots[0];
	const struct epoch_salt *e;
	uint8_t k[SEAL_KEY_LEN];
	size_t at;
	int rc;

	for(int i = 0; i < KEY_SLOTS; i++){
		struct key_slot *sl = &s->slots[i];
		if(sl->dec && sl->epoch == epoch){
			sl->used = ++s->slot_clock;
			return sl->dec;
		}
		if(!sl->dec || sl->used < victim->used){
			victim = sl;
		}
	}
	if(!(e = salt_find(s, epoch, &at))){
		return NULL;
	}
	if(!victim->dec && !(victim->dec = EVP_CIPHER_CTX_new())){
		return NULL;
	}
	(void)mlock(k, sizeof(k));
	rc = epoch_key(s, epoch, e->salt, k) == 0
		&& EVP_DecryptInit_ex2(victim->dec, EVP_aes_256_gcm(), k, NULL, NULL) == 1;
	seal_wipe(k, sizeof(k));
	(void)munlock(k, sizeof(k));
	if(!rc){
		victim->used = 0;
		EVP_CIPHER_CTX_free(victim->dec);
		victim->dec = NULL;
		return NULL;
	}
	victim->epoch = epoch;
	victim->used = ++s->slot_clock;
	return victim->dec;
}

struct seal *seal_split(struct seal *s)
{
	const uint64_t half = UINT64_C(1) << 63;
	struct seal *c;

	if(s->counter >= half - 1 || s->counter_end != UINT64_MAX){
		return NULL;
	}
	c = seal_clone(s);
	if(!c){
		return NULL;
	}
	s->counter_end = half - 1;
	c->counter = half - 1;
	return c;
}

int seal_record(struct seal *s, const uint8_t *ad, size_t ad_len,
		const uint8_t *pt, size_t pt_len, uint8_t *out)
{
	uint8_t *nonce = out + 2;
	int len;

	if(!s->keyed){
		return SEAL_ERR_CRYPTO;
	}
	if(s->counter >= s->counter_end || pt_len > INT32_MAX){
		return SEAL_ERR_NONCE;
	}
	s->counter++;
	out[0] = SEAL_VERSION;
	out[1] = s->key_id;
	put_be32(nonce, s->epoch);
	put_be32(nonce + 4, (uint32_t)(s->counter >> 32));
	put_be32(nonce + 8, (uint32_t)s->counter);
	memcpy(s->last_nonce, nonce, SEAL_NONCE_LEN);

	if(EVP_EncryptInit_ex2(s->enc, NULL, NULL, nonce, NULL) != 1
			|| EVP_EncryptUpdate(s->enc, NULL, &len, ad, (int)ad_len) != 1
			|| EVP_EncryptUpdate(s->enc, out + SEAL_HEADER_LEN, &len, pt, (int)pt_len) != 1
			|| EVP_EncryptFinal_ex(s->enc, out + SEAL_HEADER_LEN + len, &len) != 1
			|| EVP_CIPHER_CTX_ctrl(s->enc, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN,
				out + SEAL_HEADER_LEN + pt_len) != 1){
		return SEAL_ERR_CRYPTO;
	}
	return SEAL_OK;
}

int seal_open(struct seal *s, const uint8_t *ad, size_t ad_len,
		const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len)
{
	EVP_CIPHER_CTX *dec;
	size_t ct_len;
	int len;

	if(in_len < SEAL_OVERHEAD || in_len - SEAL_OVERHEAD > INT32_MAX
			|| (in[0] != SEAL_VERSION && in[0] != SEAL_VERSION_V1)){
		return SEAL_ERR_FORMAT;
	}
	if(in[1] != s->key_id){
		return SEAL_ERR_KEY_ID;
	}
	dec = in[0] == SEAL_VERSION_V1 ? s->dec_v1 : epoch_dec(s, get_be32(in + 2));
	if(!dec){
		return SEAL_ERR_EPOCH;
	}
	ct_len = in_len - SEAL_OVERHEAD;
	/* EVP_DecryptFinal_ex compares the tag in constant time. */
	if(EVP_DecryptInit_ex2(dec, NULL, NULL, in + 2, NULL) != 1
			|| EVP_DecryptUpdate(dec, NULL, &len, ad, (int)ad_len) != 1
			|| EVP_DecryptUpdate(dec, out, &len, in + SEAL_HEADER_LEN, (int)ct_len) != 1
			|| EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN,
				(void *)(in + SEAL_HEADER_LEN + ct_len)) != 1){
		return SEAL_ERR_CRYPTO;
	}
	if(EVP_DecryptFinal_ex(dec, out + len, &len) != 1){
		seal_wipe(out, ct_len);
		return SEAL_ERR_AUTH;
	}
	*out_len = ct_len;
	return SEAL_OK;
}

int seal_hash(struct seal *s, uint8_t kind, const void *data, size_t len, uint8_t out[HASH_LEN])
{
	uint8_t full[32];
	size_t full_len;

	if(EVP_MAC_init(s->mac, NULL, 0, NULL) != 1
			|| EVP_MAC_update(s->mac, &kind, 1) != 1
			|| EVP_MAC_update(s->mac, data, len) != 1
			|| EVP_MAC_final(s->mac, full, &full_len, sizeof(full)) != 1){
		return SEAL_ERR_CRYPTO;
	}
	memcpy(out, full, HASH_LEN);
	return SEAL_OK;
}

void seal_last_nonce(const struct seal *s, uint8_t nonce[SEAL_NONCE_LEN])
{
	memcpy(nonce, s->last_nonce, SEAL_NONCE_LEN);
}

const char *seal_strerror(int rc)
{
	switch(rc){
		case SEAL_OK: return "ok";
		case SEAL_ERR_FORMAT: return "not a sealed record of a known version";
		case SEAL_ERR_KEY_ID: return "sealed under another key id";
		case SEAL_ERR_AUTH: return "does not authenticate (tampered, corrupt or wrong key)";
		case SEAL_ERR_CRYPTO: return "OpenSSL error";
		case SEAL_ERR_NONCE: return "nonce counter exhausted";
		case SEAL_ERR_EPOCH: return "sealed in an open of the database whose salt is not known";
	}
	return "unknown error";
}
