/* CRC16-XMODEM and hash slots, against values Redis itself gives
 * (CLUSTER KEYSLOT) and the CRC's standard check value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "crc16.h"

static unsigned slot(const char *k) { return cachet_key_slot(k, strlen(k)); }

static void test_crc16_check_value_is_0x31c3(void **state) {
  (void)state;
  assert_int_equal(cachet_crc16("123456789", 9), 0x31c3);
  assert_int_equal(cachet_crc16("", 0), 0);
}

static void test_key_slot_matches_redis(void **state) {
  (void)state;
  /* CLUSTER KEYSLOT answers from redis-server 7.0. */
  assert_int_equal(slot("foo"), 12182);
  assert_int_equal(slot("bar"), 5061);
  assert_int_equal(slot("hello"), 866);
  assert_int_equal(slot("user1000"), 3443);
  assert_int_equal(slot("{user1000}.following"), 3443);
  assert_int_equal(slot("{user1000}.followers"), 3443);
  assert_int_equal(slot("cachet:{00}v:a"), cachet_key_slot("00", 2));
}

static void test_hash_tag_rules(void **state) {
  (void)state;
  /* Only the first {...} counts. */
  assert_int_equal(slot("a{x}b{y}"), slot("x"));
  /* An empty tag or a missing '}' hashes the whole key. */
  assert_int_equal(slot("foo{}{bar}"), cachet_crc16("foo{}{bar}", 10) & 16383);
  assert_int_equal(slot("foo{bar"), cachet_crc16("foo{bar", 7) & 16383);
  /* The first '}' after the first '{' closes the tag. */
  assert_int_equal(slot("foo{{bar}}zap"), slot("{bar"));
  /* Binary-safe: a NUL inside the key is hashed like any byte. */
  assert_int_equal(cachet_key_slot("x{a\0b}", 6), cachet_key_slot("a\0b", 3));
}

static void test_cachet_buckets_spread_over_slots(void **state) {
  (void)state;
  /* The 256 bucket tags {00}..{ff} land in 256 different slots, so the
   * namespace can spread over up to 256 masters. */
  unsigned char seen[CACHET_CLUSTER_SLOTS];
  memset(seen, 0, sizeof seen);
  int distinct = 0;
  for (unsigned b = 0; b < 256; b++) {
    char tag[3];
    snprintf(tag, sizeof tag, "%02x", b);
    unsigned s = cachet_key_slot(tag, 2);
    assert_true(s < CACHET_CLUSTER_SLOTS);
    if (!seen[s]++)
      distinct++;
  }
  assert_int_equal(distinct, 256);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc16_check_value_is_0x31c3),
      cmocka_unit_test(test_key_slot_matches_redis),
      cmocka_unit_test(test_hash_tag_rules),
      cmocka_unit_test(test_cachet_buckets_spread_over_slots),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
