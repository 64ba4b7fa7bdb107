/* Salvage (salvage.h): a damaged data file read without LMDB, every record
 * that authenticates written into a new database. */
#include "salvage.h"
#include "array.h"
#include "bytes.h"
#include "journal.h"
#include "record.h"
#include "u64map.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Operations buffered before a commit. */
#define SALVAGE_BATCH 10000
/* LMDB trees are shallow: a deeper one loops. */
#define MAX_DEPTH 32

/* ---- LMDB's file format (liblmdb 0.9, 64-bit) ----
 *
 * Page: pgno (8) | pad (2) | flags (2) | lower (2) | upper (2), then lower's
 * worth of 2-byte node offsets; an overflow page has its page count (4) in
 * place of lower and upper. Node: lo (2) | hi (2) | flags (2) | key size (2)
 * | key | data; a branch node's child page is lo | hi << 16 | flags << 32, a
 * leaf node's data size lo | hi << 16. Meta pages 0 and 1 hold, after the
 * page header: magic (4) | version (4) | address (8) | map size (8) | the
 * free-page and main trees (48 each) | last page (8) | txnid (8). A tree:
 * pad (4; the page size in the free tree of a meta page) | flags (2) |
 * depth (2) | branch, leaf, overflow pages, entries (8 each) | root (8). */
#define PAGE_HDR 16
#define NODE_HDR 8
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define P_LEAF2 0x20
#define P_SUBP 0x40
#define F_BIGDATA 0x01
#define F_SUBDATA 0x02
#define F_DUPDATA 0x04
#define TREE_LEN 48
#define TREE_ROOT 40
#define META_MAGIC 0xBEEFC0DEu
#define META_TREES (PAGE_HDR + 24)
#define META_LAST (META_TREES + 2 * TREE_LEN)
#define META_TXNID (META_LAST + 8)
#define P_INVALID UINT64_MAX

struct file {
	const uint8_t *map;
	size_t size;
	size_t psize;
	uint64_t npages;
	uint8_t *seen;       /* a bit per page: each page is read once */
};

/* A page's bytes (whole pages, inside the file), or NULL. */
static const uint8_t *page_at(const struct file *f, uint64_t pgno, uint64_t count)
{
	if(pgno >= f->npages || count == 0 || count > f->npages - pgno){
		return NULL;
	}
	return f->map + pgno * f->psize;
}

/* Reads the newest meta page that checks out: its main tree's root. */
static int meta_pick(struct file *f, uint64_t *main_root, uint64_t *txnid)
{
	bool found = false;

	for(int i = 0; i < 2; i++){
		const uint8_t *p = f->map + (size_t)i * f->psize;
		if((size_t)(i + 1) * f->psize > f->size || !(get_le16(p + 10) & P_META)
				|| get_le32(p + PAGE_HDR) != META_MAGIC || get_le32(p + PAGE_HDR + 4) != 1){
			continue;
		}
		uint64_t t = get_le64(p + META_TXNID);
		if(!found || t > *txnid){
			found = true;
			*txnid = t;
			*main_root = get_le64(p + META_TREES + TREE_LEN + TREE_ROOT);
		}
	}
	return found ? 0 : -1;
}

/* The page size a meta page records, checked for sense. */
static size_t meta_psize(const uint8_t *map, size_t size)
{
	if(size < 2 * 4096 || get_le32(map + PAGE_HDR) != META_MAGIC){
		return 0;
	}
	size_t ps = get_le32(map + META_TREES);
	return ps >= 512 && ps <= 65536 && !(ps & (ps - 1)) ? ps : 0;
}

typedef void (*leaf_fn)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen,
		unsigned flags);

struct tree_walk {
	struct file *f;
	leaf_fn fn;
	void *ctx;
	uint64_t skipped;    /* pages (or sub-pages) that failed a check */
};

/* A node of page p (len bytes, offsets relative to it): its header and
 * key within the page, or NULL. */
static const uint8_t *node_at(const uint8_t *p, size_t len, unsigned i)
{
	size_t off = get_le16(p + PAGE_HDR + 2 * i);

	if(off < PAGE_HDR || off + NODE_HDR > len || off + NODE_HDR + get_le16(p + off + 6) > len){
		return NULL;
	}
	return p + off;
}

