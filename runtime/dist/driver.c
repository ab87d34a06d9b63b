/* The driver's round loop and its result (see driver.h): the run's steps
 * in order, each round's Round calls and average, TEST passes, acceptance.
 * The workers (driver_workers.c), files (driver_snapshot.c) and the
 * average itself (average.c) live beside it. The driver is single-threaded:
 * gRPC completions are consumed inside mdl_rpc_call_all, so nothing here
 * needs a lock. */
#define _GNU_SOURCE
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/pb.h"
#include "runtime/dist/driver_impl.h"
#include "runtime/train/accept.h"

/* --- RPC plumbing ------------------------------------------------------------ */

/* Reply weights go straight into the slot's buffer once their size is right. */
void *mdl_driver_recv_dest(void *ctx, size_t len, mdl_error *err) {
  recv_ctx *r = ctx;
  if (len != r->bytes) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes, expected %zu", len, r->bytes);
    return NULL;
  }
  return r->s->recv;
}

/* --- rounds ------------------------------------------------------------------- */

void mdl_driver_round_request(driver *d, int tau, Memdl__RoundRequest *req) {
  memdl__round_request__init(req);
  req->has_session = req->has_round = req->has_iter_start = req->has_tau = 1;
  req->session = d->session;
  req->round = (uint32_t)d->round;
  req->iter_start = (uint32_t)d->iter;
  req->tau = (uint32_t)tau;
  req->has_weights_in_shm = req->weights_in_shm = d->shm;
}

void mdl_driver_round_calls(driver *d, slot *const *act, int n, const Memdl__RoundRequest *req,
                            const Memdl__RoundRequest *req0, bool send_w, mdl_rpc_call *calls,
                            recv_ctx *rc) {
  for (int i = 0; i < n; i++) {
    call_init(d, &calls[i], act[i], MDL_WORKER_ROUND, i == 0 && req0 ? &req0->base : &req->base,
              &memdl__round_reply__descriptor);
    calls[i].reply_spec.max_bytes = MDL_WORKER_MAX_SMALL_BYTES;
    calls[i].reply_spec.bulk_field = 1; /* RoundReply.weights */
    if (d->shm) continue;               /* weights stay in shared memory */
    if (send_w) {
      calls[i].req.bulk_field = 5; /* RoundRequest.weights */
      calls[i].req.bulk = d->w;
      calls[i].req.bulk_len = d->n_params * sizeof(float);
      calls[i].req.pin = d->w_pin;
      d->res->weights_sent += calls[i].req.bulk_len;
    }
    rc[i] = (recv_ctx){act[i], d->n_params * sizeof(float)};
    calls[i].reply_spec.bulk_dest = mdl_driver_recv_dest;
    calls[i].reply_spec.bulk_ctx = &rc[i];
  }
}

static void print_round(driver *d, int tau, double wall, double avg_s, slot *const *done, int n,
                        double loss) {
  if (d->o.quiet) return;
  /* one line per `display` iterations, as Caffe's loop prints (every round
   * when the solver does not say) */
  int disp = d->plan->solver->display;
  if (disp > 0 && d->iter / disp == (d->iter - tau) / disp && d->iter < d->max_iter) return;
  double comp = 0, comm = 0, wait = 0;
  uint64_t total = 0;
  for (int i = 0; i < n; i++) total += done[i]->samples;
  char per[1024];
  size_t off = 0;
  per[0] = 0;
  for (int i = 0; i < n; i++) {
    slot *s = done[i];
    double c = s->compute_s, m = s->rtt_s - s->compute_s, w = wall - s->rtt_s;
    if (m < 0) m = 0;
    comp += c;
    comm += m;
    wait += w;
    if (off < sizeof per - 64)
      off += (size_t)snprintf(per + off, sizeof per - off, " w%d %.0f%% %.3f/%.3f/%.3f", s->index,
                              total ? 100.0 * (double)s->samples / (double)total : 0.0, c, m, w);
  }
  comp /= n;
  comm /= n;
  wait /= n;
  fprintf(d->log,
          "round %d iter %d-%d (tau %d, %d workers) %.3f s: compute %.3f, communication %.3f, "
          "waiting %.3f, averaging %.3f; loss %.6g; share compute/comm/wait:%s\n",
          d->round, d->iter - tau, d->iter, tau, n, wall, comp, comm, wait, avg_s, loss, per);
  fflush(d->log);
}

/* --- what workers report ------------------------------------------------------ */

/* Whether n output sums over `count` iterations or batches are possible:
 * finite, and inside count times the output's range where the trainer
 * knows it. why says which is not. */
static bool outputs_ok(const driver *d, Caffe__Phase phase, Memdl__OutputSum *const *o, size_t n,
                       uint64_t count, char *why, size_t cap) {
  for (size_t k = 0; k < n; k++) {
    const char *name = o[k]->name ? o[k]->name : "";
    for (size_t e = 0; e < o[k]->n_sum; e++)
      if (!isfinite(o[k]->sum[e])) {
        snprintf(why, cap, "impossible report: output %.100s[%zu] is %g", name, e, o[k]->sum[e]);
        return false;
      }
    double lo, hi;
    if (o[k]->n_sum != 1 || !d->model || !mdl_trainer_output_range(d->model, phase, name, &lo, &hi))
      continue;
    /* the sum of count values in [lo, hi], with room for rounding */
    double v = o[k]->sum[0], c = (double)count, tol = 1e-6 * (c > 1 ? c : 1);
    if (v < lo * c - tol || v > hi * c + tol) {
      snprintf(why, cap, "impossible report: output %.100s sums to %g over %llu, each in [%g, %g]",
               name, v, (unsigned long long)count, lo, hi);
      return false;
    }
  }
  return true;
}

