/* The intake journal (journal.h). */
#include "journal.h"
#include "array.h"
#include "bytes.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAGIC "PLMDB-J1"
#define HDR_SIZE 4096u
#define REC_MAGIC 0x4a524543u   /* "JREC": sealed with journal | lsn (earlier versions) */
#define REC2_MAGIC 0x4a524532u  /* sealed with journal | lsn | offset: bound to its place */
#define WRAP_MAGIC 0x4a575250u  /* "JWRP": the lap goes on at the first record slot */
#define REC_HEAD 16u
#define ALIGN 16u
#define AD_PREFIX "journal"

struct journal {
	int fd;
	int dsync_fd;         /* the same file opened O_DSYNC, for synced records; -1 until needed */
	char *path;
	uint8_t *map;
	size_t size;
	struct seal *seal;
	size_t head;          /* where the next record goes */
	size_t tail;          /* the oldest record not released */
	size_t used;          /* bytes from tail to head, wrap waste included */
	uint64_t last_lsn;
	uint8_t *scratch;     /* a synced record is built here and written with pwrite */
	size_t scratch_cap;
};

static size_t align_up(size_t n)
{
	return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

#define AD_LEN (sizeof(AD_PREFIX) - 1 + 16)

/* The associated data of a record: its lsn, and (REC2_MAGIC) its offset, so
 * that a record copied to another place of the ring does not authenticate.
 * Returns its length. */
static size_t make_ad(uint8_t ad[AD_LEN], uint32_t magic, uint64_t lsn, size_t off)
{
	memcpy(ad, AD_PREFIX, sizeof(AD_PREFIX) - 1);
	put_be64(ad + sizeof(AD_PREFIX) - 1, lsn);
	if(magic == REC_MAGIC){
		return sizeof(AD_PREFIX) - 1 + 8;
	}
	put_be64(ad + sizeof(AD_PREFIX) - 1 + 8, off);
	return AD_LEN;
}

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *c = p;

	while(n){
		ssize_t w = write(fd, c, n);
		if(w < 0){
			if(errno == EINTR){
				continue;
			}
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Makes a complete zeroed journal under a temporary name and renames it
 * into place, so a crash never leaves a half-made journal behind. Its
 * blocks are allocated (fallocate) or, with written_out or where the file
 * system cannot allocate, written: either way a write through the mapping
 * never needs a new block. Allocated blocks cost an extent conversion on
 * their first synced write, hence written_out for journals synced at every
 * record. */
static int create_file(const char *dir, const char *path, size_t size, bool written_out, char *err,
		size_t errlen)
{
	char tmp[4096];
	static const uint8_t zero[65536];
	uint8_t hdr[HDR_SIZE];
	int fd, dfd;

	if(snprintf(tmp, sizeof(tmp), "%s/journal.new", dir) >= (int)sizeof(tmp)){
		snprintf(err, errlen, "journal path too long");
		return -1;
	}
	/* A leftover of a creation cut short goes, whoever made it. */
	if(unlink(tmp) && errno != ENOENT){
		snprintf(err, errlen, "cannot remove %s: %s", tmp, strerror(errno));
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if(fd < 0){
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, FILE_MAGIC, 8);
	put_be64(hdr + 8, size);
	if(write_all(fd, hdr, sizeof(hdr))){
		goto io;
	}
	if(!written_out && posix_fallocate(fd, 0, (off_t)size) == 0){
		size = HDR_SIZE;
	}
	for(size_t done = HDR_SIZE; done < size;){
		size_t n = size - done < sizeof(zero) ? size - done : sizeof(zero);
		if(write_all(fd, zero, n)){
			goto io;
		}
		done += n;
	}
	if(fsync(fd)){
		goto io;
	}
	close(fd);
	if(rename(tmp, path)){
		snprintf(err, errlen, "cannot rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if(dfd >= 0){
		fsync(dfd);
		close(dfd);
	}
	return 0;
io:
	snprintf(err, errlen, "cannot write %s (%zu bytes): %s", tmp, size, strerror(errno));
	close(fd);
	unlink(tmp);
	return -1;
}

/* A journal cut down to its header (journal_close_stopped) holds nothing:
 * it only says that a database was here. */
static bool stopped_cleanly(const char *path)
{
	uint8_t hdr[8];
	struct stat sb;
	bool yes = false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if(fd < 0){
		return false;
	}
	yes = fstat(fd, &sb) == 0 && sb.st_size == HDR_SIZE && pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr)
		&& memcmp(hdr, FILE_MAGIC, 8) == 0;
	close(fd);
	return yes;
}

static int open_file(struct journal **out, const char *dir, size_t size, struct seal *seal,
		bool read_only, bool written_out, char *err, size_t errlen)
{
	char path[4096];
	struct journal *j;
	struct stat sb;
	int fd;

	*out = NULL;
	size = (size + HDR_SIZE - 1) / HDR_SIZE * HDR_SIZE;
	if(size < JOURNAL_MIN_SIZE){
		size = JOURNAL_MIN_SIZE;
	}
	if(snprintf(path, sizeof(path), "%s/journal", dir) >= (int)sizeof(path)){
		snprintf(err, errlen, "journal path too long");
		return JOURNAL_ERR_IO;
	}
	bool missing = access(path, F_OK) && errno == ENOENT;
	if(missing || stopped_cleanly(path)){
		if(read_only){
			return JOURNAL_OK;
		}
		if(create_file(dir, path, size, written_out, err, errlen)){
			return JOURNAL_ERR_IO;
		}
	}
	fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if(fd < 0){
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return JOURNAL_ERR_IO;
	}
	if(fstat(fd, &sb)){
		snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
		close(fd);
		return JOURNAL_ERR_IO;
	}
	if(sb.st_size < (off_t)JOURNAL_MIN_SIZE || sb.st_size % HDR_SIZE){
		snprintf(err, errlen, "%s is not a persist-lmdb journal (size %lld)", path, (long long)sb.st_size);
		close(fd);
		return JOURNAL_ERR_FORMAT;
	}
	j = calloc(1, sizeof(*j));
	if(!j){
		close(fd);
		snprintf(err, errlen, "out of memory");
		return JOURNAL_ERR_NOMEM;
	}
	j->fd = fd;
	j->dsync_fd = -1;
	j->seal = seal;
	j->size = (size_t)sb.st_size;
	j->path = strdup(path);
	j->map = mmap(NULL, j->size, PROT_READ | (read_only ? 0 : PROT_WRITE), MAP_SHARED, fd, 0);
	if(j->map == MAP_FAILED || !j->path){
		int rc = j->path ? JOURNAL_ERR_IO : JOURNAL_ERR_NOMEM;
		snprintf(err, errlen, "cannot map %s: %s", path, j->path ? strerror(errno) : "out of memory");
		if(j->map != MAP_FAILED){
			munmap(j->map, j->size);
		}
		close(fd);
		free(j->path);
		free(j);
		return rc;
	}
	if(memcmp(j->map, FILE_MAGIC, 8) || get_be64(j->map + 8) != j->size){
		snprintf(err, errlen, "%s is not a persist-lmdb journal", path);
		journal_close(j);
		return JOURNAL_ERR_FORMAT;
	}
	j->head = j->tail = HDR_SIZE;
	*out = j;
	return JOURNAL_OK;
}

int journal_open(struct journal **out, const char *dir, size_t size, struct seal *seal, bool written_out,
		char *err, size_t errlen)
{
	return open_file(out, dir, size, seal, false, written_out, err, errlen);
}

int journal_open_read(struct journal **out, const char *dir, struct seal *seal, char *err, size_t errlen)
{
	return open_file(out, dir, 0, seal, true, false, err, errlen);
}

int journal_close_stopped(struct journal *j)
{
	int rc = JOURNAL_OK;

	if(!j){
		return JOURNAL_OK;
	}
	if(ftruncate(j->fd, HDR_SIZE) || fsync(j->fd)){
		rc = JOURNAL_ERR_IO;
	}
	journal_close(j);
	return rc;
}

void journal_close(struct journal *j)
{
	if(!j){
		return;
	}
	munmap(j->map, j->size);
	close(j->fd);
	if(j->dsync_fd >= 0){
		close(j->dsync_fd);
	}
	free(j->path);
	free(j->scratch);
	free(j);
}

struct found {
	uint64_t lsn;
	size_t off;
	size_t slen;
	uint32_t magic;
};

static int found_cmp(const void *a, const void *b)
{
	const struct found *x = a, *y = b;
	return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

/* Distance from a to b going forward around the ring. */
static size_t ring_dist(const struct journal *j, size_t a, size_t b)
{
	return b >= a ? b - a : (j->size - a) + (b - HDR_SIZE);
}

int journal_replay(struct journal *j, uint64_t after, journal_visit_fn fn, void *ctx,
		uint64_t *unreadable)
{
	struct found *f = NULL;
	size_t n = 0, cap = 0, off = HDR_SIZE;
	uint8_t ad[AD_LEN];
	uint8_t *pt = NULL;
	size_t pt_cap = 0;
	uint64_t max_lsn = after;
	size_t max_end = HDR_SIZE;
	int rc = JOURNAL_OK;

	*unreadable = 0;
	while(off + REC_HEAD + SEAL_OVERHEAD <= j->size){
		const uint8_t *p = j->map + off;
		uint32_t magic = get_le32(p);
		size_t slen, len;
		uint64_t lsn;

		/* Most places hold no record: the magic alone rules them out
		 * (the scan of a 16 MiB journal was most of a restart's work). */
		if(magic != REC_MAGIC && magic != REC2_MAGIC){
			off += ALIGN;
			continue;
		}
		slen = get_le32(p + 4);
		lsn = get_be64(p + 8);
		if(lsn <= after || slen < SEAL_OVERHEAD || slen > j->size - off - REC_HEAD){
			off += ALIGN;
			continue;
		}
		if(slen - SEAL_OVERHEAD > pt_cap){
			uint8_t *np = realloc(pt, slen);
			if(!np){
				rc = JOURNAL_ERR_NOMEM;
				goto out;
			}
			pt = np;
			pt_cap = slen;
		}
		if(seal_open(j->seal, ad, make_ad(ad, magic, lsn, off), p + REC_HEAD, slen, pt, &len) != SEAL_OK){
			(*unreadable)++;
			off += ALIGN;
			continue;
		}
		if(ARRAY_GROW(f, n, cap, 64)){
			rc = JOURNAL_ERR_NOMEM;
			goto out;
		}
		f[n++] = (struct found){lsn, off, slen, magic};
		if(lsn > max_lsn){
			max_lsn = lsn;
			max_end = off + align_up(REC_HEAD + slen);
		}
		off += align_up(REC_HEAD + slen);
	}
	if(n){
		qsort(f, n, sizeof(*f), found_cmp);
	}
	for(size_t i = 0; i < n; i++){
		size_t len;
		if(i && f[i].lsn == f[i - 1].lsn){
			continue;
		}
		if(seal_open(j->seal, ad, make_ad(ad, f[i].magic, f[i].lsn, f[i].off), j->map + f[i].off + REC_HEAD,
				f[i].slen, pt, &len) != SEAL_OK){
			rc = JOURNAL_ERR_CRYPTO;
			goto out;
		}
		rc = fn(ctx, f[i].lsn, pt, len);
		if(rc){
			goto out;
		}
	}
	/* Writing goes on after the newest record; the records replayed stay
	 * protected until the store has committed what replaying them did. */
	j->last_lsn = max_lsn;
	j->head = max_end == j->size ? HDR_SIZE : max_end;
	j->tail = n ? f[0].off : j->head;
	j->used = n ? ring_dist(j, j->tail, j->head) : 0;
	if(n && j->used == 0){
		j->used = j->size - HDR_SIZE;
	}
out:
	free(f);
	if(pt){
		seal_wipe(pt, pt_cap);
		free(pt);
	}
	return rc;
}

/* Finds room for need bytes at the head, wrapping if that fits; returns the
 * offset or 0. */
static size_t reserve(struct journal *j, size_t need)
{
	bool wrapped = j->head < j->tail || (j->head == j->tail && j->used);

	if(j->used == 0){
		j->head = j->tail = HDR_SIZE;
		wrapped = false;
	}
	if(wrapped){
		return j->head + need <= j->tail ? j->head : 0;
	}
	if(j->head + need <= j->size){
		return j->head;
	}
	if(HDR_SIZE + need <= j->tail){
		put_le32(j->map + j->head, WRAP_MAGIC);
		j->used += j->size - j->head;
		j->head = HDR_SIZE;
		return j->head;
	}
	return 0;
}

/* Builds the record to go at offset off: magic | sealed length | lsn |
 * sealed plaintext (the magic is the caller's to write, last). */
static int record_build(struct journal *j, uint8_t *p, const uint8_t *pt, size_t len, uint64_t lsn, size_t off)
{
	uint8_t ad[AD_LEN];

	if(seal_record(j->seal, ad, make_ad(ad, REC2_MAGIC, lsn, off), pt, len, p + REC_HEAD) != SEAL_OK){
		return JOURNAL_ERR_CRYPTO;
	}
	put_le32(p + 4, (uint32_t)(len + SEAL_OVERHEAD));
	put_be64(p + 8, lsn);
	return JOURNAL_OK;
}

/* A synced record goes through pwrite on an O_DSYNC descriptor (one call:
 * the write and its flush, which the device can do as one forced-unit-
 * access write) rather than the mapping and msync: a write through the
 * mapping dirties page table entries that the flush must clean, and was
 * measurably slower (bench scenario C). The mapping sees the same page
 * cache. */
static int write_synced(struct journal *j, size_t off, const uint8_t *pt, size_t len, size_t need)
{
	int rc;

	if(need > j->scratch_cap){
		uint8_t *p = realloc(j->scratch, need);
		if(!p){
			return JOURNAL_ERR_NOMEM;
		}
		j->scratch = p;
		j->scratch_cap = need;
	}
	memset(j->scratch, 0, need);
	rc = record_build(j, j->scratch, pt, len, j->last_lsn + 1, off);
	if(rc){
		return rc;
	}
	put_le32(j->scratch, REC2_MAGIC);
	if(j->dsync_fd < 0){
		j->dsync_fd = open(j->path, O_WRONLY | O_DSYNC | O_CLOEXEC);
		if(j->dsync_fd < 0){
			return JOURNAL_ERR_IO;
		}
	}
	for(size_t done = 0; done < need;){
		ssize_t w = pwrite(j->dsync_fd, j->scratch + done, need - done, (off_t)(off + done));
		if(w < 0){
			if(errno == EINTR){
				continue;
			}
			return JOURNAL_ERR_IO;
		}
		done += (size_t)w;
	}
	return JOURNAL_OK;
}

int journal_append(struct journal *j, const uint8_t *pt, size_t len, bool sync, uint64_t *lsn)
{
	size_t need = align_up(REC_HEAD + len + SEAL_OVERHEAD);
	size_t off;
	uint8_t *p;

	if(need > (j->size - HDR_SIZE) / 4){
		return JOURNAL_TOO_LARGE;
	}
	off = reserve(j, need);
	if(!off){
		return JOURNAL_FULL;
	}
	if(sync){
		int rc = write_synced(j, off, pt, len, need);
		if(rc){
			return rc;
		}
	}else{
		p = j->map + off;
		/* The magic goes first to zero and last to its value (the compiler
		 * may not reorder across the fences): a process stopped in between
		 * leaves no record at this offset. */
		put_le32(p, 0);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		if(record_build(j, p, pt, len, j->last_lsn + 1, off)){
			return JOURNAL_ERR_CRYPTO;
		}
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		put_le32(p, REC2_MAGIC);
	}
	j->last_lsn++;
	j->head = off + need;
	j->used += need;
	if(j->head == j->size){
		j->head = HDR_SIZE;
	}
	*lsn = j->last_lsn;
	return JOURNAL_OK;
}

int journal_sync(struct journal *j)
{
	return fdatasync(j->fd) == 0 ? JOURNAL_OK : JOURNAL_ERR_IO;
}

uint64_t journal_last_lsn(const struct journal *j)
{
	return j->last_lsn;
}

void journal_release(struct journal *j, uint64_t committed)
{
	while(j->used){
		const uint8_t *p = j->map + j->tail;
		uint32_t magic = get_le32(p);

		if(magic == WRAP_MAGIC){
			j->used -= j->size - j->tail;
			j->tail = HDR_SIZE;
			continue;
		}
		if(magic != REC_MAGIC && magic != REC2_MAGIC){
			/* Only this process writes here; start afresh rather than guess. */
			j->used = 0;
			j->tail = j->head;
			return;
		}
		if(get_be64(p + 8) > committed){
			return;
		}
		size_t need = align_up(REC_HEAD + get_le32(p + 4));
		j->used -= need < j->used ? need : j->used;
		j->tail += need;
		if(j->tail == j->size){
			j->tail = HDR_SIZE;
		}
	}
}

size_t journal_size(const struct journal *j)
{
	return j->size;
}

void journal_release_memory(struct journal *j)
{
	if(j){
		(void)madvise(j->map, j->size, MADV_DONTNEED);
	}
}

size_t journal_used(const struct journal *j)
{
	return j->used;
}

const char *journal_strerror(int rc)
{
	switch(rc){
		case JOURNAL_OK: return "success";
		case JOURNAL_FULL: return "journal full";
		case JOURNAL_TOO_LARGE: return "record larger than a quarter of the journal";
		case JOURNAL_ERR_IO: return "I/O error";
		case JOURNAL_ERR_NOMEM: return "out of memory";
		case JOURNAL_ERR_CRYPTO: return "cryptographic failure";
		case JOURNAL_ERR_FORMAT: return "not a journal";
	}
	return "unknown error";
}
