/* The recurrent layers, with Caffe's semantics, computed directly rather
 * than through an unrolled net: LSTMUnit (one LSTM step), LSTM and RNN over
 * T x N x ... sequences with the cont markers, an optional static input and
 * expose_hidden. Does not do Caffe's internal net (debug_info is ignored).
 *
 * Layouts (all row-major, as Caffe's blobs):
 *   x       T x N x I        (I = product of the axes after the first two)
 *   cont    T x N            0 starts a new sequence at (t, n): the state
 *                            carried in is multiplied by cont
 *   x_static N x S           (bottom 2 when present)
 *   h_0, c_0 1 x N x H       (expose_hidden: the bottoms after those)
 *   top 0   T x N x H        LSTM: h_t; RNN: o_t
 *   h_T, c_T 1 x N x H       (expose_hidden: tops 1, 2)
 * LSTM gates are laid out per item as [i | f | o | g], H each (Caffe's
 * order); learnable blobs in Caffe's order, so .caffemodel files load:
 *   LSTM: W_xc 4H x I, b_c 4H, [W_xc_static 4H x S], W_hc 4H x H
 *   RNN:  W_xh H x I,  b_h H,  [W_xh_static H x S],  W_hh H x H, W_ho H x H, b_o H
 *   LSTM: g_t = W_xc x_t + b_c + W_xc_static x_s + W_hc (cont_t h_{t-1})
 *         c_t = cont_t sig(f) c_{t-1} + sig(i) tanh(g);  h_t = sig(o) tanh(c_t)
 *   RNN:  h_t = tanh(W_xh x_t + b_h + W_xh_static x_s + W_hh (cont_t h_{t-1}))
 *         o_t = tanh(W_ho h_t + b_o)
 * Without expose_hidden the state at the start of a forward is the one the
 * previous forward ended with (zero at first), as Caffe's RecurrentLayer
 * copies h_T into h_0: a batch whose cont starts at 1 continues the last
 * one. With expose_hidden, h_0/c_0 come from the bottoms and, unlike Caffe
 * (which shares only their data), receive their true gradients, as the
 * h_T/c_T tops pass theirs in. cont never receives a gradient. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

static inline float sigm(float v) {
  return 1.f / (1.f + expf(-v));
}

/* N LSTM steps side by side. X: N x 4H pre-activations [i f o g]; act
 * (may alias X) receives the activations; c_prev, c, h: N x H; cont: N
 * (stride cont_stride). */
static void lstm_cell_fwd(int64_t N, int64_t H, const float *X, const float *c_prev,
                          const float *cont, float *act, float *c, float *h) {
  for (int64_t n = 0; n < N; n++) {
    const float *x = X + n * 4 * H;
    float *a = act + n * 4 * H;
    const float k = cont[n];
    for (int64_t d = 0; d < H; d++) {
      float i = sigm(x[d]), f = sigm(x[H + d]), o = sigm(x[2 * H + d]), g = tanhf(x[3 * H + d]);
      a[d] = i, a[H + d] = f, a[2 * H + d] = o, a[3 * H + d] = g;
      float cv = k * f * c_prev[n * H + d] + i * g;
      c[n * H + d] = cv;
      h[n * H + d] = o * tanhf(cv);
    }
  }
}

/* Backward of lstm_cell_fwd from its activations: dh (N x H) and dc_in
 * (N x H, may be NULL: zero) the gradients arriving at h and c; writes dX
 * (N x 4H, pre-activations) and dc_prev (N x H; may alias dc_in). */
static void lstm_cell_bwd(int64_t N, int64_t H, const float *act, const float *c_prev,
                          const float *c, const float *cont, const float *dh, const float *dc_in,
                          float *dX, float *dc_prev) {
  for (int64_t n = 0; n < N; n++) {
    const float *a = act + n * 4 * H;
    float *dx = dX + n * 4 * H;
    const float k = cont[n];
    for (int64_t d = 0; d < H; d++) {
      const int64_t j = n * H + d;
      float i = a[d], f = a[H + d], o = a[2 * H + d], g = a[3 * H + d];
      float tc = tanhf(c[j]);
      float dc = (dc_in ? dc_in[j] : 0.f) + dh[j] * o * (1.f - tc * tc);
      dx[d] = dc * g * i * (1.f - i);
      dx[H + d] = dc * k * c_prev[j] * f * (1.f - f);
      dx[2 * H + d] = dh[j] * tc * o * (1.f - o);
      dx[3 * H + d] = dc * i * (1.f - g * g);
      dc_prev[j] = dc * k * f;
    }
  }
}

