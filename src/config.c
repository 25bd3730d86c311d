/* Configuration: options, environment and URL, resolved into one struct.
 *
 * Pure: no sockets, no global state. The only I/O is reading a keys file.
 * Every failure leaves a detail that names the option or variable; values
 * are quoted (escaped and truncated) except secrets and URLs, which may hold
 * a password and are never quoted at all. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "error.h"

#define DEFAULT_HOST "localhost"
#define DEFAULT_PORT 6379
#define DEFAULT_DB 0
#define DEFAULT_PREFIX "cachet:"
#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_POOL_SIZE 8
#define DEFAULT_MAX_VALUE_SIZE ((size_t)64 * 1024 * 1024)
#define DEFAULT_MAX_KEY_SIZE ((size_t)64 * 1024)
#define DEFAULT_MAX_TAGS ((size_t)32)
#define DEFAULT_LOCK_LEASE_MS 3000
#define DEFAULT_NEAR_TTL_MS 60000
#define NEAR_MIN_BYTES (64 * 1024) /* CACHET_NEAR_MIN_BYTES */
#define DEFAULT_FETCH_WAIT_MS 30000

#define PREFIX_MAX 256
#define HOST_MAX 255
#define MS_MAX 86400000 /* 24 hours */
#define POOL_MAX 1024
#define MULTIPLEX_MAX 64
#define LEASE_MIN 100
#define KEYS_FILE_MAX (64 * 1024)
#define QUOTE_MAX 64 /* Bytes of a value quoted in a message before "...". */

/* Longest unix socket path the kernel accepts, without the NUL. */
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* Where unset fields are looked up: the caller's getenv, when use_env. */
typedef struct env {
  cachet_getenv_fn fn;
  void *ud;
  int on;
} env;

/* A quoted value for an error message. */
typedef struct quoted {
  char s[QUOTE_MAX * 4 + 8];
} quoted;

static const char *process_getenv(void *ud, const char *name) {
  (void)ud;
  return getenv(name);
}

/* The raw value of a variable, or NULL when use_env is off or it is unset. */
static const char *env_raw(const env *e, const char *name) {
  if (!e->on)
    return NULL;
  return e->fn(e->ud, name);
}

/* Like env_raw, but an empty variable counts as unset: `FOO=` in a compose
 * file or a shell script usually means "no value", not "the empty value".
 * CACHET_KEY_PREFIX is the one variable where empty is meaningful. */
static const char *env_get(const env *e, const char *name) {
  const char *v = env_raw(e, name);
  return (v == NULL || v[0] == '\0') ? NULL : v;
}

/* Render `v` as "..." for a message: printable ASCII kept, anything else
 * (quotes and backslashes too) as \xNN, cut after QUOTE_MAX bytes. Escaping
 * keeps a hostile value from forging lines in a log. Never use it on a
 * password, keys or a URL. */
static const char *quote(quoted *q, const char *v) {
  size_t o = 0, i;
  q->s[o++] = '"';
  for (i = 0; v[i] != '\0' && i < QUOTE_MAX; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
      q->s[o++] = (char)ch;
    } else {
      snprintf(q->s + o, sizeof q->s - o, "\\x%02x", ch);
      o += 4;
    }
  }
  q->s[o++] = '"';
  if (v[i] != '\0') {
    memcpy(q->s + o, "...", 3);
    o += 3;
  }
  q->s[o] = '\0';
  return q->s;
}

static char *dup_n(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p != NULL) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* Free a string that may hold a secret, zeroing it first. */
static void free_secret(char *s) {
  if (s != NULL) {
    sodium_memzero(s, strlen(s));
    free(s);
  }
}

static int oom(void) {
  return cachet_fail(CACHET_ENOMEM, "out of memory resolving configuration");
}

/* Replace *dst by a copy of `src` (NULL allowed); the old value is zeroed,
 * since it may be a password. */
static int set_str(char **dst, const char *src) {
  char *p = NULL;
  if (src != NULL && (p = dup_n(src, strlen(src))) == NULL)
    return oom();
  free_secret(*dst);
  *dst = p;
  return CACHET_OK;
}

/* Strict decimal: one or more ASCII digits and nothing else (no sign, no
 * spaces, no trailing junk), at most `max`. strtol would accept " +12x". */
static int parse_digits(const char *s, size_t n, unsigned long long max,
                        unsigned long long *out) {
  unsigned long long v = 0;
  if (n == 0)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (max - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive, locale-free comparison of a NUL-terminated string. */
static int eq_nocase(const char *a, const char *b) {
  while (*a != '\0' && lower(*a) == lower(*b)) {
    a++;
    b++;
  }
  return lower(*a) == lower(*b);
}

static int starts_nocase(const char *s, const char *prefix) {
  for (; *prefix != '\0'; s++, prefix++) {
    if (*s == '\0' || lower(*s) != lower(*prefix))
      return 0;
  }
  return 1;
}

static int parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (eq_nocase(s, yes[i])) {
      *out = 1;
      return 0;
    }
    if (eq_nocase(s, no[i])) {
      *out = 0;
      return 0;
    }
  }
  return -1;
}

/* Host names and IP literals as getaddrinfo takes them: letters, digits,
 * '.', '-', '_', and ':' and '%' for IPv6 with a zone. Anything else (a '/',
 * '@', a space) is a mistake we can name now rather than a DNS error later. */
