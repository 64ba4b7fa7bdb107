/*
 * syncprobe: how many small synced writes per second the disk under a
 * directory takes, for the persist-lmdb benchmarks (bench/run.py, scenario
 * C). Not a test: it measures, it does not judge.
 *
 *   syncprobe -d DIR [-t SECS] [-s BYTES] [-f MIB] [-m both|pwrite|mmap]
 *
 * A file DIR/syncprobe.dat of MIB MiB is written out with zeros and fsynced
 * first (as the plugin's journal is: its blocks exist before the loop), then
 * for SECS seconds per variant, each write BYTES at the next offset (16-byte
 * aligned, wrapping at the end of the file):
 *
 *   pwrite  pwrite() the bytes, fdatasync() the file
 *   mmap    copy the bytes into a MAP_SHARED mapping of the file, msync()
 *           MS_SYNC the page(s) they touched (what the journal does)
 *
 * One synced write per message is the most a broker that makes every
 * message durable before acknowledging it can do for one synchronous
 * publisher: "the physical limit". The file is removed at the end.
 *
 * Prints one machine-readable line "syncprobe key=value ..." on stdout
 * (rates in operations per second, latencies in microseconds) and exits 0,
 * or 1 on an I/O error.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ALIGN 16u

struct options {
	const char *dir;
	double secs;
	long size;
	long file_mib;
	bool do_pwrite;
	bool do_mmap;
};

static struct options opt = {
	.dir = NULL,
	.secs = 5.0,
	.size = 200,
	.file_mib = 4,
	.do_pwrite = true,
	.do_mmap = true,
};

struct result {
	long ops;
	double secs;
	double p50_us;
	double p99_us;
	double max_us;
};

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t align_up(size_t n)
{
	return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

/* Latencies of one variant, in microseconds. */
struct lat {
	float *v;
	size_t n;
	size_t cap;
};

static bool lat_add(struct lat *l, double us)
{
	if(l->n == l->cap){
		size_t nc = l->cap ? l->cap * 2 : 4096;
		float *nv = realloc(l->v, nc * sizeof(*nv));
		if(!nv){
			perror("syncprobe: realloc");
			return false;
		}
		l->v = nv;
		l->cap = nc;
	}
	l->v[l->n++] = (float)us;
	return true;
}

static int float_cmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

