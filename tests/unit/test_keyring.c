/* Keyring parsing and lookup: the accepted syntax, every rejection, error
 * details that name the entry but never the key, and O(1) lookup by id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "cachet.h"
#include "keyring.h"

/* 00 01 .. 1f and 80 81 .. 9f, as in docs/FORMAT.md. */
#define K1_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2_B64 "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8="

static void expect_key(const cachet_keyring *kr, uint32_t id, uint8_t first) {
  const uint8_t *k = cachet_keyring_find(kr, id);
  assert_non_null(k);
  for (unsigned i = 0; i < CACHET_KEY_BYTES; i++)
    assert_int_equal(k[i], (uint8_t)(first + i));
}

static int parse(const char *text, cachet_keyring **kr) {
  return cachet_keyring_parse(text, strlen(text), kr);
}

/* Parse must fail with ECONFIG, leave *out NULL, and say `want` in the
 * detail without echoing any key material from the input. */
static void expect_reject(const char *text, const char *want) {
  cachet_keyring *kr = (cachet_keyring *)&kr;
  int rc = parse(text, &kr);
  if (rc != CACHET_ECONFIG)
    fail_msg("\"%s\" gave %s, want CACHET_ECONFIG", text,
             cachet_status_name(rc));
  assert_null(kr);
  const char *detail = cachet_last_error();
  if (strstr(detail, want) == NULL)
    fail_msg("\"%s\": detail \"%s\" lacks \"%s\"", text, detail, want);
  assert_null(strstr(detail, K1_B64));
  assert_null(strstr(detail, K2_B64));
  assert_null(strstr(detail, "AAECAwQF"));
}

static void test_parse_single_key_is_active(void **state) {
  (void)state;
  cachet_keyring *kr = NULL;
  assert_int_equal(parse("1:" K1_B64, &kr), CACHET_OK);
  assert_int_equal(cachet_keyring_active_id(kr), 1);
  expect_key(kr, 1, 0x00);
  assert_null(cachet_keyring_find(kr, 2));
  assert_null(cachet_keyring_find(kr, 0));
  cachet_keyring_free(kr);
}

static void test_parse_first_entry_is_active_and_all_are_found(void **state) {
  (void)state;
  cachet_keyring *kr = NULL;
  assert_int_equal(parse("2:" K2_B64 ",1:" K1_B64, &kr), CACHET_OK);
  assert_int_equal(cachet_keyring_active_id(kr), 2);
  expect_key(kr, 2, 0x80);
  expect_key(kr, 1, 0x00);
  cachet_keyring_free(kr);
}

static void test_parse_ignores_whitespace_around_entries(void **state) {
  (void)state;
  cachet_keyring *kr = NULL;
  assert_int_equal(parse("  7:" K1_B64 " ,\t4294967295:" K2_B64 "\n", &kr),
                   CACHET_OK);
  assert_int_equal(cachet_keyring_active_id(kr), 7);
  expect_key(kr, 7, 0x00);
  expect_key(kr, 4294967295u, 0x80);
  cachet_keyring_free(kr);
  assert_int_equal(parse("1:" K1_B64 "\r\n", &kr), CACHET_OK);
  cachet_keyring_free(kr);
}

static void test_parse_reads_only_len_bytes(void **state) {
  (void)state;
  /* The text need not be NUL-terminated; what follows len is not read. */
  const char text[] = "1:" K1_B64 ",garbage";
  cachet_keyring *kr = NULL;
  assert_int_equal(cachet_keyring_parse(text, 2 + 44, &kr), CACHET_OK);
  assert_int_equal(cachet_keyring_active_id(kr), 1);
  cachet_keyring_free(kr);
  char *exact = malloc(2 + 44);
  assert_non_null(exact);
  memcpy(exact, text, 2 + 44);
  assert_int_equal(cachet_keyring_parse(exact, 2 + 44, &kr), CACHET_OK);
  cachet_keyring_free(kr);
  free(exact);
}

static void test_parse_rejects_empty(void **state) {
  (void)state;
  expect_reject("", "no keys");
  expect_reject(" \n", "no keys");
  cachet_keyring *kr = (cachet_keyring *)&kr;
  assert_int_equal(cachet_keyring_parse(NULL, 0, &kr), CACHET_ECONFIG);
  assert_null(kr);
}