/* Node count of a branch or leaf page of len bytes; -1 when its header does
 * not hold together. */
static long page_keys(const uint8_t *p, size_t len)
{
	unsigned lower = get_le16(p + 12), upper = get_le16(p + 14);

	if(lower < PAGE_HDR || lower > upper || upper > len || (lower - PAGE_HDR) % 2){
		return -1;
	}
	return (long)(lower - PAGE_HDR) / 2;
}

static void walk_page(struct tree_walk *w, uint64_t pgno, int depth);

/* The leaf nodes of a page (a real one, or a sub-page inside a node). */
static void walk_leaf(struct tree_walk *w, const uint8_t *p, size_t len)
{
	long n = page_keys(p, len);

	if(n < 0){
		w->skipped++;
		return;
	}
	for(long i = 0; i < n; i++){
		const uint8_t *nd = node_at(p, len, (unsigned)i);
		if(!nd){
			w->skipped++;
			continue;
		}
		unsigned flags = get_le16(nd + 4), klen = get_le16(nd + 6);
		size_t dlen = get_le16(nd) | (size_t)get_le16(nd + 2) << 16;
		const uint8_t *key = nd + NODE_HDR, *data = key + klen;

		if(flags & F_BIGDATA){
			const uint8_t *ov;
			uint64_t ovp;
			if(data + 8 > p + len || (ovp = get_le64(data), !(ov = page_at(w->f, ovp,
					(PAGE_HDR - 1 + dlen) / w->f->psize + 1)))
					|| get_le64(ov) != ovp || !(get_le16(ov + 10) & P_OVERFLOW)){
				w->skipped++;
				continue;
			}
			w->fn(w->ctx, key, klen, ov + PAGE_HDR, dlen, flags);
		}else if(data + dlen > p + len){
			w->skipped++;
		}else{
			w->fn(w->ctx, key, klen, data, dlen, flags);
		}
	}
}

/* A page (or sub-page) of a DUPFIXED database: no nodes, its keys packed
 * after the header, each of the size the header's pad field gives. */
static void walk_leaf2(struct tree_walk *w, const uint8_t *p, size_t len)
{
	size_t lower = get_le16(p + 12), ks = get_le16(p + 8);
	size_t n = lower >= PAGE_HDR ? (lower - PAGE_HDR) / 2 : 0;

	if(lower < PAGE_HDR || ks == 0 || PAGE_HDR + n * ks > len){
		w->skipped++;
		return;
	}
	for(size_t i = 0; i < n; i++){
		w->fn(w->ctx, p + PAGE_HDR + i * ks, ks, NULL, 0, 0);
	}
}

static void walk_branch(struct tree_walk *w, const uint8_t *p, int depth)
{
	long n = page_keys(p, w->f->psize);

	if(n < 0){
		w->skipped++;
		return;
	}
	for(long i = 0; i < n; i++){
		const uint8_t *nd = node_at(p, w->f->psize, (unsigned)i);
		if(!nd){
			w->skipped++;
			continue;
		}
		walk_page(w, get_le16(nd) | (uint64_t)get_le16(nd + 2) << 16 | (uint64_t)get_le16(nd + 4) << 32,
				depth + 1);
	}
}

static void walk_page(struct tree_walk *w, uint64_t pgno, int depth)
{
	const uint8_t *p = page_at(w->f, pgno, 1);

	if(!p || depth > MAX_DEPTH || (w->f->seen[pgno >> 3] & (1u << (pgno & 7))) || get_le64(p) != pgno){
		w->skipped++;
		return;
	}
	w->f->seen[pgno >> 3] |= (uint8_t)(1u << (pgno & 7));
	switch(get_le16(p + 10) & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2)){
		case P_BRANCH:
			walk_branch(w, p, depth);
			break;
		case P_LEAF:
			walk_leaf(w, p, w->f->psize);
			break;
		case P_LEAF | P_LEAF2:
			walk_leaf2(w, p, w->f->psize);
			break;
		default:
			w->skipped++;
	}
}

