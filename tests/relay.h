/* A relay between cachet and a test server, to fault the network rather
 * than the server.
 *
 * test_relay_start listens on a unix socket of its own, in the server's
 * temp dir, and forwards each connection to the server's socket, both
 * ways, on a thread of its own. test_relay_silence makes every connection
 * open at that moment silent: what the server answers on it is dropped
 * from then on, as on a half-open TCP connection or behind a NAT that
 * forgot it, while the client sees no error. Connections opened later are
 * forwarded as before. */
#ifndef CACHET_TEST_RELAY_H
#define CACHET_TEST_RELAY_H

#include "harness.h"

typedef struct test_relay test_relay;

/* NULL after printing why. */
test_relay *test_relay_start(const test_server *s);
/* The socket to point a handle at (unix_path). */
const char *test_relay_path(const test_relay *r);
/* Silence the connections open now; returns how many there were. */
int test_relay_silence(test_relay *r);
/* Close every connection and stop the thread. NULL is a no-op. */
void test_relay_stop(test_relay *r);

#endif
