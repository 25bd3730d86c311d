/* cachet: command dispatch, global options and shared helpers. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tool.h"

/* Commands live one group per file. A group that is not linked in simply
 * does not appear (weak references). */
#define CMDS(XX)                                                               \
  XX(set)                                                                      \
  XX(get)                                                                      \
  XX(del)                                                                      \
  XX(exists)                                                                   \
  XX(ttl) XX(evict_tags) XX(clear) XX(prune) XX(lock) XX(fetch) XX(stats)      \
      XX(health) XX(keygen) XX(inspect) XX(import) XX(demo) XX(bench)

#define DECLARE(n) extern const cli_command cli_cmd_##n __attribute__((weak));
CMDS(DECLARE)
#undef DECLARE

#define ENTRY(n) &cli_cmd_##n,
static const cli_command *const commands[] = {CMDS(ENTRY)};
#undef ENTRY
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
  fprintf(out, "usage: cachet [GLOBAL OPTIONS] COMMAND [ARGS...]\n"
               "       cachet COMMAND --help\n\n"
               "A Redis-backed application cache.\n\nCommands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (commands[i] != NULL)
      fprintf(out, "  %-11s %s\n", commands[i]->name, commands[i]->summary);
  fprintf(
      out,
      "\nGlobal options:\n"
      "  --url URL        redis://[user[:password]@]host[:port][/db],\n"
      "                   rediss://... (TLS), redis+cluster://host:port,...,\n"
      "                   rediss+cluster://... or\n"
      "                   unix://[user[:password]@]/path[?db=N]\n"
      "                   (overrides CACHET_URL)\n"
      "  --prefix PREFIX  key prefix (overrides CACHET_KEY_PREFIX)\n"
      "  --tls-ca FILE    CA bundle that verifies the server (default: the\n"
      "                   system trust store; CACHET_TLS_CA_FILE)\n"
      "  --tls-ca-dir DIR hashed CA directory (CACHET_TLS_CA_DIR)\n"
      "  --tls-cert FILE  client certificate, for mutual TLS "
      "(CACHET_TLS_CERT)\n"
      "  --tls-key FILE   its key (CACHET_TLS_KEY)\n"
      "  --tls-server-name NAME\n"
      "                   the name to verify and send as SNI (default: the\n"
      "                   host; CACHET_TLS_SERVER_NAME)\n"
      "  --insecure       do not verify the server's certificate (a warning\n"
      "                   on stderr; CACHET_TLS_INSECURE)\n"
      "  --version        print the version\n"
      "  -h, --help       this help\n\n"
      "Environment: CACHET_URL, CACHET_HOST, CACHET_PORT, CACHET_DB,\n"
      "CACHET_USERNAME, CACHET_PASSWORD, CACHET_USE_TLS, CACHET_TLS_*,\n"
      "CACHET_KEY_PREFIX, CACHET_TIMEOUT_MS, CACHET_POOL_SIZE,\n"
      "CACHET_MULTIPLEX, "
      "CACHET_KEYS, CACHET_KEYS_FILE, CACHET_ENCRYPT,\n"
      "CACHET_ACCEPT_UNSEALED (defaults: cachet(1) and the README).\n\n"
      "Exit codes:\n"
      "  0  success or hit\n"
      "  1  miss, absent, or not acquired\n"
      "  2  usage or invalid configuration\n"
      "  3  connection, server or timeout error (message on stderr)\n"
      "  4  integrity or format error\n");
}

/* The field a global option with a value sets ("--url" or "--url=..."),
 * or NULL. */
static const char **global_value(cli *cl, const char *a) {
  static const struct {
    const char *name;
    size_t off;
  } opts[] = {
      {"--url", offsetof(cli, url)},
      {"--prefix", offsetof(cli, prefix)},
      {"--tls-ca", offsetof(cli, tls_ca)},
      {"--tls-ca-dir", offsetof(cli, tls_ca_dir)},
      {"--tls-cert", offsetof(cli, tls_cert)},
      {"--tls-key", offsetof(cli, tls_key)},
      {"--tls-server-name", offsetof(cli, tls_server_name)},
  };
  size_t n = strcspn(a, "=");
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
    if (strlen(opts[i].name) == n && strncmp(a, opts[i].name, n) == 0)
      return (const char **)(void *)((char *)cl + opts[i].off);
  return NULL;
}

