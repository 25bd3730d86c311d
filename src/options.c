/* cachet_options_init: every field "unset", so that cachet_open can tell a
 * value the caller chose from one it should look up or default. */
#include <string.h>

#include "cachet.h"

void cachet_options_init(cachet_options *opts) {
  memset(opts, 0, sizeof *opts);
  opts->url = NULL;
  opts->host = NULL;
  opts->port = -1;
  opts->unix_path = NULL;
  opts->db = -1;
  opts->username = NULL;
  opts->password = NULL;
  opts->prefix = NULL;
  opts->timeout_ms = -1;
  opts->pool_size = 0;
  opts->multiplex = -1;
  opts->use_env = 0;
  opts->keys = NULL;
  opts->keys_file = NULL;
  opts->encrypt = -1;
  opts->accept_unsealed = -1;
  opts->max_value_size = 0;
  opts->max_key_size = 0;
  opts->max_tags = 0;
  opts->lock_lease_ms = 0;
  opts->fetch_wait_ms = 0;
  opts->progress = NULL;
  opts->progress_ud = NULL;
  opts->log = NULL;
  opts->log_ud = NULL;
  opts->use_tls = -1;
  opts->tls_insecure = -1;
  opts->near_cache_bytes = 0;
  opts->near_cache_ttl_ms = 0;
}
