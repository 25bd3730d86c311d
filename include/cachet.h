/*
 * cachet: a Redis-backed application cache for C services.
 *
 * This is the only public header. Everything in it is prefixed cachet_ or
 * CACHET_. See docs/DESIGN.md for the key layout in Redis, the scripts'
 * contracts, the threading model and the error model, and docs/FORMAT.md for
 * the byte layout of stored values.
 *
 * Conventions that hold for every function below unless its comment says
 * otherwise:
 *
 *  - Functions return an int status: CACHET_OK (0), a positive outcome that is
 *    not an error (CACHET_MISS, CACHET_NOT_ACQUIRED, ...), or a negative error.
 *    An error is never reported as a miss and a miss is never an error.
 *  - After a negative status, cachet_last_error() returns a detail message for
 *    the calling thread (the server's own words where there are some).
 *  - CACHET_ETIMEDOUT says the reply did not come in time, not that the
 *    command did not run: a write that timed out may still land once the
 *    server resumes. The connection is dropped, so a late reply is never
 *    taken for another command's; an idempotent write can be repeated.
 *  - Out-parameters come last. They are written only on success (or on the
 *    positive outcome the comment names) and cleared on failure.
 *  - Keys and values are binary-safe byte strings (NUL bytes included). Keys
 *    must be non-empty. Tags and lock names are NUL-terminated strings.
 *  - Buffers the caller passes in are only read during the call; cachet keeps
 *    no pointer to them after it returns.
 *  - Buffers cachet returns are allocated with malloc and owned by the caller,
 *    who frees them with cachet_free() (or free()).
 *  - The library never prints, never exits and never aborts on bad input.
 *
 * Thread-safety: one cachet handle may be shared by any number of threads.
 * Each call borrows a connection from the handle's internal pool for its
 * duration (see cachet_options.pool_size), so calls on one handle run in
 * parallel up to the pool size and wait, at most timeout_ms, for a free
 * connection beyond it. When threads outnumber connections, each holds
 * connections in short slices (2 ms) rather than queueing on every call,
 * which keeps the throughput of 8 threads (docs/DESIGN.md, "Threading").
 *
 * Multiplexing (cachet_options.multiplex = N, opt-in): the calls that take
 * one step (get, exists, ttl, inspect, set, set_tags, delete, and the lock
 * calls: acquire, release, extend) go instead over N shared connections, on
 * which the requests of all threads are written together in one send and
 * their replies matched in order. A few connections then serve many
 * threads. Each request keeps its own timeout (ETIMEDOUT at timeout_ms
 * after it was queued), and a connection that fails fails every request in
 * flight on it with that status (ECONN ...), never a miss. Every other call
 * (get_or_set, batches, evict, clear, prune, health) borrows from the pool.
 *
 * Near cache (cachet_options.near_cache_bytes, opt-in): get, get_or_set
 * and each entry of mget are answered from process memory when it holds
 * the key's opened value (MAC checked and decrypted once, when it was
 * filled), and fill it when they go to Redis. One per handle, shared by all its threads
 * and by the async handle over it; its memory (keys, values, tables) stays
 * within near_cache_bytes. Redis keeps it coherent: a thread of the handle
 * holds one connection per server (per master in a cluster) subscribed to
 * invalidations of every value key of the prefix (CLIENT TRACKING in
 * broadcast mode), and drops a copy as soon as a write, delete, eviction
 * or expiry of it anywhere is announced. What that promises exactly:
 *  - once the handle has processed the invalidation of a write, no read
 *    through it returns the value before that write (a read that races
 *    the write may, as with any cache; docs/DESIGN.md, "Near cache");
 *  - the handle's own writes (set, set_tags, delete, mset, evict_tags,
 *    clear, get_or_set's write) drop their copies before they return;
 *  - when coherence is lost (the invalidation connection fails or goes
 *    silent past timeout_ms, the server restarts, the cluster gains a
 *    master) the near cache is emptied and bypassed until it is back;
 *    FLUSHDB/FLUSHALL empty it too. cachet_health_check says whether it is
 *    active (`tracking`);
 *  - a copy never lives past its entry's expiry, nor past
 *    near_cache_ttl_ms.
 * exists, ttl and inspect always go to Redis.
 *
 * Option structs, lock handles and result structs are plain data: a thread
 * may use its own freely, but must not share one with another thread
 * without its own locking.
 */
#ifndef CACHET_H
#define CACHET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CACHET_VERSION_MAJOR 0
#define CACHET_VERSION_MINOR 1
#define CACHET_VERSION_PATCH 0
#define CACHET_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define CACHET_API __attribute__((visibility("default")))
#define CACHET_NODISCARD __attribute__((warn_unused_result))
#define CACHET_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#else
#define CACHET_API
#define CACHET_NODISCARD
#define CACHET_NONNULL(...)
#endif

/*
 * Status codes. One list generates the enum, cachet_strerror() and
 * cachet_status_name(), so they cannot drift apart. Once released, a code's
 * number never changes; new codes are added at the end of their sign.
 *
 * Positive codes are outcomes, not errors. The CLI maps them to exit 1.
 * Negative codes are errors. The CLI maps EINVAL/ECONFIG to exit 2,
 * ECORRUPT/EINTEGRITY/EVERSION to exit 4, and the rest to exit 3.
 */