/* Whether a Round reply's figures are possible for tau iterations: at most
 * tau batches of samples, finite loss and time, outputs in range. A worker
 * that says otherwise is lying or broken, and its figures would skew the
 * average (weighted by samples) and what the run reports. */
static bool round_report_ok(const driver *d, const slot *s, const Memdl__RoundReply *r, int tau,
                            char *why, size_t cap) {
  uint64_t batch = s->batch ? s->batch : d->train_batch;
  if (batch && r->samples > (uint64_t)tau * batch) {
    snprintf(why, cap, "impossible report: %llu samples in %d iterations of %llu",
             (unsigned long long)r->samples, tau, (unsigned long long)batch);
    return false;
  }
  if (!isfinite(r->loss_sum) || !isfinite(r->compute_seconds) || r->compute_seconds < 0) {
    snprintf(why, cap, "impossible report: loss sum %g, %g s of compute", r->loss_sum,
             r->compute_seconds);
    return false;
  }
  return outputs_ok(d, CAFFE__PHASE__TRAIN, r->output, r->n_output, (uint64_t)tau, why, cap);
}

/* The same for a Test reply to a request for `asked` batches (0: each
 * partition once). */
static bool test_report_ok(const driver *d, const Memdl__TestReply *r, uint32_t asked, char *why,
                           size_t cap) {
  if (asked > 0 && r->batches > asked) {
    snprintf(why, cap, "impossible report: %llu test batches, %u asked",
             (unsigned long long)r->batches, asked);
    return false;
  }
  if (d->test_batch && r->samples > r->batches * d->test_batch) {
    snprintf(why, cap, "impossible report: %llu test samples in %llu batches of %llu",
             (unsigned long long)r->samples, (unsigned long long)r->batches,
             (unsigned long long)d->test_batch);
    return false;
  }
  if (!isfinite(r->compute_seconds) || r->compute_seconds < 0) {
    snprintf(why, cap, "impossible report: %g s of compute", r->compute_seconds);
    return false;
  }
  return outputs_ok(d, CAFFE__PHASE__TEST, r->output, r->n_output, r->batches, why, cap);
}

/* A round's end: the average (checked for NaN and infinity with the
 * single-worker run's checker: never go on from, or save, weights that
 * diverged), the books, the round line and record. The average is the
 * star's over ws, or with peers the members' own: peer_avg when a member
 * returned it, else none here (the members checked it; d->w stays behind
 * until mdl_driver_weights). */
static mdl_status close_round(driver *d, int tau, double wall, slot *const *done,
                              const float *const *ws, const uint64_t *samples, int m, double loss,
                              uint64_t iters, bool peer, const float *peer_avg, mdl_error *err) {
  double a0 = mdl_now();
  if (peer_avg)
    memcpy(d->w, peer_avg, d->n_params * sizeof(float));
  else if (!peer)
    mdl_driver_average(d->w, ws, samples, m, d->n_params);
  double avg_s = mdl_now() - a0;
  if ((!peer || peer_avg) && d->model) {
    char when[64];
    snprintf(when, sizeof when, "by iteration %d (round %d)", d->iter + tau, d->round + 1);
    mdl_status st = mdl_trainer_check_average(d->model, d->w, when, err);
    if (st != MDL_OK) return st;
  }
  d->iter += tau;
  d->round++;
  d->rounds_here++;
  d->res->rounds++;
  d->res->average_s += avg_s;
  for (int i = 0; i < m; i++) {
    const slot *s = done[i];
    d->res->compute_s += s->compute_s / m;
    d->res->comm_s += (s->rtt_s > s->compute_s ? s->rtt_s - s->compute_s : 0) / m;
    d->res->wait_s += (wall - s->rtt_s) / m;
  }
  double mean_loss = iters ? loss / (double)iters : 0;
  print_round(d, tau, wall, avg_s, done, m, mean_loss);
  mdl_driver_report_round(d, tau, done, m, wall, mean_loss);
  if (d->o.on_round) {
    int pids[d->k];
    for (int i = 0; i < d->k; i++)
      pids[i] = d->lw && d->s[i].alive ? (int)mdl_local_workers_pid(d->lw, i) : 0;
    mdl_driver_progress p = {d->round, d->iter, d->k, d->lw ? pids : NULL, mean_loss};
    d->o.on_round(d->o.on_round_ctx, &p);
  }
  return MDL_OK;
}

/* One round of tau iterations on the live workers, redone without those
 * that fail. want_w: the driver reads d->w right after it (peer averaging
 * then has the average returned; otherwise it stays with the members). */
