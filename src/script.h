/* Script registry: EVALSHA with invisible NOSCRIPT recovery. Internal.
 * The scripts and their SHA1s are embedded at build time (cachet_scripts.h,
 * generated from lua/). */
#ifndef CACHET_SCRIPT_H
#define CACHET_SCRIPT_H

#include "cachet_scripts.h"
#include "conn.h"

/*
 * Run script `id` with `nkeys` keys followed by `nargs - nkeys` arguments
 * (args/lens hold keys then arguments). On NOSCRIPT the script is loaded
 * with SCRIPT LOAD (never EVAL: Redis may evict EVAL-cached scripts) and the
 * call is retried once; the caller never sees it. Reply ownership and error
 * mapping as cachet_conn_command.
 */
int cachet_script_run(cachet *c, cachet_conn *cn, cachet_script_id id,
                      int nkeys, int nargs, const char *const *args,
                      const size_t *lens, redisReply **out);

/* Pipelined form: append an EVALSHA (no reply read). */
int cachet_script_append(cachet_conn *cn, cachet_script_id id, int nkeys,
                         int nargs, const char *const *args,
                         const size_t *lens);

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

/* SCRIPT LOAD `id` on the node that gave the last reply on `cn` (in a
 * cluster, the one that said NOSCRIPT; standalone, the server) and check
 * that its SHA1 is the embedded one (EINTERNAL if not). Counts a reload. */
int cachet_script_load(cachet *c, cachet_conn *cn, cachet_script_id id);

#endif
