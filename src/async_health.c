/* Async health probe: the checks of health.c in one pipelined round trip.
 *
 * PING, INFO server, SCRIPT EXISTS (every embedded SHA1), INFO memory, INFO
 * errorstats and CONFIG GET maxmemory-policy go out together; where CONFIG
 * is refused, INFO memory's policy stands. ping_ms is the time from sending
 * to the PING's reply. The verdict is health.c's: only noeviction is safe,
 * missing scripts are reported but not unhealthy, tight memory or fresh OOM
 * refusals are degraded. A single server only. */
#include "async.h"

#include "cachet.h"

#ifdef CACHET_HAVE_LIBEVENT

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "health.h"

typedef struct health_op {
  aop op;
  int next; /* which reply comes next */
  double t0;
  cachet_health h;
} health_op;

enum { R_PING, R_INFO, R_SCRIPTS, R_INFO_MEMORY, R_ERRORSTATS, R_CONFIG };

static double mono_ms_precise(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void health_reply(aop *op, redisReply *r) {
  health_op *x = (health_op *)op;
  int which = x->next++;
  if (r->type == REDIS_REPLY_ERROR && which != R_CONFIG) {
    cachet_aop_server_error(op, r);
    return;
  }
  switch (which) {
  case R_PING:
    if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "PONG") != 0) {
      cachet_aop_proto(op, "PING");
      return;
    }
    x->h.ping_ms = mono_ms_precise() - x->t0;
    return;
  case R_INFO:
  case R_INFO_MEMORY:
  case R_ERRORSTATS:
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) {
      cachet_aop_proto(op, "INFO");
      return;
    }
    if (which == R_INFO)
      (void)cachet_info_field(r->str, r->len, "redis_version",
                              x->h.server_version, sizeof x->h.server_version);
    else if (which == R_INFO_MEMORY)
      cachet_health_memory(&x->h, r->str, r->len, 1);
    else
      x->h.oom_rejections = cachet_health_oom_count(r->str, r->len);
    return;
  case R_SCRIPTS:
    if (r->type != REDIS_REPLY_ARRAY || r->elements != CACHET_SCRIPT_COUNT) {
      cachet_aop_proto(op, "SCRIPT EXISTS");
      return;
    }
    for (size_t i = 0; i < r->elements; i++)
      if (r->element[i]->type == REDIS_REPLY_INTEGER &&
          r->element[i]->integer == 1)
        x->h.scripts_loaded++;
    return;
  case R_CONFIG:
    /* Refused (an ACL, a renamed command): INFO memory's policy stands. */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
      snprintf(x->h.maxmemory_policy, sizeof x->h.maxmemory_policy, "%s",
               r->element[1]->str);
    else if (r->type != REDIS_REPLY_ERROR) {
      cachet_aop_proto(op, "CONFIG GET");
      return;
    }
    break;
  default:
    cachet_aop_proto(op, "health");
    return;
  }
  cachet_health_verdict(&x->h, NULL,
                        cachet_health_oom_since(op->a->c, x->h.oom_rejections));
  cachet_aop_finish(op, CACHET_OK);
}

static void health_deliver(aop *op, int rc) {
  health_op *x = (health_op *)op;
  ((cachet_async_health_cb)op->cb)(rc, rc == CACHET_OK ? &x->h : NULL, op->ud);
}

static void health_step(aop *op) {
  health_op *x = (health_op *)op;
  const char *sargv[CACHET_SCRIPT_COUNT + 2];
  size_t slens[CACHET_SCRIPT_COUNT + 2];
  sargv[0] = "SCRIPT";
  slens[0] = 6;
  sargv[1] = "EXISTS";
  slens[1] = 6;
  for (int i = 0; i < CACHET_SCRIPT_COUNT; i++) {
    sargv[i + 2] = cachet_scripts[i].sha;
    slens[i + 2] = 40;
  }
  const char *ping[1] = {"PING"};
  size_t pingl[1] = {4};
  const char *info[2] = {"INFO", "server"};
  size_t infol[2] = {4, 6};
  const char *mem[2] = {"INFO", "memory"};
  size_t meml[2] = {4, 6};
  const char *err[2] = {"INFO", "errorstats"};
  size_t errl[2] = {4, 10};
  const char *cfg[3] = {"CONFIG", "GET", "maxmemory-policy"};
  size_t cfgl[3] = {6, 3, 16};
  x->t0 = mono_ms_precise();
  int rc;
  if ((rc = cachet_aop_send(op, 1, ping, pingl)) ||
      (rc = cachet_aop_send(op, 2, info, infol)) ||
      (rc = cachet_aop_send(op, CACHET_SCRIPT_COUNT + 2, sargv, slens)) ||
      (rc = cachet_aop_send(op, 2, mem, meml)) ||
      (rc = cachet_aop_send(op, 2, err, errl)) ||
      (rc = cachet_aop_send(op, 3, cfg, cfgl)))
    cachet_aop_finish(op, rc);
}

static const aop_kind health_kind = {"health",       health_reply, NULL, NULL,
                                     health_deliver, NULL,         NULL};

int cachet_async_health_check(cachet_async *a, cachet_async_health_cb cb,
                              void *ud) {
  cachet_error_clear();
  if (a->closing)
    return cachet_fail(CACHET_ECONN, "closed: the async handle is closing");
  health_op *x = (health_op *)cachet_aop_new(a, &health_kind, sizeof *x, 1,
                                             NULL, (aop_cb)cb, ud);
  if (x == NULL)
    return cachet_result(a->c, CACHET_ENOMEM);
  cachet_aop_start(&x->op, health_step);
  return CACHET_OK;
}

#endif
