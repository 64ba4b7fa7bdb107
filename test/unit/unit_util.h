/* Small helpers shared by the unit tests: temporary directories and files.
 * Header-only (static inline) so each test_*.c stays a single translation
 * unit for test/unit/CMakeLists.txt. */
#ifndef PERSIST_LMDB_UNIT_UTIL_H
#define PERSIST_LMDB_UNIT_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh private directory under $TMPDIR (or /tmp); malloc'd path or NULL. */
static inline char *ut_mkdtemp(void)
{
	const char *base = getenv("TMPDIR");
	char *p;
	size_t n;

	if(!base || !*base){
		base = "/tmp";
	}
	n = strlen(base) + sizeof("/plmdb-unit-XXXXXX");
	p = malloc(n);
	if(!p){
		return NULL;
	}
	snprintf(p, n, "%s/plmdb-unit-XXXXXX", base);
	if(!mkdtemp(p)){
		free(p);
		return NULL;
	}
	return p;
}

/* malloc'd "a/b". */
static inline char *ut_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);

	if(p){
		snprintf(p, n, "%s/%s", a, b);
	}
	return p;
}

/* rm -rf path (no symlink following). */
static inline int ut_rm_rf(const char *path)
{
	struct stat sb;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if(lstat(path, &sb) != 0){
		return errno == ENOENT ? 0 : -1;
	}
	if(!S_ISDIR(sb.st_mode)){
		return unlink(path);
	}
	d = opendir(path);
	if(!d){
		return -1;
	}
	while((de = readdir(d)) != NULL){
		if(!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")){
			continue;
		}
		char *child = ut_join(path, de->d_name);
		if(!child || ut_rm_rf(child) != 0){
			rc = -1;
		}
		free(child);
	}
	closedir(d);
	if(rmdir(path) != 0){
		rc = -1;
	}
	return rc;
}

/* A temporary directory, one path in it and a test key: where every test
 * of the store or the journal starts. */
struct ut_tmp {
	char *dir;
	char *path;        /* dir/name */
	uint8_t key[32];   /* key[i] = first + i * step */
};

static inline void ut_tmp_remove(struct ut_tmp *t)
{
	if(t->dir){
		ut_rm_rf(t->dir);
	}
	free(t->dir);
	free(t->path);
	t->dir = t->path = NULL;
}

/* 0, or -1 with nothing left made. */
static inline int ut_tmp_make(struct ut_tmp *t, const char *name, uint8_t first, uint8_t step)
{
	if(!(t->dir = ut_mkdtemp()) || !(t->path = ut_join(t->dir, name))){
		ut_tmp_remove(t);
		return -1;
	}
	for(int i = 0; i < (int)sizeof(t->key); i++){
		t->key[i] = (uint8_t)(first + i * step);
	}
	return 0;
}

/* Writes len bytes to path (replacing it) and sets its mode exactly. */
static inline int ut_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if(fd < 0){
		return -1;
	}
	if((len && write(fd, data, len) != (ssize_t)len) || fchmod(fd, mode) != 0){
		close(fd);
		return -1;
	}
	return close(fd);
}

/* Reads a whole file; malloc'd (plus a NUL), or NULL. */
static inline uint8_t *ut_read_file(const char *path, size_t *len)
{
	struct stat sb;
	uint8_t *p;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if(fd < 0){
		return NULL;
	}
	if(fstat(fd, &sb) != 0 || !(p = malloc((size_t)sb.st_size + 1))){
		close(fd);
		return NULL;
	}
	while(got < (size_t)sb.st_size){
		ssize_t n = read(fd, p + got, (size_t)sb.st_size - got);
		if(n <= 0){
			free(p);
			close(fd);
			return NULL;
		}
		got += (size_t)n;
	}
	close(fd);
	p[got] = 0;
	*len = got;
	return p;
}

/* memmem without _GNU_SOURCE. */
static inline const uint8_t *ut_find(const uint8_t *hay, size_t hlen, const void *needle, size_t nlen)
{
	if(nlen == 0){
		return hay;
	}
	for(size_t i = 0; i + nlen <= hlen; i++){
		if(hay[i] == *(const uint8_t *)needle && !memcmp(hay + i, needle, nlen)){
			return hay + i;
		}
	}
	return NULL;
}

#endif