static void walk_tree(struct tree_walk *w, uint64_t root)
{
	if(root != P_INVALID){
		walk_page(w, root, 0);
	}
}

/* The duplicates of a node with F_DUPDATA: a sub-page inside its data, or
 * (with F_SUBDATA) a tree of their own; each duplicate is a key there. */
static void walk_dups(struct tree_walk *w, const uint8_t *data, size_t dlen, unsigned flags)
{
	if(flags & F_SUBDATA){
		if(dlen != TREE_LEN){
			w->skipped++;
			return;
		}
		walk_tree(w, get_le64(data + TREE_ROOT));
	}else if(dlen < PAGE_HDR || !(get_le16(data + 10) & P_SUBP)){
		w->skipped++;
	}else if(get_le16(data + 10) & P_LEAF2){
		walk_leaf2(w, data, dlen);
	}else{
		walk_leaf(w, data, dlen);
	}
}

/* ---- records ---- */

struct client_name {
	uint8_t hash[HASH_LEN];
	char *clientid;
};

/* The queues: schema 5's log (log id -> sealed) named by its index (client
 * hash -> seq | log id, read first into log_names), the DUPSORT tree of
 * schemas 2 to 4 (client hash -> seq | sealed), schema 1's one key per
 * entry (client hash | seq -> sealed). A log entry whose index pair was on
 * a lost page cannot be opened (its client and seq are the associated
 * data) and is counted as left out. */
enum queue_layout { QUEUES_LOG, QUEUES_DUPS, QUEUES_KEYS };

struct named {
	uint64_t root[DB_COUNT];
	uint64_t legacy_queue_root;      /* schema 1's queues */
	uint64_t queues4_root;           /* the queues of schemas 2 to 4 */
	uint64_t journal_mark;
	bool have_mark;
};

struct salvage {
	struct file f;
	struct seal *seal[256];          /* by key id, made when a record names one */
	struct epoch_salt_rec {
		uint32_t epoch;
		uint8_t salt[SEAL_SALT_LEN];
	} *salts;                        /* the salts of the file's opens (meta) */
	size_t n_salts;
	uint8_t key[SEAL_KEY_LEN];
	struct store *dst;
	enum store_db db;                /* of the tree being walked */
	enum queue_layout layout;        /* of the queue tree being walked */
	struct u64map log_names;         /* log id -> client hash | seq, from the index */
	struct u64map bodies;            /* the store ids of the bodies copied (but 0) */
	bool body0;                      /* body 0 was copied */
	const uint8_t *dup_key;          /* the key whose duplicates are being walked */
	size_t dup_klen;
	struct client_name *names;       /* from the sessions, sorted by hash */
	size_t n_names, cap_names;
	uint8_t *pt;
	size_t pt_cap;
	uint32_t max_epoch;
	bool dry;                        /* the first pass: epochs only, nothing written */
	struct named *nm;
	uint64_t batch;
	int rc;                          /* the first error writing the new database */
	struct salvage_report *rep;
	struct tree_walk *w;
};

static int name_cmp(const void *a, const void *b)
{
	return memcmp(((const struct client_name *)a)->hash, ((const struct client_name *)b)->hash, HASH_LEN);
}

static const char *client_of(const struct salvage *sv, const uint8_t *hash)
{
	struct client_name k, *hit;

	memcpy(k.hash, hash, HASH_LEN);
	hit = sv->n_names ? bsearch(&k, sv->names, sv->n_names, sizeof(k), name_cmp) : NULL;
	return hit ? hit->clientid : NULL;
}

static void name_add(struct salvage *sv, const uint8_t *hash, const char *clientid)
{
	if(ARRAY_GROW(sv->names, sv->n_names, sv->cap_names, 256)){
		sv->rc = STORE_ERR_NOMEM;
		return;
	}
	sv->names[sv->n_names].clientid = strdup(clientid);
	if(!sv->names[sv->n_names].clientid){
		sv->rc = STORE_ERR_NOMEM;
		return;
	}
	memcpy(sv->names[sv->n_names++].hash, hash, HASH_LEN);
}

