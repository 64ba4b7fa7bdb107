/* What the feature_<module>.c tests share: the plugin as the features see
 * it, the fake broker (fake_broker.h) and a real store in a temporary
 * directory. */
#ifndef PERSIST_LMDB_FEATURE_UTIL_H
#define PERSIST_LMDB_FEATURE_UTIL_H

#include <stdlib.h>

#include "dispatch.h"
#include "fake_broker.h"
#include "feature.h"
#include "unit_util.h"

/* A temporary directory with the store's database in "db". */
struct fstore {
	char *dir;
	char *db;
	uint8_t key[SEAL_KEY_LEN];
};

/* Opens the store (made at the first call, the same one after); 0 or -1. */
static inline int fstore_open(struct fstore *f, struct store **st)
{
	char err[256];

	if(!f->dir){
		if(!(f->dir = ut_mkdtemp()) || !(f->db = ut_join(f->dir, "db"))){
			return -1;
		}
		for(int i = 0; i < SEAL_KEY_LEN; i++){
			f->key[i] = (uint8_t)(0x3c + i * 7);
		}
	}
	return store_open(st, f->db, 0, f->key, 0, NULL, err, sizeof(err)) == STORE_OK ? 0 : -1;
}

static inline void fstore_remove(struct fstore *f)
{
	ut_rm_rf(f->dir);
	free(f->dir);
	free(f->db);
}

#endif