/* ---- LSTMUnit -------------------------------------------------------------- */

/* bottoms c_prev 1 x N x H, X 1 x N x 4H, cont 1 x N; tops c, h 1 x N x H. */
typedef struct lstm_unit_priv {
  int64_t N, H;
  float *act; /* N x 4H activations of the last forward */
} lstm_unit_priv;

static mdl_status lstm_unit_setup(mdl_layer *l, mdl_error *err) {
  lstm_unit_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->N = l->bottom_shape[0].d[1];
  p->H = l->bottom_shape[0].d[2];
  p->act = mdl_falloc(p->N * 4 * p->H);
  if (!p->act) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": gate buffer", l->name);
  return MDL_OK;
}

static void lstm_unit_free(mdl_layer *l) {
  lstm_unit_priv *p = l->priv;
  mdl_ffree(p->act);
  free(p);
}

static void lstm_unit_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  lstm_unit_priv *p = l->priv;
  lstm_cell_fwd(p->N, p->H, bottom[1]->data, bottom[0]->data, bottom[2]->data, p->act, top[0]->data,
                top[1]->data);
}

static void lstm_unit_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                               mdl_tensor *const *bottom) {
  lstm_unit_priv *p = l->priv;
  if (!pd[0] && !pd[1]) return;
  /* the cell writes both; a bottom without propagate_down gets scratch */
  float *dX = pd[1] ? bottom[1]->diff : mdl_falloc(p->N * 4 * p->H);
  float *dc = pd[0] ? bottom[0]->diff : mdl_falloc(p->N * p->H);
  if (dX && dc)
    lstm_cell_bwd(p->N, p->H, p->act, bottom[0]->data, top[0]->data, bottom[2]->data, top[1]->diff,
                  top[0]->diff, dX, dc);
  if (!pd[1]) mdl_ffree(dX);
  if (!pd[0]) mdl_ffree(dc);
}

const mdl_layer_impl mdl_cpu_lstm_unit_layer = {
    "LSTMUnit", lstm_unit_setup, NULL, lstm_unit_forward, lstm_unit_backward, lstm_unit_free};

/* ---- LSTM and RNN ---------------------------------------------------------- */

typedef struct rec_priv {
  bool lstm, has_static, expose;
  int64_t T, N, I, S, H, G;              /* G: gate width, 4H (LSTM) or H (RNN) */
  int b_static, b_h0;                    /* bottom indices; -1 when absent */
  int p_wx, p_b, p_ws, p_wh, p_wo, p_bo; /* param indices; -1 when absent */
  float *gates;         /* T x N x G: LSTM activations / RNN pre-activations, then h */
  float *dgates;        /* T x N x G */
  float *hc;            /* T x N x H: cont_t * h_{t-1}, the input of W_h at step t */
  float *cs;            /* (T + 1) x N x H: LSTM cell states, c_0 first */
  float *hs;            /* T x N x H: RNN hidden states */
  float *dout;          /* T x N x H: RNN gradient at W_ho's input */
  float *xs_w;          /* N x G: W_static x_static */
  float *dsum;          /* N x G: sum over t of dgates (static input's gradient) */
  float *state;         /* N x H h, then N x H c: carried between forwards */
  float *h0, *c0;       /* N x H: the initial state this forward used */
  float *dh, *dc, *tmp; /* N x H step scratch */
} rec_priv;