#define CACHET_STATUS_MAP(XX)                                                  \
  XX(OK, 0, "success")                                                         \
  XX(MISS, 1, "cache miss")                                                    \
  XX(NOT_ACQUIRED, 2, "lock not acquired")                                     \
  XX(LOCK_EXPIRED, 3, "lock had expired")                                      \
  XX(LOCK_NOT_OWNER, 4, "lock is held by another owner")                       \
  XX(EINVAL, -1, "invalid argument")                                           \
  XX(ECONFIG, -2, "invalid configuration")                                     \
  XX(ECONN, -3, "connection error")                                            \
  XX(ETIMEDOUT, -4, "timed out")                                               \
  XX(EPROTO, -5, "unexpected reply from server")                               \
  XX(ESERVER, -6, "server error")                                              \
  XX(ECORRUPT, -7, "corrupt value")                                            \
  XX(EINTEGRITY, -8, "integrity check failed")                                 \
  XX(EVERSION, -9, "value written by a newer cachet")                          \
  XX(ENOMEM, -10, "out of memory")                                             \
  XX(ENOTSUP, -11, "not supported")                                            \
  XX(ELOADER, -12, "loader failed")                                            \
  XX(EWRITER, -13, "origin writer failed")                                     \
  XX(EBUSY, -14, "gave up under contention")                                   \
  XX(EINTERNAL, -15, "internal error")

typedef enum cachet_status {
#define CACHET_XX_(name, code, text) CACHET_##name = (code),
  CACHET_STATUS_MAP(CACHET_XX_)
#undef CACHET_XX_
} cachet_status;

/* Number of negative codes; errors are -1 .. -CACHET_ERROR_COUNT. */
#define CACHET_ERROR_COUNT 15

/*
 * A static, human-readable text for a status ("cache miss"). Unknown codes
 * give "unknown status". Thread-safe. Never returns NULL.
 */
CACHET_API const char *cachet_strerror(int status);

/* The symbolic name of a status ("CACHET_MISS"). Thread-safe. */
CACHET_API const char *cachet_status_name(int status);

/*
 * The detail of the last error a cachet call returned on the calling thread,
 * for example `CACHET_PORT: "abc" is not a port number (1-65535)` or the
 * server's own "OOM command not allowed ..." text. The string is thread-local,
 * owned by cachet, and valid until the next cachet call on the same thread.
 * Never NULL; "" when there is no detail. Never contains key material.
 */
CACHET_API const char *cachet_last_error(void);

/* cachet_free() releases any buffer cachet returned. NULL is a no-op. */
CACHET_API void cachet_free(void *p);

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/* Log levels passed to cachet_options.log. */
#define CACHET_LOG_WARN 1
#define CACHET_LOG_INFO 2

/*
 * Progress callback for long, chunked operations (clear, evict, prune). `op`
 * is a static string ("clear", "evict", "prune") and `done` the running count.
 * It is called on the thread that made the call, between chunks.
 */
typedef void (*cachet_progress_fn)(void *ud, const char *op, uint64_t done);

/*
 * Options for cachet_open(). Always fill with cachet_options_init() first,
 * then set the fields you need: fields may be added at the end in later
 * versions, and init gives them their defaults.
 *
 * Precedence when the handle is opened: a field set here wins; otherwise, if
 * use_env is set, the CACHET_* environment variable; otherwise the default.
 * `url` (or CACHET_URL) supplies host, port, unix_path, db, username and
 * password at once; a field set explicitly here still overrides it.
 *
 * Strings are only read during cachet_open(), which copies them.
 */
typedef struct cachet_options {
  /* redis://[user[:password]@]host[:port][/db],
   * rediss://... (the same over TLS), redis+cluster://host:port[,...],
   * rediss+cluster://... or unix://[user[:password]@]/path[?db=N] (the
   * credentials, percent-encoded as in redis://, come before the path's
   * leading '/'). Env: CACHET_URL. */
  const char *url;
  const char *host;      /* Env CACHET_HOST, default "localhost". */
  int port;              /* Env CACHET_PORT, default 6379. -1 = unset. */
  const char *unix_path; /* A unix socket; wins over host/port. */
  int db;                /* Env CACHET_DB, default 0. -1 = unset. */
  const char *username;  /* Env CACHET_USERNAME: ACL user for AUTH. */
  const char *password;  /* Env CACHET_PASSWORD. */
  const char *prefix;    /* Env CACHET_KEY_PREFIX, default "cachet:". Must
                            not contain '{' or '}' (hash tags). */
  int timeout_ms;        /* Env CACHET_TIMEOUT_MS, default 5000. Bounds the
                            connect, each command's reply, and the wait for a
                            pooled connection. -1 = unset. */
  int pool_size;         /* Connections per handle, default 8. 0 = unset. */
  int multiplex;         /* Env CACHET_MULTIPLEX: 1-64 connections on which
                            the single-step calls of all threads are
                            pipelined together (auto-pipelining; see
                            "Multiplexing" above), besides the pool. 0 = off,
                            the default. -1 = unset. Single server without
                            TLS only (else CACHET_ECONFIG). The async API
                            pipelines on its own loop and does not use
                            these. */
  int use_env;           /* Non-zero: read CACHET_* variables for unset
                            fields. Default 0. */

  /* Keyring: comma-separated "ID:BASE64KEY" entries; the first is the active
   * writing key. Env CACHET_KEYS, or CACHET_KEYS_FILE naming a file that holds
   * the same. NULL/unset: values are stored unsealed. */
  const char *keys;
  const char *keys_file;
  int encrypt;           /* Env CACHET_ENCRYPT: 1 = AEAD, 0 = MAC only.
                            -1 = unset (default 0). Needs a keyring. */
  int accept_unsealed;   /* Env CACHET_ACCEPT_UNSEALED. With a keyring,
                            1 accepts unsealed envelopes on read, for a
                            migration. Default 0. -1 = unset. */

  size_t max_value_size; /* Largest value accepted, default 64 MiB. */
  size_t max_key_size;   /* Largest key accepted, default 64 KiB. */
  size_t max_tags;       /* Most tags per entry, default 32. */

  int lock_lease_ms;     /* get_or_set lease, renewed while the loader runs.
                            Default 3000. */
  int fetch_wait_ms;     /* Bound on a get_or_set waiter's total wait.
                            Default 30000. */

  cachet_progress_fn progress; /* Optional. */
  void *progress_ud;
  /* Optional log sink; cachet never prints. Called from any thread. */
  void (*log)(void *ud, int level, const char *msg);
  void *log_ud;

  int cluster;           /* Env CACHET_CLUSTER: 1 = Redis Cluster, seeded
                            from host/port (or a redis+cluster:// URL, which
                            turns it on by itself). -1/0 = unset (default
                            off). */

  /* TLS to every server, cluster nodes included, verified by default
   * against the CA and the host name (or IP address). A rediss:// or
   * rediss+cluster:// URL turns it on by itself. The settings below are
   * refused (CACHET_ECONFIG) while TLS is off, and a CA, certificate or
   * key file OpenSSL cannot load is refused by cachet_open. */
  int use_tls;                 /* Env CACHET_USE_TLS. -1 = unset (off). */
  const char *tls_ca_file;     /* Env CACHET_TLS_CA_FILE: PEM CA bundle.
                                  Default: the system trust store. */
  const char *tls_ca_dir;      /* Env CACHET_TLS_CA_DIR: hashed CA dir. */
  const char *tls_cert;        /* Env CACHET_TLS_CERT: a client certificate
                                  (PEM) for mutual TLS; needs tls_key. */
  const char *tls_key;         /* Env CACHET_TLS_KEY: its private key. */
  const char *tls_server_name; /* Env CACHET_TLS_SERVER_NAME: SNI and the
                                  name verified. Default: the host. */
  int tls_insecure;            /* Env CACHET_TLS_INSECURE: 1 = do not verify
                                  the server at all. Never the default;
                                  cachet_health_check says so. -1 = unset. */

  /* Near cache (opt-in): opened values kept in process memory, shared by
   * the handle's threads and by its async handles, and kept coherent by
   * Redis (server-assisted client-side caching). See "Near cache" below. */
  size_t near_cache_bytes; /* Env CACHET_NEAR_CACHE_BYTES: the bound on its
                              memory, keys, values and tables counted; at
                              least 65536. 0 = unset (default: off). */
  int near_cache_ttl_ms;   /* Env CACHET_NEAR_CACHE_TTL_MS: the longest a
                              copy lives (a safety net; the entry's own
                              expiry bounds it too). Default 60000. 0 =
                              unset. */
} cachet_options;

