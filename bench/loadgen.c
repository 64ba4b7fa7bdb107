/*
 * loadgen: a small MQTT load tool on libmosquitto for the persist-lmdb
 * benchmarks (bench/run.sh). Not a test: it measures, it does not judge.
 *
 *   loadgen subscribe-offline -p PORT -k K [-i PREFIX] [-t TOPIC] [-e] [-g GROUP] [-q QOS]
 *       K persistent sessions (MQTT 3.1.1, clean session off) subscribe to
 *       TOPIC (with -e: session i to TOPIC/i), with -g also to GROUP (same
 *       QoS, in the same SUBSCRIBE), and disconnect cleanly: they become
 *       offline sessions. Up to 100 sessions are set up at a time.
 *   loadgen publish -p PORT -n N [-P P] [-s SIZE] [-q QOS] [-w WINDOW] [-t TOPIC]
 *                   [-e -k K] [-g GROUP -G M] [-D SECS] [-R RATE]
 *       P publishers (connections, one thread each; default 1) send N
 *       messages of SIZE bytes between them (publisher j sends N/P, the first
 *       N%P one more), each with at most WINDOW unacknowledged and its own
 *       sequence numbers 0, 1, ... With -e, message i of a publisher goes to
 *       TOPIC/(i mod K). With -G, each publisher then sends M more messages
 *       to GROUP, its sequence numbers going on after its share of N (with
 *       -P 1: N .. N+M-1); msgs= and rate= count them too. With -w 1 (each
 *       message waits for its PUBACK/PUBCOMP: a synchronous publisher) the
 *       publishing thread runs the network loop itself. With -D, sending
 *       stops after SECS seconds (or the N messages, whichever comes first)
 *       and the rate counts the messages sent, all acknowledged. With -R,
 *       message i of publisher j is sent at i*P/RATE seconds after the start
 *       (or later, if the window is full).
 *   loadgen drain -p PORT -k K -n N [-P P] [-i PREFIX] [-e [-G M]]
 *       Reconnects the K sessions and waits until each has received all N
 *       messages of P publishers (as publish -n N -P P sent them); checks
 *       gaps, duplicates and the order of each publisher's messages.
 *       secs: from the first CONNECT to the last message; first_ms: to the
 *       first one. The sessions connect all at once: up to 4 threads each
 *       connect a share of them (non-blocking) and run their network loops
 *       with poll() (libmosquitto's own loop thread uses select(), which
 *       refuses sockets numbered 1024 or more: a few hundred sessions).
 *       A session whose connection fails before its CONNACK (the broker's
 *       listen queue was full and TCP gave up or reset it, or no CONNACK
 *       within the keepalive, 60 s) connects again, as a client would:
 *       reconnects= counts those; a failure after the CONNACK fails the run.
 *       With -e (the sessions of subscribe-offline -e [-g GROUP], the
 *       messages of publish -e -k K [-G M]), session i waits only for its
 *       own: of each publisher's share of N the messages whose sequence
 *       number s has s mod K == i, then that publisher's M group messages; a
 *       message meant for another session counts as bogus. A session's
 *       memory follows what it expects, not N. The line adds group=M and
 *       expected= (what all sessions expect together).
 *   loadgen subscribe-online -p PORT -k K -n N [-P P] [-i PREFIX] [-t TOPIC] [-q QOS]
 *       K persistent sessions (clean session off) subscribe to TOPIC, print
 *       "subscribe-online ready=1" once all are subscribed, stay connected and
 *       wait until each has received the N messages of P publishers; checks
 *       them as drain does. One libmosquitto loop thread per session, so at
 *       most a few hundred sessions.
 *   loadgen wait-connect -p PORT [-S EPOCH_SECS] [-I POLL_MS]
 *       Polls CONNECT until a CONNACK arrives; reports the time since EPOCH_SECS
 *       (CLOCK_REALTIME, e.g. `date +%s.%N` taken when the broker was started),
 *       or since the command started.
 *
 * Each command prints one machine-readable line "CMD key=value ..." on stdout
 * (its last line) and exits 0 on success, 1 on failure or timeout (-T SECS,
 * default 600). drain and subscribe-online report the latency of each
 * message, receive time - publish time (publisher and subscriber on one
 * machine): lat_p50_us, lat_p99_us, lat_max_us and hist_us=B:C,... (C
 * messages took less than B µs and at least B/2; empty buckets left out).
 *
 * Payload: bytes 0..7 the publisher's sequence number, bytes 8..15 the publish
 * time in ns (CLOCK_REALTIME), bytes 16..19 the publisher's index (0..P-1),
 * all little endian; the rest is padding.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#define HEADER_BYTES 20
#define SUB_BATCH 100     /* subscribe-offline: sessions set up at a time */
#define HIST_BUCKETS 40   /* log2 µs buckets: up to 2^39 µs */
#define TOPIC_MAX 200
#define DRAIN_THREADS 4   /* drain: threads running the sessions' network loops */
#define CONNECT_BATCH 8   /* drain: CONNECTs per thread between two passes over its sockets */

struct options {
	const char *host;
	int port;
	const char *topic;
	const char *group;
	const char *prefix;
	bool each;
	long group_msgs;
	int clients;
	int publishers;
	long messages;
	int size;
	int qos;
	long window;
	double timeout;
	double duration;
	double rate;
	double since;
	int poll_ms;
};

static struct options opt = {
	.host = "127.0.0.1",
	.port = 1883,
	.topic = "bench/t",
	.group = NULL,
	.prefix = "bench-sub-",
	.each = false,
	.group_msgs = 0,
	.clients = 5,
	.publishers = 1,
	.messages = 1000,
	.size = 100,
	.qos = 1,
	.window = 100,
	.timeout = 600.0,
	.duration = 0.0,
	.rate = 0.0,
	.since = 0.0,
	.poll_ms = 5,
};

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
	for(int i = 0; i < bytes; i++){
		p[i] = (unsigned char)(v >> (8 * i));
	}
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
	uint64_t v = 0;
	for(int i = 0; i < bytes; i++){
		v |= (uint64_t)p[i] << (8 * i);
	}
	return v;
}

static void fail(const char *what, int rc)
{
	fprintf(stderr, "loadgen: %s: %s\n", what, mosquitto_strerror(rc));
}

