/* Hostile peers and broken files (issue 10): each test plays the attacker
 * (an unauthenticated caller, a caller naming someone else's file, a worker
 * that lies in its replies) against the real worker, driver or RPC server,
 * and checks what is refused and what is said. This binary is also the
 * worker its drivers start (main() is in driver_test_util.c). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/pb.h"
#include "plan.pb-c.h"
#include "rpc.pb-c.h"
#include "runtime/dist/driver.h"
#include "runtime/dist/worker.h"
#include "runtime/rpc/rpc.h"
#include "runtime/train/trainer.h"
#include "tests/driver_test_util.h"
#include "tests/testutil.h"

#define TOKEN "a-shared-token-of-32-characters!"

TestSuite(hostile, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 30);

/* The whole of a stdio log written so far (caller frees). */
static char *log_text(FILE *f) {
  fflush(f);
  long n = ftell(f);
  char *s = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
  rewind(f);
  if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
  fseek(f, 0, SEEK_END);
  return s;
}

/* --- a worker on a thread -------------------------------------------------- */

typedef struct thr_worker {
  mdl_worker *w;
  pthread_t th;
  const char *reason;
  char addr[160];
} thr_worker;

static void *worker_thread(void *arg) {
  thr_worker *t = arg;
  mdl_error err;
  mdl_worker_run(t->w, &t->reason, &err);
  return NULL;
}

static void start_worker(thr_worker *t, mdl_worker_opts wo) {
  wo.trainers = &DT_TRAINERS;
  if (!wo.log) wo.log = stderr;
  mdl_error err;
  cr_assert_eq(mdl_worker_new(&wo, &t->w, &err), MDL_OK, "%s", err.msg);
  if (!strncmp(wo.listen, "unix:", 5))
    snprintf(t->addr, sizeof t->addr, "%s", wo.listen);
  else
    snprintf(t->addr, sizeof t->addr, "127.0.0.1:%d", mdl_worker_port(t->w));
  pthread_create(&t->th, NULL, worker_thread, t);
}

static void stop_worker(thr_worker *t) {
  mdl_worker_stop(t->w);
  pthread_join(t->th, NULL);
  mdl_worker_free(t->w);
}

static mdl_rpc_channel *channel(const char *addr, const char *token) {
  mdl_rpc_channel_opts co = {.sec = {.token = token, .token_len = token ? strlen(token) : 0}};
  mdl_rpc_channel *ch;
  mdl_error err;
  cr_assert_eq(mdl_rpc_channel_new(addr, &co, &ch, &err), MDL_OK, "%s", err.msg);
  return ch;
}

/* One call; the reply is dropped, its status and detail kept. */
static mdl_rpc_code call1(mdl_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *rd, char *detail) {
  mdl_rpc_call c;
  memset(&c, 0, sizeof c);
  c.ch = ch;
  c.method = method;
  c.req.msg = req;
  c.reply_spec.desc = rd;
  c.reply_spec.max_bytes = 1 << 20;
  c.reply_spec.bulk_field = rd == &memdl__round_reply__descriptor ? 1 : 0;
  c.wait_for_ready = true;
  mdl_error err;
  cr_assert_eq(mdl_rpc_call_all(&c, 1, 10000, NULL, &err), MDL_OK);
  if (detail) snprintf(detail, 512, "%s", c.detail);
  mdl_rpc_calls_clear(&c, 1);
  return c.code;
}

/* A valid Setup for a small "linear" plan (free with setup_free). */
typedef struct setup_msg {
  Memdl__SetupRequest req;
  Memdl__Plan *plan;
  uint8_t *bytes;
  Memdl__PartitionLineage **l;
  size_t nl;
} setup_msg;

