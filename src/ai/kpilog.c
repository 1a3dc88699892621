/* kpilog.c: line formatting and the writer thread. Appends move bytes into a
 * shared evbuffer under a mutex; the writer swaps it out and writes it whole. */
#include "kpilog.h"


#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "av.h"
#include "jsonw.h"
#include "log.h"
#include "mcache.h"
#include "loop.h"

struct av_kpilog_s {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    struct evbuffer *pending;
    char *path;
    int fd, owns_fd, stop, reopen;
    uint64_t lines;
};

/* "YYYY-MM-DDTHH:MM:SS" of a second; the last one is kept per thread, since
 * consecutive lines almost always share it. */
static const char *utc_second(time_t secs)
{
    static __thread time_t last = (time_t)-1;
    static __thread char text[32];
    if (secs != last) {
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
        last = secs;
    }
    return text;
}

static size_t cstrlen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* ,"key": and a string or null */
#define KEY_STR(p, key, s, n) av_jw_str(AV_PUT_LIT((p), ",\"" key "\":"), (s), (n))

void av_kpi_format(struct evbuffer *out, const av_kpi_rec_t *r)
{
    size_t lens[10] = {cstrlen(r->request_id),   cstrlen(r->route),  cstrlen(r->variant),
                       cstrlen(r->backend),      cstrlen(r->model),  cstrlen(r->error),
                       cstrlen(r->client_model), cstrlen(r->assign), cstrlen(r->prompt_hash),
                       cstrlen(r->finish_reason)};
    size_t mlen = cstrlen(r->method);
    size_t room = 1024 + AV_JW_STR_MAX(r->path_len) + AV_JW_STR_MAX(mlen);
    for (size_t i = 0; i < 10; i++)
        room += AV_JW_STR_MAX(lens[i]);
    for (size_t i = 0; i < r->nverdicts; i++)
        room += 40 + AV_JW_STR_MAX(strlen(r->verdicts[i].policy)) + AV_JW_STR_MAX(strlen(r->verdicts[i].action)) +
                AV_JW_STR_MAX(strlen(r->verdicts[i].rule));
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)room, &v, 1) != 1)
        av_oom();
    char *p = v.iov_base;
    unsigned ms = (unsigned)(r->time_us / 1000u % 1000u);
    p = AV_PUT_LIT(p, "{\"time\":\"");
    p = av_put(p, utc_second((time_t)(r->time_us / 1000000u)), 19);
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    p = AV_PUT_LIT(p, "Z\"");
    p = KEY_STR(p, "request_id", r->request_id, lens[0]);
    p = KEY_STR(p, "route", r->route, lens[1]);
    p = KEY_STR(p, "variant", r->variant, lens[2]);
    p = KEY_STR(p, "assign", r->assign, lens[7]);
    p = r->shadow ? AV_PUT_LIT(p, ",\"shadow\":true") : AV_PUT_LIT(p, ",\"shadow\":false");
    p = av_put_u64(AV_PUT_LIT(p, ",\"generation\":"), r->generation);
    p = KEY_STR(p, "backend", r->backend, lens[3]);
    p = KEY_STR(p, "client_model", r->client_model, lens[6]);
    p = KEY_STR(p, "model", r->model, lens[4]);
    p = KEY_STR(p, "prompt_hash", r->prompt_hash, lens[8]);
    p = KEY_STR(p, "method", r->method, mlen);
    p = KEY_STR(p, "path", r->path, r->path_len);
    p = av_jw_i64(AV_PUT_LIT(p, ",\"status\":"), r->status);
    p = r->stream ? AV_PUT_LIT(p, ",\"stream\":true") : AV_PUT_LIT(p, ",\"stream\":false");
    p = av_jw_ms(AV_PUT_LIT(p, ",\"latency_ms\":"), r->latency_us);
    p = av_jw_ms(AV_PUT_LIT(p, ",\"first_byte_ms\":"), r->first_byte_us);
    p = av_jw_ms(AV_PUT_LIT(p, ",\"ttft_ms\":"), r->ttft_us);
    p = av_jw_ms(AV_PUT_LIT(p, ",\"inter_token_p50_ms\":"), r->inter_token_p50_us);
    p = av_jw_fixed(AV_PUT_LIT(p, ",\"output_tokens_per_s\":"), r->output_tps_milli, 3);
    p = av_jw_count(AV_PUT_LIT(p, ",\"input_tokens\":"), r->input_tokens);
    p = av_jw_count(AV_PUT_LIT(p, ",\"output_tokens\":"), r->output_tokens);
    p = av_jw_count(AV_PUT_LIT(p, ",\"cached_input_tokens\":"), r->cached_tokens);
    p = av_jw_count(AV_PUT_LIT(p, ",\"cache_write_tokens\":"), r->cache_write_tokens);
    p = av_jw_count(AV_PUT_LIT(p, ",\"reasoning_tokens\":"), r->reasoning_tokens);
    p = r->usage_estimated ? AV_PUT_LIT(p, ",\"usage_estimated\":true") : AV_PUT_LIT(p, ",\"usage_estimated\":false");
    p = av_jw_fixed(AV_PUT_LIT(p, ",\"cost_usd\":"), r->cost_nano, 9);
    p = KEY_STR(p, "finish_reason", r->finish_reason, lens[9]);
    p = av_jw_count(AV_PUT_LIT(p, ",\"tool_calls\":"), r->tool_calls);
    p = av_put_u64(AV_PUT_LIT(p, ",\"bytes_in\":"), r->bytes_in);
    p = av_put_u64(AV_PUT_LIT(p, ",\"bytes_out\":"), r->bytes_out);
    p = AV_PUT_LIT(p, ",\"policy\":[");
    for (size_t i = 0; i < r->nverdicts; i++) {
        const av_verdict_t *vd = &r->verdicts[i];
        if (i > 0)
            *p++ = ',';
        p = av_jw_str(AV_PUT_LIT(p, "{\"policy\":"), vd->policy, strlen(vd->policy));
        p = KEY_STR(p, "action", vd->action, strlen(vd->action));
        p = KEY_STR(p, "rule", vd->rule, strlen(vd->rule));
        *p++ = '}';
    }
    *p++ = ']';
    p = av_jw_i64(AV_PUT_LIT(p, ",\"policy_errors\":"), r->policy_errors);
    p = KEY_STR(p, "error", r->error, lens[5]);
    p = AV_PUT_LIT(p, "}\n");
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
}

