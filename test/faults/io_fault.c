/* LD_PRELOAD shim for fault-injection tests: while the file named by
 * $PERSIST_LMDB_FAULT_FILE exists and holds "eio" or "enospc", writes and
 * syncs of a file named data.mdb fail with that error; while it holds
 * "kill-after-publish-sent", the process kills itself (SIGKILL) right after
 * it sends a PUBLISH packet on a socket: a crash at an exact point (in the
 * middle of a routing, for one). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "io_fault.h"

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

/* For io_fault.h: writes and syncs of data.mdb fail while the control file says so. */
static int io_fault_fails(int fd)
{
	int e = io_fault_on_file(fd, "/data.mdb") ? fault_errno() : 0;

	if(e){
		errno = e;
	}
	return e != 0;
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	REAL(send);
	ssize_t w = real(fd, buf, n, flags);
	kill_after_send(fd, buf, w);
	return w;
}
