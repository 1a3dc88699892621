/* log.c: error log lines "2026-11-25T10:00:00.123Z warn message" on stderr.
 * One write(2) per line so lines from threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "av.h"

int av_log_level = AV_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void av_log_set_level(int level)
{
    av_log_level = level;
}

int av_log_level_parse(const char *name)
{
    for (size_t i = 0; i < AV_NELEMS(level_names); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

void av_log_write(int level, const char *fmt, ...)
{
    char line[2048];
    uint64_t us = av_wall_us();
    time_t secs = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03uZ %s ",
                  (unsigned)(us / 1000u % 1000u), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t r = write(2, line, (size_t)n);
    (void)r;
}
