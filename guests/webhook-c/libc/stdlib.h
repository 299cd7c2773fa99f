/*
 * stdlib.h of the freestanding libc shim: only what the generated bindings and the connector use.
 * A component has no WASI, so there is no C library to link; libc.c implements these on top of the
 * module's own linear memory.
 */
#ifndef VADYL_LIBC_STDLIB_H
#define VADYL_LIBC_STDLIB_H

#include <stddef.h>

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
_Noreturn void abort(void);

#endif
