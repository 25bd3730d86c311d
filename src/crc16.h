/* Redis Cluster key hashing: CRC16-XMODEM and the hash-tag rule. Internal.
 * Pure: no I/O, so the unit test links it alone. */
#ifndef CACHET_CRC16_H
#define CACHET_CRC16_H

#include <stddef.h>
#include <stdint.h>

/* Number of hash slots in a Redis Cluster. */
#define CACHET_CLUSTER_SLOTS 16384u

/* CRC16-XMODEM (polynomial 0x1021, initial value 0, no reflection), the
 * checksum Redis Cluster uses: crc16("123456789") == 0x31c3. */
uint16_t cachet_crc16(const void *buf, size_t len);

/*
 * The hash slot of a key, as Redis computes it: when the key holds a '{'
 * followed later by a '}' with at least one byte between them, only the
 * bytes between the first '{' and the first '}' after it are hashed;
 * otherwise the whole key is. The slot is the CRC16 modulo 16384.
 */
unsigned cachet_key_slot(const void *key, size_t len);

#endif
