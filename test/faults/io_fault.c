/* LD_PRELOAD shim for fault-injection tests: while the file named by
 * $PERSIST_LMDB_FAULT_FILE exists and holds "eio" or "enospc", writes and
 * syncs of a file named data.mdb fail with that error; while it holds
 * "kill-after-publish-sent", the process kills itself (SIGKILL) right after
 * it sends a PUBLISH packet on a socket: a crash at an exact point (in the
 * middle of a routing, for one). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* The control file's first line (empty when there is none). */
static void fault_mode(char *mode, size_t cap)
{
	const char *path = getenv("PERSIST_LMDB_FAULT_FILE");
	FILE *f;

	mode[0] = '\0';
	if(!path || !(f = fopen(path, "r"))){
		return;
	}
	if(!fgets(mode, (int)cap, f)){
		mode[0] = '\0';
	}
	fclose(f);
}

static int fault_errno(void)
{
	char mode[32];

	fault_mode(mode, sizeof(mode));
	if(!strncmp(mode, "eio", 3)){
		return EIO;
	}
	if(!strncmp(mode, "enospc", 6)){
		return ENOSPC;
	}
	return 0;
}

/* Whether fd is open on a file whose path ends with suffix. */
static int is_file(int fd, const char *suffix)
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

static int is_data_file(int fd)
{
	return is_file(fd, "/data.mdb");
}

/* After n bytes of buf were sent on fd: the crash the control file asks for. */
static void kill_after_send(int fd, const void *buf, ssize_t n)
{
	struct stat st;
	char mode[32];

	if(n > 0 && (((const unsigned char *)buf)[0] >> 4) == 3 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)){
		fault_mode(mode, sizeof(mode));
		if(!strncmp(mode, "kill-after-publish-sent", 23)){
			kill(getpid(), SIGKILL);
		}
	}
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

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	REAL(send);
	ssize_t w = real(fd, buf, n, flags);
	kill_after_send(fd, buf, w);
	return w;
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
