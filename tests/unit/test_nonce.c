/* The AEAD nonce generator (src/nonce.c): distinct nonces across threads,
 * a forked child that never repeats its parent's stream, and the
 * randombytes fallback. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "cachet.h"
#include "envelope.h"
#include "harness.h"
#include "keyring.h"
#include "nonce.h"

#define THREADS 8
#define PER_THREAD 2048
#define PER_CHILD_THREAD 128
#define AFTER_FORK 16

typedef struct nonce {
  uint8_t b[CACHET_NONCE_BYTES];
} nonce;

typedef struct draw_job {
  nonce *out;
  size_t n;
  pthread_barrier_t *start;
  int failed;
} draw_job;

static int cmp_nonce(const void *a, const void *b) {
  return memcmp(a, b, CACHET_NONCE_BYTES);
}

/* 1 if no two of the n nonces are equal (sorts them). */
static int all_distinct(nonce *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_nonce);
  for (size_t i = 1; i < n; i++)
    if (memcmp(&v[i - 1], &v[i], CACHET_NONCE_BYTES) == 0)
      return 0;
  return 1;
}

static void *draw_thread(void *arg) {
  draw_job *j = arg;
  pthread_barrier_wait(j->start);
  for (size_t i = 0; i < j->n; i++)
    if (cachet_nonce(j->out[i].b) != CACHET_OK)
      j->failed = 1;
  return NULL;
}

/* Draw `per` nonces on each of THREADS threads released together into
 * out[THREADS * per]. Returns 0, or -1 if a thread could not be started or
 * a draw failed. No cmocka asserts: forked children call it too. */
static int draw_on_threads(nonce *out, size_t per) {
  pthread_t th[THREADS];
  draw_job jobs[THREADS];
  pthread_barrier_t start;
  int rc = 0;
  if (pthread_barrier_init(&start, NULL, THREADS) != 0)
    return -1;
  for (size_t t = 0; t < THREADS; t++) {
    jobs[t] = (draw_job){out + t * per, per, &start, 0};
    if (pthread_create(&th[t], NULL, draw_thread, &jobs[t]) != 0)
      abort(); /* the barrier would never open */
  }
  for (size_t t = 0; t < THREADS; t++) {
    pthread_join(th[t], NULL);
    if (jobs[t].failed)
      rc = -1;
  }
  pthread_barrier_destroy(&start);
  return rc;
}

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w <= 0)
      return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Read until EOF; the number of bytes read. */
static size_t read_all(int fd, void *p, size_t cap) {
  uint8_t *c = p;
  size_t got = 0;
  while (got < cap) {
    ssize_t r = read(fd, c + got, cap - got);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  return got;
}

/*
 * Fork a child that runs `child` (which returns its exit status and may
 * write nonces to `fd`), while the parent draws AFTER_FORK nonces into
 * `parent_next`. The child's nonces are returned in `from_child` (up to
 * `cap` of them); the count is the return value. Fails the test unless the
 * child exits 0.
 */
static size_t fork_and_draw(int (*child)(int fd), nonce *parent_next,
                            nonce *from_child, size_t cap) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    int st = child(fds[1]);
    close(fds[1]);
    _exit(st);
  }
  close(fds[1]);
  for (size_t i = 0; i < AFTER_FORK; i++)
    assert_int_equal(cachet_nonce(parent_next[i].b), CACHET_OK);
  size_t got = read_all(fds[0], from_child, cap * sizeof *from_child);
  close(fds[0]);
  test_expect_child_ok(pid);
  assert_int_equal(got % sizeof *from_child, 0);
  return got / sizeof *from_child;
}

/* No nonce of `a` appears in `b`. */
static void assert_disjoint(const nonce *a, size_t na, const nonce *b,
                            size_t nb) {
  for (size_t i = 0; i < na; i++)
    for (size_t j = 0; j < nb; j++)
      if (memcmp(&a[i], &b[j], CACHET_NONCE_BYTES) == 0)
        fail_msg("nonce %zu of one process is nonce %zu of the other", i, j);
}

/* ---- Children ---- */

static int child_draws_in_order(int fd) {
  nonce v[AFTER_FORK];
  for (size_t i = 0; i < AFTER_FORK; i++)
    if (cachet_nonce(v[i].b) != CACHET_OK)
      return 10;
  return write_all(fd, v, sizeof v) == 0 ? 0 : 11;
}

/* Threads that start together in a fresh child race to draw the new seed;
 * the losers fall back to randombytes. */
static int child_threads_race_to_reseed(int fd) {
  static nonce v[THREADS * PER_CHILD_THREAD];
  if (draw_on_threads(v, PER_CHILD_THREAD) != 0)
    return 20;
  if (write_all(fd, v, sizeof v) != 0)
    return 21;
  return all_distinct(v, THREADS * PER_CHILD_THREAD) ? 0 : 22;
}

/* ---- Tests ---- */

static void test_source_is_stream_where_wipeonfork_is_available(void **state) {
  (void)state;
  /* The test's own probe of the kernel, independent of src/nonce.c. */
  int wipe = 0;
#ifdef MADV_WIPEONFORK
  long pg = sysconf(_SC_PAGESIZE);
  size_t len = pg > 0 ? (size_t)pg : 4096u;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  assert_true(p != MAP_FAILED);
  wipe = madvise(p, len, MADV_WIPEONFORK) == 0;
  munmap(p, len);
#endif
  assert_int_equal(cachet_nonce_source(),
                   wipe ? CACHET_NONCE_STREAM : CACHET_NONCE_SYSCALL);
  if (!wipe)
    print_message("note: no MADV_WIPEONFORK here; only the randombytes "
                  "path is exercised\n");
}

