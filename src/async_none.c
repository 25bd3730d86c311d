/* The async API when cachet is built without libevent (CMake picks this
 * file instead of async.c and async_api.c): it links, and says why it
 * cannot work. No handle can exist, so every call reports the same. */
#include "cachet.h"
#include "error.h"

static int no_libevent(void) {
  return cachet_fail(CACHET_ENOTSUP,
                     "the async API needs libevent; cachet was built without "
                     "it");
}

int cachet_async_open(cachet_async **out, struct event_base *base,
                      const cachet_options *opts) {
  (void)base;
  (void)opts;
  *out = NULL;
  return no_libevent();
}

void cachet_async_close(cachet_async *a) { (void)a; }
void cachet_async_set_data(cachet_async *a, void *data) {
  (void)a;
  (void)data;
}
void *cachet_async_get_data(const cachet_async *a) {
  (void)a;
  return NULL;
}
cachet *cachet_async_cachet(cachet_async *a) {
  (void)a;
  return NULL;
}
int cachet_async_get(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_value_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_set(cachet_async *a, const void *key, size_t keylen,
                     const void *val, size_t len, int64_t ttl_ms,
                     cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)val, (void)len, (void)ttl_ms;
  (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_set_tags(cachet_async *a, const void *key, size_t keylen,
                          const void *val, size_t len, int64_t ttl_ms,
                          const char *const *tags, size_t ntags,
                          cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)val, (void)len, (void)ttl_ms;
  (void)tags, (void)ntags, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_delete(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_exists(cachet_async *a, const void *key, size_t keylen,
                        cachet_async_status_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_ttl(cachet_async *a, const void *key, size_t keylen,
                     cachet_async_ttl_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_evict_tags(cachet_async *a, const char *const *tags,
                            size_t ntags, cachet_async_count_cb cb, void *ud) {
  (void)a, (void)tags, (void)ntags, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_clear(cachet_async *a, int dry_run, cachet_async_count_cb cb,
                       void *ud) {
  (void)a, (void)dry_run, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_prune(cachet_async *a, cachet_async_count_cb cb, void *ud) {
  (void)a, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_lock_acquire(cachet_async *a, const char *name, int64_t ttl_ms,
                              int64_t wait_ms, cachet_async_lock_cb cb,
                              void *ud) {
  (void)a, (void)name, (void)ttl_ms, (void)wait_ms, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_lock_release(cachet_async *a, const cachet_lock *lock,
                              cachet_async_status_cb cb, void *ud) {
  (void)a, (void)lock, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_lock_extend(cachet_async *a, const cachet_lock *lock,
                             int64_t ttl_ms, cachet_async_status_cb cb,
                             void *ud) {
  (void)a, (void)lock, (void)ttl_ms, (void)cb, (void)ud;
  return no_libevent();
}
void cachet_async_load_done(cachet_async_load *load, int status,
                            const void *val, size_t len, int64_t ttl_ms) {
  (void)load, (void)status, (void)val, (void)len, (void)ttl_ms;
}
int cachet_async_get_or_set(cachet_async *a, const void *key, size_t keylen,
                            cachet_async_loader_fn loader, int64_t ttl_ms,
                            const char *const *tags, size_t ntags,
                            cachet_async_value_cb cb, void *ud) {
  (void)a, (void)key, (void)keylen, (void)loader, (void)ttl_ms;
  (void)tags, (void)ntags, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_mget(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  (void)a, (void)entries, (void)n, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_mset(cachet_async *a, const cachet_entry *entries, size_t n,
                      cachet_async_items_cb cb, void *ud) {
  (void)a, (void)entries, (void)n, (void)cb, (void)ud;
  return no_libevent();
}
int cachet_async_health_check(cachet_async *a, cachet_async_health_cb cb,
                              void *ud) {
  (void)a, (void)cb, (void)ud;
  return no_libevent();
}
