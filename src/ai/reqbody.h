/* reqbody.h: the JSON request body on its way to the backend: one scan of
 * its top level finds the model, the sticky-key fields and the places a
 * variant changes (model, params, system prompt), and one pass writes the
 * edited body; everything else goes through byte for byte. */
#ifndef AV_REQBODY_H
#define AV_REQBODY_H

#include "config.h"
#include "jscan.h"
#include "req_t.h"

#define AV_BODY_MAX_PARAMS AV_VARIANT_MAX_PARAMS

typedef struct {
    const char *text;      /* the body, contiguous; NULL when it is not a JSON object */
    size_t len, first;     /* first: offset of its opening brace */
    av_jmember_t model[4]; /* every top-level "model": duplicates are all replaced */
    size_t n_model, n_members;
    int too_many;
    const av_route_t *route;
    /* the route's body sticky sources: the top-level member each starts from */
    av_jmember_t sticky_top[AV_STICKY_MAX];
    int sticky_found[AV_STICKY_MAX];
    /* members a system prompt goes into: messages, instructions, system */
    av_jmember_t messages, instructions, system;
    int has_messages, has_instructions, has_system;
    /* streaming: whether usage is asked for */
    av_jmember_t stream_options;
    int stream, has_stream_options;
    char error[128];                     /* why the scan failed */
} av_body_t;

/* Scans req->body when it is a JSON object; sets req->client_model.
 * Returns 0, or -1 with req->error AV_ERR_INVALID_JSON and the reason in
 * b->error (the caller answers 400 invalid_json). */
int av_body_scan(av_req_t *req, av_body_t *b);
/* The value of the route's k-th body sticky source (a string, decoded, or a
 * number), or NULL. */
const char *av_body_sticky_key(av_req_t *req, const av_body_t *b, size_t k, size_t *len);
/* The dialect the request speaks: the route's, or by its path (also before
 * a route is known: an Anthropic SDK posts to .../messages). */
int av_body_dialect(const av_req_t *req);
/* Whether the request only counts tokens (Anthropic's messages/count_tokens,
 * OpenAI's responses/input_tokens): nothing is generated, nothing billed. */
int av_body_counts_only(const av_req_t *req);
/* Writes req->variant's model, params and system prompt into the body
 * (req->body is replaced when anything changes); sets req->model. For an
 * OpenAI-style stream that does not ask for usage, asks for it (unless the
 * backend's stream_usage is off) and sets req->strip_usage, so the usage
 * chunk is read and not passed on. Returns 0, or AV_ELIMIT when the body
 * repeats the members the variant sets past what one pass edits (64
 * copies): nothing is changed, and the request must be refused, or a copy
 * left unedited would keep the client's value. */
int av_body_rewrite(av_req_t *req, const av_body_t *b);

#endif