static int host_ok(const char *h, size_t n, int allow_colon) {
  if (n == 0 || n > HOST_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = h[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
             (allow_colon && (c == ':' || c == '%'));
    if (!ok)
      return 0;
  }
  return 1;
}

/* ---- URL --------------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Decode %XX escapes of s[0..n) into a new string. Returns CACHET_OK, 1 on
 * a malformed escape or an escaped NUL (which would cut the string short
 * when it is later sent as a C string), or CACHET_ENOMEM. */
static int pct_decode(const char *s, size_t n, char **out) {
  char *p = malloc(n + 1);
  size_t o = 0;
  if (p == NULL)
    return oom();
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      p[o++] = s[i];
      continue;
    }
    if (n - i < 3 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0 ||
        (s[i + 1] == '0' && s[i + 2] == '0')) {
      sodium_memzero(p, n + 1);
      free(p);
      return 1;
    }
    p[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
    i += 2;
  }
  p[o] = '\0';
  *out = p;
  return CACHET_OK;
}

/* The query of a URL: only "db=N" is known, and the database may be given
 * once (path or query). Unknown names are refused rather than ignored, so a
 * "?password=..." that we would silently drop is caught. Names and values
 * are not quoted: the query is part of a URL. */
static int parse_query(const char *q, size_t n, const char *what, int *db,
                       int *have_db) {
  size_t i = 0;
  while (i <= n) {
    size_t j = i;
    while (j < n && q[j] != '&')
      j++;
    const char *eqs = memchr(q + i, '=', j - i);
    if (eqs == NULL || (size_t)(eqs - (q + i)) != 2 || memcmp(q + i, "db", 2))
      return cachet_fail(CACHET_ECONFIG,
                         "%s: unknown query parameter (only db=N is known)",
                         what);
    unsigned long long v;
    const char *val = eqs + 1;
    if (parse_digits(val, (size_t)(q + j - val), INT_MAX, &v) != 0)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: db= is not a database number (>= 0)", what);
    if (*have_db)
      return cachet_fail(CACHET_ECONFIG, "%s: the database is given twice",
                         what);
    *db = (int)v;
    *have_db = 1;
    i = j + 1;
  }
  return CACHET_OK;
}

/* The user information rest[0 .. at): "user", "user:password" or
 * ":password", percent-decoded. The password runs from the first ':', so
 * it may hold anything; the user name may not hold '/', '?', '#', '[' or
 * ']': with them, the '@' most likely belongs to something else. */
static int parse_userinfo(const char *rest, const char *at, const char *what,
                          char **user, char **pass) {
  const char *colon = memchr(rest, ':', (size_t)(at - rest));
  size_t ulen = (size_t)((colon != NULL ? colon : at) - rest);
  int rc;
  for (size_t i = 0; i < ulen; i++) {
    if (strchr("/?#[]", rest[i]) != NULL)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: invalid character in the user name "
                         "(percent-encode it)",
                         what);
  }
  if (ulen > 0) {
    rc = pct_decode(rest, ulen, user);
    if (rc == 1)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: malformed percent-escape in the user name", what);
    if (rc != CACHET_OK)
      return rc;
  }
  if (colon != NULL && colon + 1 < at) {
    rc = pct_decode(colon + 1, (size_t)(at - colon - 1), pass);
    if (rc == 1)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: malformed percent-escape in the password", what);
    if (rc != CACHET_OK)
      return rc;
  }
  return CACHET_OK;
}

/* unix://[user[:password]@]/abs/path[?db=N]. The path is taken as written
 * (no escapes): socket paths may legitimately hold '@' or '%'. Credentials
 * come before the path's leading '/': the user information runs to the last
 * '@' before the first '/' (a password holding '/' must be escaped). */
static int parse_unix(const char *rest, const char *what, char **path, int *db,
                      char **user, char **pass) {
  if (rest[0] != '/') {
    const char *slash = strchr(rest, '/');
    const char *at = NULL;
    for (const char *p = rest; slash != NULL && p < slash; p++)
      if (*p == '@')
        at = p;
    if (at == NULL || at + 1 != slash)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: the unix socket path must be absolute "
                         "(unix:///path/to/socket)",
                         what);
    int rc = parse_userinfo(rest, at, what, user, pass);
    if (rc != CACHET_OK)
      return rc;
    rest = slash;
  }
  size_t n = strcspn(rest, "?#");
  int have_db = 0;
  if (rest[n] == '#')
    return cachet_fail(CACHET_ECONFIG,
                       "%s: a URL fragment ('#') is not supported", what);
  if (n == 0 || rest[0] != '/')
    return cachet_fail(CACHET_ECONFIG,
                       "%s: the unix socket path must be absolute "
                       "(unix:///path/to/socket)",
                       what);
  if (n > SUN_PATH_MAX)
    return cachet_fail(CACHET_ECONFIG,
                       "%s: the unix socket path is longer than %zu bytes",
                       what, (size_t)SUN_PATH_MAX);
  *db = DEFAULT_DB;
  if (rest[n] == '?') {
    int rc =
        parse_query(rest + n + 1, strlen(rest + n + 1), what, db, &have_db);
    if (rc != CACHET_OK)
      return rc;
  }
  if ((*path = dup_n(rest, n)) == NULL)
    return oom();
  return CACHET_OK;
}

/* redis://[user[:password]@]host[:port][/db][?db=N]
 *
 * The user information runs to the LAST '@', and the password from the
 * first ':' in it, so a password holding an unescaped '@', '/', '?' or ':'
 * still parses as a password and never ends up in a host or port that a
 * message might describe. The user name may not hold '/', '?', '#', '[' or
 * ']': with them, the '@' most likely belongs to something else. */
