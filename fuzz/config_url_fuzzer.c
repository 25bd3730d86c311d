/* Fuzz the URL parser and the resolution of options + environment.
 *
 * Input layout: byte 0 holds flags, the rest is split at NUL bytes into
 * fields. Field 0 is a URL. Each later field is <selector><value>: the
 * selector picks one CACHET_* variable of a fake environment or, with its
 * high bit set, one explicit option (string options take the value, int and
 * size options its first bytes, little-endian). The real environment and
 * the file system are never touched: CACHET_KEYS_FILE and keys_file are
 * never set.
 *
 * Secrets are marked so that a leak into a message is detectable: password
 * and keys values start with a 0x01 byte, URLs (which may hold a password)
 * keep any 0x01 the fuzzer puts in them, and every other field has its 0x01
 * bytes replaced. A message may then never hold a 0x01 byte nor its escaped
 * form "\x01". */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "fuzz_helpers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 4096
#define MARK '\x01'

enum {
  V_URL,
  V_HOST,
  V_PORT,
  V_DB,
  V_USERNAME,
  V_PASSWORD,
  V_USE_TLS,
  V_PREFIX,
  V_TIMEOUT,
  V_POOL,
  V_KEYS,
  V_ENCRYPT,
  V_ACCEPT,
  V_MAX_VALUE,
  V_MAX_KEY,
  V_MAX_TAGS,
  V_LEASE,
  V_FETCH,
  NVARS
};

static const char *const var_names[NVARS] = {"CACHET_URL",
                                             "CACHET_HOST",
                                             "CACHET_PORT",
                                             "CACHET_DB",
                                             "CACHET_USERNAME",
                                             "CACHET_PASSWORD",
                                             "CACHET_USE_TLS",
                                             "CACHET_KEY_PREFIX",
                                             "CACHET_TIMEOUT_MS",
                                             "CACHET_POOL_SIZE",
                                             "CACHET_KEYS",
                                             "CACHET_ENCRYPT",
                                             "CACHET_ACCEPT_UNSEALED",
                                             "CACHET_MAX_VALUE_SIZE",
                                             "CACHET_MAX_KEY_SIZE",
                                             "CACHET_MAX_TAGS",
                                             "CACHET_LOCK_LEASE_MS",
                                             "CACHET_FETCH_WAIT_MS"};

typedef struct fake_env {
  const char *val[NVARS];
} fake_env;

static const char *fake_getenv(void *ud, const char *name) {
  const fake_env *e = ud;
  FUZZ_ASSERT(strcmp(name, "CACHET_KEYS_FILE") == 0 ||
              strncmp(name, "CACHET_", 7) == 0);
  for (int i = 0; i < NVARS; i++) {
    if (strcmp(var_names[i], name) == 0)
      return e->val[i];
  }
  return NULL;
}

static int is_secret(int v) { return v == V_PASSWORD || v == V_KEYS; }
static int may_hold_secret(int v) { return v == V_URL || is_secret(v); }

static int int_of(const char *v, size_t n) {
  uint32_t x = 0;
  for (size_t i = 0; i < n && i < 4; i++)
    x |= (uint32_t)(unsigned char)v[i] << (8 * i);
  return (int)x;
}

static void set_option(cachet_options *o, int v, const char *val, size_t n) {
  int x = int_of(val, n);
  switch (v) {
  case V_URL:
    o->url = val;
    break;
  case V_HOST:
    o->host = val;
    break;
  case V_PORT:
    o->port = x;
    break;
  case V_DB:
    o->db = x;
    break;
  case V_USERNAME:
    o->username = val;
    break;
  case V_PASSWORD:
    o->password = val;
    break;
  case V_USE_TLS: /* no option: use it for unix_path */
    o->unix_path = val;
    break;
  case V_PREFIX:
    o->prefix = val;
    break;
  case V_TIMEOUT:
    o->timeout_ms = x;
    break;
  case V_POOL:
    o->pool_size = x;
    break;
  case V_KEYS:
    o->keys = val;
    break;
  case V_ENCRYPT:
    o->encrypt = x;
    break;
  case V_ACCEPT:
    o->accept_unsealed = x;
    break;
  case V_MAX_VALUE:
    o->max_value_size = (size_t)(uint32_t)x;
    break;
  case V_MAX_KEY:
    o->max_key_size = (size_t)(uint32_t)x;
    break;
  case V_MAX_TAGS:
    o->max_tags = (size_t)(uint32_t)x;
    break;
  case V_LEASE:
    o->lock_lease_ms = x;
    break;
  default:
    o->fetch_wait_ms = x;
    break;
  }
}

/* No secret may reach a message, raw or escaped. */
static void check_no_leak(void) {
  const char *err = cachet_last_error();
  FUZZ_ASSERT(strchr(err, MARK) == NULL);
  FUZZ_ASSERT(strstr(err, "\\x01") == NULL);
}

static void check_failure(int rc) {
  FUZZ_ASSERT(rc == CACHET_ECONFIG || rc == CACHET_ENOTSUP ||
              rc == CACHET_ENOMEM);
  FUZZ_ASSERT(cachet_last_error()[0] != '\0');
  check_no_leak();
}

