/* The Slurm and MPI launch environments read from fake variables: host
 * lists, who drives and who serves on which address, and the transport
 * policy every rank checks before anything starts (runtime/dist/
 * cluster_env.h). The real launchers: launch_mpi_test, launch_slurm_test. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/dist/cluster_env.h"
#include "runtime/rpc/rpc.h"
#include "tests/testutil.h"

typedef struct fake_env {
  const char *kv[32][2];
} fake_env;

static const char *fake_get(void *ctx, const char *name) {
  fake_env *e = ctx;
  for (int i = 0; i < 32 && e->kv[i][0]; i++)
    if (!strcmp(e->kv[i][0], name)) return e->kv[i][1];
  return NULL;
}

Test(launch_env, slurm_host_lists_expand) {
  char **h;
  int n;
  mdl_error err;
  cr_assert_eq(mdl_slurm_hostlist("n[01-03,07],gpu5,x[1-2]-ib", &h, &n, &err), MDL_OK, "%s",
               err.msg);
  const char *want[] = {"n01", "n02", "n03", "n07", "gpu5", "x1-ib", "x2-ib"};
  cr_assert_eq(n, 7);
  for (int i = 0; i < n; i++) {
    cr_assert_str_eq(h[i], want[i]);
    free(h[i]);
  }
  free(h);
  cr_assert_eq(mdl_slurm_hostlist("a[1-2]b[3-4]", &h, &n, &err), MDL_OK);
  cr_assert_eq(n, 4);
  cr_assert_str_eq(h[3], "a2b4");
  for (int i = 0; i < n; i++) free(h[i]);
  free(h);
  cr_assert_eq(mdl_slurm_hostlist("n[1-", &h, &n, &err), MDL_ERR_INVALID);
  cr_assert_eq(mdl_slurm_hostlist("n[3-1]", &h, &n, &err), MDL_ERR_INVALID);
  int *c;
  cr_assert_eq(mdl_slurm_tasks_per_node("2(x3),1", 4, &c, &err), MDL_OK);
  cr_assert(c[0] == 2 && c[1] == 2 && c[2] == 2 && c[3] == 1);
  free(c);
  cr_assert_eq(mdl_slurm_tasks_per_node("2(x3)", 4, &c, &err), MDL_ERR_INVALID);
  cr_assert_eq(mdl_slurm_tasks_per_node("2(y3)", 3, &c, &err), MDL_ERR_INVALID);
}

Test(launch_env, slurm_rank_zero_drives_and_the_others_serve) {
  fake_env e = {{{"SLURM_PROCID", "0"},
                 {"SLURM_NTASKS", "4"},
                 {"SLURM_LOCALID", "0"},
                 {"SLURM_STEP_NODELIST", "node[1-2]"},
                 {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"}}};
  mdl_cluster_env ce;
  mdl_error err;
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ce.kind, MDL_LAUNCH_SLURM);
  cr_assert_eq(ce.rank, 0);
  cr_assert_null(ce.listen);
  cr_assert_eq(ce.n_workers, 3);
  /* rank 1 shares rank 0's node: a Unix socket, no network */
  char want[200];
  snprintf(want, sizeof want, "unix:/tmp/memdl-launch-%u-p7070/rank1.sock", geteuid());
  cr_assert_str_eq(ce.workers[0], want);
  cr_assert(ce.same_node[0] && !ce.same_node[1] && !ce.same_node[2]);
  cr_assert_eq(ce.n_same_node, 1);
  cr_assert_str_eq(ce.worker_hosts[1], "node2");
  cr_assert_str_eq(ce.workers[1], "node2:7070");
  cr_assert_str_eq(ce.workers[2], "node2:7071");
  mdl_cluster_env_free(&ce);
  e.kv[0][1] = "3";
  e.kv[2][1] = "1";
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ce.rank, 3);
  cr_assert_str_eq(ce.listen, "0.0.0.0:7071");
  mdl_cluster_env_free(&ce);
  /* a cyclic distribution puts rank 3 elsewhere: refused, not guessed */
  e.kv[2][1] = "0";
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "block distribution"), "%s", err.msg);
  /* MEMDL_PORT moves the base port; a single task is no cluster */
  fake_env one = {{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}};
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &one, 7070, &ce, &err), MDL_OK);
  cr_assert_eq(ce.kind, MDL_LAUNCH_NONE);
  fake_env none = {{{NULL, NULL}}};
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &none, 7070, &ce, &err), MDL_OK);
  cr_assert_eq(ce.kind, MDL_LAUNCH_NONE);
  fake_env port = {{{"SLURM_PROCID", "1"},
                    {"SLURM_NTASKS", "2"},
                    {"SLURM_STEP_NODELIST", "a,b"},
                    {"MEMDL_PORT", "9000"}}};
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &port, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(ce.workers[0], "b:9000");
  cr_assert_str_eq(ce.listen, "0.0.0.0:9000");
  mdl_cluster_env_free(&ce);
  fake_env bad = {{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "2"}}};
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &bad, 7070, &ce, &err), MDL_ERR_INVALID);
}

