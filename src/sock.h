/* The byte transport under both drivers: a non-blocking socket, in
 * plaintext or in TLS (OpenSSL). Internal.
 *
 * hiredis 0.14 has no TLS, so cachet owns the bytes: it formats commands
 * itself (resp.h), moves them through a cachet_sock, and hands what it
 * receives to a hiredis reader (reader.h). The sync connection (conn.c)
 * waits on a sock with poll() and a deadline; the async driver (async.c)
 * with libevent. Neither knows whether TLS is on. Every send is
 * send(MSG_NOSIGNAL) or goes through a BIO that uses it: a closed
 * connection never raises SIGPIPE. */
#ifndef CACHET_SOCK_H
#define CACHET_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tls.h"

/* What a sock waits for. */
enum { CACHET_SOCK_READ = 1, CACHET_SOCK_WRITE = 2 };

/* A zeroed sock is a closed one. */
typedef struct cachet_sock {
  int open; /* fd is ours */
  int fd;
  void *ssl;       /* the SSL session, NULL in plaintext */
  int ready;       /* connected (and the handshake done) */
  int handshaking; /* connected, the TLS handshake under way */
  char where[300]; /* "connect to host:port", for messages */
} cachet_sock;

/* Start connecting, without blocking, to `host`:`port`, or to `unix_path`
 * when host is NULL, with a TLS session when `tls` is set (verified against
 * `host` unless configured otherwise). Host names are resolved here, which
 * blocks (getaddrinfo). ECONN (why), ENOMEM. */
int cachet_sock_open(cachet_sock *s, const char *host, int port,
                     const char *unix_path, const cachet_tls *tls);
/* Move the connect and the handshake on: CACHET_OK when ready; a positive
 * CACHET_SOCK_* to wait for; or ECONN with why (refused, a certificate that
 * does not verify, a plaintext server ...). */
int cachet_sock_progress(cachet_sock *s);
/* Why a wait for it ran out: "no answer from the server", or, during a TLS
 * handshake, that the handshake got none (a plaintext port stays silent). */
const char *cachet_sock_silence(const cachet_sock *s);
/* Move bytes. > 0: how many; 0: nothing now, wait for *want; < 0: ECONN
 * (the detail says why; "closed by the server" for an orderly end). */
ssize_t cachet_sock_send(cachet_sock *s, const void *p, size_t n, int *want);
ssize_t cachet_sock_recv(cachet_sock *s, void *p, size_t n, int *want);
/* Wait until `want` is possible or the monotonic deadline passes:
 * CACHET_OK, or CACHET_ETIMEDOUT (no detail set). With `stop_fd` >= 0, also
 * until that descriptor turns readable: CACHET_ECONN (no detail set). */
int cachet_sock_wait(const cachet_sock *s, int want, int64_t deadline_ms,
                     int stop_fd);
/* Close it; it can be opened again. */
void cachet_sock_close(cachet_sock *s);

#endif
