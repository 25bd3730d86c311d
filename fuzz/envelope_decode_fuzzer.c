/*
 * Raw bytes into the envelope decoder: cachet_envelope_open() with and
 * without a keyring (and with accept_unsealed both ways), and
 * cachet_envelope_inspect(). Reaches the inner field checks through
 * unsealed envelopes, which need no MAC; envelope_sealed_fuzzer covers
 * the code behind a real MAC.
 */
#include <stdlib.h>
#include <string.h>

#include "cachet.h"
#include "envelope.h"
#include "fuzz_helpers.h"

/* "Now" for the decoder: between the vectors' created and expires times,
 * so both outcomes of the expiry check are reachable. */
#define NOW (FUZZ_CREATED + 30000)

static int is_open_status(int rc) {
  return rc == CACHET_OK || rc == CACHET_MISS || rc == CACHET_ECORRUPT ||
         rc == CACHET_EINTEGRITY || rc == CACHET_EVERSION;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const cachet_keyring *rings[3] = {NULL, fuzz_ring_1(), fuzz_ring_2_1()};
  /* open decrypts in place and the fuzzer's input is read-only. */
  uint8_t *buf = malloc(size ? size : 1);
  FUZZ_ASSERT(buf != NULL);

  cachet_envelope_info ins;
  int irc = cachet_envelope_inspect(rings[2], FUZZ_RKEY, strlen(FUZZ_RKEY),
                                    data, size, &ins);
  FUZZ_ASSERT(irc == CACHET_OK || irc == CACHET_ECORRUPT ||
              irc == CACHET_EVERSION);
  if (irc == CACHET_OK) {
    FUZZ_ASSERT(ins.version == 1);
    FUZZ_ASSERT(ins.mac_status >= CACHET_MAC_NONE &&
                ins.mac_status <= CACHET_MAC_NO_KEY);
    FUZZ_ASSERT((ins.mac_status == CACHET_MAC_NONE) ==
                ((ins.flags & CACHET_ENV_F_MAC) == 0));
    FUZZ_ASSERT(ins.payload_len <= size);
  }

  for (size_t r = 0; r < 3; r++) {
    for (int accept = 0; accept <= 1; accept++) {
      if (size)
        memcpy(buf, data, size);
      cachet_envelope_info info;
      size_t off = 1, plen = 1;
      int rc =
          cachet_envelope_open(rings[r], accept, FUZZ_RKEY, strlen(FUZZ_RKEY),
                               buf, size, NOW, &info, &off, &plen);
      FUZZ_ASSERT_MSG(is_open_status(rc), cachet_status_name(rc));
      if (irc == CACHET_EVERSION)
        FUZZ_ASSERT(rc == CACHET_EVERSION);
      if (rc == CACHET_OK) {
        FUZZ_ASSERT(off <= size && plen <= size - off);
        FUZZ_ASSERT(info.payload_len == plen);
        FUZZ_ASSERT(info.version == 1);
        FUZZ_ASSERT(info.expires_ms == 0 || info.expires_ms > NOW);
        /* Whatever open accepts, inspect parses; and a MAC open verified
         * is one inspect (with a superset keyring) verifies too. */
        FUZZ_ASSERT(irc == CACHET_OK);
        if (info.mac_status == CACHET_MAC_OK)
          FUZZ_ASSERT(ins.mac_status == CACHET_MAC_OK);
        if (rings[r] == NULL)
          FUZZ_ASSERT(info.flags == 0);
        if (rings[r] != NULL && !accept)
          FUZZ_ASSERT(info.mac_status == CACHET_MAC_OK);
      } else {
        FUZZ_ASSERT(off == 0 && plen == 0);
      }
    }
  }
  free(buf);
  return 0;
}
