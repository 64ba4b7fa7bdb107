/* MQTT v5 property lists to and from bytes. */
#include "broker_int.h"

#include <string.h>

#include <mosquitto/mqtt_protocol.h>

void props_encode(struct buf *b, const mosquitto_property *props)
{
	for(const mosquitto_property *p = props; p; p = mosquitto_property_next(p)){
		buf_put_varint(b, (uint64_t)mosquitto_property_identifier(p));
		switch(mosquitto_property_type(p)){
			case MQTT_PROP_TYPE_BYTE:
				buf_put_varint(b, mosquitto_property_byte_value(p));
				break;
			case MQTT_PROP_TYPE_INT16:
				buf_put_varint(b, mosquitto_property_int16_value(p));
				break;
			case MQTT_PROP_TYPE_INT32:
				buf_put_varint(b, mosquitto_property_int32_value(p));
				break;
			case MQTT_PROP_TYPE_VARINT:
				buf_put_varint(b, mosquitto_property_varint_value(p));
				break;
			case MQTT_PROP_TYPE_BINARY:
				buf_put_bytes(b, mosquitto_property_binary_value(p),
						mosquitto_property_binary_value_length(p), true);
				break;
			case MQTT_PROP_TYPE_STRING:
				buf_put_bytes(b, mosquitto_property_string_value(p),
						mosquitto_property_string_value_length(p), true);
				break;
			case MQTT_PROP_TYPE_STRING_PAIR:
				buf_put_bytes(b, mosquitto_property_string_name(p),
						mosquitto_property_string_name_length(p), true);
				buf_put_bytes(b, mosquitto_property_string_value(p),
						mosquitto_property_string_value_length(p), true);
				break;
			default:
				b->err = true;
				return;
		}
	}
}

/* Strings in the encoding are not NUL-terminated: copy to add one. */
static char *dup_field(struct bytes f)
{
	char *s;

	if(!f.data){
		return NULL;
	}
	s = mosquitto_malloc(f.len + 1);
	if(s){
		memcpy(s, f.data, f.len);
		s[f.len] = '\0';
	}
	return s;
}

int props_decode(struct bytes in, mosquitto_property **out)
{
	struct reader r = {in.data, in.len, false};
	mosquitto_property *props = NULL;
	int rc = MOSQ_ERR_SUCCESS;

	while(r.left && rc == MOSQ_ERR_SUCCESS){
		int id = (int)rd_varint(&r), type;
		const char *name = mosquitto_property_identifier_to_string(id);
		uint64_t v;

		if(r.err || !name || mosquitto_string_to_property_info(name, &id, &type)){
			rc = MOSQ_ERR_MALFORMED_PACKET;
			break;
		}
		switch(type){
			case MQTT_PROP_TYPE_BYTE:
				v = rd_varint(&r);
				rc = v > UINT8_MAX ? MOSQ_ERR_MALFORMED_PACKET : mosquitto_property_add_byte(&props, id, (uint8_t)v);
				break;
			case MQTT_PROP_TYPE_INT16:
				v = rd_varint(&r);
				rc = v > UINT16_MAX ? MOSQ_ERR_MALFORMED_PACKET : mosquitto_property_add_int16(&props, id, (uint16_t)v);
				break;
			case MQTT_PROP_TYPE_INT32:
				v = rd_varint(&r);
				rc = v > UINT32_MAX ? MOSQ_ERR_MALFORMED_PACKET : mosquitto_property_add_int32(&props, id, (uint32_t)v);
				break;
			case MQTT_PROP_TYPE_VARINT:
				v = rd_varint(&r);
				rc = v > UINT32_MAX ? MOSQ_ERR_MALFORMED_PACKET : mosquitto_property_add_varint(&props, id, (uint32_t)v);
				break;
			case MQTT_PROP_TYPE_BINARY:{
				struct bytes f = rd_bytes(&r);
				rc = f.len > UINT16_MAX ? MOSQ_ERR_MALFORMED_PACKET
					: mosquitto_property_add_binary(&props, id, f.data, (uint16_t)f.len);
				break;
			}
			case MQTT_PROP_TYPE_STRING:{
				char *s = dup_field(rd_bytes(&r));
				rc = s ? mosquitto_property_add_string(&props, id, s) : MOSQ_ERR_MALFORMED_PACKET;
				mosquitto_free(s);
				break;
			}
			case MQTT_PROP_TYPE_STRING_PAIR:{
				char *k = dup_field(rd_bytes(&r));
				char *s = dup_field(rd_bytes(&r));
				rc = k && s ? mosquitto_property_add_string_pair(&props, id, k, s) : MOSQ_ERR_MALFORMED_PACKET;
				mosquitto_free(k);
				mosquitto_free(s);
				break;
			}
			default:
				rc = MOSQ_ERR_MALFORMED_PACKET;
		}
		if(r.err){
			rc = MOSQ_ERR_MALFORMED_PACKET;
		}
	}
	if(rc){
		mosquitto_property_free_all(&props);
		return rc;
	}
	*out = props;
	return MOSQ_ERR_SUCCESS;
}

/* Encodes a property list into the plugin's scratch buffer; the view is
 * valid until the next call. No list gives an absent field. */
int props_view(struct buf *scratch, const mosquitto_property *props, struct bytes *out)
{
	out->data = NULL;
	out->len = 0;
	if(!props){
		return 0;
	}
	buf_reset(scratch);
	props_encode(scratch, props);
	if(scratch->err){
		return -1;
	}
	out->data = scratch->data;
	out->len = scratch->len;
	return 0;
}

/* The value of the first user property called name; false when none. */
bool props_user_value(const mosquitto_property *props, const char *name, struct bytes *out)
{
	size_t nlen = strlen(name);

	for(const mosquitto_property *p = props; p; p = mosquitto_property_next(p)){
		if(mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY
				|| mosquitto_property_string_name_length(p) != nlen
				|| memcmp(mosquitto_property_string_name(p), name, nlen)){
			continue;
		}
		out->data = (const uint8_t *)mosquitto_property_string_value(p);
		out->len = mosquitto_property_string_value_length(p);
		if(!out->data){
			out->data = (const uint8_t *)"";
		}
		return true;
	}
	return false;
}
