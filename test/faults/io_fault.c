/* LD_PRELOAD shim for fault-injection tests: while the file named by
 * $PERSIST_LMDB_FAULT_FILE exists and holds "eio" or "enospc", writes and
 * syncs of a file named data.mdb fail with that error. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int fault_errno(void)
{
	const char *path = getenv("PERSIST_LMDB_FAULT_FILE");
	char mode[16] = {0};
	FILE *f;

	if(!path || !(f = fopen(path, "r"))){
		return 0;
	}
	if(!fgets(mode, sizeof(mode), f)){
		mode[0] = '\0';
	}
	fclose(f);
	if(!strncmp(mode, "eio", 3)){
		return EIO;
	}
	if(!strncmp(mode, "enospc", 6)){
		return ENOSPC;
	}
	return 0;
}

static int is_data_file(int fd)
{
	char link[64], target[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if(n <= 0){
		return 0;
	}
	target[n] = '\0';
	n -= (ssize_t)strlen("/data.mdb");
	return n >= 0 && !strcmp(target + n, "/data.mdb");
}

static int should_fail(int fd)
{
	int e = is_data_file(fd) ? fault_errno() : 0;

	if(e){
		errno = e;
	}
	return e != 0;
}

#define REAL(name) static __typeof__(name) *real; if(!real){ real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name); }

int fdatasync(int fd)
{
	REAL(fdatasync);
	return should_fail(fd) ? -1 : real(fd);
}

int fsync(int fd)
{
	REAL(fsync);
	return should_fail(fd) ? -1 : real(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite);
	return should_fail(fd) ? -1 : real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite64);
	return should_fail(fd) ? -1 : real(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev);
	return should_fail(fd) ? -1 : real(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev64);
	return should_fail(fd) ? -1 : real(fd, iov, cnt, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(write);
	return should_fail(fd) ? -1 : real(fd, buf, n);
}
