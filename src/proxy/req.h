/* req.h: the protocol-neutral exchange: the client sides hand complete requests
 * in; routing, rewriting, the backend exchange and the KPI line happen here. */
#ifndef AV_REQ_H
#define AV_REQ_H

#include <stdarg.h>

#include "errclass.h"
#include "req_t.h"


av_req_t *av_req_new(av_worker_t *w, const av_client_ops_t *ops, void *client_ctx);
/* Cancels any backend exchange, writes the KPI line if not yet written, frees. */
void av_req_free(av_req_t *req);
/* Sets req->id from a valid client x-request-id, or makes one. */
void av_req_set_id(av_req_t *req);

/* The request is fully read: route it and send it to its backend. */
void av_req_run(av_req_t *req);
/* A shadow copy (route, variant and body set): sent like any request. */
void av_req_run_shadow(av_req_t *req);
/* The client is gone: cancel the backend exchange. */
void av_req_client_gone(av_req_t *req);
/* The client side has written its queue down: resume a paused backend. */
void av_req_client_drained(av_req_t *req);

/* Answers with an error in the client's dialect: OpenAI's {"error":
 * {"message", "type", "code", "request_id"}}, or on Anthropic routes (and
 * unrouted /messages paths) {"type": "error", "error": {"type", "message"},
 * "request_id"} with Anthropic's error type for the status. */
void av_req_respond_error(av_req_t *req, int status, const char *type, const char *code, const char *fmt,
                          ...) __attribute__((format(printf, 5, 6)));
/* Answers a request the client side could not read whole (400, 408, 413,
 * 431, ...) with invalid_request_error: gives it an id and "-" for a method
 * and target it never got, so the KPI line is complete. */
void av_req_reject(av_req_t *req, int status, const char *code, const char *why);
/* The last event of a stream the gateway ends with an error (the backend
 * broke off): OpenAI's data: {"error": ...}; Anthropic's event: error with
 * {"type": "error", "error": {...}}; the Responses API's event: error. */
void av_req_error_event(const av_req_t *req, struct evbuffer *out);
/* Writes the error JSON body alone (for client sides answering before a request exists). */
void av_error_json(struct evbuffer *out, const char *type, const char *code, const char *message,
                   const char *request_id);

/* What the request used, as it is billed (req->usage set): the usage's
 * tokens, or none for a backend's error answer that reported no count it
 * can be believed on. */
struct av_tokens_s;
void av_req_tokens(const av_req_t *req, struct av_tokens_s *t);

/* From the backend side. */
void av_req_backend_head(av_req_t *req, int status, const av_headers_t *hdrs, int64_t content_length);
void av_req_backend_body(av_req_t *req, const char *data, size_t len);
void av_req_backend_end(av_req_t *req);
void av_req_backend_error(av_req_t *req, const char *err);

#endif
