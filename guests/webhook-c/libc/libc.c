/*
 * A tiny freestanding libc for components: a first-fit free-list allocator over the module's
 * linear memory, and the handful of string functions the compiler and the bindings call.
 *
 * The host runs every step of an operation in a fresh instance, so the heap only has to live for
 * one call: simplicity wins over fragmentation handling. Every block has an 8-byte header holding
 * its capacity; freed blocks go onto a list and are reused by later allocations that fit. Memory is
 * taken from `__heap_base` (set by wasm-ld, after the stack and static data) and grown a page at a
 * time with `memory.grow`. Blocks are 8-byte aligned, the largest alignment the canonical ABI asks
 * `cabi_realloc` for.
 *
 * Compiled with -ffreestanding, which keeps clang from turning the loops below back into calls to
 * the very functions they implement.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 8u
#define HEADER 8u
#define PAGE 65536u

/* Provided by wasm-ld: the first byte after the stack and the static data. */
extern unsigned char __heap_base;

/* A freed block: the header, then the link to the next free block in the payload. */
typedef struct free_block {
    size_t capacity;
    size_t pad; /* keeps the payload (and `next`) 8-byte aligned on wasm32 */
    struct free_block *next;
} free_block;

static uintptr_t heap_next; /* first unallocated byte; 0 until the first allocation */
static uintptr_t heap_end;  /* end of linear memory */
static free_block *free_list;

static size_t *header_of(void *payload) { return (size_t *)((uintptr_t)payload - HEADER); }

static int heap_reserve(size_t bytes) {
    if (heap_next == 0) {
        heap_next = ((uintptr_t)&__heap_base + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1);
        heap_end = (uintptr_t)__builtin_wasm_memory_size(0) * PAGE;
    }
    if (heap_end - heap_next >= bytes) {
        return 1;
    }
    size_t missing = bytes - (heap_end - heap_next);
    size_t pages = missing / PAGE + (missing % PAGE != 0);
    if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) {
        return 0;
    }
    heap_end += pages * PAGE;
    return 1;
}

void *malloc(size_t size) {
    if (size > SIZE_MAX / 2) {
        return NULL;
    }
    size_t capacity = size < sizeof(void *) ? sizeof(void *) : (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    for (free_block **link = &free_list; *link; link = &(*link)->next) {
        free_block *block = *link;
        if (block->capacity >= capacity) {
            *link = block->next;
            return &block->next;
        }
    }
    if (!heap_reserve(HEADER + capacity)) {
        return NULL;
    }
    *(size_t *)heap_next = capacity;
    void *payload = (void *)(heap_next + HEADER);
    heap_next += HEADER + capacity;
    return payload;
}

void free(void *ptr) {
    if (!ptr) {
        return;
    }
    free_block *block = (free_block *)header_of(ptr);
    block->next = free_list;
    free_list = block;
}

void *calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) {
        return NULL;
    }
    void *ptr = malloc(count * size);
    if (ptr) {
        memset(ptr, 0, count * size);
    }
    return ptr;
}

void *realloc(void *ptr, size_t size) {
    if (!ptr) {
        return malloc(size);
    }
    size_t capacity = *header_of(ptr);
    if (size <= capacity) {
        return ptr;
    }
    void *grown = malloc(size);
    if (grown) {
        memcpy(grown, ptr, capacity);
        free(ptr);
    }
    return grown;
}

_Noreturn void abort(void) { __builtin_trap(); }

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--) {
            *d++ = *s++;
        }
    } else {
        while (n--) {
            d[n] = s[n];
        }
    }
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) {
        *d++ = (unsigned char)c;
    }
    return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            return x[i] < y[i] ? -1 : 1;
        }
    }
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}