static void test_parse_rejects_empty_entry(void **state) {
  (void)state;
  expect_reject("1:" K1_B64 ",", "entry 2 is empty");
  expect_reject("1:" K1_B64 ", ,2:" K2_B64, "entry 2 is empty");
  expect_reject(",1:" K1_B64, "entry 1 is empty");
}

static void test_parse_rejects_id_zero(void **state) {
  (void)state;
  expect_reject("0:" K1_B64, "entry 1: key id 0 is reserved");
  expect_reject("1:" K1_B64 ",0:" K2_B64, "entry 2: key id 0 is reserved");
}

static void test_parse_rejects_duplicate_id(void **state) {
  (void)state;
  expect_reject("5:" K1_B64 ",5:" K2_B64, "entry 2: duplicate key id 5");
  expect_reject("5:" K1_B64 ",6:" K2_B64 ",5:" K1_B64,
                "entry 3: duplicate key id 5 (also entry 1)");
}

static void test_parse_rejects_bad_ids(void **state) {
  (void)state;
  const char *bad[] = {
      ":" K1_B64,           "x:" K1_B64,           "-1:" K1_B64,
      "+1:" K1_B64,         " 1 :" K1_B64,         "01:" K1_B64,
      "4294967296:" K1_B64, "99999999999:" K1_B64, "1.0:" K1_B64};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_reject(bad[i], "entry 1: key id is not a decimal number");
}

static void test_parse_rejects_missing_colon(void **state) {
  (void)state;
  expect_reject(K1_B64, "entry 1: expected ID:BASE64KEY");
  expect_reject("1:" K1_B64 ",2", "entry 2: expected ID:BASE64KEY");
}

