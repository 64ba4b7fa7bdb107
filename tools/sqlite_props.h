/* persist-sqlite keeps a message's MQTT 5 properties as a JSON array; the
 * plugin keeps them in its own encoding (plugin/props.c). This converts the
 * one into the other: import-sqlite's reading of untrusted input, kept
 * apart so that fuzz/fuzz_import.c can drive it. */
#ifndef PERSIST_LMDB_SQLITE_PROPS_H
#define PERSIST_LMDB_SQLITE_PROPS_H

#include "record.h"

/* The longest MQTT string or binary property. */
#define PROP_MAX 65535

/* Appends json's properties to out: the identifier as a varint, then a byte
 * value as a varint, a string or binary value as a length-prefixed field, a
 * user property as two. Only the properties the broker keeps with a message
 * are accepted. Returns NULL, or why json cannot be converted (out then
 * holds a partial result). An allocation failure leaves out->err set. */
const char *props_from_sqlite_json(const char *json, struct buf *out);

#endif
