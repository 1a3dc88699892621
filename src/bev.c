/* bev.c: direct writes on socket bufferevents, so a response that fits the
 * socket buffer costs one writev and no epoll_ctl pair. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "av.h"

void av_bev_write_now(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    evbuffer_unfreeze(out, 1);
    int n;
    do
        n = evbuffer_write(out, bufferevent_getfd(bev));
    while (n < 0 && errno == EINTR);
    evbuffer_freeze(out, 1);
}