static void test_parse_rejects_bad_base64(void **state) {
  (void)state;
  const char *bad[] = {
      "1:" K1_B64 "x",                                   /* junk after pad */
      "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",   /* no padding */
      "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-=",  /* URL-safe */
      "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGB!aGxwdHh8=",  /* not base64 */
      "1:AAECAwQFBgcICQoLDA0O DxAREhMUFRYXGBkaGxwdHh8=", /* inner space */
      "1:",                                              /* empty key */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    expect_reject(bad[i], "entry 1: key is not 32 bytes of base64");
}

static void test_parse_rejects_wrong_key_length(void **state) {
  (void)state;
  expect_reject("1:AAECAwQFBgcICQoLDA0ODw==", /* 16 bytes */
                "entry 1: key is not 32 bytes of base64");
  expect_reject("1:" K1_B64 ",2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",
                "entry 2: key is not 32 bytes of base64"); /* 33 bytes */
}

/* 32 zero bytes is a template's placeholder, never a generated key. */
static void test_parse_rejects_an_all_zero_key(void **state) {
  (void)state;
  expect_reject("1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "entry 1: the key is all zero bytes");
  expect_reject("1:" K1_B64 ",2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "entry 2: the key is all zero bytes");
}

static void test_parse_detail_never_echoes_key_material(void **state) {
  (void)state;
  /* A key of the right length next to a bad id, and a near-miss key. */
  expect_reject("x:" K1_B64, "entry 1");
  expect_reject("1:" K1_B64 ",2:" K2_B64 "A", "entry 2");
}

static void test_parse_accepts_64_keys_and_rejects_65(void **state) {
  (void)state;
  char *text = malloc(65 * 64);
  assert_non_null(text);
  size_t o = 0;
  for (unsigned i = 1; i <= 65; i++)
    o += (size_t)snprintf(text + o, 65 * 64 - o, "%s%u:%s", i > 1 ? "," : "",
                          i * 1000u, (i & 1) ? K1_B64 : K2_B64);
  cachet_keyring *kr = (cachet_keyring *)&kr;
  assert_int_equal(cachet_keyring_parse(text, o, &kr), CACHET_ECONFIG);
  assert_null(kr);
  assert_non_null(strstr(cachet_last_error(), "at most 64"));
  /* Drop the 65th entry. */
  char *comma = strrchr(text, ',');
  assert_int_equal(cachet_keyring_parse(text, (size_t)(comma - text), &kr),
                   CACHET_OK);
  assert_int_equal(cachet_keyring_active_id(kr), 1000);
  for (unsigned i = 1; i <= 64; i++)
    expect_key(kr, i * 1000u, (i & 1) ? 0x00 : 0x80);
  assert_null(cachet_keyring_find(kr, 65000));
  cachet_keyring_free(kr);
  free(text);
}

static void test_find_handles_colliding_ids(void **state) {
  (void)state;
  /* Ids that differ only above the hash's top bits probe into each other's
   * slots; each must still find its own key and no phantom ids appear. */
  char text[64 * 64];
  size_t o = 0;
  uint32_t ids[64];
  for (unsigned i = 0; i < 64; i++) {
    ids[i] = 1u + i * 33554432u; /* 2^25 apart */
    o += (size_t)snprintf(text + o, sizeof text - o, "%s%lu:%s", i ? "," : "",
                          (unsigned long)ids[i], (i & 1) ? K2_B64 : K1_B64);
  }
  cachet_keyring *kr = NULL;
  assert_int_equal(cachet_keyring_parse(text, o, &kr), CACHET_OK);
  for (unsigned i = 0; i < 64; i++)
    expect_key(kr, ids[i], (i & 1) ? 0x80 : 0x00);
  for (unsigned i = 0; i < 64; i++)
    assert_null(cachet_keyring_find(kr, ids[i] + 1u));
  cachet_keyring_free(kr);
}

static void expect_hex(const uint8_t *got, const char *hex) {
  uint8_t want[CACHET_KEY_BYTES];
  size_t n = 0;
  assert_int_equal(
      sodium_hex2bin(want, sizeof want, hex, strlen(hex), NULL, &n, NULL), 0);
  assert_int_equal(n, sizeof want);
  assert_non_null(got);
  assert_memory_equal(got, want, sizeof want);
}

static void test_subkeys_match_format_md(void **state) {
  (void)state;
  /* docs/FORMAT.md "Derived subkeys". */
  cachet_keyring *kr = NULL;
  assert_int_equal(parse("2:" K2_B64 ",1:" K1_B64, &kr), CACHET_OK);
  expect_hex(
      cachet_keyring_subkey(kr, 1, CACHET_SUBKEY_MAC),
      "c66bbfa201cbff2cbfd283b290047a50be33298606287d114de8becbc4312124");
  expect_hex(
      cachet_keyring_subkey(kr, 1, CACHET_SUBKEY_AEAD),
      "b402b25888251157ceb4c5427d1548b51cad49004d29d361b89136fd77b3e894");
  expect_hex(
      cachet_keyring_subkey(kr, 2, CACHET_SUBKEY_MAC),
      "fffb94119dcd12c01b8a270842b2803e3a9baa4d4832d47115b9ec1c0b022b0c");
  expect_hex(
      cachet_keyring_subkey(kr, 2, CACHET_SUBKEY_AEAD),
      "411579f80fa19cd8c5a1e2917c524c95122c4e520bf6ec2bdb57bad264066c4b");
  assert_null(cachet_keyring_subkey(kr, 3, CACHET_SUBKEY_MAC));
  assert_null(cachet_keyring_subkey(kr, 1, 0));
  assert_null(cachet_keyring_subkey(kr, 1, 3));
  assert_null(cachet_keyring_subkey(NULL, 1, CACHET_SUBKEY_MAC));
  expect_key(kr, 1, 0x00); /* the master key is still what find returns */
  cachet_keyring_free(kr);
}

static void test_free_null_and_queries_on_null(void **state) {
  (void)state;
  cachet_keyring_free(NULL);
  assert_int_equal(cachet_keyring_active_id(NULL), 0);
  assert_null(cachet_keyring_find(NULL, 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_single_key_is_active),
      cmocka_unit_test(test_parse_first_entry_is_active_and_all_are_found),
      cmocka_unit_test(test_parse_ignores_whitespace_around_entries),
      cmocka_unit_test(test_parse_reads_only_len_bytes),
      cmocka_unit_test(test_parse_rejects_empty),
      cmocka_unit_test(test_parse_rejects_empty_entry),
      cmocka_unit_test(test_parse_rejects_id_zero),
      cmocka_unit_test(test_parse_rejects_duplicate_id),
      cmocka_unit_test(test_parse_rejects_bad_ids),
      cmocka_unit_test(test_parse_rejects_missing_colon),
      cmocka_unit_test(test_parse_rejects_bad_base64),
      cmocka_unit_test(test_parse_rejects_wrong_key_length),
      cmocka_unit_test(test_parse_rejects_an_all_zero_key),
      cmocka_unit_test(test_parse_detail_never_echoes_key_material),
      cmocka_unit_test(test_parse_accepts_64_keys_and_rejects_65),
      cmocka_unit_test(test_find_handles_colliding_ids),
      cmocka_unit_test(test_subkeys_match_format_md),
      cmocka_unit_test(test_free_null_and_queries_on_null),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
