/*
 * loadgen: a small MQTT load tool on libmosquitto for the persist-lmdb
 * benchmarks (bench/run.sh). Not a test: it measures, it does not judge.
 *
 *   loadgen subscribe-offline -p PORT -k K [-i PREFIX] [-t TOPIC] [-q QOS]
 *       K persistent sessions (MQTT 3.1.1, clean session off) subscribe to
 *       TOPIC and disconnect cleanly: they become offline sessions.
 *   loadgen publish -p PORT -n N [-s SIZE] [-q QOS] [-w WINDOW] [-t TOPIC] [-D SECS]
 *       One publisher, N messages of SIZE bytes, at most WINDOW unacknowledged.
 *       With -w 1 (each message waits for its PUBACK/PUBCOMP: a synchronous
 *       publisher) the publishing thread runs the network loop itself. With
 *       -D, sending stops after SECS seconds (or N messages, whichever comes
 *       first) and the rate counts the messages sent, all acknowledged.
 *   loadgen drain -p PORT -k K -n N [-i PREFIX]
 *       Reconnects the K sessions and waits until each has received all N
 *       messages; checks gaps, duplicates and order.
 *   loadgen wait-connect -p PORT [-S EPOCH_SECS] [-P POLL_MS]
 *       Polls CONNECT until a CONNACK arrives; reports the time since EPOCH_SECS
 *       (CLOCK_REALTIME, e.g. `date +%s.%N` taken when the broker was started),
 *       or since the command started.
 *
 * Each command prints one machine-readable line "CMD key=value ..." on stdout
 * and exits 0 on success, 1 on failure or timeout (-T SECS, default 600).
 *
 * Payload: bytes 0..7 the sequence number (0..N-1), bytes 8..15 the publish
 * time in ns (CLOCK_REALTIME), both little endian; the rest is padding.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#define HEADER_BYTES 16

struct options {
	const char *host;
	int port;
	const char *topic;
	const char *prefix;
	int clients;
	long messages;
	int size;
	int qos;
	long window;
	double timeout;
	double duration;
	double since;
	int poll_ms;
};

static struct options opt = {
	.host = "127.0.0.1",
	.port = 1883,
	.topic = "bench/t",
	.prefix = "bench-sub-",
	.clients = 5,
	.messages = 1000,
	.size = 100,
	.qos = 1,
	.window = 100,
	.timeout = 600.0,
	.duration = 0.0,
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

static void put_u64(unsigned char *p, uint64_t v)
{
	for(int i = 0; i < 8; i++){
		p[i] = (unsigned char)(v >> (8 * i));
	}
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for(int i = 0; i < 8; i++){
		v |= (uint64_t)p[i] << (8 * i);
	}
	return v;
}

static void fail(const char *what, int rc)
{
	fprintf(stderr, "loadgen: %s: %s\n", what, mosquitto_strerror(rc));
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
	int subacked;     /* granted QoS, -1 until SUBACK */
	bool disconnected;
};

static void sync_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	(void)mosq;
	((struct sync_state *)obj)->connack = rc;
}