static void setup_init(setup_msg *m) {
  dt_lin_spec s = {
      .d = 4, .parts = 1, .batch = 2, .max_iter = 100, .tau = 5, .records = 16, .lr = 0.1f};
  m->plan = dt_linear_plan(&s, "linear", 11, 0);
  size_t plen = protobuf_c_message_get_packed_size(&m->plan->base);
  m->bytes = malloc(plen);
  protobuf_c_message_pack(&m->plan->base, m->bytes);
  mdl_error err;
  cr_assert_eq(mdl_trainer_lineages(&DT_TRAINERS, "linear", m->plan, ".", 1, CAFFE__PHASE__TRAIN,
                                    &m->l, &m->nl, &err),
               MDL_OK);
  memdl__setup_request__init(&m->req);
  Memdl__SetupRequest *r = &m->req;
  r->has_plan = r->has_session = r->has_num_workers = r->has_worker_index = 1;
  r->plan.data = m->bytes;
  r->plan.len = plen;
  r->session = 42;
  r->num_workers = 1;
  r->trainer = "linear";
  r->n_train_partition = m->nl;
  r->train_partition = m->l;
}

static void setup_free(setup_msg *m) {
  mdl_trainer_lineages_free(m->l, m->nl);
  free(m->bytes);
  mdl_pb_free(m->plan);
}

/* --- ways in: who may call a worker ------------------------------------------ */

Test(hostile, a_worker_on_tcp_or_an_abstract_socket_refuses_to_start_without_authentication) {
  mdl_rpc_init();
  const char *addrs[] = {"127.0.0.1:0", "localhost:0", "unix-abstract:memdl-hostile-test"};
  for (int i = 0; i < 3; i++) {
    mdl_worker_opts wo = {.listen = addrs[i], .trainers = &DT_TRAINERS, .log = stderr};
    mdl_worker *w = NULL;
    mdl_error err;
    cr_assert_eq(mdl_worker_new(&wo, &w, &err), MDL_ERR_INVALID, "%s started unauthenticated",
                 addrs[i]);
    cr_assert_null(w);
    cr_assert(strstr(err.msg, "without authentication") && strstr(err.msg, "--token-file") &&
                  strstr(err.msg, "--insecure"),
              "%s", err.msg);
  }
  /* TLS alone does not authenticate callers: client certificates must be
   * required (here the files do not even exist: the refusal comes first) */
  mdl_worker_opts tls = {.listen = "127.0.0.1:0",
                         .sec = {.tls_cert = "x.pem", .tls_key = "x.key"},
                         .trainers = &DT_TRAINERS};
  mdl_worker *w = NULL;
  mdl_error err;
  cr_assert_eq(mdl_worker_new(&tls, &w, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "without authentication"), "%s", err.msg);

  /* --insecure serves anyway and says exactly that: no token, anyone */
  FILE *log = tmpfile();
  mdl_worker_opts in = {
      .listen = "127.0.0.1:0", .sec = {.insecure = true}, .trainers = &DT_TRAINERS, .log = log};
  cr_assert_eq(mdl_worker_new(&in, &w, &err), MDL_OK, "%s", err.msg);
  mdl_worker_free(w);
  char *text = log_text(log);
  cr_assert(strstr(text, "WARNING") && strstr(text, "without authentication") &&
                strstr(text, "no token") && !strstr(text, "the token travel"),
            "%s", text);
  free(text);
  fclose(log);

  /* with a token, or on a unix:/path socket, no complaint */
  mdl_worker_opts tok = {.listen = "127.0.0.1:0",
                         .sec = {.token = TOKEN, .token_len = strlen(TOKEN)},
                         .trainers = &DT_TRAINERS};
  cr_assert_eq(mdl_worker_new(&tok, &w, &err), MDL_OK, "%s", err.msg);
  mdl_worker_free(w);
  mdl_rpc_shutdown();
}

Test(hostile, plain_tcp_insecure_warning_names_the_token_only_when_there_is_one) {
  FILE *log = tmpfile();
  mdl_rpc_security none = {.insecure = true};
  mdl_error err;
  cr_assert_eq(mdl_rpc_check_transport("10.1.2.3:7070", &none, log, &err), MDL_OK);
  char *text = log_text(log);
  cr_assert(strstr(text, "no token") && !strstr(text, "the token travel"), "%s", text);
  free(text);
  fclose(log);
  log = tmpfile();
  mdl_rpc_security tok = {.insecure = true, .token = TOKEN, .token_len = strlen(TOKEN)};
  cr_assert_eq(mdl_rpc_check_transport("10.1.2.3:7070", &tok, log, &err), MDL_OK);
  text = log_text(log);
  cr_assert(strstr(text, "the token travel"), "%s", text);
  free(text);
  fclose(log);
}

