/* cachet stats / health */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

extern const cli_command cli_cmd_stats, cli_cmd_health;

static void help_stats(FILE *o) {
  fprintf(o,
          "usage: cachet stats [--json | --prometheus]\n"
          "  Print cachet's counters and a few server figures.\n"
          "  The counters (hits, misses, writes, lock_acquisitions, errors by\n"
          "  class, the near cache's near_hits, near_misses,\n"
          "  near_invalidations, near_flushes and near_bytes, ...) are this\n"
          "  cachet process's own: a CLI run is short-\n"
          "  lived, so they only count what this run did (the PING it sends\n"
          "  first). For a service's counters, use cachet_metrics_snapshot()\n"
          "  in the service. The server figures come from INFO and cover the\n"
          "  whole server, summed over every master in a cluster: masters,\n"
          "  keyspace_hits, keyspace_misses, used_memory, connected_clients.\n"
          "  --json        one JSON object: {\"process\":{...},"
          "\"server\":{...}}\n"
          "  --prometheus  the process counters in the Prometheus text format\n"
          "                (no server figures)\n"
          "Exit: 0 ok, 2 usage, 3 connection or server error.\n");
}

/* The INFO fields `stats` shows, as cachet_server_info_get sums them. */
static const char *const server_fields[] = {"keyspace_hits", "keyspace_misses",
                                            "used_memory", "connected_clients"};
#define NFIELDS (sizeof server_fields / sizeof server_fields[0])

static int server_info(cachet *c, char vals[][32], int *nodes) {
  cachet_server_info si;
  int rc = cachet_server_info_get(c, &si);
  if (rc != CACHET_OK)
    return rc;
  const uint64_t v[NFIELDS] = {si.keyspace_hits, si.keyspace_misses,
                               si.used_memory, si.connected_clients};
  for (size_t i = 0; i < NFIELDS; i++) {
    if (v[i] != UINT64_MAX)
      snprintf(vals[i], 32, "%llu", (unsigned long long)v[i]);
    else
      vals[i][0] = '\0';
  }
  *nodes = si.masters;
  return CACHET_OK;
}

#define COUNTERS(XX)                                                           \
  XX(hits)                                                                     \
  XX(misses)                                                                   \
  XX(expired_envelopes)                                                        \
  XX(writes)                                                                   \
  XX(deletes)                                                                  \
  XX(clears) XX(tag_evictions) XX(stampede_waits) XX(lock_acquisitions)        \
      XX(lock_contentions) XX(script_reloads) XX(near_hits) XX(near_misses)    \
          XX(near_invalidations) XX(near_flushes) XX(near_bytes)

static void print_text(const cachet_metrics *m, char vals[][32], int nodes) {
  printf("# counters of this cachet process only\n");
#define XX(f) printf("%-20s %llu\n", #f, (unsigned long long)m->f);
  COUNTERS(XX)
#undef XX
  for (int i = 1; i <= CACHET_ERROR_COUNT; i++)
    if (m->errors[i] != 0)
      printf("errors.%-13s %llu\n", cachet_status_name(-i) + 7,
             (unsigned long long)m->errors[i]);
  printf("# server (INFO, summed over %d master%s)\n", nodes,
         nodes == 1 ? "" : "s");
  printf("%-20s %d\n", "masters", nodes);
  for (size_t i = 0; i < NFIELDS; i++)
    printf("%-20s %s\n", server_fields[i], vals[i][0] ? vals[i] : "?");
}

static void print_json(const cachet_metrics *m, char vals[][32], int nodes) {
  printf("{\"process\":{");
#define XX(f) printf("\"%s\":%llu,", #f, (unsigned long long)m->f);
  COUNTERS(XX)
#undef XX
  printf("\"errors\":{");
  for (int i = 1; i <= CACHET_ERROR_COUNT; i++)
    printf("%s\"%s\":%llu", i > 1 ? "," : "", cachet_status_name(-i) + 7,
           (unsigned long long)m->errors[i]);
  printf("}},\"server\":{\"masters\":%d", nodes);
  for (size_t i = 0; i < NFIELDS; i++)
    printf(",\"%s\":%s", server_fields[i], vals[i][0] ? vals[i] : "null");
  printf("}}\n");
}

static int run_stats(cli *cl, int argc, char **argv) {
  int json = 0, prom = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (opts && strcmp(argv[i], "--prometheus") == 0)
      prom = 1;
    else
      return cli_usage(&cli_cmd_stats, "unknown argument %s", argv[i]);
  }
  if (json && prom)
    return cli_usage(&cli_cmd_stats, "--json and --prometheus exclude each "
                                     "other");
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  int rc = cachet_ping(c);
  if (rc != CACHET_OK)
    return cli_status(rc, "stats");
  char vals[NFIELDS][32];
  int nodes = 0;
  if (!prom && (rc = server_info(c, vals, &nodes)) != CACHET_OK)
    return cli_status(rc, "stats");
  cachet_metrics m;
  cachet_metrics_snapshot(c, &m);
  if (prom) {
    char *text = NULL;
    size_t len = 0;
    rc = cachet_metrics_prometheus(&m, &text, &len);
    if (rc != CACHET_OK)
      return cli_status(rc, "stats");
    fwrite(text, 1, len, stdout);
    cachet_free(text);
  } else if (json) {
    print_json(&m, vals, nodes);
  } else {
    print_text(&m, vals, nodes);
  }
  return EXIT_HIT;
}

