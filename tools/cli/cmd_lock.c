/* cachet lock acquire|release|extend, and cachet fetch */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

extern const cli_command cli_cmd_lock, cli_cmd_fetch;

#define MAX_CLI_TAGS 256

static void help_lock(FILE *o) {
  fprintf(
      o,
      "usage: cachet lock acquire NAME --ttl MS [--wait MS] [--json]\n"
      "       cachet lock release NAME TOKEN [--json]\n"
      "       cachet lock extend NAME TOKEN --ttl MS [--json]\n"
      "  acquire  take the lock NAME for MS milliseconds (> 0: no lock\n"
      "           lives without a TTL), waiting up to --wait MS (default\n"
      "           0: try once). Prints \"TOKEN FENCE\": the owner token\n"
      "           (32 hex digits) to release or extend it with, and the\n"
      "           fencing number, which rises with every acquisition.\n"
      "  release  give the lock back if TOKEN still owns it.\n"
      "  extend   set its remaining TTL to MS if TOKEN still owns it.\n"
      "  --json   print an object instead\n"
      "Exit: 0 acquired / released / extended; 1 not acquired, or (release,\n"
      "extend) the lock had expired or another owner holds it: stderr\n"
      "says which; 2 usage (--ttl 0, a malformed token); 3 server "
      "error.\n");
}

typedef struct lock_args {
  const char *pos[2];
  int npos;
  int64_t ttl, wait;
  int has_ttl, json;
} lock_args;

static int parse_lock_args(int argc, char **argv, lock_args *a) {
  memset(a, 0, sizeof *a);
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--ttl") == 0) {
      if (++i >= argc || cli_parse_ms(argv[i], &a->ttl) != 0)
        return cli_usage(&cli_cmd_lock, "--ttl needs milliseconds");
      a->has_ttl = 1;
    } else if (opts && strcmp(argv[i], "--wait") == 0) {
      if (++i >= argc || cli_parse_ms(argv[i], &a->wait) != 0)
        return cli_usage(&cli_cmd_lock, "--wait needs milliseconds >= 0");
    } else if (opts && strcmp(argv[i], "--json") == 0) {
      a->json = 1;
    } else if (opts && argv[i][0] == '-' && argv[i][1] == '-' &&
               argv[i][2] != '\0') {
      return cli_usage(&cli_cmd_lock, "unknown option %s", argv[i]);
    } else if (a->npos < 2) {
      a->pos[a->npos++] = argv[i];
    } else {
      return cli_usage(&cli_cmd_lock, "too many arguments");
    }
  }
  return 0;
}

static int lock_acquire(cli *cl, const lock_args *a) {
  if (a->npos != 1)
    return cli_usage(&cli_cmd_lock, "acquire needs NAME");
  if (!a->has_ttl)
    return cli_usage(&cli_cmd_lock, "acquire needs --ttl MS");
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  cachet_lock *lk = NULL;
  int rc = cachet_lock_acquire(c, a->pos[0], a->ttl, a->wait, &lk);
  if (rc == CACHET_OK) {
    char tok[CACHET_LOCK_TOKEN_HEXLEN + 1];
    cachet_lock_token(lk, tok);
    if (a->json) {
      printf("{");
      cli_json_bytes(stdout, "name", a->pos[0], strlen(a->pos[0]));
      printf(",\"acquired\":true,\"token\":\"%s\",\"fence\":%llu,"
             "\"ttl_ms\":%lld}\n",
             tok, (unsigned long long)cachet_lock_fence(lk), (long long)a->ttl);
    } else {
      printf("%s %llu\n", tok, (unsigned long long)cachet_lock_fence(lk));
    }
    cachet_lock_free(lk);
  } else if (rc == CACHET_NOT_ACQUIRED) {
    if (a->json) {
      printf("{");
      cli_json_bytes(stdout, "name", a->pos[0], strlen(a->pos[0]));
      printf(",\"acquired\":false}\n");
    }
    fprintf(stderr, "cachet lock acquire: %s\n", cachet_last_error());
  }
  return cli_status(rc, "lock acquire");
}

