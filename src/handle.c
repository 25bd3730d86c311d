/* Opening and closing a handle; small shared helpers. */
#include "handle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "link.h"
#include "mux.h"
#include "near.h"
#include "sodium_once.h"
#include "track.h"

/* The near cache and its feeds; last, since the feeds use the links. */
static int start_near(cachet *c) {
  if (c->cfg.near_bytes == 0)
    return CACHET_OK;
  if (cachet_near_create(&c->near, c->cfg.near_bytes, c->cfg.near_ttl_ms) !=
      CACHET_OK)
    return cachet_fail(CACHET_ENOMEM, "out of memory for the near cache");
  int rc = cachet_track_start(c, &c->track);
  if (rc != CACHET_OK) {
    cachet_near_destroy(c->near);
    c->near = NULL;
  }
  return rc;
}

int cachet_open(cachet **out, const cachet_options *opts) {
  *out = NULL;
  cachet_error_clear();
  if (opts == NULL)
    return cachet_fail(CACHET_EINVAL, "options must not be NULL");
  int rc = cachet_sodium_init();
  if (rc != CACHET_OK)
    return rc;

  cachet *c = calloc(1, sizeof *c);
  if (c == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory opening a handle");
  rc = cachet_config_resolve(&c->cfg, opts, NULL, NULL);
  if (rc != CACHET_OK) {
    free(c);
    return rc;
  }
  if (c->cfg.keys != NULL) {
    rc = cachet_keyring_parse(c->cfg.keys, strlen(c->cfg.keys), &c->keyring);
    if (rc != CACHET_OK)
      goto fail;
  } else if (c->cfg.encrypt) {
    rc = cachet_fail(CACHET_ECONFIG,
                     "CACHET_ENCRYPT: encryption needs a keyring "
                     "(CACHET_KEYS or CACHET_KEYS_FILE)");
    goto fail;
  }
  /* Before any thread of the handle starts: the near cache's feed logs
   * from its own thread as soon as it runs. */
  c->progress = opts->progress;
  c->progress_ud = opts->progress_ud;
  c->log = opts->log;
  c->log_ud = opts->log_ud;
  if ((rc = cachet_tls_new(&c->cfg, &c->tls)) != CACHET_OK ||
      (rc = cachet_links_create(c)) != CACHET_OK ||
      (c->cfg.multiplex > 0 &&
       (rc = cachet_mux_create(c, &c->mux)) != CACHET_OK) ||
      (rc = start_near(c)) != CACHET_OK)
    goto fail;
  *out = c;
  return CACHET_OK;
fail:
  cachet_close(c); /* whatever was made: each part may be NULL */
  return rc;
}

void cachet_close(cachet *c) {
  if (c == NULL)
    return;
  cachet_track_stop(c->track);
  cachet_near_destroy(c->near);
  cachet_mux_destroy(c->mux);
  cachet_links_destroy(c);
  cachet_tls_free(c->tls);
  cachet_keyring_free(c->keyring);
  cachet_config_free(&c->cfg);
  free(c);
}

const char *cachet_prefix(const cachet *c) { return c->cfg.prefix; }

size_t cachet_max_value_size(const cachet *c) { return c->cfg.max_value_size; }

int cachet_result(cachet *c, int status) {
  if (status < 0 && -status <= CACHET_ERROR_COUNT)
    CACHET_COUNT(c, errors[-status], 1);
  return status;
}

void cachet_log(const cachet *c, int level, const char *fmt, ...) {
  if (c->log == NULL)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  c->log(c->log_ud, level, msg);
}

int cachet_ping(cachet *c) {
  cachet_link *l;
  cachet_error_clear();
  int rc = cachet_link_acquire(c, &l);
  if (rc != CACHET_OK)
    return cachet_result(c, rc);
  const char *argv[1] = {"PING"};
  size_t lens[1] = {4};
  redisReply *r = NULL;
  rc = cachet_link_command(l, 1, argv, lens, &r);
  if (rc == CACHET_OK && r->type != REDIS_REPLY_STATUS) {
    cachet_link_break(l);
    rc = cachet_fail(CACHET_EPROTO, "PING: unexpected reply type %d", r->type);
  }
  if (r != NULL)
    freeReplyObject(r);
  cachet_link_release(c, l);
  return cachet_result(c, rc);
}
