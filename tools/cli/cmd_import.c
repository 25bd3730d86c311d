/* cachet import: bulk-load tab-separated lines through cachet_mset, for cache
 * warm-up.
 *
 * Lines are read with getline and copied into a per-batch arena; a full
 * batch (BATCH lines) goes out as one cachet_mset, which pipelines it. Each
 * line is checked with the library's own rules before it joins a batch, so
 * one bad line is reported by its number and skipped, never failing the
 * batch it would have been part of. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cli.h"
#include "tool.h"

extern const cli_command cli_cmd_import;

/* Lines per cachet_mset. */
#define BATCH 1000
/* Concurrent writers (pooled connections). */
#define NWRITERS 2

static void help_import(FILE *o) {
  fprintf(o,
          "usage: cachet import [--json] < FILE\n"
          "  Load entries from stdin, one per line:\n"
          "    KEY<TAB>VALUE[<TAB>TTL_MS[<TAB>TAG,TAG...]]\n"
          "  KEY and VALUE are taken literally (they cannot hold a TAB or a\n"
          "  newline); a trailing CR is dropped. TTL_MS is milliseconds, 0 or\n"
          "  absent for none. Entries are written in batches of %d through\n"
          "  the batch API (pipelined). A bad line is reported on stderr by\n"
          "  its number and skipped; the others are still loaded.\n"
          "  --json  print {\"loaded\":N,\"bad_lines\":N,\"failed\":N}\n"
          "Exit: 0 every line loaded, 2 some lines were bad (the rest were\n"
          "loaded) or usage, 3 connection/server error (entries of earlier\n"
          "batches stay loaded).\n",
          BATCH);
}

/* One parsed line, as offsets into the batch arena (which may move). */
typedef struct pending {
  size_t key, keylen, val, vallen;
  int64_t ttl;
  size_t tag0, ntags; /* into batch.tagoff */
  unsigned long line;
} pending;

typedef struct batch {
  char *arena;
  size_t alen, acap;
  pending p[BATCH];
  size_t n;
  size_t *tagoff;
  size_t ntag, tagcap;
  cachet_entry e[BATCH];
  const char **tagptr;
  size_t tagptrcap;
} batch;

typedef struct counts {
  uint64_t loaded, bad, failed;
} counts;

static int arena_reserve(batch *b, size_t more) {
  if (b->acap - b->alen >= more)
    return 0;
  size_t cap = b->acap ? b->acap : 1 << 16;
  while (cap - b->alen < more) {
    if (cap > SIZE_MAX / 2)
      return -1;
    cap *= 2;
  }
  char *a = realloc(b->arena, cap);
  if (a == NULL)
    return -1;
  b->arena = a;
  b->acap = cap;
  return 0;
}

static int tag_push(batch *b, size_t off) {
  if (b->ntag == b->tagcap) {
    size_t cap = b->tagcap ? b->tagcap * 2 : 1024;
    size_t *t = realloc(b->tagoff, cap * sizeof *t);
    if (t == NULL)
      return -1;
    b->tagoff = t;
    b->tagcap = cap;
  }
  b->tagoff[b->ntag++] = off;
  return 0;
}