static mdl_status rec_setup(mdl_layer *l, bool lstm, mdl_error *err) {
  const Caffe__RecurrentParameter *rp = l->lp->recurrent_param;
  if (!rp || !rp->num_output)
    return MDL_LAYER_ERR(l, err, "recurrent_param.num_output must be set and > 0");
  rec_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  const mdl_shape *x = &l->bottom_shape[0];
  int n_hidden = rp->expose_hidden ? (lstm ? 2 : 1) : 0;
  p->lstm = lstm;
  p->expose = rp->expose_hidden;
  p->has_static = l->n_bottom > 2 + n_hidden;
  p->T = x->d[0];
  p->N = x->d[1];
  p->I = mdl_shape_count_axes(x, 2, x->n);
  p->H = rp->num_output;
  p->G = lstm ? 4 * p->H : p->H;
  p->b_static = p->has_static ? 2 : -1;
  p->b_h0 = p->expose ? 2 + (p->has_static ? 1 : 0) : -1;
  if (p->has_static) p->S = mdl_shape_count_axes(&l->bottom_shape[2], 1, l->bottom_shape[2].n);
  int k = 0;
  p->p_wx = k++;
  p->p_b = k++;
  p->p_ws = p->has_static ? k++ : -1;
  p->p_wh = k++;
  p->p_wo = lstm ? -1 : k++;
  p->p_bo = lstm ? -1 : k++;
  if (k != l->n_param)
    return MDL_LAYER_ERR(l, err, "internal: %d learnable blobs from the shape rule, %d expected",
                         l->n_param, k);
  const int64_t TN = p->T * p->N, NH = p->N * p->H;
  p->gates = mdl_falloc(TN * p->G);
  p->dgates = mdl_falloc(TN * p->G);
  p->hc = mdl_falloc(TN * p->H);
  p->cs = lstm ? mdl_falloc((p->T + 1) * NH) : NULL;
  p->hs = lstm ? NULL : mdl_falloc(TN * p->H);
  p->dout = lstm ? NULL : mdl_falloc(TN * p->H);
  p->xs_w = mdl_falloc(p->N * p->G);
  p->dsum = mdl_falloc(p->N * p->G);
  p->state = mdl_falloc(2 * NH);
  p->h0 = mdl_falloc(NH);
  p->c0 = mdl_falloc(NH);
  p->dh = mdl_falloc(NH);
  p->dc = mdl_falloc(NH);
  p->tmp = mdl_falloc(NH);
  if (!p->gates || !p->dgates || !p->hc || (lstm && !p->cs) || (!lstm && (!p->hs || !p->dout)) ||
      !p->xs_w || !p->dsum || !p->state || !p->h0 || !p->c0 || !p->dh || !p->dc || !p->tmp)
    return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": %lld x %lld x %lld recurrent buffers",
                      l->name, (long long)p->T, (long long)p->N, (long long)p->G);
  return MDL_OK;
}

static mdl_status lstm_setup(mdl_layer *l, mdl_error *err) {
  return rec_setup(l, true, err);
}

static mdl_status rnn_setup(mdl_layer *l, mdl_error *err) {
  return rec_setup(l, false, err);
}

static void rec_free(mdl_layer *l) {
  rec_priv *p = l->priv;
  float *bufs[] = {p->gates, p->dgates, p->hc, p->cs, p->hs, p->dout, p->xs_w,
                   p->dsum,  p->state,  p->h0, p->c0, p->dh, p->dc,   p->tmp};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) mdl_ffree(bufs[i]);
  free(p);
}

static mdl_status rec_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__RecurrentParameter *rp = l->lp->recurrent_param;
  const rec_priv *p = l->priv;
  mdl_status st = MDL_OK;
  for (int i = 0; i < l->n_param && !st; i++) {
    bool bias = i == p->p_b || i == p->p_bo;
    st = mdl_filler_fill(bias ? rp->bias_filler : rp->weight_filler, &l->param[i], rng, err);
  }
  return st;
}

/* h_{t-1} * cont_t into p->hc row t (h_prev: N x H). */
static void cont_scale(const rec_priv *p, const float *cont_t, const float *h_prev, float *out) {
  for (int64_t n = 0; n < p->N; n++)
    for (int64_t d = 0; d < p->H; d++) out[n * p->H + d] = cont_t[n] * h_prev[n * p->H + d];
}

