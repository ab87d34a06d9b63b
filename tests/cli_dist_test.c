/* A distributed run (`--workers local:2`) behaves as a single-worker one,
 * through the built binary (issue 9): the same files under the same names
 * (folders created), the same metrics records plus one per round, progress
 * lines with lr, images/s and ETA; SIGTERM finishes the round, snapshots and
 * exits 143, and `--resume` then ends with the bits of an uninterrupted run;
 * a diverged run stops with a message naming the iteration and blob; the
 * workers show as `memdl worker` in ps. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/testutil.h"

static const char JOB[] = "jobs/fashion_mnist/job.prototxt";

TestSuite(cli_dist, .init = tu_dir_setup, .fini = tu_dir_teardown);

/* tau 5 and snapshot points on round boundaries (multiples of 5): a stop
 * after any round is a snapshot every later round starts from */
#define DIST_ARGS(out, ...)                                                                        \
  (const char *const[]) {                                                                          \
    "run", JOB, "--workers", "local:2", "--set", "sync.tau=5", "--set", "display=20", "--threads", \
        "1", "--output", out, ##__VA_ARGS__, NULL                                                  \
  }

static char *file(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  size_t len;
  return tu_read(path, &len);
}

static bool exists(const char *dir, const char *name) {
  char path[2100];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  struct stat st;
  return stat(path, &st) == 0 && st.st_size > 0;
}

static bool same_file(const char *a_dir, const char *b_dir, const char *name) {
  char pa[1024], pb[1024];
  snprintf(pa, sizeof pa, "%s/%s", a_dir, name);
  snprintf(pb, sizeof pb, "%s/%s", b_dir, name);
  size_t la, lb;
  char *a = tu_read(pa, &la), *b = tu_read(pb, &lb);
  bool same = la == lb && memcmp(a, b, la) == 0;
  free(a);
  free(b);
  return same;
}

