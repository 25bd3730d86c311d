/* Configuration: options + environment + URL, resolved into one struct.
 * Pure: no sockets. The only I/O is reading CACHET_KEYS_FILE. Internal. */
#ifndef CACHET_CONFIG_H
#define CACHET_CONFIG_H

#include <stddef.h>

#include "cachet.h"

/* Fully resolved settings. Every string is owned (malloc'd) and freed by
 * cachet_config_free(); `keys` and `password` are zeroed first. */
typedef struct cachet_config {
  char *host;        /* Never NULL after resolve. */
  int port;          /* 1..65535 */
  char *unix_path;   /* NULL unless a unix socket is used. */
  int db;            /* 0..INT_MAX */
  char *username;    /* May be NULL. */
  char *password;    /* May be NULL. */
  char *prefix;      /* Never NULL; may be "". No '{' or '}'. */
  size_t prefixlen;
  int timeout_ms;    /* > 0 */
  int pool_size;     /* > 0 */
  char *keys;        /* Keyring text or NULL. */
  int encrypt;       /* 0/1 */
  int accept_unsealed; /* 0/1 */
  size_t max_value_size;
  size_t max_key_size;
  size_t max_tags;
  int lock_lease_ms;
  int fetch_wait_ms;
} cachet_config;

/* Looks a variable up; returns NULL when unset. `ud` is passed through. */
typedef const char *(*cachet_getenv_fn)(void *ud, const char *name);

/*
 * Resolve `opts` (explicit fields win), then, when opts->use_env is set, the
 * variables through `getenv_fn` (NULL means the process environment), then
 * the defaults. On failure returns CACHET_ECONFIG or CACHET_ENOTSUP with a
 * detail that names the option or variable and quotes the bad value (never a
 * password or key), and `out` is left zeroed.
 */
int cachet_config_resolve(cachet_config *out, const cachet_options *opts,
                          cachet_getenv_fn getenv_fn, void *ud);

/*
 * Parse a redis:// or unix:// URL into host/port/unix_path/db/username/
 * password of `cfg`, replacing what was there. `what` names the source in
 * error messages ("CACHET_URL" or "url"). Percent-escapes in user and
 * password are decoded. rediss:// gives CACHET_ENOTSUP "TLS not supported
 * yet". Pure.
 */
int cachet_config_parse_url(cachet_config *cfg, const char *url,
                            const char *what);

/* Free every owned string (secrets zeroed) and zero the struct. */
void cachet_config_free(cachet_config *cfg);

#endif
