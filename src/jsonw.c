/* jsonw.c: JSON writing into caller-sized memory: no printf, no per-byte
 * buffer calls. */
#include "jsonw.h"

#include <event2/buffer.h>
#include <string.h>

#include "av.h"

char *av_jw_str(char *p, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL)
        return AV_PUT_LIT(p, "null");
    *p++ = '"';
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
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
        start = i + 1;
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

char *av_jw_ms(char *p, int64_t us)
{
    if (us < 0)
        return AV_PUT_LIT(p, "null");
    p = av_put_u64(p, (uint64_t)us / 1000);
    unsigned frac = (unsigned)((uint64_t)us % 1000);
    *p++ = '.';
    *p++ = (char)('0' + frac / 100);
    *p++ = (char)('0' + frac / 10 % 10);
    *p++ = (char)('0' + frac % 10);
    return p;
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
