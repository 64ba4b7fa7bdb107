/* What the gateway (broker.c), the property codec (props.c) and the
 * broker-facing files share: Mosquitto's headers, with every broker
 * function the plugin calls as a weak reference. No feature includes it. */
#ifndef PERSIST_LMDB_BROKER_INT_H
#define PERSIST_LMDB_BROKER_INT_H

#include <mosquitto.h>
#include <mosquitto/broker.h>

/* Every broker function the plugin calls, as a weak reference: a broker
 * without one (Mosquitto 2.0 lacks the persistence interface and several
 * property accessors) still loads the plugin, which then names what it needs
 * (plugin.c) instead of failing inside dlopen. A ctest checks that no broker
 * symbol is left out of this list. */
#define BROKER_FUNCTIONS(X) \
	X(mosquitto_broker_publish) \
	X(mosquitto_broker_publish_copy) \
	X(mosquitto_callback_register) \
	X(mosquitto_callback_unregister) \
	X(mosquitto_client_clean_session) \
	X(mosquitto_client_id) \
	X(mosquitto_client_protocol_version) \
	X(mosquitto_client_username) \
	X(mosquitto_control_command_reply) \
	X(mosquitto_persist_client_delete) \
	X(mosquitto_persist_client_msg_clear) \
	X(mosquitto_persist_retain_msg_delete) \
	X(mosquitto_client_will_set) \
	X(mosquitto_free) \
	X(mosquitto_log_printf) \
	X(mosquitto_malloc) \
	X(mosquitto_persist_base_msg_add) \
	X(mosquitto_persist_client_add) \
	X(mosquitto_persist_client_msg_add) \
	X(mosquitto_persist_client_msg_delete) \
	X(mosquitto_persist_client_msg_update) \
	X(mosquitto_persist_retain_msg_set) \
	X(mosquitto_persistence_location) \
	X(mosquitto_plugin_set_info) \
	X(mosquitto_property_add_binary) \
	X(mosquitto_property_add_byte) \
	X(mosquitto_property_add_int16) \
	X(mosquitto_property_add_int32) \
	X(mosquitto_property_add_string) \
	X(mosquitto_property_add_string_pair) \
	X(mosquitto_property_add_varint) \
	X(mosquitto_property_binary_value) \
	X(mosquitto_property_binary_value_length) \
	X(mosquitto_property_byte_value) \
	X(mosquitto_property_copy_all) \
	X(mosquitto_property_free_all) \
	X(mosquitto_property_identifier) \
	X(mosquitto_property_identifier_to_string) \
	X(mosquitto_property_int16_value) \
	X(mosquitto_property_int32_value) \
	X(mosquitto_property_next) \
	X(mosquitto_property_string_name) \
	X(mosquitto_property_string_name_length) \
	X(mosquitto_property_string_value) \
	X(mosquitto_property_string_value_length) \
	X(mosquitto_property_type) \
	X(mosquitto_property_varint_value) \
	X(mosquitto_strdup) \
	X(mosquitto_strerror) \
	X(mosquitto_string_to_property_info) \
	X(mosquitto_subscription_add) \
	X(mosquitto_topic_matches_sub)

#define PRAGMA_(x) _Pragma(#x)
#define WEAK_REF(f) PRAGMA_(weak f)
BROKER_FUNCTIONS(WEAK_REF)

#include "broker.h"
#include "record.h"

/* A copy of p in the broker's heap (the broker frees it), NUL after len bytes (broker.c). */
void *broker_copy(const void *p, size_t len);

/* Property lists <-> the stored encoding: id varint, then the value as a
 * varint (byte, int16, int32, varint) or byte field(s) (binary, string,
 * string pair). props_encode leaves b->err set on failure. */
void props_encode(struct buf *b, const mosquitto_property *props);
/* props encoded into scratch (valid until its next use); -1 when out of memory. */
int props_view(struct buf *scratch, const mosquitto_property *props, struct bytes *out);
int props_decode(struct bytes in, mosquitto_property **out);
/* The value of the first user property called name; false when none. */
bool props_user_value(const mosquitto_property *props, const char *name, struct bytes *out);

#endif