/* release and extend: the same arguments and outcomes. */
static int lock_owner_op(cli *cl, const lock_args *a, int extend) {
  const char *op = extend ? "extend" : "release";
  if (a->npos != 2)
    return cli_usage(&cli_cmd_lock, "%s needs NAME and TOKEN", op);
  if (extend && !a->has_ttl)
    return cli_usage(&cli_cmd_lock, "extend needs --ttl MS");
  if (!extend && a->has_ttl)
    return cli_usage(&cli_cmd_lock, "release takes no --ttl");
  cachet_lock *lk = NULL;
  int rc = cachet_lock_from_token(a->pos[0], a->pos[1], &lk);
  if (rc != CACHET_OK)
    return cli_status(rc, extend ? "lock extend" : "lock release");
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL) {
    cachet_lock_free(lk);
    return code;
  }
  rc = extend ? cachet_lock_extend(c, lk, a->ttl) : cachet_lock_release(c, lk);
  cachet_lock_free(lk);
  const char *outcome = rc == CACHET_OK ? (extend ? "extended" : "released")
                        : rc == CACHET_LOCK_EXPIRED   ? "expired"
                        : rc == CACHET_LOCK_NOT_OWNER ? "not_owner"
                                                      : NULL;
  if (a->json && outcome != NULL) {
    printf("{");
    cli_json_bytes(stdout, "name", a->pos[0], strlen(a->pos[0]));
    printf(",\"outcome\":\"%s\"}\n", outcome);
  }
  if (rc == CACHET_LOCK_EXPIRED)
    fprintf(stderr,
            "cachet lock %s: %s: the lock had expired; nobody holds it\n", op,
            a->pos[0]);
  else if (rc == CACHET_LOCK_NOT_OWNER)
    fprintf(stderr,
            "cachet lock %s: %s: another owner holds the lock (this token "
            "does not own it)\n",
            op, a->pos[0]);
  return cli_status(rc, extend ? "lock extend" : "lock release");
}

static int run_lock(cli *cl, int argc, char **argv) {
  if (argc < 1)
    return cli_usage(&cli_cmd_lock, "needs acquire, release or extend");
  lock_args a;
  int code = parse_lock_args(argc - 1, argv + 1, &a);
  if (code != 0)
    return code;
  if (strcmp(argv[0], "acquire") == 0)
    return lock_acquire(cl, &a);
  if (strcmp(argv[0], "release") == 0)
    return lock_owner_op(cl, &a, 0);
  if (strcmp(argv[0], "extend") == 0)
    return lock_owner_op(cl, &a, 1);
  return cli_usage(&cli_cmd_lock, "unknown lock command '%s'", argv[0]);
}

const cli_command cli_cmd_lock = {"lock", "acquire, release or extend a lock",
                                  run_lock, help_lock};

/* ---- fetch ------------------------------------------------------------- */

static void help_fetch(FILE *o) {
  fprintf(
      o,
      "usage: cachet fetch KEY [--ttl MS] [--tag TAG]... [--json] -- COMMAND "
      "[ARGS...]\n"
      "  Print the cached value of KEY. On a miss, run COMMAND to produce it,\n"
      "  with stampede protection: across every process, one `cachet fetch`\n"
      "  of KEY runs COMMAND while the others wait for its value (at most\n"
      "  CACHET_FETCH_WAIT_MS, default 30000), and a waiter takes over if\n"
      "  the one running it dies. The lock's lease (CACHET_LOCK_LEASE_MS,\n"
      "  default 3000) is renewed while COMMAND runs.\n"
      "  COMMAND's stdout is the value; its stderr passes through. The value\n"
      "  is cached only when COMMAND exits 0.\n"
      "  --ttl MS   expiry in milliseconds (0 or absent: none)\n"
      "  --tag TAG  tag the entry (repeatable)\n"
      "  --json     print {\"key\":..,\"value\":..,\"loaded\":..} instead of\n"
      "             the raw value\n"
      "Exit: 0 value printed (hit or loaded); when COMMAND fails, nothing is\n"
      "cached and fetch exits with COMMAND's own exit status (128+N if a\n"
      "signal N killed it, 127 if it could not be run), with a message on\n"
      "stderr; 2 usage; 3 server error or timed out waiting for another\n"
      "fetch; 4 integrity/format error.\n");
}

typedef struct fetch_ctx {
  char **cmd;
  int ran;         /* the command was started by this process */
  int exit_status; /* what fetch exits with when the command failed */
  size_t max;      /* the most it may write: max_value_size */
} fetch_ctx;

/*
 * The loader: fork and exec COMMAND with its stdout on a pipe. The child
 * only dup2s, execs and, when exec fails, writes errno to a close-on-exec
 * pipe and _exits: nothing that is unsafe after fork in a process that has
 * threads (the lease watchdog runs alongside).
 */
