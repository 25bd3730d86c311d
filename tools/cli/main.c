/* cachet: command dispatch, global options and shared helpers. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Commands live one group per file. A group that is not linked in simply
 * does not appear (weak references). */
#define CMDS(XX)                                                               \
  XX(set) XX(get) XX(del) XX(exists) XX(ttl) XX(evict_tags) XX(clear)          \
  XX(prune) XX(lock) XX(fetch) XX(stats) XX(health) XX(keygen) XX(inspect)     \
  XX(import) XX(demo) XX(bench)

#define DECLARE(n) extern const cli_command cli_cmd_##n __attribute__((weak));
CMDS(DECLARE)
#undef DECLARE

#define ENTRY(n) &cli_cmd_##n,
static const cli_command *const commands[] = {CMDS(ENTRY)};
#undef ENTRY
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
  fprintf(out,
          "usage: cachet [--url URL] [--prefix PREFIX] COMMAND [ARGS...]\n"
          "       cachet COMMAND --help\n\n"
          "A Redis-backed application cache.\n\nCommands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (commands[i] != NULL)
      fprintf(out, "  %-11s %s\n", commands[i]->name, commands[i]->summary);
  fprintf(out,
          "\nGlobal options:\n"
          "  --url URL        redis://[user[:password]@]host[:port][/db] or\n"
          "                   unix://[user[:password]@]/path[?db=N]\n"
          "                   (overrides CACHET_URL)\n"
          "  --prefix PREFIX  key prefix (overrides CACHET_KEY_PREFIX)\n"
          "  --version        print the version\n"
          "  -h, --help       this help\n\n"
          "Environment: CACHET_URL, CACHET_HOST, CACHET_PORT, CACHET_DB,\n"
          "CACHET_USERNAME, CACHET_PASSWORD, CACHET_USE_TLS,\n"
          "CACHET_KEY_PREFIX, CACHET_TIMEOUT_MS, CACHET_POOL_SIZE,\n"
          "CACHET_KEYS, CACHET_KEYS_FILE, CACHET_ENCRYPT,\n"
          "CACHET_ACCEPT_UNSEALED (defaults: cachet(1) and the README).\n\n"
          "Exit codes:\n"
          "  0  success or hit\n"
          "  1  miss, absent, or not acquired\n"
          "  2  usage or invalid configuration\n"
          "  3  connection, server or timeout error (message on stderr)\n"
          "  4  integrity or format error\n");
}

int main(int argc, char **argv) {
  cli cl = {0};
  /* A write to a closed connection or pipe is an error we report, not a
   * reason to die; this also spares the library its SIGPIPE guard. */
  signal(SIGPIPE, SIG_IGN);
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--url") == 0 || strcmp(a, "--prefix") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "cachet: %s needs a value\n", a);
        return EXIT_USAGE;
      }
      if (a[2] == 'u')
        cl.url = argv[++i];
      else
        cl.prefix = argv[++i];
    } else if (strncmp(a, "--url=", 6) == 0) {
      cl.url = a + 6;
    } else if (strncmp(a, "--prefix=", 9) == 0) {
      cl.prefix = a + 9;
    } else if (cli_is_help(a)) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0) {
      printf("cachet %s\n", CACHET_VERSION_STRING);
      return 0;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "cachet: unknown option %s (try --help)\n", a);
      return EXIT_USAGE;
    } else {
      break;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *name = argv[i];
  for (size_t k = 0; k < NCOMMANDS; k++) {
    const cli_command *cmd = commands[k];
    if (cmd == NULL || strcmp(cmd->name, name) != 0)
      continue;
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    if (sub_argc >= 1 && cli_is_help(sub_argv[0])) {
      cmd->help(stdout);
      return 0;
    }
    int code = cmd->run(&cl, sub_argc, sub_argv);
    cachet_close(cl.c);
    return code;
  }
  fprintf(stderr, "cachet: unknown command '%s' (try --help)\n", name);
  return EXIT_USAGE;
}

/* ---- shared helpers ---------------------------------------------------- */

cachet *cli_handle(cli *cl, int *exit_code) {
  if (cl->c != NULL)
    return cl->c;
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  o.url = cl->url;
  o.prefix = cl->prefix;
  if (isatty(STDERR_FILENO))
    o.progress = cli_progress;
  int rc = cachet_open(&cl->c, &o);
  if (rc != CACHET_OK) {
    *exit_code = cli_status(rc, "configuration");
    return NULL;
  }
  return cl->c;
}

int cli_status(int status, const char *what) {
  if (status == CACHET_OK)
    return EXIT_HIT;
  if (status > 0)
    return EXIT_MISS;
  const char *detail = cachet_last_error();
  if (detail[0] != '\0')
    fprintf(stderr, "cachet: %s: %s: %s\n", what, cachet_strerror(status),
            detail);
  else
    fprintf(stderr, "cachet: %s: %s\n", what, cachet_strerror(status));
  switch (status) {
  case CACHET_EINVAL:
  case CACHET_ECONFIG:
    return EXIT_USAGE;
  case CACHET_ECORRUPT:
  case CACHET_EINTEGRITY:
  case CACHET_EVERSION:
    return EXIT_INTEGRITY;
  default:
    return EXIT_SERVER;
  }
}

int cli_usage(const cli_command *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "cachet %s: ", cmd->name);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  cmd->help(stderr);
  return EXIT_USAGE;
}

int cli_parse_u64(const char *s, uint64_t *out) {
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -1;
  *out = v;
  return 0;
}

int cli_parse_ms(const char *s, int64_t *out) {
  uint64_t v;
  if (cli_parse_u64(s, &v) != 0 || v > (uint64_t)INT64_MAX)
    return -1;
  *out = (int64_t)v;
  return 0;
}

int cli_is_help(const char *arg) {
  return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static int read_stream(FILE *f, char **buf, size_t *len) {
  size_t cap = 4096, n = 0;
  char *b = malloc(cap);
  if (b == NULL)
    return -1;
  for (;;) {
    if (n == cap) {
      char *nb = realloc(b, cap * 2);
      if (nb == NULL) {
        free(b);
        return -1;
      }
      b = nb;
      cap *= 2;
    }
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        free(b);
        return -1;
      }
      break;
    }
  }
  *buf = b;
  *len = n;
  return 0;
}

int cli_read_stdin(char **buf, size_t *len) { return read_stream(stdin, buf, len); }

int cli_read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -1;
  int rc = read_stream(f, buf, len);
  fclose(f);
  return rc;
}

void cli_json_str(FILE *out, const void *s, size_t len) {
  const unsigned char *p = s;
  fputc('"', out);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = p[i];
    if (ch == '"' || ch == '\\')
      fprintf(out, "\\%c", ch);
    else if (ch == '\n')
      fputs("\\n", out);
    else if (ch == '\t')
      fputs("\\t", out);
    else if (ch < 0x20 || ch >= 0x7f)
      fprintf(out, "\\u%04x", ch);
    else
      fputc(ch, out);
  }
  fputc('"', out);
}

static int progress_drawn;

void cli_progress(void *ud, const char *op, uint64_t done) {
  (void)ud;
  fprintf(stderr, "\r%s: %llu", op, (unsigned long long)done);
  fflush(stderr);
  progress_drawn = 1;
}

void cli_progress_end(void) {
  if (progress_drawn) {
    fputc('\n', stderr);
    progress_drawn = 0;
  }
}
