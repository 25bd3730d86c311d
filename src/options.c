/* cachet_options_init: every field "unset", so that cachet_open can tell a
 * value the caller chose from one it should look up or default. */
#include "cachet.h"

void cachet_options_init(cachet_options *opts) {
  /* Zero (and NULL) is "unset" for every other field. */
  *opts = (cachet_options){.port = -1,
                           .db = -1,
                           .timeout_ms = -1,
                           .multiplex = -1,
                           .encrypt = -1,
                           .accept_unsealed = -1,
                           .use_tls = -1,
                           .tls_insecure = -1};
}
