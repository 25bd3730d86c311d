/* Linked into every cmocka test: CMOCKA_FILTER=<pattern> runs only the
 * cases whose name matches (cmocka's own wildcards, e.g. "test_lock*"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

__attribute__((constructor)) static void cachet_test_filter(void) {
  const char *f = getenv("CMOCKA_FILTER");
  if (f != NULL && f[0] != '\0')
    cmocka_set_test_filter(f);
}