/* Opens a sealed value found under ad; its plaintext in sv->pt. */
static bool open_sealed(struct salvage *sv, const uint8_t *ad, size_t adlen, const uint8_t *v, size_t vlen,
		size_t *len)
{
	uint8_t id;

	if(vlen < SEAL_OVERHEAD || (v[0] != SEAL_VERSION && v[0] != SEAL_VERSION_V1)){
		return false;
	}
	id = v[1];
	if(!sv->seal[id]){
		if(!(sv->seal[id] = seal_new(sv->key, id))){
			sv->rc = STORE_ERR_CRYPTO;
			return false;
		}
		for(size_t i = 0; i < sv->n_salts; i++){
			if(seal_learn_epoch(sv->seal[id], sv->salts[i].epoch, sv->salts[i].salt)){
				sv->rc = STORE_ERR_NOMEM;
				return false;
			}
		}
	}
	if(vlen - SEAL_OVERHEAD > sv->pt_cap){
		uint8_t *p = realloc(sv->pt, vlen);
		if(!p){
			sv->rc = STORE_ERR_NOMEM;
			return false;
		}
		sv->pt = p;
		sv->pt_cap = vlen;
	}
	if(seal_open(sv->seal[id], ad, adlen, v, vlen, sv->pt, len) != SEAL_OK){
		return false;
	}
	/* Nonce: epoch (4, big-endian) | counter (8). */
	if(get_be32(v + 2) > sv->max_epoch){
		sv->max_epoch = get_be32(v + 2);
	}
	return true;
}

/* Writes one authenticated record into the new database; -1 when its
 * plaintext does not decode as its kind. */
static int copy_record(struct salvage *sv, enum store_db db, const uint8_t *key, size_t klen,
		const uint8_t *pt, size_t len)
{
	struct store *d = sv->dst;
	struct reader r = {pt, len, false};
	const char *clientid;
	int rc = STORE_OK;

	switch(db){
		case DB_MSGS: {
			struct rec_base_msg m;
			if(klen != 8 || record_decode_base_msg(pt, len, &m)){
				return -1;
			}
			rc = store_msg_put(d, get_be64(key), &m);
			if(rc == STORE_OK && get_be64(key) == 0){
				sv->body0 = true;
			}else if(rc == STORE_OK && !u64map_add(&sv->bodies, get_be64(key))){
				rc = STORE_ERR_NOMEM;
			}
			break;
		}
		case DB_QUEUE: {
			struct rec_queue q;
			if(klen != HASH_LEN + 8 || record_decode_queue(pt, len, &q)){
				return -1;
			}
			if(!(clientid = client_of(sv, key))){
				sv->rep->orphaned_queue++;
				return 0;
			}
			/* Bodies come first (salvage_pass): one not copied was lost,
			 * and an entry without it cannot be delivered. */
			if(q.store_id ? !u64map_get(&sv->bodies, q.store_id) : !sv->body0){
				sv->rep->bodiless_queue++;
				return 0;
			}
			rc = store_queue_append(d, clientid, get_be64(key + HASH_LEN), &q);
			break;
		}
		case DB_SESSIONS: {
			struct rec_session s;
			if(klen != HASH_LEN || record_decode_session(pt, len, &s)){
				return -1;
			}
			name_add(sv, key, s.clientid);
			rc = store_session_put(d, &s);
			break;
		}
		case DB_SUBS: {
			struct rec_sub s;
			if(record_decode_sub(pt, len, &s)){
				return -1;
			}
			rc = store_sub_put(d, &s);
			break;
		}
		case DB_RETAINED: {
			struct rec_retain rt;
			if(record_decode_retain(pt, len, &rt)){
				return -1;
			}
			rc = store_retain_set(d, rt.topic, rt.store_id);
			break;
		}
		case DB_WILLS: {
			struct rec_will w;
			if(record_decode_will(pt, len, &w)){
				return -1;
			}
			rc = store_will_put(d, &w);
			break;
		}
		case DB_ONLINE:
			clientid = rd_str(&r);
			if(!clientid || r.left){
				return -1;
			}
			rc = store_session_set_online(d, clientid, true);
			break;
		case DB_DEDUP: {
			struct rec_dedup dd;
			if(klen != HASH_LEN || record_decode_dedup(pt, len, &dd)){
				return -1;
			}
			rc = store_dedup_put(d, key, &dd);
			break;
		}
		case DB_SEQNO: {
			uint64_t last = rd_varint(&r);
			if(klen != HASH_LEN || r.err || r.left){
				return -1;
			}
			if(!(clientid = client_of(sv, key))){
				return 0;
			}
			rc = store_seqno_put(d, clientid, last);
			break;
		}
		default:
			return 0;
	}
	if(rc){
		sv->rc = rc;
	}else if(++sv->batch % SALVAGE_BATCH == 0){
		sv->rc = store_commit(d);
	}
	return 0;
}