Test(cli_dist, writes_the_single_worker_outputs_and_round_records) {
  /* a folder that does not exist yet, two levels deep */
  char out[1024];
  snprintf(out, sizeof out, "%s/new/deeper", tu_dir_path("o"));
  mdl_run_result r =
      mdl_run_memdl(DIST_ARGS(out, "--set", "max_iter=60", "--set", "snapshot=30", "--set",
                              "test_interval=30", "--set", "cluster.snapshot_rounds=4"),
                    300);
  cr_assert_eq(r.exit_code, 3, "trains, then misses the acceptance: %s", r.err);
  /* Caffe's names at the solver's snapshot points and at the end */
  cr_assert(exists(out, "lenet_iter_30.caffemodel") && exists(out, "lenet_iter_30.solverstate"),
            "%s", r.err);
  cr_assert(exists(out, "lenet_iter_60.caffemodel") && exists(out, "lenet_iter_60.solverstate"),
            "%s", r.err);
  cr_assert(exists(out, "driver.snapshot"), "snapshot_rounds into a new folder: %s", r.err);
  /* progress as single-worker: lr, images/s and ETA; the waiting share */
  cr_assert(strstr(r.err, "iter 40/60  loss "), "%s", r.err);
  cr_assert(strstr(r.err, " img/s  ETA "), "%s", r.err);
  cr_assert(strstr(strstr(r.err, "iter 40/60"), "  lr 0.00"), "%s", r.err);
  cr_assert(strstr(r.err, "on 2 workers, ") && strstr(r.err, " s, waiting "), "%s", r.err);
  mdl_run_result_free(&r);

  char *m = file(out, "metrics.jsonl");
  cr_assert(strstr(m, "\"event\": \"start\"") && strstr(m, "\"workers\": 2"), "%s", m);
  cr_assert(strstr(m, "\"overrides\": \"sync.tau=5 display=20 max_iter=60"), "%s", m);
  cr_assert(strstr(m, "\"event\": \"test\", \"iter\": 0, \"net\": 0, \"accuracy\": "), "%s", m);
  cr_assert(strstr(m, "\"event\": \"test\", \"iter\": 30, \"net\": 0"), "%s", m);
  /* and the pass's wall seconds, as single-worker test records */
  const char *t30 = strstr(m, "\"event\": \"test\", \"iter\": 30");
  const char *eol = t30 ? strchr(t30, '\n') : NULL,
             *secs = t30 ? strstr(t30, "\"seconds\": ") : NULL;
  cr_assert(secs && secs < eol && strtod(secs + 11, NULL) > 0, "%s", m);
  cr_assert(strstr(m, "\"event\": \"train\", \"iter\": 40, \"loss\": "), "%s", m);
  cr_assert(strstr(m, "\"images_per_s\": "), "%s", m);
  cr_assert(strstr(m, "\"event\": \"snapshot\", \"iter\": 30, \"caffemodel\": "), "%s", m);
  cr_assert(strstr(m, "lenet_iter_60.solverstate\"}"), "%s", m);
  /* one round record per average: 60 iterations of tau 5 */
  int rounds = 0;
  for (const char *p = m; (p = strstr(p, "\"event\": \"round\"")); p++) rounds++;
  cr_assert_eq(rounds, 12, "%s", m);
  cr_assert(strstr(m,
                   "\"event\": \"round\", \"round\": 12, \"iter\": 60, \"tau\": 5, \"workers\": "
                   "[{\"rank\": 0, \"samples\": 320, \"compute_s\": "),
            "%s", m);
  cr_assert(strstr(m, "{\"rank\": 1, \"samples\": 320, "), "%s", m);
  const char *done = strstr(m, "\"event\": \"done\", \"iter\": 60, ");
  cr_assert(done && strstr(done, "\"accepted\": false, \"wait_share\": "), "%s", m);
  free(m);

  /* a resume refused because the job changed names the field */
  char from[1100];
  snprintf(from, sizeof from, "%s/lenet_iter_30.solverstate", out);
  r = mdl_run_memdl(DIST_ARGS(out, "--set", "max_iter=60", "--set", "test_interval=30", "--set",
                              "base_lr=0.5", "--resume", from),
                    300);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "written for a job whose solver.base_lr differs"), "%s", r.err);
  mdl_run_result_free(&r);
  /* fields that cannot change the weights do not block it: display, the
   * snapshot interval, the output folder, the cluster block */
  char moved[1100];
  snprintf(moved, sizeof moved, "%s/elsewhere", tu_dir_path("o"));
  r = mdl_run_memdl(DIST_ARGS(moved, "--set", "max_iter=60", "--set", "display=10", "--set",
                              "snapshot=15", "--set", "test_interval=30", "--resume", from),
                    300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  cr_assert(strstr(r.err, "lenet_iter_30.solverstate at iteration 30"), "%s", r.err);
  mdl_run_result_free(&r);
  cr_assert(same_file(out, moved, "lenet_iter_60.caffemodel"),
            "a resume from iteration 30 ended with other weights");
}

