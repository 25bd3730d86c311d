/* The relay of relay.h: one thread, poll(2) over the listening socket and
 * every pair of sockets. Blocking writes are fine here: a test's traffic
 * is small, and a silenced direction is read and dropped, never queued. */
#define _GNU_SOURCE /* accept4 */
#include "relay.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RELAY_PAIRS 64

typedef struct pair {
  int client, server;
  int silent; /* the server's bytes are dropped */
} pair;

struct test_relay {
  pthread_t thread;
  pthread_mutex_t mu;
  int lfd, wake[2];
  char path[320], target[300];
  pair p[RELAY_PAIRS];
  int np;
};

static int unix_socket(const char *path, int listening) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof a.sun_path)
    return -1;
  strcpy(a.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int rc = listening ? bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                           listen(fd, 64) == 0
                     : connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (!rc) {
    close(fd);
    return -1;
  }
  return fd;
}

static void drop_pair(test_relay *r, int i) {
  close(r->p[i].client);
  close(r->p[i].server);
  r->p[i] = r->p[--r->np];
}

/* Move what `from` has to `to` (or nowhere, when silent); 0 once closed. */
static int pass(int from, int to, int silent) {
  char buf[16384];
  ssize_t n = read(from, buf, sizeof buf);
  if (n < 0 && errno == EINTR)
    return 1;
  if (n <= 0)
    return 0;
  if (silent)
    return 1;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return 0;
    off += w;
  }
  return 1;
}

static void *relay_run(void *arg) {
  test_relay *r = arg;
  for (;;) {
    struct pollfd fds[2 + 2 * RELAY_PAIRS];
    pthread_mutex_lock(&r->mu);
    int np = r->np;
    fds[0] = (struct pollfd){r->wake[0], POLLIN, 0};
    fds[1] = (struct pollfd){r->lfd, POLLIN, 0};
    for (int i = 0; i < np; i++) {
      fds[2 + 2 * i] = (struct pollfd){r->p[i].client, POLLIN, 0};
      fds[3 + 2 * i] = (struct pollfd){r->p[i].server, POLLIN, 0};
    }
    pthread_mutex_unlock(&r->mu);
    if (poll(fds, (nfds_t)(2 + 2 * np), -1) < 0)
      continue;
    if (fds[0].revents != 0)
      return NULL;
    pthread_mutex_lock(&r->mu);
    /* Backwards, so that dropping a pair (the last moves into its place)
     * leaves the ones still to visit where fds says. */
    for (int i = np - 1; i >= 0; i--) {
      short cev = fds[2 + 2 * i].revents, sev = fds[3 + 2 * i].revents;
      if ((cev && !pass(r->p[i].client, r->p[i].server, 0)) ||
          (sev && !pass(r->p[i].server, r->p[i].client, r->p[i].silent)))
        drop_pair(r, i);
    }
    if (fds[1].revents & POLLIN) {
      int c = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
      int s = c >= 0 ? unix_socket(r->target, 0) : -1;
      if (s >= 0 && r->np < RELAY_PAIRS) {
        r->p[r->np++] = (pair){c, s, 0};
      } else {
        if (c >= 0)
          close(c);
        if (s >= 0)
          close(s);
      }
    }
    pthread_mutex_unlock(&r->mu);
  }
}

test_relay *test_relay_start(const test_server *s) {
  test_relay *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  pthread_mutex_init(&r->mu, NULL);
  snprintf(r->target, sizeof r->target, "%s", s->sock);
  snprintf(r->path, sizeof r->path, "%s/relay.sock", s->dir);
  unlink(r->path);
  r->lfd = unix_socket(r->path, 1);
  if (r->lfd < 0 || pipe(r->wake) != 0 ||
      pthread_create(&r->thread, NULL, relay_run, r) != 0) {
    fprintf(stderr, "relay: cannot start on %s: %s\n", r->path,
            strerror(errno));
    if (r->lfd >= 0)
      close(r->lfd);
    free(r);
    return NULL;
  }
  return r;
}

const char *test_relay_path(const test_relay *r) { return r->path; }

int test_relay_silence(test_relay *r) {
  pthread_mutex_lock(&r->mu);
  for (int i = 0; i < r->np; i++)
    r->p[i].silent = 1;
  int n = r->np;
  pthread_mutex_unlock(&r->mu);
  return n;
}

void test_relay_stop(test_relay *r) {
  if (r == NULL)
    return;
  if (write(r->wake[1], "q", 1) != 1)
    abort();
  pthread_join(r->thread, NULL);
  while (r->np > 0)
    drop_pair(r, 0);
  close(r->lfd);
  close(r->wake[0]);
  close(r->wake[1]);
  unlink(r->path);
  pthread_mutex_destroy(&r->mu);
  free(r);
}
