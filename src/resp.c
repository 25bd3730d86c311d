/* RESP formatting (resp.h). hiredis 0.14 formats an argv through
 * sdscatfmt, piece by piece, into a fresh string that it then copies: in a
 * pipelined batch that was the client's largest cost. Here room is made
 * once, for a bound that needs no digit counting, and each piece is copied
 * once. */
#include "resp.h"

#include <stdint.h>
#include <string.h>

static size_t digits(size_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    n++;
  }
  return n;
}

/* A header is a mark, at most 20 digits and CRLF; an argument adds CRLF. */
#define HEADER_MAX 23

size_t cachet_resp_bound(int argc, const size_t *lens) {
  size_t total = HEADER_MAX;
  for (int i = 0; i < argc; i++) {
    if (lens[i] > SIZE_MAX - HEADER_MAX - 2 ||
        total > SIZE_MAX - HEADER_MAX - 2 - lens[i])
      return 0;
    total += HEADER_MAX + 2 + lens[i];
  }
  return total;
}

/* `mark` (e.g. '$'), v in decimal and CRLF at p; returns the end. */
static char *put_header(char *p, char mark, size_t v) {
  size_t n = digits(v);
  *p++ = mark;
  for (size_t i = n; i-- > 0; v /= 10)
    p[i] = (char)('0' + v % 10);
  p += n;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

char *cachet_resp_write(char *p, int argc, const char **argv,
                        const size_t *lens) {
  p = put_header(p, '*', (size_t)argc);
  for (int i = 0; i < argc; i++) {
    p = put_header(p, '$', lens[i]);
    if (lens[i] > 0)
      memcpy(p, argv[i], lens[i]);
    p += lens[i];
    *p++ = '\r';
    *p++ = '\n';
  }
  return p;
}