/* Client i's topic: TOPIC, or TOPIC/i with -e. */
static void client_topic(char *buf, size_t len, long i)
{
	if(opt.each){
		snprintf(buf, len, "%s/%ld", opt.topic, i);
	}else{
		snprintf(buf, len, "%s", opt.topic);
	}
}

/* Messages publisher j sends of N (the first N%P send one more). */
static long pub_count(int j)
{
	return opt.messages / opt.publishers + (j < opt.messages % opt.publishers ? 1 : 0);
}

/* Absolute CLOCK_REALTIME deadline for pthread_cond_timedwait. */
static struct timespec deadline_after(double secs)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	double whole = (double)(long)secs;
	ts.tv_sec += (time_t)whole;
	ts.tv_nsec += (long)((secs - whole) * 1e9);
	if(ts.tv_nsec >= 1000000000L){
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* A client with its own settings: MQTT 3.1.1, Nagle off, no client-side
 * inflight limit (the publisher's window is the limit). */
static struct mosquitto *client_new(const char *id, bool clean, void *obj)
{
	struct mosquitto *mosq = mosquitto_new(id, clean, obj);
	if(!mosq){
		perror("loadgen: mosquitto_new");
		return NULL;
	}
	int rc = mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_max_inflight_messages_set(mosq, 0);
	}
	if(rc != MOSQ_ERR_SUCCESS){
		fail("client options", rc);
		mosquitto_destroy(mosq);
		return NULL;
	}
	return mosq;
}

/* ---- synchronous helpers (subscribe-offline, wait-connect) ---- */

struct sync_state {
	int connack;      /* -1 until CONNACK, then its return code */
	int subacked;     /* granted QoS (128 if they differ), -1 until SUBACK */
	int subcount;     /* topics the SUBACK answers */
	bool disconnected;
};

enum sync_phase { PHASE_CONNACK, PHASE_SUBACK, PHASE_DISCONNECTED };

static void sync_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	(void)mosq;
	((struct sync_state *)obj)->connack = rc;
}

static void sync_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted)
{
	(void)mosq;
	(void)mid;
	struct sync_state *st = obj;
	int g = count > 0 ? granted[0] : 128;
	for(int k = 1; k < count; k++){
		if(granted[k] != g){
			g = 128;
		}
	}
	st->subcount = count;
	st->subacked = g;
}

static void sync_on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
	(void)mosq;
	(void)rc;
	((struct sync_state *)obj)->disconnected = true;
}

/* Runs the network loop until *flag changes from `unset` or the deadline. */
static int loop_until(struct mosquitto *mosq, const int *flag, int unset, double deadline)
{
	while(*flag == unset){
		if(now_mono() > deadline){
			return MOSQ_ERR_TIMEOUT;
		}
		int rc = mosquitto_loop(mosq, 50, 1);
		if(rc != MOSQ_ERR_SUCCESS){
			return rc;
		}
	}
	return MOSQ_ERR_SUCCESS;
}

static bool phase_done(const struct sync_state *st, enum sync_phase phase)
{
	switch(phase){
		case PHASE_CONNACK: return st->connack != -1;
		case PHASE_SUBACK: return st->subacked != -1;
		default: return st->disconnected;
	}
}

/* Runs the network loops of n clients in one thread (poll on their sockets)
 * until each has reached `phase`, or the deadline. */
static int loop_batch(struct mosquitto **mosqs, struct sync_state *st, int n, enum sync_phase phase,
		double deadline)
{
	struct pollfd fds[SUB_BATCH];
	int which[SUB_BATCH];

	for(;;){
		int waiting = 0;
		for(int i = 0; i < n; i++){
			if(phase_done(&st[i], phase)){
				continue;
			}
			int fd = mosquitto_socket(mosqs[i]);
			if(fd < 0){
				if(phase != PHASE_DISCONNECTED){
					return MOSQ_ERR_NO_CONN;
				}
				st[i].disconnected = true;
				continue;
			}
			fds[waiting].fd = fd;
			fds[waiting].events = (short)(POLLIN | (mosquitto_want_write(mosqs[i]) ? POLLOUT : 0));
			fds[waiting].revents = 0;
			which[waiting++] = i;
		}
		if(waiting == 0){
			return MOSQ_ERR_SUCCESS;
		}
		if(now_mono() > deadline){
			return MOSQ_ERR_TIMEOUT;
		}
		if(poll(fds, (nfds_t)waiting, 50) < 0 && errno != EINTR){
			return MOSQ_ERR_ERRNO;
		}
		for(int k = 0; k < waiting; k++){
			struct mosquitto *mosq = mosqs[which[k]];
			int rc = MOSQ_ERR_SUCCESS;
			if(fds[k].revents & (POLLIN | POLLHUP | POLLERR)){
				rc = mosquitto_loop_read(mosq, 1);
			}
			if(rc == MOSQ_ERR_SUCCESS && (fds[k].revents & POLLOUT)){
				rc = mosquitto_loop_write(mosq, 1);
			}
			if(rc == MOSQ_ERR_SUCCESS){
				rc = mosquitto_loop_misc(mosq);
			}
			if(rc == MOSQ_ERR_NO_CONN && phase == PHASE_DISCONNECTED){
				st[which[k]].disconnected = true;
			}else if(rc != MOSQ_ERR_SUCCESS){
				return rc;
			}
		}
	}
}

