/* TLS with OpenSSL (tls.h).
 *
 * One SSL_CTX per handle, made when the handle opens (so a bad CA file is a
 * configuration error, not a connection error), and one SSL per connection.
 * The SSL talks to the socket through a BIO of our own that sends with
 * MSG_NOSIGNAL: OpenSSL's socket BIO writes with write(2), which would
 * raise SIGPIPE on a connection the server closed. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "error.h"
#include "sock.h"

struct cachet_tls {
  SSL_CTX *ctx;
  char *server_name; /* NULL: the host connected to */
  int insecure;
  /* Held across each handshake step: OpenSSL 3.0 races on the context's
   * certificate store when two sessions of one context verify at once
   * (openssl/openssl#25202, seen by ThreadSanitizer in test_chaos). A
   * step never blocks (our BIO says "retry"), and handshakes are rare:
   * connections are long-lived. */
  pthread_mutex_t handshake_mu;
};

/* ---- A socket BIO that never raises SIGPIPE ------------------------------ */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *p, int n) {
  ssize_t w = send(*(int *)BIO_get_data(b), p, (size_t)n, MSG_NOSIGNAL);
  BIO_clear_retry_flags(b);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    BIO_set_retry_write(b);
  return (int)w;
}

static int bio_read(BIO *b, char *p, int n) {
  ssize_t r = recv(*(int *)BIO_get_data(b), p, (size_t)n, 0);
  BIO_clear_retry_flags(b);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    BIO_set_retry_read(b);
  return (int)r;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_destroy(BIO *b) {
  free(BIO_get_data(b));
  BIO_set_data(b, NULL);
  return 1;
}

static void bio_init(void) {
  BIO_METHOD *m =
      BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cachet socket");
  if (m != NULL && BIO_meth_set_write(m, bio_write) == 1 &&
      BIO_meth_set_read(m, bio_read) == 1 &&
      BIO_meth_set_ctrl(m, bio_ctrl) == 1 &&
      BIO_meth_set_destroy(m, bio_destroy) == 1)
    bio_method = m;
  else
    BIO_meth_free(m);
}

/* ---- The context --------------------------------------------------------- */

/* The server asked for a client certificate and none is configured: mark
 * the session (its app data), so that the error that follows (an alert,
 * or a reset when our first command crossed it) can say why. */
static int no_client_cert(SSL *ssl, X509 **x509, EVP_PKEY **pkey) {
  (void)x509, (void)pkey;
  SSL_set_app_data(ssl, (void *)ssl);
  return 0;
}

/* OpenSSL's reason for the last failure, or `fallback`. */
static const char *ssl_why(const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
  return r != NULL ? r : fallback;
}

static int file_fail(const char *what, const char *path) {
  int rc = cachet_fail(CACHET_ECONFIG, "%s %s: %s", what, path,
                       ssl_why("cannot be loaded"));
  ERR_clear_error();
  return rc;
}

int cachet_tls_new(const cachet_config *cfg, cachet_tls **out) {
  *out = NULL;
  if (!cfg->tls)
    return CACHET_OK;
  cachet_tls *t = calloc(1, sizeof *t);
  if (t == NULL || (cfg->tls_server_name != NULL &&
                    (t->server_name = strdup(cfg->tls_server_name)) == NULL)) {
    free(t);
    return cachet_fail(CACHET_ENOMEM, "out of memory setting up TLS");
  }
  t->insecure = cfg->tls_insecure;
  pthread_mutex_init(&t->handshake_mu, NULL);
  ERR_clear_error();
  int rc = CACHET_OK;
  if (pthread_once(&bio_once, bio_init) != 0 || bio_method == NULL ||
      (t->ctx = SSL_CTX_new(TLS_client_method())) == NULL)
    rc = cachet_fail(CACHET_ENOMEM, "TLS: %s", ssl_why("out of memory"));
  if (rc == CACHET_OK) {
    SSL_CTX_set_app_data(t->ctx, t); /* for the handshake lock */
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    /* Our output buffer may move (realloc) between a write that must be
     * retried and its retry; the bytes it holds do not. */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(t->ctx, t->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
                       NULL);
  }
  if (rc == CACHET_OK &&
      (cfg->tls_ca_file != NULL || cfg->tls_ca_dir != NULL)) {
    if (SSL_CTX_load_verify_locations(t->ctx, cfg->tls_ca_file,
                                      cfg->tls_ca_dir) != 1)
      rc = file_fail(cfg->tls_ca_file != NULL ? "TLS CA file" : "TLS CA dir",
                     cfg->tls_ca_file != NULL ? cfg->tls_ca_file
                                              : cfg->tls_ca_dir);
  } else if (rc == CACHET_OK && SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
    rc = cachet_fail(CACHET_ECONFIG, "TLS: the system trust store: %s",
                     ssl_why("cannot be loaded"));
  }
  if (rc == CACHET_OK && cfg->tls_cert == NULL)
    SSL_CTX_set_client_cert_cb(t->ctx, no_client_cert);
  if (rc == CACHET_OK && cfg->tls_cert != NULL &&
      SSL_CTX_use_certificate_chain_file(t->ctx, cfg->tls_cert) != 1)
    rc = file_fail("TLS certificate", cfg->tls_cert);
  if (rc == CACHET_OK && cfg->tls_key != NULL &&
      (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->tls_key, SSL_FILETYPE_PEM) !=
           1 ||
       SSL_CTX_check_private_key(t->ctx) != 1))
    rc = file_fail("TLS key", cfg->tls_key);
  if (rc != CACHET_OK) {
    cachet_tls_free(t);
    return rc;
  }
  *out = t;
  return CACHET_OK;
}

