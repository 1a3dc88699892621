/* jsonw.c: JSON string escaping straight into an evbuffer, copying runs of
 * plain bytes whole. */
#include "jsonw.h"

#include <event2/buffer.h>

void av_json_str(struct evbuffer *out, const char *s, size_t len)
{
    if (s == NULL) {
        evbuffer_add(out, "null", 4);
        return;
    }
    evbuffer_add(out, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        evbuffer_add(out, s + start, i - start);
        if (c == '"' || c == '\\')
            evbuffer_add_printf(out, "\\%c", c);
        else if (c == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add_printf(out, "\\u%04x", c);
        start = i + 1;
    }
    evbuffer_add(out, s + start, len - start);
    evbuffer_add(out, "\"", 1);
}
