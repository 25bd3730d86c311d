/* Status texts and the thread-local error detail. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cachet.h"

#define DETAIL_MAX 512

/* Thread-local so that threads sharing one handle never see each other's
 * detail: the handle has no error field at all. */
static _Thread_local char detail[DETAIL_MAX];

const char *cachet_strerror(int status) {
  switch (status) {
#define XX(name, code, text)                                                   \
  case CACHET_##name:                                                          \
    return text;
    CACHET_STATUS_MAP(XX)
#undef XX
  }
  return "unknown status";
}

const char *cachet_status_name(int status) {
  switch (status) {
#define XX(name, code, text)                                                   \
  case CACHET_##name:                                                          \
    return "CACHET_" #name;
    CACHET_STATUS_MAP(XX)
#undef XX
  }
  return "CACHET_UNKNOWN";
}

const char *cachet_last_error(void) { return detail; }

void cachet_error_clear(void) { detail[0] = '\0'; }

int cachet_fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  return status;
}

int cachet_fail_bytes(int status, const char *prefix, const char *msg,
                      size_t len) {
  size_t o = 0;
  if (prefix != NULL) {
    size_t pl = strlen(prefix);
    if (pl > DETAIL_MAX - 1)
      pl = DETAIL_MAX - 1;
    memcpy(detail, prefix, pl);
    o = pl;
  }
  for (size_t i = 0; i < len && o + 5 < DETAIL_MAX; i++) {
    unsigned char ch = (unsigned char)msg[i];
    if (ch >= 0x20 && ch < 0x7f) {
      detail[o++] = (char)ch;
    } else {
      o += (size_t)snprintf(detail + o, DETAIL_MAX - o, "\\x%02x", ch);
    }
  }
  detail[o] = '\0';
  /* A server may answer "-" alone: the detail must still say something. */
  if (len == 0)
    snprintf(detail + o, DETAIL_MAX - o, "(an error reply without a message)");
  return status;
}

int cachet_status_exit_code(int status) {
  if (status == CACHET_OK)
    return 0;
  if (status > 0)
    return 1;
  switch (status) {
  case CACHET_EINVAL:
  case CACHET_ECONFIG:
    return 2;
  case CACHET_ECORRUPT:
  case CACHET_EINTEGRITY:
  case CACHET_EVERSION:
    return 4;
  default:
    return 3;
  }
}

void cachet_free(void *p) { free(p); }

int cachet_grow(void *pp, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return CACHET_OK;
  size_t n = *cap ? *cap : 8;
  while (n < need)
    n *= 2;
  void *q = realloc(*(void **)pp, n * size);
  if (q == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory");
  *(void **)pp = q;
  *cap = n;
  return CACHET_OK;
}