static int parse_tcp(const char *rest, const char *what, char **host, int *port,
                     int *db, char **user, char **pass) {
  const char *at = strrchr(rest, '@');
  const char *hp = rest;
  int rc;
  if (at != NULL) {
    if ((rc = parse_userinfo(rest, at, what, user, pass)) != CACHET_OK)
      return rc;
    hp = at + 1;
  }

  size_t hplen = strcspn(hp, "/?#");
  const char *hend = hp + hplen;
  const char *h = hp, *pstr = NULL;
  size_t hlen;
  int bracket = 0;
  if (hp[0] == '[') {
    const char *close = memchr(hp, ']', hplen);
    if (close == NULL)
      return cachet_fail(CACHET_ECONFIG, "%s: unterminated '[' in the host",
                         what);
    h = hp + 1;
    hlen = (size_t)(close - h);
    bracket = 1;
    if (close + 1 < hend) {
      if (close[1] != ':')
        return cachet_fail(CACHET_ECONFIG,
                           "%s: unexpected text after the IPv6 address", what);
      pstr = close + 2;
    }
  } else {
    const char *colon = memchr(hp, ':', hplen);
    hlen = colon != NULL ? (size_t)(colon - hp) : hplen;
    if (colon != NULL)
      pstr = colon + 1;
  }
  if (hlen == 0)
    return cachet_fail(CACHET_ECONFIG, "%s: the host is empty", what);
  if (!host_ok(h, hlen, bracket) || (bracket && memchr(h, ':', hlen) == NULL))
    return cachet_fail(CACHET_ECONFIG, "%s: invalid character in the host",
                       what);

  *port = DEFAULT_PORT;
  if (pstr != NULL) {
    unsigned long long v;
    if (parse_digits(pstr, (size_t)(hend - pstr), 65535, &v) != 0 || v == 0)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: bad port, expected a port number (1-65535)",
                         what);
    *port = (int)v;
  }

  *db = DEFAULT_DB;
  int have_db = 0;
  const char *p = hend;
  if (*p == '/') {
    p++;
    size_t dlen = strcspn(p, "?#");
    if (dlen > 0) {
      unsigned long long v;
      if (parse_digits(p, dlen, INT_MAX, &v) != 0)
        return cachet_fail(CACHET_ECONFIG,
                           "%s: the path is not a database number (/N, "
                           "N >= 0)",
                           what);
      *db = (int)v;
      have_db = 1;
    }
    p += dlen;
  }
  if (*p == '?') {
    size_t qlen = strcspn(p + 1, "#");
    rc = parse_query(p + 1, qlen, what, db, &have_db);
    if (rc != CACHET_OK)
      return rc;
    p += 1 + qlen;
  }
  if (*p == '#')
    return cachet_fail(CACHET_ECONFIG,
                       "%s: a URL fragment ('#') is not supported", what);

  if ((*host = dup_n(h, hlen)) == NULL)
    return oom();
  return CACHET_OK;
}

#define CLUSTER_SEEDS_MAX 64

/* Append "host:port" (IPv6 in brackets) to a comma-separated seed list. */
static int seeds_add(char **list, size_t *len, const char *host, int port) {
  int v6 = strchr(host, ':') != NULL;
  size_t need = strlen(host) + 16;
  char *p = realloc(*list, *len + need);
  if (p == NULL)
    return oom();
  *list = p;
  *len += (size_t)snprintf(p + *len, need, "%s%s%s%s:%d", *len ? "," : "",
                           v6 ? "[" : "", host, v6 ? "]" : "", port);
  return CACHET_OK;
}

/* redis+cluster://[user[:password]@]host[:port][,host[:port]...][?...]
 *
 * The first node is parsed with everything around it (user information,
 * database, query) exactly as a redis:// URL, so the same rules and messages
 * apply; the others are bare host[:port]. Every node is a seed. A cluster
 * has only database 0. */
static int parse_cluster(const char *rest, const char *what, char **host,
                         int *port, int *db, char **user, char **pass,
                         char **seeds) {
  const char *at = strrchr(rest, '@');
  const char *hosts = at != NULL ? at + 1 : rest;
  size_t hlen = strcspn(hosts, "/?#");
  const char *comma = memchr(hosts, ',', hlen);
  size_t firstlen = comma != NULL ? (size_t)(comma - hosts) : hlen;
  size_t seedslen = 0;
  int rc;

  /* The first node with the user information and the tail around it. */
  size_t pre = (size_t)(hosts - rest), tail = strlen(hosts + hlen);
  char *first = malloc(pre + firstlen + tail + 1);
  if (first == NULL)
    return oom();
  memcpy(first, rest, pre);
  memcpy(first + pre, hosts, firstlen);
  memcpy(first + pre + firstlen, hosts + hlen, tail + 1);
  rc = parse_tcp(first, what, host, port, db, user, pass);
  sodium_memzero(first, pre + firstlen + tail);
  free(first);
  if (rc == CACHET_OK && *db != 0)
    rc = cachet_fail(CACHET_ECONFIG,
                     "%s: a cluster has only database 0 (no /N or db=)", what);
  if (rc == CACHET_OK)
    rc = seeds_add(seeds, &seedslen, *host, *port);

  int n = 1;
  for (size_t i = firstlen; rc == CACHET_OK && i < hlen;) {
    size_t j = i + 1;
    while (j < hlen && hosts[j] != ',')
      j++;
    if (++n > CLUSTER_SEEDS_MAX) {
      rc = cachet_fail(CACHET_ECONFIG, "%s: more than %d cluster nodes", what,
                       CLUSTER_SEEDS_MAX);
      break;
    }
    if (j == i + 1) {
      rc = cachet_fail(CACHET_ECONFIG, "%s: an empty node in the node list",
                       what);
      break;
    }
    char *one = dup_n(hosts + i + 1, j - i - 1);
    char *h = NULL, *u = NULL, *pw = NULL;
    int p = 0, d = 0;
    if (one == NULL) {
      rc = oom();
      break;
    }
    rc = parse_tcp(one, what, &h, &p, &d, &u, &pw);
    free(one);
    if (rc == CACHET_OK)
      rc = seeds_add(seeds, &seedslen, h, p);
    free(h);
    free_secret(u);
    free_secret(pw);
    i = j;
  }
  if (rc != CACHET_OK) {
    free(*seeds);
    *seeds = NULL;
  }
  return rc;
}

