/* cachet keygen / inspect */
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

extern const cli_command cli_cmd_keygen, cli_cmd_inspect;

static void help_keygen(FILE *o) {
  fprintf(o,
          "usage: cachet keygen [--id N]\n"
          "  Print one fresh random keyring entry, ID:BASE64KEY (32 bytes).\n"
          "  Put entries in CACHET_KEYS (comma-separated; the first one\n"
          "  writes) or in the file CACHET_KEYS_FILE names.\n"
          "  --id N  key id, 1-4294967295 (default 1)\n"
          "Exit: 0 ok, 2 usage.\n");
}

static int run_keygen(cli *cl, int argc, char **argv) {
  (void)cl;
  uint64_t id = 1;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--id") == 0) {
      if (++i >= argc || cli_parse_u64(argv[i], &id) != 0 || id == 0 ||
          id > UINT32_MAX)
        return cli_usage(&cli_cmd_keygen, "--id needs a number 1-4294967295");
    } else {
      return cli_usage(&cli_cmd_keygen, "unknown argument %s", argv[i]);
    }
  }
  char buf[CACHET_KEYGEN_BUFLEN];
  int rc = cachet_keygen((uint32_t)id, buf, sizeof buf);
  if (rc != CACHET_OK)
    return cli_status(rc, "keygen");
  printf("%s\n", buf);
  fflush(stdout);
  sodium_memzero(buf, sizeof buf);
  return EXIT_HIT;
}

const cli_command cli_cmd_keygen = {"keygen", "print a new keyring entry",
                                    run_keygen, help_keygen};

static void help_inspect(FILE *o) {
  fprintf(o,
          "usage: cachet inspect KEY [--json]\n"
          "       cachet inspect --file PATH [--redis-key NAME] [--json]\n"
          "  Print a stored envelope's header fields, payload length and MAC\n"
          "  status (ok, bad, no key, or none for an unsealed value), checked\n"
          "  with the keyring in CACHET_KEYS/CACHET_KEYS_FILE. Never prints\n"
          "  key material or the payload.\n"
          "  --file PATH       inspect the raw bytes of a file instead\n"
          "  --redis-key NAME  the full Redis key the bytes were stored under\n"
          "                    (the MAC is bound to it)\n"
          "Exit: 0 parsed (whatever the MAC status), 1 absent, 3 server\n"
          "error, 4 not a valid envelope.\n");
}

static const char *mac_text(int s) {
  switch (s) {
  case CACHET_MAC_NONE:
    return "none";
  case CACHET_MAC_OK:
    return "ok";
  case CACHET_MAC_BAD:
    return "bad";
  case CACHET_MAC_NO_KEY:
    return "no key";
  default:
    return "unknown";
  }
}

static void print_info(const cachet_envelope_info *in, int json) {
  if (json) {
    printf("{\"version\":%u,\"flags\":%u,\"mac\":%s,\"encrypted\":%s,"
           "\"key_id\":%lu,\"created_ms\":%lld,\"expires_ms\":%lld,"
           "\"content_type\":%lu,\"payload_len\":%llu,\"mac_status\":\"%s\"}\n",
           in->version, in->flags,
           (in->flags & CACHET_ENV_F_MAC) ? "true" : "false",
           (in->flags & CACHET_ENV_F_ENCRYPTED) ? "true" : "false",
           (unsigned long)in->key_id, (long long)in->created_ms,
           (long long)in->expires_ms, (unsigned long)in->content_type,
           (unsigned long long)in->payload_len, mac_text(in->mac_status));
    return;
  }
  printf("version:      %u\n", in->version);
  printf("flags:        0x%02x%s%s\n", in->flags,
         (in->flags & CACHET_ENV_F_MAC) ? " mac" : "",
         (in->flags & CACHET_ENV_F_ENCRYPTED) ? " encrypted" : "");
  printf("key id:       %lu\n", (unsigned long)in->key_id);
  printf("created:      %lld ms\n", (long long)in->created_ms);
  if (in->expires_ms != 0)
    printf("expires:      %lld ms\n", (long long)in->expires_ms);
  else
    printf("expires:      never\n");
  printf("content type: %lu\n", (unsigned long)in->content_type);
  printf("payload:      %llu bytes\n", (unsigned long long)in->payload_len);
  printf("mac:          %s\n", mac_text(in->mac_status));
}

/* inspect --file reads at most max_value_size plus this. */
#define INSPECT_SLACK 4096

static int run_inspect(cli *cl, int argc, char **argv) {
  const char *key = NULL, *file = NULL, *rkey = NULL;
  int json = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (opts && strcmp(argv[i], "--file") == 0) {
      if (++i >= argc)
        return cli_usage(&cli_cmd_inspect, "--file needs a path");
      file = argv[i];
    } else if (opts && strcmp(argv[i], "--redis-key") == 0) {
      if (++i >= argc)
        return cli_usage(&cli_cmd_inspect, "--redis-key needs a name");
      rkey = argv[i];
    } else if (opts && argv[i][0] == '-' && argv[i][1] == '-') {
      return cli_usage(&cli_cmd_inspect, "unknown option %s", argv[i]);
    } else if (key == NULL) {
      key = argv[i];
    } else {
      return cli_usage(&cli_cmd_inspect, "too many arguments");
    }
  }
  if ((key == NULL) == (file == NULL))
    return cli_usage(&cli_cmd_inspect, "needs KEY or --file PATH");
  if (rkey != NULL && file == NULL)
    return cli_usage(&cli_cmd_inspect, "--redis-key goes with --file");

  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  cachet_envelope_info info;
  int rc;
  if (file != NULL) {
    char *buf;
    size_t len;
    /* No envelope of an accepted value is larger: its overhead is well
     * under 4 KiB. */
    size_t max = cachet_max_value_size(c) + INSPECT_SLACK;
    int rrc = cli_read_file(file, max, &buf, &len);
    if (rrc == CLI_READ_TOO_LARGE) {
      fprintf(stderr,
              "cachet inspect: %s is larger than %zu bytes (max_value_size "
              "+ 4 KiB), more than any envelope cachet reads\n",
              file, max);
      return EXIT_USAGE;
    }
    if (rrc != 0) {
      fprintf(stderr, "cachet inspect: cannot read %s: %s\n", file,
              strerror(errno));
      return EXIT_USAGE;
    }
    rc = cachet_inspect_blob(c, rkey, rkey != NULL ? strlen(rkey) : 0, buf, len,
                             &info);
    free(buf);
  } else {
    rc = cachet_inspect(c, key, strlen(key), &info);
  }
  if (rc == CACHET_OK)
    print_info(&info, json);
  return cli_status(rc, "inspect");
}

const cli_command cli_cmd_inspect = {"inspect",
                                     "show an envelope's header and MAC status",
                                     run_inspect, help_inspect};