Test(hostile, the_cli_worker_refuses_loopback_tcp_without_a_token) {
  char cmd[1200];
  char exe[1024];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  cr_assert(n > 0);
  exe[n] = 0;
  snprintf(cmd, sizeof cmd, "env -u BXFI_MAP %s --mdl-worker --listen 127.0.0.1:0 2>&1", exe);
  FILE *p = popen(cmd, "r");
  char out[2048] = {0};
  size_t got = fread(out, 1, sizeof out - 1, p);
  out[got] = 0;
  int rc = pclose(p);
  cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "exit %d: %s", rc, out);
  cr_assert(strstr(out, "without authentication"), "%s", out);
}

/* --- ways in: shared memory ------------------------------------------------ */

/* A file of the size a Setup with stride 64 for 1 worker asks for. */
static void write_victim(const char *path, mode_t mode) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, mode);
  cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
  char buf[128];
  memset(buf, 'V', sizeof buf);
  cr_assert_eq(write(fd, buf, sizeof buf), (ssize_t)sizeof buf);
  close(fd);
  chmod(path, mode);
}

static bool victim_intact(const char *path) {
  size_t len;
  char *b = tu_read(path, &len);
  bool ok = len == 128;
  for (size_t i = 0; ok && i < len; i++) ok = b[i] == 'V';
  free(b);
  return ok;
}

Test(hostile, setup_shm_path_is_refused_over_tcp) {
  mdl_rpc_init();
  thr_worker t;
  start_worker(&t, (mdl_worker_opts){.listen = "127.0.0.1:0",
                                     .sec = {.token = TOKEN, .token_len = strlen(TOKEN)}});
  const char *victim = tu_dir_path("victim");
  write_victim(victim, 0600);
  mdl_rpc_channel *ch = channel(t.addr, TOKEN);
  setup_msg m;
  setup_init(&m);
  m.req.shm_path = (char *)victim;
  m.req.has_shm_stride = 1;
  m.req.shm_stride = 64;
  char detail[512];
  cr_assert_eq(call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail),
               MDL_RPC_INVALID_ARGUMENT, "a remote caller had %s mapped", victim);
  cr_assert(strstr(detail, "shared weights refused"), "%s", detail);
  cr_assert(victim_intact(victim));
  setup_free(&m);
  mdl_rpc_channel_free(ch);
  stop_worker(&t);
  mdl_rpc_shutdown();
}

Test(hostile, setup_shm_path_only_names_a_private_file_in_the_launchers_folder) {
  mdl_rpc_init();
  char dir[] = "/tmp/mdl-hostile-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  chmod(dir, 0700);
  char sock[200], inside[200], outside[200], link[200], open_file[200];
  snprintf(sock, sizeof sock, "unix:%s/w.sock", dir);
  snprintf(inside, sizeof inside, "%s/weights", dir);
  snprintf(link, sizeof link, "%s/link", dir);
  snprintf(open_file, sizeof open_file, "%s/readable", dir);
  snprintf(outside, sizeof outside, "%s", tu_dir_path("victim"));
  write_victim(outside, 0600);
  write_victim(inside, 0600);
  write_victim(open_file, 0644);
  cr_assert_eq(symlink(outside, link), 0);

  /* a folder others may enter is not the launcher's */
  chmod(dir, 0755);
  mdl_worker_opts wo = {.listen = sock, .shm_dir = dir, .trainers = &DT_TRAINERS};
  mdl_worker *w = NULL;
  mdl_error err;
  cr_assert_eq(mdl_worker_new(&wo, &w, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "mode 0700"), "%s", err.msg);
  chmod(dir, 0700);

  thr_worker t;
  start_worker(&t, wo);
  mdl_rpc_channel *ch = channel(t.addr, NULL);
  setup_msg m;
  setup_init(&m);
  m.req.has_shm_stride = 1;
  m.req.shm_stride = 64;
  char detail[512];
  struct {
    const char *path, *says;
  } bad[] = {
      {outside, "not a file directly in"},
      {link, "shared weights"}, /* O_NOFOLLOW: ELOOP */
      {open_file, "private regular file"},
  };
  char dotdot[300];
  snprintf(dotdot, sizeof dotdot, "%s/../%s", dir, strrchr(dir, '/') + 1);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    m.req.shm_path = (char *)bad[i].path;
    cr_assert_eq(call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail),
                 MDL_RPC_INVALID_ARGUMENT, "%s was accepted", bad[i].path);
    cr_assert(strstr(detail, bad[i].says), "%s: %s", bad[i].path, detail);
  }
  m.req.shm_path = dotdot;
  cr_assert_eq(call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail),
               MDL_RPC_INVALID_ARGUMENT, "%s was accepted", dotdot);
  cr_assert(victim_intact(outside));
  /* the launcher's own file is fine */
  m.req.shm_path = inside;
  cr_assert_eq(call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail),
               MDL_RPC_OK, "%s", detail);
  setup_free(&m);
  mdl_rpc_channel_free(ch);
  stop_worker(&t);
  tu_rm_rf(dir);
  mdl_rpc_shutdown();
}