void av_audit_begin(struct evbuffer *out, const char *type)
{
    uint64_t us = av_wall_us();
    evbuffer_add_printf(out, "{\"time\":\"%s.%03uZ\",\"type\":", utc_second((time_t)(us / 1000000u)),
                        (unsigned)(us / 1000u % 1000u));
    av_json_str(out, type, strlen(type));
}

void av_audit_str(struct evbuffer *out, const char *key, const char *value)
{
    evbuffer_add_printf(out, ",\"%s\":", key);
    if (value == NULL)
        evbuffer_add(out, "null", 4);
    else
        av_json_str(out, value, strlen(value));
}

void av_audit_end(struct evbuffer *out)
{
    evbuffer_add(out, "}\n", 2);
}

static int write_all(int fd, struct evbuffer *buf)
{
    while (evbuffer_get_length(buf) > 0) {
        int n = evbuffer_write(buf, fd);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
    }
    return 0;
}

static int open_path(const char *path)
{
    if (strcmp(path, "-") == 0)
        return 1;
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void *writer(void *arg)
{
    av_kpilog_t *l = arg;
    struct evbuffer *batch = evbuffer_new();
    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (evbuffer_get_length(l->pending) == 0 && !l->stop && !l->reopen)
            pthread_cond_wait(&l->cond, &l->lock);
        if (l->reopen) {
            l->reopen = 0;
            int fd = open_path(l->path);
            if (fd < 0) {
                AV_ERR("kpi log %s: cannot reopen: %s; still writing to the old file", l->path,
                       strerror(errno));
            } else {
                close(l->fd);
                l->fd = fd;
            }
        }
        if (evbuffer_get_length(l->pending) == 0 && l->stop)
            break;
        evbuffer_add_buffer(batch, l->pending);
        int fd = l->fd;
        pthread_mutex_unlock(&l->lock);
        if (write_all(fd, batch) != 0) {
            AV_ERR("kpi log %s: write failed: %s; %zu bytes dropped", l->path, strerror(errno),
                   evbuffer_get_length(batch));
            evbuffer_drain(batch, evbuffer_get_length(batch));
        }
        av_mc_thread_release(); /* the workers' chains it freed: this thread allocates none */
        pthread_mutex_lock(&l->lock);
    }
    pthread_mutex_unlock(&l->lock);
    evbuffer_free(batch);
    av_mc_thread_release();
    return NULL;
}

av_kpilog_t *av_kpilog_open(const char *path, char *err, size_t errlen)
{
    int fd = open_path(path);
    if (fd < 0) {
        snprintf(err, errlen, "kpi log %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    av_kpilog_t *l = av_calloc(1, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->pending = evbuffer_new();
    l->path = av_strdup(path);
    l->fd = fd;
    l->owns_fd = strcmp(path, "-") != 0;
    if (pthread_create(&l->thread, NULL, writer, l) != 0) {
        snprintf(err, errlen, "kpi log: cannot start the writer thread");
        if (l->owns_fd)
            close(fd);
        evbuffer_free(l->pending);
        free(l->path);
        free(l);
        return NULL;
    }
    return l;
}

void av_kpilog_append(av_kpilog_t *l, struct evbuffer *lines, size_t nlines)
{
    pthread_mutex_lock(&l->lock);
    int was_empty = evbuffer_get_length(l->pending) == 0;
    evbuffer_add_buffer(l->pending, lines);
    l->lines += nlines;
    if (was_empty)
        pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

int av_kpilog_reopen(av_kpilog_t *l)
{
    if (!l->owns_fd)
        return 0;
    /* the writer swaps the file between batches, so no write hits a closed fd */
    pthread_mutex_lock(&l->lock);
    l->reopen = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    return 0;
}

uint64_t av_kpilog_lines(av_kpilog_t *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->lines;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void av_kpilog_close(av_kpilog_t *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    if (l->owns_fd) {
        fsync(l->fd);
        close(l->fd);
    }
    evbuffer_free(l->pending);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->cond);
    free(l->path);
    free(l);
}

#define AV_KPI_BATCH_BYTES (64u * 1024u)

void av_kpi_flush_batch(av_worker_t *w)
{
    if (w->kpi_batch_lines > 0)
        av_kpilog_append(w->kpilog, w->kpi_batch, w->kpi_batch_lines);
    w->kpi_batch_lines = 0;
}

void av_kpi_queue(av_worker_t *w, const av_kpi_rec_t *r)
{
    av_kpi_format(w->kpi_batch, r);
    w->kpi_batch_lines++;
    if (evbuffer_get_length(w->kpi_batch) >= AV_KPI_BATCH_BYTES)
        av_kpi_flush_batch(w);
}

void av_kpi_queue_raw(av_worker_t *w, const char *line, size_t len)
{
    evbuffer_add(w->kpi_batch, line, len);
    w->kpi_batch_lines++;
    if (evbuffer_get_length(w->kpi_batch) >= AV_KPI_BATCH_BYTES)
        av_kpi_flush_batch(w);
}
