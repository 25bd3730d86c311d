/* A private redis-server for the CLI's demo and bench, started only when no
 * server is configured and none answers on the default address.
 *
 * The server runs in a mkdtemp dir, listens only on a unix socket there
 * (--port 0), keeps nothing on disk (--save '' --appendonly no), and dies
 * with us: PR_SET_PDEATHSIG covers a crash, a signal handler covers Ctrl-C
 * (it also removes the dir), and cli_private_server_stop the normal path. */
#include "private_server.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

/* How long the server may take to answer PING, and to stop on SIGTERM. */
#define START_DEADLINE_MS 10000
#define STOP_DEADLINE_MS 5000

/* The one server the signal handler must clean up. The CLI starts at most
 * one, and only from the main thread. */
static cli_private_server *running;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int env_set(const char *name) {
  const char *v = getenv(name);
  return v != NULL && v[0] != '\0';
}

/* Does anything accept a connection on localhost:6379 within a short
 * timeout? A refusal comes back at once; a filtered port costs 300 ms. */
static int default_server_answers(void) {
  struct timeval tv = {0, 300000};
  redisContext *ctx = redisConnectWithTimeout("localhost", 6379, tv);
  int ok = ctx != NULL && ctx->err == 0;
  redisFree(ctx);
  return ok;
}

/* The server binary to run, or NULL if it cannot be found. */
static const char *find_server(char *buf, size_t buflen) {
  const char *want = getenv("CACHET_REDIS_SERVER");
  if (want == NULL || want[0] == '\0')
    want = "redis-server";
  if (strchr(want, '/') != NULL)
    return access(want, X_OK) == 0 ? want : NULL;
  const char *path = getenv("PATH");
  if (path == NULL)
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path != '\0') {
    const char *end = strchr(path, ':');
    size_t n = end != NULL ? (size_t)(end - path) : strlen(path);
    if (n > 0) {
      int w = snprintf(buf, buflen, "%.*s/%s", (int)n, path, want);
      if (w > 0 && (size_t)w < buflen && access(buf, X_OK) == 0)
        return buf;
    }
    path += n;
    if (*path == ':')
      path++;
  }
  return NULL;
}

static void remove_dir(const char *dir) {
  static const char *const files[] = {"redis.sock", "redis.log", "dump.rdb",
                                      "appendonly.aof", "owner.pid"};
  char path[300];
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    int n = snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    if (n > 0 && (size_t)n < sizeof path)
      unlink(path);
  }
  rmdir(dir);
}

/* Ctrl-C or a kill while the server runs: take it down with us. Only
 * async-signal-safe calls (kill, unlink, rmdir, _exit); PDEATHSIG would kill
 * the server anyway, but the dir must go too. */
static void on_signal(int sig) {
  cli_private_server *s = running;
  if (s != NULL && s->pid > 0) {
    kill(s->pid, SIGKILL);
    unlink(s->sock);
    remove_dir(s->dir);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static int answers_ping(const char *sock) {
  struct timeval tv = {1, 0};
  redisContext *ctx = redisConnectUnixWithTimeout(sock, tv);
  int ok = 0;
  if (ctx != NULL && ctx->err == 0) {
    redisReply *r = redisCommand(ctx, "PING");
    ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    if (r != NULL)
      freeReplyObject(r);
  }
  redisFree(ctx);
  return ok;
}

/*
 * Is dir (a cachet-server-* dir of ours) left behind by a demo that was
 * killed with SIGKILL, so that nothing could remove it? Its owner.pid names
 * the CLI process that made it, and its server died with that process
 * (PDEATHSIG). A dir without the file (an older cachet, or one being made
 * right now) counts only when it is a minute old and its socket refuses.
 */
static int stale(const char *dir, const struct stat *st) {
  char path[320];
  snprintf(path, sizeof path, "%s/owner.pid", dir);
  FILE *f = fopen(path, "r");
  if (f != NULL) {
    long pid = 0;
    int got = fscanf(f, "%ld", &pid);
    fclose(f);
    return got == 1 && pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
  }
  snprintf(path, sizeof path, "%s/redis.sock", dir);
  return time(NULL) - st->st_mtime > 60 && !answers_ping(path);
}

/* Remove the stale dirs of earlier demos in tmp: only our own
 * cachet-server-* directories, and only the files a private server makes
 * (rmdir leaves anything else alone). */
static void sweep_stale(const char *tmp) {
  DIR *d = opendir(tmp);
  if (d == NULL)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, "cachet-server-", 14) != 0 ||
        strlen(e->d_name) != 20)
      continue;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/%s", tmp, e->d_name);
    struct stat st;
    if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
        stale(dir, &st))
      remove_dir(dir);
  }
  closedir(d);
}