/* Fill `opts` with defaults ("unset" everywhere). Thread-safe. */
CACHET_API void cachet_options_init(cachet_options *opts) CACHET_NONNULL(1);

/* ------------------------------------------------------------------------ */
/* Handle                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct cachet cachet;

/*
 * Validate the options, resolve the environment if asked, and create a handle.
 * No connection is made yet: connections are opened on first use and
 * re-established after a failure, so a handle can be created while Redis is
 * down. Call cachet_ping() to fail fast.
 *
 * Errors: CACHET_ECONFIG (a bad value, or a TLS file OpenSSL cannot load;
 * the detail names the option or variable), CACHET_ENOMEM, CACHET_EINTERNAL
 * (the near cache's thread could not start). With a near cache, its
 * invalidation thread starts here and connects in the background; until it
 * is subscribed, gets go to Redis.
 * On success *out owns the handle; free it with cachet_close().
 */
CACHET_API int cachet_open(cachet **out, const cachet_options *opts)
    CACHET_NODISCARD CACHET_NONNULL(1);

/* Close every connection and free the handle. NULL is a no-op. No other
 * thread may be using the handle. Keys are zeroed before they are freed.
 * With a near cache it first stops the invalidation thread. The thread's
 * own connects and set-up commands end at once; what can still hold it is a
 * host name lookup (getaddrinfo blocks) and, in a cluster, a refresh of the
 * slot map on a pooled connection (at most timeout_ms a wait). */
CACHET_API void cachet_close(cachet *c);

/* The resolved key prefix. Owned by the handle. */
CACHET_API const char *cachet_prefix(const cachet *c) CACHET_NONNULL(1);

/* The resolved max_value_size: the largest value the handle writes, and
 * the largest it accepts from Redis (a larger one is CACHET_EPROTO, refused
 * before it is read). Thread-safe. */
CACHET_API size_t cachet_max_value_size(const cachet *c) CACHET_NONNULL(1);

/* PING the server over a pooled connection. Errors: ECONN, ETIMEDOUT,
 * ESERVER (e.g. NOAUTH, WRONGPASS at connect). */
CACHET_API int cachet_ping(cachet *c) CACHET_NODISCARD CACHET_NONNULL(1);

/* ------------------------------------------------------------------------ */
/* Core operations                                                          */
/* ------------------------------------------------------------------------ */

/* The longest TTL accepted: 100 years, in milliseconds. */
#define CACHET_TTL_MAX_MS INT64_C(3155760000000)

/*
 * TTLs are in milliseconds: 0 means no expiry, > 0 an expiry, < 0 or above
 * CACHET_TTL_MAX_MS is CACHET_EINVAL. Every error below can also be ECONN, ETIMEDOUT, ESERVER,
 * EPROTO or ENOMEM, which are never turned into a miss.
 */

/*
 * Read a value. CACHET_OK: *val (malloc'd, caller frees with cachet_free) and
 * *len are set; the buffer has a NUL byte after `len` bytes, for convenience.
 * CACHET_MISS: absent or expired (Redis TTL or the envelope's logical
 * expiry); *val is NULL. ECORRUPT/EVERSION/EINTEGRITY: the stored bytes are
 * not a valid envelope, were written by a newer cachet, or fail the MAC.
 */
