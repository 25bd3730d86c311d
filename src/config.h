/* Configuration: options + environment + URL, resolved into one struct.
 * Pure: no sockets. The only I/O is reading CACHET_KEYS_FILE. Internal. */
#ifndef CACHET_CONFIG_H
#define CACHET_CONFIG_H

#include <stddef.h>

#include "cachet.h"

/* Fully resolved settings. Every string is owned (malloc'd) and freed by
 * cachet_config_free(); `keys` and `password` are zeroed first. */
typedef struct cachet_config {
  char *host;      /* Never NULL after resolve. */
  int port;        /* 1..65535 */
  char *unix_path; /* NULL unless a unix socket is used. */
  int db;          /* 0..INT_MAX */
  char *username;  /* May be NULL. */
  char *password;  /* May be NULL. */
  char *prefix;    /* Never NULL; may be "". No '{' or '}'. */
  size_t prefixlen;
  int timeout_ms;      /* > 0 */
  int pool_size;       /* > 0 */
  int multiplex;       /* 0 (off), or multiplexed connections (mux.h) */
  char *keys;          /* Keyring text or NULL. */
  int encrypt;         /* 0/1 */
  int accept_unsealed; /* 0/1 */
  size_t max_value_size;
  size_t max_key_size;
  size_t max_tags;
  int lock_lease_ms;
  int fetch_wait_ms;
  int cluster;       /* 0/1: Redis Cluster mode. */
  int tls;           /* 0/1: TLS to every server (rediss://) */
  char *tls_ca_file; /* NULL: the system trust store (with tls_ca_dir) */
  char *tls_ca_dir;
  char *tls_cert;        /* client certificate (mutual TLS), or NULL */
  char *tls_key;         /* its key, or NULL */
  char *tls_server_name; /* SNI and the name verified; NULL: the host */
  int tls_insecure;      /* 0/1: skip verification (never the default) */
  size_t near_bytes;     /* 0: no near cache (near.h) */
  int near_ttl_ms;       /* > 0 */
  char *cluster_seeds;   /* Cluster mode: "host:port[,host:port...]" (IPv6
                            hosts in brackets), never NULL; else NULL. */
} cachet_config;

/* Looks a variable up; returns NULL when unset. `ud` is passed through. */
typedef const char *(*cachet_getenv_fn)(void *ud, const char *name);

/*
 * Resolve `opts` into `out`. For each setting: the explicit field of `opts`
 * if set (see cachet_options_init for the "unset" values), else, when
 * opts->use_env is set, the CACHET_* variable looked up through `getenv_fn`,
 * else the default documented in cachet.h.
 *
 * Connection settings come as a group. A URL (opts->url, else CACHET_URL)
 * gives host, port, unix_path, db, username and password at once, and fills
 * the ones it lacks with their defaults; explicit fields still override it
 * one by one (an explicit host also drops a unix:// URL's socket, an
 * explicit unix_path wins over everything). With any URL, the split
 * variables CACHET_HOST, CACHET_PORT, CACHET_DB, CACHET_USERNAME and
 * CACHET_PASSWORD are ignored; with opts->url, CACHET_URL is ignored too.
 * TLS is on with a rediss URL, or the use_tls option, or CACHET_USE_TLS;
 * its settings (tls_* options, CACHET_TLS_* variables) are refused while
 * it is off, and over a unix socket.
 *
 * An empty variable counts as unset, except CACHET_KEY_PREFIX, where "" is
 * the empty prefix. CACHET_KEYS and CACHET_KEYS_FILE (or keys and keys_file)
 * together are refused. The keys file is read whole (at most 64 KiB, trailing
 * whitespace removed); it is the only I/O this function does.
 *
 * `getenv_fn` NULL means getenv(3) on the process environment. getenv is
 * not safe against a concurrent setenv/putenv in another thread, so a
 * program that changes its environment must not do so while a handle is
 * being opened. Apart from that, this function is thread-safe: it has no
 * global state.
 *
 * On failure returns CACHET_ECONFIG (CACHET_ENOMEM,
 * CACHET_EINVAL for NULL arguments) with a detail that names the option or
 * variable and quotes the bad value, escaped and truncated. A password, the
 * keys, the keys file's content and any URL are never quoted. `out` is then
 * left zeroed, with nothing allocated.
 */
int cachet_config_resolve(cachet_config *out, const cachet_options *opts,
                          cachet_getenv_fn getenv_fn, void *ud);

/*
 * Parse a URL into host/port/unix_path/db/username/password of `cfg`,
 * replacing (and freeing, secrets zeroed) what was there; fields the URL
 * lacks get their defaults (localhost, 6379, db 0, no user or password). On
 * failure `cfg` is unchanged.
 *
 *   redis://[user[:password]@]host[:port][/db][?db=N]
 *   redis+cluster://[user[:password]@]host[:port][,host[:port]...]
 *   unix:///absolute/path[?db=N]
 *   rediss://... and rediss+cluster://...: the same, and `tls` set
 *
 * The user information runs to the last '@', so an unescaped '@', '/' or ':'
 * in a password still parses; %XX escapes in user and password are decoded
 * (malformed escapes and %00 are refused); an empty user or password means
 * none. The host may be an IPv6 literal in brackets ([::1]) and must not be
 * empty. The database may be given once, as /N or ?db=N; no other query
 * parameter is known. redis+cluster:// sets `cluster` and `cluster_seeds`
 * (every listed node is a seed; host and port are the first one's) and
 * refuses a database other than 0; the other schemes clear them.
 * Any other scheme is CACHET_ECONFIG. `what` names the source in error
 * messages ("CACHET_URL" or "url"); messages never quote the URL, since it
 * may hold a password. Pure: no I/O.
 */
int cachet_config_parse_url(cachet_config *cfg, const char *url,
                            const char *what);

/* Free every owned string (password, username and keys zeroed first with
 * sodium_memzero) and zero the struct. NULL is a no-op. */
void cachet_config_free(cachet_config *cfg);

#endif
