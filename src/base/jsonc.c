/* jsonc.c: comment blanking and key-path location over JSON text.
 * The locator skips values structurally; cJSON has already validated the text. */
#include "jsonc.h"

#include <string.h>

#include "av.h"

int av_jsonc_strip(char *t, size_t len, size_t *err_off)
{
    size_t i = 0;
    while (i < len) {
        char c = t[i];
        if (c == '"') {
            for (i++; i < len && t[i] != '"'; i++)
                if (t[i] == '\\' && i + 1 < len)
                    i++;
            i++;
        } else if (c == '/' && i + 1 < len && t[i + 1] == '/') {
            while (i < len && t[i] != '\n')
                t[i++] = ' ';
        } else if (c == '/' && i + 1 < len && t[i + 1] == '*') {
            size_t start = i;
            t[i++] = ' ';
            t[i++] = ' ';
            while (i < len && !(t[i] == '*' && i + 1 < len && t[i + 1] == '/')) {
                if (t[i] != '\n')
                    t[i] = ' ';
                i++;
            }
            if (i >= len) {
                *err_off = start;
                return AV_EINVAL;
            }
            t[i++] = ' ';
            t[i++] = ' ';
        } else {
            i++;
        }
    }
    return 0;
}

static size_t skip_ws(const char *t, size_t len, size_t i)
{
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

static size_t skip_string(const char *t, size_t len, size_t i)
{
    for (i++; i < len && t[i] != '"'; i++)
        if (t[i] == '\\')
            i++;
    return i < len ? i + 1 : len;
}

static size_t skip_value(const char *t, size_t len, size_t i)
{
    i = skip_ws(t, len, i);
    if (i >= len)
        return len;
    if (t[i] == '"')
        return skip_string(t, len, i);
    if (t[i] == '{' || t[i] == '[') {
        int depth = 0;
        while (i < len) {
            if (t[i] == '"') {
                i = skip_string(t, len, i);
                continue;
            }
            if (t[i] == '{' || t[i] == '[')
                depth++;
            else if ((t[i] == '}' || t[i] == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return len;
    }
    while (i < len && t[i] != ',' && t[i] != '}' && t[i] != ']' && t[i] != ' ' && t[i] != '\n' &&
           t[i] != '\r' && t[i] != '\t')
        i++;
    return i;
}

/* A UTF-8 byte order mark's length at t (cJSON skips one too), or 0. */
static size_t bom(const char *t, size_t len)
{
    return len >= 3 && memcmp(t, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
}

size_t av_jsonc_locate(const char *t, size_t len, const av_jpath_seg_t *path, size_t depth)
{
    size_t i = skip_ws(t, len, bom(t, len));
    for (size_t d = 0; d < depth; d++) {
        const av_jpath_seg_t *s = &path[d];
        if (i >= len)
            return len;
        if (s->key != NULL) {
            if (t[i] != '{')
                return i;
            size_t obj = i, klen = strlen(s->key), seen = 0;
            int found = 0;
            i = skip_ws(t, len, i + 1);
            while (i < len && t[i] == '"') {
                size_t kstart = i, kend = skip_string(t, len, i);
                i = skip_ws(t, len, kend);
                if (i < len && t[i] == ':')
                    i = skip_ws(t, len, i + 1);
                if (kend - kstart - 2 == klen && memcmp(t + kstart + 1, s->key, klen) == 0 &&
                    seen++ == s->index) {
                    if (d + 1 == depth)
                        return kstart;
                    found = 1;
                    break;
                }
                i = skip_ws(t, len, skip_value(t, len, i));
                if (i < len && t[i] == ',')
                    i = skip_ws(t, len, i + 1);
            }
            if (!found)
                return obj;
        } else {
            if (t[i] != '[')
                return i;
            size_t arr = i;
            i = skip_ws(t, len, i + 1);
            for (size_t k = 0; k < s->index; k++) {
                i = skip_ws(t, len, skip_value(t, len, i));
                if (i >= len || t[i] != ',')
                    return arr;
                i = skip_ws(t, len, i + 1);
            }
        }
    }
    return i;
}

void av_jsonc_linecol(const char *t, size_t off, unsigned *line, unsigned *col)
{
    unsigned l = 1, c = 1;
    size_t start = off >= 3 ? bom(t, off) : 0; /* an editor shows the mark as nothing */
    for (size_t i = start; i < off && t[i] != '\0'; i++) {
        if (t[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}
