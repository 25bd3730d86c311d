/* The byte transport (sock.h). */
#include "sock.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"

static int fail_errno(cachet_sock *s, int err) {
  return cachet_fail(CACHET_ECONN, "%s: %s", s->where, strerror(err));
}

static int open_unix(cachet_sock *s, const char *path) {
  snprintf(s->where, sizeof s->where, "connect to unix:%s", path);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path)
    return cachet_fail(CACHET_ECONN, "%s: the path is too long", s->where);
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return fail_errno(s, errno);
  /* A unix socket that cannot take us now says EAGAIN, and would later. */
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
      errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return fail_errno(s, e);
  }
  s->fd = fd;
  return CACHET_OK;
}

static int open_tcp(cachet_sock *s, const char *host, int port) {
  snprintf(s->where, sizeof s->where, "connect to %s:%d", host, port);
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  int g = getaddrinfo(host, ps, &hints, &ai);
  if (g != 0)
    return cachet_fail(CACHET_ECONN, "%s: %s", s->where, gai_strerror(g));
  int err = 0;
  for (struct addrinfo *p = ai; p != NULL && s->fd < 0; p = p->ai_next) {
    int fd = socket(p->ai_family, p->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    p->ai_protocol);
    if (fd < 0) {
      err = errno;
    } else if (connect(fd, p->ai_addr, p->ai_addrlen) != 0 &&
               errno != EINPROGRESS) {
      err = errno;
      close(fd);
    } else {
      int one = 1;
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      s->fd = fd;
    }
  }
  freeaddrinfo(ai);
  return s->fd >= 0 ? CACHET_OK : fail_errno(s, err);
}

int cachet_sock_open(cachet_sock *s, const char *host, int port,
                     const char *unix_path, const cachet_tls *tls) {
  memset(s, 0, sizeof *s);
  s->fd = -1;
  s->open = 1;
  int rc = host == NULL ? open_unix(s, unix_path) : open_tcp(s, host, port);
  if (rc == CACHET_OK && tls != NULL &&
      (s->ssl = cachet_tls_session(tls, s->fd, host)) == NULL)
    rc = CACHET_ENOMEM;
  if (rc != CACHET_OK)
    cachet_sock_close(s);
  return rc;
}

int cachet_sock_progress(cachet_sock *s) {
  if (s->ready)
    return CACHET_OK;
  int err = 0;
  socklen_t l = sizeof err;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0)
    err = errno;
  if (err != 0)
    return fail_errno(s, err);
  if (s->ssl != NULL) {
    int want = 0;
    s->handshaking = 1;
    int r = cachet_tls_handshake(s->ssl, s->where, &want);
    if (r <= 0)
      return r < 0 ? r : want;
  }
  s->ready = 1;
  s->handshaking = 0;
  return CACHET_OK;
}

const char *cachet_sock_silence(const cachet_sock *s) {
  return s->handshaking ? "the TLS handshake got no answer (is the port a TLS "
                          "port?)"
                        : "no answer from the server";
}

ssize_t cachet_sock_send(cachet_sock *s, const void *p, size_t n, int *want) {
  if (s->ssl != NULL)
    return cachet_tls_write(s->ssl, p, n, want);
  for (;;) {
    ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
    if (w >= 0)
      return w;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *want = CACHET_SOCK_WRITE;
      return 0;
    }
    if (errno != EINTR)
      return cachet_fail(CACHET_ECONN, "redis: %s", strerror(errno));
  }
}

ssize_t cachet_sock_recv(cachet_sock *s, void *p, size_t n, int *want) {
  if (s->ssl != NULL)
    return cachet_tls_read(s->ssl, p, n, want);
  for (;;) {
    ssize_t r = recv(s->fd, p, n, 0);
    if (r > 0)
      return r;
    if (r == 0)
      return cachet_fail(CACHET_ECONN,
                         "redis: connection closed by the server");
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *want = CACHET_SOCK_READ;
      return 0;
    }
    if (errno != EINTR)
      return cachet_fail(CACHET_ECONN, "redis: %s", strerror(errno));
  }
}

int cachet_sock_wait(const cachet_sock *s, int want, int64_t deadline_ms,
                     int stop_fd) {
  struct pollfd p[2] = {{s->fd,
                         (short)((want & CACHET_SOCK_READ ? POLLIN : 0) |
                                 (want & CACHET_SOCK_WRITE ? POLLOUT : 0)),
                         0},
                        {stop_fd, POLLIN, 0}};
  for (;;) {
    int64_t left = deadline_ms - cachet_mono_ms();
    if (left <= 0)
      return CACHET_ETIMEDOUT;
    /* poll() skips a negative fd and leaves its revents 0. */
    int r = poll(p, 2, left > 1000000 ? 1000000 : (int)left);
    if (r > 0 && p[1].revents != 0)
      return CACHET_ECONN;
    if (r > 0)
      return CACHET_OK; /* ready, or an error the next call reports */
    if (r < 0 && errno != EINTR)
      return CACHET_OK;
  }
}

void cachet_sock_close(cachet_sock *s) {
  if (!s->open)
    return;
  if (s->ssl != NULL)
    cachet_tls_session_free(s->ssl);
  if (s->fd >= 0)
    close(s->fd);
  memset(s, 0, sizeof *s);
}
