/* The broker-facing files (plugin.c, events.c, restore.c, control.c,
 * metrics.c): they read the broker's events and reach the features through
 * the dispatch (dispatch.h) only. */
#ifndef PERSIST_LMDB_ADAPTER_H
#define PERSIST_LMDB_ADAPTER_H

#include <time.h>

#include "broker_int.h"
#include "dispatch.h"

/* Start-up restore (restore.c), and a QoS 2 routing committed in part,
 * done again at restore until the first tick. */
int persist_restore_cb(int event, void *event_data, void *userdata);
bool replay_partial(struct plugin *pl, uint64_t lsn);
void replay_note_completed(struct plugin *pl, const char *clientid, uint64_t store_id);
void replay_body(struct plugin *pl, const struct rec_base_msg *m);
void replay_body_added(struct plugin *pl, const struct mosquitto_base_msg *d);
bool replay_duplicate(struct plugin *pl, const struct mosquitto_client_msg *d);
void replay_tick(struct plugin *pl);
void replay_free(struct plugin *pl);

/* The broker's events (events.c). */
int on_base_msg_add(int event, void *event_data, void *userdata);
int on_base_msg_delete(int event, void *event_data, void *userdata);
int on_retain_msg_set(int event, void *event_data, void *userdata);
int on_retain_msg_delete(int event, void *event_data, void *userdata);
int on_client_add(int event, void *event_data, void *userdata);
int on_client_update(int event, void *event_data, void *userdata);
int on_client_delete(int event, void *event_data, void *userdata);
int on_subscription_add(int event, void *event_data, void *userdata);
int on_subscription_delete(int event, void *event_data, void *userdata);
int on_client_msg_add(int event, void *event_data, void *userdata);
int on_client_msg_update(int event, void *event_data, void *userdata);
int on_client_msg_delete(int event, void *event_data, void *userdata);
int on_will_add(int event, void *event_data, void *userdata);
int on_will_delete(int event, void *event_data, void *userdata);
int on_connect(int event, void *event_data, void *userdata);
int on_client_offline(int event, void *event_data, void *userdata);
int on_disconnect(int event, void *event_data, void *userdata);
int on_message_in(int event, void *event_data, void *userdata);
int on_message_out(int event, void *event_data, void *userdata);
int on_basic_auth(int event, void *event_data, void *userdata);
int on_subscribe(int event, void *event_data, void *userdata);

/* $SYS metrics (metrics.c), from the tick. */
void metrics_tick(struct plugin *pl);

#define CONTROL_TOPIC "$CONTROL/persist-lmdb/v1"
/* MOSQ_EVT_CONTROL on CONTROL_TOPIC (control.c). */
int on_control(int event, void *event_data, void *userdata);
/* Logs who may use the control API (plugin_opt_control_users). */
void control_announce(const struct plugin *pl);

#endif
