/*
 * sealed: cache values that Redis alone cannot vouch for.
 *
 * With a keyring, every value cachet writes is sealed: a MAC over the value
 * and the full Redis key it is stored under (here the value is encrypted
 * too), made with the keyring's first, active key. Every read checks the
 * seal before it returns a byte. A value that fails is CACHET_EINTEGRITY:
 * never a hit, and never a miss that would invite a reload over it.
 *
 * The example makes two fresh keys with cachet_keygen() and walks through
 * what a deployment meets when it rotates them:
 *   1. a writer with key 1 seals a value and reads it back;
 *   2. a reader that holds only key 2 refuses it (the detail names key 1);
 *   3. a reader with no keyring refuses it too: a sealed value is never
 *      served unchecked;
 *   4. a value written with no keyring is refused by a sealed reader, and
 *      accepted only where accept_unsealed is set (during a migration);
 *   5. the rotation: keyring "2:...,1:..." writes under key 2 and still reads
 *      what key 1 sealed, while a reader that holds only key 1 refuses the
 *      new value;
 *   6. cachet_inspect() shows an envelope's header and seal, never a key.
 *
 *   CACHET_URL=redis://localhost:6379/0 ./sealed
 *
 * It makes its own keys, so it ignores CACHET_KEYS, CACHET_KEYS_FILE,
 * CACHET_ENCRYPT and CACHET_ACCEPT_UNSEALED. Exit status as the other
 * examples: 0 if every step did what it should, 1 if the cache answered but
 * not as expected, 2 for a configuration error, 3 for a connection or server
 * error, 4 for an unexpected integrity or format error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cachet.h>

#define KEY_OLD "example:sealed:old"
#define KEY_NEW "example:sealed:new"
#define KEY_PLAIN "example:sealed:plain"

static int report(const char *what, int status) {
  const char *detail = cachet_last_error();
  fprintf(stderr, "sealed: %s: %s (%s)%s%s\n", what, cachet_strerror(status),
          cachet_status_name(status), detail[0] != '\0' ? ": " : "", detail);
  switch (status) {
  case CACHET_EINVAL:
  case CACHET_ECONFIG:
    return 2;
  case CACHET_ECORRUPT:
  case CACHET_EINTEGRITY:
  case CACHET_EVERSION:
    return 4;
  default:
    return status > 0 ? 1 : 3;
  }
}

/* Key material must not linger in memory: a plain memset before free may be
 * optimized away, a write through a volatile pointer may not. */
static void wipe(char *p, size_t n) {
  volatile char *v = p;
  while (n-- > 0)
    *v++ = 0;
}

/* A handle with keyring `keys` (NULL: none), encrypting, and accepting
 * unsealed values if `accept_unsealed`. The rest comes from the
 * environment. cachet reads `keys` only during the call. */
static int open_with(cachet **c, const char *keys, int accept_unsealed) {
  cachet_options o;
  cachet_options_init(&o);
  o.use_env = 1;
  o.keys = keys;
  o.encrypt = keys != NULL;
  o.accept_unsealed = accept_unsealed;
  int rc = cachet_open(c, &o);
  return rc == CACHET_OK ? 0 : report("open", rc);
}

/* Read `key` through `c` and check the outcome: `want` for a value, or
 * CACHET_EINTEGRITY with `want` NULL. Returns 0 if so, else an exit code. */
static int expect(cachet *c, const char *who, const char *key,
                  const char *want) {
  void *val = NULL;
  size_t len = 0;
  int rc = cachet_get(c, key, strlen(key), &val, &len);
  if (want == NULL) {
    if (rc == CACHET_EINTEGRITY) {
      /* An error, not a miss: the caller sees that something in Redis is
       * not what this service wrote, and why. */
      printf("%s: get %s: refused: %s\n", who, key, cachet_last_error());
      return 0;
    }
    if (rc == CACHET_OK)
      cachet_free(val);
    fprintf(stderr, "sealed: %s: get %s: %s, not an integrity error\n", who,
            key, cachet_status_name(rc));
    return rc < 0 ? report("get", rc) : 1;
  }
  if (rc != CACHET_OK)
    return rc == CACHET_MISS ? 1 : report("get", rc);
  int ok = len == strlen(want) && memcmp(val, want, len) == 0;
  printf("%s: get %s: \"%s\"%s\n", who, key, (const char *)val,
         ok ? "" : " (unexpected)");
  cachet_free(val);
  return ok ? 0 : 1;
}

static int set(cachet *c, const char *key, const char *val) {
  int rc = cachet_set(c, key, strlen(key), val, strlen(val), 60 * 1000);
  return rc == CACHET_OK ? 0 : report("set", rc);
}

/* Inspect `key`: its envelope's header and whether `c`'s keyring verifies
 * its seal. */
