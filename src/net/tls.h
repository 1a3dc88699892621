/* tls.h: OpenSSL contexts: for client-facing listeners (certificate and key
 * from PEM files, ALPN choosing h2 or http/1.1) and for connections to
 * backends (chain and name verified against the system store or a CA file).
 * TLS 1.2 or later. A context belongs to one config generation, so SIGHUP
 * picks up renewed certificates while connections made before keep theirs. */
#ifndef AV_TLS_H
#define AV_TLS_H

#include <stddef.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

/* Loads cert (a PEM chain, leaf first) and key, checks that they match.
 * With h2, ALPN prefers "h2" over "http/1.1". Returns NULL with the reason
 * (OpenSSL's included) in err. */
SSL_CTX *av_tls_server_ctx(const char *cert, const char *key, int h2, char *err, size_t errlen);
/* A context for connecting to backends. verify: check the chain against
 * ca_file (a PEM bundle) or, when NULL, the system store; the name is checked
 * per connection (av_sock_tls_client). alpn: "h2" or "http/1.1". Returns
 * NULL with the reason in err. */
SSL_CTX *av_tls_client_ctx(const char *ca_file, int verify, const char *alpn, char *err, size_t errlen);
void av_tls_ctx_free(SSL_CTX *ctx);
/* Whether the handshake agreed on h2. */
int av_tls_is_h2(SSL *ssl);
/* The last OpenSSL error of this thread as text (and clears the queue). */
const char *av_tls_error(char *buf, size_t len);

#endif
