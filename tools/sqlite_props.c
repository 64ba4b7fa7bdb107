/* persist-sqlite's property JSON into the plugin's encoding (sqlite_props.h). */
#include "sqlite_props.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

enum prop_type { PT_BYTE, PT_STRING, PT_BINARY, PT_PAIR };

/* The properties the broker keeps with a message or a will (Mosquitto's
 * property__process_publish and property__process_will), by the names
 * persist-sqlite's JSON gives them, with their MQTT v5 identifiers. */
static const struct {
	const char *name;
	uint8_t id;
	enum prop_type type;
} message_props[] = {
	{"payload-format-indicator", 1, PT_BYTE},
	{"content-type", 3, PT_STRING},
	{"response-topic", 8, PT_STRING},
	{"correlation-data", 9, PT_BINARY},
	{"user-property", 38, PT_PAIR},
};

static int hex_digit(char c)
{
	if(c >= '0' && c <= '9'){
		return c - '0';
	}
	if(c >= 'a' && c <= 'f'){
		return c - 'a' + 10;
	}
	if(c >= 'A' && c <= 'F'){
		return c - 'A' + 10;
	}
	return -1;
}

static bool json_string(const cJSON *v, size_t *len)
{
	if(!cJSON_IsString(v) || !v->valuestring){
		return false;
	}
	*len = strlen(v->valuestring);
	return *len <= PROP_MAX;
}

/* Appends one property of persist-sqlite's JSON ({"identifier", "value"},
 * "name" too for a user property) to b in the plugin's encoding
 * (plugin/props.c): the identifier as a varint, then a byte value as a
 * varint, a string or binary value as a length-prefixed field, a user
 * property as two. Returns NULL, or why it cannot. */
static const char *put_prop(struct buf *b, const cJSON *o)
{
	const cJSON *ident = cJSON_GetObjectItem(o, "identifier"), *v = cJSON_GetObjectItem(o, "value");
	const cJSON *name = cJSON_GetObjectItem(o, "name");
	size_t i, len, name_len;
	uint8_t *out;

	if(!cJSON_IsString(ident) || !ident->valuestring){
		return "has a property without an identifier";
	}
	for(i = 0; i < sizeof(message_props) / sizeof(message_props[0]); i++){
		if(!strcasecmp(ident->valuestring, message_props[i].name)){
			break;
		}
	}
	if(i == sizeof(message_props) / sizeof(message_props[0])){
		return "has a property a message does not carry";
	}
	buf_put_varint(b, message_props[i].id);
	switch(message_props[i].type){
		case PT_BYTE:
			if(!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > UINT8_MAX
					|| v->valuedouble != (double)(int)v->valuedouble){
				return "has a byte property whose value is not a byte";
			}
			buf_put_varint(b, (uint64_t)v->valuedouble);
			return NULL;
		case PT_STRING:
			if(!json_string(v, &len)){
				return "has a string property whose value is not a string";
			}
			buf_put_bytes(b, v->valuestring, len, true);
			return NULL;
		case PT_BINARY:
			/* Hexadecimal, two digits a byte. */
			if(!cJSON_IsString(v) || !v->valuestring || (len = strlen(v->valuestring)) % 2 || len / 2 > PROP_MAX){
				return "has a binary property whose value is not hexadecimal";
			}
			buf_put_varint(b, (uint64_t)len / 2 + 1);
			out = buf_extend(b, len / 2);
			for(size_t j = 0; out && j < len / 2; j++){
				int hi = hex_digit(v->valuestring[2 * j]), lo = hex_digit(v->valuestring[2 * j + 1]);
				if(hi < 0 || lo < 0){
					return "has a binary property whose value is not hexadecimal";
				}
				out[j] = (uint8_t)(hi << 4 | lo);
			}
			return NULL;
		case PT_PAIR:
			if(!json_string(name, &name_len) || !json_string(v, &len)){
				return "has a user property without a name and a value";
			}
			buf_put_bytes(b, name->valuestring, name_len, true);
			buf_put_bytes(b, v->valuestring, len, true);
			return NULL;
	}
	return "has a property of an unknown type";
}

const char *props_from_sqlite_json(const char *json, struct buf *out)
{
	const char *why = NULL;
	const cJSON *o;
	cJSON *list = cJSON_Parse(json);

	if(!cJSON_IsArray(list)){
		cJSON_Delete(list);
		return "is not a JSON array";
	}
	cJSON_ArrayForEach(o, list){
		why = put_prop(out, o);
		if(why){
			break;
		}
	}
	cJSON_Delete(list);
	return why;
}
