/* RESP formatting: a command's bytes as Redis reads them. Internal, pure.
 * Shared by the sync connection and the async driver, which both send
 * what they format themselves. */
#ifndef CACHET_RESP_H
#define CACHET_RESP_H

#include <stddef.h>

/* At least the size of the command in RESP (*<argc>\r\n then
 * $<len>\r\n<arg>\r\n per argument), at most 23 bytes more per argument;
 * 0 when it would overflow a size_t. */
size_t cachet_resp_bound(int argc, const size_t *lens);
/* Write it at p, which has room for cachet_resp_bound bytes; returns the
 * end. */
char *cachet_resp_write(char *p, int argc, const char **argv,
                        const size_t *lens);

#endif