Test(hostile, shm_dir_needs_a_unix_path_socket) {
  mdl_worker_opts wo = {.listen = "127.0.0.1:0",
                        .shm_dir = tu_dir,
                        .sec = {.token = TOKEN, .token_len = strlen(TOKEN)},
                        .trainers = &DT_TRAINERS};
  mdl_worker *w = NULL;
  mdl_error err;
  cr_assert_eq(mdl_worker_new(&wo, &w, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "unix:/path"), "%s", err.msg);
}

/* --- the driver trusts no report ------------------------------------------- */

/* Runs a 2-worker job whose worker 1 tells the given lie; the driver must
 * drop it (once: no replacement), log why, and report only honest figures. */
static void run_with_a_liar(const char *lie, const char *says) {
  dt_lin_spec s = {.d = 4,
                   .parts = 2,
                   .batch = 4,
                   .max_iter = 20,
                   .tau = 5,
                   .test_interval = 10,
                   .records = 64,
                   .test_records = 32,
                   .lr = 0.05f};
  Memdl__Plan *p = dt_linear_plan(&s, "liar", 11, 2);
  setenv("MDL_TEST_LIE", lie, 1);
  FILE *log = tmpfile();
  mdl_driver_opts o = dt_opts("local:2", "liar", log);
  o.no_replace = true;
  mdl_driver_result r;
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s: %s", lie, err.msg);
  char *text = log_text(log);
  cr_assert_eq(r.faults, 1, "%s: the liar was not removed:\n%s", lie, text);
  cr_assert(strstr(text, "worker 1") && strstr(text, "removed") &&
                strstr(text, "impossible report") && strstr(text, says),
            "%s:\n%s", lie, text);
  for (size_t j = 0; j < r.n_params; j++) cr_assert(isfinite(r.weights[j]));
  for (int k = 0; k < r.n_test; k++)
    if (!strcmp(r.test[k].name, "accuracy"))
      cr_assert_float_eq(r.test[k].sum[0], 0.5, 1e-9, "%s: accuracy %g", lie, r.test[k].sum[0]);
  free(text);
  mdl_driver_result_free(&r);
  fclose(log);
  mdl_pb_free(p);
}

Test(hostile, a_worker_reporting_2_to_the_64_samples_is_removed) {
  run_with_a_liar("samples", "samples in 5 iterations");
}

Test(hostile, a_worker_reporting_a_nan_loss_is_removed) {
  run_with_a_liar("nan", "loss sum nan");
}

Test(hostile, a_worker_reporting_an_accuracy_above_1_is_removed) {
  run_with_a_liar("accuracy", "output accuracy sums to");
}

/* --- refused calls do not keep a worker alive -------------------------------- */

typedef struct knocker {
  const char *addr;
  volatile int stop;
  int refused;
} knocker;