CACHET_API int cachet_get(cachet *c, const void *key, size_t keylen,
                          void **val, size_t *len) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4, 5);

/*
 * Store a value with a TTL. Replaces any previous value and drops the
 * previous value's tag memberships. EINVAL: empty key, ttl < 0, or sizes
 * above the configured maxima. It is a plain SET, with the entry's old tag
 * set read in the same round trip; only a key that had tags costs a second
 * one, to drop them (until it returns, an eviction of an old tag may still
 * remove the new value: a miss, never a stale hit). A value of 64 KiB or
 * more is written beside the entry first and moved into place atomically,
 * one more round trip, so that Redis never copies it through a script.
 */
CACHET_API int cachet_set(cachet *c, const void *key, size_t keylen,
                          const void *val, size_t len, int64_t ttl_ms)
    CACHET_NODISCARD CACHET_NONNULL(1, 2);

/*
 * Store a value and its tag memberships in one atomic step. Tags the key had
 * before and does not have now are dropped. `tags` holds `ntags`
 * NUL-terminated, non-empty strings (duplicates are ignored).
 */
CACHET_API int cachet_set_tags(cachet *c, const void *key, size_t keylen,
                               const void *val, size_t len, int64_t ttl_ms,
                               const char *const *tags, size_t ntags)
    CACHET_NODISCARD CACHET_NONNULL(1, 2);

/* Delete a key and its tag memberships. CACHET_OK if it existed,
 * CACHET_MISS if it did not. */
CACHET_API int cachet_delete(cachet *c, const void *key, size_t keylen)
    CACHET_NODISCARD CACHET_NONNULL(1, 2);

/* CACHET_OK if the key exists, CACHET_MISS if not. Does not verify the
 * value's envelope: use cachet_get for that. */
CACHET_API int cachet_exists(cachet *c, const void *key, size_t keylen)
    CACHET_NODISCARD CACHET_NONNULL(1, 2);

/* Remaining TTL. CACHET_OK with *ttl_ms >= 0, or -1 for no expiry;
 * CACHET_MISS if absent. */
CACHET_API int cachet_ttl(cachet *c, const void *key, size_t keylen,
                          int64_t *ttl_ms) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4);

/* ------------------------------------------------------------------------ */
/* Tags, clear, prune                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Evict every entry that carries any of `tags`. Once it returns CACHET_OK, no
 * entry that carried a tag before the call can be read. Runs in bounded
 * chunks, so Redis never stalls; *evicted counts entries (not index keys).
 * On an error part of the work may be done; calling again finishes it.
 */
CACHET_API int cachet_evict_tags(cachet *c, const char *const *tags,
                                 size_t ntags, uint64_t *evicted)
    CACHET_NODISCARD CACHET_NONNULL(1);

/*
 * Remove every cache entry under this handle's prefix, and its tag data, in
 * bounded chunks. Never FLUSHDB. Locks are left alone. *removed counts
 * entries. With dry_run, nothing is removed and *removed is what would be.
 */
CACHET_API int cachet_clear(cachet *c, int dry_run, uint64_t *removed)
    CACHET_NODISCARD CACHET_NONNULL(1);

/* Remove expired and dangling members from every tag index under the prefix,
 * in bounded chunks. *pruned counts members removed. */
CACHET_API int cachet_prune(cachet *c, uint64_t *pruned) CACHET_NODISCARD
    CACHET_NONNULL(1);

/* ------------------------------------------------------------------------ */
/* Batch                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * One entry of a batch. For mset the caller fills key, val, ttl_ms and
 * optionally tags. For mget the caller fills key; cachet fills status and, on
 * CACHET_OK, val/len with a malloc'd buffer the caller frees. Each entry's
 * status is that key's own result; the call's return is the first
 * connection-level error, or CACHET_OK.
 */
typedef struct cachet_entry {
  const void *key;
  size_t keylen;
  const void *val; /* mset: input. */
  size_t len;
  int64_t ttl_ms;
  const char *const *tags;
  size_t ntags;
  void *out;       /* mget: output value, caller frees. */
  size_t outlen;
  int status;      /* Per-entry status. */
} cachet_entry;

/* mget/mset return the first connection or server error; ECORRUPT,
 * EINTEGRITY and EVERSION are only per-entry. When a batch stops, the
 * entries not carried out get its status. On EINVAL (checked for every
 * entry first) nothing is sent. In one mset, a key given twice is written
 * once, with the last occurrence's value; earlier ones get its status. Each
 * tagged entry is written atomically with its tags; an untagged one is a
 * plain SET whose old tags are dropped before mset returns, as for
 * cachet_set. The batch as a whole is not atomic. */
CACHET_API int cachet_mget(cachet *c, cachet_entry *entries, size_t n)
    CACHET_NODISCARD CACHET_NONNULL(1);
CACHET_API int cachet_mset(cachet *c, cachet_entry *entries, size_t n)
    CACHET_NODISCARD CACHET_NONNULL(1);

/* ------------------------------------------------------------------------ */
/* Locks                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct cachet_lock cachet_lock;

/* Length of a lock token in hex, without the NUL. */
#define CACHET_LOCK_TOKEN_HEXLEN 32

/*
 * Acquire the lock `name` for ttl_ms (> 0: no lock lives without a TTL),
 * waiting up to wait_ms (0 = try once) with jittered backoff.
 * CACHET_OK: *out holds a 128-bit random token and a fencing number that
 * rises per name; free it with cachet_lock_free(). CACHET_NOT_ACQUIRED: the
 * wait ran out. EINVAL: ttl_ms <= 0, wait_ms < 0, empty name.
 */
CACHET_API int cachet_lock_acquire(cachet *c, const char *name,
                                   int64_t ttl_ms, int64_t wait_ms,
                                   cachet_lock **out) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 5);

