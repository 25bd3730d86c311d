/* The handle behind the opaque `cachet *`. Internal. */
#ifndef CACHET_HANDLE_H
#define CACHET_HANDLE_H

#include "cachet.h"
#include "clock.h"
#include "config.h"
#include "keyring.h"
#include "metrics.h"
#include "tls.h"

struct cachet_links;
struct cachet_mux;
struct cachet_near;
struct cachet_track;

struct cachet {
  cachet_config cfg;
  cachet_keyring *keyring; /* NULL: values are stored unsealed. */
  cachet_tls *tls;         /* NULL: plaintext. */
  struct cachet_links *links; /* link.c */
  struct cachet_mux *mux;     /* mux.c; NULL unless cfg.multiplex */
  struct cachet_near *near;   /* near.c; NULL unless cfg.near_bytes */
  struct cachet_track *track; /* track.c: near's invalidation feeds */
  cachet_counters counters;
  _Atomic uint64_t write_seq; /* picks the writes that prune (entry.c) */
  /* OOM refusals seen by the previous health probe, plus one (0: none
   * yet), so that a probe can tell refusals since then (health.c). */
  _Atomic uint64_t health_oom;
  cachet_progress_fn progress;
  void *progress_ud;
  void (*log)(void *ud, int level, const char *msg);
  void *log_ud;
};

/* Count an error status in the handle's metrics and return it unchanged, so
 * public entry points end with `return cachet_result(c, st)`. */
int cachet_result(cachet *c, int status);


/* Log through the user's sink, if any. */
void cachet_log(const cachet *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
