/* AEAD nonces from a per-process ChaCha20 keystream (see nonce.h). Besides
 * sodium_once.c, this is the library's only global mutable state: one
 * generator per process, as with arc4random, because what must never
 * repeat is a nonce under a key, and keys are shared by every handle. */
#include "nonce.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cachet.h"
#include "error.h"
#include "sodium_once.h"

/* Generator states. A zeroed page reads as UNSEEDED: that is the state of a
 * fresh mapping and of the page in a forked child. */
#define UNSEEDED 0u
#define SEEDING 1u
#define READY 2u

/* A thread takes the keystream in runs of RUN_BYTES (8 ChaCha20 blocks,
 * one call that libsodium's vector code handles at near its best rate) and
 * serves RUN_NONCES nonces from each. */
#define RUN_BYTES 512u
#define RUN_NONCES (RUN_BYTES / CACHET_NONCE_BYTES)
#define EPOCH_BYTES 16u

/* Past this many runs (about 10^20 nonces) a process draws the rest from
 * randombytes_buf, so the run index can never wrap to one already used.
 * Unreachable in practice. */
#define RUN_LIMIT (UINT64_C(1) << 62)

/*
 * Lives alone in its MADV_WIPEONFORK page. `seed` and `epoch` are written
 * once, by the thread that moved `phase` from UNSEEDED to SEEDING, and read
 * only after `phase` is READY (release/acquire). `epoch` is random and
 * names this seeding, so that a thread can tell whether its buffered
 * keystream came from it. `next_run` is the next unreserved run index.
 */
typedef struct stream_state {
  atomic_uint phase;
  atomic_uint_least64_t next_run;
  uint8_t seed[crypto_stream_chacha20_KEYBYTES];
  uint8_t epoch[EPOCH_BYTES];
} stream_state;

/* A thread's current run. Zero-initialised: empty. It holds only future
 * nonces, which are public once used, so it is not wiped. */
typedef struct local_run {
  uint8_t epoch[EPOCH_BYTES];
  unsigned left;
  uint8_t ks[RUN_BYTES];
} local_run;

static pthread_once_t map_once = PTHREAD_ONCE_INIT;
/* Written once inside pthread_once; NULL: no wipe-on-fork page, so every
 * nonce comes from randombytes_buf. The page is never unmapped. */
static stream_state *state;
static atomic_int use_syscall;
static _Thread_local local_run run;

/*
 * Map the generator's page and ask the kernel to hand a forked child a
 * zeroed copy. Without that guarantee a child would continue the parent's
 * keystream and both would seal with the same nonces, so any failure here
 * leaves `state` NULL and the generator on randombytes_buf. The page is
 * also kept out of core dumps where the system allows it.
 */
static void map_state(void) {
#ifdef MADV_WIPEONFORK
  long page = sysconf(_SC_PAGESIZE);
  size_t len = page > 0 ? (size_t)page : 4096u;
  if (len < sizeof(stream_state))
    return;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED)
    return;
  stream_state *s = p;
  if (madvise(p, len, MADV_WIPEONFORK) != 0 ||
      !atomic_is_lock_free(&s->phase) || !atomic_is_lock_free(&s->next_run)) {
    munmap(p, len);
    return;
  }
#ifdef MADV_DONTDUMP
  (void)madvise(p, len, MADV_DONTDUMP);
#endif
  atomic_init(&s->phase, UNSEEDED);
  atomic_init(&s->next_run, 0);
  state = s;
#endif
}

/*
 * Draw the seed and epoch if no thread has yet. Only the thread that wins
 * the UNSEEDED -> SEEDING exchange writes them; the others do not wait but
 * take their nonce from randombytes_buf meanwhile. Returns 1 when the
 * stream is ready for this caller. `next_run` is still zero here: a fresh
 * page and a wiped one both start at zero, and nothing reserves a run
 * before READY.
 */
static int seed_stream(stream_state *s) {
  unsigned expect = UNSEEDED;
  if (!atomic_compare_exchange_strong_explicit(&s->phase, &expect, SEEDING,
                                               memory_order_acquire,
                                               memory_order_acquire))
    return expect == READY;
  randombytes_buf(s->seed, sizeof s->seed);
  randombytes_buf(s->epoch, sizeof s->epoch);
  atomic_store_explicit(&s->phase, READY, memory_order_release);
  return 1;
}

/*
 * Refill this thread's run: reserve the next run index and expand it to
 * RUN_BYTES of ChaCha20 keystream, with the index as ChaCha20's 64-bit
 * nonce. Reserved indices are never handed out twice, so no two threads
 * (and no two runs of one thread) share a keystream byte. Returns 0, or -1
 * once the indices are used up.
 */
static int refill(stream_state *s) {
  uint8_t iv[crypto_stream_chacha20_NONCEBYTES];
  uint64_t r = atomic_fetch_add_explicit(&s->next_run, 1, memory_order_relaxed);
  if (r >= RUN_LIMIT)
    return -1;
  for (unsigned b = 0; b < sizeof iv; b++)
    iv[b] = (uint8_t)(r >> (8u * b));
  crypto_stream_chacha20(run.ks, sizeof run.ks, iv, s->seed);
  memcpy(run.epoch, s->epoch, sizeof run.epoch);
  run.left = RUN_NONCES;
  return 0;
}

static stream_state *stream(void) {
  if (pthread_once(&map_once, map_state) != 0)
    return NULL;
  if (atomic_load_explicit(&use_syscall, memory_order_relaxed))
    return NULL;
  return state;
}

int cachet_nonce(uint8_t out[CACHET_NONCE_BYTES]) {
  int rc = cachet_sodium_init();
  if (rc != CACHET_OK)
    return rc;
  stream_state *s = stream();
  if (s == NULL ||
      (atomic_load_explicit(&s->phase, memory_order_acquire) != READY &&
       !seed_stream(s))) {
    randombytes_buf(out, CACHET_NONCE_BYTES);
    return CACHET_OK;
  }
  /* A run from an earlier seeding is stale: in a forked child, the epoch
   * in the (wiped, then reseeded) page no longer matches what this thread
   * inherited, and the parent may still serve the same bytes. */
  if ((run.left == 0 || memcmp(run.epoch, s->epoch, EPOCH_BYTES) != 0) &&
      refill(s) != 0) {
    randombytes_buf(out, CACHET_NONCE_BYTES);
    return CACHET_OK;
  }
  memcpy(out, run.ks + (RUN_NONCES - run.left) * CACHET_NONCE_BYTES,
         CACHET_NONCE_BYTES);
  run.left--;
  return CACHET_OK;
}

int cachet_nonce_source(void) {
  return stream() != NULL ? CACHET_NONCE_STREAM : CACHET_NONCE_SYSCALL;
}

void cachet_nonce_use_syscall(void) {
  atomic_store_explicit(&use_syscall, 1, memory_order_relaxed);
}
