/* Shape rules of the recurrent layers: RNN and LSTM (x is T x N x ...,
 * cont is T x N, an optional static input N x ..., exposed hidden states
 * 1 x N x H) and LSTMUnit. Learnable blobs are listed in the order Caffe's
 * unrolled net creates them, so .caffemodel blobs line up. */
#include <stdio.h>

#include "compiler/layers_internal.h"

static void set2(mdl_shape *s, int64_t a0, int64_t a1) {
  s->n = 2;
  s->d[0] = a0;
  s->d[1] = a1;
}

static void set1(mdl_shape *s, int64_t a0) {
  s->n = 1;
  s->d[0] = a0;
}

static mdl_status recurrent(mdl_shape_args *a, bool lstm, mdl_error *err) {
  const Caffe__RecurrentParameter *p = a->lp->recurrent_param;
  if (!p || !p->num_output)
    return mdl_lfail(a, err, "recurrent_param.num_output must be set and > 0");
  int64_t h = p->num_output;
  int n_hidden = p->expose_hidden ? (lstm ? 2 : 1) : 0;
  if (a->n_bottom < 2 + n_hidden || a->n_bottom > 3 + n_hidden)
    return mdl_lfail(a, err, "takes %d or %d bottoms (x, cont, optional static input%s), got %d",
                     2 + n_hidden, 3 + n_hidden, n_hidden ? (lstm ? ", h_0, c_0" : ", h_0") : "",
                     a->n_bottom);
  if (a->n_top != 1 + n_hidden)
    return mdl_lfail(a, err, "takes %d top%s%s, got %d", 1 + n_hidden, n_hidden ? "s" : "",
                     n_hidden ? (lstm ? " (h, h_T, c_T)" : " (o, h_T)") : "", a->n_top);
  mdl_status st = mdl_laxes(a, 0, 2, -1, err);
  if (st != MDL_OK) return st;
  const mdl_shape *x = &a->bottom[0], *cont = &a->bottom[1];
  int64_t t = x->d[0], n = x->d[1];
  if (cont->n != 2 || cont->d[0] != t || cont->d[1] != n)
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s: the sequence "
                     "continuation markers must be %lldx%lld (T x N)",
                     mdl_lbottom(a, 1), mdl_lstr(cont), mdl_lbottom(a, 0), mdl_lstr(x),
                     (long long)t, (long long)n);
  bool has_static = a->n_bottom > 2 + n_hidden;
  int64_t static_dim = 0;
  if (has_static) {
    const mdl_shape *s = &a->bottom[2];
    if (s->n < 1 || s->d[0] != n)
      return mdl_lfail(a, err,
                       "bottom \"%s\" is %s but bottom \"%s\" is %s: the static input's "
                       "first axis must be N = %lld",
                       mdl_lbottom(a, 2), mdl_lstr(s), mdl_lbottom(a, 0), mdl_lstr(x),
                       (long long)n);
    static_dim = mdl_lcount(s, 1, s->n);
  }
  mdl_shape state = {.n = 3, .d = {1, n, h}};
  for (int i = 0; i < n_hidden; i++) {
    int b = 2 + (has_static ? 1 : 0) + i;
    if (!mdl_shape_eq(&a->bottom[b], &state))
      return mdl_lfail(a, err, "bottom \"%s\" is %s but the hidden state must be %s",
                       mdl_lbottom(a, b), mdl_lstr(&a->bottom[b]), mdl_lstr(&state));
  }
  mdl_shape out = {.n = 3, .d = {t, n, h}};
  a->top[0] = out;
  for (int i = 0; i < n_hidden; i++) a->top[1 + i] = state;

  int64_t in = mdl_lcount(x, 2, x->n), g = lstm ? 4 * h : h;
  int k = 0;
  set2(&a->param[k++], g, in);                         /* W_xc / W_xh */
  set1(&a->param[k++], g);                             /* b_c / b_h */
  if (has_static) set2(&a->param[k++], g, static_dim); /* W_xc_static / W_xh_static */
  set2(&a->param[k++], g, h);                          /* W_hc / W_hh */
  if (!lstm) {
    set2(&a->param[k++], h, h); /* W_ho */
    set1(&a->param[k++], h);    /* b_o */
  }
  a->n_param = k;
  return MDL_OK;
}

mdl_status mdl_shape_rnn(mdl_shape_args *a, mdl_error *err) {
  return recurrent(a, false, err);
}

mdl_status mdl_shape_lstm(mdl_shape_args *a, mdl_error *err) {
  return recurrent(a, true, err);
}

mdl_status mdl_shape_lstm_unit(mdl_shape_args *a, mdl_error *err) {
  /* c_prev 1 x N x H, gates 1 x N x 4H, cont 1 x N -> c, h 1 x N x H. */
  mdl_status st = mdl_laxes(a, 0, 3, 3, err);
  if (st == MDL_OK) st = mdl_laxes(a, 1, 3, 3, err);
  if (st == MDL_OK) st = mdl_laxes(a, 2, 2, 2, err);
  if (st != MDL_OK) return st;
  const mdl_shape *c = &a->bottom[0];
  int64_t n = c->d[1], h = c->d[2];
  for (int i = 0; i < 3; i++)
    if (a->bottom[i].d[0] != 1 || a->bottom[i].d[1] != n)
      return mdl_lfail(a, err,
                       "bottom \"%s\" is %s but bottom \"%s\" is %s: all must be 1 x N "
                       "(x ...)",
                       mdl_lbottom(a, i), mdl_lstr(&a->bottom[i]), mdl_lbottom(a, 0), mdl_lstr(c));
  if (a->bottom[1].d[2] != 4 * h)
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s: the gate input needs "
                     "4 x %lld = %lld values per item",
                     mdl_lbottom(a, 1), mdl_lstr(&a->bottom[1]), mdl_lbottom(a, 0), mdl_lstr(c),
                     (long long)h, (long long)(4 * h));
  a->top[0] = *c;
  a->top[1] = *c;
  return MDL_OK;
}