static mdl_status run_round(driver *d, int tau, bool want_w, mdl_error *err) {
  for (int attempt = 0; attempt <= d->k; attempt++) {
    slot **act = mdl_xcalloc((size_t)d->k, sizeof *act);
    int n = 0;
    for (int i = 0; i < d->k; i++)
      if (d->s[i].alive && d->s[i].n_train > 0) act[n++] = &d->s[i];
    if (n == 0) {
      free(act);
      return mdl_errorf(err, MDL_ERR_INTERNAL, "no live worker holds training data");
    }
    /* peer averaging: members that all kept the last average start from
     * it; otherwise (a worker back, or the star) it travels from d->w */
    bool from_kept = d->peer && mdl_driver_peer_from_kept(d, act, n);
    mdl_status wst = from_kept ? MDL_OK : mdl_driver_weights(d, err);
    if (wst != MDL_OK) {
      free(act);
      return wst;
    }
    Memdl__RoundRequest req, req0;
    mdl_driver_round_request(d, tau, &req);
    if (d->peer) mdl_driver_peer_round(d, act, n, from_kept, want_w, &req, &req0);
    bool send_w = !from_kept;
    mdl_rpc_call *calls = mdl_xcalloc((size_t)n, sizeof *calls);
    recv_ctx *rc = mdl_xcalloc((size_t)n, sizeof *rc);
    mdl_driver_round_calls(d, act, n, &req, d->peer ? &req0 : NULL, send_w, calls, rc);
    double t0 = mdl_now();
    mdl_status st = mdl_rpc_call_all(calls, n, d->round_timeout_ms, d->abort, err);
    double wall = mdl_now() - t0;
    mdl_rpc_pin_wait(d->w_pin); /* gRPC may still hold slices of d->w */
    slot **done = mdl_xcalloc((size_t)n, sizeof *done);
    const float **ws = mdl_xcalloc((size_t)n, sizeof *ws);
    uint64_t *samples = mdl_xcalloc((size_t)n, sizeof *samples);
    int m = 0;
    double loss = 0;
    uint64_t iters = 0;
    slot **failed = mdl_xcalloc((size_t)n, sizeof *failed);
    char(*why)[600] = mdl_xcalloc((size_t)n, sizeof *why);
    int n_failed = 0, n_blamed = 0; /* blamed: failed because of another member */
    for (int i = 0; st == MDL_OK && i < n; i++) {
      slot *s = act[i];
      const Memdl__RoundReply *r = (const Memdl__RoundReply *)calls[i].reply;
      bool weights_ok = d->shm ? r && r->weights_in_shm && calls[i].bulk_len == 0
                               : calls[i].bulk_len == d->n_params * sizeof(float);
      /* with peers only act[0] returns the average, and only when asked */
      if (d->peer && (i > 0 || !want_w)) weights_ok = calls[i].bulk_len == 0;
      d->res->weights_received += calls[i].bulk_len;
      if (calls[i].code == MDL_RPC_OK &&
          (!weights_ok || r->samples == 0 || r->iterations != (uint32_t)tau)) {
        calls[i].code = MDL_RPC_DATA_LOSS;
        snprintf(calls[i].detail, sizeof calls[i].detail,
                 "reply without weights, samples or all %d iterations", tau);
      }
      if (calls[i].code == MDL_RPC_OK &&
          !round_report_ok(d, s, r, tau, calls[i].detail, sizeof calls[i].detail))
        calls[i].code = MDL_RPC_DATA_LOSS;
      if (calls[i].code != MDL_RPC_OK && d->peer &&
          mdl_driver_peer_blames_another(calls[i].detail)) {
        dlog(d, "worker %d (%s): round %d: %s", s->index, s->addr, d->round + 1, calls[i].detail);
        n_blamed++;
        continue;
      }
      if (calls[i].code != MDL_RPC_OK) {
        snprintf(why[n_failed], sizeof why[n_failed], "round %d: %s %s", d->round + 1,
                 mdl_rpc_code_name(calls[i].code), calls[i].detail);
        failed[n_failed++] = s;
        continue;
      }
      s->samples = r->samples;
      s->compute_s = r->compute_seconds;
      s->rtt_s = calls[i].seconds;
      s->total.compute_s += s->compute_s;
      s->total.comm_s += s->rtt_s > s->compute_s ? s->rtt_s - s->compute_s : 0;
      s->total.wait_s += wall - s->rtt_s;
      s->total.samples += r->samples;
      s->total.rounds++;
      loss += r->loss_sum;
      iters += r->iterations;
      done[m] = s;
      ws[m] = s->recv;
      samples[m] = r->samples;
      m++;
    }
    /* a worker whose training diverged is not at fault: any would be, and
     * replacing it would only diverge again */
    for (int i = 0; st == MDL_OK && i < n; i++)
      if (calls[i].code == MDL_RPC_FAILED_PRECONDITION)
        st = mdl_errorf(err, MDL_ERR_DIVERGED, "worker %d, round %d: %s", act[i]->index,
                        d->round + 1, calls[i].detail);
    mdl_rpc_calls_clear(calls, n);
    free(calls);
    free(rc);
    for (int i = 0; st == MDL_OK && i < n_failed; i++)
      st = mdl_driver_kill_slot(d, failed[i], why[i], err);
    /* peer averaging: all members or nothing (their average mixes them all) */
    if (d->peer && (n_failed || n_blamed)) m = 0;
    if (d->peer && n_blamed && !n_failed) mdl_driver_peer_unreachable(d);
    if (d->peer && m > 0) mdl_driver_peer_commit(d, want_w);
    if (st == MDL_OK && m > 0) /* with peers, act[0]'s reply holds the members' average */
      st = close_round(d, tau, wall, done, ws, samples, m, loss, iters, d->peer,
                       d->peer && want_w ? act[0]->recv : NULL, err);
    free(done);
    free(ws);
    free(samples);
    free(failed);
    free(why);
    free(act);
    if (st != MDL_OK || m > 0) return st;
    dlog(d, "round %d: no worker finished; retrying with the survivors", d->round + 1);
  }
  return mdl_errorf(err, MDL_ERR_INTERNAL, "round %d: workers keep failing", d->round + 1);
}

