/* TLS: the handle's OpenSSL context and each connection's session.
 * Internal; the transport (sock.c) is the only user.
 *
 * Verified by default: the server's certificate must chain to the
 * configured CA (or the system's trust store) and name the host (or its IP
 * address). `tls_insecure` skips both, and says so everywhere it can. */
#ifndef CACHET_TLS_H
#define CACHET_TLS_H

#include <stddef.h>

#include "config.h"

typedef struct cachet_tls cachet_tls;

/* The context for cfg's TLS settings, or *out NULL when TLS is off.
 * ECONFIG naming the file OpenSSL refused (CA, certificate, key) and why;
 * ENOMEM. */
int cachet_tls_new(const cachet_config *cfg, cachet_tls **out);
void cachet_tls_free(cachet_tls *t);

/* A client session on connected socket `fd` for `host` (SNI, and the name
 * verified unless tls_server_name overrides it): an SSL *, or NULL with
 * ENOMEM set. */
void *cachet_tls_session(const cachet_tls *t, int fd, const char *host);
void cachet_tls_session_free(void *ssl);

/* Drive the handshake / read / write of `ssl`. Each returns > 0 on
 * progress (bytes, or 1 for a finished handshake); 0 when it must wait,
 * with *want CACHET_SOCK_READ or CACHET_SOCK_WRITE; or ECONN with the
 * reason in the detail (`where` leads it): the verification result for a
 * certificate, "closed by the server", or OpenSSL's words. */
int cachet_tls_handshake(void *ssl, const char *where, int *want);
long cachet_tls_read(void *ssl, void *p, size_t n, int *want);
long cachet_tls_write(void *ssl, const void *p, size_t n, int *want);

#endif