static void sync_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted)
{
	(void)mosq;
	(void)mid;
	((struct sync_state *)obj)->subacked = count > 0 ? granted[0] : 128;
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

static int cmd_subscribe_offline(void)
{
	double deadline = now_mono() + opt.timeout;
	double t0 = now_mono();
	char id[256];

	for(int i = 0; i < opt.clients; i++){
		struct sync_state st = {.connack = -1, .subacked = -1};
		snprintf(id, sizeof(id), "%s%d", opt.prefix, i);
		struct mosquitto *mosq = client_new(id, false, &st);
		if(!mosq){
			return 1;
		}
		mosquitto_connect_callback_set(mosq, sync_on_connect);
		mosquitto_subscribe_callback_set(mosq, sync_on_subscribe);
		mosquitto_disconnect_callback_set(mosq, sync_on_disconnect);

		int rc = mosquitto_connect(mosq, opt.host, opt.port, 60);
		if(rc == MOSQ_ERR_SUCCESS){
			rc = loop_until(mosq, &st.connack, -1, deadline);
		}
		if(rc == MOSQ_ERR_SUCCESS && st.connack != 0){
			fprintf(stderr, "loadgen: %s: CONNACK %d\n", id, st.connack);
			rc = MOSQ_ERR_CONN_REFUSED;
		}
		if(rc == MOSQ_ERR_SUCCESS){
			rc = mosquitto_subscribe(mosq, NULL, opt.topic, opt.qos);
		}
		if(rc == MOSQ_ERR_SUCCESS){
			rc = loop_until(mosq, &st.subacked, -1, deadline);
		}
		if(rc == MOSQ_ERR_SUCCESS && st.subacked != opt.qos){
			fprintf(stderr, "loadgen: %s: granted QoS %d, wanted %d\n", id, st.subacked, opt.qos);
			rc = MOSQ_ERR_PROTOCOL;
		}
		if(rc == MOSQ_ERR_SUCCESS){
			rc = mosquitto_disconnect(mosq);
		}
		while(rc == MOSQ_ERR_SUCCESS && !st.disconnected){
			if(now_mono() > deadline){
				rc = MOSQ_ERR_TIMEOUT;
				break;
			}
			int lrc = mosquitto_loop(mosq, 50, 1);
			if(lrc == MOSQ_ERR_NO_CONN){
				break;
			}
			rc = lrc;
		}
		mosquitto_destroy(mosq);
		if(rc != MOSQ_ERR_SUCCESS){
			fail(id, rc);
			return 1;
		}
	}
	printf("subscribe-offline clients=%d topic=%s qos=%d secs=%.3f\n",
		opt.clients, opt.topic, opt.qos, now_mono() - t0);
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

static bool pub_await(struct mosquitto *mosq, struct pub_state *st, bool threaded, int what, long value,
		const struct timespec *deadline, double mono_deadline)
{
	return threaded ? pub_wait(st, what, value, deadline) : pub_loop_until(mosq, st, what, value, mono_deadline);
}

static int cmd_publish(void)
{
	struct pub_state st = {.connack = -1};
	struct timespec deadline = deadline_after(opt.timeout);
	double mono_deadline = now_mono() + opt.timeout;
	bool threaded = opt.window > 1;
	unsigned char *payload;
	int ret = 1;

	if(opt.size < HEADER_BYTES){
		fprintf(stderr, "loadgen: -s must be at least %d bytes\n", HEADER_BYTES);
		return 1;
	}
	payload = malloc((size_t)opt.size);
	if(!payload){
		perror("loadgen: malloc");
		return 1;
	}
	memset(payload, 'x', (size_t)opt.size);
	pthread_mutex_init(&st.lock, NULL);
	pthread_cond_init(&st.cond, NULL);

	struct mosquitto *mosq = client_new(NULL, true, &st);
	if(!mosq){
		goto out;
	}
	mosquitto_connect_callback_set(mosq, pub_on_connect);
	mosquitto_publish_callback_set(mosq, pub_on_publish);
	mosquitto_disconnect_callback_set(mosq, pub_on_disconnect);

	int rc = mosquitto_connect(mosq, opt.host, opt.port, 60);
	if(rc != MOSQ_ERR_SUCCESS){
		fail("connect", rc);
		goto out_destroy;
	}
	rc = threaded ? mosquitto_loop_start(mosq) : MOSQ_ERR_SUCCESS;
	if(rc != MOSQ_ERR_SUCCESS){
		fail("loop_start", rc);
		goto out_destroy;
	}
	if(!pub_await(mosq, &st, threaded, 0, 0, &deadline, mono_deadline) || st.connack != 0){
		fprintf(stderr, "loadgen: publish: no CONNACK (rc %d)\n", st.connack);
		goto out_stop;
	}

	double t0 = now_mono();
	long sent = 0;
	for(long i = 0; i < opt.messages; i++){
		if(opt.duration > 0 && now_mono() - t0 >= opt.duration){
			break;
		}
		if(i >= opt.window && !pub_await(mosq, &st, threaded, 1, i - opt.window + 1, &deadline, mono_deadline)){
			fprintf(stderr, "loadgen: publish: stalled with %ld sent\n", i);
			goto out_stop;
		}
		put_u64(payload, (uint64_t)i);
		put_u64(payload + 8, now_real_ns());
		rc = mosquitto_publish(mosq, NULL, opt.topic, opt.size, payload, opt.qos, false);
		if(rc != MOSQ_ERR_SUCCESS){
			fail("publish", rc);
			goto out_stop;
		}
		sent++;
	}
	if(!pub_await(mosq, &st, threaded, 1, sent, &deadline, mono_deadline)){
		fprintf(stderr, "loadgen: publish: not all of %ld acked\n", sent);
		goto out_stop;
	}
	double secs = now_mono() - t0;
	printf("publish msgs=%ld size=%d qos=%d window=%ld secs=%.3f rate=%.0f\n",
		sent, opt.size, opt.qos, opt.window, secs,
		secs > 0 ? (double)sent / secs : 0.0);
	ret = 0;

out_stop:
	/* After mosquitto_disconnect() the loop thread may end by itself before
	 * mosquitto_loop_stop() runs; loop_stop then answers MOSQ_ERR_INVAL,
	 * which is harmless (here and in drain). */
	rc = mosquitto_disconnect(mosq);
	if(rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN){
		fail("disconnect", rc);
		ret = 1;
	}
	if(threaded){
		rc = mosquitto_loop_stop(mosq, ret != 0);
		if(rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_INVAL){
			fail("loop_stop", rc);
			ret = 1;
		}
	}else if(rc == MOSQ_ERR_SUCCESS){
		(void)mosquitto_loop(mosq, 50, 1);
	}
out_destroy:
	mosquitto_destroy(mosq);
out:
	pthread_cond_destroy(&st.cond);
	pthread_mutex_destroy(&st.lock);
	free(payload);
	return ret;
}

/* ---- drain ---- */

struct drain_shared {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int complete;     /* clients that have all N */
	int connected;
	int sessions;     /* CONNACKs with session present */
	bool failed;
};

struct sub_state {
	struct drain_shared *shared;
	unsigned char *seen;  /* bitmap of N */
	long unique;
	long dups;
	long out_of_order;
	long bogus;
	long last;
	bool done;
};

static void drain_on_connect(struct mosquitto *mosq, void *obj, int rc, int flags)
{
	(void)mosq;
	struct sub_state *s = obj;
	pthread_mutex_lock(&s->shared->lock);
	if(rc != 0){
		fprintf(stderr, "loadgen: drain: CONNACK %d\n", rc);
		s->shared->failed = true;
	}else{
		s->shared->connected++;
		if(flags & 1){
			s->shared->sessions++;
		}
	}
	pthread_cond_broadcast(&s->shared->cond);
	pthread_mutex_unlock(&s->shared->lock);
}

static void drain_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
	(void)mosq;
	struct sub_state *s = obj;
	pthread_mutex_lock(&s->shared->lock);
	if(m->payloadlen < HEADER_BYTES){
		s->bogus++;
	}else{
		uint64_t seq = get_u64(m->payload);
		if(seq >= (uint64_t)opt.messages){
			s->bogus++;
		}else if(s->seen[seq / 8] & (1u << (seq % 8))){
			s->dups++;
		}else{
			s->seen[seq / 8] |= (unsigned char)(1u << (seq % 8));
			s->unique++;
			if((long)seq < s->last){
				s->out_of_order++;
			}
			s->last = (long)seq;
		}
	}
	if(!s->done && s->unique == opt.messages){
		s->done = true;
		s->shared->complete++;
		pthread_cond_broadcast(&s->shared->cond);
	}
	pthread_mutex_unlock(&s->shared->lock);
}

static int cmd_drain(void)
{
	struct drain_shared sh = {0};
	struct sub_state *subs = calloc((size_t)opt.clients, sizeof(*subs));
	struct mosquitto **mosqs = calloc((size_t)opt.clients, sizeof(*mosqs));
	struct timespec deadline = deadline_after(opt.timeout);
	size_t bitmap_bytes = (size_t)opt.messages / 8 + 1;
	int started = 0;
	int ret = 1;
	char id[256];

	if(!subs || !mosqs){
		perror("loadgen: calloc");
		free(subs);
		free(mosqs);
		return 1;
	}
	pthread_mutex_init(&sh.lock, NULL);
	pthread_cond_init(&sh.cond, NULL);

	double t0 = now_mono();
	for(int i = 0; i < opt.clients; i++){
		subs[i].shared = &sh;
		subs[i].last = -1;
		subs[i].seen = calloc(bitmap_bytes, 1);
		if(!subs[i].seen){
			perror("loadgen: calloc");
			goto out;
		}
		snprintf(id, sizeof(id), "%s%d", opt.prefix, i);
		mosqs[i] = client_new(id, false, &subs[i]);
		if(!mosqs[i]){
			goto out;
		}
		mosquitto_connect_with_flags_callback_set(mosqs[i], drain_on_connect);
		mosquitto_message_callback_set(mosqs[i], drain_on_message);
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

	bool timed_out = false;
	pthread_mutex_lock(&sh.lock);
	while(sh.complete < opt.clients && !sh.failed){
		if(pthread_cond_timedwait(&sh.cond, &sh.lock, &deadline) == ETIMEDOUT){
			timed_out = sh.complete < opt.clients;
			break;
		}
	}
	double secs = now_mono() - t0;
	long total = 0, dups = 0, ooo = 0, bogus = 0;
	for(int i = 0; i < opt.clients; i++){
		total += subs[i].unique;
		dups += subs[i].dups;
		ooo += subs[i].out_of_order;
		bogus += subs[i].bogus;
	}
	long missing = (long)opt.clients * opt.messages - total;
	printf("drain clients=%d msgs=%ld received=%ld missing=%ld dups=%ld out_of_order=%ld bogus=%ld sessions=%d secs=%.3f rate=%.0f%s\n",
		opt.clients, opt.messages, total, missing, dups, ooo, bogus, sh.sessions, secs,
		secs > 0 ? (double)total / secs : 0.0, timed_out ? " timeout=1" : "");
	ret = (timed_out || sh.failed || missing != 0) ? 1 : 0;
	pthread_mutex_unlock(&sh.lock);

out:
	for(int i = 0; i < opt.clients; i++){
		if(!mosqs[i]){
			continue;
		}
		if(i < started){
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
	}
	pthread_cond_destroy(&sh.cond);
	pthread_mutex_destroy(&sh.lock);
	free(subs);
	free(mosqs);
	return ret;
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen subscribe-offline|publish|drain|wait-connect [options]\n"
		"  -H HOST     broker host (127.0.0.1)\n"
		"  -p PORT     broker port (1883)\n"
		"  -t TOPIC    topic (bench/t)\n"
		"  -i PREFIX   subscriber client id prefix (bench-sub-)\n"
		"  -k K        subscribers (5)\n"
		"  -n N        messages (1000)\n"
		"  -s SIZE     payload bytes, >= 16 (100)\n"
		"  -q QOS      QoS (1)\n"
		"  -w WINDOW   max unacknowledged publishes (100)\n"
		"  -T SECS     timeout (600)\n"
		"  -D SECS     publish: stop sending after SECS seconds (no limit)\n"
		"  -S EPOCH    wait-connect: measure from this CLOCK_REALTIME time\n"
		"  -P MS       wait-connect: poll interval (5)\n");
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
	while((c = getopt(argc, argv, "H:p:t:i:k:n:s:q:w:T:D:S:P:")) != -1){
		bool ok = true;
		switch(c){
			case 'H': opt.host = optarg; break;
			case 'p': ok = parse_long(optarg, 1, &v) && v <= 65535; opt.port = (int)v; break;
			case 't': opt.topic = optarg; break;
			case 'i': opt.prefix = optarg; break;
			case 'k': ok = parse_long(optarg, 1, &v) && v <= 10000; opt.clients = (int)v; break;
			case 'n': ok = parse_long(optarg, 1, &opt.messages); break;
			case 's': ok = parse_long(optarg, HEADER_BYTES, &v) && v <= 256 * 1024 * 1024; opt.size = (int)v; break;
			case 'q': ok = parse_long(optarg, 0, &v) && v <= 2; opt.qos = (int)v; break;
			case 'w': ok = parse_long(optarg, 1, &opt.window); break;
			case 'T': ok = parse_double(optarg, &opt.timeout); break;
			case 'D': ok = parse_double(optarg, &opt.duration); break;
			case 'S': ok = parse_double(optarg, &opt.since); break;
			case 'P': ok = parse_long(optarg, 1, &v) && v <= 10000; opt.poll_ms = (int)v; break;
			default: ok = false; break;
		}
		if(!ok){
			usage();
			return 2;
		}
	}
	if(optind != argc){
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