int cachet_config_parse_url(cachet_config *cfg, const char *url,
                            const char *what) {
  char *host = NULL, *path = NULL, *user = NULL, *pass = NULL, *seeds = NULL;
  int port = DEFAULT_PORT, db = DEFAULT_DB, rc;
  if (what == NULL)
    what = "url";
  if (cfg == NULL || url == NULL)
    return cachet_fail(CACHET_EINVAL, "%s: no URL given", what);

  /* rediss: the same URLs over TLS. */
  int tls = starts_nocase(url, "rediss://") ||
            starts_nocase(url, "rediss+cluster://");
  if (starts_nocase(url, "redis://") || starts_nocase(url, "rediss://")) {
    rc = parse_tcp(url + 8 + tls, what, &host, &port, &db, &user, &pass);
  } else if (starts_nocase(url, "redis+cluster://") ||
             starts_nocase(url, "rediss+cluster://")) {
    rc = parse_cluster(url + 16 + tls, what, &host, &port, &db, &user, &pass,
                       &seeds);
  } else if (starts_nocase(url, "unix://")) {
    rc = parse_unix(url + 7, what, &path, &db, &user, &pass);
    if (rc == CACHET_OK && (host = dup_n(DEFAULT_HOST, 9)) == NULL)
      rc = oom();
  } else {
    /* Name the scheme only when it looks like one: a string without "://"
     * might be anything, a bare password included. */
    const char *sep = strstr(url, "://");
    size_t slen = sep != NULL ? (size_t)(sep - url) : 0;
    int plain = slen > 0 && slen <= 16;
    for (size_t i = 0; plain && i < slen; i++) {
      char c = lower(url[i]);
      plain = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
              c == '-' || c == '.';
    }
    if (plain)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: unknown scheme \"%.*s\" (expected redis://, "
                         "rediss://, redis+cluster://, rediss+cluster:// or "
                         "unix://)",
                         what, (int)slen, url);
    return cachet_fail(CACHET_ECONFIG, "%s: not a redis:// or unix:// URL",
                       what);
  }
  if (rc != CACHET_OK) {
    free(host);
    free(path);
    free_secret(user);
    free_secret(pass);
    free(seeds);
    return rc;
  }
  free(cfg->host);
  free(cfg->cluster_seeds);
  cfg->cluster_seeds = seeds;
  cfg->cluster = seeds != NULL;
  free(cfg->unix_path);
  free_secret(cfg->username);
  free_secret(cfg->password);
  cfg->host = host;
  cfg->port = port;
  cfg->unix_path = path;
  cfg->db = db;
  cfg->username = user;
  cfg->password = pass;
  cfg->tls = tls;
  return CACHET_OK;
}

/* ---- Keys file ---------------------------------------------------------- */

/* A fixed text per errno: strerror() is not guaranteed thread-safe, and
 * strerror_r() comes in two incompatible flavours. */
static const char *errno_text(int err, char *buf, size_t n) {
  switch (err) {
  case ENOENT:
    return "no such file";
  case EACCES:
    return "permission denied";
  case EISDIR:
    return "is a directory";
  case ENOTDIR:
    return "a path component is not a directory";
  case ELOOP:
    return "too many symbolic links";
  case ENAMETOOLONG:
    return "path too long";
  case EMFILE:
  case ENFILE:
    return "too many open files";
  case ENOMEM:
    return "out of memory";
  default:
    snprintf(buf, n, "errno %d", err);
    return buf;
  }
}

static int keys_file_fail(const char *what, const char *path, int err) {
  quoted q;
  char tmp[32];
  return cachet_fail(CACHET_ECONFIG, "%s: cannot read %s: %s", what,
                     quote(&q, path), errno_text(err, tmp, sizeof tmp));
}

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

/* Read a keyring file whole, with trailing whitespace (the usual final
 * newline of a secret mounted as a file) removed. The buffer is sized once
 * for the bound so that no realloc leaves a copy of the keys behind, and it
 * is zeroed before it is freed. Messages name the path, never the text. */
