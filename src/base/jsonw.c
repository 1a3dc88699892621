/* jsonw.c: JSON writing into caller-sized memory: no printf, no per-byte
 * buffer calls. */
#include "jsonw.h"

#include <event2/buffer.h>
#include <string.h>

#include "av.h"

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t k;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < k || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return k;
}

char *av_jw_str(char *p, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL)
        return AV_PUT_LIT(p, "null");
    *p++ = '"';
    size_t start = 0, i = 0;
    /* eight bytes at a time past those that need no escape nor a UTF-8 check (most of them) */
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    while (i + 8 <= len) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\'), d = v ^ (ones * 0x7f);
        if ((((q - ones) & ~q) | ((b - ones) & ~b) | ((d - ones) & ~d) | ((v - ones * 0x20) & ~v) | v) & high)
            break;
        i += 8;
    }
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t k = utf8_len((const unsigned char *)s + i, len - i);
            if (k > 0) {
                i += k;
                continue;
            }
            /* a byte that is not UTF-8 (a client's model name, a path): U+FFFD, so the line stays valid JSON */
            p = av_put(p, s + start, i - start);
            p = AV_PUT_LIT(p, "\\ufffd");
            start = ++i;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
            i++;
            continue;
        }
        p = av_put(p, s + start, i - start);
        *p++ = '\\';
        if (c == '"' || c == '\\') {
            *p++ = (char)c;
        } else if (c == '\n') {
            *p++ = 'n';
        } else {
            p = AV_PUT_LIT(p, "u00");
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
        start = ++i;
    }
    p = av_put(p, s + start, len - start);
    *p++ = '"';
    return p;
}

char *av_jw_i64(char *p, int64_t v)
{
    if (v >= 0)
        return av_put_u64(p, (uint64_t)v);
    *p++ = '-';
    return av_put_u64(p, (uint64_t)0 - (uint64_t)v);
}

char *av_jw_fixed(char *p, int64_t v, unsigned decimals)
{
    if (v < 0)
        return AV_PUT_LIT(p, "null");
    uint64_t scale = 1;
    for (unsigned i = 0; i < decimals; i++)
        scale *= 10;
    p = av_put_u64(p, (uint64_t)v / scale);
    uint64_t frac = (uint64_t)v % scale;
    *p++ = '.';
    for (unsigned i = decimals; i-- > 0;) {
        p[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    return p + decimals;
}

char *av_jw_ms(char *p, int64_t us)
{
    return av_jw_fixed(p, us, 3);
}

char *av_jw_count(char *p, int64_t v)
{
    return v < 0 ? AV_PUT_LIT(p, "null") : av_put_u64(p, (uint64_t)v);
}

void av_json_str(struct evbuffer *out, const char *s, size_t len)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)AV_JW_STR_MAX(len), &v, 1) != 1)
        av_oom();
    char *end = av_jw_str(v.iov_base, s, len);
    v.iov_len = (size_t)(end - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
}