static int inspect(cachet *c, const char *who, const char *key,
                   uint32_t want_id, int want_mac) {
  cachet_envelope_info info;
  int rc = cachet_inspect(c, key, strlen(key), &info);
  if (rc != CACHET_OK)
    return rc == CACHET_MISS ? 1 : report("inspect", rc);
  static const char *const mac[] = {"none", "ok", "bad", "no key"};
  printf("%s: inspect %s: key id %" PRIu32 ", %s, mac %s\n", who, key,
         info.key_id,
         (info.flags & CACHET_ENV_F_ENCRYPTED) ? "encrypted" : "plaintext",
         info.mac_status >= 0 && info.mac_status <= 3 ? mac[info.mac_status]
                                                      : "?");
  return info.key_id == want_id && info.mac_status == want_mac ? 0 : 1;
}

/* The walk-through on handles `k1` (key 1), `k2` (key 2 only), `none` (no
 * keyring), `migrating` (key 1, accepting unsealed values) and `rotated`
 * (key 2 active, key 1 still read). */
static int run(cachet *k1, cachet *k2, cachet *none, cachet *migrating,
               cachet *rotated) {
  int rc, code;
  if ((rc = cachet_ping(k1)) != CACHET_OK)
    return report("ping", rc);

  /* 1-3. Sealed with key 1; only a keyring that holds key 1 reads it. */
  if ((code = set(k1, KEY_OLD, "sealed by key 1")) != 0 ||
      (code = expect(k1, "key 1", KEY_OLD, "sealed by key 1")) != 0 ||
      (code = expect(k2, "key 2 only", KEY_OLD, NULL)) != 0 ||
      (code = expect(none, "no keyring", KEY_OLD, NULL)) != 0)
    return code;

  /* 4. Unsealed values (written before keys were deployed) are refused,
   * unless the reader is told to accept them for a migration. */
  if ((code = set(none, KEY_PLAIN, "written without a keyring")) != 0 ||
      (code = expect(k1, "key 1", KEY_PLAIN, NULL)) != 0 ||
      (code = expect(migrating, "key 1, migrating", KEY_PLAIN,
                     "written without a keyring")) != 0)
    return code;

  /* 5. Rotation: deploy "2,1" everywhere first (reads both), then retire
   * key 1 once its values have expired or been rewritten. */
  if ((code = set(rotated, KEY_NEW, "sealed by key 2")) != 0 ||
      (code = expect(rotated, "keys 2,1", KEY_NEW, "sealed by key 2")) != 0 ||
      (code = expect(rotated, "keys 2,1", KEY_OLD, "sealed by key 1")) != 0 ||
      (code = expect(k1, "key 1", KEY_NEW, NULL)) != 0)
    return code;

  /* 6. The header is readable by anyone; the seal only with the key. */
  if ((code = inspect(rotated, "keys 2,1", KEY_NEW, 2, CACHET_MAC_OK)) != 0 ||
      (code = inspect(k1, "key 1", KEY_NEW, 2, CACHET_MAC_NO_KEY)) != 0)
    return code;

  const char *keys[] = {KEY_OLD, KEY_NEW, KEY_PLAIN};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if ((rc = cachet_delete(k1, keys[i], strlen(keys[i]))) < 0)
      return report("delete", rc);
  return 0;
}

int main(void) {
  printf("cachet %s\n", CACHET_VERSION_STRING);
  unsetenv("CACHET_KEYS");
  unsetenv("CACHET_KEYS_FILE");
  unsetenv("CACHET_ENCRYPT");
  unsetenv("CACHET_ACCEPT_UNSEALED");

  /* Two fresh 256-bit keys, "ID:BASE64KEY". In production they come from a
   * secret store, through CACHET_KEYS or a CACHET_KEYS_FILE of mode 0600. */
  char key1[CACHET_KEYGEN_BUFLEN], key2[CACHET_KEYGEN_BUFLEN];
  char both[2 * CACHET_KEYGEN_BUFLEN];
  int rc = cachet_keygen(1, key1, sizeof key1);
  if (rc == CACHET_OK)
    rc = cachet_keygen(2, key2, sizeof key2);
  if (rc != CACHET_OK)
    return report("keygen", rc);
  snprintf(both, sizeof both, "%s,%s", key2, key1); /* the first one writes */

  cachet *k1 = NULL, *k2 = NULL, *none = NULL, *migrating = NULL;
  cachet *rotated = NULL;
  int code = open_with(&k1, key1, 0);
  if (code == 0)
    code = open_with(&k2, key2, 0);
  if (code == 0)
    code = open_with(&none, NULL, 0);
  if (code == 0)
    code = open_with(&migrating, key1, 1);
  if (code == 0)
    code = open_with(&rotated, both, 0);
  /* The handles hold the keys now (in memory they lock and wipe on close):
   * the caller's copies go at once. */
  wipe(key1, sizeof key1);
  wipe(key2, sizeof key2);
  wipe(both, sizeof both);

  if (code == 0)
    code = run(k1, k2, none, migrating, rotated);
  cachet_close(rotated);
  cachet_close(migrating);
  cachet_close(none);
  cachet_close(k2);
  cachet_close(k1);
  if (code == 0)
    printf("ok\n");
  return code;
}
