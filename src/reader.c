/* Bounds on what a server can make cachet buffer; see reader.h. */
#include "reader.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "envelope.h"

#define BULK_FLOOR ((size_t)1 << 20)
#define ARRAY_MAX ((size_t)1 << 20)

void cachet_reader_limits(const cachet_config *cfg, cachet_reader_bound *b) {
  memset(b, 0, sizeof *b);
  size_t sealed = cachet_envelope_bound(cfg->max_value_size);
  if (sealed == 0) /* overflow: no value could be that large anyway */
    sealed = (size_t)-1;
  b->bulk_max = sealed > BULK_FLOOR ? sealed : BULK_FLOOR;
  b->array_max = ARRAY_MAX;
}

static void refuse(cachet_reader_bound *b, const char *what,
                   unsigned long long n, size_t max) {
  if (!b->refused)
    snprintf(b->why, sizeof b->why,
             "the server sent %s of %llu, above the %zu "
             "cachet accepts (max_value_size)",
             what, n, max);
  b->refused = 1;
}

/* hiredis allocates an array's element pointers as soon as its header is
 * parsed; NULL makes the reader fail (as out of memory) before that. */
static void *bounded_array(const redisReadTask *task, int elements) {
  cachet_reader_bound *b = task->privdata;
  if (elements > 0 && (size_t)elements > b->array_max) {
    refuse(b, "an array", (unsigned long long)elements, b->array_max);
    return NULL;
  }
  return b->orig->createArray(task, elements);
}

static void *pass_string(const redisReadTask *task, char *s, size_t len) {
  const cachet_reader_bound *b = task->privdata;
  return b->orig->createString(task, s, len);
}

static void *pass_integer(const redisReadTask *task, long long v) {
  const cachet_reader_bound *b = task->privdata;
  return b->orig->createInteger(task, v);
}

static void *pass_nil(const redisReadTask *task) {
  const cachet_reader_bound *b = task->privdata;
  return b->orig->createNil(task);
}

/* The reader calls freeObject without a task; every reply object is
 * hiredis's own, freed the usual way. Never written: the reader's `fn`
 * member is simply not const. */
static redisReplyObjectFunctions bounded_functions = {
    pass_string, bounded_array, pass_integer, pass_nil, freeReplyObject};

void cachet_reader_attach(redisReader *r, cachet_reader_bound *b) {
  if (r->fn != &bounded_functions)
    b->orig = r->fn;
  r->fn = &bounded_functions;
  r->privdata = b;
}

int cachet_reader_check(const redisReader *r, cachet_reader_bound *b) {
  if (b->refused)
    return -1;
  size_t pending = r->len - r->pos;
  /* A bulk string being read: hiredis has taken its '$' and waits at the
   * length line for the whole body. Its length is known as soon as the
   * line is complete. */
  if (r->ridx >= 0 && r->rstack[r->ridx].type == REDIS_REPLY_STRING) {
    const char *p = r->buf + r->pos, *end = r->buf + r->len;
    unsigned long long n = 0;
    int digits = 0;
    for (; p < end && *p >= '0' && *p <= '9' && digits < 20; p++, digits++)
      n = n * 10 + (unsigned long long)(*p - '0');
    if (digits > 0 && (n > b->bulk_max || digits == 20)) {
      refuse(b, "a bulk string", n, b->bulk_max);
      return -1;
    }
  }
  if (pending > b->bulk_max + 65536) {
    refuse(b, "a reply in progress", (unsigned long long)pending, b->bulk_max);
    return -1;
  }
  return 0;
}
