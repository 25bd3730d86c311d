/* CRC16-XMODEM and the Redis Cluster hash slot of a key.
 *
 * Bit by bit rather than Redis's 256-entry table: a cachet key's hash tag is
 * two bytes ("{bb}"), so a table would buy nothing and would be one more
 * thing to mistype. The result is the same checksum (CCITT polynomial
 * 0x1021, no reflection, initial value 0). */
#include "crc16.h"

static uint16_t crc16_step(uint16_t crc, uint8_t byte) {
  crc ^= (uint16_t)((uint16_t)byte << 8);
  for (int i = 0; i < 8; i++)
    crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u)
                          : (uint16_t)(crc << 1);
  return crc;
}

uint16_t cachet_crc16(const void *buf, size_t len) {
  const uint8_t *p = buf;
  uint16_t crc = 0;
  for (size_t i = 0; i < len; i++)
    crc = crc16_step(crc, p[i]);
  return crc;
}

unsigned cachet_key_slot(const void *key, size_t len) {
  const char *k = key;
  size_t s;
  for (s = 0; s < len; s++)
    if (k[s] == '{')
      break;
  if (s < len) {
    size_t e;
    for (e = s + 1; e < len; e++)
      if (k[e] == '}')
        break;
    /* "{}" or no closing brace: the whole key is hashed. */
    if (e < len && e != s + 1)
      return cachet_crc16(k + s + 1, e - s - 1) & (CACHET_CLUSTER_SLOTS - 1);
  }
  return cachet_crc16(k, len) & (CACHET_CLUSTER_SLOTS - 1);
}
