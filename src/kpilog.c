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

struct av_kpilog_s {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    struct evbuffer *pending;
    char *path;
    int fd, owns_fd, stop, reopen;
    uint64_t lines;
};

static void key_str(struct evbuffer *out, const char *key, const char *s)
{
    evbuffer_add_printf(out, ",\"%s\":", key);
    av_json_str(out, s, s ? strlen(s) : 0);
}

static void key_ms(struct evbuffer *out, const char *key, int64_t us)
{
    if (us < 0)
        evbuffer_add_printf(out, ",\"%s\":null", key);
    else
        evbuffer_add_printf(out, ",\"%s\":%lld.%03lld", key, (long long)(us / 1000), (long long)(us % 1000));
}

void av_kpi_format(struct evbuffer *out, const av_kpi_rec_t *r)
{
    time_t secs = (time_t)(r->time_us / 1000000u);
    struct tm tm;
    char ts[32];
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    evbuffer_add_printf(out, "{\"time\":\"%s.%03uZ\"", ts, (unsigned)(r->time_us / 1000u % 1000u));
    key_str(out, "request_id", r->request_id);
    key_str(out, "route", r->route);
    key_str(out, "variant", r->variant);
    evbuffer_add_printf(out, ",\"generation\":%llu", (unsigned long long)r->generation);
    key_str(out, "backend", r->backend);
    key_str(out, "model", r->model);
    key_str(out, "method", r->method);
    evbuffer_add(out, ",\"path\":", 8);
    av_json_str(out, r->path, r->path_len);
    evbuffer_add_printf(out, ",\"status\":%d,\"stream\":%s", r->status, r->stream ? "true" : "false");
    key_ms(out, "latency_ms", r->latency_us);
    key_ms(out, "ttft_ms", r->ttft_us);
    evbuffer_add_printf(out, ",\"bytes_in\":%llu,\"bytes_out\":%llu", (unsigned long long)r->bytes_in,
                        (unsigned long long)r->bytes_out);
    key_str(out, "error", r->error);
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
        pthread_mutex_lock(&l->lock);
    }
    pthread_mutex_unlock(&l->lock);
    evbuffer_free(batch);
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

void av_kpilog_append(av_kpilog_t *l, struct evbuffer *line)
{
    pthread_mutex_lock(&l->lock);
    int was_empty = evbuffer_get_length(l->pending) == 0;
    evbuffer_add_buffer(l->pending, line);
    l->lines++;
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
