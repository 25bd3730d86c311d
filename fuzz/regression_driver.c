/*
 * Replays fuzz inputs through LLVMFuzzerTestOneInput without libFuzzer, so
 * a gcc build runs every corpus as an ordinary test (zstd's
 * regression_driver.c). Arguments are files or directories of files.
 * Exits 0 when every input ran; nonzero when a path cannot be read or a
 * directory holds no inputs, so a missing corpus never passes vacuously.
 * A failing input aborts through FUZZ_ASSERT or a sanitizer.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_helpers.h"

/* A target that needs set-up (a server) defines LLVMFuzzerInitialize, as
 * libFuzzer allows; the others leave it out. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Read and run one file. The input gets its own exact-size buffer so a
 * sanitizer sees any read past its end. */
static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (buf == NULL) {
      fprintf(stderr, "%s: out of memory\n", path);
      fclose(f);
      return -1;
    }
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap)
      break;
    uint8_t *bigger = realloc(buf, cap * 2);
    if (bigger == NULL)
      free(buf);
    buf = bigger;
    cap *= 2;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    fprintf(stderr, "%s: read error\n", path);
    free(buf);
    return -1;
  }
  uint8_t *exact = malloc(n ? n : 1);
  if (exact == NULL) {
    free(buf);
    return -1;
  }
  memcpy(exact, buf, n);
  free(buf);
  LLVMFuzzerTestOneInput(exact, n);
  free(exact);
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular, non-hidden file in `dir`, in name order so a failure
 * reproduces the same way. Returns the count run, or -1. */
static long run_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    fprintf(stderr, "%s: %s\n", dir, strerror(errno));
    return -1;
  }
  char **names = NULL;
  size_t nnames = 0, cap = 0;
  long rc = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    if (nnames == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      char **grown = realloc(names, ncap * sizeof *names);
      if (grown == NULL) {
        rc = -1;
        break;
      }
      names = grown;
      cap = ncap;
    }
    size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
    names[nnames] = malloc(len);
    if (names[nnames] == NULL) {
      rc = -1;
      break;
    }
    snprintf(names[nnames], len, "%s/%s", dir, e->d_name);
    nnames++;
  }
  closedir(d);
  if (rc == 0 && nnames > 0)
    qsort(names, nnames, sizeof *names, cmp_names);
  for (size_t i = 0; rc >= 0 && i < nnames; i++) {
    struct stat st;
    if (stat(names[i], &st) != 0) {
      fprintf(stderr, "%s: %s\n", names[i], strerror(errno));
      rc = -1;
    } else if (S_ISREG(st.st_mode)) {
      if (run_file(names[i]) != 0)
        rc = -1;
      else
        rc++;
    }
  }
  for (size_t i = 0; i < nnames; i++)
    free(names[i]);
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize != NULL)
    LLVMFuzzerInitialize(&argc, &argv);
  long total = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    long n;
    if (S_ISDIR(st.st_mode)) {
      n = run_dir(argv[i]);
      if (n == 0) {
        fprintf(stderr, "%s: no inputs in corpus directory\n", argv[i]);
        return 1;
      }
    } else {
      n = run_file(argv[i]) == 0 ? 1 : -1;
    }
    if (n < 0)
      return 1;
    total += n;
  }
  fprintf(stderr, "%s: ran %ld inputs\n", argv[0], total);
  return 0;
}
