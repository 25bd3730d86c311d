/* Script registry: EVALSHA with invisible NOSCRIPT recovery. Internal.
 * The scripts and their SHA1s are embedded at build time (cachet_scripts.h,
 * generated from lua/). */
#ifndef CACHET_SCRIPT_H
#define CACHET_SCRIPT_H

#include <stddef.h>

#include "cachet.h"
#include "cachet_scripts.h"

/* The command line of an EVALSHA: "EVALSHA" sha nkeys args... Small calls
 * use the struct's own storage, so it must not move between build and
 * free; the argument pointers are borrowed. */
#define CACHET_EVALSHA_SMALL 16
typedef struct cachet_evalsha {
  const char **argv;
  size_t *lens;
  int argc;
  char nk[16];
  const char *sargv[CACHET_EVALSHA_SMALL + 3];
  size_t slens[CACHET_EVALSHA_SMALL + 3];
} cachet_evalsha;

/* Build it (EINTERNAL for impossible counts, ENOMEM); free it after use. */
int cachet_evalsha_build(cachet_evalsha *e, cachet_script_id id, int nkeys,
                         int nargs, const char *const *args,
                         const size_t *lens);
void cachet_evalsha_free(cachet_evalsha *e);

#endif