/* Rebuild a lock handle from a name and a hex token (as printed by the CLI),
 * to release or extend it. EINVAL on a malformed token. */
CACHET_API int cachet_lock_from_token(const char *name, const char *token_hex,
                                      cachet_lock **out) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 3);

/* CACHET_OK released; CACHET_LOCK_EXPIRED nobody holds it any more;
 * CACHET_LOCK_NOT_OWNER another owner holds it. */
CACHET_API int cachet_lock_release(cachet *c, const cachet_lock *lock)
    CACHET_NODISCARD CACHET_NONNULL(1, 2);

/* Set the remaining TTL to ttl_ms if we still own it. Same outcomes as
 * release. */
CACHET_API int cachet_lock_extend(cachet *c, const cachet_lock *lock,
                                  int64_t ttl_ms) CACHET_NODISCARD
    CACHET_NONNULL(1, 2);

/* The token as 32 lowercase hex digits plus NUL, written into `hex`. */
CACHET_API void cachet_lock_token(const cachet_lock *lock,
                                  char hex[CACHET_LOCK_TOKEN_HEXLEN + 1])
    CACHET_NONNULL(1, 2);
/* The fencing number (0 for a handle from cachet_lock_from_token). */
CACHET_API uint64_t cachet_lock_fence(const cachet_lock *lock)
    CACHET_NONNULL(1);
/* Free a lock handle (does not release the lock). NULL is a no-op. */
CACHET_API void cachet_lock_free(cachet_lock *lock);

/* ------------------------------------------------------------------------ */
/* get_or_set and write policies                                            */
/* ------------------------------------------------------------------------ */

/*
 * A loader produces the value for a missing key. On success it returns 0 and
 * sets *val to a malloc'd buffer (cachet takes ownership and frees it) and
 * *len. It may lower *ttl_ms (preset to the caller's TTL). Any other return
 * is a loader failure: nothing is cached, get_or_set returns CACHET_ELOADER,
 * and the loader keeps ownership of anything it left in *val. The loader
 * runs on the calling thread, without holding a pooled connection.
 */
typedef int (*cachet_loader_fn)(void *ud, const void *key, size_t keylen,
                                void **val, size_t *len, int64_t *ttl_ms);

/*
 * Return the cached value, or run the loader under stampede protection:
 * across all processes, one caller loads while the others wait (bounded by
 * fetch_wait_ms, then CACHET_ETIMEDOUT). The lock lease is renewed while the
 * loader runs. Output as in cachet_get().
 */
CACHET_API int cachet_get_or_set(cachet *c, const void *key, size_t keylen,
                                 cachet_loader_fn loader, void *ud,
                                 int64_t ttl_ms, const char *const *tags,
                                 size_t ntags, void **val, size_t *len)
    CACHET_NODISCARD CACHET_NONNULL(1, 2, 4, 9, 10);

/* An origin writer: returns 0 on success, anything else on failure. */
typedef int (*cachet_writer_fn)(void *ud, const void *key, size_t keylen,
                                const void *val, size_t len);

/*
 * Write-through: the writer runs first; on its failure nothing is cached and
 * CACHET_EWRITER is returned. Then the cache write; if that fails, the entry
 * is deleted so no stale value stays, and the cache error is returned.
 */
CACHET_API int cachet_write_through(cachet *c, const void *key, size_t keylen,
                                    const void *val, size_t len,
                                    cachet_writer_fn writer, void *ud,
                                    int64_t ttl_ms, const char *const *tags,
                                    size_t ntags) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 6);

/*
 * Write-behind: the cache write comes first, then the writer. If the writer
 * fails, the cache entry is removed and CACHET_EWRITER returned.
 */
CACHET_API int cachet_write_behind(cachet *c, const void *key, size_t keylen,
                                   const void *val, size_t len,
                                   cachet_writer_fn writer, void *ud,
                                   int64_t ttl_ms, const char *const *tags,
                                   size_t ntags) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 6);

/* ------------------------------------------------------------------------ */
/* Metrics and health                                                       */
/* ------------------------------------------------------------------------ */

/* A point-in-time copy of a handle's counters. */
typedef struct cachet_metrics {
  uint64_t hits;
  uint64_t misses;
  uint64_t expired_envelopes; /* Misses because the envelope had expired. */
  uint64_t writes;
  uint64_t deletes;
  uint64_t clears;
  uint64_t tag_evictions; /* Entries, not index keys. */
  uint64_t stampede_waits;
  uint64_t lock_acquisitions;
  uint64_t lock_contentions;
  uint64_t script_reloads;
  uint64_t errors[CACHET_ERROR_COUNT + 1]; /* errors[-status]; [0] unused. */
  /* The near cache (all 0 while it is off). `hits` above counts its hits
   * too. */
  uint64_t near_hits;          /* gets answered from process memory */
  uint64_t near_misses;        /* gets it could not answer */
  uint64_t near_invalidations; /* keys Redis said were written */
  uint64_t near_flushes;       /* times it was emptied: FLUSHDB/FLUSHALL, or
                                  coherence lost */
  uint64_t near_bytes;         /* memory it holds now (a gauge) */
} cachet_metrics;

/* Copy the counters. Thread-safe; each counter is read atomically. */
CACHET_API void cachet_metrics_snapshot(cachet *c, cachet_metrics *out)
    CACHET_NONNULL(1, 2);

/* Render a snapshot in the Prometheus text format. *out is malloc'd and
 * NUL-terminated; the caller frees it. */
CACHET_API int cachet_metrics_prometheus(const cachet_metrics *m, char **out,
                                         size_t *len) CACHET_NODISCARD
    CACHET_NONNULL(1, 2);

