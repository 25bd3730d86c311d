/* cachet set / get / del / exists / ttl */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

extern const cli_command cli_cmd_set, cli_cmd_get, cli_cmd_del, cli_cmd_exists,
    cli_cmd_ttl;

#define MAX_CLI_TAGS 256

static void help_set(FILE *o) {
  fprintf(o, "usage: cachet set KEY VALUE [--ttl MS] [--tag TAG]... [--json]\n"
             "  Store VALUE under KEY. VALUE '-' reads the value from stdin.\n"
             "  --ttl MS   expiry in milliseconds (0 or absent: none)\n"
             "  --tag TAG  tag the entry (repeatable); see evict-tags\n"
             "Exit: 0 stored, 2 usage, 3 server error.\n");
}

static int run_set(cli *cl, int argc, char **argv) {
  const char *pos[2];
  int npos = 0, json = 0;
  int64_t ttl = 0;
  const char *tags[MAX_CLI_TAGS];
  size_t ntags = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--ttl") == 0) {
      if (++i >= argc || cli_parse_ms(argv[i], &ttl) != 0)
        return cli_usage(&cli_cmd_set, "--ttl needs milliseconds >= 0");
    } else if (opts && strcmp(argv[i], "--tag") == 0) {
      if (++i >= argc || argv[i][0] == '\0')
        return cli_usage(&cli_cmd_set, "--tag needs a non-empty tag");
      if (ntags == MAX_CLI_TAGS)
        return cli_usage(&cli_cmd_set, "too many --tag");
      tags[ntags++] = argv[i];
    } else if (opts && strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (opts && argv[i][0] == '-' && argv[i][1] == '-' &&
               argv[i][2] != '\0') {
      return cli_usage(&cli_cmd_set, "unknown option %s", argv[i]);
    } else if (npos < 2) {
      pos[npos++] = argv[i];
    } else {
      return cli_usage(&cli_cmd_set, "too many arguments");
    }
  }
  if (npos != 2)
    return cli_usage(&cli_cmd_set, "needs KEY and VALUE");
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  char *buf = NULL;
  size_t len = strlen(pos[1]);
  const char *val = pos[1];
  if (strcmp(pos[1], "-") == 0) {
    size_t max = cachet_max_value_size(c);
    int rrc = cli_read_stdin(max, &buf, &len);
    if (rrc == CLI_READ_TOO_LARGE) {
      fprintf(stderr,
              "cachet set: the value on stdin is larger than max_value_size "
              "(%zu bytes); nothing was stored\n",
              max);
      return EXIT_USAGE;
    }
    if (rrc != 0) {
      fprintf(stderr, "cachet set: cannot read stdin: %s\n", strerror(errno));
      return EXIT_USAGE;
    }
    val = buf;
  }
  int rc =
      cachet_set_tags(c, pos[0], strlen(pos[0]), val, len, ttl, tags, ntags);
  free(buf);
  if (rc == CACHET_OK && json)
    printf("{\"stored\":true,\"ttl_ms\":%lld,\"tags\":%zu}\n", (long long)ttl,
           ntags);
  return cli_status(rc, "set");
}

const cli_command cli_cmd_set = {"set", "store a value (with TTL and tags)",
                                 run_set, help_set};

/* Commands that take exactly one KEY and an optional --json. */
static int one_key(const cli_command *cmd, int argc, char **argv,
                   const char **key, int *json) {
  *key = NULL;
  *json = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0)
      *json = 1;
    else if (opts && argv[i][0] == '-' && argv[i][1] == '-' &&
             argv[i][2] != '\0')
      return cli_usage(cmd, "unknown option %s", argv[i]);
    else if (*key == NULL)
      *key = argv[i];
    else
      return cli_usage(cmd, "too many arguments");
  }
  if (*key == NULL)
    return cli_usage(cmd, "needs KEY");
  return 0;
}

