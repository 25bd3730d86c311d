/*
 * Envelope cost against the bare libsodium primitives, in one run: seal and
 * open of MAC'd and encrypted values of 100 B, 1 KiB and 64 KiB, next to
 * keyed crypto_generichash and crypto_aead_xchacha20poly1305_ietf on the
 * same bytes, plus the unsealed envelope at 100 B. No Redis.
 *
 * The cachet side pays for what a caller pays for: the header, the key
 * name in the MAC input, the subkey lookup and a random nonce. Both sides
 * write into a buffer they are given (cachet_envelope_seal_into); the
 * "+alloc" rows show cachet_envelope_seal, which also mallocs its output
 * (the caller frees it), against the same primitive. Encrypted opens
 * decrypt in place, so both sides of that row copy the ciphertext into a
 * work buffer first.
 *
 * Each row runs ROUNDS rounds, timing cachet and then the primitive back to
 * back (the order alternates between rounds), so that noise from other
 * processes hits both sides alike. Prints the medians of the per-round
 * ns/op and of the per-round ratios cachet/primitive. Measures; never fails
 * on a number.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "keyring.h"

#define RKEY "cachet:{07}v:bench:key"
#define CREATED INT64_C(1700000000000)
/* Rounds per row, and how long each side of a round runs at least. */
#define ROUNDS 9
#define MIN_NS 25000000u

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Keeps the compiler from discarding results. */
static volatile uint8_t sink;

static void die(const char *what) {
  fprintf(stderr, "bench_seal: %s failed\n", what);
  exit(1);
}

typedef struct ctx {
  const cachet_keyring *kr;
  const uint8_t *key; /* the keyring's active key, for the primitives */
  const uint8_t *payload;
  size_t len;
  uint8_t *blob; /* a sealed envelope of payload */
  size_t bloblen;
  uint8_t *work; /* scratch, bloblen + len + 64 bytes */
  uint8_t *prim; /* primitive's ciphertext || tag */
  uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
} ctx;

typedef void (*op_fn)(ctx *c);

/* Run `op` in doubling batches until MIN_NS has passed; ns per op. */
static double measure(op_fn op, ctx *c) {
  uint64_t iters = 0, batch = 16, start = now_ns(), el;
  do {
    for (uint64_t i = 0; i < batch; i++)
      op(c);
    iters += batch;
    batch *= 2;
    el = now_ns() - start;
  } while (el < MIN_NS);
  return (double)el / (double)iters;
}

/* Seal into the work buffer (`encrypt` as the envelope's flag). */
static void seal_into(ctx *c, int encrypt) {
  size_t n;
  if (cachet_envelope_seal_into(c->kr, encrypt, RKEY, sizeof RKEY - 1, 0,
                                CREATED, 0, c->payload, c->len, c->work,
                                c->len + 256, &n) != 0)
    die("seal");
  sink ^= c->work[n - 1];
}

/* Seal into a malloc'd buffer, and free it. */
static void seal_alloc(ctx *c, int encrypt) {
  uint8_t *out;
  size_t n;
  if (cachet_envelope_seal(c->kr, encrypt, RKEY, sizeof RKEY - 1, 0, CREATED, 0,
                           c->payload, c->len, &out, &n) != 0)
    die("seal");
  sink ^= out[n - 1];
  free(out);
}

static void seal_mac(ctx *c) { seal_into(c, 0); }
static void seal_aead(ctx *c) { seal_into(c, 1); }
static void seal_mac_alloc(ctx *c) { seal_alloc(c, 0); }
static void seal_aead_alloc(ctx *c) { seal_alloc(c, 1); }

static void seal_plain(ctx *c) {
  uint8_t *out;
  size_t n;
  if (cachet_envelope_seal(NULL, 0, RKEY, sizeof RKEY - 1, 0, CREATED, 0,
                           c->payload, c->len, &out, &n) != 0)
    die("seal");
  sink ^= out[n - 1];
  free(out);
}

/* MAC'd and plain envelopes are opened without being modified. */
static void open_same(ctx *c) {
  size_t off, plen;
  if (cachet_envelope_open(c->kr, 0, RKEY, sizeof RKEY - 1, c->blob, c->bloblen,
                           CREATED, NULL, &off, &plen) != 0)
    die("open");
  sink ^= c->blob[off];
}

static void open_plain(ctx *c) {
  size_t off, plen;
  if (cachet_envelope_open(NULL, 0, RKEY, sizeof RKEY - 1, c->blob, c->bloblen,
                           CREATED, NULL, &off, &plen) != 0)
    die("open");
  sink ^= c->blob[off];
}

static void open_aead(ctx *c) {
  size_t off, plen;
  memcpy(c->work, c->blob, c->bloblen);
  if (cachet_envelope_open(c->kr, 0, RKEY, sizeof RKEY - 1, c->work, c->bloblen,
                           CREATED, NULL, &off, &plen) != 0)
    die("open");
  sink ^= c->work[off];
}