/* --- test ------------------------------------------------------------------- */

static mdl_status run_test(driver *d, int net, mdl_error *err) {
  double t0 = mdl_now();
  int batches = (size_t)net < d->plan->solver->n_test_iter ? d->plan->solver->test_iter[net] : 0;
  slot **act = mdl_xcalloc((size_t)d->k, sizeof *act);
  int n = 0;
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive && d->s[i].n_test > 0) act[n++] = &d->s[i];
  if (n == 0) {
    free(act);
    return MDL_OK;
  }
  /* peer averaging: workers that kept the average test on their own copy;
   * only the others need d->w, which may first have to come from a member */
  bool all_hold = !d->shm;
  for (int i = 0; i < n; i++) all_hold = all_hold && mdl_driver_peer_held_by(d, act[i]);
  mdl_status wst = all_hold ? MDL_OK : mdl_driver_weights(d, err);
  if (wst != MDL_OK) {
    free(act);
    return wst;
  }
  Memdl__TestRequest *req = mdl_xcalloc((size_t)n, sizeof *req);
  mdl_rpc_call *calls = mdl_xcalloc((size_t)n, sizeof *calls);
  for (int i = 0; i < n; i++) {
    memdl__test_request__init(&req[i]);
    req[i].has_session = req[i].has_iter = req[i].has_test_net = req[i].has_batches = 1;
    req[i].session = d->session;
    req[i].iter = (uint32_t)d->iter;
    req[i].test_net = (uint32_t)net;
    /* test_iter batches spread over the workers holding test data */
    req[i].batches = batches > 0 ? (uint32_t)(batches / n + (i < batches % n)) : 0;
    call_init(d, &calls[i], act[i], MDL_WORKER_TEST, &req[i].base, &memdl__test_reply__descriptor);
    uint64_t held = mdl_driver_peer_held_by(d, act[i]);
    if (d->shm) {
      req[i].has_weights_in_shm = req[i].weights_in_shm = 1;
    } else if (held) {
      req[i].has_kept_epoch = 1;
      req[i].kept_epoch = held;
    } else {
      calls[i].req.bulk_field = 5;
      calls[i].req.bulk = d->w;
      calls[i].req.bulk_len = d->n_params * sizeof(float);
      calls[i].req.pin = d->w_pin;
    }
    if (batches > 0 && req[i].batches == 0) calls[i].ch = NULL;
  }
  /* drop workers that have no batch to run */
  int m = 0;
  for (int i = 0; i < n; i++)
    if (calls[i].ch) {
      d->res->weights_sent += calls[i].req.bulk_len;
      calls[m] = calls[i];
      act[m] = act[i];
      m++;
    }
  mdl_status st = mdl_rpc_call_all(calls, m, d->round_timeout_ms, d->abort, err);
  mdl_rpc_pin_wait(d->w_pin);
  /* sums per output name, in worker order */
  int n_out = 0;
  mdl_trainer_output *out = NULL;
  uint64_t total_batches = 0, samples = 0;
  slot **failed = mdl_xcalloc((size_t)(m ? m : 1), sizeof *failed);
  char(*why)[600] = mdl_xcalloc((size_t)(m ? m : 1), sizeof *why);
  int n_failed = 0;
  for (int i = 0; st == MDL_OK && i < m; i++) {
    const Memdl__TestReply *r = (const Memdl__TestReply *)calls[i].reply;
    const Memdl__TestRequest *q = (const Memdl__TestRequest *)calls[i].req.msg;
    if (calls[i].code == MDL_RPC_OK &&
        !test_report_ok(d, r, q->batches, calls[i].detail, sizeof calls[i].detail))
      calls[i].code = MDL_RPC_DATA_LOSS;
    if (calls[i].code != MDL_RPC_OK) {
      dlog(d, "worker %d (%s): Test failed: %s %s", act[i]->index, act[i]->addr,
           mdl_rpc_code_name(calls[i].code), calls[i].detail);
      snprintf(why[n_failed], sizeof why[n_failed], "failed the TEST phase: %s %s",
               mdl_rpc_code_name(calls[i].code), calls[i].detail);
      failed[n_failed++] = act[i];
      continue;
    }
    total_batches += r->batches;
    samples += r->samples;
    for (size_t o = 0; o < r->n_output; o++) {
      const Memdl__OutputSum *os = r->output[o];
      int k = 0;
      while (k < n_out && strcmp(out[k].name, os->name ? os->name : "")) k++;
      if (k == n_out) {
        out = mdl_xrealloc(out, (size_t)(n_out + 1) * sizeof *out);
        out[k].name = mdl_xstrdup(os->name ? os->name : "");
        out[k].n = (int)os->n_sum;
        out[k].sum = mdl_xcalloc(os->n_sum ? os->n_sum : 1, sizeof(double));
        n_out++;
      }
      for (size_t e = 0; e < os->n_sum && e < (size_t)out[k].n; e++) out[k].sum[e] += os->sum[e];
    }
  }
  mdl_rpc_calls_clear(calls, m);
  free(calls);
  free(req);
  free(act);
  for (int i = 0; st == MDL_OK && i < n_failed; i++)
    st = mdl_driver_kill_slot(d, failed[i], why[i], err);
  free(failed);
  free(why);
  if (st != MDL_OK || total_batches == 0) {
    for (int k = 0; k < n_out; k++) {
      free(out[k].name);
      free(out[k].sum);
    }
    free(out);
    return st;
  }
  char line[1024];
  size_t used = 0;
  line[0] = 0;
  for (int k = 0; k < n_out; k++)
    for (int e = 0; e < out[k].n; e++) {
      out[k].sum[e] /= (double)total_batches;
      if (used < sizeof line)
        used += (size_t)snprintf(line + used, sizeof line - used, "%s%s%s %.4f", k || e ? ", " : "",
                                 out[k].name, out[k].n > 1 ? "[]" : "", out[k].sum[e]);
    }
  double secs = mdl_now() - t0;
  fprintf(d->log, "test net %d iter %d: %s (%llu batches, %llu samples, %.1f s%s)\n", net, d->iter,
          line, (unsigned long long)total_batches, (unsigned long long)samples, secs,
          n_failed ? "; partial: a worker failed" : "");
  fflush(d->log);
  mdl_driver_report_test(d, net, out, n_out, samples, secs);
  if (net == 0) {
    for (int k = 0; k < d->res->n_test; k++) {
      free(d->res->test[k].name);
      free(d->res->test[k].sum);
    }
    free(d->res->test);
    d->res->test = out;
    d->res->n_test = n_out;
  } else {
    for (int k = 0; k < n_out; k++) {
      free(out[k].name);
      free(out[k].sum);
    }
    free(out);
  }
  return MDL_OK;
}

