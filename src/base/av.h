/* av.h: what every Aviary module needs: error codes, checked allocation, the
 * container macro and the monotonic clock. */
#ifndef AV_H
#define AV_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AV_VERSION "0.1.0"

/* Error codes returned by synchronous functions (0 is success). */
#define AV_EINVAL   (-1)   /* bad input: the message says which */
#define AV_ENOENT   (-2)   /* no such thing (file, route, backend) */
#define AV_EIO      (-3)   /* a system call failed; errno is kept */
#define AV_ELIMIT   (-4)   /* a configured limit was reached */
#define AV_EAGAIN   (-5)   /* try later: resource busy */
/* A positive status: the object the function was given is closed and freed;
 * the caller must not touch it again. */
#define AV_CLOSED   1

#define AV_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define AV_NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define AV_LIKELY(x) __builtin_expect(!!(x), 1)
#define AV_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Out of memory aborts with a message: nothing limps on half-allocated. */
void *av_malloc(size_t n);
void *av_calloc(size_t n, size_t size);
void *av_realloc(void *p, size_t n);
char *av_strdup(const char *s);
/* Grows *p (*cap bytes) to hold need bytes, doubling from first (or from
 * *cap), contents kept: a growing buffer's one way to get room. */
void av_grow_to(char **p, size_t *cap, size_t need, size_t first);
static inline void av_grow(char **p, size_t *cap, size_t need, size_t first)
{
    if (AV_UNLIKELY(need > *cap))
        av_grow_to(p, cap, need, first);
}
char *av_strndup(const char *s, size_t n);
void av_oom(void) __attribute__((noreturn));

/* A JSON number as a whole number from lo to hi: 1 and *out, or 0. The
 * range is checked before the conversion (a double past int64_t, or NaN,
 * converted is undefined behaviour). */
static inline int av_whole(double d, double lo, double hi, int64_t *out)
{
    if (!(d >= lo && d <= hi))
        return 0;
    int64_t v = (int64_t)d;
    if ((double)v != d)
        return 0;
    *out = v;
    return 1;
}

/* Whether s is an HTTP token (RFC 9110 5.6.2): a field name, a method. */
int av_http_token(const char *s, size_t len);

/* Monotonic milliseconds and microseconds; wall-clock microseconds. */
uint64_t av_now_us(void);
static inline uint64_t av_now_ms(void) { return av_now_us() / 1000; }
uint64_t av_wall_us(void);

struct sockaddr_storage;
/* Parses "host:port", "[v6]:port" or "*:port" (numeric host or, when
 * resolve is set, a name). Returns 0 or AV_EINVAL. */
int av_parse_hostport(const char *s, int resolve, int passive, struct sockaddr_storage *ss,
                      unsigned *len);

/* Writers into memory the caller has sized; each returns the end of what it
 * wrote. AV_PUT_NUM_MAX bytes hold any number. */
#define AV_PUT_NUM_MAX 20
char *av_put(char *p, const char *s, size_t n);
#define AV_PUT_LIT(p, lit) av_put((p), (lit), sizeof(lit) - 1)
char *av_put_u64(char *p, uint64_t v);
char *av_put_hex(char *p, uint64_t v); /* lower case, no leading zeros */

/* Case-insensitive compare of a counted string with a C string. */
int av_streq_ci(const char *a, size_t alen, const char *b);

#endif