static void prim_mac(ctx *c) {
  uint8_t tag[32];
  crypto_generichash(tag, sizeof tag, c->payload, c->len, c->key, 32);
  sink ^= tag[0];
}

static void prim_mac_verify(ctx *c) {
  uint8_t tag[32];
  crypto_generichash(tag, sizeof tag, c->payload, c->len, c->key, 32);
  sink ^= (uint8_t)crypto_verify_32(tag, c->prim);
}

static void prim_encrypt(ctx *c) {
  crypto_aead_xchacha20poly1305_ietf_encrypt(c->work, NULL, c->payload, c->len,
                                             NULL, 0, NULL, c->nonce, c->key);
  sink ^= c->work[0];
}

static void prim_decrypt(ctx *c) {
  size_t clen = c->len + crypto_aead_xchacha20poly1305_ietf_ABYTES;
  memcpy(c->work, c->prim, clen);
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          c->work, NULL, NULL, c->work, clen, NULL, 0, c->nonce, c->key) != 0)
    die("decrypt");
  sink ^= c->work[0];
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

static double median(double *v) {
  qsort(v, ROUNDS, sizeof *v, cmp_double);
  return v[ROUNDS / 2];
}

static void row(const char *name, size_t len, ctx *c, op_fn mine, op_fn prim) {
  double a[ROUNDS], b[ROUNDS], r[ROUNDS];
  for (int k = 0; k < ROUNDS; k++) {
    if (prim != NULL && k % 2 == 1)
      b[k] = measure(prim, c);
    a[k] = measure(mine, c);
    if (prim != NULL && k % 2 == 0)
      b[k] = measure(prim, c);
    if (prim != NULL)
      r[k] = a[k] / b[k];
  }
  if (prim == NULL) {
    printf("%-15s %7zu %12.0f %12s %8s\n", name, len, median(a), "-", "-");
    return;
  }
  printf("%-15s %7zu %12.0f %12.0f %8.2f\n", name, len, median(a), median(b),
         median(r));
}

int main(void) {
  if (sodium_init() < 0)
    die("sodium_init");
  const char ring[] = "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
  cachet_keyring *kr;
  if (cachet_keyring_parse(ring, sizeof ring - 1, &kr) != 0)
    die("keyring");
  const size_t sizes[] = {100, 1024, 65536};
  size_t maxlen = 65536;
  uint8_t *payload = malloc(maxlen);
  uint8_t *work = malloc(maxlen + 256);
  uint8_t *prim = malloc(maxlen + 64);
  if (payload == NULL || work == NULL || prim == NULL)
    die("malloc");
  randombytes_buf(payload, maxlen);

  ctx c = {.kr = kr,
           .key = cachet_keyring_find(kr, 1),
           .payload = payload,
           .work = work,
           .prim = prim};
  randombytes_buf(c.nonce, sizeof c.nonce);

  printf("bench_seal: libsodium %s, key name %zu bytes\n",
         sodium_version_string(), sizeof RKEY - 1);
  printf("%-15s %7s %12s %12s %8s\n", "op", "bytes", "cachet ns/op",
         "prim ns/op", "ratio");
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    c.len = sizes[s];
    /* MAC: seal, then open against generichash + verify. */
    crypto_generichash(prim, 32, payload, c.len, c.key, 32);
    if (cachet_envelope_seal(kr, 0, RKEY, sizeof RKEY - 1, 0, CREATED, 0,
                             payload, c.len, &c.blob, &c.bloblen) != 0)
      die("seal");
    row("seal mac", c.len, &c, seal_mac, prim_mac);
    row("open mac", c.len, &c, open_same, prim_mac_verify);
    free(c.blob);
    /* AEAD. */
    crypto_aead_xchacha20poly1305_ietf_encrypt(prim, NULL, payload, c.len, NULL,
                                               0, NULL, c.nonce, c.key);
    if (cachet_envelope_seal(kr, 1, RKEY, sizeof RKEY - 1, 0, CREATED, 0,
                             payload, c.len, &c.blob, &c.bloblen) != 0)
      die("seal");
    row("seal aead", c.len, &c, seal_aead, prim_encrypt);
    row("open aead", c.len, &c, open_aead, prim_decrypt);
    free(c.blob);
  }
  c.len = 100;
  if (cachet_envelope_seal(NULL, 0, RKEY, sizeof RKEY - 1, 0, CREATED, 0,
                           payload, c.len, &c.blob, &c.bloblen) != 0)
    die("seal");
  row("seal plain", c.len, &c, seal_plain, NULL);
  row("open plain", c.len, &c, open_plain, NULL);
  free(c.blob);
  crypto_generichash(prim, 32, payload, c.len, c.key, 32);
  row("seal mac+alloc", c.len, &c, seal_mac_alloc, prim_mac);
  row("seal aead+alloc", c.len, &c, seal_aead_alloc, prim_encrypt);

  free(payload);
  free(work);
  free(prim);
  cachet_keyring_free(kr);
  return (int)(sink & 0);
}