static mdl_status run_tests(driver *d, mdl_error *err) {
  double t0 = mdl_now();
  int nets = (int)d->plan->solver->n_test_iter;
  if (nets == 0 && d->n_all_test > 0) nets = 1;
  mdl_status st = MDL_OK; /* run_test sees whether d->w must be fetched */
  for (int i = 0; i < nets && st == MDL_OK; i++) st = run_test(d, i, err);
  /* images/s counts training only */
  mdl_progress_exclude(&d->prog, mdl_now() - t0);
  d->aside_s += mdl_now() - t0;
  return st;
}

/* The job's acceptance criteria against the last TEST pass of test net 0. */
static mdl_status check_accept(driver *d, mdl_driver_result *res, mdl_error *err) {
  const char **names = mdl_xcalloc((size_t)res->n_test + 1, sizeof *names);
  double *values = mdl_xcalloc((size_t)res->n_test + 1, sizeof *values);
  int n = 0;
  for (int k = 0; k < res->n_test; k++)
    if (res->test[k].n == 1) { /* scalar outputs only */
      names[n] = res->test[k].name;
      values[n++] = res->test[k].sum[0];
    }
  res->accepted = mdl_accept_check(d->plan->accept, d->plan->n_accept, names, values, n,
                                   res->accept_msg, sizeof res->accept_msg);
  free(names);
  free(values);
  if (res->accepted) return MDL_OK;
  return mdl_errorf(err, MDL_ERR_ACCEPT, "acceptance not met: %s", res->accept_msg);
}

/* --- the run ---------------------------------------------------------------- */

static volatile sig_atomic_t g_abort;
static void on_signal(int sig) {
  (void)sig;
  g_abort = 1;
}

/* Fills d from the plan and the options: what a run of it does, before
 * anything is allocated. */
static mdl_status resolve_options(driver *d, const Memdl__Plan *plan, const char *base_dir,
                                  const mdl_driver_opts *opts, mdl_driver_result *res,
                                  mdl_error *err) {
  d->plan = plan;
  d->base_dir = base_dir ? base_dir : ".";
  d->o = *opts;
  d->log = opts->log ? opts->log : stderr;
  d->res = res;
  d->trainer_name = opts->trainer ? opts->trainer : "net";
  d->trainers = opts->trainers;
  d->max_iter = plan->solver->max_iter;
  if (d->max_iter <= 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "solver max_iter is %d: nothing to train", d->max_iter);
  const Memdl__Cluster *cl = plan->cluster;
  d->tau = opts->tau > 0 ? opts->tau : plan->sync && plan->sync->tau ? (int)plan->sync->tau : 10;
  if (d->tau > MDL_WORKER_MAX_TAU) d->tau = MDL_WORKER_MAX_TAU;
  d->test_interval = plan->solver->test_interval;
  d->snapshot_rounds = opts->snapshot_rounds > 0   ? opts->snapshot_rounds
                       : opts->snapshot_rounds < 0 ? 0
                       : cl                        ? (int)cl->snapshot_rounds
                                                   : 0;
  d->round_timeout_ms = opts->round_timeout_ms > 0   ? opts->round_timeout_ms
                        : cl && cl->round_timeout_ms ? (int)cl->round_timeout_ms
                                                     : 60000;
  d->setup_timeout_ms = opts->setup_timeout_ms > 0 ? opts->setup_timeout_ms : 60000;
  d->snapshot_iters = opts->snapshot_every > 0     ? opts->snapshot_every
                      : plan->solver->snapshot > 0 ? plan->solver->snapshot
                                                   : 0;
  if (opts->snapshot_prefix) {
    snprintf(d->prefix, sizeof d->prefix, "%s", opts->snapshot_prefix);
  } else {
    char *od = opts->out_dir ? mdl_xstrdup(opts->out_dir) : resolve_path(d->base_dir, "out");
    const char *pre = plan->solver->snapshot_prefix && plan->solver->snapshot_prefix[0]
                          ? plan->solver->snapshot_prefix
                      : plan->job_name && plan->job_name[0] ? plan->job_name
                                                            : "weights";
    const char *b = strrchr(pre, '/');
    b = b && b[1] ? b + 1 : pre;
    snprintf(d->prefix, sizeof d->prefix, "%s/%s", od, b);
    free(od);
  }
  if (opts->seed)
    d->seed = opts->seed;
  else
    d->seed = plan->solver->has_random_seed && plan->solver->random_seed >= 0
                  ? (uint64_t)plan->solver->random_seed
                  : 1;
  d->abort = opts->abort ? opts->abort : &g_abort;
  /* An explicit keepalive asks for quick detection of a stopped worker; by
   * default the pings wait long enough for a busy slow link, whose queues
   * hold pings behind seconds of weights (issue 13), and the round deadline
   * catches a stopped worker. */
  d->chopts.keepalive_ms = opts->keepalive_ms > 0 ? opts->keepalive_ms : 2000;
  d->chopts.keepalive_timeout_ms =
      opts->keepalive_ms > 0 ? opts->keepalive_ms * 3 / 2 : MDL_RPC_KEEPALIVE_TIMEOUT_MS;
  if (opts->snapshot_path) {
    snprintf(d->snapshot_path, sizeof d->snapshot_path, "%s", opts->snapshot_path);
  } else {
    char *dir = resolve_path(d->base_dir, "out");
    mkdir(dir, 0755);
    snprintf(d->snapshot_path, sizeof d->snapshot_path, "%s/driver.snapshot", dir);
    free(dir);
  }
  return MDL_OK;
}

