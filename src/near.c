/* The near cache's table (near.h).
 *
 * Eviction is S3-FIFO (Yang et al., SOSP 2023), per stripe: a new key goes
 * to a small FIFO; at the small queue's tail a key read again since it came
 * in moves on to the main FIFO, and one read once is dropped and remembered
 * in a ghost table; a ghost's key goes straight to main when it returns. At
 * main's tail a key read since its last pass goes round again. A scan of
 * keys read once therefore passes through the small queue (a tenth of the
 * bytes) and never pushes the hot keys out of main. BENCHMARKS.md has the
 * hit rates beside a plain FIFO's.
 *
 * Keys are hashed with SipHash under a random key (crypto_shorthash), so
 * that whoever chooses cache keys cannot make one chain long. */
#include "near.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cachet.h"

#define STRIPES 64u
#define STRIPE_SHIFT 58 /* the top 6 bits of a hash pick the stripe */
#define TABLE_MIN 16u
#define GHOST_MIN 16u

enum { Q_SMALL, Q_MAIN, Q_NONE };

typedef struct node {
  struct node *hnext, *prev, *next;
  uint64_t hash;
  uint64_t ticket; /* non-zero: a placeholder for a fill under way */
  int64_t expires; /* Unix ms */
  size_t klen, vlen, cost;
  uint8_t freq, queue;
  char data[]; /* the key, then the value and a NUL */
} node;

typedef struct queue {
  node *head, *tail; /* head: newest */
  size_t bytes;
} queue;

typedef struct stripe {
  pthread_mutex_t mu;
  node **tab;
  size_t mask, count;
  queue q[2];
  uint64_t *ghost;
  size_t gmask;
  size_t bytes, cap;
} stripe;

struct cachet_near {
  stripe s[STRIPES];
  int64_t ttl_ms;
  unsigned char hkey[crypto_shorthash_KEYBYTES];
  _Atomic int active;
  _Atomic uint64_t next_ticket;
  _Atomic uint64_t hits, misses, invalidations, flushes, bytes, entries;
};

#define ADD(n, field, v)                                                       \
  atomic_fetch_add_explicit(&(n)->field, (uint64_t)(v), memory_order_relaxed)
#define SUB(n, field, v)                                                       \
  atomic_fetch_sub_explicit(&(n)->field, (uint64_t)(v), memory_order_relaxed)

static uint64_t hash_of(const cachet_near *n, const void *key, size_t klen) {
  unsigned char h[crypto_shorthash_BYTES];
  crypto_shorthash(h, key, klen, n->hkey);
  uint64_t v;
  memcpy(&v, h, sizeof v);
  return v;
}

static stripe *stripe_of(cachet_near *n, uint64_t h) {
  return &n->s[h >> STRIPE_SHIFT];
}

static void charge(cachet_near *n, stripe *s, size_t bytes) {
  s->bytes += bytes;
  ADD(n, bytes, bytes);
}

static void refund(cachet_near *n, stripe *s, size_t bytes) {
  s->bytes -= bytes;
  SUB(n, bytes, bytes);
}

static node *find(const stripe *s, uint64_t h, const void *key, size_t klen) {
  for (node *x = s->tab[h & s->mask]; x != NULL; x = x->hnext)
    if (x->hash == h && x->klen == klen && memcmp(x->data, key, klen) == 0)
      return x;
  return NULL;
}

static void q_push(queue *q, node *x) {
  x->prev = NULL;
  x->next = q->head;
  if (q->head != NULL)
    q->head->prev = x;
  q->head = x;
  if (q->tail == NULL)
    q->tail = x;
  q->bytes += x->cost;
}

static void q_unlink(queue *q, node *x) {
  if (x->prev != NULL)
    x->prev->next = x->next;
  else
    q->head = x->next;
  if (x->next != NULL)
    x->next->prev = x->prev;
  else
    q->tail = x->prev;
  q->bytes -= x->cost;
}

/* Put x where y was in its chain (y == NULL: at the head of a new one). */
static void chain_swap(stripe *s, node *y, node *x) {
  node **p = &s->tab[x->hash & s->mask];
  while (y != NULL && *p != y)
    p = &(*p)->hnext;
  x->hnext = y != NULL ? y->hnext : *p;
  *p = x;
}

static void chain_unlink(stripe *s, node *x) {
  node **p = &s->tab[x->hash & s->mask];
  while (*p != x)
    p = &(*p)->hnext;
  *p = x->hnext;
}

static void remove_node(cachet_near *n, stripe *s, node *x) {
  chain_unlink(s, x);
  if (x->queue != Q_NONE) {
    q_unlink(&s->q[x->queue], x);
    SUB(n, entries, 1);
  }
  s->count--;
  refund(n, s, x->cost);
  free(x);
}

static void ghost_add(stripe *s, uint64_t h) { s->ghost[h & s->gmask] = h; }

static int ghost_take(stripe *s, uint64_t h) {
  uint64_t *g = &s->ghost[h & s->gmask];
  if (*g != h)
    return 0;
  *g = 0;
  return 1;
}