void cachet_tls_free(cachet_tls *t) {
  if (t == NULL)
    return;
  SSL_CTX_free(t->ctx);
  pthread_mutex_destroy(&t->handshake_mu);
  free(t->server_name);
  free(t);
}

/* ---- Sessions ------------------------------------------------------------ */

void *cachet_tls_session(const cachet_tls *t, int fd, const char *host) {
  const char *name = t->server_name != NULL ? t->server_name : host;
  unsigned char ip[16];
  int is_ip = name != NULL && (inet_pton(AF_INET, name, ip) == 1 ||
                               inet_pton(AF_INET6, name, ip) == 1);
  SSL *ssl = SSL_new(t->ctx);
  BIO *bio = ssl != NULL ? BIO_new(bio_method) : NULL;
  int *fdp = bio != NULL ? malloc(sizeof *fdp) : NULL;
  int ok = fdp != NULL;
  if (ok) {
    *fdp = fd;
    BIO_set_data(bio, fdp);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio);
    bio = NULL;
    /* SNI names a host, never an address (RFC 6066). */
    if (name != NULL && !is_ip)
      ok = SSL_set_tlsext_host_name(ssl, name) == 1;
    if (ok && name != NULL && !t->insecure)
      ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1
                 : SSL_set1_host(ssl, name) == 1;
  }
  if (!ok) {
    BIO_free(bio);
    SSL_free(ssl);
    ERR_clear_error();
    (void)cachet_fail(CACHET_ENOMEM, "out of memory starting a TLS session");
    return NULL;
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

void cachet_tls_session_free(void *ssl) { SSL_free(ssl); }

/* What became of an SSL call that returned `ret`. */
static int outcome(SSL *ssl, int ret, const char *where, int *want) {
  int e = SSL_get_error(ssl, ret);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    *want = e == SSL_ERROR_WANT_READ ? CACHET_SOCK_READ : CACHET_SOCK_WRITE;
    return 0;
  }
  long v = SSL_get_verify_result(ssl);
  int rc;
  if (SSL_get_app_data(ssl) != NULL)
    rc = cachet_fail(CACHET_ECONN,
                     "%s: the server requires a client certificate (mutual "
                     "TLS: tls_cert and tls_key) and refused the connection",
                     where);
  else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
    rc = cachet_fail(CACHET_ECONN, "%s: connection closed by the server%s",
                     where,
                     SSL_is_init_finished(ssl) ? ""
                                               : " during the TLS "
                                                 "handshake");
  else if (e == SSL_ERROR_SYSCALL)
    rc = cachet_fail(CACHET_ECONN, "%s: %s", where, strerror(errno));
  else if (v != X509_V_OK)
    rc =
        cachet_fail(CACHET_ECONN, "%s: TLS certificate verification failed: %s",
                    where, X509_verify_cert_error_string(v));
  else if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_WRONG_VERSION_NUMBER)
    rc = cachet_fail(CACHET_ECONN,
                     "%s: TLS handshake failed: the server does not speak TLS "
                     "(a plaintext port?)",
                     where);
  else
    rc = cachet_fail(CACHET_ECONN, "%s: TLS: %s", where,
                     ssl_why("handshake failed"));
  ERR_clear_error();
  return rc;
}

int cachet_tls_handshake(void *ssl, const char *where, int *want) {
  cachet_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  pthread_mutex_lock(&t->handshake_mu);
  ERR_clear_error();
  int r = SSL_connect(ssl);
  int rc = r == 1 ? 1 : outcome(ssl, r, where, want);
  pthread_mutex_unlock(&t->handshake_mu);
  return rc;
}

long cachet_tls_read(void *ssl, void *p, size_t n, int *want) {
  ERR_clear_error();
  size_t got = 0;
  int r = SSL_read_ex(ssl, p, n, &got);
  return r == 1 ? (long)got : outcome(ssl, r, "redis", want);
}

long cachet_tls_write(void *ssl, const void *p, size_t n, int *want) {
  ERR_clear_error();
  size_t put = 0;
  int r = SSL_write_ex(ssl, p, n, &put);
  return r == 1 ? (long)put : outcome(ssl, r, "redis", want);
}