/* The model on the driver: initial weights from the trainer's fillers, the
 * data's partitions, the slots and their reply buffers. d->w_pin and d->s
 * exist afterwards even on failure (driver_free expects them). */
static mdl_status init_model(driver *d, char **devices, mdl_error *err) {
  mdl_trainer *init = NULL;
  mdl_trainer_opts to = {.device = "cpu",
                         .seed = d->seed,
                         .worker_index = -1,
                         .num_workers = d->k,
                         .base_dir = d->base_dir};
  mdl_status st = mdl_trainer_new(d->trainers, d->trainer_name, d->plan, &to, &init, err);
  if (st == MDL_OK) {
    d->n_params = mdl_trainer_param_count(init);
    d->w = mdl_rpc_buffer_alloc(d->n_params * sizeof(float));
    if (!d->w) st = mdl_errorf(err, MDL_ERR_NOMEM, "weights: %zu floats", d->n_params);
  }
  if (st == MDL_OK) st = mdl_trainer_init_weights(init, d->w, err);
  if (st == MDL_OK && d->o.weights) {
    st = mdl_trainer_load(init, d->w, d->o.weights, err);
    if (st == MDL_OK) dlog(d, "weights: %s", d->o.weights);
  }
  d->model = init;
  if (st == MDL_OK)
    st = mdl_trainer_lineages(d->trainers, d->trainer_name, d->plan, d->base_dir, d->k,
                              CAFFE__PHASE__TRAIN, &d->all_train, &d->n_all_train, err);
  if (st == MDL_OK)
    st = mdl_trainer_lineages(d->trainers, d->trainer_name, d->plan, d->base_dir, d->k,
                              CAFFE__PHASE__TEST, &d->all_test, &d->n_all_test, err);
  if (st == MDL_OK && d->n_all_train < (size_t)d->k)
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "the training data has %zu partitions; %d workers need at least %d "
                    "(set the data set's `partitions`)",
                    d->n_all_train, d->k, d->k);
  d->w_pin = mdl_rpc_pin_new();
  d->s = mdl_xcalloc((size_t)(d->k ? d->k : 1), sizeof *d->s);
  for (int i = 0; i < d->k; i++) {
    d->s[i].index = i;
    if (devices) snprintf(d->s[i].device, sizeof d->s[i].device, "%s", devices[i]);
    if (st == MDL_OK) {
      d->s[i].recv = mdl_rpc_buffer_alloc(d->n_params * sizeof(float));
      if (!d->s[i].recv) st = mdl_errorf(err, MDL_ERR_NOMEM, "reply buffers");
    }
  }
  /* what one iteration or test batch can take: bounds on workers' reports */
  if (st == MDL_OK) {
    d->train_batch = mdl_trainer_batch_samples(d->model, CAFFE__PHASE__TRAIN);
    d->test_batch = mdl_trainer_batch_samples(d->model, CAFFE__PHASE__TEST);
  }
  return st;
}

/* Ctrl-C stops the run and its workers, unless the caller watches an abort
 * flag of its own. */
typedef struct signals {
  bool own;
  struct sigaction old_int, old_term;
} signals;

static void signals_install(const mdl_driver_opts *opts, signals *sg) {
  sg->own = !opts->abort && !opts->stop;
  if (!sg->own) return;
  g_abort = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &sg->old_int);
  sigaction(SIGTERM, &sa, &sg->old_term);
}

static void signals_restore(const signals *sg) {
  if (!sg->own) return;
  sigaction(SIGINT, &sg->old_int, NULL);
  sigaction(SIGTERM, &sg->old_term, NULL);
}

