/* SHA-256 against FIPS 180-4 vectors; fingerprints that change with one
 * solver field or one byte of a data file and say so; the digest cache;
 * the registry's BLESSED, runs and history. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sha256.h"
#include "compiler/job.h"
#include "runtime/ci/fingerprint.h"
#include "runtime/ci/registry.h"
#include "tests/testutil.h"

TestSuite(ci_fp, .init = tu_dir_setup, .fini = tu_dir_teardown);

Test(ci_fp, sha256_vectors) {
  char hex[65];
  mdl_sha256_bytes("", 0, hex);
  cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  mdl_sha256_bytes("abc", 3, hex);
  cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  mdl_sha256_bytes(m, strlen(m), hex);
  cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  /* a million 'a's fed in uneven pieces */
  mdl_sha256 s;
  mdl_sha256_init(&s);
  char block[997];
  memset(block, 'a', sizeof block);
  size_t left = 1000000;
  while (left) {
    size_t n = left < sizeof block ? left : sizeof block;
    mdl_sha256_update(&s, block, n);
    left -= n;
  }
  uint8_t d[32];
  mdl_sha256_final(&s, d);
  mdl_sha256_hex(d, hex);
  cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static const char NET[] =
    "name: \"tiny\"\n"
    "layer { name: \"d\" type: \"Data\" top: \"x\" top: \"y\" data_param { source: \"train\" "
    "batch_size: 2 } }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"x\" top: \"z\"\n"
    "        inner_product_param { num_output: 2 } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"z\" bottom: \"y\" top: \"loss\" "
    "}\n";

static const char JOB[] =
    "name: \"j\"\n"
    "net: \"net.prototxt\"\n"
    "solver_param { base_lr: 0.01 lr_policy: \"fixed\" max_iter: 10 }\n"
    "data { name: \"train\" source { csv { path: \"d.csv\" } } }\n"
    "accept { metric: \"loss\" at_most: 1 }\n";

static mdl_fingerprint fp_of(const char *set, const char *cache) {
  mdl_job *job = NULL;
  mdl_error err;
  cr_assert_eq(mdl_job_load(tu_dir_path("job.prototxt"), MDL_KIND_AUTO, &job, &err), MDL_OK, "%s",
               err.msg);
  if (set) cr_assert_eq(mdl_job_set(job, set, &err), MDL_OK, "%s", err.msg);
  mdl_fp_inputs in = {.version = "test", .device = "cpu", .workers = 1, .cache = cache};
  mdl_fingerprint fp;
  cr_assert_eq(mdl_fingerprint_compute(job, &in, &fp, &err), MDL_OK, "%s", err.msg);
  mdl_job_free(job);
  return fp;
}

Test(ci_fp, one_field_or_one_byte_changes_it_and_says_so) {
  tu_dir_write("net.prototxt", NET);
  tu_dir_write("job.prototxt", JOB);
  tu_dir_write("d.csv", "1,2,0\n3,4,1\n");
  const char *cache = tu_dir_path("reg/hashes.tsv");
  mdl_fingerprint a = fp_of(NULL, cache);
  cr_assert_eq(a.files_hashed, 1);
  mdl_fingerprint a2 = fp_of(NULL, cache);
  cr_assert_str_eq(a.hex, a2.hex, "same inputs, same fingerprint");
  cr_assert_eq(a2.files_hashed, 0, "unchanged file read again");
  cr_assert_eq(a2.files_cached, 1, "hashed %d cached %d", a2.files_hashed, a2.files_cached);
  char *none = mdl_fingerprint_diff(&a, &a2);
  cr_assert_str_eq(none, "");
  free(none);

  mdl_fingerprint b = fp_of("base_lr=0.02", cache);
  cr_assert_str_neq(a.hex, b.hex);
  char *d = mdl_fingerprint_diff(&a, &b);
  cr_assert(strstr(d, "base_lr 0.01 \xe2\x86\x92 0.02\n"), "%s", d);
  cr_assert(!strstr(d, "data train"), "%s", d);
  free(d);

  /* one byte of the data file; same size, so the cache must notice the
   * mtime (set it explicitly: the clock may not tick between writes) */
  tu_dir_write("d.csv", "1,2,0\n3,5,1\n");
  struct timespec ts[2] = {{0, UTIME_NOW}, {12345, 0}};
  cr_assert_eq(utimensat(AT_FDCWD, tu_dir_path("d.csv"), ts, 0), 0);
  mdl_fingerprint c = fp_of(NULL, cache);
  cr_assert_str_neq(a.hex, c.hex);
  cr_assert_eq(c.files_hashed, 1);
  d = mdl_fingerprint_diff(&a, &c);
  cr_assert_str_eq(d, "data train changed\n");
  free(d);

  /* the text form round-trips */
  char *text = mdl_fingerprint_format(&b);
  mdl_fingerprint p;
  mdl_error err;
  cr_assert_eq(mdl_fingerprint_parse(text, &p, &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(p.hex, b.hex);
  d = mdl_fingerprint_diff(&p, &b);
  cr_assert_str_eq(d, "");
  free(d);
  free(text);
  mdl_fingerprint_free(&p);
  mdl_fingerprint_free(&a);
  mdl_fingerprint_free(&a2);
  mdl_fingerprint_free(&b);
  mdl_fingerprint_free(&c);
}

Test(ci_fp, registry_blessed_runs_history) {
  const char *dir = tu_dir_path("reg");
  char fp[65];
  cr_assert(!mdl_registry_blessed(dir, fp));
  mdl_error err;
  const char *x = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  cr_assert_eq(mdl_registry_put(dir, x, "summary.txt", "exit 0\n", 7, &err), MDL_OK, "%s", err.msg);
  char *text;
  cr_assert_eq(mdl_registry_get(dir, x, "summary.txt", &text, &err), MDL_OK);
  cr_assert_str_eq(text, "exit 0\n");
  free(text);
  cr_assert_eq(mdl_registry_get(dir, x, "nope", &text, &err), MDL_ERR_INVALID);
  cr_assert_eq(mdl_registry_bless(dir, x, &err), MDL_OK);
  cr_assert(mdl_registry_blessed(dir, fp));
  cr_assert_str_eq(fp, x);
  cr_assert_eq(mdl_registry_append_history(dir, "{\"a\": 1}", &err), MDL_OK);
  cr_assert_eq(mdl_registry_append_history(dir, "{\"a\": 2}", &err), MDL_OK);
  size_t len;
  char *h = tu_read(tu_dir_path("reg/history.jsonl"), &len);
  cr_assert_str_eq(h, "{\"a\": 1}\n{\"a\": 2}\n");
  free(h);
}
