/* policy_resp.c: a Responses API stream whose text on_chunk policies
 * rewrote tells the same text again, whole, in its closing events
 * (output_text.done, content_part.done, output_item.done, response.*): those
 * get the text the client was actually sent, so a redaction cannot be read
 * back from them (the OpenAI SDK's final response is built from them). */
#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "av.h"
#include "jscan.h"
#include "policy_int.h"

typedef struct {
    int64_t output, content, seq;
    int has_output, has_content;
} resp_idx_t;

static int on_idx(void *arg, const av_jmember_t *m)
{
    resp_idx_t *x = arg;
    if (m->type != '0')
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i < m->val_len && m->val[i] >= '0' && m->val[i] <= '9' && v < 1000000; i++)
        v = v * 10 + (m->val[i] - '0');
    if (av_jscan_key_is(m, "output_index")) {
        x->output = v;
        x->has_output = 1;
    } else if (av_jscan_key_is(m, "content_index")) {
        x->content = v;
        x->has_content = 1;
    }
    return 0;
}

/* The accumulator of one (output, content) part, made on first use; NULL
 * past AV_POL_RESP_PARTS parts (their closing events are then left alone,
 * and the text is not known to be safe: see av_pol_resp_rewrite). */
static av_pol_resp_part_t *part(av_pol_req_t *pr, int64_t output, int64_t content, int make)
{
    for (size_t i = 0; i < pr->nresp; i++)
        if (pr->resp[i].output == output && pr->resp[i].content == content)
            return &pr->resp[i];
    if (!make)
        return NULL;
    if (pr->nresp == AV_POL_RESP_PARTS) {
        pr->resp_overflow = 1;
        return NULL;
    }
    av_pol_resp_part_t *p = &pr->resp[pr->nresp++];
    p->output = output;
    p->content = content;
    p->text = evbuffer_new();
    return p;
}

void av_pol_resp_delta(av_pol_req_t *pr, const char *d, size_t dn, const char *text, size_t tn, int changed)
{
    resp_idx_t x = {0};
    size_t off;
    av_jscan_object(d, dn, on_idx, &x, &off);
    av_pol_resp_part_t *p = part(pr, x.output, x.content, 1);
    if (p != NULL)
        evbuffer_add(p->text, text, tn);
    if (changed)
        pr->resp_rewrote = 1;
}

/* Sets obj's "text" to the part's sent text, when obj is an output_text
 * part (or, part_only 0, the output_text.done event itself). */
static void set_text(av_pol_req_t *pr, cJSON *obj, int64_t output, int64_t content, int part_only, int *n)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    cJSON *text = cJSON_GetObjectItemCaseSensitive(obj, "text");
    if (!cJSON_IsString(text) ||
        (part_only && !(cJSON_IsString(type) && strcmp(type->valuestring, "output_text") == 0)))
        return;
    av_pol_resp_part_t *p = part(pr, output, content, 0);
    size_t len = p != NULL ? evbuffer_get_length(p->text) : 0;
    char *s = av_malloc(len + 1);
    if (len > 0)
        evbuffer_copyout(p->text, s, len);
    s[len] = '\0'; /* a NUL in the text ends it here: cJSON strings are C strings */
    cJSON_ReplaceItemInObjectCaseSensitive(obj, "text", cJSON_CreateString(s));
    free(s);
    (*n)++;
}

/* Every output_text part of an output item (a message's content). */
static void set_item(av_pol_req_t *pr, cJSON *item, int64_t output, int *n)
{
    cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
    int64_t ci = 0;
    for (cJSON *c = content != NULL && cJSON_IsArray(content) ? content->child : NULL; c != NULL; c = c->next, ci++)
        set_text(pr, c, output, ci, 1, n);
}

char *av_pol_resp_rewrite(av_pol_req_t *pr, const char *d, size_t dn, size_t *out_len)
{
    if (!pr->resp_rewrote)
        return NULL;
    cJSON *root = cJSON_ParseWithLength(d, dn);
    if (root == NULL)
        return NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    resp_idx_t x = {0};
    size_t off;
    av_jscan_object(d, dn, on_idx, &x, &off);
    int n = 0;
    if (strcmp(t, "response.output_text.done") == 0) {
        set_text(pr, root, x.output, x.content, 0, &n);
    } else if (strcmp(t, "response.content_part.done") == 0) {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "part");
        if (cJSON_IsObject(p))
            set_text(pr, p, x.output, x.content, 1, &n);
    } else if (strcmp(t, "response.output_item.done") == 0) {
        cJSON *item = cJSON_GetObjectItemCaseSensitive(root, "item");
        if (cJSON_IsObject(item))
            set_item(pr, item, x.output, &n);
    } else if (strcmp(t, "response.completed") == 0 || strcmp(t, "response.incomplete") == 0 ||
               strcmp(t, "response.failed") == 0) {
        cJSON *resp = cJSON_GetObjectItemCaseSensitive(root, "response");
        cJSON *output = cJSON_GetObjectItemCaseSensitive(resp, "output");
        int64_t oi = 0;
        for (cJSON *item = cJSON_IsArray(output) ? output->child : NULL; item != NULL; item = item->next, oi++)
            set_item(pr, item, oi, &n);
    }
    char *out = NULL;
    if (n > 0) {
        char *printed = cJSON_PrintUnformatted(root);
        if (printed == NULL)
            av_oom();
        *out_len = strlen(printed);
        out = av_strndup(printed, *out_len);
        cJSON_free(printed);
    }
    cJSON_Delete(root);
    return out;
}

void av_pol_resp_free(av_pol_req_t *pr)
{
    for (size_t i = 0; i < pr->nresp; i++)
        evbuffer_free(pr->resp[i].text);
    pr->nresp = 0;
}