static void rec_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  rec_priv *p = l->priv;
  mdl_threadpool *tp = l->ctx.pool;
  const int64_t T = p->T, N = p->N, H = p->H, G = p->G, NH = N * H, TN = T * N;
  const float *x = bottom[0]->data, *cont = bottom[1]->data;
  const float *Wx = l->param[p->p_wx].data, *b = l->param[p->p_b].data;
  const float *Wh = l->param[p->p_wh].data;

  /* the initial state: the bottoms, or what the last forward ended with */
  if (p->expose) {
    memcpy(p->h0, bottom[p->b_h0]->data, (size_t)NH * sizeof(float));
    if (p->lstm) memcpy(p->c0, bottom[p->b_h0 + 1]->data, (size_t)NH * sizeof(float));
  } else {
    memcpy(p->h0, p->state, (size_t)NH * sizeof(float));
    memcpy(p->c0, p->state + NH, (size_t)NH * sizeof(float));
  }

  /* input terms of every step at once: x W_x^T + b (+ W_static x_static) */
  mdl_gemm(tp, false, true, TN, G, p->I, 1.f, x, Wx, 0.f, p->gates);
  if (p->has_static)
    mdl_gemm(tp, false, true, N, G, p->S, 1.f, bottom[p->b_static]->data, l->param[p->p_ws].data,
             0.f, p->xs_w);
  for (int64_t r = 0; r < TN; r++) {
    float *g = p->gates + r * G;
    const float *s = p->xs_w + (r % N) * G;
    for (int64_t j = 0; j < G; j++) g[j] += b[j] + (p->has_static ? s[j] : 0.f);
  }

  float *out = top[0]->data;
  if (p->lstm) memcpy(p->cs, p->c0, (size_t)NH * sizeof(float));
  for (int64_t t = 0; t < T; t++) {
    const float *h_prev = t == 0 ? p->h0 : p->lstm ? out + (t - 1) * NH : p->hs + (t - 1) * NH;
    float *hc = p->hc + t * NH, *g = p->gates + t * N * G;
    cont_scale(p, cont + t * N, h_prev, hc);
    mdl_gemm(tp, false, true, N, G, H, 1.f, hc, Wh, 1.f, g);
    if (p->lstm) {
      lstm_cell_fwd(N, H, g, p->cs + t * NH, cont + t * N, g, p->cs + (t + 1) * NH, out + t * NH);
    } else {
      float *h = p->hs + t * NH;
      for (int64_t j = 0; j < NH; j++) h[j] = tanhf(g[j]);
    }
  }
  if (!p->lstm) { /* o_t = tanh(W_ho h_t + b_o), all steps at once */
    const float *bo = l->param[p->p_bo].data;
    mdl_gemm(tp, false, true, TN, H, H, 1.f, p->hs, l->param[p->p_wo].data, 0.f, out);
    for (int64_t r = 0; r < TN; r++)
      for (int64_t d = 0; d < H; d++) out[r * H + d] = tanhf(out[r * H + d] + bo[d]);
  }

  const float *hT = T == 0 ? p->h0 : p->lstm ? out + (T - 1) * NH : p->hs + (T - 1) * NH;
  const float *cT = p->lstm ? p->cs + T * NH : NULL;
  if (p->expose) {
    memcpy(top[1]->data, hT, (size_t)NH * sizeof(float));
    if (p->lstm) memcpy(top[2]->data, cT, (size_t)NH * sizeof(float));
  } else {
    memcpy(p->state, hT, (size_t)NH * sizeof(float));
    if (p->lstm) memcpy(p->state + NH, cT, (size_t)NH * sizeof(float));
  }
}

