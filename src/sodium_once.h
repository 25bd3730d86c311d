/* One-time, thread-safe libsodium initialisation. Internal. */
#ifndef CACHET_SODIUM_ONCE_H
#define CACHET_SODIUM_ONCE_H

/*
 * Run sodium_init() exactly once per process, whichever thread gets here
 * first, and report its result to every caller. Anything that touches
 * randombytes, sodium_malloc or the crypto primitives calls this first:
 * sodium_malloc needs the page size sodium_init() records, and randombytes
 * must be seeded. Returns CACHET_OK, or CACHET_EINTERNAL (with a detail)
 * if libsodium could not initialise.
 */
int cachet_sodium_init(void);

#endif