/* After a round: the solver's snapshot point when one falls here, and one
 * a signal asked for (SIGHUP, or before stopping). Returns whether a stop
 * was asked. */
static bool snapshot_step(driver *d, mdl_error *err, mdl_status *st) {
  if (d->snapshot_iters > 0 && d->iter % d->snapshot_iters == 0)
    *st = mdl_driver_snapshot_point(d, err);
  bool stop = d->o.stop && *d->o.stop;
  if (*st == MDL_OK && (stop || (d->o.snapshot && *d->o.snapshot))) {
    if (d->o.snapshot) *d->o.snapshot = 0;
    *st = mdl_driver_snapshot_point(d, err); /* once per iteration */
  }
  return stop;
}

/* Whether the driver reads d->w once the round of tau iterations from
 * d->iter ends, as run_rounds and collect_result go on: a snapshot point
 * (the solver's, or one a signal already asked for), a snapshot_rounds
 * snapshot, the end (max_iter or max_rounds). A peer round then returns
 * the average; a need that comes up later (a signal during the round, a
 * TEST worker that was not a member) fetches it (mdl_driver_weights). A
 * TEST pass alone does not read it: the members test on the average they
 * kept (run_test). */
static bool reads_weights_after(const driver *d, int tau) {
  int end = d->iter + tau;
  return end >= d->max_iter || (d->snapshot_iters > 0 && end % d->snapshot_iters == 0) ||
         (d->snapshot_rounds > 0 && (d->round + 1) % d->snapshot_rounds == 0) ||
         (d->o.max_rounds > 0 && d->rounds_here + 1 >= d->o.max_rounds) ||
         (d->o.stop && *d->o.stop) || (d->o.snapshot && *d->o.snapshot);
}

/* The rounds up to max_iter (or max_rounds), with the solver's tests and
 * snapshot points where they fall, then a final TEST pass and snapshot
 * point. A stop request ends it after the round in progress (and its
 * snapshot): res->stopped. */
static mdl_status run_rounds(driver *d, mdl_error *err) {
  const Memdl__Plan *plan = d->plan;
  mdl_status st = MDL_OK;
  bool test_init = !plan->solver->has_test_initialization || plan->solver->test_initialization;
  if (d->test_interval > 0 && d->iter == 0 && test_init && !d->res->resumed) st = run_tests(d, err);
  while (st == MDL_OK && d->iter < d->max_iter) {
    if (*d->abort) {
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "interrupted at iteration %d", d->iter);
      break;
    }
    /* a stop asked during setup or a TEST pass: snapshot where we are */
    if (d->o.stop && *d->o.stop) {
      if (snapshot_step(d, err, &st) && st == MDL_OK) d->res->stopped = true;
      break;
    }
    if (d->o.max_rounds > 0 && d->rounds_here >= d->o.max_rounds) break;
    st = mdl_driver_retake_workers(d, err);
    if (st != MDL_OK) break;
    int tau = d->tau;
    if (d->iter + tau > d->max_iter) tau = d->max_iter - d->iter;
    /* rounds end where the solver tests and snapshots, as iterations count */
    int every[2] = {d->test_interval, d->snapshot_iters};
    for (int e = 0; e < 2; e++)
      if (every[e] > 0) {
        int next = (d->iter / every[e] + 1) * every[e];
        if (next - d->iter < tau) tau = next - d->iter;
      }
    double comm0 = d->res->comm_s, t0 = mdl_now();
    st = run_round(d, tau, reads_weights_after(d, tau), err);
    if (st == MDL_OK) mdl_driver_retune(d, tau, mdl_now() - t0, d->res->comm_s - comm0);
    if (st == MDL_OK) st = mdl_driver_rebalance(d, tau, err);
    bool stop = st == MDL_OK && snapshot_step(d, err, &st);
    if (st == MDL_OK && stop) {
      d->res->stopped = true;
      break;
    }
    if (st == MDL_OK && d->test_interval > 0 && d->iter % d->test_interval == 0)
      st = run_tests(d, err);
    if (st == MDL_OK && d->snapshot_rounds > 0 && d->round % d->snapshot_rounds == 0)
      st = mdl_driver_snapshot_write(d, err);
  }
  if (st != MDL_OK || d->res->stopped || d->iter < d->max_iter) return st;
  /* the final snapshot point (Caffe's snapshot_after_train, default on; the
   * model file in any case: it is the run's result), then a final TEST
   * pass whenever the last interval did not end on one, as single-worker
   * runs do: acceptance is judged on it */
  bool after = !plan->solver->has_snapshot_after_train || plan->solver->snapshot_after_train;
  if (after) st = mdl_driver_snapshot_point(d, err);
  if (!after && d->snap_iter != d->iter) st = mdl_driver_save_model(d, err);
  if (st == MDL_OK && (d->test_interval <= 0 || d->iter % d->test_interval != 0))
    st = run_tests(d, err);
  return st;
}

/* Judges acceptance and fills res (timings, final weights, per-worker
 * figures) after the rounds ended with st. */