Test(cli_dist, sigterm_then_resume_gives_the_uninterrupted_bits) {
  const char *whole = tu_dir_path("whole"), *cut = tu_dir_path("cut");
#define CUT_ARGS(out, ...)                                                                   \
  DIST_ARGS(out, "--set", "max_iter=150", "--set", "snapshot=0", "--set", "test_interval=0", \
            ##__VA_ARGS__)
  mdl_run_result r = mdl_run_memdl(CUT_ARGS(whole), 300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  mdl_run_result_free(&r);

  mdl_signal_step steps[] = {{"iter 40/", SIGHUP, 1}, {"iter 80/", SIGTERM, 1}, {NULL, 0, 0}};
  r = mdl_run_memdl_signals(CUT_ARGS(cut), 300, steps);
  cr_assert_eq(r.exit_code, 143, "%s", r.err);
  cr_assert(strstr(r.err, "stopped at iteration"), "%s", r.err);
  cr_assert(strstr(r.err, "--workers local:2` continues it"), "%s", r.err);
  cr_assert(!strstr(r.err, "done: "), "%s", r.err);
  int hup = 0, stop = 0;
  const char *s = strstr(r.err, "\nsnapshot ");
  cr_assert(s && sscanf(strstr(s, "_iter_") + 6, "%d", &hup) == 1, "%s", r.err);
  s = strstr(r.err, "stopped at iteration ");
  sscanf(s, "stopped at iteration %d", &stop);
  /* a signal that arrives between rounds stops at the round just printed */
  cr_assert(hup >= 40 && hup < stop && stop >= 80 && stop < 150 && stop % 5 == 0,
            "hup %d stop %d: %s", hup, stop, r.err);
  mdl_run_result_free(&r);
  char *m = file(cut, "metrics.jsonl");
  cr_assert(strstr(m, "\"event\": \"stopped\""), "the closing record: %s", m);
  free(m);

  /* the workers were shut down with the driver: none left on its sockets */
  r = mdl_run_memdl(CUT_ARGS(cut, "--resume"), 300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  char want[128];
  snprintf(want, sizeof want, "lenet_iter_%d.solverstate at iteration %d", stop, stop);
  cr_assert(strstr(r.err, want), "want %s: %s", want, r.err);
  mdl_run_result_free(&r);
  cr_assert(same_file(whole, cut, "lenet_iter_150.caffemodel"),
            "resumed weights differ from uninterrupted ones");

  /* --resume FILE.solverstate: from the SIGHUP's snapshot, the same bits */
  char from[1024];
  snprintf(from, sizeof from, "%s/lenet_iter_%d.solverstate", cut, hup);
  const char *again = tu_dir_path("again");
  r = mdl_run_memdl(CUT_ARGS(again, "--resume", from), 300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  mdl_run_result_free(&r);
  cr_assert(same_file(whole, again, "lenet_iter_150.caffemodel"),
            "resumed from the SIGHUP snapshot: other weights");
#undef CUT_ARGS
}

Test(cli_dist, a_diverged_run_stops_naming_iteration_and_blob) {
  mdl_run_result r =
      mdl_run_memdl((const char *const[]){"run", JOB, "--set", "base_lr=1000", "--set",
                                          "max_iter=60", "--workers", "local:2", "--threads", "1",
                                          "--output", tu_dir_path("div"), NULL},
                    300);
  cr_assert_eq(r.exit_code, 1, "%s", r.err);
  cr_assert(strstr(r.err, "training diverged at iteration "), "%s", r.err);
  cr_assert(strstr(r.err, "first non-finite value: "), "%s", r.err);
  /* the job's fault, not a worker's: nobody replaced, no model saved */
  cr_assert(!strstr(r.err, "replaced") && !strstr(r.err, "keep failing"), "%s", r.err);
  cr_assert(!strstr(r.err, ".caffemodel"), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(cli_dist, resume_with_nothing_to_continue_is_an_error) {
  /* as a single-worker --resume; before any worker starts */
  mdl_run_result r = mdl_run_memdl(DIST_ARGS(tu_dir_path("empty"), "--resume"), 60);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "--resume: no ") && strstr(r.err, "lenet_iter_N.solverstate or "), "%s",
            r.err);
  cr_assert(!strstr(r.err, "listening"), "%s", r.err);
  mdl_run_result_free(&r);
}

/* A /proc file (its size reads as 0, so read to the end); "" when gone. */
static size_t read_proc(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "r");
  size_t len = f ? fread(buf, 1, cap - 1, f) : 0;
  if (f) fclose(f);
  buf[len] = 0;
  return len;
}

/* The pids whose parent is ppid (from /proc/PID/stat). */
static int children(pid_t ppid, pid_t *out, int cap) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) && n < cap) {
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    if (!read_proc(path, buf, sizeof buf)) continue;
    const char *rp = strrchr(buf, ')'); /* the name may hold spaces */
    int pp;
    if (rp && sscanf(rp + 2, "%*c %d", &pp) == 1 && pp == ppid) out[n++] = atoi(e->d_name);
  }
  if (d) closedir(d);
  return n;
}