typedef struct cachet_health {
  int healthy;               /* 1 if the server answered and nothing is
                                wrong. */
  double ping_ms;            /* Round trip of a PING. */
  char server_version[32];   /* "7.0.15"; older than 6.2 is unhealthy:
                                cachet's scripts need SET ... PXAT. */
  int scripts_total;         /* cachet scripts that exist. */
  int scripts_loaded;        /* ... of them in the server's script cache. */
  char maxmemory_policy[32]; /* "noeviction" */
  int policy_warning;        /* 1 if the policy may evict index/lock keys:
                                allkeys-* and volatile-* (locks always have
                                a TTL); only noeviction is safe. */
  char message[256];         /* One-line summary of any problem. */
  /* Memory, from INFO memory and INFO errorstats; in a cluster the fullest
   * master's, and the refusals summed over every master. */
  uint64_t used_memory;      /* bytes */
  uint64_t maxmemory;        /* bytes; 0 = no limit */
  uint64_t oom_rejections;   /* commands refused for memory (OOM) since the
                                server started */
  int degraded;              /* 1 when the server is healthy but writes fail
                                or soon will: used_memory at 90% of
                                maxmemory or more, or OOM refusals since the
                                previous probe through this handle (the
                                first probe of a handle only knows the
                                total). `message` says which. */
  int near_cache;            /* 1 if the handle has a near cache */
  int tracking;              /* 1 while the near cache is coherent: every
                                invalidation feed is subscribed. 0 with a
                                near cache means it is bypassed (every get
                                goes to Redis) and the probe is degraded,
                                with why in `message`. */
} cachet_health;

/* Probe the server. CACHET_OK with the struct filled even when unhealthy
 * (healthy = 0 and message) or degraded; an error if the server cannot be
 * reached. Thread-safe; the handle remembers the OOM count of its last
 * probe. */
CACHET_API int cachet_health_check(cachet *c, cachet_health *out)
    CACHET_NODISCARD CACHET_NONNULL(1, 2);

/* Server-wide figures from INFO, summed over every master of a cluster
 * (each holds a share of the keys, hits and memory). A figure the server
 * did not report is UINT64_MAX. */
typedef struct cachet_server_info {
  int masters;
  uint64_t keyspace_hits;
  uint64_t keyspace_misses;
  uint64_t used_memory; /* bytes */
  uint64_t connected_clients;
} cachet_server_info;

/* INFO stats, memory and clients from every master. CACHET_OK with *out
 * filled, or an error (a master that cannot be reached is one: the sums
 * would be wrong). Thread-safe. */
CACHET_API int cachet_server_info_get(cachet *c, cachet_server_info *out)
    CACHET_NODISCARD CACHET_NONNULL(1, 2);

/* ------------------------------------------------------------------------ */
/* Keys and envelopes                                                       */
/* ------------------------------------------------------------------------ */

/* Bytes a keygen entry needs, NUL included ("4294967295:" + base64(32)). */
#define CACHET_KEYGEN_BUFLEN 64

/* Write a fresh random key entry "ID:BASE64KEY" into `out`. EINVAL if id is
 * 0 or outlen is too small. The caller should zero `out` after use. */
CACHET_API int cachet_keygen(uint32_t id, char *out, size_t outlen)
    CACHET_NODISCARD CACHET_NONNULL(2);

/* What cachet_inspect found in an envelope. Never holds key material. */
typedef struct cachet_envelope_info {
  unsigned version;
  unsigned flags;        /* CACHET_ENV_F_* */
  uint32_t key_id;
  int64_t created_ms;
  int64_t expires_ms;    /* 0 = none. */
  uint32_t content_type;
  uint64_t payload_len;
  int mac_status;        /* CACHET_MAC_* */
} cachet_envelope_info;

#define CACHET_ENV_F_MAC 0x01u
#define CACHET_ENV_F_ENCRYPTED 0x02u

#define CACHET_MAC_NONE 0   /* Unsealed envelope. */
#define CACHET_MAC_OK 1     /* Verified. */
#define CACHET_MAC_BAD 2    /* Verification failed. */
#define CACHET_MAC_NO_KEY 3 /* Sealed under a key id the keyring lacks. */

/*
 * Parse an envelope's header and check its MAC with the handle's keyring.
 * `blob` is the stored value; `redis_key` the full Redis key name it was
 * stored under (the MAC is bound to it). `c` may be NULL: then no key is
 * known and a sealed envelope reports CACHET_MAC_NO_KEY. CACHET_OK when the
 * header parsed (whatever the MAC status), ECORRUPT or EVERSION otherwise.
 */
CACHET_API int cachet_inspect_blob(cachet *c, const void *redis_key,
                                   size_t redis_keylen, const void *blob,
                                   size_t bloblen, cachet_envelope_info *info)
    CACHET_NODISCARD CACHET_NONNULL(4, 6);

/* Fetch the stored bytes of `key` and inspect them. CACHET_MISS if absent. */
CACHET_API int cachet_inspect(cachet *c, const void *key, size_t keylen,
                              cachet_envelope_info *info) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4);

/* The full Redis key name of a value key, for tools. *out is malloc'd. */
CACHET_API int cachet_value_key(const cachet *c, const void *key, size_t keylen,
                                char **out, size_t *outlen) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4, 5);

/* ------------------------------------------------------------------------ */
/* Async API (libevent)                                                     */
/* ------------------------------------------------------------------------ */

