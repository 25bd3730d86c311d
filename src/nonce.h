/* Nonces for the envelope's AEAD: a per-process ChaCha20 keystream
 * generator, safe across threads and fork(). Internal. */
#ifndef CACHET_NONCE_H
#define CACHET_NONCE_H

#include <stdint.h>

#define CACHET_NONCE_BYTES 24u

/*
 * Fill `out` with a fresh 24-byte XChaCha20-Poly1305 nonce.
 *
 * The bytes are CSPRNG output: ChaCha20 keystream under a 32-byte seed
 * drawn from randombytes_buf once per process. Each thread reserves the
 * keystream in 512-byte runs, through an atomically incremented 64-bit run
 * index, and hands out consecutive 24-byte pieces of its run. That replaces
 * one getrandom system call per seal with a 21st of a ChaCha20 call. The
 * AEAD needs nonces that never repeat under one key; it does not need them
 * secret (they are stored in the clear), so the generator keeps its seed
 * for the life of the process.
 *
 * Threads: runs are never shared, so no two threads get the same nonce.
 * fork(): the seed and the run index live in a page marked
 * MADV_WIPEONFORK, which the child sees as zeros, so its first call draws
 * a new seed, and a run the forking thread had buffered is dropped because
 * it names the parent's seeding. The child's nonces are independent of the
 * parent's. Where that advice is unavailable (Linux before 4.14, other
 * systems), or while another thread is drawing the seed, a call falls back
 * to randombytes_buf for its nonce: correct, only slower. Not covered: a
 * fork() from a signal handler that interrupted this very function, which
 * may hand the child a nonce the parent also returns.
 *
 * Returns CACHET_OK, or CACHET_EINTERNAL if libsodium could not initialise.
 * Thread-safe.
 */
int cachet_nonce(uint8_t out[CACHET_NONCE_BYTES]);

/* Where cachet_nonce() draws from in this process. */
#define CACHET_NONCE_STREAM 1  /* the user-space keystream */
#define CACHET_NONCE_SYSCALL 2 /* randombytes_buf for every nonce */
int cachet_nonce_source(void);

/*
 * For tests only: from now on, draw every nonce of this process from
 * randombytes_buf, exactly as when MADV_WIPEONFORK is unavailable. There is
 * no way back. It only ever trades speed for a system call per nonce, never
 * safety.
 */
void cachet_nonce_use_syscall(void);

#endif