static void visit_value(struct salvage *sv, const uint8_t *key, size_t klen, const uint8_t *v, size_t vlen)
{
	uint8_t ad[1 + 2 * HASH_LEN + 8 + 64];
	size_t adlen, len;

	if(klen > sizeof(ad) - 1){
		sv->rep->rejected[sv->db] += !sv->dry;
		return;
	}
	adlen = store_ad(sv->db, key, klen, ad);
	if(sv->dry){
		open_sealed(sv, ad, adlen, v, vlen, &len);
		return;
	}
	if(!open_sealed(sv, ad, adlen, v, vlen, &len) || copy_record(sv, sv->db, key, klen, sv->pt, len)){
		sv->rep->rejected[sv->db]++;
	}else{
		sv->rep->copied[sv->db]++;
	}
}

/* A queue entry, a duplicate of its client's key: seq (8) | sealed. */
static void visit_dup(void *ctx, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen, unsigned flags)
{
	struct salvage *sv = ctx;
	uint8_t lkey[HASH_LEN + 8];

	(void)data;
	(void)flags;
	if(sv->dup_klen != HASH_LEN || klen < 8 || dlen != 0){
		sv->rep->rejected[DB_QUEUE] += !sv->dry;
		return;
	}
	memcpy(lkey, sv->dup_key, HASH_LEN);
	memcpy(lkey + HASH_LEN, key, 8);
	visit_value(sv, lkey, sizeof(lkey), key + 8, klen - 8);
}

/* An index pair of the client sv->dup_key: seq (8) | log id (8). */
static void visit_pair(void *ctx, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen, unsigned flags)
{
	struct salvage *sv = ctx;
	uint8_t *name;

	(void)data;
	(void)dlen;
	(void)flags;
	if(sv->dup_klen != HASH_LEN || klen != 16 || get_be64(key + 8) == 0){
		sv->rep->rejected[DB_QUEUE] += !sv->dry;
		return;
	}
	name = u64map_add(&sv->log_names, get_be64(key + 8));
	if(!name){
		sv->rc = STORE_ERR_NOMEM;
		return;
	}
	memcpy(name, sv->dup_key, HASH_LEN);
	memcpy(name + HASH_LEN, key, 8);
}

/* Each duplicate of a client's key (an index pair, or an entry of schemas
 * 2 to 4) to fn, with the key in sv->dup_key. */
static void visit_key_dups(struct salvage *sv, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen,
		unsigned flags, void (*fn)(void *, const uint8_t *, size_t, const uint8_t *, size_t, unsigned))
{
	sv->dup_key = key;
	sv->dup_klen = klen;
	if(!(flags & F_DUPDATA)){
		/* A client's only duplicate is a plain value. */
		fn(sv, data, dlen, NULL, 0, 0);
		return;
	}
	struct tree_walk dups = {sv->w->f, fn, sv, 0};
	walk_dups(&dups, data, dlen, flags);
	sv->w->skipped += dups.skipped;
}

static void visit_leaf(void *ctx, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen, unsigned flags)
{
	struct salvage *sv = ctx;

	if(sv->rc){
		return;
	}
	if(sv->db == DB_QINDEX){
		visit_key_dups(sv, key, klen, data, dlen, flags, visit_pair);
		return;
	}
	if(sv->db == DB_QUEUE && sv->layout == QUEUES_LOG){
		const uint8_t *name = klen == 8 ? u64map_get(&sv->log_names, get_be64(key)) : NULL;
		if(!name || (flags & (F_DUPDATA | F_SUBDATA))){
			sv->rep->rejected[DB_QUEUE] += !sv->dry;
			return;
		}
		visit_value(sv, name, HASH_LEN + 8, data, dlen);
		return;
	}
	if(sv->db == DB_QUEUE && sv->layout == QUEUES_DUPS){
		visit_key_dups(sv, key, klen, data, dlen, flags, visit_dup);
		return;
	}
	if(flags & (F_DUPDATA | F_SUBDATA)){
		sv->rep->rejected[sv->db] += !sv->dry;
		return;
	}
	visit_value(sv, key, klen, data, dlen);
}

