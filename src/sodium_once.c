/* libsodium's init result: with the AEAD nonce generator (nonce.c), the
 * library's only global mutable state. */
#include "sodium_once.h"

#include <pthread.h>
#include <sodium.h>

#include "cachet.h"
#include "error.h"

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
/* Written once inside pthread_once, which orders it before every reader. */
static int sodium_status = -1;

static void sodium_init_once(void) {
  /* sodium_init() returns 1 when someone else (the application) already
   * initialised the library: that is success too. */
  sodium_status = sodium_init() < 0 ? -1 : 0;
}

int cachet_sodium_init(void) {
  if (pthread_once(&sodium_once, sodium_init_once) != 0)
    return cachet_fail(CACHET_EINTERNAL, "pthread_once failed");
  if (sodium_status != 0)
    return cachet_fail(CACHET_EINTERNAL, "libsodium failed to initialise");
  return CACHET_OK;
}