static void rec_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  rec_priv *p = l->priv;
  mdl_threadpool *tp = l->ctx.pool;
  const int64_t T = p->T, N = p->N, H = p->H, G = p->G, NH = N * H, TN = T * N;
  const float *cont = bottom[1]->data, *dtop = top[0]->diff;
  const float *Wh = l->param[p->p_wh].data;

  /* gradients arriving at the final state: the h_T / c_T tops, else none */
  if (p->expose) {
    memcpy(p->dh, top[1]->diff, (size_t)NH * sizeof(float));
    if (p->lstm) memcpy(p->dc, top[2]->diff, (size_t)NH * sizeof(float));
  } else {
    memset(p->dh, 0, (size_t)NH * sizeof(float));
    memset(p->dc, 0, (size_t)NH * sizeof(float));
  }
  if (!p->lstm) {
    /* through o_t = tanh(W_ho h_t + b_o): p->dout = d(pre-activation) */
    const float *out = top[0]->data;
    for (int64_t j = 0; j < TN * H; j++) p->dout[j] = dtop[j] * (1.f - out[j] * out[j]);
    mdl_gemm(tp, true, false, H, H, TN, 1.f, p->dout, p->hs, 1.f, l->param[p->p_wo].diff);
    float *dbo = l->param[p->p_bo].diff;
    for (int64_t r = 0; r < TN; r++)
      for (int64_t d = 0; d < H; d++) dbo[d] += p->dout[r * H + d];
    /* the gradient at h_t from the outputs, kept in dout */
    mdl_gemm(tp, false, false, TN, H, H, 1.f, p->dout, l->param[p->p_wo].data, 0.f, p->gates);
    memcpy(p->dout, p->gates, (size_t)(TN * H) * sizeof(float));
  }

  for (int64_t t = T - 1; t >= 0; t--) {
    float *dg = p->dgates + t * N * G;
    const float *from_out = p->lstm ? dtop + t * NH : p->dout + t * NH;
    for (int64_t j = 0; j < NH; j++) p->tmp[j] = from_out[j] + p->dh[j];
    if (p->lstm) {
      lstm_cell_bwd(N, H, p->gates + t * N * G, p->cs + t * NH, p->cs + (t + 1) * NH, cont + t * N,
                    p->tmp, p->dc, dg, p->dc);
    } else {
      const float *h = p->hs + t * NH;
      for (int64_t j = 0; j < NH; j++) dg[j] = p->tmp[j] * (1.f - h[j] * h[j]);
    }
    /* W_h's gradient and the gradient carried to h_{t-1} through cont_t */
    mdl_gemm(tp, true, false, G, H, N, 1.f, dg, p->hc + t * NH, 1.f, l->param[p->p_wh].diff);
    mdl_gemm(tp, false, false, N, H, G, 1.f, dg, Wh, 0.f, p->tmp);
    for (int64_t n = 0; n < N; n++)
      for (int64_t d = 0; d < H; d++) p->dh[n * H + d] = cont[t * N + n] * p->tmp[n * H + d];
  }

  /* the input terms, all steps at once */
  mdl_gemm(tp, true, false, G, p->I, TN, 1.f, p->dgates, bottom[0]->data, 1.f,
           l->param[p->p_wx].diff);
  float *db = l->param[p->p_b].diff;
  memset(p->dsum, 0, (size_t)(N * G) * sizeof(float));
  for (int64_t r = 0; r < TN; r++) {
    const float *dg = p->dgates + r * G;
    float *s = p->dsum + (r % N) * G;
    for (int64_t j = 0; j < G; j++) db[j] += dg[j], s[j] += dg[j];
  }
  if (pd[0])
    mdl_gemm(tp, false, false, TN, p->I, G, 1.f, p->dgates, l->param[p->p_wx].data, 0.f,
             bottom[0]->diff);
  if (p->has_static) {
    mdl_gemm(tp, true, false, G, p->S, N, 1.f, p->dsum, bottom[p->b_static]->data, 1.f,
             l->param[p->p_ws].diff);
    if (pd[p->b_static])
      mdl_gemm(tp, false, false, N, p->S, G, 1.f, p->dsum, l->param[p->p_ws].data, 0.f,
               bottom[p->b_static]->diff);
  }
  if (p->expose) {
    if (pd[p->b_h0]) memcpy(bottom[p->b_h0]->diff, p->dh, (size_t)NH * sizeof(float));
    if (p->lstm && pd[p->b_h0 + 1])
      memcpy(bottom[p->b_h0 + 1]->diff, p->dc, (size_t)NH * sizeof(float));
  }
}

const mdl_layer_impl mdl_cpu_lstm_layer = {"LSTM",      lstm_setup,   rec_init,
                                           rec_forward, rec_backward, rec_free};
const mdl_layer_impl mdl_cpu_rnn_layer = {"RNN",       rnn_setup,    rec_init,
                                          rec_forward, rec_backward, rec_free};
