/* Test harness: a private Redis Cluster per test binary.
 *
 * Each node is a redis-server on a free 127.0.0.1 port, with its own
 * directory under one temp dir, cluster-enabled, nothing saved, and dies
 * with the test process (PR_SET_PDEATHSIG). The cluster is built with
 * `redis-cli --cluster create` and waited for, bounded, until every node
 * says cluster_state:ok. Nodes run with cluster-require-full-coverage no, so
 * a dead master only takes its own slots down. */
#ifndef CACHET_TEST_CLUSTER_HARNESS_H
#define CACHET_TEST_CLUSTER_HARNESS_H

#include <hiredis/hiredis.h>
#include <sys/types.h>

#include "cachet.h"

#define TEST_CLUSTER_MAX 12

typedef struct test_cluster {
  char dir[256];
  int n; /* Nodes: masters first as created, then replicas. */
  int port[TEST_CLUSTER_MAX];
  pid_t pid[TEST_CLUSTER_MAX];
  /* A TLS cluster (test_cluster_start_tls): each node's TLS port, the
   * certificates' dir; the plaintext ports stay, for the harness. */
  int tls_port[TEST_CLUSTER_MAX];
  /* Each node's cluster bus, chosen free like the others: the default,
   * port + 10000 (the TLS port's with tls-cluster), can be out of range or
   * another process's. */
  int bus_port[TEST_CLUSTER_MAX];
  char certs[256];
} test_cluster;

/* Start `masters` masters with `replicas` replicas each and wait until the
 * cluster is ok. 0 on success; on failure prints why, cleans up, -1. */
int test_cluster_start(test_cluster *cl, int masters, int replicas);
/* The same with TLS between the nodes (tls-cluster, tls-replication) and
 * on a TLS port of each, serving <certs>/server.crt (test_tls_certs). */
int test_cluster_start_tls(test_cluster *cl, int masters, int replicas,
                           const char *certs);
/* Stop every node and remove the temp dir. */
void test_cluster_stop(test_cluster *cl);
/* SIGKILL node i and reap it. */
void test_cluster_kill(test_cluster *cl, int i);

/* A raw hiredis connection to node i; NULL if it does not answer. */
redisContext *test_cluster_node(const test_cluster *cl, int i);
/* Wait (bounded by timeout_ms) until every live node reports
 * cluster_state:ok. 0 if it did. */
int test_cluster_wait_ok(const test_cluster *cl, int timeout_ms);
/* 1 if live node i is a master (ROLE). */
int test_cluster_is_master(const test_cluster *cl, int i);
/* The node index (live master) serving `slot`, or -1. */
int test_cluster_owner(const test_cluster *cl, unsigned slot);
/* The node id (40 hex digits) of node i into id[41]; 0 on success. */
int test_cluster_node_id(const test_cluster *cl, int i, char id[41]);

/* Options for a redis+cluster:// URL naming node 0 (rediss+cluster://,
 * its TLS port and the test CA for a TLS cluster), and a handle. */
void test_cluster_options(const test_cluster *cl, cachet_options *o,
                          const char *prefix, char *url, size_t urlsz);
cachet *test_cluster_open(const test_cluster *cl, const char *prefix);

#endif
