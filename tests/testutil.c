/* Scratch directories and files for tests (see testutil.h). */
#define _GNU_SOURCE
#include "tests/testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tmp_base(void) {
  const char *base = getenv("TEST_TMPDIR");
  return base && base[0] ? base : "/tmp";
}

char *tu_tmpdir(void) {
  char *tmpl = NULL;
  cr_assert(asprintf(&tmpl, "%s/%s.XXXXXX", tmp_base(), program_invocation_short_name) > 0);
  cr_assert(mkdtemp(tmpl), "mkdtemp %s: %s", tmpl, strerror(errno));
  return tmpl;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

void tu_rm_rf(const char *dir) {
  cr_assert_eq(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0, "rm -rf %s: %s", dir,
               strerror(errno));
}

char *tu_path(const char *dir, const char *name) {
  char *p = NULL;
  cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
  return p;
}

void tu_write(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  cr_assert(f, "open %s", path);
  cr_assert_eq(fwrite(data, 1, len, f), len);
  fclose(f);
}

void *tu_read(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *b = malloc((size_t)n + 1);
  cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  ((char *)b)[n] = 0;
  *len = (size_t)n;
  return b;
}

char *tu_dir;

/* The paths handed out by tu_dir_path, freed by tu_dir_teardown. */
static char **g_paths;
static size_t g_n_paths;

void tu_dir_setup(void) {
  tu_dir = tu_tmpdir();
}

void tu_dir_teardown(void) {
  for (size_t i = 0; i < g_n_paths; i++) free(g_paths[i]);
  free(g_paths);
  g_paths = NULL;
  g_n_paths = 0;
  if (!tu_dir) return;
  tu_rm_rf(tu_dir);
  free(tu_dir);
  tu_dir = NULL;
}

static const char *keep(char *path) {
  char **grown = realloc(g_paths, (g_n_paths + 1) * sizeof *g_paths);
  cr_assert_not_null(grown);
  g_paths = grown;
  g_paths[g_n_paths++] = path;
  return path;
}

const char *tu_dir_path(const char *name) {
  cr_assert_not_null(tu_dir, "tu_dir_path(\"%s\") outside a tu_dir_setup suite", name);
  return keep(tu_path(tu_dir, name));
}

const char *tu_dir_write(const char *name, const char *text) {
  const char *p = tu_dir_path(name);
  tu_write(p, text, strlen(text));
  return p;
}

const char *tu_scratch_path(const char *name) {
  char *p = NULL;
  cr_assert(asprintf(&p, "%s/%s.%d", tmp_base(), name, (int)getpid()) > 0);
  return keep(p);
}

void tu_test_lines(const char *log, char *out, size_t cap) {
  size_t used = 0;
  if (cap) out[0] = 0;
  for (const char *l = strstr(log, "test net "); l; l = strstr(l + 1, "test net ")) {
    const char *e = strchr(l, '\n');
    if (!e) e = l + strlen(l);
    const char *s = strstr(l, " samples");
    int len = s && s < e ? (int)(s + strlen(" samples") - l) : (int)(e - l);
    used += (size_t)snprintf(out + used, used < cap ? cap - used : 0, "%.*s)\n", len, l);
  }
}