static mdl_status collect_result(driver *d, mdl_driver_result *res, double t_start, mdl_status st,
                                 mdl_error *err) {
  if (st == MDL_OK && !res->stopped) st = check_accept(d, res, err);
  res->seconds = mdl_now() - t_start;
  res->iter = d->iter;
  if (st != MDL_OK && st != MDL_ERR_ACCEPT) return st;
  dlog(d,
       "%s: iteration %d, %d rounds in %.2f s (compute %.2f, communication %.2f, waiting "
       "%.2f, averaging %.2f), %d faults, %d replacements",
       res->stopped ? "stopped" : "done", d->iter, res->rounds, res->seconds, res->compute_s,
       res->comm_s, res->wait_s, res->average_s, res->faults, res->replacements);
  mdl_error werr = {0}; /* err may hold the acceptance's message */
  mdl_status wst = mdl_driver_weights(d, &werr);
  if (wst != MDL_OK) {
    *err = werr;
    return wst;
  }
  if (d->peer_members) /* a peer run: what stayed off the driver's link */
    dlog(d,
         "peer averaging: %.1f MB of weights came to the driver (%d fetched) in %d rounds, "
         "%.1f MB went to the workers",
         (double)res->weights_received / 1e6, res->weights_fetched, res->rounds,
         (double)res->weights_sent / 1e6);
  res->weights = malloc(d->n_params * sizeof(float) + 1);
  if (!res->weights) {
    st = mdl_errorf(err, MDL_ERR_NOMEM, "final weights");
  } else {
    memcpy(res->weights, d->w, d->n_params * sizeof(float));
    res->n_params = d->n_params;
  }
  res->n_workers = d->k;
  res->workers = mdl_xcalloc((size_t)d->k, sizeof *res->workers);
  for (int i = 0; i < d->k; i++) {
    res->workers[i] = d->s[i].total;
    res->workers[i].alive = d->s[i].alive;
  }
  return st;
}

mdl_status mdl_driver_run_plan(const Memdl__Plan *plan, const char *base_dir,
                               const mdl_driver_opts *opts, mdl_driver_result *res_out,
                               mdl_error *err) {
  mdl_driver_result res_local;
  mdl_driver_result *res = res_out ? res_out : &res_local;
  memset(res, 0, sizeof *res);
  if (!plan->solver) return mdl_errorf(err, MDL_ERR_INVALID, "the plan has no solver");
  driver d_ = {0}, *d = &d_;
  mdl_status st = resolve_options(d, plan, base_dir, opts, res, err);
  if (st != MDL_OK) return st;
  worker_list wl;
  st = mdl_driver_select_workers(d, &wl, err);
  if (st != MDL_OK) return st;
  d->k = wl.local_k ? wl.local_k : wl.n_addrs;

  mdl_driver_hash_plan(d);
  if (getrandom(&d->session, sizeof d->session, 0) != sizeof d->session || !d->session)
    d->session = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull + 1;
  st = init_model(d, wl.devices, err);
  signals sg;
  signals_install(opts, &sg);
  Memdl__DriverSnapshot *snap = NULL;
  if (st == MDL_OK) st = mdl_driver_resume(d, &snap, err);
  if (st == MDL_OK) st = mdl_driver_start_workers(d, &wl, err);
  if (st == MDL_OK) mdl_driver_peer_init(d);
  mdl_driver_worker_list_free(&wl);
  double t_start = mdl_now();
  if (st == MDL_OK) st = mdl_driver_setup_workers(d, snap, err);
  mdl_pb_free(snap);
  snap = NULL;

  /* a resumed run keeps the snapshot's tau and shares, so it continues the
   * bits of the uninterrupted run */
  if (st == MDL_OK && !d->res->resumed && (d->o.calibrate || d->o.tau_tuned || d->o.calibrate_only))
    st = mdl_driver_calibrate(d, err);
  if (d->o.calibrate_only) {
    res->n_workers = d->k;
  } else {
    if (st == MDL_OK) st = mdl_driver_report_open(d, err);
    if (st == MDL_OK) st = run_rounds(d, err);
    st = collect_result(d, res, t_start, st, err);
    if (d->prog.f) mdl_driver_report_close(d, st);
  }
  if (d->s && d->k) mdl_driver_shutdown_workers(d);
  mdl_driver_free_state(d);
  signals_restore(&sg);
  if (st != MDL_OK && st != MDL_ERR_ACCEPT) {
    mdl_driver_result_free(res);
    memset(res, 0, sizeof *res);
  } else if (!res_out) {
    mdl_driver_result_free(res);
  }
  return st;
}

void mdl_driver_result_summary(const mdl_driver_result *res, char *buf, size_t len) {
  int alive = 0;
  for (int i = 0; i < res->n_workers; i++) alive += res->workers && res->workers[i].alive;
  if (!res->workers) alive = res->n_workers;
  char started[48] = "";
  if (alive != res->n_workers)
    snprintf(started, sizeof started, " (of %d started)", res->n_workers);
  double busy = res->compute_s + res->comm_s + res->wait_s;
  snprintf(buf, len, "done: %d iterations in %d rounds on %d worker%s%s, %.0f s, waiting %.0f%%",
           res->iter, res->rounds, alive, alive == 1 ? "" : "s", started, res->seconds,
           busy > 0 ? 100 * res->wait_s / busy : 0.0);
}

void mdl_driver_result_free(mdl_driver_result *res) {
  if (!res) return;
  free(res->weights);
  for (int k = 0; k < res->n_test; k++) {
    free(res->test[k].name);
    free(res->test[k].sum);
  }
  free(res->test);
  free(res->workers);
  mdl_calibration_free(&res->calibration);
  memset(res, 0, sizeof *res);
}
