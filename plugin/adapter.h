/* Shared state of the Mosquitto adapter (plugin.c, events.c, restore.c, props.c). */
#ifndef PERSIST_LMDB_ADAPTER_H
#define PERSIST_LMDB_ADAPTER_H

#include <mosquitto.h>
#include <mosquitto/broker.h>

/* Functions that Mosquitto 2.0 does not have. Weak, so that on 2.0 the
 * plugin loads and says what it needs instead of failing in dlopen. */
#pragma weak mosquitto_persistence_location
#pragma weak mosquitto_persist_base_msg_add
#pragma weak mosquitto_persist_client_add
#pragma weak mosquitto_persist_client_msg_add
#pragma weak mosquitto_persist_retain_msg_set
#pragma weak mosquitto_subscription_add
#pragma weak mosquitto_client_will_set
#pragma weak mosquitto_strdup
#pragma weak mosquitto_malloc
#pragma weak mosquitto_free

#include "options.h"
#include "record.h"
#include "store.h"

struct plugin {
	mosquitto_plugin_id_t *id;
	struct plugin_config cfg;
	struct store *store;
	struct buf props;     /* scratch for encoding property lists */
};

int persist_restore_cb(int event, void *event_data, void *userdata);

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

/* Property lists <-> the stored encoding: id varint, then the value as a
 * varint (byte, int16, int32, varint) or byte field(s) (binary, string,
 * string pair). props_encode leaves b->err set on failure. */
void props_encode(struct buf *b, const mosquitto_property *props);
int props_decode(struct bytes in, mosquitto_property **out);

#endif
