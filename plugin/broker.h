/* The broker as the features reach it (broker.c): the only way from a
 * feature module to Mosquitto. Plugin-owned values in, one of enum
 * broker_rc out; no Mosquitto type crosses it.
 *
 * The calls that change what the broker holds can raise the plugin's own
 * persistence events before they return; broker_taking() tells the event
 * handlers which deletions are the plugin's own taking back, not to be
 * recorded. */
#ifndef PERSIST_LMDB_BROKER_H
#define PERSIST_LMDB_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Client message directions and the QoS 2 states the plugin acts on, as the
 * broker numbers them (its internal enum; persist-sqlite stores the same). */
#define MSG_DIR_IN 0
#define MSG_DIR_OUT 1
#define MSG_STATE_PUBLISH_QOS1 2
#define MSG_STATE_WAIT_FOR_PUBACK 3
#define MSG_STATE_PUBLISH_QOS2 4
#define MSG_STATE_WAIT_FOR_PUBREC 5
#define MSG_STATE_RESEND_PUBREL 6
#define MSG_STATE_WAIT_FOR_PUBREL 7
#define MSG_STATE_WAIT_FOR_PUBCOMP 9
#define MSG_STATE_QUEUED 11

enum broker_rc {
	BROKER_OK = 0,
	BROKER_QUEUED_OR_DROPPED,  /* an entry put behind a connected client's in-flight window,
	                              or dropped at the broker's queue limits (it cannot say which) */
	BROKER_NOT_FOUND,
	BROKER_NOMEM,
	BROKER_INVALID,            /* the broker refused the arguments: it took nothing */
	BROKER_FAILED,
};

enum broker_log_level {
	BROKER_LOG_INFO,
	BROKER_LOG_NOTICE,
	BROKER_LOG_WARNING,
	BROKER_LOG_ERR,
};

void broker_log(enum broker_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *broker_strerror(int rc);
/* Logs a failed store call ("cannot record <what>"): 0 when rc is STORE_OK,
 * else the broker's error code for it (what an event handler returns). */
int store_result(int rc, const char *what);

/* The broker drops an outgoing message of clientid (its delete event follows). */
int broker_entry_drop(const char *clientid, uint16_t mid, uint8_t qos);
/* The same for a message the plugin keeps elsewhere: while the broker's
 * delete event for it runs, broker_taking() is true. */
int broker_entry_take(const char *clientid, uint16_t mid, uint8_t qos);
bool broker_taking(void);
/* The broker drops every outgoing message it holds for clientid. */
int broker_queue_release(const char *clientid);
/* Sets the state of an outgoing message the broker holds for clientid. */
int broker_entry_set_state(const char *clientid, uint16_t mid, uint8_t qos, uint8_t state);
/* The broker takes a stored body (its copy of m). */
int broker_body_add(uint64_t store_id, const struct rec_base_msg *m);
/* The broker takes a stored queue entry of clientid, at seq, under packet id mid. */
int broker_entry_add(const char *clientid, uint64_t seq, uint16_t mid, const struct rec_queue *q);
bool broker_topic_matches(const char *filter, const char *topic);

#endif