static int fetch_loader(void *ud, const void *key, size_t keylen, void **val,
                        size_t *len, int64_t *ttl_ms) {
  (void)key;
  (void)keylen;
  (void)ttl_ms;
  fetch_ctx *fx = ud;
  fx->ran = 1;
  fx->exit_status = 127;
  int out[2], err[2];
  if (pipe(out) != 0) {
    fprintf(stderr, "cachet fetch: pipe: %s\n", strerror(errno));
    return -1;
  }
  if (pipe(err) != 0 || fcntl(err[1], F_SETFD, FD_CLOEXEC) != 0) {
    fprintf(stderr, "cachet fetch: pipe: %s\n", strerror(errno));
    close(out[0]);
    close(out[1]);
    return -1;
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "cachet fetch: fork: %s\n", strerror(errno));
    close(out[0]);
    close(out[1]);
    close(err[0]);
    close(err[1]);
    return -1;
  }
  if (pid == 0) {
    close(out[0]);
    close(err[0]);
    if (dup2(out[1], STDOUT_FILENO) < 0)
      _exit(127);
    close(out[1]);
    execvp(fx->cmd[0], fx->cmd);
    int e = errno;
    ssize_t w = write(err[1], &e, sizeof e);
    (void)w;
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  char *buf = NULL;
  size_t n = 0;
  FILE *from = fdopen(out[0], "rb");
  int rrc =
      from != NULL ? cli_read_stream(from, fx->max, &buf, &n) : CLI_READ_ERROR;
  if (rrc == CLI_READ_TOO_LARGE) /* stop it writing: we read no more */
    kill(pid, SIGKILL);
  if (from != NULL)
    fclose(from);
  else
    close(out[0]);
  int exec_errno = 0;
  ssize_t er;
  do
    er = read(err[0], &exec_errno, sizeof exec_errno);
  while (er < 0 && errno == EINTR);
  close(err[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  if (rrc == CLI_READ_TOO_LARGE) {
    fx->exit_status = EXIT_SERVER;
    fprintf(stderr,
            "cachet fetch: %s wrote more than max_value_size (%zu bytes); it "
            "was stopped and nothing was cached\n",
            fx->cmd[0], fx->max);
    return -1;
  }
  if (er == (ssize_t)sizeof exec_errno) {
    free(buf);
    fprintf(stderr, "cachet fetch: cannot run %s: %s\n", fx->cmd[0],
            strerror(exec_errno));
    fx->exit_status = 127;
    return -1;
  }
  if (WIFSIGNALED(status)) {
    free(buf);
    fx->exit_status = 128 + WTERMSIG(status);
    fprintf(stderr,
            "cachet fetch: %s was killed by signal %d; nothing cached\n",
            fx->cmd[0], WTERMSIG(status));
    return -1;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    free(buf);
    fx->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 127;
    fprintf(stderr, "cachet fetch: %s exited with status %d; nothing cached\n",
            fx->cmd[0], fx->exit_status);
    return -1;
  }
  if (rrc != 0) {
    fx->exit_status = EXIT_SERVER;
    fprintf(stderr, "cachet fetch: cannot read the output of %s\n", fx->cmd[0]);
    return -1;
  }
  fx->exit_status = 0;
  *val = buf;
  *len = n;
  return 0;
}

static int run_fetch(cli *cl, int argc, char **argv) {
  const char *key = NULL;
  int json = 0, cmd_at = -1;
  int64_t ttl = 0;
  const char *tags[MAX_CLI_TAGS];
  size_t ntags = 0;
  int opts = 1; /* until a "--" that comes before KEY */
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      if (opts && key == NULL) { /* ends the options: KEY comes next */
        opts = 0;
        continue;
      }
      cmd_at = i + 1;
      break;
    } else if (opts && strcmp(argv[i], "--ttl") == 0) {
      if (++i >= argc || cli_parse_ms(argv[i], &ttl) != 0)
        return cli_usage(&cli_cmd_fetch, "--ttl needs milliseconds >= 0");
    } else if (opts && strcmp(argv[i], "--tag") == 0) {
      if (++i >= argc || argv[i][0] == '\0')
        return cli_usage(&cli_cmd_fetch, "--tag needs a non-empty tag");
      if (ntags == MAX_CLI_TAGS)
        return cli_usage(&cli_cmd_fetch, "too many --tag");
      tags[ntags++] = argv[i];
    } else if (opts && strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (opts && argv[i][0] == '-' && argv[i][1] == '-' &&
               argv[i][2] != '\0') {
      return cli_usage(&cli_cmd_fetch, "unknown option %s", argv[i]);
    } else if (key == NULL) {
      key = argv[i];
    } else {
      return cli_usage(&cli_cmd_fetch, "too many arguments before --");
    }
  }
  if (key == NULL)
    return cli_usage(&cli_cmd_fetch, "needs KEY");
  if (cmd_at < 0 || cmd_at >= argc)
    return cli_usage(&cli_cmd_fetch, "needs -- COMMAND [ARGS...]");
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  fetch_ctx fx = {argv + cmd_at, 0, 0, cachet_max_value_size(c)};
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get_or_set(c, key, strlen(key), fetch_loader, &fx, ttl, tags,
                             ntags, &v, &n);
  if (rc == CACHET_ELOADER && fx.ran && fx.exit_status != 0)
    return fx.exit_status;
  if (rc == CACHET_OK) {
    if (json) {
      printf("{");
      cli_json_bytes(stdout, "key", key, strlen(key));
      printf(",\"loaded\":%s,", fx.ran ? "true" : "false");
      cli_json_bytes(stdout, "value", v, n);
      printf("}\n");
    } else if (n > 0 && fwrite(v, 1, n, stdout) != n) {
      cachet_free(v);
      fprintf(stderr, "cachet fetch: write to stdout failed\n");
      return EXIT_SERVER;
    }
    cachet_free(v);
  }
  return cli_status(rc, "fetch");
}

const cli_command cli_cmd_fetch = {
    "fetch", "print a value, or compute it once with COMMAND", run_fetch,
    help_fetch};