static void lat_summary(struct lat *l, struct result *r)
{
	if(l->n == 0){
		return;
	}
	qsort(l->v, l->n, sizeof(*l->v), float_cmp);
	r->p50_us = l->v[l->n / 2];
	r->p99_us = l->v[(l->n * 99) / 100];
	r->max_us = l->v[l->n - 1];
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

/* Creates the zero-filled file, synced with its directory entry. */
static int create_file(const char *path, size_t size)
{
	static const uint8_t zero[65536];
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if(fd < 0){
		fprintf(stderr, "syncprobe: cannot create %s: %s\n", path, strerror(errno));
		return -1;
	}
	for(size_t done = 0; done < size;){
		size_t n = size - done < sizeof(zero) ? size - done : sizeof(zero);
		if(write_all(fd, zero, n)){
			fprintf(stderr, "syncprobe: cannot write %s: %s\n", path, strerror(errno));
			close(fd);
			return -1;
		}
		done += n;
	}
	if(fsync(fd)){
		fprintf(stderr, "syncprobe: fsync %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	int dfd = open(opt.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if(dfd >= 0){
		fsync(dfd);
		close(dfd);
	}
	return fd;
}

static int run_pwrite(int fd, size_t fsize, const uint8_t *rec, struct result *r)
{
	struct lat l = {0};
	size_t step = align_up((size_t)opt.size);
	size_t off = 0;
	double t0 = now_mono(), t = t0, end = t0 + opt.secs;
	int ret = 0;

	while(t < end){
		if(off + step > fsize){
			off = 0;
		}
		ssize_t w = pwrite(fd, rec, (size_t)opt.size, (off_t)off);
		if(w != (ssize_t)opt.size){
			fprintf(stderr, "syncprobe: pwrite: %s\n", w < 0 ? strerror(errno) : "short write");
			ret = -1;
			break;
		}
		if(fdatasync(fd)){
			fprintf(stderr, "syncprobe: fdatasync: %s\n", strerror(errno));
			ret = -1;
			break;
		}
		off += step;
		double t1 = now_mono();
		if(!lat_add(&l, (t1 - t) * 1e6)){
			ret = -1;
			break;
		}
		r->ops++;
		t = t1;
	}
	r->secs = t - t0;
	lat_summary(&l, r);
	free(l.v);
	return ret;
}

static int run_mmap(int fd, size_t fsize, const uint8_t *rec, struct result *r)
{
	struct lat l = {0};
	size_t step = align_up((size_t)opt.size);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t off = 0;
	int ret = 0;
	uint8_t *map = mmap(NULL, fsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if(map == MAP_FAILED){
		fprintf(stderr, "syncprobe: mmap: %s\n", strerror(errno));
		return -1;
	}
	double t0 = now_mono(), t = t0, end = t0 + opt.secs;
	while(t < end){
		if(off + step > fsize){
			off = 0;
		}
		memcpy(map + off, rec, (size_t)opt.size);
		size_t start = off & ~(page - 1);
		if(msync(map + start, off + (size_t)opt.size - start, MS_SYNC)){
			fprintf(stderr, "syncprobe: msync: %s\n", strerror(errno));
			ret = -1;
			break;
		}
		off += step;
		double t1 = now_mono();
		if(!lat_add(&l, (t1 - t) * 1e6)){
			ret = -1;
			break;
		}
		r->ops++;
		t = t1;
	}
	r->secs = t - t0;
	lat_summary(&l, r);
	free(l.v);
	munmap(map, fsize);
	return ret;
}

static void print_result(const char *name, const struct result *r)
{
	printf(" %s_ops=%ld %s_secs=%.3f %s_rate=%.0f %s_p50_us=%.0f %s_p99_us=%.0f %s_max_us=%.0f",
		name, r->ops, name, r->secs, name, r->secs > 0 ? (double)r->ops / r->secs : 0.0,
		name, r->p50_us, name, r->p99_us, name, r->max_us);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: syncprobe -d DIR [options]\n"
		"  -d DIR      directory on the disk to measure (a file syncprobe.dat is made there)\n"
		"  -t SECS     seconds per variant (5)\n"
		"  -s BYTES    bytes per write, 1..4096 (200)\n"
		"  -f MIB      file size in MiB (4)\n"
		"  -m MODE     both, pwrite (pwrite + fdatasync) or mmap (msync MS_SYNC) (both)\n");
}

static bool parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if(errno || *end || end == s || v < min || v > max){
		fprintf(stderr, "syncprobe: bad number '%s'\n", s);
		return false;
	}
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	int c;
	char *end;

	while((c = getopt(argc, argv, "d:t:s:f:m:")) != -1){
		bool ok = true;
		switch(c){
			case 'd': opt.dir = optarg; break;
			case 't':
				errno = 0;
				opt.secs = strtod(optarg, &end);
				ok = !errno && !*end && end != optarg && opt.secs > 0;
				break;
			case 's': ok = parse_long(optarg, 1, 4096, &opt.size); break;
			case 'f': ok = parse_long(optarg, 1, 4096, &opt.file_mib); break;
			case 'm':
				opt.do_pwrite = !strcmp(optarg, "both") || !strcmp(optarg, "pwrite");
				opt.do_mmap = !strcmp(optarg, "both") || !strcmp(optarg, "mmap");
				ok = opt.do_pwrite || opt.do_mmap;
				break;
			default: ok = false; break;
		}
		if(!ok){
			usage();
			return 2;
		}
	}
	if(optind != argc || !opt.dir){
		usage();
		return 2;
	}

	char path[4096];
	if(snprintf(path, sizeof(path), "%s/syncprobe.dat", opt.dir) >= (int)sizeof(path)){
		fprintf(stderr, "syncprobe: directory path too long\n");
		return 1;
	}
	size_t fsize = (size_t)opt.file_mib * 1024 * 1024;
	uint8_t rec[4096];
	for(size_t i = 0; i < sizeof(rec); i++){
		rec[i] = (uint8_t)(i * 131u + 7u);
	}

	int fd = create_file(path, fsize);
	if(fd < 0){
		return 1;
	}
	struct result pw = {0}, mm = {0};
	int rc = 0;
	if(opt.do_pwrite){
		rc = run_pwrite(fd, fsize, rec, &pw);
	}
	if(rc == 0 && opt.do_mmap){
		rc = run_mmap(fd, fsize, rec, &mm);
	}
	close(fd);
	unlink(path);
	if(rc){
		return 1;
	}
	printf("syncprobe size=%ld file_mib=%ld", opt.size, opt.file_mib);
	if(opt.do_pwrite){
		print_result("pwrite", &pw);
	}
	if(opt.do_mmap){
		print_result("mmap", &mm);
	}
	printf("\n");
	return 0;
}