/* Calls with a wrong token every 50 ms until told to stop (or 5 s). */
static void *knock(void *arg) {
  knocker *k = arg;
  mdl_rpc_channel_opts co = {.sec = {.token = "not-the-token-0123456789", .token_len = 24}};
  mdl_rpc_channel *ch;
  mdl_error err;
  if (mdl_rpc_channel_new(k->addr, &co, &ch, &err) != MDL_OK) return NULL;
  Memdl__StateRequest req = MEMDL__STATE_REQUEST__INIT;
  double t0 = mdl_now();
  while (!k->stop && mdl_now() - t0 < 5.0) {
    mdl_rpc_call c;
    memset(&c, 0, sizeof c);
    c.ch = ch;
    c.method = MDL_WORKER_STATE;
    c.req.msg = &req.base;
    c.reply_spec.desc = &memdl__state_reply__descriptor;
    c.reply_spec.max_bytes = 1 << 20;
    if (mdl_rpc_call_all(&c, 1, 1000, NULL, &err) == MDL_OK && c.code == MDL_RPC_UNAUTHENTICATED)
      k->refused++;
    mdl_rpc_calls_clear(&c, 1);
    usleep(50000);
  }
  mdl_rpc_channel_free(ch);
  return NULL;
}

Test(hostile, refused_calls_do_not_reset_the_workers_idle_timer) {
  mdl_rpc_init();
  thr_worker t;
  start_worker(&t, (mdl_worker_opts){.listen = "127.0.0.1:0",
                                     .sec = {.token = TOKEN, .token_len = strlen(TOKEN)},
                                     .driver_timeout_ms = 600});
  mdl_rpc_channel *ch = channel(t.addr, TOKEN);
  setup_msg m;
  setup_init(&m);
  char detail[512];
  cr_assert_eq(call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail),
               MDL_RPC_OK, "%s", detail);
  double t0 = mdl_now();
  knocker k = {.addr = t.addr};
  pthread_t th;
  pthread_create(&th, NULL, knock, &k);
  pthread_join(t.th, NULL); /* the worker's own loop ends by itself */
  double waited = mdl_now() - t0;
  k.stop = 1;
  pthread_join(th, NULL);
  cr_assert_str_eq(t.reason, "driver gone");
  cr_assert(k.refused > 0, "the knocks never reached the worker");
  cr_assert(waited < 2.5, "refused calls kept the worker alive for %.1f s", waited);
  mdl_worker_free(t.w);
  setup_free(&m);
  mdl_rpc_channel_free(ch);
  mdl_rpc_shutdown();
}

/* --- ways to hang: stalled streams ---------------------------------------- */

/* A Round head for session 42 (caller frees). */
static uint8_t *round_head(size_t *len) {
  Memdl__RoundRequest r = MEMDL__ROUND_REQUEST__INIT;
  r.has_session = r.has_tau = 1;
  r.session = 42;
  r.tau = 1;
  mdl_rpc_out o = {.msg = &r.base};
  uint8_t *p;
  mdl_error err;
  cr_assert_eq(mdl_rpc_encode_flat(&o, &p, len, &err), MDL_OK);
  return p;
}

typedef struct staller {
  const char *addr, *method;
  const uint8_t *head;
  size_t head_len;
  int hold_ms;
  mdl_rpc_code code;
  double seconds;
} staller;

static void *stall(void *arg) {
  staller *st = arg;
  mdl_rpc_channel *ch = channel(st->addr, TOKEN);
  st->code =
      mdl_rpc_test_stall_stream(ch, st->method, st->head, st->head_len, st->hold_ms, &st->seconds);
  mdl_rpc_channel_free(ch);
  return NULL;
}

static thr_worker *token_worker(thr_worker *t, int driver_timeout_ms, int stream_timeout_ms,
                                FILE *log) {
  start_worker(t, (mdl_worker_opts){.listen = "127.0.0.1:0",
                                    .sec = {.token = TOKEN, .token_len = strlen(TOKEN)},
                                    .driver_timeout_ms = driver_timeout_ms,
                                    .stream_timeout_ms = stream_timeout_ms,
                                    .keepalive_ms = 500,
                                    .keepalive_timeout_ms = 500,
                                    .log = log});
  return t;
}

