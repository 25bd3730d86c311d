/* The async driver when cachet is built without libevent (CMake picks this
 * file instead of async.c): the API links, and says why it cannot work.
 * No handle can be opened, so the calls of async_api.c stop at
 * cachet_async_usable. */
#include "async.h"
#include "error.h"

static int no_libevent(void) {
  return cachet_fail(CACHET_ENOTSUP,
                     "the async API needs libevent; cachet was built without "
                     "it");
}

int cachet_async_open(cachet_async **out, struct event_base *base,
                      const cachet_options *opts) {
  (void)base, (void)opts;
  *out = NULL;
  return no_libevent();
}

int cachet_async_usable(const cachet_async *a) {
  (void)a;
  return no_libevent();
}

cachet *cachet_async_handle(cachet_async *a) {
  (void)a;
  return NULL;
}

/* Unreachable without a handle. */
arun *cachet_arun_new(cachet_async *a, const arun_kind *k, size_t size,
                      void (*cb)(void), void *ud) {
  (void)a, (void)k, (void)size, (void)cb, (void)ud;
  (void)no_libevent();
  return NULL;
}
void cachet_arun_start(arun *r, cachet_op *op) { (void)r, (void)op; }
void cachet_arun_discard(arun *r) { (void)r; }

void cachet_async_close(cachet_async *a) { (void)a; }
void cachet_async_set_data(cachet_async *a, void *data) { (void)a, (void)data; }
void *cachet_async_get_data(const cachet_async *a) {
  (void)a;
  return NULL;
}
cachet *cachet_async_cachet(cachet_async *a) {
  (void)a;
  return NULL;
}
void cachet_async_load_done(cachet_async_load *load, int status,
                            const void *val, size_t len, int64_t ttl_ms) {
  (void)load, (void)status, (void)val, (void)len, (void)ttl_ms;
}
