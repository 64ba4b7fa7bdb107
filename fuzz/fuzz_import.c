/* libFuzzer target: import-sqlite's reading of persist-sqlite's property
 * JSON (tools/sqlite_props.c), the CLI's import path for untrusted input.
 *
 * Checks: no crash, leak or undefined behaviour; a conversion either fails
 * with a reason or yields an encoding that an independent reader consumes
 * exactly, property by property, within MQTT's limits, and only with the
 * properties a message carries; the same input gives the same result. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "record.h"
#include "sqlite_props.h"

/* Reads the encoding as plugin/props.c writes it; false on any mismatch. */
static bool encoding_ok(const uint8_t *p, size_t n, size_t *count)
{
	struct reader r = {p, n, false};

	*count = 0;
	while(r.left && !r.err){
		uint64_t id = rd_varint(&r);
		struct bytes a, b;

		switch(id){
			case 1:   /* payload format indicator: a byte */
				if(rd_varint(&r) > UINT8_MAX){
					return false;
				}
				break;
			case 3:   /* content type */
			case 8:   /* response topic */
			case 9:   /* correlation data */
				a = rd_bytes(&r);
				if(!a.data || a.len > PROP_MAX){
					return false;
				}
				break;
			case 38:  /* user property: name, value */
				a = rd_bytes(&r);
				b = rd_bytes(&r);
				if(!a.data || !b.data || a.len > PROP_MAX || b.len > PROP_MAX){
					return false;
				}
				break;
			default:
				return false;
		}
		(*count)++;
	}
	return !r.err && r.left == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf out = {0}, again = {0};
	const char *why, *why2;
	size_t count;
	char *json = malloc(size + 1);

	FUZZ_CHECK(json != NULL);
	memcpy(json, data, size);
	json[size] = '\0';

	why = props_from_sqlite_json(json, &out);
	FUZZ_CHECK(!out.err);
	if(why){
		FUZZ_CHECK(*why != '\0');
	}else{
		FUZZ_CHECK(encoding_ok(out.data, out.len, &count));
		/* Nothing converted is nothing encoded. */
		FUZZ_CHECK((count == 0) == (out.len == 0));
	}
	why2 = props_from_sqlite_json(json, &again);
	FUZZ_CHECK(why == why2 || (why && why2 && !strcmp(why, why2)));
	FUZZ_CHECK(out.len == again.len && (!out.len || !memcmp(out.data, again.data, out.len)));

	buf_free(&out);
	buf_free(&again);
	free(json);
	return 0;
}
