/* Private redis-server management for the tests. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void test_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int test_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t l = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
    close(fd);
    return -1;
  }
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

int test_black_hole(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

static const char *server_binary(void) {
  const char *env = getenv("CACHET_REDIS_SERVER");
  if (env != NULL && env[0] != '\0')
    return env;
  return "redis-server";
}

static int spawn(test_server *s, const char *const *extra) {
  char port[16], log[300];
  snprintf(port, sizeof port, "%d", s->port);
  snprintf(log, sizeof log, "%s/redis.log", s->dir);
  const char *base[] = {server_binary(),
                        "--port",
                        port,
                        "--bind",
                        "127.0.0.1",
                        "--unixsocket",
                        s->sock,
                        "--unixsocketperm",
                        "700",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        s->dir,
                        "--daemonize",
                        "no",
                        "--logfile",
                        log,
                        "--protected-mode",
                        "no"};
  size_t nb = sizeof base / sizeof base[0], ne = 0;
  while (extra != NULL && extra[ne] != NULL)
    ne++;
  const char **argv = calloc(nb + ne + 1, sizeof *argv);
  if (argv == NULL)
    return -1;
  memcpy(argv, base, sizeof base);
  for (size_t i = 0; i < ne; i++)
    argv[nb + i] = extra[i];
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    free(argv);
    return -1;
  }
  if (pid == 0) {
    /* The server must not outlive a crashed test. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
    }
    execvp(argv[0], (char *const *)argv);
    fprintf(stderr, "harness: cannot exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  free(argv);
  s->pid = pid;

  /* Wait (bounded) until it answers PING on the socket. */
  for (int i = 0; i < 500; i++) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      s->pid = 0;
      fprintf(stderr, "harness: redis-server exited early (see %s)\n", log);
      return -1;
    }
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectUnixWithTimeout(s->sock, tv);
    if (c != NULL && !c->err) {
      redisReply *r = redisCommand(c, "PING");
      /* A server with requirepass answers NOAUTH: it is up all the same. */
      int ok =
          r != NULL &&
          (r->type == REDIS_REPLY_STATUS ||
           (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));
      if (r != NULL)
        freeReplyObject(r);
      redisFree(c);
      if (ok)
        return 0;
    } else if (c != NULL) {
      redisFree(c);
    }
    test_sleep_ms(20);
  }
  fprintf(stderr, "harness: redis-server did not answer within 10 s\n");
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  s->pid = 0;
  return -1;
}

int test_server_start(test_server *s, const char *const *extra) {
  memset(s, 0, sizeof *s);
  const char *tmp = getenv("TMPDIR");
  snprintf(s->dir, sizeof s->dir, "%s/cachet-test-XXXXXX",
           tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
  if (mkdtemp(s->dir) == NULL) {
    perror("harness: mkdtemp");
    return -1;
  }
  snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
  /* A port can be taken between our probe and the server's bind; retry. */
  for (int attempt = 0; attempt < 5; attempt++) {
    s->port = test_free_port();
    if (s->port > 0 && spawn(s, extra) == 0)
      return 0;
  }
  return -1;
}

int test_server_restart(test_server *s, const char *const *extra) {
  unlink(s->sock);
  return spawn(s, extra);
}

void test_server_kill(test_server *s) {
  if (s->pid > 0) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
  }
}

static void remove_dir(const char *dir) {
  char path[400];
  const char *files[] = {"redis.sock", "redis.log", "dump.rdb", "nodes.conf"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

void test_server_stop(test_server *s) {
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 250; i++) {
      if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
        s->pid = 0;
        break;
      }
      test_sleep_ms(20);
    }
    test_server_kill(s);
  }
  if (s->dir[0] != '\0')
    remove_dir(s->dir);
  s->dir[0] = '\0';
}

redisContext *test_redis(const test_server *s) {
  struct timeval tv = {5, 0};
  redisContext *c = redisConnectUnixWithTimeout(s->sock, tv);
  if (c == NULL || c->err) {
    fprintf(stderr, "harness: cannot connect to %s\n", s->sock);
    abort();
  }
  return c;
}

void test_options(const test_server *s, cachet_options *o, const char *prefix) {
  cachet_options_init(o);
  o->unix_path = s->sock;
  o->prefix = prefix;
  /* The suites again with multiplexed connections (the *_mux tests). */
  const char *mux = getenv("CACHET_TEST_MULTIPLEX");
  if (mux != NULL)
    o->multiplex = atoi(mux);
}

cachet *test_open(const test_server *s, const char *prefix) {
  cachet_options o;
  test_options(s, &o, prefix);
  cachet *c = NULL;
  int rc = cachet_open(&c, &o);
  if (rc != CACHET_OK) {
    fprintf(stderr, "harness: cachet_open: %s: %s\n", cachet_strerror(rc),
            cachet_last_error());
    abort();
  }
  return c;
}

int test_tls_certs(char *dir, size_t n) {
  const char *src = getenv("CACHET_SOURCE_DIR");
  const char *tmp = getenv("TMPDIR");
  if (src == NULL ||
      snprintf(dir, n, "%s/cachet-tls-XXXXXX",
               tmp != NULL && tmp[0] ? tmp : "/tmp") >= (int)n ||
      mkdtemp(dir) == NULL) {
    fprintf(stderr, "harness: no CACHET_SOURCE_DIR, or no temp dir\n");
    return -1;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "sh '%s/tests/tls_certs.sh' '%s'", src, dir);
  if (system(cmd) != 0) {
    fprintf(stderr, "harness: %s failed\n", cmd);
    return -1;
  }
  return 0;
}

void test_tls_remove(const char *dir) {
  static const char *const names[] = {"ca", "other-ca", "server", "client",
                                      "expired"};
  char path[400];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s.crt", dir, names[i]);
    unlink(path);
    snprintf(path, sizeof path, "%s/%s.key", dir, names[i]);
    unlink(path);
  }
  snprintf(path, sizeof path, "%s/ca.srl", dir);
  unlink(path);
  rmdir(dir);
}

int test_tls_server_start(test_server *s, const char *certs, const char *cert,
                          int mutual, int *tls_port) {
  char port[16], crt[300], key[300], ca[300];
  snprintf(crt, sizeof crt, "%s/%s.crt", certs, cert);
  snprintf(key, sizeof key, "%s/%s.key", certs, cert);
  snprintf(ca, sizeof ca, "%s/ca.crt", certs);
  for (int attempt = 0; attempt < 5; attempt++) {
    *tls_port = test_free_port();
    snprintf(port, sizeof port, "%d", *tls_port);
    const char *extra[] = {"--tls-port",
                           port,
                           "--tls-cert-file",
                           crt,
                           "--tls-key-file",
                           key,
                           "--tls-ca-cert-file",
                           ca,
                           "--tls-auth-clients",
                           mutual ? "yes" : "no",
                           NULL};
    if (test_server_start(s, extra) == 0)
      return 0;
  }
  return -1;
}