/* One step of S3-FIFO's eviction; 0 when both queues are empty. */
static int evict_one(cachet_near *n, stripe *s) {
  queue *sm = &s->q[Q_SMALL], *mn = &s->q[Q_MAIN];
  if (sm->tail != NULL && (sm->bytes > s->cap / 10 || mn->tail == NULL)) {
    node *x = sm->tail;
    q_unlink(sm, x);
    if (x->freq > 0) {
      x->freq = 0;
      x->queue = Q_MAIN;
      q_push(mn, x);
    } else {
      ghost_add(s, x->hash);
      x->queue = Q_NONE;
      SUB(n, entries, 1);
      remove_node(n, s, x);
    }
    return 1;
  }
  if (mn->tail == NULL)
    return 0;
  node *x = mn->tail;
  q_unlink(mn, x);
  if (x->freq > 0) {
    x->freq--;
    q_push(mn, x);
  } else {
    x->queue = Q_NONE;
    SUB(n, entries, 1);
    remove_node(n, s, x);
  }
  return 1;
}

/* Make room for one more node in the chain table; 0 if there is none. */
static int table_room(cachet_near *n, stripe *s) {
  size_t slots = s->mask + 1;
  if (s->count + 1 <= slots - slots / 4)
    return 1;
  node **t = calloc(2 * slots, sizeof *t);
  if (t == NULL)
    return 0;
  for (size_t i = 0; i < slots; i++)
    for (node *x = s->tab[i], *next; x != NULL; x = next) {
      next = x->hnext;
      x->hnext = t[x->hash & (2 * slots - 1)];
      t[x->hash & (2 * slots - 1)] = x;
    }
  free(s->tab);
  s->tab = t;
  s->mask = 2 * slots - 1;
  charge(n, s, slots * sizeof *t);
  return 1;
}

static void clear_stripe(cachet_near *n, stripe *s) {
  for (size_t i = 0; i <= s->mask; i++)
    while (s->tab[i] != NULL)
      remove_node(n, s, s->tab[i]);
}

int cachet_near_create(cachet_near **out, size_t bytes, int64_t ttl_ms) {
  *out = NULL;
  void *mem = NULL;
  if (posix_memalign(&mem, 64, sizeof(cachet_near)) != 0)
    return CACHET_ENOMEM;
  cachet_near *n = mem;
  memset(n, 0, sizeof *n);
  n->ttl_ms = ttl_ms;
  randombytes_buf(n->hkey, sizeof n->hkey);
  atomic_init(&n->next_ticket, 1);
  size_t cap = bytes / STRIPES;
  size_t ghosts = GHOST_MIN;
  while (ghosts * 2 * sizeof(uint64_t) <= cap / 16)
    ghosts *= 2;
  int rc = CACHET_OK;
  for (unsigned i = 0; i < STRIPES; i++) {
    stripe *s = &n->s[i];
    pthread_mutex_init(&s->mu, NULL);
    s->cap = cap;
    s->mask = TABLE_MIN - 1;
    s->gmask = ghosts - 1;
    s->tab = calloc(TABLE_MIN, sizeof *s->tab);
    s->ghost = calloc(ghosts, sizeof *s->ghost);
    if (s->tab == NULL || s->ghost == NULL)
      rc = CACHET_ENOMEM;
    charge(n, s, TABLE_MIN * sizeof *s->tab + ghosts * sizeof *s->ghost);
  }
  if (rc != CACHET_OK) {
    cachet_near_destroy(n);
    return rc;
  }
  *out = n;
  return CACHET_OK;
}

void cachet_near_destroy(cachet_near *n) {
  if (n == NULL)
    return;
  for (unsigned i = 0; i < STRIPES; i++) {
    stripe *s = &n->s[i];
    if (s->tab != NULL)
      clear_stripe(n, s);
    free(s->tab);
    free(s->ghost);
    pthread_mutex_destroy(&s->mu);
  }
  free(n);
}

int cachet_near_get(cachet_near *n, const void *key, size_t klen,
                    int64_t now_ms, void **val, size_t *len, uint64_t *ticket) {
  *val = NULL;
  *len = 0;
  *ticket = 0;
  uint64_t h = hash_of(n, key, klen);
  stripe *s = stripe_of(n, h);
  pthread_mutex_lock(&s->mu);
  node *x = find(s, h, key, klen);
  if (x != NULL && x->ticket == 0 && x->expires <= now_ms) {
    remove_node(n, s, x);
    x = NULL;
  }
  if (x != NULL && x->ticket == 0) {
    char *copy = malloc(x->vlen + 1);
    if (copy != NULL) {
      memcpy(copy, x->data + x->klen, x->vlen + 1);
      if (x->freq < 3)
        x->freq++;
      *val = copy;
      *len = x->vlen;
    }
    pthread_mutex_unlock(&s->mu);
    if (copy == NULL)
      return CACHET_ENOMEM;
    ADD(n, hits, 1);
    return CACHET_OK;
  }
  /* A placeholder: another thread is filling the key; read, do not fill. */
  if (x == NULL && atomic_load_explicit(&n->active, memory_order_acquire) &&
      table_room(n, s) && (x = malloc(sizeof *x + klen)) != NULL) {
    memset(x, 0, sizeof *x);
    x->hash = h;
    x->klen = klen;
    x->cost = sizeof *x + klen;
    x->queue = Q_NONE;
    memcpy(x->data, key, klen);
    x->ticket =
        atomic_fetch_add_explicit(&n->next_ticket, 1, memory_order_relaxed);
    chain_swap(s, NULL, x);
    s->count++;
    charge(n, s, x->cost);
    *ticket = x->ticket;
  }
  pthread_mutex_unlock(&s->mu);
  ADD(n, misses, 1);
  return CACHET_MISS;
}

