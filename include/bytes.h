/* Fixed-width integers in byte buffers, for on-disk layouts (store keys,
 * the operations buffer, the journal). */
#ifndef PERSIST_LMDB_BYTES_H
#define PERSIST_LMDB_BYTES_H

#include <stdint.h>

static inline void put_be64(uint8_t *p, uint64_t v)
{
	for(int i = 7; i >= 0; i--){
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for(int i = 0; i < 8; i++){
		v = (v << 8) | p[i];
	}
	return v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

#endif