static void test_nonces_from_many_threads_are_distinct(void **state) {
  (void)state;
  nonce *v = malloc(THREADS * PER_THREAD * sizeof *v);
  assert_non_null(v);
  assert_int_equal(draw_on_threads(v, PER_THREAD), 0);
  assert_true(all_distinct(v, THREADS * PER_THREAD));
  free(v);
}

static void test_successive_nonces_differ_and_are_not_zero(void **state) {
  (void)state;
  static const nonce zero;
  nonce a, b;
  assert_int_equal(cachet_nonce(a.b), CACHET_OK);
  assert_int_equal(cachet_nonce(b.b), CACHET_OK);
  assert_memory_not_equal(a.b, b.b, CACHET_NONCE_BYTES);
  assert_memory_not_equal(a.b, zero.b, CACHET_NONCE_BYTES);
  assert_memory_not_equal(b.b, zero.b, CACHET_NONCE_BYTES);
}

static void test_child_after_fork_never_repeats_parent_nonces(void **state) {
  (void)state;
  /* Seed the parent's stream first: a child that inherited it would draw
   * exactly the parent's next nonces. */
  nonce before;
  assert_int_equal(cachet_nonce(before.b), CACHET_OK);
  nonce parent[AFTER_FORK], child[AFTER_FORK];
  size_t n = fork_and_draw(child_draws_in_order, parent, child, AFTER_FORK);
  assert_int_equal(n, AFTER_FORK);
  assert_disjoint(child, n, parent, AFTER_FORK);
  assert_disjoint(child, n, &before, 1);
  /* Forked twice, the two children differ from each other too. */
  nonce parent2[AFTER_FORK], child2[AFTER_FORK];
  assert_int_equal(
      fork_and_draw(child_draws_in_order, parent2, child2, AFTER_FORK),
      AFTER_FORK);
  assert_disjoint(child2, AFTER_FORK, child, AFTER_FORK);
  assert_disjoint(child2, AFTER_FORK, parent2, AFTER_FORK);
}

static void
test_threads_reseeding_in_a_child_get_distinct_nonces(void **state) {
  (void)state;
  nonce before;
  assert_int_equal(cachet_nonce(before.b), CACHET_OK);
  size_t cap = THREADS * PER_CHILD_THREAD;
  nonce *child = malloc(cap * sizeof *child);
  assert_non_null(child);
  nonce parent[AFTER_FORK];
  size_t n = fork_and_draw(child_threads_race_to_reseed, parent, child, cap);
  assert_int_equal(n, cap);
  assert_disjoint(child, n, parent, AFTER_FORK);
  free(child);
}

/* In a child of its own, so that the one-way switch leaves the other tests
 * on the stream. */
static int child_syscall_fallback(int fd) {
  (void)fd;
  cachet_nonce_use_syscall();
  if (cachet_nonce_source() != CACHET_NONCE_SYSCALL)
    return 30;
  static nonce v[THREADS * PER_CHILD_THREAD];
  if (draw_on_threads(v, PER_CHILD_THREAD) != 0)
    return 31;
  if (!all_distinct(v, THREADS * PER_CHILD_THREAD))
    return 32;
  /* Sealing still works, with a fresh nonce each time. */
  static const char ring[] = "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
  cachet_keyring *kr = NULL;
  if (cachet_keyring_parse(ring, sizeof ring - 1, &kr) != CACHET_OK)
    return 33;
  uint8_t *a = NULL, *b = NULL;
  size_t alen = 0, blen = 0, off = 0, plen = 0;
  int st = 0;
  if (cachet_envelope_seal(kr, 1, "k", 1, 0, 1, 0, "value", 5, &a, &alen) !=
          CACHET_OK ||
      cachet_envelope_seal(kr, 1, "k", 1, 0, 1, 0, "value", 5, &b, &blen) !=
          CACHET_OK)
    st = 34;
  else if (memcmp(a + CACHET_ENVELOPE_HEADER_BYTES,
                  b + CACHET_ENVELOPE_HEADER_BYTES,
                  CACHET_ENVELOPE_NONCE_BYTES) == 0)
    st = 35;
  else if (cachet_envelope_open(kr, 0, "k", 1, a, alen, 1, NULL, &off, &plen) !=
               CACHET_OK ||
           plen != 5 || memcmp(a + off, "value", 5) != 0)
    st = 36;
  free(a);
  free(b);
  cachet_keyring_free(kr);
  return st;
}

static void test_syscall_fallback_gives_distinct_nonces(void **state) {
  (void)state;
  nonce parent[AFTER_FORK], none[1];
  assert_int_equal(fork_and_draw(child_syscall_fallback, parent, none, 1), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_source_is_stream_where_wipeonfork_is_available),
      cmocka_unit_test(test_nonces_from_many_threads_are_distinct),
      cmocka_unit_test(test_successive_nonces_differ_and_are_not_zero),
      cmocka_unit_test(test_child_after_fork_never_repeats_parent_nonces),
      cmocka_unit_test(test_threads_reseeding_in_a_child_get_distinct_nonces),
      cmocka_unit_test(test_syscall_fallback_gives_distinct_nonces),
  };
  if (sodium_init() < 0)
    return 1;
  return cmocka_run_group_tests(tests, NULL, NULL);
}
