/* Private Redis Cluster management for the tests. */
#include "cluster_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Fork and exec argv with stdout/stderr to `log` (or /dev/null), dying with
 * the test process. */
static pid_t run(const char *const *argv, const char *log) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0)
    return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(127);
  int in = open("/dev/null", O_RDONLY);
  int out = open(log != NULL ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND,
                 0600);
  if (in >= 0)
    dup2(in, 0);
  if (out >= 0) {
    dup2(out, 1);
    dup2(out, 2);
  }
  execvp(argv[0], (char *const *)argv);
  _exit(127);
}

redisContext *test_cluster_node(const test_cluster *cl, int i) {
  if (cl->pid[i] <= 0)
    return NULL;
  struct timeval tv = {2, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", cl->port[i], tv);
  if (c == NULL || c->err) {
    if (c != NULL)
      redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  return c;
}

static int node_dir(const test_cluster *cl, int i, char *out, size_t n) {
  return snprintf(out, n, "%s/n%d", cl->dir, i) >= (int)n ? -1 : 0;
}

static int spawn_node(test_cluster *cl, int i) {
  char port[16], bus[16], dir[300], log[340], tport[16], crt[300], key[300],
      ca[300];
  node_dir(cl, i, dir, sizeof dir);
  mkdir(dir, 0700);
  snprintf(port, sizeof port, "%d", cl->port[i]);
  snprintf(bus, sizeof bus, "%d", cl->bus_port[i]);
  snprintf(log, sizeof log, "%s/redis.log", dir);
  const char *server = getenv("CACHET_REDIS_SERVER");
  const char *argv[] = {server != NULL && server[0] ? server : "redis-server",
                        "--port",
                        port,
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        bus,
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-require-full-coverage",
                        "no",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        dir,
                        "--logfile",
                        "redis.log",
                        "--daemonize",
                        "no",
                        "--protected-mode",
                        "no",
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL,
                        NULL};
  if (cl->certs[0] != '\0') {
    size_t a = 0;
    while (argv[a] != NULL)
      a++;
    snprintf(tport, sizeof tport, "%d", cl->tls_port[i]);
    snprintf(crt, sizeof crt, "%s/server.crt", cl->certs);
    snprintf(key, sizeof key, "%s/server.key", cl->certs);
    snprintf(ca, sizeof ca, "%s/ca.crt", cl->certs);
    const char *tls[] = {
        "--tls-port",         tport, "--tls-cluster",      "yes",
        "--tls-replication",  "yes", "--tls-cert-file",    crt,
        "--tls-key-file",     key,   "--tls-ca-cert-file", ca,
        "--tls-auth-clients", "no"};
    for (size_t t = 0; t < sizeof tls / sizeof tls[0]; t++)
      argv[a++] = tls[t];
  }
  cl->pid[i] = run(argv, NULL);
  if (cl->pid[i] < 0)
    return -1;
  for (int t = 0; t < 500; t++) {
    if (waitpid(cl->pid[i], NULL, WNOHANG) == cl->pid[i]) {
      cl->pid[i] = 0;
      return -1;
    }
    redisContext *c = test_cluster_node(cl, i);
    if (c != NULL) {
      redisReply *r = redisCommand(c, "PING");
      int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
      if (r != NULL)
        freeReplyObject(r);
      redisFree(c);
      if (ok)
        return 0;
    }
    test_sleep_ms(20);
  }
  /* Not up in time: stop it, so a retry on other ports is alone. */
  kill(cl->pid[i], SIGKILL);
  waitpid(cl->pid[i], NULL, 0);
  cl->pid[i] = 0;
  return -1;
}

static int info_has(const test_cluster *cl, int i, const char *cmd,
                    const char *needle) {
  redisContext *c = test_cluster_node(cl, i);
  if (c == NULL)
    return 0;
  redisReply *r = redisCommand(c, cmd);
  int ok = r != NULL && r->type == REDIS_REPLY_STRING &&
           strstr(r->str, needle) != NULL;
  if (r != NULL)
    freeReplyObject(r);
  redisFree(c);
  return ok;
}

int test_cluster_wait_ok(const test_cluster *cl, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 50) {
    int ok = 1;
    for (int i = 0; ok && i < cl->n; i++)
      if (cl->pid[i] > 0)
        ok = info_has(cl, i, "CLUSTER INFO", "cluster_state:ok");
    if (ok)
      return 0;
    test_sleep_ms(50);
  }
  return -1;
}

int test_cluster_is_master(const test_cluster *cl, int i) {
  return info_has(cl, i, "INFO replication", "role:master");
}

int test_cluster_node_id(const test_cluster *cl, int i, char id[41]) {
  redisContext *c = test_cluster_node(cl, i);
  if (c == NULL)
    return -1;
  redisReply *r = redisCommand(c, "CLUSTER MYID");
  int ok = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40;
  if (ok)
    memcpy(id, r->str, 41);
  if (r != NULL)
    freeReplyObject(r);
  redisFree(c);
  return ok ? 0 : -1;
}

int test_cluster_owner(const test_cluster *cl, unsigned slot) {
  for (int i = 0; i < cl->n; i++) {
    if (cl->pid[i] <= 0 || !test_cluster_is_master(cl, i))
      continue;
    redisContext *c = test_cluster_node(cl, i);
    if (c == NULL)
      continue;
    redisReply *r = redisCommand(c, "CLUSTER COUNTKEYSINSLOT %u", slot);
    /* Ask the node itself: a GET of a key in the slot either answers or
     * redirects. */
    if (r != NULL)
      freeReplyObject(r);
    r = redisCommand(c, "CLUSTER SLOTS");
    int owner = -1;
    for (size_t k = 0; r != NULL && r->type == REDIS_REPLY_ARRAY &&
                       k < r->elements && owner < 0;
         k++) {
      redisReply *e = r->element[k];
      if (e->elements >= 3 && (unsigned)e->element[0]->integer <= slot &&
          slot <= (unsigned)e->element[1]->integer) {
        int port = (int)e->element[2]->element[1]->integer;
        for (int j = 0; j < cl->n; j++)
          if (cl->port[j] == port)
            owner = j;
      }
    }
    if (r != NULL)
      freeReplyObject(r);
    redisFree(c);
    return owner;
  }
  return -1;
}

static int start(test_cluster *cl, int masters, int replicas);

int test_cluster_start(test_cluster *cl, int masters, int replicas) {
  memset(cl, 0, sizeof *cl);
  return start(cl, masters, replicas);
}

int test_cluster_start_tls(test_cluster *cl, int masters, int replicas,
                           const char *certs) {
  memset(cl, 0, sizeof *cl);
  snprintf(cl->certs, sizeof cl->certs, "%s", certs);
  return start(cl, masters, replicas);
}

static int start(test_cluster *cl, int masters, int replicas) {
  cl->n = masters * (1 + replicas);
  if (cl->n > TEST_CLUSTER_MAX || masters < 3)
    return -1;
  const char *tmp = getenv("TMPDIR");
  snprintf(cl->dir, sizeof cl->dir, "%s/cachet-cluster-XXXXXX",
           tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
  if (mkdtemp(cl->dir) == NULL) {
    perror("cluster harness: mkdtemp");
    return -1;
  }
  for (int i = 0; i < cl->n; i++) {
    int ok = -1;
    /* A port can be taken between our probe and the server's bind. */
    for (int attempt = 0; attempt < 5 && ok != 0; attempt++) {
      int p[3] = {test_free_port(), test_free_port(), test_free_port()};
      int clash = p[0] <= 0 || p[1] <= 0 || p[2] <= 0 || p[0] == p[1] ||
                  p[0] == p[2] || p[1] == p[2];
      for (int j = 0; j < i; j++)
        for (int k = 0; k < 3; k++)
          clash |= p[k] == cl->port[j] || p[k] == cl->tls_port[j] ||
                   p[k] == cl->bus_port[j];
      cl->port[i] = p[0];
      cl->tls_port[i] = p[1];
      cl->bus_port[i] = p[2];
      if (!clash)
        ok = spawn_node(cl, i);
    }
    if (ok != 0) {
      char path[320], line[256];
      snprintf(path, sizeof path, "%s/n%d/redis.log", cl->dir, i);
      FILE *f = fopen(path, "r");
      fprintf(stderr, "cluster harness: node %d did not start; %s:\n", i, path);
      while (f != NULL && fgets(line, sizeof line, f) != NULL)
        fprintf(stderr, "  %s", line);
      if (f != NULL)
        fclose(f);
      test_cluster_stop(cl);
      return -1;
    }
  }
  char addr[TEST_CLUSTER_MAX][32], reps[16], log[300];
  const char *argv[TEST_CLUSTER_MAX + 8];
  int a = 0;
  argv[a++] = "redis-cli";
  argv[a++] = "--cluster";
  argv[a++] = "create";
  for (int i = 0; i < cl->n; i++) {
    snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", cl->port[i]);
    argv[a++] = addr[i];
  }
  snprintf(reps, sizeof reps, "%d", replicas);
  argv[a++] = "--cluster-replicas";
  argv[a++] = reps;
  argv[a++] = "--cluster-yes";
  argv[a] = NULL;
  snprintf(log, sizeof log, "%s/create.log", cl->dir);
  pid_t pid = run(argv, log);
  int status = -1, done = 0;
  for (int t = 0; t < 1500 && !done; t++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      done = 1;
    else
      test_sleep_ms(20);
  }
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  if (!done || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      test_cluster_wait_ok(cl, 30000) != 0) {
    fprintf(stderr, "cluster harness: the cluster did not form (see %s)\n",
            log);
    test_cluster_stop(cl);
    return -1;
  }
  return 0;
}

void test_cluster_kill(test_cluster *cl, int i) {
  if (cl->pid[i] > 0) {
    kill(cl->pid[i], SIGKILL);
    waitpid(cl->pid[i], NULL, 0);
    cl->pid[i] = 0;
  }
}

void test_cluster_stop(test_cluster *cl) {
  for (int i = 0; i < cl->n; i++)
    if (cl->pid[i] > 0)
      kill(cl->pid[i], SIGTERM);
  for (int i = 0; i < cl->n; i++) {
    for (int t = 0; cl->pid[i] > 0 && t < 250; t++) {
      if (waitpid(cl->pid[i], NULL, WNOHANG) == cl->pid[i])
        cl->pid[i] = 0;
      else
        test_sleep_ms(20);
    }
    test_cluster_kill(cl, i);
  }
  if (cl->dir[0] == '\0')
    return;
  char path[400];
  for (int i = 0; i < cl->n; i++) {
    const char *files[] = {"nodes.conf", "redis.log", "dump.rdb"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
      snprintf(path, sizeof path, "%s/n%d/%s", cl->dir, i, files[f]);
      unlink(path);
    }
    snprintf(path, sizeof path, "%s/n%d", cl->dir, i);
    rmdir(path);
  }
  snprintf(path, sizeof path, "%s/create.log", cl->dir);
  unlink(path);
  rmdir(cl->dir);
  cl->dir[0] = '\0';
}

void test_cluster_options(const test_cluster *cl, cachet_options *o,
                          const char *prefix, char *url, size_t urlsz) {
  cachet_options_init(o);
  static char ca[300];
  if (cl->certs[0] != '\0') {
    snprintf(url, urlsz, "rediss+cluster://127.0.0.1:%d", cl->tls_port[0]);
    snprintf(ca, sizeof ca, "%s/ca.crt", cl->certs);
    o->tls_ca_file = ca;
  } else {
    snprintf(url, urlsz, "redis+cluster://127.0.0.1:%d", cl->port[0]);
  }
  o->url = url;
  o->prefix = prefix;
  o->timeout_ms = 3000;
}

cachet *test_cluster_open(const test_cluster *cl, const char *prefix) {
  cachet_options o;
  char url[64];
  test_cluster_options(cl, &o, prefix, url, sizeof url);
  cachet *c = NULL;
  int rc = cachet_open(&c, &o);
  if (rc != CACHET_OK) {
    fprintf(stderr, "cluster harness: cachet_open: %s: %s\n",
            cachet_strerror(rc), cachet_last_error());
    abort();
  }
  return c;
}