Test(cli_dist, local_workers_show_as_memdl_worker) {
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    if (!freopen("/dev/null", "w", stderr)) _exit(127);
    execl("./memdl", "./memdl", "run", JOB, "--workers", "local:2", "--set", "max_iter=2000",
          "--set", "test_interval=0", "--threads", "1", "--output", tu_dir_path("ps"), (char *)0);
    _exit(127);
  }
  pid_t kids[8];
  int n = 0;
  char cmd[2][512] = {"", ""};
  char comm[2][64] = {"", ""};
  for (int tries = 0; tries < 300 && n < 2; tries++) { /* up to 30 s */
    usleep(100000);
    n = children(pid, kids, 8);
  }
  for (int i = 0; i < n && i < 2; i++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)kids[i]);
    /* between fork and exec the child still has the driver's argv, and
     * until the worker names its thread the kernel's "exe" */
    size_t len = 0;
    char comm_path[64];
    snprintf(comm_path, sizeof comm_path, "/proc/%d/comm", (int)kids[i]);
    for (int t = 0; t < 200; t++, usleep(50000)) {
      len = read_proc(path, cmd[i], sizeof cmd[i]);
      read_proc(comm_path, comm[i], sizeof comm[i]);
      if (strncmp(cmd[i], "memdl", 6) == 0 && strncmp(comm[i], "memdl worker", 12) == 0) break;
    }
    for (size_t k = 0; k + 1 < len; k++) /* NUL-separated arguments, as ps joins them */
      if (!cmd[i][k]) cmd[i][k] = ' ';
  }
  kill(pid, SIGTERM);
  int status;
  waitpid(pid, &status, 0);
  cr_assert_eq(n, 2, "two worker processes");
  for (int i = 0; i < 2; i++) {
    cr_assert(strncmp(cmd[i], "memdl worker --listen unix:", 27) == 0, "ps shows: %s", cmd[i]);
    cr_assert(strncmp(comm[i], "memdl worker", 12) == 0, "comm: %s", comm[i]);
  }
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 143, "status %d", status);
}

/* --weights starts a distributed run from a model file: at a zero learning
 * rate its weights come back bit for bit; without it they do not. */
Test(cli_dist, weights_start_the_run_from_a_model) {
  const char *first = tu_dir_path("first"), *tuned = tu_dir_path("tuned"),
             *fresh = tu_dir_path("fresh");
#define STILL(out, ...)                                                                      \
  DIST_ARGS(out, "--set", "max_iter=10", "--set", "snapshot=0", "--set", "test_interval=0",  \
            "--set", "base_lr=0", "--set", "momentum=0", "--set", "weight_decay=0", "--set", \
            "random_seed=3", ##__VA_ARGS__)
  mdl_run_result r = mdl_run_memdl(
      (const char *const[]){"run", JOB, "--set", "max_iter=10", "--set", "snapshot=0", "--set",
                            "test_interval=0", "--threads", "1", "--output", first, NULL},
      300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  mdl_run_result_free(&r);
  char model[1024];
  snprintf(model, sizeof model, "%s/lenet_iter_10.caffemodel", first);
  r = mdl_run_memdl(STILL(tuned, "--weights", model), 300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  cr_assert(strstr(r.err, "weights: "), "%s", r.err);
  mdl_run_result_free(&r);
  cr_assert(same_file(first, tuned, "lenet_iter_10.caffemodel"),
            "a distributed run at lr 0 did not keep the --weights it started from");
  r = mdl_run_memdl(STILL(fresh), 300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  mdl_run_result_free(&r);
  cr_assert(!same_file(first, fresh, "lenet_iter_10.caffemodel"), "the check cannot fail");
  /* a file that is no model is refused before any worker starts */
  r = mdl_run_memdl(STILL(fresh, "--weights", JOB), 300);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  mdl_run_result_free(&r);
#undef STILL
}