static int read_keys_file(const char *path, const char *what, char **out) {
  quoted q;
  int fd;
  do {
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return keys_file_fail(what, path, errno);
  /* As ssh does with a private key: whoever else can read the file holds
   * the keys, and whoever else can write it chooses them. (A pipe, such as
   * a shell's <(...), has no such mode to check.) */
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return keys_file_fail(what, path, e);
  }
  if (S_ISREG(st.st_mode) &&
      ((st.st_mode & 077) != 0 || (st.st_uid != geteuid() && st.st_uid != 0))) {
    close(fd);
    if ((st.st_mode & 077) != 0)
      return cachet_fail(CACHET_ECONFIG,
                         "%s: %s has mode %04o: a keys file must not be "
                         "readable or writable by group or others (chmod 600 "
                         "it; in Kubernetes, give the secret defaultMode 0400)",
                         what, quote(&q, path), (unsigned)(st.st_mode & 07777));
    return cachet_fail(CACHET_ECONFIG,
                       "%s: %s belongs to uid %u: a keys file must belong to "
                       "the user that reads it (uid %u) or to root",
                       what, quote(&q, path), (unsigned)st.st_uid,
                       (unsigned)geteuid());
  }
  char *buf = malloc(KEYS_FILE_MAX + 1);
  if (buf == NULL) {
    close(fd);
    return oom();
  }
  size_t len = 0;
  int rc = CACHET_OK;
  for (;;) {
    ssize_t r = read(fd, buf + len, KEYS_FILE_MAX + 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = keys_file_fail(what, path, errno);
      break;
    }
    if (r == 0)
      break;
    len += (size_t)r;
    if (len > KEYS_FILE_MAX) {
      rc = cachet_fail(CACHET_ECONFIG, "%s: %s is larger than %d bytes", what,
                       quote(&q, path), KEYS_FILE_MAX);
      break;
    }
  }
  close(fd);
  if (rc == CACHET_OK) {
    while (len > 0 && is_space(buf[len - 1]))
      len--;
    if (memchr(buf, '\0', len) != NULL)
      rc = cachet_fail(CACHET_ECONFIG, "%s: %s contains a NUL byte", what,
                       quote(&q, path));
    else if (len == 0)
      rc =
          cachet_fail(CACHET_ECONFIG, "%s: %s is empty", what, quote(&q, path));
    else if ((*out = dup_n(buf, len)) == NULL)
      rc = oom();
  }
  sodium_memzero(buf, KEYS_FILE_MAX + 1);
  free(buf);
  return rc;
}

/* ---- Resolution --------------------------------------------------------- */

#define NOUN_PORT "a port number (1-65535)"
#define NOUN_DB "a database number (>= 0)"
#define NOUN_BOOL_ENV "a boolean (1/0, true/false, yes/no, on/off)"
#define NOUN_BOOL_OPT "a boolean (0 or 1, or -1 for unset)"
#define NOUN_HOST "a host name or IP address"

/* One int setting: the explicit value unless it equals the option's `unset`
 * sentinel, else the variable, else `def`. Both sources must fall within
 * [min, max] (min >= 0); the message names whichever one was used. */
static int resolve_int(const env *e, const char *opt, int val, int unset,
                       const char *var, int def, int min, int max,
                       const char *noun, int *out) {
  if (val != unset) {
    if (val < min || val > max)
      return cachet_fail(CACHET_ECONFIG, "%s: %d is not %s", opt, val, noun);
    *out = val;
    return CACHET_OK;
  }
  const char *v = env_get(e, var);
  if (v != NULL) {
    unsigned long long x;
    if (parse_digits(v, strlen(v), (unsigned long long)max, &x) != 0 ||
        x < (unsigned long long)min) {
      quoted q;
      return cachet_fail(CACHET_ECONFIG, "%s: %s is not %s", var, quote(&q, v),
                         noun);
    }
    *out = (int)x;
    return CACHET_OK;
  }
  *out = def;
  return CACHET_OK;
}

/* Multiplexed connections: a single server in plaintext only (mux.h). */
static int resolve_multiplex(cachet_config *cfg, const cachet_options *o,
                             const env *e) {
  int rc = resolve_int(
      e, "multiplex", o->multiplex, -1, "CACHET_MULTIPLEX", 0, 0, MULTIPLEX_MAX,
      "a number of multiplexed connections (0-64)", &cfg->multiplex);
  if (rc != CACHET_OK || cfg->multiplex == 0)
    return rc;
  if (cfg->cluster)
    return cachet_fail(CACHET_ECONFIG,
                       "multiplex: not available in cluster mode (each "
                       "command goes to the master of its slot)");
  if (cfg->tls)
    return cachet_fail(CACHET_ECONFIG,
                       "multiplex: not available over TLS (one TLS session "
                       "cannot be read and written by two threads at once)");
  return CACHET_OK;
}

/* A size_t setting; 0 is the option's "unset", so explicit values are
 * always valid. */
static int resolve_size(const env *e, size_t val, const char *var, size_t def,
                        const char *noun, size_t *out) {
  if (val != 0) {
    *out = val;
    return CACHET_OK;
  }
  const char *v = env_get(e, var);
  if (v != NULL) {
    unsigned long long x;
    if (parse_digits(v, strlen(v), SIZE_MAX, &x) != 0 || x == 0) {
      quoted q;
      return cachet_fail(CACHET_ECONFIG, "%s: %s is not %s", var, quote(&q, v),
                         noun);
    }
    *out = (size_t)x;
    return CACHET_OK;
  }
  *out = def;
  return CACHET_OK;
}

/* A 0/1 setting whose option uses -1 for unset. Default false. */
static int resolve_bool(const env *e, const char *opt, int val, const char *var,
                        int *out) {
  if (val != -1) {
    if (val != 0 && val != 1)
      return cachet_fail(CACHET_ECONFIG, "%s: %d is not %s", opt, val,
                         NOUN_BOOL_OPT);
    *out = val;
    return CACHET_OK;
  }
  const char *v = env_get(e, var);
  *out = 0;
  if (v != NULL && parse_bool(v, out) != 0) {
    quoted q;
    return cachet_fail(CACHET_ECONFIG, "%s: %s is not %s", var, quote(&q, v),
                       NOUN_BOOL_ENV);
  }
  return CACHET_OK;
}

/* Connection settings. A URL (explicit, else CACHET_URL) is a complete
 * description of where to connect, so with one the split variables
 * (CACHET_HOST, _PORT, _DB, _USERNAME, _PASSWORD) are not read at all: a
 * stray CACHET_PASSWORD must not be sent to a server the URL names. Explicit
 * fields still override the URL, one by one. */
