/* Growable arrays (array.h). */
#include "array.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int array_grow(void *items, size_t *cap, size_t n, size_t elem, size_t first)
{
	void *p, *grown;
	size_t want;

	if(n < *cap){
		return 0;
	}
	want = *cap ? *cap * 2 : first;
	if(want <= n || want > SIZE_MAX / elem){
		return -1;
	}
	/* The pointer is read and written as bytes: items points at a pointer
	 * to the owner's element type, which no void ** parameter can take. */
	memcpy(&p, items, sizeof(p));
	grown = realloc(p, want * elem);
	if(!grown){
		return -1;
	}
	memcpy(items, &grown, sizeof(grown));
	*cap = want;
	return 0;
}
