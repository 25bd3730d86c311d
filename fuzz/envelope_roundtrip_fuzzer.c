/*
 * Encode arbitrary values (payload, key name, content type, times, sealed
 * or not, encrypted or not), decode them, and require exactly what went
 * in to come out, with the expiry rule applied as FORMAT.md states it.
 *
 * Input: mode u8 | content_type u32 | created u64 | expires u64 | now u64 |
 *        keylen u8 | key name | payload
 */
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "envelope.h"
#include "fuzz_helpers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_cursor in = {data, size};
  uint8_t mode = fuzz_take_u8(&in);
  int sealed = mode & 1, encrypt = (mode >> 1) & 1;
  int accept_unsealed = (mode >> 3) & 1;
  const cachet_keyring *kr = !sealed      ? NULL
                             : (mode & 4) ? fuzz_ring_2_1()
                                          : fuzz_ring_1();
  uint32_t ctype = fuzz_take_u32(&in);
  /* Mode bit 4 keeps the times in range so most inputs get past the
   * argument checks; without it the raw bits test those checks. */
  uint64_t c_raw = fuzz_take_u64(&in), e_raw = fuzz_take_u64(&in);
  if (mode & 16) {
    c_raw &= INT64_MAX;
    e_raw &= INT64_MAX;
  }
  int64_t created = (int64_t)c_raw, expires = (int64_t)e_raw;
  int64_t now = (int64_t)fuzz_take_u64(&in);
  size_t klen;
  const uint8_t *rkey = fuzz_take_bytes(&in, fuzz_take_u8(&in), &klen);
  size_t plen;
  const uint8_t *payload = fuzz_take_bytes(&in, SIZE_MAX, &plen);

  uint8_t *blob = NULL;
  size_t len = 0;
  int rc = cachet_envelope_seal(kr, encrypt, rkey, klen, ctype, created,
                                expires, payload, plen, &blob, &len);
  if (created < 0 || expires < 0 || (encrypt && kr == NULL)) {
    FUZZ_ASSERT_MSG(rc == CACHET_EINVAL, cachet_status_name(rc));
    FUZZ_ASSERT(blob == NULL && len == 0);
    return 0;
  }
  FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_status_name(rc));
  FUZZ_ASSERT(len <= cachet_envelope_bound(plen));

  cachet_envelope_info ins;
  rc = cachet_envelope_inspect(kr, rkey, klen, blob, len, &ins);
  FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_status_name(rc));
  FUZZ_ASSERT(ins.mac_status == (kr ? CACHET_MAC_OK : CACHET_MAC_NONE));
  FUZZ_ASSERT(ins.flags == ((kr ? CACHET_ENV_F_MAC : 0u) |
                            (encrypt ? CACHET_ENV_F_ENCRYPTED : 0u)));
  FUZZ_ASSERT(ins.payload_len == plen);

  cachet_envelope_info info;
  size_t off = 0, olen = 0;
  rc = cachet_envelope_open(kr, accept_unsealed, rkey, klen, blob, len, now,
                            &info, &off, &olen);
  if (expires != 0 && expires <= now) {
    FUZZ_ASSERT_MSG(rc == CACHET_MISS, cachet_status_name(rc));
    FUZZ_ASSERT(off == 0 && olen == 0);
  } else {
    FUZZ_ASSERT_MSG(rc == CACHET_OK, cachet_status_name(rc));
    FUZZ_ASSERT(olen == plen && off <= len && olen <= len - off);
    FUZZ_ASSERT(plen == 0 || memcmp(blob + off, payload, plen) == 0);
  }
  FUZZ_ASSERT(info.version == CACHET_ENVELOPE_VERSION);
  FUZZ_ASSERT(info.key_id == cachet_keyring_active_id(kr));
  FUZZ_ASSERT(info.created_ms == created);
  FUZZ_ASSERT(info.expires_ms == expires);
  FUZZ_ASSERT(info.content_type == ctype);
  FUZZ_ASSERT(info.payload_len == plen);
  free(blob);
  return 0;
}