Test(launch_env, mpi_ranks_on_one_host_or_named_hosts) {
  fake_env e = {{{"OMPI_COMM_WORLD_RANK", "2"},
                 {"OMPI_COMM_WORLD_SIZE", "3"},
                 {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                 {"OMPI_COMM_WORLD_LOCAL_SIZE", "3"},
                 /* MPI wins over the Slurm allocation mpirun runs inside */
                 {"SLURM_PROCID", "0"},
                 {"SLURM_NTASKS", "1"}}};
  mdl_cluster_env ce;
  mdl_error err;
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ce.kind, MDL_LAUNCH_MPI);
  cr_assert_str_eq(ce.listen, ce.workers[1]);
  cr_assert(strstr(ce.workers[0], "/rank1.sock") && !strncmp(ce.workers[0], "unix:/tmp/", 10), "%s",
            ce.workers[0]);
  cr_assert_eq(ce.n_same_node, 2);
  mdl_cluster_env_free(&ce);
  e.kv[3][1] = "1"; /* spans hosts: they must be named */
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "MEMDL_HOSTS"), "%s", err.msg);
  e.kv[2][1] = "0";
  e.kv[6][0] = "MEMDL_HOSTS";
  e.kv[6][1] = "h[1-3]";
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(ce.workers[0], "h2:7070");
  cr_assert_str_eq(ce.workers[1], "h3:7070");
  mdl_cluster_env_free(&ce);
  fake_env pmi = {{{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"MPI_LOCALNRANKS", "2"}}};
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &pmi, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ce.kind, MDL_LAUNCH_MPI);
  cr_assert(!strncmp(ce.workers[0], "unix:", 5), "%s", ce.workers[0]);
  mdl_cluster_env_free(&ce);
}