Test(hostile, a_stream_whose_chunks_never_come_neither_blocks_others_nor_lasts) {
  mdl_rpc_init();
  thr_worker t;
  token_worker(&t, 60000, 1500, NULL);
  mdl_rpc_channel *ch = channel(t.addr, TOKEN);
  setup_msg m;
  setup_init(&m);
  char detail[512];
  cr_assert_eq(call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail),
               MDL_RPC_OK, "%s", detail);
  size_t hl;
  uint8_t *head = round_head(&hl);
  staller st = {
      .addr = t.addr, .method = MDL_WORKER_ROUND, .head = head, .head_len = hl, .hold_ms = 8000};
  pthread_t th;
  pthread_create(&th, NULL, stall, &st);
  usleep(400000);
  /* the driver's next call goes through while the stream waits */
  Memdl__StateRequest sr = MEMDL__STATE_REQUEST__INIT;
  sr.has_session = 1;
  sr.session = 42;
  double t0 = mdl_now();
  cr_assert_eq(call1(ch, MDL_WORKER_STATE, &sr.base, &memdl__state_reply__descriptor, detail),
               MDL_RPC_OK, "%s", detail);
  double took = mdl_now() - t0;
  pthread_join(th, NULL);
  cr_assert(took < 1.0, "a stalled stream held the worker for %.1f s", took);
  cr_assert_neq(st.code, MDL_RPC_CANCELLED, "the worker never ended the stalled stream");
  cr_assert(st.seconds < 4.0, "the stalled stream lasted %.1f s", st.seconds);
  stop_worker(&t);
  free(head);
  setup_free(&m);
  mdl_rpc_channel_free(ch);
  mdl_rpc_shutdown();
}

Test(hostile, one_setup_at_a_time) {
  mdl_rpc_init();
  thr_worker t;
  token_worker(&t, 60000, 3000, NULL);
  setup_msg m;
  setup_init(&m);
  uint8_t *bytes;
  size_t len;
  mdl_error err;
  mdl_rpc_out o = {.msg = &m.req.base};
  cr_assert_eq(mdl_rpc_encode_flat(&o, &bytes, &len, &err), MDL_OK);
  staller st = {
      .addr = t.addr, .method = MDL_WORKER_SETUP, .head = bytes, .head_len = len, .hold_ms = 5000};
  pthread_t th;
  pthread_create(&th, NULL, stall, &st);
  usleep(400000);
  mdl_rpc_channel *ch = channel(t.addr, TOKEN);
  char detail[512];
  cr_assert_eq(call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail),
               MDL_RPC_RESOURCE_EXHAUSTED, "%s", detail);
  cr_assert(strstr(detail, "in progress"), "%s", detail);
  pthread_join(th, NULL);
  /* the slot is free again once the first one ended: the worker releases
   * it when its side of the cancelled call is cleaned up, which may come a
   * moment after the client saw the cancellation */
  mdl_rpc_code rc = MDL_RPC_RESOURCE_EXHAUSTED;
  for (int i = 0; i < 40 && rc == MDL_RPC_RESOURCE_EXHAUSTED; i++) {
    if (i) usleep(50000);
    rc = call1(ch, MDL_WORKER_SETUP, &m.req.base, &memdl__setup_reply__descriptor, detail);
  }
  cr_assert_eq(rc, MDL_RPC_OK, "%s", detail);
  stop_worker(&t);
  free(bytes);
  setup_free(&m);
  mdl_rpc_channel_free(ch);
  mdl_rpc_shutdown();
}

Test(hostile, a_worker_exits_on_its_driver_timeout_whatever_its_calls_wait_for) {
  mdl_rpc_init();
  thr_worker t;
  token_worker(&t, 1000, 60000, NULL); /* never set up; a stream stalls */
  size_t hl;
  uint8_t *head = round_head(&hl);
  staller st = {
      .addr = t.addr, .method = MDL_WORKER_ROUND, .head = head, .head_len = hl, .hold_ms = 10000};
  pthread_t th;
  pthread_create(&th, NULL, stall, &st);
  double t0 = mdl_now();
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 6;
  int rc = pthread_timedjoin_np(t.th, NULL, &until);
  double waited = mdl_now() - t0;
  cr_assert_eq(rc, 0, "the worker did not exit on its 1 s driver timeout");
  cr_assert_str_eq(t.reason, "driver gone");
  cr_assert(waited < 4.0, "exited after %.1f s", waited);
  pthread_join(th, NULL);
  mdl_worker_free(t.w);
  free(head);
  mdl_rpc_shutdown();
}

/* The peer of a stalled stream stops answering (SIGSTOP): the worker's own
 * pings notice and end the call long before the stream timeout. */
