/* output.h: the text a model answered, read from a response as it passes:
 * OpenAI chat and completions (JSON or SSE), the Responses API and
 * Anthropic messages. Kept as a length and a running hash, enough to tell
 * whether two answers are the same (shadow comparison). */
#ifndef AV_OUTPUT_H
#define AV_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

#define AV_OUTPUT_MAX_LINE (256u * 1024u) /* an SSE line or a JSON body read whole: longer is not compared */

typedef struct av_output_s {
    int stream;          /* text/event-stream: read line by line */
    char *buf;           /* the partial line (stream) or the body (JSON) */
    size_t len, cap;
    int overflow;        /* the line or body being read is too long to keep */
    int incomplete;      /* some of the answer could not be read: its text is unknown */
    uint64_t hash;       /* FNV-1a over the answer's text */
    size_t chars;        /* its length in bytes */
} av_output_t;

void av_output_init(av_output_t *o, int stream);
void av_output_feed(av_output_t *o, const char *data, size_t len);
/* Reads what is left (a last event without its blank line, a JSON body). */
void av_output_end(av_output_t *o);
void av_output_free(av_output_t *o);

#endif
