/* Script registry: EVALSHA first; on NOSCRIPT, SCRIPT LOAD and retry once.
 *
 * There is no per-connection "loaded" state to keep in step: the embedded
 * SHA1 is the script's name on every server, so the first EVALSHA either
 * runs or says NOSCRIPT (new server, SCRIPT FLUSH, restart, failover), and
 * that one reply is what triggers the load. In a cluster every master has
 * its own cache, so the load goes to the node that said NOSCRIPT, and the
 * retry is routed again (the slot may have moved in between). */
#include "script.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

int cachet_evalsha_build(cachet_evalsha *e, cachet_script_id id, int nkeys,
                         int nargs, const char *const *args,
                         const size_t *lens) {
  e->argv = e->sargv;
  e->lens = e->slens;
  e->argc = 0;
  if (nargs < 0 || nkeys < 0 || nkeys > nargs)
    return cachet_fail(CACHET_EINTERNAL, "bad script argument count");
  if (nargs > CACHET_EVALSHA_SMALL) {
    e->argv = malloc(sizeof *e->argv * (size_t)(nargs + 3));
    e->lens = malloc(sizeof *e->lens * (size_t)(nargs + 3));
    if (e->argv == NULL || e->lens == NULL) {
      free(e->argv);
      free(e->lens);
      e->argv = e->sargv;
      e->lens = e->slens;
      return cachet_fail(CACHET_ENOMEM, "out of memory building a script call");
    }
  }
  int nkl = snprintf(e->nk, sizeof e->nk, "%d", nkeys);
  e->argv[0] = "EVALSHA";
  e->lens[0] = 7;
  e->argv[1] = cachet_scripts[id].sha;
  e->lens[1] = 40;
  e->argv[2] = e->nk;
  e->lens[2] = (size_t)nkl;
  for (int i = 0; i < nargs; i++) {
    e->argv[i + 3] = args[i];
    e->lens[i + 3] = lens[i];
  }
  e->argc = nargs + 3;
  return CACHET_OK;
}

void cachet_evalsha_free(cachet_evalsha *e) {
  if (e->argv != e->sargv) {
    free(e->argv);
    free(e->lens);
  }
  e->argv = e->sargv;
  e->lens = e->slens;
}