int main(int argc, char **argv) {
  cli cl = {0};
  /* A write to a closed connection or pipe is an error we report, not a
   * reason to die; this also spares the library its SIGPIPE guard. */
  signal(SIGPIPE, SIG_IGN);
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char **val = global_value(&cl, a);
    size_t eq = strcspn(a, "=");
    if (val != NULL && a[eq] == '=') {
      *val = a + eq + 1;
    } else if (val != NULL) {
      if (i + 1 >= argc) {
        fprintf(stderr, "cachet: %s needs a value\n", a);
        return EXIT_USAGE;
      }
      *val = argv[++i];
    } else if (strcmp(a, "--insecure") == 0) {
      cl.insecure = 1;
    } else if (cli_is_help(a)) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0) {
      printf("cachet %s\n", CACHET_VERSION_STRING);
      return 0;
    } else if (strcmp(a, "--") == 0) { /* POSIX: the end of the options */
      i++;
      break;
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

void cli_options(const cli *cl, cachet_options *o) {
  cachet_options_init(o);
  o->use_env = 1;
  o->url = cl->url;
  o->prefix = cl->prefix;
  o->tls_ca_file = cl->tls_ca;
  o->tls_ca_dir = cl->tls_ca_dir;
  o->tls_cert = cl->tls_cert;
  o->tls_key = cl->tls_key;
  o->tls_server_name = cl->tls_server_name;
  if (cl->insecure)
    o->tls_insecure = 1;
  if (isatty(STDERR_FILENO))
    o->progress = cli_progress;
}

cachet *cli_handle(cli *cl, int *exit_code) {
  if (cl->c != NULL)
    return cl->c;
  cachet_options o;
  cli_options(cl, &o);
  int rc = cachet_open(&cl->c, &o);
  if (rc != CACHET_OK) {
    /* cachet_open connects nothing: its failures are refusals of the
     * configuration (exit 2), whatever status says why (ECONFIG, ENOTSUP,
     * EINVAL), except running out of memory or libsodium. */
    int code = cli_status(rc, "configuration");
    *exit_code =
        rc == CACHET_ENOMEM || rc == CACHET_EINTERNAL ? code : EXIT_USAGE;
    return NULL;
  }
  cachet_tool_server srv;
  cachet_tool_server_get(cl->c, &srv);
  if (srv.tls_insecure)
    fprintf(stderr, "cachet: warning: TLS without verification (--insecure "
                    "or CACHET_TLS_INSECURE): the server is not "
                    "authenticated\n");
  return cl->c;
}

int cli_status(int status, const char *what) {
  return cli_status_why(status, what, cachet_last_error());
}

int cli_status_why(int status, const char *what, const char *detail) {
  if (status == CACHET_OK)
    return EXIT_HIT;
  if (status > 0)
    return EXIT_MISS;
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

/* Read at most `max` bytes: the buffer grows by doubling but never past
 * max + 1, the one byte that tells an input too large from one that fits,
 * so an endless source costs a bounded amount of memory. */
int cli_read_stream(FILE *f, size_t max, char **buf, size_t *len) {
  size_t cap = max < 4096 ? max + 1 : 4096, n = 0;
  char *b = malloc(cap);
  if (b == NULL)
    return CLI_READ_ERROR;
  for (;;) {
    if (n == cap) {
      if (n > max) {
        free(b);
        return CLI_READ_TOO_LARGE;
      }
      size_t ncap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
      char *nb = realloc(b, ncap);
      if (nb == NULL) {
        free(b);
        return CLI_READ_ERROR;
      }
      b = nb;
      cap = ncap;
    }
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        free(b);
        return CLI_READ_ERROR;
      }
      break;
    }
  }
  if (n > max) {
    free(b);
    return CLI_READ_TOO_LARGE;
  }
  *buf = b;
  *len = n;
  return 0;
}

int cli_read_stdin(size_t max, char **buf, size_t *len) {
  return cli_read_stream(stdin, max, buf, len);
}

int cli_read_file(const char *path, size_t max, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return CLI_READ_ERROR;
  int rc = cli_read_stream(f, max, buf, len);
  fclose(f);
  return rc;
}

/* The length of the UTF-8 sequence at p (at most n bytes), or 0 when it
 * is not one: RFC 3629, so no overlong forms, no surrogates, nothing above
 * U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
  unsigned char c = p[0];
  if (c < 0x80)
    return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0)
      lo = 0xa0;
    else if (c == 0xed)
      hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0)
      lo = 0x90;
    else if (c == 0xf4)
      hi = 0x8f;
  } else {
    return 0;
  }
  if (n < len || p[1] < lo || p[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++)
    if (p[i] < 0x80 || p[i] > 0xbf)
      return 0;
  return len;
}

int cli_utf8_valid(const void *s, size_t len) {
  const unsigned char *p = s;
  for (size_t i = 0; i < len;) {
    size_t l = utf8_seq(p + i, len - i);
    if (l == 0)
      return 0;
    i += l;
  }
  return 1;
}

/* A JSON string: UTF-8 as itself, with JSON's required escapes; a byte
 * that starts no valid sequence becomes U+FFFD, so the output is always
 * valid JSON (cli_json_bytes is the exact form). */
void cli_json_str(FILE *out, const void *s, size_t len) {
  const unsigned char *p = s;
  fputc('"', out);
  for (size_t i = 0; i < len;) {
    unsigned char ch = p[i];
    size_t l = utf8_seq(p + i, len - i);
    if (l == 0) {
      fputs("\\ufffd", out);
      i++;
    } else if (l > 1) {
      fwrite(p + i, 1, l, out);
      i += l;
    } else {
      if (ch == '"' || ch == '\\')
        fprintf(out, "\\%c", ch);
      else if (ch == '\n')
        fputs("\\n", out);
      else if (ch == '\t')
        fputs("\\t", out);
      else if (ch == '\r')
        fputs("\\r", out);
      else if (ch < 0x20 || ch == 0x7f)
        fprintf(out, "\\u%04x", ch);
      else
        fputc(ch, out);
      i++;
    }
  }
  fputc('"', out);
}

void cli_json_bytes(FILE *out, const char *name, const void *s, size_t len) {
  if (cli_utf8_valid(s, len)) {
    fprintf(out, "\"%s\":", name);
    cli_json_str(out, s, len);
    return;
  }
  static const char b64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = s;
  fprintf(out, "\"%s_b64\":\"", name);
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < len)
      v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < len)
      v |= p[i + 2];
    char q[4] = {b64[v >> 18], b64[(v >> 12) & 63],
                 i + 1 < len ? b64[(v >> 6) & 63] : '=',
                 i + 2 < len ? b64[v & 63] : '='};
    fwrite(q, 1, 4, out);
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