static void bad_line(counts *k, unsigned long line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void bad_line(counts *k, unsigned long line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "cachet import: line %lu: ", line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  k->bad++;
}

/* Print at most 40 bytes of a field for a message, quoted. */
static void quote_field(char *out, size_t outlen, const char *s, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 5 < outlen; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (i == 40) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  out[o] = '\0';
}

/*
 * Parse `line` (len bytes, no newline) into the batch. The line is copied
 * into the arena and split there (TABs and commas become NULs, so tags are
 * NUL-terminated strings). Returns 0 when added, 1 when the line was bad
 * (reported), -1 when out of memory.
 */
static int add_line(cachet *c, batch *b, counts *k, unsigned long lineno,
                    const char *line, size_t len) {
  if (len > 0 && line[len - 1] == '\r')
    len--;
  if (arena_reserve(b, len + 1) != 0)
    return -1;
  size_t base = b->alen;
  char *s = b->arena + base;
  memcpy(s, line, len);
  s[len] = '\0';

  /* Split into at most 4 fields on TAB. */
  size_t start[4], flen[4];
  int nf = 0;
  size_t pos = 0;
  for (;;) {
    char *tab = memchr(s + pos, '\t', len - pos);
    size_t end = tab != NULL ? (size_t)(tab - s) : len;
    if (nf == 4) {
      bad_line(k, lineno, "more than 4 TAB-separated fields");
      return 1;
    }
    start[nf] = pos;
    flen[nf++] = end - pos;
    if (tab == NULL)
      break;
    *tab = '\0';
    pos = end + 1;
  }
  if (nf < 2) {
    bad_line(k, lineno,
             "no TAB after the key (expected "
             "KEY<TAB>VALUE[<TAB>TTL_MS[<TAB>TAG,TAG...]])");
    return 1;
  }
  /* cachet_mset's checks, a field at a time: the first bad one is named. */
  cachet_entry e = {.key = s + start[0], .keylen = flen[0]};
  int rc = cachet_tool_check_entry(c, &e);
  if (rc != CACHET_OK) {
    bad_line(k, lineno, "%s", cachet_last_error());
    return 1;
  }
  int64_t ttl = 0;
  if (nf >= 3 && cli_parse_ms(s + start[2], &ttl) != 0) {
    char q[64];
    quote_field(q, sizeof q, s + start[2], flen[2]);
    bad_line(k, lineno, "TTL \"%s\" is not a number", q);
    return 1;
  }
  e.val = s + start[1];
  e.len = flen[1];
  e.ttl_ms = ttl;
  rc = cachet_tool_check_entry(c, &e);
  if (rc != CACHET_OK) {
    bad_line(k, lineno, "%s", cachet_last_error());
    return 1;
  }
  size_t tag0 = b->ntag;
  if (nf == 4 && flen[3] > 0) {
    char *t = s + start[3];
    size_t tl = flen[3], p = 0;
    for (;;) {
      char *comma = memchr(t + p, ',', tl - p);
      size_t end = comma != NULL ? (size_t)(comma - t) : tl;
      if (end == p) {
        b->ntag = tag0;
        bad_line(k, lineno, "empty tag in the tag list");
        return 1;
      }
      if (tag_push(b, (size_t)(t + p - b->arena)) != 0)
        return -1;
      if (comma == NULL)
        break;
      *comma = '\0';
      p = end + 1;
    }
  }
  /* The tags, with pointers into the arena (stable until the next line). */
  size_t nt = b->ntag - tag0;
  const char *tp[64];
  const char **tags = tp;
  if (nt > sizeof tp / sizeof tp[0] &&
      (tags = malloc(nt * sizeof *tags)) == NULL)
    return -1;
  for (size_t i = 0; i < nt; i++)
    tags[i] = b->arena + b->tagoff[tag0 + i];
  e.tags = tags;
  e.ntags = nt;
  rc = cachet_tool_check_entry(c, &e);
  if (tags != tp)
    free(tags);
  if (rc != CACHET_OK) {
    b->ntag = tag0;
    bad_line(k, lineno, "%s", cachet_last_error());
    return 1;
  }

  pending *pd = &b->p[b->n++];
  pd->key = base + start[0];
  pd->keylen = flen[0];
  pd->val = base + start[1];
  pd->vallen = flen[1];
  pd->ttl = ttl;
  pd->tag0 = tag0;
  pd->ntags = nt;
  pd->line = lineno;
  b->alen += len + 1;
  return 0;
}

/* Write the batch with one cachet_mset. Returns a fatal status (the batch
 * stopped) or CACHET_OK; per-entry failures are reported and counted. */
static int flush(cachet *c, batch *b, counts *k, int *server_err,
                 char detail[512]) {
  if (b->n == 0)
    return CACHET_OK;
  if (b->ntag > b->tagptrcap) {
    const char **t = realloc(b->tagptr, b->ntag * sizeof *t);
    if (t == NULL) {
      snprintf(detail, 512, "out of memory");
      return CACHET_ENOMEM;
    }
    b->tagptr = t;
    b->tagptrcap = b->ntag;
  }
  for (size_t i = 0; i < b->ntag; i++)
    b->tagptr[i] = b->arena + b->tagoff[i];
  for (size_t i = 0; i < b->n; i++) {
    const pending *pd = &b->p[i];
    cachet_entry *e = &b->e[i];
    memset(e, 0, sizeof *e);
    e->key = b->arena + pd->key;
    e->keylen = pd->keylen;
    e->val = b->arena + pd->val;
    e->len = pd->vallen;
    e->ttl_ms = pd->ttl;
    e->tags = pd->ntags > 0 ? b->tagptr + pd->tag0 : NULL;
    e->ntags = pd->ntags;
  }
  int rc = cachet_mset(c, b->e, b->n);
  snprintf(detail, 512, "%s", cachet_last_error());
  for (size_t i = 0; i < b->n; i++) {
    int st = b->e[i].status;
    if (st == CACHET_OK) {
      k->loaded++;
    } else {
      k->failed++;
      if (rc == CACHET_OK || st != rc) {
        fprintf(stderr, "cachet import: line %lu: %s\n", b->p[i].line,
                cachet_strerror(st));
        if (st < 0 && *server_err == CACHET_OK)
          *server_err = st;
      }
    }
  }
  if (rc != CACHET_OK && *server_err == CACHET_OK)
    *server_err = rc;
  b->n = 0;
  b->alen = 0;
  b->ntag = 0;
  return rc;
}

/* One writer: its own batch, written over its own pooled connection. Lines
 * go to a writer by their key's bucket, so every line of one key goes
 * through the same writer, in file order. */
typedef struct writer {
  cachet *c;
  batch *b;
  counts k;
  int server_err, rc;
  char detail[512];
} writer;

static void *writer_flush(void *arg) {
  writer *w = arg;
  w->rc = flush(w->c, w->b, &w->k, &w->server_err, w->detail);
  return NULL;
}

/* Flush every writer's batch at once: while one waits for its replies the
 * server works on another's, so Redis is never idle between chunks. */
static int flush_all(writer *w, size_t n, char detail[512]) {
  pthread_t th[NWRITERS];
  int started[NWRITERS] = {0};
  for (size_t i = 1; i < n; i++)
    started[i] = pthread_create(&th[i], NULL, writer_flush, &w[i]) == 0;
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || !started[i])
      writer_flush(&w[i]);
    else
      pthread_join(th[i], NULL);
  }
  for (size_t i = 0; i < n; i++) {
    if (w[i].rc != CACHET_OK) {
      snprintf(detail, 512, "%s", w[i].detail);
      return w[i].rc;
    }
  }
  return CACHET_OK;
}

