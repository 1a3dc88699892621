/* fuzz_jsonc.c: the config file's comment blanking and key location (jsonc.c).
 * Blanking only turns comment bytes into spaces (never a newline, never a
 * byte of valid JSON), fails only at a block comment's opening, and is
 * idempotent. On any document cJSON reads, each member's key path locates
 * that key ("file:line:column" in config errors comes from it) and each
 * element's path that element; on anything else it stays in bounds.
 * fuzz-options: -max_len=4096 */
#include <cjson/cJSON.h>

#include "av.h"
#include "fuzz.h"
#include "jsonc.h"

#define MAX_NODES 256

typedef struct {
    const char *text;
    size_t len;
    int exact;   /* the text is one whose positions must be found exactly */
    av_jpath_seg_t path[16];
    size_t nodes;
} loc_t;

static void check_linecol(const char *t, size_t len, size_t off)
{
    unsigned line, col, l = 1, c = 1;
    av_jsonc_linecol(t, off, &line, &col);
    /* a byte order mark takes no column: an editor shows it as nothing */
    size_t i = off >= 3 && len >= 3 && memcmp(t, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    for (; i < off && i < len && t[i] != '\0'; i++) {
        if (t[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    FUZZ_CHECK(line == l && col == c, "offset %zu: %u:%u, counted %u:%u", off, line, col, l, c);
}

/* Every node below v, its path ending at depth d. */
static void locate_all(loc_t *x, const cJSON *v, size_t d)
{
    if (d == 16)
        return;
    size_t i = 0;
    for (const cJSON *e = v->child; e != NULL && x->nodes < MAX_NODES; e = e->next, i++) {
        x->nodes++;
        if (cJSON_IsObject(v)) {
            size_t seen = 0;
            for (const cJSON *p = v->child; p != e; p = p->next)
                seen += strcmp(p->string, e->string) == 0;
            x->path[d] = (av_jpath_seg_t){e->string, seen};
        } else {
            x->path[d] = (av_jpath_seg_t){NULL, i};
        }
        size_t off = av_jsonc_locate(x->text, x->len, x->path, d + 1);
        FUZZ_CHECK(off <= x->len, "offset %zu past the end (%zu)", off, x->len);
        check_linecol(x->text, x->len, off);
        if (x->exact) {
            if (cJSON_IsObject(v)) {
                size_t k = strlen(e->string);
                FUZZ_CHECK(off + k + 2 <= x->len && x->text[off] == '"' && memcmp(x->text + off + 1, e->string, k) == 0 &&
                               x->text[off + 1 + k] == '"',
                           "key \"%s\" (#%zu of its name, depth %zu) located at %zu: \"%.20s\"", e->string,
                           x->path[d].index, d + 1, off, x->text + off);
            } else {
                const char *end = NULL;
                cJSON *got = cJSON_ParseWithLengthOpts(x->text + off, x->len - off, &end, 0);
                FUZZ_CHECK(got != NULL && fuzz_json_same(got, e), "element %zu (depth %zu) located at %zu: \"%.20s\"", i,
                           d + 1, off, x->text + off);
                cJSON_Delete(got);
            }
        }
        locate_all(x, e, d + 1);
    }
}

/* Positions are exact where the locator and cJSON agree on what the text
 * is: no escapes (the locator compares keys as written, cJSON decoded) and
 * no whitespace beyond JSON's four (cJSON skips any byte up to 0x20). */
static int plain(const char *t, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c == '\\' || (c < 0x20 && c != '\t' && c != '\n' && c != '\r'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *orig = fuzz_strndup(data, size), *t = fuzz_strndup(data, size);
    size_t err_off = 0;
    int rc = av_jsonc_strip(t, size, &err_off);
    FUZZ_CHECK(rc == 0 || rc == AV_EINVAL, "strip returned %d", rc);
    for (size_t i = 0; i < size; i++)
        FUZZ_CHECK(t[i] == orig[i] || (t[i] == ' ' && orig[i] != '\n'), "byte %zu: 0x%02x became 0x%02x", i,
                   (unsigned char)orig[i], (unsigned char)t[i]);
    if (rc != 0) {
        FUZZ_CHECK(err_off + 1 < size && orig[err_off] == '/' && orig[err_off + 1] == '*',
                   "unterminated comment reported at %zu, which is no \"/*\"", err_off);
        check_linecol(orig, size, err_off);
    } else {
        char *again = fuzz_strndup(t, size);
        FUZZ_CHECK(av_jsonc_strip(again, size, &err_off) == 0 && memcmp(again, t, size) == 0,
                   "blanking twice differs from once");
        free(again);
    }
    /* valid JSON has no comment: blanking leaves it alone, strings included */
    cJSON *raw = cJSON_ParseWithLengthOpts(orig, size + 1, NULL, 1);
    if (raw != NULL)
        FUZZ_CHECK(rc == 0 && memcmp(t, orig, size) == 0, "blanking changed a valid JSON text");
    cJSON_Delete(raw);

    /* the loader parses the blanked text as the config does: whatever follows the value is ignored */
    cJSON *root = rc == 0 ? cJSON_ParseWithLengthOpts(t, size, NULL, 0) : NULL;
    loc_t x = {.text = t, .len = size};
    if (root != NULL) {
        x.exact = plain(t, size);
        locate_all(&x, root, 0);
        cJSON_Delete(root);
    } else {
        /* not JSON: paths the config has must still stay in bounds */
        static const av_jpath_seg_t path[] = {{"routes", 0}, {NULL, 1}, {"variants", 0}, {NULL, 0}, {"name", 1}};
        for (size_t d = 0; d <= AV_NELEMS(path); d++) {
            size_t off = av_jsonc_locate(t, size, path, d);
            FUZZ_CHECK(off <= size, "offset %zu past the end (%zu)", off, size);
            check_linecol(t, size, off);
        }
    }
    free(orig);
    free(t);
    return 0;
}