Test(hostile, a_silent_peers_stream_is_ended_by_keepalive) {
  int pipefd[2];
  cr_assert_eq(pipe(pipefd), 0);
  pid_t pid = fork(); /* before gRPC starts in this process */
  if (pid == 0) {
    char addr[160] = {0};
    if (read(pipefd[0], addr, sizeof addr - 1) <= 0) _exit(1);
    mdl_rpc_init();
    size_t hl;
    uint8_t *head = round_head(&hl);
    staller st = {
        .addr = addr, .method = MDL_WORKER_ROUND, .head = head, .head_len = hl, .hold_ms = 30000};
    stall(&st);
    _exit(0);
  }
  mdl_rpc_init();
  FILE *log = tmpfile();
  thr_worker t;
  token_worker(&t, 60000, 60000, log);
  cr_assert(write(pipefd[1], t.addr, strlen(t.addr)) > 0);
  usleep(1500000); /* the child connects and its stream reaches the worker */
  kill(pid, SIGSTOP);
  double t0 = mdl_now();
  char *text = NULL;
  bool ended = false;
  while (!ended && mdl_now() - t0 < 8.0) {
    usleep(100000);
    free(text);
    text = log_text(log);
    /* the staller never half-closes, so any outcome of its Round means the
     * worker ended the call: usually "cancelled", but when the transport's
     * end reaches the handler as an empty read before the cancellation
     * does, the complete head is answered ("not set up") instead */
    ended = strstr(text, "Round") && (strstr(text, "cancel") || strstr(text, "failed"));
  }
  double took = mdl_now() - t0;
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  cr_assert(ended, "the stalled stream of a stopped peer was never ended:\n%s", text);
  cr_assert(took < 5.0, "ended after %.1f s", took);
  free(text);
  stop_worker(&t);
  fclose(log);
  mdl_rpc_shutdown();
}

/* --- TLS failures reach the driver's log at once ---------------------------- */

Test(hostile, a_refused_tls_handshake_fails_the_drivers_setup_at_once_with_its_cause) {
  if (system("openssl version >/dev/null 2>&1") != 0) cr_skip_test("openssl is not installed");
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "cd %s && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout ca.key -out ca.pem -days 1 -subj /CN=memdl-test-ca 2>/dev/null && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout other.key -out other.pem -days 1 -subj /CN=memdl-other-ca 2>/dev/null && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout srv.key -out srv.csr -subj /CN=memdl-worker 2>/dev/null && "
           "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext && "
           "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
           "-out srv.pem -days 1 -extfile ext 2>/dev/null",
           tu_dir);
  cr_assert_eq(system(cmd), 0, "openssl failed");
  const char *tf = tu_dir_write("token", TOKEN);
  chmod(tf, 0600);
  mdl_rpc_init();
  thr_worker t;
  start_worker(&t, (mdl_worker_opts){.listen = "127.0.0.1:0",
                                     .sec = {.token = TOKEN,
                                             .token_len = strlen(TOKEN),
                                             .tls_cert = tu_dir_path("srv.pem"),
                                             .tls_key = tu_dir_path("srv.key")}});
  dt_lin_spec s = {
      .d = 4, .parts = 1, .batch = 2, .max_iter = 10, .tau = 5, .records = 16, .lr = 0.1f};
  Memdl__Plan *p = dt_linear_plan(&s, "linear", 11, 0);
  FILE *log = tmpfile();
  mdl_driver_opts o = dt_opts(t.addr, "linear", log);
  o.token_file = tf;
  o.tls_ca = tu_dir_path("other.pem"); /* not the CA that signed the worker */
  mdl_driver_result r;
  mdl_error err;
  double t0 = mdl_now();
  cr_assert_neq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK);
  double took = mdl_now() - t0;
  char *text = log_text(log);
  cr_assert(took < 5.0, "the driver gave up after %.1f s (setup timeout 20 s):\n%s", took, text);
  cr_assert(strstr(text, "TLS handshake") && strstr(text, "certificate verify failed"), "%s", text);
  free(text);
  fclose(log);
  mdl_pb_free(p);
  stop_worker(&t);
  mdl_rpc_shutdown();
}