static void check_connection(const cachet_config *c) {
  FUZZ_ASSERT(c->host != NULL && c->host[0] != '\0');
  FUZZ_ASSERT(c->port >= 1 && c->port <= 65535);
  FUZZ_ASSERT(c->db >= 0);
  FUZZ_ASSERT(c->unix_path == NULL || c->unix_path[0] == '/');
  FUZZ_ASSERT(c->username == NULL || c->username[0] != '\0');
  FUZZ_ASSERT(c->password == NULL || c->password[0] != '\0');
}

static void fuzz_parse_url(const char *url) {
  cachet_config c;
  memset(&c, 0, sizeof c);
  cachet_error_clear();
  int rc = cachet_config_parse_url(&c, url, "url");
  if (rc == CACHET_OK) {
    check_connection(&c);
  } else {
    cachet_config zero;
    memset(&zero, 0, sizeof zero);
    FUZZ_ASSERT(memcmp(&c, &zero, sizeof c) == 0);
    check_failure(rc);
  }
  cachet_config_free(&c);

  /* Over a filled struct: replaced on success, untouched on failure. */
  FUZZ_ASSERT(cachet_config_parse_url(&c, "redis://u:p@prev:7/3", "url") ==
              CACHET_OK);
  rc = cachet_config_parse_url(&c, url, "CACHET_URL");
  if (rc == CACHET_OK) {
    check_connection(&c);
  } else {
    FUZZ_ASSERT(strcmp(c.host, "prev") == 0 && c.port == 7 && c.db == 3);
    FUZZ_ASSERT(strcmp(c.password, "p") == 0);
    check_failure(rc);
  }
  cachet_config_free(&c);
}

static void fuzz_resolve(const cachet_options *o, fake_env *e) {
  cachet_config c;
  memset(&c, 0xa5, sizeof c);
  cachet_error_clear();
  int rc = cachet_config_resolve(&c, o, fake_getenv, e);
  if (rc == CACHET_OK) {
    check_connection(&c);
    FUZZ_ASSERT(c.timeout_ms > 0);
    FUZZ_ASSERT(c.pool_size >= 1 && c.pool_size <= 1024);
    FUZZ_ASSERT(c.prefix != NULL && strlen(c.prefix) == c.prefixlen);
    FUZZ_ASSERT(c.prefixlen <= 256 && strpbrk(c.prefix, "{}") == NULL);
    FUZZ_ASSERT(c.encrypt == 0 || c.encrypt == 1);
    FUZZ_ASSERT(c.accept_unsealed == 0 || c.accept_unsealed == 1);
    FUZZ_ASSERT(c.max_value_size > 0 && c.max_key_size > 0 && c.max_tags > 0);
    FUZZ_ASSERT(c.lock_lease_ms >= 100 && c.fetch_wait_ms > 0);
    FUZZ_ASSERT(c.keys == NULL || c.keys[0] != '\0');
  } else {
    cachet_config zero;
    memset(&zero, 0, sizeof zero);
    FUZZ_ASSERT(memcmp(&c, &zero, sizeof c) == 0);
    check_failure(rc);
  }
  cachet_config_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > MAX_INPUT)
    return 0;
  unsigned flags = data[0];
  /* Room for a 0x01 mark before each field and a NUL after it. */
  char *buf = malloc(2 * size + 2);
  FUZZ_ASSERT(buf != NULL);

  const char *fields[MAX_INPUT];
  size_t lens[MAX_INPUT];
  size_t nf = 0, o = 0, start = 1;
  for (size_t i = 1; i <= size; i++) {
    if (i < size && data[i] != 0)
      continue;
    fields[nf] = buf + o;
    lens[nf] = i - start;
    memcpy(buf + o, data + start, i - start);
    o += i - start;
    buf[o++] = '\0';
    nf++;
    start = i + 1;
  }

  cachet_options opts;
  cachet_options_init(&opts);
  fake_env env;
  memset(&env, 0, sizeof env);
  opts.use_env = (flags & 1) != 0;

  /* Secret-marked copies are built in a second buffer. */
  char *marked = malloc(size + 2 * nf + 2);
  FUZZ_ASSERT(marked != NULL);
  size_t mo = 0;

  const char *url = fields[0];
  if (flags & 2)
    opts.url = url;
  else if (flags & 4)
    env.val[V_URL] = url;

  for (size_t f = 1; f < nf; f++) {
    if (lens[f] == 0)
      continue;
    unsigned sel = (unsigned char)fields[f][0];
    int v = (int)((sel & 0x7f) % NVARS);
    char *val = marked + mo;
    size_t n = lens[f] - 1;
    if (is_secret(v))
      marked[mo++] = MARK;
    memcpy(marked + mo, fields[f] + 1, n);
    for (size_t k = 0; k < n && !may_hold_secret(v); k++) {
      if (marked[mo + k] == MARK)
        marked[mo + k] = '\x02';
    }
    mo += n;
    marked[mo++] = '\0';
    if (sel & 0x80)
      set_option(&opts, v, val, n);
    else
      env.val[v] = val;
  }

  fuzz_parse_url(url);
  fuzz_resolve(&opts, &env);

  free(marked);
  free(buf);
  return 0;
}
