/* Small helpers shared by every module: cleanup attributes and steal.
 *
 * Variables that own a resource carry a cleanup attribute and start at
 * NULL / -1; ownership moves out with pe_steal_ptr / pe_steal_fd, so the
 * only gotos left are the ones that roll back side effects. */
#ifndef PE_CORE_UTIL_H
#define PE_CORE_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <errno.h>

#define PE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static inline void pe__freep(void *p)
{
    free(*(void **)p);
}

static inline void pe__closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

#define cleanup_free __attribute__((cleanup(pe__freep)))
#define cleanup_fd __attribute__((cleanup(pe__closep)))

static inline void *pe__steal_ptr(void *pp)
{
    void **p = pp;
    void *v = *p;
    *p = NULL;
    return v;
}

static inline int pe_steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}

#define pe_steal_ptr(pp) pe__steal_ptr(pp)

/* Abort on allocation failure: out-of-memory is not a recoverable state
 * for a control-plane process and checking every strdup hides real bugs. */
void *pe_xmalloc(size_t n);
void *pe_xcalloc(size_t n, size_t size);
void *pe_xrealloc(void *p, size_t n);
char *pe_xstrdup(const char *s);
char *pe_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* CLOCK_MONOTONIC, for deadlines and durations. */
uint64_t pe_monotonic_ns(void);
static inline int64_t pe_monotonic_ms(void)
{
    return (int64_t)(pe_monotonic_ns() / 1000000u);
}
static inline double pe_monotonic_s(void)
{
    return (double)pe_monotonic_ns() / 1e9;
}

#endif