static int resolve_connection(cachet_config *cfg, const cachet_options *o,
                              const env *e) {
  const env none = {e->fn, e->ud, 0};
  const char *url = o->url, *what = "url";
  quoted q;
  int rc;

  if (url == NULL && (url = env_get(e, "CACHET_URL")) != NULL)
    what = "CACHET_URL";
  if (url != NULL) {
    if (url[0] == '\0')
      return cachet_fail(CACHET_ECONFIG, "url: the URL is empty");
    rc = cachet_config_parse_url(cfg, url, what);
    if (rc != CACHET_OK)
      return rc;
  }
  const env *split = url != NULL ? &none : e;

  const char *host = o->host, *hname = "host";
  if (host == NULL && (host = env_get(split, "CACHET_HOST")) != NULL)
    hname = "CACHET_HOST";
  if (host != NULL) {
    if (!host_ok(host, strlen(host), 1))
      return cachet_fail(CACHET_ECONFIG, "%s: %s is not %s", hname,
                         quote(&q, host), NOUN_HOST);
    if ((rc = set_str(&cfg->host, host)) != CACHET_OK)
      return rc;
    /* An explicit host overrides a unix:// URL's socket; an explicit
     * unix_path (below) wins over both. */
    if (o->host != NULL && o->unix_path == NULL) {
      free(cfg->unix_path);
      cfg->unix_path = NULL;
    }
  }
  if (cfg->host == NULL && (rc = set_str(&cfg->host, DEFAULT_HOST)) != 0)
    return rc;

  if (url == NULL || o->port != -1) {
    rc = resolve_int(split, "port", o->port, -1, "CACHET_PORT", DEFAULT_PORT, 1,
                     65535, NOUN_PORT, &cfg->port);
    if (rc != CACHET_OK)
      return rc;
  }
  if (url == NULL || o->db != -1) {
    rc = resolve_int(split, "db", o->db, -1, "CACHET_DB", DEFAULT_DB, 0,
                     INT_MAX, NOUN_DB, &cfg->db);
    if (rc != CACHET_OK)
      return rc;
  }

  if (o->unix_path != NULL) {
    size_t n = strlen(o->unix_path);
    if (o->unix_path[0] != '/')
      return cachet_fail(CACHET_ECONFIG,
                         "unix_path: %s is not an absolute path",
                         quote(&q, o->unix_path));
    if (n > SUN_PATH_MAX)
      return cachet_fail(CACHET_ECONFIG,
                         "unix_path: %s is longer than %zu bytes",
                         quote(&q, o->unix_path), (size_t)SUN_PATH_MAX);
    if ((rc = set_str(&cfg->unix_path, o->unix_path)) != CACHET_OK)
      return rc;
  }

  /* An explicit empty user name or password means "none", overriding the
   * URL's. Neither is ever quoted. */
  const char *user = o->username, *pass = o->password;
  if (user == NULL)
    user = env_get(split, "CACHET_USERNAME");
  if (user != NULL &&
      (rc = set_str(&cfg->username, user[0] != '\0' ? user : NULL)) != 0)
    return rc;
  if (pass == NULL)
    pass = env_get(split, "CACHET_PASSWORD");
  if (pass != NULL &&
      (rc = set_str(&cfg->password, pass[0] != '\0' ? pass : NULL)) != 0)
    return rc;
  /* AUTH takes a user and a password; a user alone would silently connect
   * as the default user instead. */
  if (cfg->username != NULL && cfg->password == NULL)
    return cachet_fail(CACHET_ECONFIG,
                       "username is set but no password: AUTH needs both "
                       "(CACHET_PASSWORD, the URL, or the password option)");
  return CACHET_OK;
}

/* Cluster mode: a redis+cluster:// URL, the `cluster` option, or
 * CACHET_CLUSTER. Without a cluster URL the seed is host:port. A cluster
 * speaks TCP and has only database 0, so a unix socket or another database
 * is a configuration mistake named now, not a routing error later. */
static int resolve_cluster(cachet_config *cfg, const cachet_options *o,
                           const env *e) {
  int on = cfg->cluster;
  if (o->cluster != 1 && o->cluster != 0 && o->cluster != -1)
    return cachet_fail(CACHET_ECONFIG, "cluster: %d is not %s", o->cluster,
                       NOUN_BOOL_OPT);
  if (o->cluster == 1) {
    on = 1;
  } else if (!on) {
    const char *v = env_get(e, "CACHET_CLUSTER");
    quoted q;
    if (v != NULL && parse_bool(v, &on) != 0)
      return cachet_fail(CACHET_ECONFIG, "CACHET_CLUSTER: %s is not %s",
                         quote(&q, v), NOUN_BOOL_ENV);
  }
  if (!on)
    return CACHET_OK;
  if (cfg->unix_path != NULL)
    return cachet_fail(CACHET_ECONFIG,
                       "cluster: a cluster is reached over TCP, not a unix "
                       "socket");
  if (cfg->db != 0)
    return cachet_fail(CACHET_ECONFIG,
                       "cluster: a cluster has only database 0 (db is %d)",
                       cfg->db);
  cfg->cluster = 1;
  if (cfg->cluster_seeds == NULL) {
    size_t len = 0;
    return seeds_add(&cfg->cluster_seeds, &len, cfg->host, cfg->port);
  }
  return CACHET_OK;
}

/* TLS: a rediss:// URL, the use_tls option or CACHET_USE_TLS turns it on.
 * Its settings come from the options, else the CACHET_TLS_* variables, and
 * are refused while TLS is off: a CA file that is silently not used would
 * be a surprise of the worst kind. */
