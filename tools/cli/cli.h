/* The cachet command-line tool: shared declarations. */
#ifndef CACHET_CLI_H
#define CACHET_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cachet.h"

/* Exit codes, stable: documented in --help, the README and cachet.1. */
#define EXIT_HIT 0
#define EXIT_MISS 1
#define EXIT_USAGE 2
#define EXIT_SERVER 3
#define EXIT_INTEGRITY 4

typedef struct cli {
  const char *url;    /* --url, or NULL */
  const char *prefix; /* --prefix, or NULL */
  /* --tls-ca, --tls-ca-dir, --tls-cert, --tls-key, --tls-server-name,
   * --insecure: NULL/0 when not given (the environment applies). */
  const char *tls_ca, *tls_ca_dir, *tls_cert, *tls_key, *tls_server_name;
  int insecure;
  cachet *c; /* opened on first cli_handle() */
} cli;

/* One subcommand. `run` gets argv after the command name and returns the
 * process exit code. `help` prints the command's usage to `out`. */
typedef struct cli_command {
  const char *name;
  const char *summary;
  int (*run)(cli *cl, int argc, char **argv);
  void (*help)(FILE *out);
} cli_command;

/* The options every command's handle is made of: the environment, --url,
 * --prefix and the --tls-* flags. */
void cli_options(const cli *cl, cachet_options *o);
/* Open (once) the handle from the environment plus --url/--prefix. On
 * failure prints the error and returns NULL; *exit_code is set. */
cachet *cli_handle(cli *cl, int *exit_code);
/* Print "cachet: <what>: <strerror>: <detail>" to stderr for an error and
 * return the exit code for the status. For a positive outcome it prints
 * nothing and returns 1 (0 for CACHET_OK). */
int cli_status(int status, const char *what);
/* ... with a detail saved earlier (or on another thread). */
int cli_status_why(int status, const char *what, const char *detail);
/* Print a usage error and return EXIT_USAGE. */
int cli_usage(const cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parse a non-negative millisecond count; 0 on success, -1 if malformed. */
int cli_parse_ms(const char *s, int64_t *out);
/* Parse an unsigned 64-bit count; 0 on success. */
int cli_parse_u64(const char *s, uint64_t *out);
/* 1 if argv[i] is "-h" or "--help". */
int cli_is_help(const char *arg);

/* Read all of stdin, or a whole file, into a malloc'd buffer, but never
 * more than `max` bytes: 0 on success, CLI_READ_TOO_LARGE when the input
 * holds more (nothing is returned, and no more than max + 1 bytes were
 * ever held), CLI_READ_ERROR on an I/O error (errno says which). */
#define CLI_READ_ERROR (-1)
#define CLI_READ_TOO_LARGE (-2)
int cli_read_stream(FILE *f, size_t max, char **buf, size_t *len);
int cli_read_stdin(size_t max, char **buf, size_t *len);
int cli_read_file(const char *path, size_t max, char **buf, size_t *len);

/* 1 if the bytes are valid UTF-8 (RFC 3629). */
int cli_utf8_valid(const void *s, size_t len);
/* Write text as a JSON string literal (quotes included): valid UTF-8 as
 * itself with JSON's escapes; invalid bytes become U+FFFD. For text whose
 * exact bytes do not matter (messages, versions). */
void cli_json_str(FILE *out, const void *s, size_t len);
/* Write the member `"name":"..."` when the bytes are valid UTF-8, else
 * `"name_b64":"..."` (standard base64, padded): either way the exact
 * bytes round-trip. For keys, values and names. */
void cli_json_bytes(FILE *out, const char *name, const void *s, size_t len);

/* Progress line on stderr for long runs, only when stderr is a terminal;
 * installs itself as the handle's progress callback. */
void cli_progress(void *ud, const char *op, uint64_t done);
/* Finish a progress line (newline) if one was drawn. */
void cli_progress_end(void);

#endif
