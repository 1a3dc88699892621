/* log.h: the human-readable error log, levelled, to stderr by default.
 * The macro checks the level before its arguments are evaluated. */
#ifndef AV_LOG_H
#define AV_LOG_H

enum { AV_LOG_ERROR = 0, AV_LOG_WARN, AV_LOG_INFO, AV_LOG_DEBUG };

/* Set once at start-up, before any thread: process-wide and then immutable. */
extern int av_log_level;

void av_log_set_level(int level);
/* Returns the level for "error", "warn", "info", "debug", or -1. */
int av_log_level_parse(const char *name);
void av_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define AV_LOG(level, ...)                                                   \
    do {                                                                     \
        if ((level) <= av_log_level)                                         \
            av_log_write((level), __VA_ARGS__);                              \
    } while (0)
#define AV_ERR(...) AV_LOG(AV_LOG_ERROR, __VA_ARGS__)
#define AV_WARN(...) AV_LOG(AV_LOG_WARN, __VA_ARGS__)
#define AV_INFO(...) AV_LOG(AV_LOG_INFO, __VA_ARGS__)
#define AV_DEBUG(...) AV_LOG(AV_LOG_DEBUG, __VA_ARGS__)

#endif