/* ---- the named databases ---- */

static void visit_name(void *ctx, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen, unsigned flags)
{
	struct named *nm = ctx;

	if(!(flags & F_SUBDATA) || dlen != TREE_LEN){
		return;
	}
	for(int db = 0; db < DB_COUNT; db++){
		const char *name = store_db_name((enum store_db)db);
		if(klen == strlen(name) && !memcmp(key, name, klen)){
			nm->root[db] = get_le64(data + TREE_ROOT);
		}
	}
	if(klen == 5 && !memcmp(key, "queue", 5)){
		nm->legacy_queue_root = get_le64(data + TREE_ROOT);
	}
	if(klen == 6 && !memcmp(key, "queues", 6)){
		nm->queues4_root = get_le64(data + TREE_ROOT);
	}
}

/* The salts of the file's opens (store.c: meta "salt" | epoch, unsealed),
 * read before anything sealed. */
static void visit_salt(void *ctx, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen, unsigned flags)
{
	struct salvage *sv = ctx;
	struct epoch_salt_rec *p;

	if(flags || klen != 8 || memcmp(key, "salt", 4) || dlen != SEAL_SALT_LEN){
		return;
	}
	p = realloc(sv->salts, (sv->n_salts + 1) * sizeof(*p));
	if(!p){
		sv->rc = STORE_ERR_NOMEM;
		return;
	}
	sv->salts = p;
	p[sv->n_salts].epoch = get_be32(key + 4);
	memcpy(p[sv->n_salts].salt, data, SEAL_SALT_LEN);
	sv->n_salts++;
	if(get_be32(key + 4) > sv->max_epoch){
		sv->max_epoch = get_be32(key + 4);
	}
}

static int salt_cmp(const void *a, const void *b)
{
	const struct epoch_salt_rec *x = a, *y = b;

	return x->epoch < y->epoch ? -1 : x->epoch > y->epoch;
}

/* One salt per epoch: of two (a damaged copy) one is kept, and the records
 * the other would open are counted unreadable. */
static void salts_unique(struct salvage *sv)
{
	size_t n = 0;

	if(sv->n_salts){
		qsort(sv->salts, sv->n_salts, sizeof(*sv->salts), salt_cmp);
	}
	for(size_t i = 0; i < sv->n_salts; i++){
		if(!n || sv->salts[i].epoch != sv->salts[n - 1].epoch){
			sv->salts[n++] = sv->salts[i];
		}
	}
	sv->n_salts = n;
}

/* The meta records that matter here: the epoch and the journal mark. */
static void visit_meta(void *ctx, const uint8_t *key, size_t klen, const uint8_t *data, size_t dlen, unsigned flags)
{
	struct salvage *sv = ctx;
	struct named *nm = sv->nm;
	uint8_t ad[64];
	size_t len;

	if(flags || klen > sizeof(ad) - 1 || (klen == 8 && !memcmp(key, "salt", 4))){
		return;
	}
	if(!open_sealed(sv, ad, store_ad(DB_META, key, klen, ad), data, dlen, &len)){
		sv->rep->rejected[DB_META] += !sv->dry;
		return;
	}
	if(klen == 5 && !memcmp(key, "epoch", 5) && len == 4 && get_be32(sv->pt) > sv->max_epoch){
		sv->max_epoch = get_be32(sv->pt);
	}
	if(klen == 7 && !memcmp(key, "journal", 7) && len == 8){
		nm->journal_mark = get_be64(sv->pt);
		nm->have_mark = true;
	}
}