/* Slurm: ranks 0-1 on node1, 2-3 on node2 (rank is the caller's). */
static fake_env two_nodes(const char *rank, const char *localid) {
  fake_env e = {{{"SLURM_PROCID", rank},
                 {"SLURM_NTASKS", "4"},
                 {"SLURM_LOCALID", localid},
                 {"SLURM_JOB_ID", "77"},
                 {"SLURM_STEP_ID", "0"},
                 {"SLURM_STEP_NODELIST", "node[1-2]"},
                 {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"}}};
  return e;
}

Test(launch_env, one_node_needs_no_tls_and_says_so) {
  fake_env e = {{{"SLURM_PROCID", "0"},
                 {"SLURM_NTASKS", "3"},
                 {"SLURM_JOB_ID", "12"},
                 {"SLURM_STEP_ID", "3"},
                 {"SLURM_STEP_NODELIST", "solo"}}};
  mdl_cluster_env ce;
  mdl_error err;
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ce.n_same_node, 2);
  char want[200];
  snprintf(want, sizeof want, "/tmp/memdl-launch-%u-12.3", geteuid());
  cr_assert_str_eq(ce.sock_dir, want);
  mdl_launch_sec s = {0};
  char report[1024];
  cr_assert_eq(mdl_cluster_env_check(&ce, &s, report, sizeof report, &err), MDL_OK, "%s", err.msg);
  cr_assert(strstr(report, "launch (Slurm, 3 ranks): rank 0 drives on solo"), "%s", report);
  cr_assert(strstr(report, "ranks 1-2 serve on Unix sockets in /tmp/memdl-launch-"), "%s", report);
  cr_assert(strstr(report, "(no network)"), "%s", report);
  mdl_cluster_env_free(&ce);
}

Test(launch_env, other_nodes_need_tls_and_a_token_or_insecure) {
  mdl_error err;
  mdl_cluster_env ce;
  char report[1024];
  for (int rank = 0; rank < 4; rank++) { /* every rank reaches the same verdict */
    char r[8], l[8];
    snprintf(r, sizeof r, "%d", rank);
    snprintf(l, sizeof l, "%d", rank % 2);
    fake_env e = two_nodes(r, l);
    cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
    mdl_launch_sec s = {0};
    cr_assert_eq(mdl_cluster_env_check(&ce, &s, report, sizeof report, &err), MDL_ERR_INVALID);
    cr_assert(strstr(err.msg, "rank(s) 2-3 on node2") && strstr(err.msg, "--tls-dir") &&
                  strstr(err.msg, "--insecure"),
              "%s", err.msg);
    s.insecure = true;
    cr_assert_eq(mdl_cluster_env_check(&ce, &s, report, sizeof report, &err), MDL_OK);
    cr_assert(strstr(report, "ranks 2-3 on node2 serve TCP in clear (--insecure), WITHOUT a token"),
              "%s", report);
    cr_assert(strstr(report, "rank 1 serves on Unix sockets"), "%s", report);
    mdl_cluster_env_free(&ce);
  }
  /* TLS without a token: anyone who reaches the port could still call */
  fake_env e = two_nodes("0", "0");
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  mdl_launch_sec s = {.ca = "/nonexistent/ca.pem"};
  cr_assert_eq(mdl_cluster_env_check(&ce, &s, report, sizeof report, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "token"), "%s", err.msg);
  s.token_file = "/nonexistent/token";
  cr_assert_eq(mdl_cluster_env_check(&ce, &s, report, sizeof report, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "/nonexistent/ca.pem"), "%s", err.msg);
  mdl_cluster_env_free(&ce);
}

TestSuite(launch_certs, .init = tu_dir_setup, .fini = tu_dir_teardown);

Test(launch_certs, a_certs_folder_serves_every_rank_and_names_a_missing_node) {
  const char *dir = tu_dir_path("certs");
  const char *only_node1[] = {"node1"};
  mdl_error err;
  FILE *log = tmpfile();
  cr_assert_eq(mdl_rpc_certs_make(dir, only_node1, 1, 30, log, &err), MDL_OK, "%s", err.msg);
  struct stat st;
  cr_assert_eq(stat(dir, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0700);
  cr_assert_eq(stat(tu_dir_path("certs/node1.key"), &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0600);
  cr_assert_eq(stat(tu_dir_path("certs/token"), &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0600);

  mdl_cluster_env ce;
  fake_env e = two_nodes("0", "0");
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  mdl_launch_sec s = {.tls_dir = strdup(dir)};
  mdl_launch_sec_from_dir(&s, ce.host, false);
  cr_assert_str_eq(s.ca, tu_dir_path("certs/ca.pem"));
  cr_assert_str_eq(s.token_file, tu_dir_path("certs/token"));
  cr_assert_null(s.cert, "rank 0 presents no certificate unless clients must");
  char report[1024];
  cr_assert_eq(mdl_cluster_env_check(&ce, &s, report, sizeof report, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "rank 2 on node2 has no certificate") && strstr(err.msg, "memdl certs"),
            "%s", err.msg);
  /* adding the node later keeps the CA, so node1's certificate still holds */
  const char *node2[] = {"node2"};
  size_t ca_len;
  char *ca_before = tu_read(tu_dir_path("certs/ca.pem"), &ca_len);
  cr_assert_eq(mdl_rpc_certs_make(dir, node2, 1, 30, log, &err), MDL_OK, "%s", err.msg);
  char *ca_after = tu_read(tu_dir_path("certs/ca.pem"), &ca_len);
  cr_assert_str_eq(ca_before, ca_after);
  cr_assert_eq(mdl_cluster_env_check(&ce, &s, report, sizeof report, &err), MDL_OK, "%s", err.msg);
  cr_assert(strstr(report, "ranks 2-3 on node2 serve TCP with TLS, with a token"), "%s", report);
  mdl_launch_sec_free(&s);
  mdl_cluster_env_free(&ce);

  /* a serving rank finds its own node's certificate */
  fake_env e3 = two_nodes("3", "1");
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e3, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  mdl_launch_sec s3 = {.tls_dir = strdup(dir)};
  mdl_launch_sec_from_dir(&s3, ce.host, true);
  cr_assert_str_eq(s3.cert, tu_dir_path("certs/node2.pem"));
  cr_assert_str_eq(s3.key, tu_dir_path("certs/node2.key"));
  cr_assert_eq(mdl_cluster_env_check(&ce, &s3, NULL, 0, &err), MDL_OK, "%s", err.msg);
  mdl_launch_sec_free(&s3);
  mdl_cluster_env_free(&ce);
  const char *bad[] = {"../escape"};
  cr_assert_eq(mdl_rpc_certs_make(dir, bad, 1, 30, log, &err), MDL_ERR_INVALID);
  free(ca_before);
  free(ca_after);
  fclose(log);
}

Test(launch_env, the_socket_folder_must_be_ours_alone) {
  char job[32];
  snprintf(job, sizeof job, "t%d", (int)getpid());
  fake_env e = {{{"SLURM_PROCID", "1"},
                 {"SLURM_NTASKS", "2"},
                 {"SLURM_JOB_ID", job},
                 {"SLURM_STEP_NODELIST", "solo"},
                 {"SLURM_STEP_TASKS_PER_NODE", "2"}}};
  mdl_cluster_env ce;
  mdl_error err;
  cr_assert_eq(mdl_cluster_env_detect(fake_get, &e, 7070, &ce, &err), MDL_OK, "%s", err.msg);
  char want[200];
  snprintf(want, sizeof want, "unix:/tmp/memdl-launch-%u-%s/rank1.sock", geteuid(), job);
  cr_assert_str_eq(ce.listen, want);
  cr_assert_eq(mdl_cluster_env_make_sock_dir(&ce, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_cluster_env_make_sock_dir(&ce, &err), MDL_OK, "a second rank: %s", err.msg);
  struct stat st;
  cr_assert_eq(lstat(ce.sock_dir, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0700);
  chmod(ce.sock_dir, 0755); /* open to others: refused, not used */
  mdl_status got = mdl_cluster_env_make_sock_dir(&ce, &err);
  rmdir(ce.sock_dir);
  cr_assert_eq(got, MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "mode 0700"), "%s", err.msg);
  cr_assert_eq(symlink("/tmp", ce.sock_dir), 0); /* someone else's link: refused */
  got = mdl_cluster_env_make_sock_dir(&ce, &err);
  unlink(ce.sock_dir);
  cr_assert_eq(got, MDL_ERR_INVALID);
  mdl_cluster_env_free(&ce);
}