/* Sets up sessions first .. first+n-1 (n <= SUB_BATCH) side by side. */
static int subscribe_batch(int first, int n, double deadline)
{
	struct mosquitto *mosqs[SUB_BATCH] = {0};
	struct sync_state st[SUB_BATCH];
	char id[256];
	char topic[TOPIC_MAX + 16];
	char *topics[2] = {topic, (char *)opt.group};
	int ntopics = opt.group ? 2 : 1;
	int rc = MOSQ_ERR_SUCCESS;

	for(int i = 0; i < n; i++){
		st[i] = (struct sync_state){.connack = -1, .subacked = -1};
		snprintf(id, sizeof(id), "%s%d", opt.prefix, first + i);
		mosqs[i] = client_new(id, false, &st[i]);
		if(!mosqs[i]){
			rc = MOSQ_ERR_NOMEM;
			goto out;
		}
		mosquitto_connect_callback_set(mosqs[i], sync_on_connect);
		mosquitto_subscribe_callback_set(mosqs[i], sync_on_subscribe);
		mosquitto_disconnect_callback_set(mosqs[i], sync_on_disconnect);
	}
	for(int i = 0; i < n && rc == MOSQ_ERR_SUCCESS; i++){
		rc = mosquitto_connect(mosqs[i], opt.host, opt.port, 60);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = loop_batch(mosqs, st, n, PHASE_CONNACK, deadline);
	}
	for(int i = 0; i < n && rc == MOSQ_ERR_SUCCESS; i++){
		if(st[i].connack != 0){
			fprintf(stderr, "loadgen: %s%d: CONNACK %d\n", opt.prefix, first + i, st[i].connack);
			rc = MOSQ_ERR_CONN_REFUSED;
		}
	}
	for(int i = 0; i < n && rc == MOSQ_ERR_SUCCESS; i++){
		client_topic(topic, sizeof(topic), first + i);
		rc = mosquitto_subscribe_multiple(mosqs[i], NULL, ntopics, topics, opt.qos, 0, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = loop_batch(mosqs, st, n, PHASE_SUBACK, deadline);
	}
	for(int i = 0; i < n && rc == MOSQ_ERR_SUCCESS; i++){
		if(st[i].subacked != opt.qos || st[i].subcount != ntopics){
			fprintf(stderr, "loadgen: %s%d: granted QoS %d for %d topic(s), wanted %d for %d\n",
				opt.prefix, first + i, st[i].subacked, st[i].subcount, opt.qos, ntopics);
			rc = MOSQ_ERR_PROTOCOL;
		}
	}
	for(int i = 0; i < n && rc == MOSQ_ERR_SUCCESS; i++){
		rc = mosquitto_disconnect(mosqs[i]);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = loop_batch(mosqs, st, n, PHASE_DISCONNECTED, deadline);
	}
out:
	for(int i = 0; i < n; i++){
		if(mosqs[i]){
			mosquitto_destroy(mosqs[i]);
		}
	}
	return rc;
}

static int cmd_subscribe_offline(void)
{
	double deadline = now_mono() + opt.timeout;
	double t0 = now_mono();

	for(int first = 0; first < opt.clients; first += SUB_BATCH){
		int n = opt.clients - first < SUB_BATCH ? opt.clients - first : SUB_BATCH;
		int rc = subscribe_batch(first, n, deadline);
		if(rc != MOSQ_ERR_SUCCESS){
			fail("subscribe-offline", rc);
			return 1;
		}
	}
	printf("subscribe-offline clients=%d topic=%s%s%s%s qos=%d secs=%.3f\n",
		opt.clients, opt.topic, opt.each ? "/I" : "", opt.group ? " group=" : "", opt.group ? opt.group : "",
		opt.qos, now_mono() - t0);
	return 0;
}

static int cmd_wait_connect(void)
{
	double t_start = now_real();
	double since = opt.since > 0 ? opt.since : t_start;
	double deadline = now_mono() + opt.timeout;
	long attempts = 0;

	for(;;){
		struct sync_state st = {.connack = -1, .subacked = -1};
		struct mosquitto *mosq = client_new(NULL, true, &st);
		if(!mosq){
			return 1;
		}
		mosquitto_connect_callback_set(mosq, sync_on_connect);
		attempts++;
		int rc = mosquitto_connect(mosq, opt.host, opt.port, 60);
		if(rc == MOSQ_ERR_SUCCESS){
			rc = loop_until(mosq, &st.connack, -1, deadline);
		}
		if(rc == MOSQ_ERR_SUCCESS && st.connack == 0){
			double secs = now_real() - since;
			if(mosquitto_disconnect(mosq) == MOSQ_ERR_SUCCESS){
				(void)mosquitto_loop(mosq, 50, 1);
			}
			mosquitto_destroy(mosq);
			printf("wait-connect secs=%.3f attempts=%ld\n", secs, attempts);
			return 0;
		}
		mosquitto_destroy(mosq);
		if(rc == MOSQ_ERR_TIMEOUT || now_mono() > deadline){
			fprintf(stderr, "loadgen: wait-connect: no CONNACK within %.0f s\n", opt.timeout);
			return 1;
		}
		struct timespec pause = {.tv_sec = opt.poll_ms / 1000, .tv_nsec = (opt.poll_ms % 1000) * 1000000L};
		nanosleep(&pause, NULL);
	}
}

/* ---- publish ---- */

struct pub_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int connack;
	bool lost;
	long acked;
};

/* One publisher: its connection, and the thread that publishes on it. */
struct publisher {
	struct pub_state st;
	struct mosquitto *mosq;
	pthread_t thread;
	unsigned char *payload;
	int index;
	bool threaded;    /* a loop thread runs the network loop (window > 1) */
	bool running;     /* the publishing thread was started */
	bool ok;
	long sent;
	double t0;
	struct timespec deadline;
	double mono_deadline;
};