static int resolve_tls(cachet_config *cfg, const cachet_options *o,
                       const env *e) {
  static const struct {
    const char *opt, *var;
    size_t in, out;
  } files[] = {
      {"tls_ca_file", "CACHET_TLS_CA_FILE",
       offsetof(cachet_options, tls_ca_file),
       offsetof(cachet_config, tls_ca_file)},
      {"tls_ca_dir", "CACHET_TLS_CA_DIR", offsetof(cachet_options, tls_ca_dir),
       offsetof(cachet_config, tls_ca_dir)},
      {"tls_cert", "CACHET_TLS_CERT", offsetof(cachet_options, tls_cert),
       offsetof(cachet_config, tls_cert)},
      {"tls_key", "CACHET_TLS_KEY", offsetof(cachet_options, tls_key),
       offsetof(cachet_config, tls_key)},
      {"tls_server_name", "CACHET_TLS_SERVER_NAME",
       offsetof(cachet_options, tls_server_name),
       offsetof(cachet_config, tls_server_name)},
  };
  int on = 0;
  int rc = resolve_bool(e, "use_tls", o->use_tls, "CACHET_USE_TLS", &on);
  if (rc == CACHET_OK)
    rc = resolve_bool(e, "tls_insecure", o->tls_insecure, "CACHET_TLS_INSECURE",
                      &cfg->tls_insecure);
  if (rc != CACHET_OK)
    return rc;
  cfg->tls |= on;
  const char *off = "is set, but TLS is off (use rediss:// or "
                    "CACHET_USE_TLS=true)";
  if (cfg->tls_insecure && !cfg->tls)
    return cachet_fail(CACHET_ECONFIG, "tls_insecure %s", off);
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    const char *v =
        *(const char *const *)(const void *)((const char *)o + files[i].in);
    const char *name = files[i].opt;
    if (v == NULL && (v = env_get(e, files[i].var)) != NULL)
      name = files[i].var;
    if (v == NULL)
      continue;
    if (!cfg->tls)
      return cachet_fail(CACHET_ECONFIG, "%s %s", name, off);
    if (v[0] == '\0')
      return cachet_fail(CACHET_ECONFIG, "%s: the value is empty", name);
    if ((rc = set_str((char **)(void *)((char *)cfg + files[i].out), v)) !=
        CACHET_OK)
      return rc;
  }
  if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
    return cachet_fail(CACHET_ECONFIG,
                       "tls_cert and tls_key go together: mutual TLS needs "
                       "the certificate and its key");
  if (cfg->tls && cfg->unix_path != NULL)
    return cachet_fail(CACHET_ECONFIG,
                       "TLS is for TCP: Redis does not speak TLS on a unix "
                       "socket");
  return CACHET_OK;
}

/* The key prefix may be empty (a dedicated database) but may not hold a
 * brace: Redis Cluster hashes only the text between '{' and '}', and the
 * key layout places its own hash tag after the prefix. */
static int resolve_prefix(cachet_config *cfg, const cachet_options *o,
                          const env *e) {
  const char *p = o->prefix, *name = "prefix";
  quoted q;
  if (p == NULL && (p = env_raw(e, "CACHET_KEY_PREFIX")) != NULL)
    name = "CACHET_KEY_PREFIX";
  if (p == NULL)
    p = DEFAULT_PREFIX;
  size_t n = strlen(p);
  if (n > PREFIX_MAX)
    return cachet_fail(CACHET_ECONFIG, "%s: %s is %zu bytes long (at most %d)",
                       name, quote(&q, p), n, PREFIX_MAX);
  if (strpbrk(p, "{}") != NULL)
    return cachet_fail(CACHET_ECONFIG,
                       "%s: %s contains '{' or '}', which are reserved for "
                       "cluster hash tags",
                       name, quote(&q, p));
  int rc = set_str(&cfg->prefix, p);
  if (rc == CACHET_OK)
    cfg->prefixlen = n;
  return rc;
}

/* The keyring text, from keys or keys_file (explicit pair first, then the
 * variables). Giving both of a pair is refused rather than ranked: two
 * sources of keys is a deployment mistake, not a preference. */
static int resolve_keys(cachet_config *cfg, const cachet_options *o,
                        const env *e) {
  const char *k = o->keys, *f = o->keys_file;
  const char *kname = "keys", *fname = "keys_file";
  if (k != NULL && f != NULL)
    return cachet_fail(CACHET_ECONFIG,
                       "keys, keys_file: both are set; set only one");
  if (k == NULL && f == NULL) {
    k = env_get(e, "CACHET_KEYS");
    f = env_get(e, "CACHET_KEYS_FILE");
    kname = "CACHET_KEYS";
    fname = "CACHET_KEYS_FILE";
    if (k != NULL && f != NULL)
      return cachet_fail(CACHET_ECONFIG,
                         "CACHET_KEYS, CACHET_KEYS_FILE: both are set; set "
                         "only one");
  }
  if (k != NULL) {
    if (k[0] == '\0')
      return cachet_fail(CACHET_ECONFIG, "%s: the keyring is empty", kname);
    return set_str(&cfg->keys, k);
  }
  if (f != NULL) {
    if (f[0] == '\0')
      return cachet_fail(CACHET_ECONFIG, "%s: the path is empty", fname);
    return read_keys_file(f, fname, &cfg->keys);
  }
  return CACHET_OK;
}

/* The near cache: off unless given a size, and then not below the
 * smallest that holds anything (near.h). */