static int run_import(cli *cl, int argc, char **argv) {
  int json = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0)
      json = 1;
    else
      return cli_usage(&cli_cmd_import, "unknown argument %s", argv[i]);
  }
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;

  writer w[NWRITERS];
  memset(w, 0, sizeof w);
  int oom = 0;
  for (size_t i = 0; i < NWRITERS; i++) {
    w[i].c = c;
    if ((w[i].b = calloc(1, sizeof *w[i].b)) == NULL)
      oom = 1;
  }
  counts k = {0, 0, 0};
  int rc = CACHET_OK;
  char detail[512] = "";
  char *line = NULL;
  size_t cap = 0;
  unsigned long lineno = 0;
  ssize_t got;
  while (!oom && (got = getline(&line, &cap, stdin)) >= 0) {
    lineno++;
    size_t len = (size_t)got;
    if (len > 0 && line[len - 1] == '\n')
      len--;
    if (len == 0)
      continue; /* blank lines are allowed, e.g. a trailing one */
    const char *tab = memchr(line, '\t', len);
    size_t keylen = tab != NULL ? (size_t)(tab - line) : len;
    batch *b = w[cachet_tool_bucket(line, keylen) % NWRITERS].b;
    int added = add_line(c, b, &k, lineno, line, len);
    if (added < 0) {
      oom = 1;
      break;
    }
    if (b->n == BATCH && (rc = flush_all(w, NWRITERS, detail)) != CACHET_OK)
      break;
  }
  int read_err = !oom && rc == CACHET_OK && ferror(stdin);
  if (!oom && rc == CACHET_OK && !read_err)
    rc = flush_all(w, NWRITERS, detail);
  free(line);
  int server_err = CACHET_OK;
  for (size_t i = 0; i < NWRITERS; i++) {
    k.loaded += w[i].k.loaded;
    k.failed += w[i].k.failed;
    if (server_err == CACHET_OK)
      server_err = w[i].server_err;
    if (w[i].b != NULL) {
      free(w[i].b->arena);
      free(w[i].b->tagoff);
      free(w[i].b->tagptr);
      free(w[i].b);
    }
  }

  if (json)
    printf("{\"loaded\":%llu,\"bad_lines\":%llu,\"failed\":%llu}\n",
           (unsigned long long)k.loaded, (unsigned long long)k.bad,
           (unsigned long long)k.failed);
  else
    printf("loaded %llu\n", (unsigned long long)k.loaded);
  if (oom) {
    fprintf(stderr, "cachet import: out of memory at line %lu\n", lineno);
    return EXIT_SERVER;
  }
  if (read_err) {
    fprintf(stderr, "cachet import: reading stdin: %s\n", strerror(errno));
    return EXIT_SERVER;
  }
  if (rc != CACHET_OK)
    return cli_status_why(rc, "import", detail);
  if (server_err != CACHET_OK) {
    fprintf(stderr, "cachet import: %llu entries were not written\n",
            (unsigned long long)k.failed);
    return EXIT_SERVER;
  }
  if (k.bad > 0) {
    fprintf(stderr, "cachet import: %llu bad lines skipped\n",
            (unsigned long long)k.bad);
    return EXIT_USAGE;
  }
  return EXIT_HIT;
}

const cli_command cli_cmd_import = {
    "import", "bulk-load KEY<TAB>VALUE[<TAB>TTL[<TAB>TAGS]] lines from stdin",
    run_import, help_import};