static void pub_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	(void)mosq;
	struct pub_state *st = obj;
	pthread_mutex_lock(&st->lock);
	st->connack = rc;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void pub_on_publish(struct mosquitto *mosq, void *obj, int mid)
{
	(void)mosq;
	(void)mid;
	struct pub_state *st = obj;
	pthread_mutex_lock(&st->lock);
	st->acked++;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void pub_on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
	(void)mosq;
	struct pub_state *st = obj;
	pthread_mutex_lock(&st->lock);
	if(rc != 0){
		st->lost = true;
	}
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static bool pub_wait(struct pub_state *st, int what, long value, const struct timespec *deadline)
{
	bool ok = true;
	pthread_mutex_lock(&st->lock);
	for(;;){
		bool done = what == 0 ? st->connack != -1 : st->acked >= value;
		if(done){
			break;
		}
		if(st->lost){
			ok = false;
			break;
		}
		if(pthread_cond_timedwait(&st->cond, &st->lock, deadline) == ETIMEDOUT){
			done = what == 0 ? st->connack != -1 : st->acked >= value;
			ok = done;
			break;
		}
	}
	pthread_mutex_unlock(&st->lock);
	return ok;
}

/* A window of 1 without a loop thread: the message is written by
 * mosquitto_publish() itself and its acknowledgement read here, with no
 * hand-over to a loop thread and back (two thread wake-ups per round trip,
 * which a synchronous publisher would see as broker latency). */
static bool pub_loop_until(struct mosquitto *mosq, struct pub_state *st, int what, long value,
		double deadline)
{
	for(;;){
		pthread_mutex_lock(&st->lock);
		bool done = what == 0 ? st->connack != -1 : st->acked >= value;
		bool lost = st->lost;
		pthread_mutex_unlock(&st->lock);
		if(done){
			return true;
		}
		if(lost || now_mono() > deadline){
			return false;
		}
		int rc = mosquitto_loop(mosq, 100, 1);
		if(rc != MOSQ_ERR_SUCCESS){
			fail("loop", rc);
			return false;
		}
	}
}

static bool pub_await(struct publisher *p, int what, long value)
{
	return p->threaded ? pub_wait(&p->st, what, value, &p->deadline)
		: pub_loop_until(p->mosq, &p->st, what, value, p->mono_deadline);
}

/* Connects publisher p and waits for its CONNACK. */
static bool pub_connect(struct publisher *p)
{
	p->mosq = client_new(NULL, true, &p->st);
	if(!p->mosq){
		return false;
	}
	mosquitto_connect_callback_set(p->mosq, pub_on_connect);
	mosquitto_publish_callback_set(p->mosq, pub_on_publish);
	mosquitto_disconnect_callback_set(p->mosq, pub_on_disconnect);

	int rc = mosquitto_connect(p->mosq, opt.host, opt.port, 60);
	if(rc != MOSQ_ERR_SUCCESS){
		fail("connect", rc);
		return false;
	}
	if(p->threaded){
		rc = mosquitto_loop_start(p->mosq);
		if(rc != MOSQ_ERR_SUCCESS){
			fail("loop_start", rc);
			p->threaded = false;
			return false;
		}
	}
	if(!pub_await(p, 0, 0) || p->st.connack != 0){
		fprintf(stderr, "loadgen: publish: no CONNACK (rc %d)\n", p->st.connack);
		return false;
	}
	return true;
}

/* Sleeps until the monotonic time `when` (an open-loop publisher's schedule). */
static void pace(double when)
{
	double wait = when - now_mono();
	if(wait > 0){
		double whole = (double)(long)wait;
		struct timespec ts = {.tv_sec = (time_t)whole, .tv_nsec = (long)((wait - whole) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

static void *pub_send(void *arg)
{
	struct publisher *p = arg;
	long count = pub_count(p->index);
	char topic[TOPIC_MAX + 16];

	client_topic(topic, sizeof(topic), 0);
	put_le(p->payload + 16, (uint64_t)p->index, 4);
	/* Its share of N, then (-G) its M group messages, numbered on. */
	for(long i = 0; i < count + opt.group_msgs; i++){
		if(opt.duration > 0 && now_mono() - p->t0 >= opt.duration){
			break;
		}
		if(opt.rate > 0){
			pace(p->t0 + (double)i * opt.publishers / opt.rate);
		}
		if(i >= opt.window && !pub_await(p, 1, i - opt.window + 1)){
			fprintf(stderr, "loadgen: publish %d: stalled with %ld sent\n", p->index, i);
			return NULL;
		}
		if(i >= count){
			snprintf(topic, sizeof(topic), "%s", opt.group);
		}else if(opt.each){
			client_topic(topic, sizeof(topic), i % opt.clients);
		}
		put_le(p->payload, (uint64_t)i, 8);
		put_le(p->payload + 8, now_real_ns(), 8);
		int rc = mosquitto_publish(p->mosq, NULL, topic, opt.size, p->payload, opt.qos, false);
		if(rc != MOSQ_ERR_SUCCESS){
			fail("publish", rc);
			return NULL;
		}
		p->sent++;
	}
	if(!pub_await(p, 1, p->sent)){
		fprintf(stderr, "loadgen: publish %d: not all of %ld acked\n", p->index, p->sent);
		return NULL;
	}
	p->ok = true;
	return NULL;
}

/* Disconnects and frees publisher p; false if the disconnection failed. */
static bool pub_close(struct publisher *p, bool ok)
{
	if(p->mosq){
		int rc = mosquitto_disconnect(p->mosq);
		if(rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN){
			fail("disconnect", rc);
			ok = false;
		}
		/* After mosquitto_disconnect() the loop thread may end by itself
		 * before mosquitto_loop_stop() runs; loop_stop then answers
		 * MOSQ_ERR_INVAL, which is harmless (here and in drain). */
		if(p->threaded){
			int src = mosquitto_loop_stop(p->mosq, !ok);
			if(src != MOSQ_ERR_SUCCESS && src != MOSQ_ERR_INVAL){
				fail("loop_stop", src);
				ok = false;
			}
		}else if(rc == MOSQ_ERR_SUCCESS){
			(void)mosquitto_loop(p->mosq, 50, 1);
		}
		mosquitto_destroy(p->mosq);
	}
	pthread_cond_destroy(&p->st.cond);
	pthread_mutex_destroy(&p->st.lock);
	free(p->payload);
	return ok;
}

static int cmd_publish(void)
{
	struct publisher *pubs = calloc((size_t)opt.publishers, sizeof(*pubs));
	int made = 0;
	bool ok = true;

	if(!pubs){
		perror("loadgen: calloc");
		return 1;
	}
	/* Every connection is up before the clock starts. */
	for(; made < opt.publishers && ok; made++){
		struct publisher *p = &pubs[made];
		p->index = made;
		p->threaded = opt.window > 1;
		p->st.connack = -1;
		p->deadline = deadline_after(opt.timeout);
		p->mono_deadline = now_mono() + opt.timeout;
		pthread_mutex_init(&p->st.lock, NULL);
		pthread_cond_init(&p->st.cond, NULL);
		p->payload = malloc((size_t)opt.size);
		if(!p->payload){
			perror("loadgen: malloc");
			ok = false;
			continue;
		}
		memset(p->payload, 'x', (size_t)opt.size);
		ok = pub_connect(p);
	}

	double t0 = now_mono();
	for(int j = 0; j < made && ok; j++){
		pubs[j].t0 = t0;
		int err = pthread_create(&pubs[j].thread, NULL, pub_send, &pubs[j]);
		if(err){
			fprintf(stderr, "loadgen: pthread_create: %s\n", strerror(err));
			ok = false;
			break;
		}
		pubs[j].running = true;
	}
	long sent = 0;
	for(int j = 0; j < made; j++){
		if(pubs[j].running){
			pthread_join(pubs[j].thread, NULL);
			ok = ok && pubs[j].ok;
			sent += pubs[j].sent;
		}
	}
	double secs = now_mono() - t0;
	if(ok){
		printf("publish msgs=%ld publishers=%d size=%d qos=%d window=%ld secs=%.3f rate=%.0f",
			sent, opt.publishers, opt.size, opt.qos, opt.window, secs,
			secs > 0 ? (double)sent / secs : 0.0);
		if(opt.group_msgs > 0){
			printf(" group=%ld", opt.group_msgs);
		}
		printf("\n");
	}
	for(int j = 0; j < made; j++){
		ok = pub_close(&pubs[j], ok) && ok;
	}
	free(pubs);
	return ok ? 0 : 1;
}

/* ---- drain, subscribe-online ---- */

struct drain_shared {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool online;      /* subscribe on CONNACK (subscribe-online) */
	int complete;     /* clients that have all N */
	int connected;
	int subscribed;
	int sessions;     /* CONNACKs with session present */
	bool failed;
	atomic_bool stop; /* drain: the worker threads stop */
	long reconnects;  /* drain: connections made again after failing before their CONNACK */
	double t_first;   /* first message received (monotonic), 0 before */
	long base[];      /* publisher j's messages: bits base[j] .. base[j+1]-1 */
};

struct sub_state {
	struct drain_shared *shared;
	unsigned char *seen;  /* bitmap of what it expects, by publisher */
	long *last;           /* per publisher: the last new sequence number */
	long *off;            /* drain -e: publisher j's messages are bits off[j] .. off[j+1]-1 */
	uint64_t *lat_ns;     /* latency of each new message */
	long expect;          /* messages it waits for: N, or (-e) off[P] */
	int index;            /* its session number, 0 .. K-1 */
	bool linked;          /* drain: a worker connected it (mosquitto_connect_async) */
	bool connacked;       /* its connection has had its CONNACK */
	long unique;
	long dups;
	long out_of_order;
	long bogus;
	bool done;
};

static void drain_on_connect(struct mosquitto *mosq, void *obj, int rc, int flags)
{
	struct sub_state *s = obj;
	int src = MOSQ_ERR_SUCCESS;
	if(rc == 0 && s->shared->online){
		src = mosquitto_subscribe(mosq, NULL, opt.topic, opt.qos);
		if(src != MOSQ_ERR_SUCCESS){
			fail("subscribe", src);
		}
	}
	pthread_mutex_lock(&s->shared->lock);
	if(rc != 0){
		fprintf(stderr, "loadgen: drain: CONNACK %d\n", rc);
		s->shared->failed = true;
	}else{
		s->connacked = true;
		s->shared->connected++;
		if(flags & 1){
			s->shared->sessions++;
		}
	}
	if(src != MOSQ_ERR_SUCCESS){
		s->shared->failed = true;
	}
	pthread_cond_broadcast(&s->shared->cond);
	pthread_mutex_unlock(&s->shared->lock);
}

static void drain_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted)
{
	(void)mosq;
	(void)mid;
	struct sub_state *s = obj;
	pthread_mutex_lock(&s->shared->lock);
	if(count < 1 || granted[0] != opt.qos){
		fprintf(stderr, "loadgen: subscribe-online: granted QoS %d, wanted %d\n",
			count > 0 ? granted[0] : -1, opt.qos);
		s->shared->failed = true;
	}else{
		s->shared->subscribed++;
	}
	pthread_cond_broadcast(&s->shared->cond);
	pthread_mutex_unlock(&s->shared->lock);
}

/* Session s's bit for message seq of publisher pub, or -1 if s should not
 * get it. Without -e: bits base[pub] + seq, for the publisher's share of N.
 * With -e: of the publisher's share (count), seq mod K == s->index only, in
 * order (seq / K), then its M group messages (count .. count+M-1). */
static long msg_bit(const struct sub_state *s, uint64_t pub, uint64_t seq)
{
	const struct drain_shared *sh = s->shared;
	if(pub >= (uint64_t)opt.publishers){
		return -1;
	}
	if(!s->off){
		return seq < (uint64_t)(sh->base[pub + 1] - sh->base[pub]) ? sh->base[pub] + (long)seq : -1;
	}
	uint64_t count = (uint64_t)pub_count((int)pub);
	if(seq < count){
		return seq % (uint64_t)opt.clients == (uint64_t)s->index
			? s->off[pub] + (long)(seq / (uint64_t)opt.clients) : -1;
	}
	if(seq - count < (uint64_t)opt.group_msgs){
		return s->off[pub + 1] - opt.group_msgs + (long)(seq - count);
	}
	return -1;
}

static void drain_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
	(void)mosq;
	uint64_t t_recv = now_real_ns();
	struct sub_state *s = obj;
	struct drain_shared *sh = s->shared;
	pthread_mutex_lock(&sh->lock);
	if(sh->t_first == 0){
		sh->t_first = now_mono();
	}
	uint64_t seq = m->payloadlen >= HEADER_BYTES ? get_le(m->payload, 8) : 0;
	uint64_t pub = m->payloadlen >= HEADER_BYTES ? get_le((const unsigned char *)m->payload + 16, 4) : 0;
	long at = m->payloadlen >= HEADER_BYTES ? msg_bit(s, pub, seq) : -1;
	if(at < 0){
		s->bogus++;
	}else{
		uint64_t bit = (uint64_t)at;
		if(s->seen[bit / 8] & (1u << (bit % 8))){
			s->dups++;
		}else{
			uint64_t sent = get_le((const unsigned char *)m->payload + 8, 8);
			s->seen[bit / 8] |= (unsigned char)(1u << (bit % 8));
			s->lat_ns[s->unique++] = t_recv > sent ? t_recv - sent : 0;
			if((long)seq < s->last[pub]){
				s->out_of_order++;
			}
			s->last[pub] = (long)seq;
		}
	}
	if(!s->done && s->unique == s->expect){
		s->done = true;
		sh->complete++;
		pthread_cond_broadcast(&sh->cond);
	}
	pthread_mutex_unlock(&sh->lock);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Latency percentiles and log2 histogram (µs) of the n latencies in lat. */
static void print_latency(uint64_t *lat, long n)
{
	long hist[HIST_BUCKETS] = {0};
	if(n == 0){
		printf(" lat_p50_us=0 lat_p99_us=0 lat_max_us=0 hist_us=");
		return;
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
	for(long i = 0; i < n; i++){
		uint64_t us = lat[i] / 1000;
		int b = 0;
		while(b < HIST_BUCKETS - 1 && us >> b){
			b++;
		}
		hist[b]++;
	}
	printf(" lat_p50_us=%.1f lat_p99_us=%.1f lat_max_us=%.1f hist_us=",
		(double)lat[(n - 1) / 2] / 1e3, (double)lat[(n - 1) * 99 / 100] / 1e3, (double)lat[n - 1] / 1e3);
	const char *sep = "";
	for(int b = 0; b < HIST_BUCKETS; b++){
		if(hist[b]){
			printf("%s%" PRIu64 ":%ld", sep, (uint64_t)1 << b, hist[b]);
			sep = ",";
		}
	}
}

/* drain: one thread runs the network loops of sessions from .. to-1 with
 * poll() (libmosquitto's own loop thread uses select() and refuses sockets
 * numbered FD_SETSIZE or more: a few hundred sessions in one process). */
struct drain_worker {
	struct drain_shared *sh;
	struct sub_state *subs;
	struct mosquitto **mosqs;
	int from;
	int to;
	pthread_t thread;
	bool running;
};

static void drain_fail(struct drain_shared *sh, const char *what, int i, int rc)
{
	fprintf(stderr, "loadgen: drain: %s%d: %s: %s\n", opt.prefix, i, what, mosquitto_strerror(rc));
	pthread_mutex_lock(&sh->lock);
	sh->failed = true;
	pthread_cond_broadcast(&sh->cond);
	pthread_mutex_unlock(&sh->lock);
}

/* Session i's connection failed with rc: before its CONNACK it connects
 * again (true); after it, the drain fails (false). */
static bool drain_retry(struct drain_worker *w, int i, int rc)
{
	if(w->subs[i].connacked){
		drain_fail(w->sh, "connection", i, rc);
		return false;
	}
	int rrc = mosquitto_reconnect_async(w->mosqs[i]);
	if(rrc != MOSQ_ERR_SUCCESS){
		drain_fail(w->sh, "reconnect", i, rrc);
		return false;
	}
	pthread_mutex_lock(&w->sh->lock);
	w->sh->reconnects++;
	pthread_mutex_unlock(&w->sh->lock);
	return true;
}

static void *drain_work(void *arg)
{
	struct drain_worker *w = arg;
	int n = w->to - w->from;
	int linked = 0;
	struct pollfd *fds = calloc((size_t)n, sizeof(*fds));
	double misc_at = now_mono() + 1.0;

	if(!fds){
		drain_fail(w->sh, "calloc", w->from, MOSQ_ERR_NOMEM);
		return NULL;
	}
	while(!atomic_load(&w->sh->stop)){
		/* Non-blocking connects (a connection the broker's full listen queue
		 * drops must not hold up the others), in small batches, the sockets
		 * already connected served in between. */
		for(int c = 0; c < CONNECT_BATCH && linked < n; c++, linked++){
			int i = w->from + linked;
			int rc = mosquitto_connect_async(w->mosqs[i], opt.host, opt.port, 60);
			if(rc != MOSQ_ERR_SUCCESS){
				drain_fail(w->sh, "connect", i, rc);
				goto out;
			}
			w->subs[i].linked = true;
		}
		for(int k = 0; k < linked; k++){
			struct mosquitto *mosq = w->mosqs[w->from + k];
			fds[k].fd = mosquitto_socket(mosq);
			if(fds[k].fd < 0 && drain_retry(w, w->from + k, MOSQ_ERR_NO_CONN)){
				fds[k].fd = mosquitto_socket(mosq);
			}
			if(fds[k].fd < 0){
				goto out;
			}
			fds[k].events = (short)(POLLIN | (mosquitto_want_write(mosq) ? POLLOUT : 0));
			fds[k].revents = 0;
		}
		if(poll(fds, (nfds_t)linked, linked < n ? 0 : 100) < 0 && errno != EINTR){
			drain_fail(w->sh, "poll", w->from, MOSQ_ERR_ERRNO);
			goto out;
		}
		for(int k = 0; k < linked; k++){
			struct mosquitto *mosq = w->mosqs[w->from + k];
			int rc = MOSQ_ERR_SUCCESS;
			if(fds[k].revents & (POLLIN | POLLHUP | POLLERR)){
				rc = mosquitto_loop_read(mosq, 1);
			}
			/* PUBACKs left queued by the read (or not yet written) go now. */
			if(rc == MOSQ_ERR_SUCCESS
					&& ((fds[k].revents & POLLOUT) || (fds[k].revents && mosquitto_want_write(mosq)))){
				rc = mosquitto_loop_write(mosq, 1);
			}
			if(rc != MOSQ_ERR_SUCCESS && !drain_retry(w, w->from + k, rc)){
				goto out;
			}
		}
		if(now_mono() >= misc_at){
			/* Keepalive (PINGREQ) once a second. */
			misc_at = now_mono() + 1.0;
			for(int k = 0; k < linked; k++){
				int rc = mosquitto_loop_misc(w->mosqs[w->from + k]);
				if(rc != MOSQ_ERR_SUCCESS && !drain_retry(w, w->from + k, rc)){
					goto out;
				}
			}
		}
	}
out:
	free(fds);
	return NULL;
}

static int receive(bool online)
{
	const char *name = online ? "subscribe-online" : "drain";
	struct drain_shared *sh = calloc(1, sizeof(*sh) + sizeof(long) * (size_t)(opt.publishers + 1));
	struct sub_state *subs = calloc((size_t)opt.clients, sizeof(*subs));
	struct mosquitto **mosqs = calloc((size_t)opt.clients, sizeof(*mosqs));
	uint64_t *all_lat = NULL;
	struct drain_worker *workers = NULL;
	int nworkers = 0;
	struct timespec deadline = deadline_after(opt.timeout);
	bool each = opt.each && !online;  /* drain -e */
	long expected = 0;
	int started = 0;
	int ret = 1;
	char id[256];

	if(!sh || !subs || !mosqs){
		perror("loadgen: calloc");
		free(sh);
		free(subs);
		free(mosqs);
		return 1;
	}
	pthread_mutex_init(&sh->lock, NULL);
	pthread_cond_init(&sh->cond, NULL);
	atomic_init(&sh->stop, false);
	sh->online = online;
	for(int j = 0; j < opt.publishers; j++){
		sh->base[j + 1] = sh->base[j] + pub_count(j);
	}

	double t0 = now_mono();
	for(int i = 0; i < opt.clients; i++){
		subs[i].shared = sh;
		subs[i].index = i;
		subs[i].expect = opt.messages;
		if(each){
			subs[i].off = malloc(sizeof(long) * (size_t)(opt.publishers + 1));
			if(!subs[i].off){
				perror("loadgen: malloc");
				goto out;
			}
			subs[i].off[0] = 0;
			for(int j = 0; j < opt.publishers; j++){
				long c = pub_count(j);
				subs[i].off[j + 1] = subs[i].off[j] + c / opt.clients + (i < c % opt.clients ? 1 : 0)
					+ opt.group_msgs;
			}
			subs[i].expect = subs[i].off[opt.publishers];
		}
		subs[i].seen = calloc((size_t)subs[i].expect / 8 + 1, 1);
		subs[i].last = malloc(sizeof(long) * (size_t)opt.publishers);
		subs[i].lat_ns = malloc(sizeof(uint64_t) * (size_t)(subs[i].expect > 0 ? subs[i].expect : 1));
		if(!subs[i].seen || !subs[i].last || !subs[i].lat_ns){
			perror("loadgen: malloc");
			goto out;
		}
		for(int j = 0; j < opt.publishers; j++){
			subs[i].last[j] = -1;
		}
		expected += subs[i].expect;
		if(subs[i].expect == 0){
			/* Nothing for it (-e with K > N and no group messages). */
			pthread_mutex_lock(&sh->lock);
			subs[i].done = true;
			sh->complete++;
			pthread_mutex_unlock(&sh->lock);
		}
		snprintf(id, sizeof(id), "%s%d", opt.prefix, i);
		mosqs[i] = client_new(id, false, &subs[i]);
		if(!mosqs[i]){
			goto out;
		}
		mosquitto_connect_with_flags_callback_set(mosqs[i], drain_on_connect);
		mosquitto_subscribe_callback_set(mosqs[i], drain_on_subscribe);
		mosquitto_message_callback_set(mosqs[i], drain_on_message);
		if(!online){
			continue;  /* drain: its worker thread connects it */
		}
		int rc = mosquitto_connect(mosqs[i], opt.host, opt.port, 60);
		if(rc != MOSQ_ERR_SUCCESS){
			fail("connect", rc);
			goto out;
		}
		rc = mosquitto_loop_start(mosqs[i]);
		if(rc != MOSQ_ERR_SUCCESS){
			fail("loop_start", rc);
			goto out;
		}
		started++;
	}
	if(!online){
		/* drain: up to DRAIN_THREADS threads, each with a contiguous share of
		 * the sessions, connect them all at once and run their loops. */
		nworkers = opt.clients < DRAIN_THREADS ? opt.clients : DRAIN_THREADS;
		workers = calloc((size_t)nworkers, sizeof(*workers));
		if(!workers){
			perror("loadgen: calloc");
			goto out;
		}
		t0 = now_mono();
		for(int k = 0; k < nworkers; k++){
			workers[k] = (struct drain_worker){.sh = sh, .subs = subs, .mosqs = mosqs,
				.from = (int)((long)opt.clients * k / nworkers),
				.to = (int)((long)opt.clients * (k + 1) / nworkers)};
			int err = pthread_create(&workers[k].thread, NULL, drain_work, &workers[k]);
			if(err){
				fprintf(stderr, "loadgen: pthread_create: %s\n", strerror(err));
				goto out;
			}
			workers[k].running = true;
		}
	}

	bool timed_out = false;
	pthread_mutex_lock(&sh->lock);
	if(online){
		while(sh->subscribed < opt.clients && !sh->failed && !timed_out){
			timed_out = pthread_cond_timedwait(&sh->cond, &sh->lock, &deadline) == ETIMEDOUT
				&& sh->subscribed < opt.clients;
		}
		if(!sh->failed && !timed_out){
			/* The runner starts the publishers on this line. */
			printf("subscribe-online ready=1 clients=%d\n", opt.clients);
			fflush(stdout);
		}
	}
	while(sh->complete < opt.clients && !sh->failed && !timed_out){
		timed_out = pthread_cond_timedwait(&sh->cond, &sh->lock, &deadline) == ETIMEDOUT
			&& sh->complete < opt.clients;
	}
	/* drain: from the first CONNECT; subscribe-online: from the first message. */
	double secs = now_mono() - (online ? (sh->t_first > 0 ? sh->t_first : now_mono()) : t0);
	long total = 0, dups = 0, ooo = 0, bogus = 0;
	for(int i = 0; i < opt.clients; i++){
		total += subs[i].unique;
		dups += subs[i].dups;
		ooo += subs[i].out_of_order;
		bogus += subs[i].bogus;
	}
	all_lat = malloc(sizeof(uint64_t) * (size_t)(total > 0 ? total : 1));
	if(!all_lat){
		perror("loadgen: malloc");
		pthread_mutex_unlock(&sh->lock);
		goto out;
	}
	long n = 0;
	for(int i = 0; i < opt.clients; i++){
		memcpy(all_lat + n, subs[i].lat_ns, sizeof(uint64_t) * (size_t)subs[i].unique);
		n += subs[i].unique;
	}
	long missing = expected - total;
	printf("%s clients=%d msgs=%ld publishers=%d", name, opt.clients, opt.messages, opt.publishers);
	if(each){
		printf(" group=%ld expected=%ld", opt.group_msgs, expected);
	}
	printf(" received=%ld missing=%ld dups=%ld out_of_order=%ld bogus=%ld sessions=%d secs=%.3f rate=%.0f "
		"first_ms=%.1f", total, missing, dups, ooo, bogus, sh->sessions,
		secs, secs > 0 ? (double)total / secs : 0.0, sh->t_first > 0 ? (sh->t_first - t0) * 1e3 : 0.0);
	if(!online){
		printf(" reconnects=%ld", sh->reconnects);
	}
	print_latency(all_lat, n);
	printf("%s\n", timed_out ? " timeout=1" : "");
	ret = (timed_out || sh->failed || missing != 0) ? 1 : 0;
	pthread_mutex_unlock(&sh->lock);

out:
	atomic_store(&sh->stop, true);
	for(int k = 0; k < nworkers; k++){
		if(workers[k].running){
			pthread_join(workers[k].thread, NULL);
		}
	}
	free(workers);
	for(int i = 0; i < opt.clients; i++){
		if(!mosqs[i]){
			continue;
		}
		if(subs[i].linked){
			/* drain: no loop thread; the DISCONNECT is written at once (a
			 * connection that failed, after a failed drain, is left alone). */
			int rc = mosquitto_disconnect(mosqs[i]);
			if(rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN && rc != MOSQ_ERR_CONN_LOST){
				fail("disconnect", rc);
			}
		}else if(i < started){
			int rc = mosquitto_disconnect(mosqs[i]);
			if(rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN){
				fail("disconnect", rc);
			}
			rc = mosquitto_loop_stop(mosqs[i], false);
			if(rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_INVAL){
				fail("loop_stop", rc);
			}
		}
		mosquitto_destroy(mosqs[i]);
	}
	for(int i = 0; i < opt.clients; i++){
		free(subs[i].seen);
		free(subs[i].last);
		free(subs[i].off);
		free(subs[i].lat_ns);
	}
	pthread_cond_destroy(&sh->cond);
	pthread_mutex_destroy(&sh->lock);
	free(all_lat);
	free(sh);
	free(subs);
	free(mosqs);
	return ret;
}

static int cmd_drain(void)
{
	return receive(false);
}

static int cmd_subscribe_online(void)
{
	return receive(true);
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen subscribe-offline|publish|drain|subscribe-online|wait-connect [options]\n"
		"  -H HOST     broker host (127.0.0.1)\n"
		"  -p PORT     broker port (1883)\n"
		"  -t TOPIC    topic (bench/t)\n"
		"  -e          subscribe-offline: session i subscribes to TOPIC/i;\n"
		"              publish: message i of a publisher goes to TOPIC/(i mod K);\n"
		"              drain: session i expects only those (and the -G messages)\n"
		"  -g GROUP    subscribe-offline: every session also subscribes to GROUP;\n"
		"              publish: the topic of the -G messages\n"
		"  -G M        publish: then M messages per publisher to GROUP, numbered on;\n"
		"              drain -e: every session expects them too (0)\n"
		"  -i PREFIX   subscriber client id prefix (bench-sub-)\n"
		"  -k K        subscribers (5)\n"
		"  -n N        messages, of all publishers together (1000)\n"
		"  -P P        publishers (1)\n"
		"  -s SIZE     payload bytes, >= %d (100)\n"
		"  -q QOS      QoS (1)\n"
		"  -w WINDOW   max unacknowledged publishes per publisher (100)\n"
		"  -T SECS     timeout (600)\n"
		"  -D SECS     publish: stop sending after SECS seconds (no limit)\n"
		"  -R RATE     publish: send at most RATE messages/s, all publishers together,\n"
		"              on a fixed schedule (no limit)\n"
		"  -S EPOCH    wait-connect: measure from this CLOCK_REALTIME time\n"
		"  -I MS       wait-connect: poll interval (5)\n", HEADER_BYTES);
}

static bool parse_long(const char *s, long min, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if(errno || *end || end == s || v < min){
		fprintf(stderr, "loadgen: bad number '%s'\n", s);
		return false;
	}
	*out = v;
	return true;
}

static bool parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if(errno || *end || end == s || v < 0){
		fprintf(stderr, "loadgen: bad number '%s'\n", s);
		return false;
	}
	*out = v;
	return true;
}

int main(int argc, char **argv)
{
	if(argc < 2){
		usage();
		return 2;
	}
	const char *cmd = argv[1];
	int c;
	long v;
	optind = 2;
	while((c = getopt(argc, argv, "H:p:t:eg:G:i:k:n:P:s:q:w:T:D:R:S:I:")) != -1){
		bool ok = true;
		switch(c){
			case 'H': opt.host = optarg; break;
			case 'p': ok = parse_long(optarg, 1, &v) && v <= 65535; opt.port = (int)v; break;
			case 't': opt.topic = optarg; ok = strlen(optarg) <= TOPIC_MAX; break;
			case 'e': opt.each = true; break;
			case 'g': opt.group = optarg; ok = strlen(optarg) <= TOPIC_MAX; break;
			case 'G': ok = parse_long(optarg, 0, &opt.group_msgs); break;
			case 'i': opt.prefix = optarg; break;
			case 'k': ok = parse_long(optarg, 1, &v) && v <= 100000; opt.clients = (int)v; break;
			case 'n': ok = parse_long(optarg, 1, &opt.messages); break;
			case 'P': ok = parse_long(optarg, 1, &v) && v <= 1000; opt.publishers = (int)v; break;
			case 's': ok = parse_long(optarg, HEADER_BYTES, &v) && v <= 256 * 1024 * 1024; opt.size = (int)v; break;
			case 'q': ok = parse_long(optarg, 0, &v) && v <= 2; opt.qos = (int)v; break;
			case 'w': ok = parse_long(optarg, 1, &opt.window); break;
			case 'T': ok = parse_double(optarg, &opt.timeout); break;
			case 'D': ok = parse_double(optarg, &opt.duration); break;
			case 'R': ok = parse_double(optarg, &opt.rate); break;
			case 'S': ok = parse_double(optarg, &opt.since); break;
			case 'I': ok = parse_long(optarg, 1, &v) && v <= 10000; opt.poll_ms = (int)v; break;
			default: ok = false; break;
		}
		if(!ok){
			usage();
			return 2;
		}
	}
	if(optind != argc || opt.publishers > opt.messages){
		usage();
		return 2;
	}
	/* -G: publish needs GROUP to send to; drain counts the messages with -e only. */
	if(opt.group_msgs > 0 && ((!strcmp(cmd, "publish") && !opt.group)
			|| (!strcmp(cmd, "drain") && !opt.each))){
		fprintf(stderr, "loadgen: -G needs -g GROUP (publish) or -e (drain)\n");
		usage();
		return 2;
	}

	int (*fn)(void);
	if(!strcmp(cmd, "subscribe-offline")){
		fn = cmd_subscribe_offline;
	}else if(!strcmp(cmd, "publish")){
		fn = cmd_publish;
	}else if(!strcmp(cmd, "drain")){
		fn = cmd_drain;
	}else if(!strcmp(cmd, "subscribe-online")){
		fn = cmd_subscribe_online;
	}else if(!strcmp(cmd, "wait-connect")){
		fn = cmd_wait_connect;
	}else{
		usage();
		return 2;
	}

	int rc = mosquitto_lib_init();
	if(rc != MOSQ_ERR_SUCCESS){
		fail("lib_init", rc);
		return 1;
	}
	int ret = fn();
	fflush(stdout);
	mosquitto_lib_cleanup();
	return ret;
}