static int map_file(const char *path, struct file *f, char *err, size_t errlen)
{
	struct stat sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	memset(f, 0, sizeof(*f));
	if(fd < 0 || fstat(fd, &sb) != 0){
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		if(fd >= 0){
			close(fd);
		}
		return STORE_ERR_IO;
	}
	f->size = (size_t)sb.st_size;
	f->map = f->size ? mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
	close(fd);
	if(f->map == MAP_FAILED){
		f->map = NULL;
		snprintf(err, errlen, "cannot map %s: %s", path, f->size ? strerror(errno) : "it is empty");
		return STORE_ERR_CORRUPT;
	}
	f->psize = meta_psize(f->map, f->size);
	if(!f->psize){
		snprintf(err, errlen, "%s has no readable LMDB meta page: nothing can be salvaged", path);
		return STORE_ERR_CORRUPT;
	}
	f->npages = f->size / f->psize;
	f->seen = calloc((size_t)(f->npages / 8 + 1), 1);
	if(!f->seen){
		snprintf(err, errlen, "out of memory");
		return STORE_ERR_NOMEM;
	}
	return STORE_OK;
}

static int copy_file(const char *from, const char *to)
{
	uint8_t buf[65536];
	int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, rc = -1;
	ssize_t n;

	if(in >= 0){
		out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if(out >= 0){
		while((n = read(in, buf, sizeof(buf))) > 0){
			if(write(out, buf, (size_t)n) != n){
				break;
			}
		}
		rc = n == 0 && fsync(out) == 0 ? 0 : -1;
	}
	if(in >= 0){
		close(in);
	}
	if(out >= 0){
		close(out);
	}
	return rc;
}

/* Walks one named database (into the new one, unless dry). */
static void salvage_db(struct salvage *sv, enum store_db db, uint64_t root, enum queue_layout layout)
{
	struct tree_walk w = {&sv->f, db == DB_META ? visit_meta : visit_leaf, sv, 0};

	sv->db = db;
	sv->layout = layout;
	sv->w = &w;
	walk_tree(&w, root);
	if(!sv->dry){
		sv->rep->pages_skipped += w.skipped;
	}
	sv->w = NULL;
}

/* Every named database, meta first; a page is read once per pass. */
static void salvage_pass(struct salvage *sv, bool dry)
{
	static const enum store_db order[] = {
		/* Sessions before what needs their client ids. */
		DB_META, DB_SESSIONS, DB_MSGS, DB_QINDEX, DB_QUEUE, DB_SUBS, DB_RETAINED, DB_WILLS, DB_ONLINE, DB_DEDUP,
		DB_SEQNO,
	};

	sv->dry = dry;
	memset(sv->f.seen, 0, (size_t)(sv->f.npages / 8 + 1));
	for(size_t i = 0; i < sizeof(order) / sizeof(order[0]) && !sv->rc; i++){
		salvage_db(sv, order[i], sv->nm->root[order[i]], QUEUES_LOG);
		if(order[i] == DB_QUEUE && sv->nm->queues4_root != P_INVALID){
			salvage_db(sv, DB_QUEUE, sv->nm->queues4_root, QUEUES_DUPS);
		}
		if(order[i] == DB_QUEUE && sv->nm->legacy_queue_root != P_INVALID){
			salvage_db(sv, DB_QUEUE, sv->nm->legacy_queue_root, QUEUES_KEYS);
		}
		if(order[i] == DB_SESSIONS && sv->n_names){
			qsort(sv->names, sv->n_names, sizeof(*sv->names), name_cmp);
		}
	}
}

int salvage_run(const char *src, const char *dst, const uint8_t key[SEAL_KEY_LEN], size_t map_size,
		store_log_fn log, struct salvage_report *rep, char *err, size_t errlen)
{
	struct salvage *sv = calloc(1, sizeof(*sv));
	struct named nm;
	char path[4096], jpath[4096];
	uint64_t main_root = P_INVALID;
	int rc;

	memset(rep, 0, sizeof(*rep));
	memset(&nm, 0, sizeof(nm));
	for(int i = 0; i < DB_COUNT; i++){
		nm.root[i] = P_INVALID;
	}
	nm.legacy_queue_root = nm.queues4_root = P_INVALID;
	if(!sv){
		snprintf(err, errlen, "out of memory");
		return STORE_ERR_NOMEM;
	}
	sv->rep = rep;
	sv->nm = &nm;
	u64map_init(&sv->log_names, HASH_LEN + 8);
	u64map_init(&sv->bodies, 0);
	memcpy(sv->key, key, SEAL_KEY_LEN);
	snprintf(path, sizeof(path), "%s/data.mdb", src);
	rc = map_file(path, &sv->f, err, errlen);
	if(rc == STORE_OK && meta_pick(&sv->f, &main_root, &rep->txnid)){
		snprintf(err, errlen, "%s has no readable LMDB meta page: nothing can be salvaged", path);
		rc = STORE_ERR_CORRUPT;
	}
	if(rc == STORE_OK){
		struct tree_walk w = {&sv->f, visit_name, &nm, 0};
		walk_tree(&w, main_root);
		rep->pages_skipped += w.skipped;
		struct tree_walk sw = {&sv->f, visit_salt, sv, 0};
		memset(sv->f.seen, 0, (size_t)(sv->f.npages / 8 + 1));
		walk_tree(&sw, nm.root[DB_META]);
		salts_unique(sv);
		/* The new database starts above every epoch this file shows. */
		salvage_pass(sv, true);
		rc = sv->rc;
		if(rc){
			snprintf(err, errlen, "cannot read %s: %s", path, store_strerror(rc));
		}
	}
	if(rc == STORE_OK){
		rc = store_create(&sv->dst, dst, map_size, key, 1, sv->max_epoch, log, err, errlen);
	}
	if(rc == STORE_OK){
		salvage_pass(sv, false);
	}
	if(rc == STORE_OK && !sv->rc){
		sv->rc = store_commit(sv->dst);
	}
	if(rc == STORE_OK && !sv->rc){
		struct store_refs refs;
		sv->rc = store_check_refs(sv->dst, true, &refs);
		rep->orphan_msgs = refs.orphan_msgs;
		if(!sv->rc){
			sv->rc = store_commit(sv->dst);
		}
	}
	/* The journal holds what the broker acknowledged after the mark; one a
	 * clean stop cut to its header holds nothing. */
	struct stat jst;
	snprintf(path, sizeof(path), "%s/journal", src);
	if(rc == STORE_OK && !sv->rc && nm.have_mark && stat(path, &jst) == 0 && jst.st_size >= (off_t)JOURNAL_MIN_SIZE){
		snprintf(jpath, sizeof(jpath), "%s/journal", dst);
		if(copy_file(path, jpath) != 0){
			snprintf(err, errlen, "cannot copy %s to %s: %s", path, jpath, strerror(errno));
			rc = STORE_ERR_IO;
		}else{
			/* The journal's records open with the salts of their epochs. */
			for(size_t i = 0; i < sv->n_salts && !sv->rc; i++){
				sv->rc = store_salt_adopt(sv->dst, sv->salts[i].epoch, sv->salts[i].salt);
			}
			if(!sv->rc){
				sv->rc = store_journal_mark(sv->dst, nm.journal_mark);
			}
			if(!sv->rc){
				sv->rc = store_commit(sv->dst);
			}
			rep->journal_kept = 1;
			rep->journal_mark = nm.journal_mark;
		}
	}
	if(rc == STORE_OK && sv->rc){
		snprintf(err, errlen, "cannot write the new database in %s: %s", dst, store_strerror(sv->rc));
		rc = sv->rc;
	}
	store_close(sv->dst);
	for(size_t i = 0; i < sv->n_names; i++){
		free(sv->names[i].clientid);
	}
	free(sv->names);
	u64map_free(&sv->log_names);
	u64map_free(&sv->bodies);
	for(int i = 0; i < 256; i++){
		seal_free(sv->seal[i]);
	}
	free(sv->salts);
	if(sv->pt){
		seal_wipe(sv->pt, sv->pt_cap);
		free(sv->pt);
	}
	if(sv->f.map){
		munmap((void *)sv->f.map, sv->f.size);
	}
	free(sv->f.seen);
	seal_wipe(sv->key, sizeof(sv->key));
	free(sv);
	return rc;
}
