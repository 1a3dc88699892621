/* jscan.h: reading and replacing a few top-level members of a JSON object
 * without building a tree: the request path touches `model` and a handful of
 * other fields, and a parse-and-print of the whole body costs more than the
 * proxying around it. */
#ifndef AV_JSCAN_H
#define AV_JSCAN_H

#include <stddef.h>

/* One top-level member. key and val point into the scanned text: key is the
 * raw bytes between the quotes; val is the whole value (quotes included for a
 * string). type is the value's first byte: '"', '{', '[', 't', 'f', 'n', or
 * '0' for a number. */
typedef struct {
    const char *key, *val;
    size_t key_len, val_len;
    char type;
    char key_escaped; /* the key has a backslash: compare it decoded */
} av_jmember_t;

/* Returns nonzero to stop the scan early. */
typedef int (*av_jscan_fn)(void *arg, const av_jmember_t *m);

/* Scans text as exactly one JSON object (surrounding whitespace allowed),
 * calling fn for each top-level member in order. Returns 0, or -1 with the
 * offset of the first bad byte in *err_off. Nested values are checked for
 * balanced brackets and well-formed strings and literals, not fully; the
 * backend's parser has the last word on those. Nesting deeper than 512 is an
 * error. */
int av_jscan_object(const char *text, size_t len, av_jscan_fn fn, void *arg, size_t *err_off);

/* Scans the one object text starts with (after whitespace), whatever
 * follows it; *end is the offset after its closing brace. Returns 0 or -1. */
int av_jscan_object_at(const char *text, size_t len, av_jscan_fn fn, void *arg, size_t *end);

/* Scans text (an array value, e.g. a member's val) calling fn for each
 * element in order; the element's key is NULL. Returns 0, or -1 with the
 * offset of the first bad byte in *err_off. */
int av_jscan_array(const char *text, size_t len, av_jscan_fn fn, void *arg, size_t *err_off);

/* Every key of every object in text, at any depth, in order, without
 * checking the structure around them: fn gets the raw key (between its
 * quotes) and the offset of its value. A string is skipped whole, so a quote
 * inside one is never taken for a key. Returns -1 on an unterminated or bad
 * string, 1 when fn stopped the walk (by returning nonzero), else 0. */
typedef int (*av_jscan_key_fn)(void *arg, const char *key, size_t key_len, size_t val_off);
int av_jscan_keys(const char *text, size_t len, av_jscan_key_fn fn, void *arg);

/* Every key of the one object text is, at any depth, in order, with the
 * keys on its way down: one pass, without checking the structure beyond
 * whole strings and brackets that match (a cut text fails at its end). For
 * a member at depth d (1: the top level), key[d] is its key and key[k], k < d,
 * the key holding the container at depth k + 1; an array's level has no
 * key (key[k] NULL). escaped: this key has a backslash (compare it decoded).
 * val: the offset of the value's first byte. */
#define AV_JWALK_MAX_DEPTH 16
typedef struct {
    const char *key[AV_JWALK_MAX_DEPTH + 1];
    unsigned key_len[AV_JWALK_MAX_DEPTH + 1];
    unsigned depth;
    unsigned objects; /* bit k - 1: the container at depth k is an object (the walk's own) */
    char escaped;
    size_t val;
} av_jpath_t;
/* Returns nonzero to stop the walk. */
typedef int (*av_jwalk_fn)(void *arg, const av_jpath_t *p);
/* Returns 0 when text is one object (surrounding whitespace allowed) whose
 * strings end and brackets match, 1 when fn stopped the walk, -1 when the
 * text is not such an object or nests deeper than AV_JWALK_MAX_DEPTH. */
int av_jscan_walk(const char *text, size_t len, av_jwalk_fn fn, void *arg);

/* A place in a walk to go on from in another text with the same bytes up to
 * it: a stream's events share their first hundred bytes or so (id, model,
 * the choice's opening), and the walk of the next one can begin past them. */
typedef struct {
    size_t at;     /* where the walk goes on; the texts agree on the bytes before it, and on the byte at it
                    * when the text it was taken in may not be JSON (the walk looks one byte past a string) */
    unsigned depth, objects;
    unsigned key_off[AV_JWALK_MAX_DEPTH + 1], key_len[AV_JWALK_MAX_DEPTH + 1]; /* key_len -1: no key */
} av_jwalk_mark_t;
/* From fn's p, in the text being walked: a mark before p's key (the walk
 * from it gives fn this key again), or with inside, past the bracket that
 * opens p's value (the walk from it gives fn the keys within). Returns -1
 * when inside and the value is not an object or array, or nests too deep. */
int av_jscan_mark(const char *text, const av_jpath_t *p, int inside, av_jwalk_mark_t *m);
/* The walk of text from mark m, which was taken in a text with the same
 * bytes as this one before m->at: fn sees what the walk of the whole text
 * would show it from there on, and the result is the same. */
int av_jscan_walk_from(const char *text, size_t len, const av_jwalk_mark_t *m, av_jwalk_fn fn, void *arg);
/* How many bytes a and b (n each) agree on from their start. */
size_t av_jscan_same_prefix(const char *a, const char *b, size_t n);

/* The length of the JSON string text starts with (at its opening quote),
 * both quotes included; 0 when it is not one whole, well-formed string. */
size_t av_jscan_string_len(const char *text, size_t len);

/* Decodes the JSON string escapes in s (len bytes, no quotes) into out, which
 * has room for len + 1 bytes (decoding never grows the text); NUL-terminates.
 * Returns the decoded length, or -1 on a bad escape or an escaped NUL. */
long av_jscan_unescape(const char *s, size_t len, char *out);

/* Whether member m's key is name (decoding escapes when the key has any). */
int av_jscan_key_is(const av_jmember_t *m, const char *name);

#endif
