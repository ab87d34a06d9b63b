/* Scratch files for tests: a private directory per test (under Bazel's
 * $TEST_TMPDIR when set), files written into it, and its removal. Every
 * failure fails the running test (Criterion asserts); nothing here is for
 * production code. */
#ifndef MDL_TESTS_TESTUTIL_H
#define MDL_TESTS_TESTUTIL_H

#include <stddef.h>

/* A fresh directory "<base>/<program>.XXXXXX", base $TEST_TMPDIR or /tmp;
 * caller frees the string, tu_rm_rf removes the directory. Paths under it
 * are long: a Unix socket (108 bytes at most) belongs under /tmp instead. */
char *tu_tmpdir(void);
/* Removes dir and everything in it (rm -rf); fails the test if it cannot. */
void tu_rm_rf(const char *dir);
/* dir/name; caller frees. */
char *tu_path(const char *dir, const char *name);

/* Writes len bytes of data to path (created or truncated). */
void tu_write(const char *path, const void *data, size_t len);
/* The whole file, NUL-terminated; caller frees. */
void *tu_read(const char *path, size_t *len);

/* A suite fixture: TestSuite(x, .init = tu_dir_setup, .fini = tu_dir_teardown)
 * gives each test its own tu_dir (Criterion runs each test in its own
 * process), removed with everything in it after the test. */
extern char *tu_dir;
void tu_dir_setup(void);
void tu_dir_teardown(void);
/* tu_dir/name; the string lives until tu_dir_teardown. */
const char *tu_dir_path(const char *name);
/* Writes text to tu_dir/name and returns that path (lives until
 * tu_dir_teardown). */
const char *tu_dir_write(const char *name, const char *text);

/* "<$TEST_TMPDIR or /tmp>/<name>.<pid>", for a file or a directory the code
 * under test creates itself; nothing is made or removed here. The string
 * lives until the test ends. */
const char *tu_scratch_path(const char *name);

/* The driver's TEST lines in log ("test net N iter I: OUTPUTS (B batches,
 * S samples, T s)"), each without its wall seconds (which differ from run
 * to run while the outputs may not), into out (cap bytes, NUL-ended). */
void tu_test_lines(const char *log, char *out, size_t cap);

#endif
