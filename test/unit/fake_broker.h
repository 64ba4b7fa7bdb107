/* The broker as the feature tests play it: plugin/broker.h implemented by
 * recording every call, with answers the test chooses. Linked instead of
 * plugin/broker.c, so a feature module runs with no Mosquitto at all. */
#ifndef PERSIST_LMDB_FAKE_BROKER_H
#define PERSIST_LMDB_FAKE_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"

enum fake_kind {
	FAKE_ENTRY_DROP,
	FAKE_ENTRY_TAKE,
	FAKE_QUEUE_RELEASE,
	FAKE_ENTRY_SET_STATE,
	FAKE_BODY_ADD,
	FAKE_ENTRY_ADD,
	FAKE_KINDS
};

struct fake_call {
	enum fake_kind kind;
	char clientid[64];
	uint64_t seq;        /* entry add */
	uint64_t store_id;   /* body add, entry add */
	uint16_t mid;
	uint8_t qos;
	uint8_t state;       /* set state; entry add: the entry's */
	uint8_t direction;   /* entry add */
};

#define FAKE_CALLS_MAX 512
#define FAKE_LOGS_MAX 32

/* What the broker does with a call of one kind, past recording it (raise
 * the plugin's events back, as Mosquitto does within the call; refuse one
 * entry and not the others): its return is the call's answer. */
typedef int (*fake_hook_fn)(const struct fake_call *c, void *ctx);

struct fake_broker {
	struct fake_call calls[FAKE_CALLS_MAX];
	size_t n_calls;
	int answer[FAKE_KINDS];          /* what each kind of call returns (BROKER_OK at reset) */
	fake_hook_fn hook[FAKE_KINDS];   /* NULL: answer[kind] */
	void *hook_ctx;
	char logs[FAKE_LOGS_MAX][256];   /* the first lines logged */
	size_t n_logs;
};

extern struct fake_broker fake;

/* Forgets every call, log line and hook; every call answers BROKER_OK again. */
void fake_reset(void);
size_t fake_count(enum fake_kind kind);
/* The i-th call of that kind, or NULL. */
const struct fake_call *fake_nth(enum fake_kind kind, size_t i);
/* Whether a logged line contains s. */
bool fake_logged(const char *s);

#endif
