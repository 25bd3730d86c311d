/* cachet evict-tags / clear / prune */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

extern const cli_command cli_cmd_evict_tags, cli_cmd_clear, cli_cmd_prune;

static int is_option(const char *a) {
  return a[0] == '-' && a[1] == '-' && a[2] != '\0';
}

static void print_count(int json, const char *field, uint64_t n) {
  if (json)
    printf("{\"%s\":%llu}\n", field, (unsigned long long)n);
  else
    printf("%llu\n", (unsigned long long)n);
}

static void help_evict_tags(FILE *o) {
  fprintf(o,
          "usage: cachet evict-tags TAG... [--json]\n"
          "  Evict every entry that carries any of the TAGs and print how\n"
          "  many entries were evicted. Runs in small chunks, so the server\n"
          "  keeps answering other clients. If it fails part-way, running it\n"
          "  again finishes the work.\n"
          "  --json  print {\"evicted\":N}\n"
          "Exit: 0 done, 2 usage, 3 server error or gave up under "
          "contention.\n");
}

static int run_evict_tags(cli *cl, int argc, char **argv) {
  int json = 0;
  const char **tags = malloc((size_t)(argc > 0 ? argc : 1) * sizeof *tags);
  size_t ntags = 0;
  if (tags == NULL) {
    fprintf(stderr, "cachet evict-tags: out of memory\n");
    return EXIT_SERVER;
  }
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (opts && is_option(argv[i])) {
      free(tags);
      return cli_usage(&cli_cmd_evict_tags, "unknown option %s", argv[i]);
    } else if (argv[i][0] == '\0') {
      free(tags);
      return cli_usage(&cli_cmd_evict_tags, "a tag must not be empty");
    } else {
      tags[ntags++] = argv[i];
    }
  }
  if (ntags == 0) {
    free(tags);
    return cli_usage(&cli_cmd_evict_tags, "needs at least one TAG");
  }
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL) {
    free(tags);
    return code;
  }
  uint64_t n = 0;
  int rc = cachet_evict_tags(c, tags, ntags, &n);
  cli_progress_end();
  free(tags);
  if (rc == CACHET_OK)
    print_count(json, "evicted", n);
  return cli_status(rc, "evict-tags");
}

const cli_command cli_cmd_evict_tags = {"evict-tags",
                                        "evict every entry carrying a tag",
                                        run_evict_tags, help_evict_tags};

static void help_clear(FILE *o) {
  fprintf(o, "usage: cachet clear [--dry-run] [--json]\n"
             "  Remove every cache entry under the key prefix (--prefix or\n"
             "  CACHET_KEY_PREFIX) with its tag data, and print how many\n"
             "  entries were removed. Never FLUSHDB: keys outside the prefix\n"
             "  and locks are left alone.\n"
             "  --dry-run  only count the entries that would be removed\n"
             "  --json     print {\"removed\":N,\"dry_run\":BOOL}\n"
             "Exit: 0 done, 2 usage, 3 server error.\n");
}

static int run_clear(cli *cl, int argc, char **argv) {
  int json = 0, dry = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (opts && strcmp(argv[i], "--dry-run") == 0)
      dry = 1;
    else if (opts && is_option(argv[i]))
      return cli_usage(&cli_cmd_clear, "unknown option %s", argv[i]);
    else
      return cli_usage(&cli_cmd_clear, "takes no arguments");
  }
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  uint64_t n = 0;
  int rc = cachet_clear(c, dry, &n);
  cli_progress_end();
  if (rc == CACHET_OK) {
    if (json)
      printf("{\"removed\":%llu,\"dry_run\":%s}\n", (unsigned long long)n,
             dry ? "true" : "false");
    else
      printf("%llu\n", (unsigned long long)n);
  }
  return cli_status(rc, "clear");
}

const cli_command cli_cmd_clear = {
    "clear", "remove every entry under the prefix", run_clear, help_clear};

static void help_prune(FILE *o) {
  fprintf(o,
          "usage: cachet prune [--json]\n"
          "  Remove expired and dangling members from every tag index under\n"
          "  the key prefix, and print how many were removed. Entries are\n"
          "  not touched.\n"
          "  --json  print {\"pruned\":N}\n"
          "Exit: 0 done, 2 usage, 3 server error.\n");
}

static int run_prune(cli *cl, int argc, char **argv) {
  int json = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (opts && is_option(argv[i]))
      return cli_usage(&cli_cmd_prune, "unknown option %s", argv[i]);
    else
      return cli_usage(&cli_cmd_prune, "takes no arguments");
  }
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  uint64_t n = 0;
  int rc = cachet_prune(c, &n);
  cli_progress_end();
  if (rc == CACHET_OK)
    print_count(json, "pruned", n);
  return cli_status(rc, "prune");
}

const cli_command cli_cmd_prune = {
    "prune", "drop expired/dangling tag memberships", run_prune, help_prune};
