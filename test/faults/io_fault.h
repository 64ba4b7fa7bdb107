/* The write and sync functions, interposed: each fails (-1, with the errno
 * io_fault_fails set) where io_fault_fails(fd) says so, and otherwise calls
 * the next definition (libc's). Shared by the LD_PRELOAD shim io_fault.c
 * and the unit test feature_dispatch.c (a full device); the file that
 * includes it defines io_fault_fails, and _GNU_SOURCE before any include.
 * It defines the functions, so a program includes it once. */
#ifndef PERSIST_LMDB_IO_FAULT_H
#define PERSIST_LMDB_IO_FAULT_H

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* Whether this write or sync of fd fails; when it does, errno is set. */
static int io_fault_fails(int fd);

/* Whether fd is open on a file whose path ends with suffix. */
static int io_fault_on_file(int fd, const char *suffix)
{
	char link[64], target[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if(n <= 0){
		return 0;
	}
	target[n] = '\0';
	n -= (ssize_t)strlen(suffix);
	return n >= 0 && !strcmp(target + n, suffix);
}

/* real: the next definition of name. */
#define REAL(name) static __typeof__(name) *real; if(!real){ real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name); }

int fdatasync(int fd)
{
	REAL(fdatasync);
	return io_fault_fails(fd) ? -1 : real(fd);
}

int fsync(int fd)
{
	REAL(fsync);
	return io_fault_fails(fd) ? -1 : real(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite);
	return io_fault_fails(fd) ? -1 : real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite64);
	return io_fault_fails(fd) ? -1 : real(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev);
	return io_fault_fails(fd) ? -1 : real(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev64);
	return io_fault_fails(fd) ? -1 : real(fd, iov, cnt, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(write);
	return io_fault_fails(fd) ? -1 : real(fd, buf, n);
}

/* LMDB writes several pages at once with writev. */
ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	REAL(writev);
	return io_fault_fails(fd) ? -1 : real(fd, iov, cnt);
}

#endif