static int start(cli_private_server *s, const char *bin, const char *who) {
  const char *tmp = getenv("TMPDIR");
  if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 80)
    tmp = "/tmp"; /* a unix socket path must fit in 108 bytes */
  sweep_stale(tmp);
  snprintf(s->dir, sizeof s->dir, "%s/cachet-server-XXXXXX", tmp);
  if (mkdtemp(s->dir) == NULL) {
    fprintf(stderr, "cachet %s: cannot create a temp dir in %s: %s\n", who, tmp,
            strerror(errno));
    s->dir[0] = '\0';
    return EXIT_SERVER;
  }
  char owner[260];
  snprintf(owner, sizeof owner, "%s/owner.pid", s->dir);
  FILE *of = fopen(owner, "w");
  if (of != NULL) {
    fprintf(of, "%ld\n", (long)getpid());
    fclose(of);
  }
  snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
  snprintf(s->url, sizeof s->url, "unix://%s", s->sock);
  char log[260];
  snprintf(log, sizeof log, "%s/redis.log", s->dir);
  const char *argv[] = {
      bin,    "--port",      "0",  "--unixsocket", s->sock, "--unixsocketperm",
      "700",  "--save",      "",   "--appendonly", "no",    "--dir",
      s->dir, "--daemonize", "no", "--logfile",    log,     NULL};

  running = s;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "cachet %s: cannot start %s: %s\n", who, bin,
            strerror(errno));
    cli_private_server_stop(s);
    return EXIT_SERVER;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  s->pid = pid;

  int64_t deadline = mono_ms() + START_DEADLINE_MS;
  while (!answers_ping(s->sock)) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      s->pid = 0;
      fprintf(stderr,
              "cachet %s: the private redis-server (%s) exited at start "
              "(status %d)\n",
              who, bin, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
      cli_private_server_stop(s);
      return EXIT_SERVER;
    }
    if (mono_ms() > deadline) {
      fprintf(stderr,
              "cachet %s: the private redis-server did not answer within "
              "%d ms\n",
              who, START_DEADLINE_MS);
      cli_private_server_stop(s);
      return EXIT_SERVER;
    }
    sleep_ms(10);
  }
  return 0;
}

int cli_private_server_setup(cli *cl, cli_private_server *s, const char *who) {
  memset(s, 0, sizeof *s);
  if (cl->url != NULL || env_set("CACHET_URL") || env_set("CACHET_HOST") ||
      env_set("CACHET_PORT"))
    return 0;
  if (default_server_answers())
    return 0;
  char buf[512];
  const char *bin = find_server(buf, sizeof buf);
  if (bin == NULL) {
    const char *want = getenv("CACHET_REDIS_SERVER");
    fprintf(stderr,
            "cachet %s: no server configured, none answers on "
            "localhost:6379, and %s is not installed; install redis-server "
            "(apt-get install redis-server) or set CACHET_URL\n",
            who, want != NULL && want[0] != '\0' ? want : "redis-server");
    return EXIT_SERVER;
  }
  int rc = start(s, bin, who);
  if (rc != 0)
    return rc;
  cl->url = s->url;
  fprintf(stderr,
          "cachet: no server configured; using a private redis-server on %s "
          "(stopped on exit)\n",
          s->sock);
  return 0;
}

void cli_private_server_stop(cli_private_server *s) {
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    int64_t deadline = mono_ms() + STOP_DEADLINE_MS;
    int reaped = 0;
    while (!reaped && mono_ms() < deadline) {
      if (waitpid(s->pid, NULL, WNOHANG) == s->pid)
        reaped = 1;
      else
        sleep_ms(10);
    }
    if (!reaped) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, NULL, 0);
    }
    s->pid = 0;
  }
  if (s->dir[0] != '\0')
    remove_dir(s->dir);
  s->dir[0] = '\0';
  if (running == s) {
    running = NULL;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
  }
}

/* A command during set-up; prints the server's refusal. */
static int setup_command(redisContext *ctx, const char *who, int argc,
                         const char **argv, const size_t *lens) {
  redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
  if (r == NULL) {
    fprintf(stderr, "cachet %s: raw connection: %s\n", who, ctx->errstr);
    return -1;
  }
  int ok = r->type != REDIS_REPLY_ERROR;
  if (!ok)
    fprintf(stderr, "cachet %s: raw connection: %s refused: %s\n", who, argv[0],
            r->str);
  freeReplyObject(r);
  return ok ? 0 : -1;
}

redisContext *cli_raw_connect(cachet *c, const char *who) {
  cachet_tool_server srv, *cfg = &srv;
  cachet_tool_server_get(c, &srv);
  if (srv.tls) {
    fprintf(stderr,
            "cachet %s: a raw connection needs plaintext: hiredis 0.14, "
            "which it uses, has no TLS\n",
            who);
    return NULL;
  }
  struct timeval tv = {cfg->timeout_ms / 1000, (cfg->timeout_ms % 1000) * 1000};
  redisContext *ctx = cfg->unix_path != NULL
                          ? redisConnectUnixWithTimeout(cfg->unix_path, tv)
                          : redisConnectWithTimeout(cfg->host, cfg->port, tv);
  if (ctx == NULL || ctx->err != 0) {
    fprintf(stderr, "cachet %s: raw connection: %s\n", who,
            ctx != NULL ? ctx->errstr : "out of memory");
    redisFree(ctx);
    return NULL;
  }
  redisSetTimeout(ctx, tv);
  int rc = 0;
  if (cfg->password != NULL) {
    const char *argv[3] = {"AUTH", cfg->username, cfg->password};
    size_t lens[3] = {4, cfg->username ? strlen(cfg->username) : 0,
                      strlen(cfg->password)};
    if (cfg->username == NULL) {
      argv[1] = cfg->password;
      lens[1] = lens[2];
    }
    rc = setup_command(ctx, who, cfg->username != NULL ? 3 : 2, argv, lens);
  }
  if (rc == 0 && cfg->db != 0) {
    char db[16];
    int n = snprintf(db, sizeof db, "%d", cfg->db);
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, (size_t)n};
    rc = setup_command(ctx, who, 2, argv, lens);
  }
  if (rc != 0) {
    redisFree(ctx);
    return NULL;
  }
  return ctx;
}
