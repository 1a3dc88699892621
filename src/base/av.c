/* av.c: checked allocation and clocks shared by every module.
 * Allocation failure is fatal by design (see STYLE.md). */
#include "av.h"

#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

void av_oom(void)
{
    static const char msg[] = "aviary: out of memory\n";
    ssize_t r = write(2, msg, sizeof(msg) - 1);
    (void)r;
    abort();
}

void *av_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (AV_UNLIKELY(p == NULL))
        av_oom();
    return p;
}

void *av_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (AV_UNLIKELY(p == NULL))
        av_oom();
    return p;
}

void *av_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (AV_UNLIKELY(q == NULL))
        av_oom();
    return q;
}

void av_grow_to(char **p, size_t *cap, size_t need, size_t first)
{
    size_t c = *cap ? *cap : first;
    while (c < need)
        c *= 2;
    *p = av_realloc(*p, c);
    *cap = c;
}

char *av_strndup(const char *s, size_t n)
{
    char *p = av_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *av_strdup(const char *s)
{
    return av_strndup(s, strlen(s));
}

uint64_t av_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t av_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

char *av_put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

char *av_put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

char *av_put_hex(char *p, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

int av_streq_ci(const char *a, size_t alen, const char *b)
{
    /* byte by byte: most names differ at their first byte, and b's end is its NUL */
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (y == 0 || (x != y && ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 'z' - 'a')))
            return 0; /* b ended, or the bytes differ other than by a letter's case */
    }
    return b[alen] == '\0';
}

int av_parse_hostport(const char *s, int resolve, int passive, struct sockaddr_storage *ss,
                      unsigned *len)
{
    char host[256];
    const char *colon, *hstart = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return AV_EINVAL;
        hstart = s + 1;
        hlen = (size_t)(end - hstart);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return AV_EINVAL;
        hlen = (size_t)(colon - s);
    }
    if (hlen >= sizeof(host))
        return AV_EINVAL;
    memcpy(host, hstart, hlen);
    host[hlen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
        return AV_EINVAL;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (resolve ? 0 : AI_NUMERICHOST) | (passive ? AI_PASSIVE : 0);
    const char *node = (hlen == 0 || strcmp(host, "*") == 0) ? NULL : host;
    if (node == NULL && !passive)
        return AV_EINVAL;
    if (getaddrinfo(node, colon + 1, &hints, &res) != 0 || res == NULL)
        return AV_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1,
    ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1,
    ['a' ... 'z'] = 1,
};

int av_http_token(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!tchar[(unsigned char)s[i]])
            return 0;
    return 1;
}
