/*
 * Seal the fuzz input with the fixed test keys, then damage the sealed
 * blob as the fuzz bytes say (bit flips, truncation, extension) and open
 * it. The real MAC/AEAD verification runs on every input, and so does the
 * parser behind it: an undamaged blob must open to exactly what went in,
 * and any damage at all must be refused. There is no MAC bypass in the
 * library; this target never needs one.
 *
 * Input: mode u8 | content_type u32 | expires delta u32 | cut u8 |
 *        extend u8 | nflips u8 | nflips * (offset u16, xor u8) | payload
 */
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "envelope.h"
#include "fuzz_helpers.h"

#define MAX_FLIPS 8u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_cursor in = {data, size};
  uint8_t mode = fuzz_take_u8(&in);
  int encrypt = mode & 1;
  const cachet_keyring *writer = (mode & 2) ? fuzz_ring_2_1() : fuzz_ring_1();
  uint32_t ctype = fuzz_take_u32(&in);
  uint32_t delta = fuzz_take_u32(&in);
  /* mode bit 2: an expiry, at or around "now" = FUZZ_CREATED. */
  int64_t expires = (mode & 4) ? FUZZ_CREATED - 1000 + (int64_t)delta : 0;
  uint8_t cut = fuzz_take_u8(&in);
  uint8_t extend = fuzz_take_u8(&in);
  unsigned nflips = fuzz_take_u8(&in) % (MAX_FLIPS + 1u);
  uint16_t flip_off[MAX_FLIPS];
  uint8_t flip_xor[MAX_FLIPS];
  for (unsigned i = 0; i < nflips; i++) {
    flip_off[i] = (uint16_t)(fuzz_take_u8(&in) | fuzz_take_u8(&in) << 8);
    flip_xor[i] = fuzz_take_u8(&in);
  }
  size_t plen;
  const uint8_t *payload = fuzz_take_bytes(&in, SIZE_MAX, &plen);

  uint8_t *blob = NULL;
  size_t len = 0;
  int rc =
      cachet_envelope_seal(writer, encrypt, FUZZ_RKEY, strlen(FUZZ_RKEY), ctype,
                           FUZZ_CREATED, expires, payload, plen, &blob, &len);
  FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_status_name(rc));

  /* Damage a copy. */
  size_t dlen = len - (cut < len ? cut : len) + extend;
  uint8_t *dmg = malloc(dlen ? dlen : 1);
  FUZZ_ASSERT(dmg != NULL);
  size_t keep = dlen < len ? dlen : len;
  memcpy(dmg, blob, keep);
  for (size_t i = keep; i < dlen; i++)
    dmg[i] = (uint8_t)(extend ^ i);
  for (unsigned i = 0; i < nflips && dlen > 0; i++)
    dmg[flip_off[i] % dlen] ^= flip_xor[i];
  int same = dlen == len && memcmp(dmg, blob, len) == 0;

  /* Read back with a ring holding both keys: the writer's key is always
   * there, so the only reason to refuse is the damage (or the expiry). */
  const cachet_keyring *reader = fuzz_ring_2_1();
  cachet_envelope_info info;
  size_t off = 0, olen = 0;
  uint8_t *work = malloc(dlen ? dlen : 1);
  FUZZ_ASSERT(work != NULL);
  if (dlen)
    memcpy(work, dmg, dlen);
  rc = cachet_envelope_open(reader, 0, FUZZ_RKEY, strlen(FUZZ_RKEY), work, dlen,
                            FUZZ_CREATED, &info, &off, &olen);
  if (same) {
    if (expires != 0 && expires <= FUZZ_CREATED) {
      FUZZ_ASSERT_MSG(rc == CACHET_MISS, cachet_status_name(rc));
    } else {
      FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_status_name(rc));
      FUZZ_ASSERT(olen == plen);
      FUZZ_ASSERT(plen == 0 || memcmp(work + off, payload, plen) == 0);
      FUZZ_ASSERT(info.content_type == ctype);
      FUZZ_ASSERT(info.expires_ms == expires);
      FUZZ_ASSERT(info.created_ms == FUZZ_CREATED);
      FUZZ_ASSERT(info.key_id == cachet_keyring_active_id(writer));
      FUZZ_ASSERT(info.mac_status == CACHET_MAC_OK);
    }
  } else {
    /* Anything else accepted would be a forgery (or a reinterpretation of
     * the frame that the MAC failed to cover). */
    FUZZ_ASSERT_MSG(rc < 0, cachet_status_name(rc));
  }

  cachet_envelope_info ins;
  int irc = cachet_envelope_inspect(reader, FUZZ_RKEY, strlen(FUZZ_RKEY), dmg,
                                    dlen, &ins);
  if (same)
    FUZZ_ASSERT(irc == CACHET_OK && ins.mac_status == CACHET_MAC_OK);
  else if (irc == CACHET_OK)
    FUZZ_ASSERT(ins.mac_status != CACHET_MAC_OK);

  /* The intact blob is bound to its key name. */
  uint8_t *again = malloc(len);
  FUZZ_ASSERT(again != NULL);
  memcpy(again, blob, len);
  rc = cachet_envelope_open(reader, 0, FUZZ_RKEY, strlen(FUZZ_RKEY) - 1, again,
                            len, FUZZ_CREATED, NULL, &off, &olen);
  FUZZ_ASSERT(rc == CACHET_EINTEGRITY);

  free(again);
  free(work);
  free(dmg);
  free(blob);
  return 0;
}