/*
 * The same operations as above, without blocking, on a libevent loop the
 * application runs. Each async call is its sync twin: the same code decides
 * what is sent and what the replies mean (the same checks, scripts,
 * envelope, metrics, status codes and details), on a single server or a
 * Redis Cluster alike; only the waiting differs. Available when cachet was
 * built with libevent (otherwise cachet_async_open returns CACHET_ENOTSUP).
 * cachet.h does not include libevent: pass your `struct event_base *`.
 *
 * Threads. Everything runs on the thread that runs the event loop: every
 * cachet_async_* call must be made there, and every callback (and loader)
 * is called there, from inside event_base_loop/dispatch. The async handle
 * is not thread-safe; use one per loop. The sync handle it wraps
 * (cachet_async_cachet) is, and may be used from other threads.
 *
 * Calls and callbacks. A call returns CACHET_OK when the operation was
 * started: its callback will then be called exactly once, later, from the
 * loop, never from inside the call. A call that returns an error (EINVAL,
 * ENOMEM, ECONN while the handle is closing) started nothing and its
 * callback is never called. Connection failures, timeouts and server
 * errors come through the callback. Every callback receives the status
 * first, then the result, then the caller's `ud`. Before each callback
 * cachet_last_error() is set to that status's detail (empty on success), so
 * it can be read inside the callback. Any cachet_async_* call may be made
 * from a callback, cachet_async_close included.
 *
 * Buffers. Buffers passed to a call are only read during the call (keys,
 * values, tags and the entry arrays of mget/mset are copied). Every pointer
 * a callback receives (a value, an item array, a health struct) is owned by
 * cachet and valid only until the callback returns: copy what you keep.
 * One exception: the lock handle of cachet_async_lock_acquire's callback is
 * handed over; free it with cachet_lock_free().
 *
 * Connections. One per server (per master in a cluster), opened on first
 * use; every operation is pipelined on it. In a cluster, commands go to the
 * master of their key's slot; MOVED, ASK, TRYAGAIN and CLUSTERDOWN are
 * followed as in the sync API, and the slot map is loaded without blocking.
 * Host names are resolved when a connection opens, which blocks
 * (getaddrinfo): prefer IP addresses or a unix socket. When a connection
 * drops, every operation waiting on it gets CACHET_ECONN (or the server's
 * refusal, e.g. a wrong AUTH password, as CACHET_ESERVER), and the next
 * command opens a new one.
 *
 * Timeouts. Each step of an operation waits at most timeout_ms for its
 * replies (an event timer), then the operation gets CACHET_ETIMEDOUT. As in
 * the sync API the connection is then dropped, since the server is not
 * answering: the other operations waiting on it get CACHET_ECONN, and the
 * next operation reconnects. Nothing waits without a deadline.
 */
struct event_base;

typedef struct cachet_async cachet_async;

/* get and get_or_set: on CACHET_OK, `val` holds `len` bytes and a NUL
 * after them (owned by cachet, valid during the callback); NULL otherwise. */
typedef void (*cachet_async_value_cb)(int status, const void *val, size_t len,
                                      void *ud);
/* set, set_tags, delete (CACHET_OK existed / CACHET_MISS), release,
 * extend. */
typedef void (*cachet_async_status_cb)(int status, void *ud);
/* evict_tags (entries evicted), clear (entries removed, or counted),
 * prune (index members removed). */
typedef void (*cachet_async_count_cb)(int status, uint64_t count, void *ud);
/* ttl: on CACHET_OK, ttl_ms >= 0 or -1 for no expiry; 0 otherwise. */
typedef void (*cachet_async_ttl_cb)(int status, int64_t ttl_ms, void *ud);
/* lock_acquire: on CACHET_OK `lock` is the caller's, freed with
 * cachet_lock_free(); NULL otherwise. */
typedef void (*cachet_async_lock_cb)(int status, cachet_lock *lock, void *ud);

/* One key's result in a batch callback. */
typedef struct cachet_async_item {
  int status;      /* this key's own status, as in cachet_entry.status */
  const void *val; /* mget, CACHET_OK: the value (NUL after len); else NULL */
  size_t len;
} cachet_async_item;

/* mget and mset: `items` has one element per entry, in the caller's order
 * (owned by cachet, valid during the callback). */
typedef void (*cachet_async_items_cb)(int status,
                                      const cachet_async_item *items, size_t n,
                                      void *ud);
/* health_check: `health` is filled on CACHET_OK (valid during the
 * callback); NULL otherwise. */
typedef void (*cachet_async_health_cb)(int status, const cachet_health *health,
                                       void *ud);

/*
 * Create an async handle on `base` with the options of cachet_open (copied;
 * they resolve the same way, environment included). No connection is made
 * yet. Errors as cachet_open, plus EINVAL (base is NULL) and ENOTSUP (built
 * without libevent). `base` must outlive the handle.
 */
CACHET_API int cachet_async_open(cachet_async **out, struct event_base *base,
                                 const cachet_options *opts) CACHET_NODISCARD
    CACHET_NONNULL(1);

/*
 * Close the handle. Every operation still in flight has its callback called
 * before this returns, with CACHET_ECONN and the detail "closed" (an
 * operation whose result was already decided gets that result); after it
 * returns no callback of this handle runs again. Calls made from those
 * callbacks are refused with CACHET_ECONN. A get_or_set whose loader is
 * still running leaves its stampede lock to expire after the lease; the
 * loader may still call cachet_async_load_done, which then does nothing.
 * The memory is freed at the latest when the current callback returns. May
 * be called from a callback. NULL is a no-op.
 */
CACHET_API void cachet_async_close(cachet_async *a);

/* A pointer for the application, as libuv's handle->data. */
CACHET_API void cachet_async_set_data(cachet_async *a, void *data)
    CACHET_NONNULL(1);
CACHET_API void *cachet_async_get_data(const cachet_async *a) CACHET_NONNULL(1);