static node *placeholder(stripe *s, uint64_t h, const void *key, size_t klen,
                         uint64_t ticket) {
  node *x = find(s, h, key, klen);
  return x != NULL && x->ticket == ticket ? x : NULL;
}

void cachet_near_fill(cachet_near *n, const void *key, size_t klen,
                      uint64_t ticket, const void *val, size_t len,
                      int64_t expires_ms, int64_t now_ms) {
  if (ticket == 0)
    return;
  uint64_t h = hash_of(n, key, klen);
  stripe *s = stripe_of(n, h);
  size_t cost = sizeof(node) + klen + len + 1;
  /* Allocated before the lock, so the lock is never held across malloc of
   * a large value. */
  node *y = cost <= s->cap / 2 ? malloc(cost) : NULL;
  pthread_mutex_lock(&s->mu);
  node *x = placeholder(s, h, key, klen, ticket);
  if (x == NULL || y == NULL) {
    if (x != NULL)
      remove_node(n, s, x);
    pthread_mutex_unlock(&s->mu);
    free(y);
    return;
  }
  memset(y, 0, sizeof *y);
  y->hash = h;
  y->klen = klen;
  y->vlen = len;
  y->cost = cost;
  int64_t cap = now_ms + n->ttl_ms;
  y->expires = expires_ms > 0 && expires_ms < cap ? expires_ms : cap;
  memcpy(y->data, key, klen);
  memcpy(y->data + klen, val, len);
  y->data[klen + len] = '\0';
  chain_swap(s, x, y);
  refund(n, s, x->cost);
  free(x);
  charge(n, s, y->cost);
  y->queue = ghost_take(s, h) ? Q_MAIN : Q_SMALL;
  q_push(&s->q[y->queue], y);
  ADD(n, entries, 1);
  while (s->bytes > s->cap && evict_one(n, s))
    ;
  pthread_mutex_unlock(&s->mu);
}

void cachet_near_abandon(cachet_near *n, const void *key, size_t klen,
                         uint64_t ticket) {
  if (ticket == 0)
    return;
  uint64_t h = hash_of(n, key, klen);
  stripe *s = stripe_of(n, h);
  pthread_mutex_lock(&s->mu);
  node *x = placeholder(s, h, key, klen, ticket);
  if (x != NULL)
    remove_node(n, s, x);
  pthread_mutex_unlock(&s->mu);
}

void cachet_near_drop(cachet_near *n, const void *key, size_t klen) {
  uint64_t h = hash_of(n, key, klen);
  stripe *s = stripe_of(n, h);
  pthread_mutex_lock(&s->mu);
  node *x = find(s, h, key, klen);
  if (x != NULL)
    remove_node(n, s, x);
  pthread_mutex_unlock(&s->mu);
}

void cachet_near_flush(cachet_near *n) {
  for (unsigned i = 0; i < STRIPES; i++) {
    pthread_mutex_lock(&n->s[i].mu);
    clear_stripe(n, &n->s[i]);
    pthread_mutex_unlock(&n->s[i].mu);
  }
  ADD(n, flushes, 1);
}

void cachet_near_activate(cachet_near *n) {
  atomic_store_explicit(&n->active, 1, memory_order_release);
}

void cachet_near_deactivate(cachet_near *n) {
  /* Cleared first: a lookup that takes a stripe after the flush passed it
   * sees the flag down and leaves no placeholder. */
  atomic_store(&n->active, 0);
  cachet_near_flush(n);
}

int cachet_near_active(const cachet_near *n) {
  return atomic_load_explicit(&n->active, memory_order_acquire);
}

void cachet_near_count_invalidation(cachet_near *n) {
  ADD(n, invalidations, 1);
}

void cachet_near_get_stats(const cachet_near *n, cachet_near_stats *out) {
  out->hits = atomic_load_explicit(&n->hits, memory_order_relaxed);
  out->misses = atomic_load_explicit(&n->misses, memory_order_relaxed);
  out->invalidations =
      atomic_load_explicit(&n->invalidations, memory_order_relaxed);
  out->flushes = atomic_load_explicit(&n->flushes, memory_order_relaxed);
  out->bytes = atomic_load_explicit(&n->bytes, memory_order_relaxed);
  out->entries = atomic_load_explicit(&n->entries, memory_order_relaxed);
}
