/* The calibration figures' cache: written and read back to the bit of
 * their printed precision, ignored when the plan, the cluster or the
 * worker count changed, refused with file:line when damaged; and the
 * tuner's table made of them. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/fileio.h"
#include "runtime/dist/calibrate.h"
#include "tests/testutil.h"

TestSuite(calibrate, .init = tu_dir_setup, .fini = tu_dir_teardown);

static mdl_calibration two_workers(const char *key) {
  static mdl_calib_worker w[2];
  w[0] = (mdl_calib_worker){.sample_s = 5e-3, .comm_s = 2e-3, .samples = 192, .iterations = 3};
  w[1] = (mdl_calib_worker){
      .sample_s = 1e-3, .comm_s = 1e-3, .iter_se_s = 4e-3, .samples = 192, .iterations = 3};
  mdl_calibration c = {.n_workers = 2, .worker = w, .weight_bytes = 1724320, .worker_batch = 64};
  snprintf(c.key, sizeof c.key, "%s", key);
  return c;
}

Test(calibrate, the_cache_is_reused_only_for_its_key) {
  char key[1024], other[1024];
  mdl_calibration_key(0x1234, "local:2", 1, key, sizeof key);
  mdl_calibration_key(0x1235, "local:2", 1, other, sizeof other);
  cr_assert_str_neq(key, other, "the plan is part of the key");
  cr_assert(strstr(key, "cluster=local:2") && strstr(key, "threads=1"), "%s", key);
  mdl_calibration c = two_workers(key);
  const char *path = tu_dir_path("calibration.txt");
  mdl_error err = {0};
  cr_assert_eq(mdl_calibration_save(path, &c, &err), MDL_OK, "%s", err.msg);

  mdl_calibration back;
  bool found = false;
  cr_assert_eq(mdl_calibration_load(path, key, 2, &back, &found, &err), MDL_OK, "%s", err.msg);
  cr_assert(found);
  cr_assert_float_eq(back.worker[0].sample_s, 5e-3, 1e-12);
  cr_assert_float_eq(back.worker[1].comm_s, 1e-3, 1e-12);
  cr_assert_float_eq(back.worker[1].iter_se_s, 4e-3, 1e-12);
  cr_assert_eq(back.worker_batch, 64);
  cr_assert_float_eq(back.weight_bytes, 1724320, 0.5);
  mdl_calibration_free(&back);

  cr_assert_eq(mdl_calibration_load(path, other, 2, &back, &found, &err), MDL_OK);
  cr_assert_not(found, "another plan's figures are stale");
  cr_assert_eq(mdl_calibration_load(path, key, 3, &back, &found, &err), MDL_OK);
  cr_assert_not(found, "another worker count measures again");
  cr_assert_eq(mdl_calibration_load(tu_dir_path("none.txt"), key, 2, &back, &found, &err), MDL_OK);
  cr_assert_not(found);
}

Test(calibrate, a_damaged_cache_names_its_line) {
  char key[1024];
  mdl_calibration_key(7, "local:2", 0, key, sizeof key);
  char text[1400];
  int n =
      snprintf(text, sizeof text, "# x\nkey %s\nweights 10 batch 4\nworker 0 sample_s -1\n", key);
  const char *path = tu_dir_path("bad.txt");
  mdl_error err = {0};
  cr_assert_eq(mdl_file_write_atomic(path, text, (size_t)n, &err), MDL_OK);
  mdl_calibration back;
  bool found = true;
  cr_assert_eq(mdl_calibration_load(path, key, 1, &back, &found, &err), MDL_ERR_INVALID);
  cr_assert_not(found);
  cr_assert(strstr(err.msg, "bad.txt:4:"), "%s", err.msg);
}

/* Files written before the scatter was measured still load, as exact. */
Test(calibrate, a_cache_without_the_scatter_loads_as_exact) {
  char key[1024];
  mdl_calibration_key(7, "local:1", 0, key, sizeof key);
  char text[1400];
  int n = snprintf(text, sizeof text,
                   "# x\nkey %s\nweights 10 batch 4\nworker 0 sample_s 0.001 fixed_s 0 comm_s "
                   "0.002 samples 12 iterations 3\n",
                   key);
  const char *path = tu_dir_path("old.txt");
  mdl_error err = {0};
  cr_assert_eq(mdl_file_write_atomic(path, text, (size_t)n, &err), MDL_OK);
  mdl_calibration back;
  bool found = false;
  cr_assert_eq(mdl_calibration_load(path, key, 1, &back, &found, &err), MDL_OK, "%s", err.msg);
  cr_assert(found);
  cr_assert_float_eq(back.worker[0].sample_s, 1e-3, 1e-12);
  cr_assert_eq(back.worker[0].iter_se_s, 0);
  mdl_calibration_free(&back);
}

/* 1:5 speeds at batch 64 (64 and 320 ms an iteration) move the shares;
 * the same means measured with a scatter of 120 ms an iteration (a machine
 * busy with other work) cannot tell the workers apart: equal shares. */
Test(calibrate, a_scatter_wider_than_the_difference_keeps_equal_shares) {
  mdl_calibration c = two_workers("k");
  c.worker[0].iter_se_s = 0;
  c.worker[1].iter_se_s = 0;
  for (int noisy = 0; noisy < 2; noisy++) {
    if (noisy) c.worker[0].iter_se_s = c.worker[1].iter_se_s = 120e-3;
    mdl_tune_worker rows[2];
    mdl_tune_table t = mdl_calibration_table(&c, 0.1, 0, rows);
    cr_assert_float_eq(rows[0].iter_se_s, c.worker[0].iter_se_s, 1e-12);
    int64_t share[2];
    mdl_tune_plan p;
    mdl_tune(&t, share, &p);
    cr_assert_eq(p.balanced, !noisy, "noisy %d", noisy);
    cr_assert_eq(p.noise, noisy, "noisy %d", noisy);
    if (noisy) cr_assert(share[0] == 64 && share[1] == 64);
    char buf[2048];
    mdl_tune_explain(&t, share, &p, buf, sizeof buf);
    cr_assert(strstr(buf, noisy ? "within 2 standard errors" : "shares: by speed"), "%s", buf);
  }
  c.worker[1].iter_se_s = 4e-3; /* two_workers' figures are static */
}

Test(calibrate, the_figures_make_the_tuners_table) {
  mdl_calibration c = two_workers("k");
  mdl_tune_worker rows[2];
  mdl_tune_table t = mdl_calibration_table(&c, 0.1, 0, rows);
  cr_assert_eq(t.global_batch, 128, "two workers of the net's batch");
  int64_t share[2];
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  cr_assert_float_eq(p.comm_s, 2e-3, 1e-12, "the slowest measured round, no transfer term");
  cr_assert(p.balanced, "1:5 speeds balance");
  cr_assert_eq(share[0] + share[1], 128);
}
