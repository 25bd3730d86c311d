/* Redis key names; the layout is described in keys.h and docs/DESIGN.md. */
#include "keys.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

unsigned cachet_bucket(const void *name, size_t len) {
  const unsigned char *p = name;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 16777619u;
  }
  return (unsigned)(h % CACHET_BUCKETS);
}

size_t cachet_key_write(const cachet *c, char *o, char kind, unsigned bucket,
                        const void *name, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t plen = c->cfg.prefixlen;
  memcpy(o, c->cfg.prefix, plen);
  o += plen;
  *o++ = '{';
  *o++ = hex[(bucket >> 4) & 0xf];
  *o++ = hex[bucket & 0xf];
  *o++ = '}';
  *o++ = kind;
  *o++ = ':';
  if (len > 0)
    memcpy(o, name, len);
  o[len] = '\0';
  return plen + 6 + len;
}

int cachet_key_build(const cachet *c, cachet_key *k, char kind, unsigned bucket,
                     const void *name, size_t len) {
  /* prefix + "{bb}" + kind + ":" + name */
  size_t need = c->cfg.prefixlen + 6 + len;
  if (need < len)
    return cachet_fail(CACHET_EINVAL, "key too long");
  k->buf = need + 1 <= sizeof k->inl ? k->inl : malloc(need + 1);
  if (k->buf == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory building a key name");
  k->len = cachet_key_write(c, k->buf, kind, bucket, name, len);
  return CACHET_OK;
}

void cachet_key_free(cachet_key *k) {
  if (k->buf != NULL && k->buf != k->inl)
    free(k->buf);
  k->buf = NULL;
  k->len = 0;
}

int cachet_scan_pattern(const cachet *c, const char *tail, char **out) {
  size_t tlen = strlen(tail);
  char *buf = malloc(c->cfg.prefixlen * 2 + tlen + 1);
  if (buf == NULL)
    return cachet_fail(CACHET_ENOMEM, "out of memory building a pattern");
  size_t o = 0;
  for (size_t i = 0; i < c->cfg.prefixlen; i++) {
    char ch = c->cfg.prefix[i];
    if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\')
      buf[o++] = '\\';
    buf[o++] = ch;
  }
  memcpy(buf + o, tail, tlen + 1);
  *out = buf;
  return CACHET_OK;
}

char cachet_data_kind(const cachet *c, const char *s, size_t len) {
  size_t p = c->cfg.prefixlen;
  if (len < p + 6 || memcmp(s, c->cfg.prefix, p) != 0 || s[p] != '{' ||
      s[p + 3] != '}' || s[p + 5] != ':')
    return 0;
  for (size_t i = p + 1; i <= p + 2; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  char k = s[p + 4];
  if (k == CACHET_KIND_VALUE || k == CACHET_KIND_TAGSET ||
      k == CACHET_KIND_INDEX || k == CACHET_KIND_EVICTING)
    return k;
  return 0;
}