static void help_get(FILE *o) {
  fprintf(
      o,
      "usage: cachet get KEY [--json]\n"
      "  Write the raw value bytes to stdout (no newline added).\n"
      "  --json  print {\"key\":..,\"hit\":true|false,\"value\":..} instead\n"
      "Exit: 0 hit, 1 miss, 3 server error, 4 integrity/format "
      "error.\n");
}

static int run_get(cli *cl, int argc, char **argv) {
  const char *key;
  int json, code;
  if ((code = one_key(&cli_cmd_get, argc, argv, &key, &json)) != 0)
    return code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  void *v = NULL;
  size_t n = 0;
  int rc = cachet_get(c, key, strlen(key), &v, &n);
  if (rc == CACHET_OK) {
    if (json) {
      printf("{");
      cli_json_bytes(stdout, "key", key, strlen(key));
      printf(",\"hit\":true,");
      cli_json_bytes(stdout, "value", v, n);
      printf("}\n");
    } else if (n > 0 && fwrite(v, 1, n, stdout) != n) {
      cachet_free(v);
      fprintf(stderr, "cachet get: write to stdout failed\n");
      return EXIT_SERVER;
    }
    cachet_free(v);
  } else if (rc == CACHET_MISS && json) {
    printf("{");
    cli_json_bytes(stdout, "key", key, strlen(key));
    printf(",\"hit\":false}\n");
  }
  return cli_status(rc, "get");
}

const cli_command cli_cmd_get = {"get", "print a value", run_get, help_get};

static void help_del(FILE *o) {
  fprintf(o, "usage: cachet del KEY [--json]\n"
             "  Delete KEY and its tag memberships.\n"
             "Exit: 0 deleted, 1 it did not exist, 3 server error.\n");
}

static int run_del(cli *cl, int argc, char **argv) {
  const char *key;
  int json, code;
  if ((code = one_key(&cli_cmd_del, argc, argv, &key, &json)) != 0)
    return code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  int rc = cachet_delete(c, key, strlen(key));
  if (json && rc >= 0)
    printf("{\"deleted\":%s}\n", rc == CACHET_OK ? "true" : "false");
  return cli_status(rc, "del");
}

const cli_command cli_cmd_del = {"del", "delete a key", run_del, help_del};

static void help_exists(FILE *o) {
  fprintf(o, "usage: cachet exists KEY [--json]\n"
             "Exit: 0 it exists, 1 it does not, 3 server error.\n");
}

static int run_exists(cli *cl, int argc, char **argv) {
  const char *key;
  int json, code;
  if ((code = one_key(&cli_cmd_exists, argc, argv, &key, &json)) != 0)
    return code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  int rc = cachet_exists(c, key, strlen(key));
  if (json && rc >= 0)
    printf("{\"exists\":%s}\n", rc == CACHET_OK ? "true" : "false");
  return cli_status(rc, "exists");
}

const cli_command cli_cmd_exists = {"exists", "test whether a key exists",
                                    run_exists, help_exists};

static void help_ttl(FILE *o) {
  fprintf(o, "usage: cachet ttl KEY [--json]\n"
             "  Print the remaining TTL in milliseconds, or -1 for none.\n"
             "Exit: 0 found, 1 absent, 3 server error.\n");
}

static int run_ttl(cli *cl, int argc, char **argv) {
  const char *key;
  int json, code;
  if ((code = one_key(&cli_cmd_ttl, argc, argv, &key, &json)) != 0)
    return code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  int64_t ttl = 0;
  int rc = cachet_ttl(c, key, strlen(key), &ttl);
  if (rc == CACHET_OK) {
    if (json)
      printf("{\"ttl_ms\":%lld}\n", (long long)ttl);
    else
      printf("%lld\n", (long long)ttl);
  }
  return cli_status(rc, "ttl");
}

const cli_command cli_cmd_ttl = {"ttl", "print the remaining TTL (ms)", run_ttl,
                                 help_ttl};