const cli_command cli_cmd_stats = {"stats", "print counters and server figures",
                                   run_stats, help_stats};

static void help_health(FILE *o) {
  fprintf(o,
          "usage: cachet health [--json]\n"
          "  Probe the server: PING round trip, version (older than Redis\n"
          "  6.2 is unhealthy: cachet's scripts need it), whether cachet's\n"
          "  scripts are in the server's script cache (missing ones load on\n"
          "  first use, so that alone is not unhealthy), and the\n"
          "  maxmemory-policy (allkeys-* may evict tag indexes and locks:\n"
          "  unhealthy), and memory: used_memory at 90%% of maxmemory or\n"
          "  more, or commands refused for memory (OOM), is degraded.\n"
          "  --json  one JSON object with the same fields; \"reason\" says\n"
          "          why it is degraded or unhealthy\n"
          "Exit: 0 healthy, 1 degraded (writes fail or soon will), 3\n"
          "unhealthy or the server cannot be reached, 2 usage.\n");
}

static int run_health(cli *cl, int argc, char **argv) {
  int json = 0;
  int opts = 1; /* until "--": then every argument is an operand */
  for (int i = 0; i < argc; i++) {
    if (opts && strcmp(argv[i], "--") == 0) {
      opts = 0;
      continue;
    }
    if (opts && strcmp(argv[i], "--json") == 0)
      json = 1;
    else
      return cli_usage(&cli_cmd_health, "unknown argument %s", argv[i]);
  }
  int code;
  cachet *c = cli_handle(cl, &code);
  if (c == NULL)
    return code;
  cachet_health h;
  int rc = cachet_health_check(c, &h);
  /* With CACHET_NEAR_CACHE_BYTES set, this handle's own invalidation feed
   * starts with it: give it a moment (2 s at most) before reporting. */
  for (int i = 0; i < 200 && rc == CACHET_OK && h.near_cache && !h.tracking;
       i++) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    rc = cachet_health_check(c, &h);
  }
  if (rc != CACHET_OK) {
    if (json) {
      printf("{\"healthy\":false,\"error\":");
      cli_json_str(stdout, cachet_status_name(rc),
                   strlen(cachet_status_name(rc)));
      printf(",\"message\":");
      cli_json_str(stdout, cachet_last_error(), strlen(cachet_last_error()));
      printf("}\n");
    }
    code = cli_status(rc, "health");
    return code == EXIT_USAGE ? EXIT_USAGE : EXIT_SERVER;
  }
  if (json) {
    printf("{\"healthy\":%s,\"ping_ms\":%.3f,\"server_version\":",
           h.healthy ? "true" : "false", h.ping_ms);
    cli_json_str(stdout, h.server_version, strlen(h.server_version));
    printf(",\"scripts_total\":%d,\"scripts_loaded\":%d,"
           "\"scripts_present\":%s,\"maxmemory_policy\":",
           h.scripts_total, h.scripts_loaded,
           h.scripts_loaded == h.scripts_total ? "true" : "false");
    cli_json_str(stdout, h.maxmemory_policy, strlen(h.maxmemory_policy));
    printf(",\"policy_warning\":%s,\"degraded\":%s,\"used_memory\":%llu,"
           "\"maxmemory\":%llu,\"oom_rejections\":%llu,\"message\":",
           h.policy_warning ? "true" : "false", h.degraded ? "true" : "false",
           (unsigned long long)h.used_memory, (unsigned long long)h.maxmemory,
           (unsigned long long)h.oom_rejections);
    cli_json_str(stdout, h.message, strlen(h.message));
    printf(",\"near_cache\":%s,\"tracking\":%s",
           h.near_cache ? "true" : "false", h.tracking ? "true" : "false");
    /* The message also lists what is only informative (scripts not yet
     * loaded); the reason is there only when the exit code is not 0. */
    printf(",\"reason\":");
    const char *reason = !h.healthy || h.degraded ? h.message : "";
    cli_json_str(stdout, reason, strlen(reason));
    printf("}\n");
  } else {
    printf("healthy           %s\n", !h.healthy   ? "no"
                                     : h.degraded ? "degraded"
                                                  : "yes");
    printf("ping_ms           %.3f\n", h.ping_ms);
    printf("server_version    %s\n", h.server_version);
    printf("scripts           %d of %d in the script cache\n", h.scripts_loaded,
           h.scripts_total);
    printf("maxmemory_policy  %s%s\n", h.maxmemory_policy,
           h.policy_warning ? " (warning)" : "");
    if (h.maxmemory > 0)
      printf("memory            %llu of %llu bytes%s\n",
             (unsigned long long)h.used_memory, (unsigned long long)h.maxmemory,
             h.degraded ? " (degraded)" : "");
    else
      printf("memory            %llu bytes, no maxmemory\n",
             (unsigned long long)h.used_memory);
    printf("oom_rejections    %llu\n", (unsigned long long)h.oom_rejections);
    if (h.near_cache)
      printf("near_cache        on, tracking %s\n",
             h.tracking ? "active" : "NOT active (bypassed)");
    if (h.message[0] != '\0')
      printf("message           %s\n", h.message);
  }
  if (!h.healthy)
    return EXIT_SERVER;
  return h.degraded ? EXIT_MISS : EXIT_HIT;
}

const cli_command cli_cmd_health = {"health", "probe the server", run_health,
                                    help_health};
