/* jsonc.h: JSON with comments, for hand-edited config files: blank out
 * comments in place, and find where a key path sits for error messages. */
#ifndef AV_JSONC_H
#define AV_JSONC_H

#include <stddef.h>

/* One step of a path: a member key (key != NULL; index counts earlier
 * members of the same name, for duplicates) or an array index. */
typedef struct {
    const char *key;
    size_t index;
} av_jpath_seg_t;

/* Replaces // and block comments outside strings with spaces, keeping
 * newlines so offsets, lines and columns stay where they were.
 * Returns 0, or AV_EINVAL with *err_off at an unterminated comment. */
int av_jsonc_strip(char *text, size_t len, size_t *err_off);

/* Offset of the deepest part of the path found in text: the member's key,
 * the array element, or the enclosing value where the path stops. */
size_t av_jsonc_locate(const char *text, size_t len, const av_jpath_seg_t *path, size_t depth);

/* 1-based line and column of an offset. */
void av_jsonc_linecol(const char *text, size_t off, unsigned *line, unsigned *col);

#endif