static int resolve_near(cachet_config *cfg, const cachet_options *o,
                        const env *e) {
  const char *v = env_get(e, "CACHET_NEAR_CACHE_BYTES");
  int rc = o->near_cache_bytes == 0 && v != NULL && strcmp(v, "0") == 0
               ? CACHET_OK /* 0 says off, as the default does */
               : resolve_size(e, o->near_cache_bytes, "CACHET_NEAR_CACHE_BYTES",
                              0, "a size in bytes (0 = off)", &cfg->near_bytes);
  if (rc == CACHET_OK && cfg->near_bytes > 0 &&
      cfg->near_bytes < NEAR_MIN_BYTES)
    rc = cachet_fail(CACHET_ECONFIG,
                     "near_cache_bytes: %zu is below the minimum (%zu)",
                     cfg->near_bytes, (size_t)NEAR_MIN_BYTES);
  if (rc == CACHET_OK)
    rc = resolve_int(e, "near_cache_ttl_ms", o->near_cache_ttl_ms, 0,
                     "CACHET_NEAR_CACHE_TTL_MS", DEFAULT_NEAR_TTL_MS, 1, MS_MAX,
                     "a lifetime in milliseconds (1-86400000)",
                     &cfg->near_ttl_ms);
  return rc;
}

int cachet_config_resolve(cachet_config *out, const cachet_options *opts,
                          cachet_getenv_fn getenv_fn, void *ud) {
  cachet_config cfg;
  memset(&cfg, 0, sizeof cfg);
  if (out == NULL)
    return cachet_fail(CACHET_EINVAL, "config: no output given");
  memset(out, 0, sizeof *out);
  if (opts == NULL)
    return cachet_fail(CACHET_EINVAL, "options must not be NULL");
  const env e = {getenv_fn != NULL ? getenv_fn : process_getenv, ud,
                 opts->use_env != 0};
  const env *pe = &e;

  int rc = resolve_connection(&cfg, opts, pe);
  if (rc == CACHET_OK)
    rc = resolve_cluster(&cfg, opts, pe);
  if (rc == CACHET_OK)
    rc = resolve_tls(&cfg, opts, pe);
  if (rc == CACHET_OK)
    rc = resolve_prefix(&cfg, opts, pe);
  if (rc == CACHET_OK)
    rc = resolve_int(pe, "timeout_ms", opts->timeout_ms, -1,
                     "CACHET_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, 1, MS_MAX,
                     "a timeout in milliseconds (1-86400000)", &cfg.timeout_ms);
  if (rc == CACHET_OK)
    rc = resolve_int(pe, "pool_size", opts->pool_size, 0, "CACHET_POOL_SIZE",
                     DEFAULT_POOL_SIZE, 1, POOL_MAX, "a pool size (1-1024)",
                     &cfg.pool_size);
  if (rc == CACHET_OK)
    rc = resolve_multiplex(&cfg, opts, pe);
  if (rc == CACHET_OK)
    rc = resolve_keys(&cfg, opts, pe);
  if (rc == CACHET_OK)
    rc = resolve_bool(pe, "encrypt", opts->encrypt, "CACHET_ENCRYPT",
                      &cfg.encrypt);
  if (rc == CACHET_OK)
    rc = resolve_bool(pe, "accept_unsealed", opts->accept_unsealed,
                      "CACHET_ACCEPT_UNSEALED", &cfg.accept_unsealed);
  if (rc == CACHET_OK)
    rc = resolve_size(pe, opts->max_value_size, "CACHET_MAX_VALUE_SIZE",
                      DEFAULT_MAX_VALUE_SIZE, "a size in bytes (> 0)",
                      &cfg.max_value_size);
  if (rc == CACHET_OK)
    rc = resolve_size(pe, opts->max_key_size, "CACHET_MAX_KEY_SIZE",
                      DEFAULT_MAX_KEY_SIZE, "a size in bytes (> 0)",
                      &cfg.max_key_size);
  if (rc == CACHET_OK)
    rc = resolve_size(pe, opts->max_tags, "CACHET_MAX_TAGS", DEFAULT_MAX_TAGS,
                      "a tag count (> 0)", &cfg.max_tags);
  if (rc == CACHET_OK)
    rc = resolve_int(pe, "lock_lease_ms", opts->lock_lease_ms, 0,
                     "CACHET_LOCK_LEASE_MS", DEFAULT_LOCK_LEASE_MS, LEASE_MIN,
                     MS_MAX, "a lock lease in milliseconds (100-86400000)",
                     &cfg.lock_lease_ms);
  if (rc == CACHET_OK)
    rc = resolve_int(pe, "fetch_wait_ms", opts->fetch_wait_ms, 0,
                     "CACHET_FETCH_WAIT_MS", DEFAULT_FETCH_WAIT_MS, 1, MS_MAX,
                     "a wait in milliseconds (1-86400000)", &cfg.fetch_wait_ms);
  if (rc == CACHET_OK)
    rc = resolve_near(&cfg, opts, pe);
  if (rc != CACHET_OK) {
    cachet_config_free(&cfg);
    return rc;
  }
  *out = cfg;
  return CACHET_OK;
}

void cachet_config_free(cachet_config *cfg) {
  if (cfg == NULL)
    return;
  free(cfg->host);
  free(cfg->unix_path);
  free_secret(cfg->username);
  free_secret(cfg->password);
  free(cfg->prefix);
  free_secret(cfg->keys);
  free(cfg->cluster_seeds);
  free(cfg->tls_ca_file);
  free(cfg->tls_ca_dir);
  free(cfg->tls_cert);
  free(cfg->tls_key);
  free(cfg->tls_server_name);
  memset(cfg, 0, sizeof *cfg);
}