/* The sync handle inside: the same configuration, keyring and counters
 * (cachet_metrics_snapshot counts both APIs' operations). Owned by the async
 * handle; valid until cachet_async_close. Its sync calls block: do not make
 * them on the loop thread. */
CACHET_API cachet *cachet_async_cachet(cachet_async *a) CACHET_NONNULL(1);

/* As cachet_get. */
CACHET_API int cachet_async_get(cachet_async *a, const void *key, size_t keylen,
                                cachet_async_value_cb cb,
                                void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4);
/* As cachet_set / cachet_set_tags. */
CACHET_API int cachet_async_set(cachet_async *a, const void *key, size_t keylen,
                                const void *val, size_t len, int64_t ttl_ms,
                                cachet_async_status_cb cb,
                                void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 7);
CACHET_API int cachet_async_set_tags(cachet_async *a, const void *key,
                                     size_t keylen, const void *val, size_t len,
                                     int64_t ttl_ms, const char *const *tags,
                                     size_t ntags, cachet_async_status_cb cb,
                                     void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 9);
/* As cachet_delete: CACHET_OK if it existed, CACHET_MISS if not. */
CACHET_API int cachet_async_delete(cachet_async *a, const void *key,
                                   size_t keylen, cachet_async_status_cb cb,
                                   void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4);
/* As cachet_exists: CACHET_OK if the key exists, CACHET_MISS if not. */
CACHET_API int cachet_async_exists(cachet_async *a, const void *key,
                                   size_t keylen, cachet_async_status_cb cb,
                                   void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4);
/* As cachet_ttl: the remaining TTL goes to the callback. */
CACHET_API int cachet_async_ttl(cachet_async *a, const void *key,
                                size_t keylen, cachet_async_ttl_cb cb,
                                void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4);

/* As cachet_evict_tags, cachet_clear and cachet_prune; the count goes to
 * the callback (0 after an error). The progress callback of the options,
 * if set, is called on the loop thread between chunks. */
CACHET_API int cachet_async_evict_tags(cachet_async *a, const char *const *tags,
                                       size_t ntags, cachet_async_count_cb cb,
                                       void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 4);
CACHET_API int cachet_async_clear(cachet_async *a, int dry_run,
                                  cachet_async_count_cb cb,
                                  void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 3);
CACHET_API int cachet_async_prune(cachet_async *a, cachet_async_count_cb cb,
                                  void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2);

/* As cachet_lock_acquire; the wait is a loop timer, never a sleep. */
CACHET_API int cachet_async_lock_acquire(cachet_async *a, const char *name,
                                         int64_t ttl_ms, int64_t wait_ms,
                                         cachet_async_lock_cb cb,
                                         void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 5);
/* As cachet_lock_release / cachet_lock_extend. `lock` is only read during
 * the call. */
CACHET_API int
cachet_async_lock_release(cachet_async *a, const cachet_lock *lock,
                          cachet_async_status_cb cb, void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 3);
CACHET_API int cachet_async_lock_extend(cachet_async *a,
                                        const cachet_lock *lock, int64_t ttl_ms,
                                        cachet_async_status_cb cb,
                                        void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4);

/*
 * An async loader. It is called on the loop thread when get_or_set holds
 * the key's stampede lock and the key is still missing, and must call
 * cachet_async_load_done(load, ...) exactly once, from the loop thread,
 * later or before it returns. While it runs the lock's lease is renewed by
 * a loop timer every lease/3; if it does not complete within fetch_wait_ms
 * the get_or_set fails with CACHET_ETIMEDOUT and releases the lock (a late
 * load_done is then accepted and ignored).
 */
typedef struct cachet_async_load cachet_async_load;
typedef void (*cachet_async_loader_fn)(cachet_async_load *load, const void *key,
                                       size_t keylen, int64_t ttl_ms, void *ud);

/*
 * Complete a load. status 0: `val` (len bytes, copied during the call) is
 * the value, cached with ttl_ms, which may only lower the caller's TTL as
 * for cachet_loader_fn. Any other status is a loader failure: nothing is
 * cached and get_or_set reports CACHET_ELOADER. `load` is freed by this
 * call.
 */
CACHET_API void cachet_async_load_done(cachet_async_load *load, int status,
                                       const void *val, size_t len,
                                       int64_t ttl_ms) CACHET_NONNULL(1);

/* As cachet_get_or_set, with an async loader; `ud` goes to both the
 * loader and `cb`, and must stay valid until the loader has called
 * cachet_async_load_done, which may be after `cb` when the call gave up
 * on the load. Waiters poll with loop timers, bounded by fetch_wait_ms. */
CACHET_API int
cachet_async_get_or_set(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_loader_fn loader, int64_t ttl_ms,
                        const char *const *tags, size_t ntags,
                        cachet_async_value_cb cb, void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2, 4, 8);

/*
 * As cachet_mget / cachet_mset. The entries (keys; for mset values, TTLs and
 * tags) are read during the call only; the results go to the callback's
 * items. The callback's status is CACHET_OK, or the first error in entry
 * order that is about the server or the connection (an item that fails to
 * decode or verify is only that item's status). Within one mset the last
 * occurrence of a key wins; the earlier ones get its status.
 */
CACHET_API int cachet_async_mget(cachet_async *a, const cachet_entry *entries,
                                 size_t n, cachet_async_items_cb cb,
                                 void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 4);
CACHET_API int cachet_async_mset(cachet_async *a, const cachet_entry *entries,
                                 size_t n, cachet_async_items_cb cb,
                                 void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 4);

/* As cachet_health_check. */
CACHET_API int cachet_async_health_check(cachet_async *a,
                                         cachet_async_health_cb cb,
                                         void *ud) CACHET_NODISCARD
    CACHET_NONNULL(1, 2);

#ifdef __cplusplus
}
#endif
#endif /* CACHET_H */
