// An LD_PRELOAD shim that counts heap allocations, so `blasnet bench` can show how
// many a steady-state step makes (see scripts/count-allocations). glibc's own
// __libc_* entry points do the work; the shim only counts.
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ulong calls, bytes;

static void count(size_t n) {
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&bytes, n, memory_order_relaxed);
}

void *malloc(size_t n) { count(n); return __libc_malloc(n); }
void *calloc(size_t k, size_t n) { count(k * n); return __libc_calloc(k, n); }
void *realloc(void *p, size_t n) { count(n); return __libc_realloc(p, n); }
void *aligned_alloc(size_t alignment, size_t n) { count(n); return __libc_memalign(alignment, n); }
void *memalign(size_t alignment, size_t n) { count(n); return __libc_memalign(alignment, n); }

int posix_memalign(void **out, size_t alignment, size_t n) {
    count(n);
    void *p = __libc_memalign(alignment, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

// Read by blasnet bench through dlsym when this shim is preloaded.
void blasnet_allocation_counts(unsigned long *out_calls, unsigned long *out_bytes) {
    *out_calls = atomic_load(&calls);
    *out_bytes = atomic_load(&bytes);
}
