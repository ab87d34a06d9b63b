/* Graph passes over the owned net before wiring: phase filtering (Caffe's
 * Net::FilterNet / StateMeetsRule) and Split insertion (Caffe's
 * InsertSplits), plus the name map and messages graph.c shares. Knows
 * nothing of shapes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/suggest.h"
#include "compiler/graph_internal.h"

/* ---- a small string -> int map (open addressing, never shrinks) ---- */

static size_t str_hash(const char *s) {
  size_t h = 1469598103934665603u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

void mdl_strmap_free(mdl_strmap *m) {
  free(m->key);
  free(m->val);
  memset(m, 0, sizeof *m);
}

static size_t map_slot(const mdl_strmap *m, const char *k) {
  size_t i = str_hash(k) & (m->cap - 1);
  while (m->key[i] && strcmp(m->key[i], k) != 0) i = (i + 1) & (m->cap - 1);
  return i;
}

void mdl_strmap_put(mdl_strmap *m, const char *k, int v) {
  if (2 * (m->len + 1) > m->cap) {
    mdl_strmap bigger = {m->cap ? 2 * m->cap : 64, 0, NULL, NULL};
    bigger.key = mdl_xcalloc(bigger.cap, sizeof *bigger.key);
    bigger.val = mdl_xcalloc(bigger.cap, sizeof *bigger.val);
    for (size_t i = 0; i < m->cap; i++)
      if (m->key[i]) mdl_strmap_put(&bigger, m->key[i], m->val[i]);
    mdl_strmap_free(m);
    *m = bigger;
  }
  size_t i = map_slot(m, k);
  if (!m->key[i]) m->len++;
  m->key[i] = k;
  m->val[i] = v;
}

int mdl_strmap_get(const mdl_strmap *m, const char *k) {
  if (!m->cap) return -1;
  size_t i = map_slot(m, k);
  return m->key[i] ? m->val[i] : -1;
}

/* ---- messages and small helpers ---- */

const char *mdl_gname(const char *s) {
  return s ? s : "";
}

mdl_status mdl_graph_layer_fail(const Caffe__LayerParameter *lp, mdl_error *err, const char *fmt,
                                ...) {
  char msg[MDL_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\" (%s): %s", mdl_gname(lp->name),
                    mdl_gname(lp->type), msg);
}

void mdl_push_str(char ***arr, size_t *n, const char *s) {
  *arr = mdl_xrealloc(*arr, (*n + 1) * sizeof **arr);
  (*arr)[(*n)++] = mdl_xstrdup(s);
}

/* ---- phase filtering: Caffe's Net::FilterNet and StateMeetsRule ---- */

static bool has_stage(const Caffe__NetState *s, const char *stage) {
  for (size_t i = 0; i < s->n_stage; i++)
    if (strcmp(mdl_gname(s->stage[i]), mdl_gname(stage)) == 0) return true;
  return false;
}

static bool state_meets_rule(const Caffe__NetState *s, const Caffe__NetStateRule *r) {
  if (r->has_phase && r->phase != s->phase) return false;
  if (r->has_min_level && s->level < r->min_level) return false;
  if (r->has_max_level && s->level > r->max_level) return false;
  for (size_t i = 0; i < r->n_stage; i++)
    if (!has_stage(s, r->stage[i])) return false;
  for (size_t i = 0; i < r->n_not_stage; i++)
    if (has_stage(s, r->not_stage[i])) return false;
  return true;
}

/* Keeps the layers state selects in net->layer; moves the others to
 * *dropped (for messages about blobs they would have produced). */
mdl_status mdl_graph_filter(Caffe__NetParameter *net, const Caffe__NetState *s,
                            Caffe__LayerParameter ***dropped, size_t *n_dropped, mdl_error *err) {
  size_t kept = 0;
  for (size_t i = 0; i < net->n_layer; i++) {
    Caffe__LayerParameter *l = net->layer[i];
    if (l->n_include && l->n_exclude) {
      /* Keep every layer owned exactly once for the caller's cleanup. */
      memmove(net->layer + kept, net->layer + i, (net->n_layer - i) * sizeof *net->layer);
      net->n_layer = kept + (net->n_layer - i);
      return mdl_graph_layer_fail(l, err, "give include rules or exclude rules, not both");
    }
    bool in = l->n_include == 0;
    for (size_t j = 0; in && j < l->n_exclude; j++)
      if (state_meets_rule(s, l->exclude[j])) in = false;
    for (size_t j = 0; !in && j < l->n_include; j++)
      if (state_meets_rule(s, l->include[j])) in = true;
    if (in) {
      net->layer[kept++] = l;
    } else {
      *dropped = mdl_xrealloc(*dropped, (*n_dropped + 1) * sizeof **dropped);
      (*dropped)[(*n_dropped)++] = l;
    }
  }
  net->n_layer = kept;
  return MDL_OK;
}

/* ---- unknown bottoms ---- */

/* Explains why bottom j of layer i names no available blob: a producer
 * dropped by the phase rules, a producer further down, or a typo. */
static mdl_status unknown_bottom(const Caffe__NetParameter *net, size_t i, size_t j,
                                 Caffe__LayerParameter *const *dropped, size_t n_dropped,
                                 const Caffe__NetState *s, const mdl_strmap *known,
                                 mdl_error *err) {
  const Caffe__LayerParameter *l = net->layer[i];
  const char *b = mdl_gname(l->bottom[j]);
  for (size_t k = 0; k < n_dropped; k++)
    for (size_t t = 0; t < dropped[k]->n_top; t++)
      if (strcmp(mdl_gname(dropped[k]->top[t]), b) == 0)
        return mdl_graph_layer_fail(
            l, err,
            "bottom \"%s\" comes from layer \"%s\", which the include/exclude "
            "rules leave out of the %s net",
            b, mdl_gname(dropped[k]->name), s->phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST");
  for (size_t k = i; k < net->n_layer; k++)
    for (size_t t = 0; t < net->layer[k]->n_top; t++)
      if (strcmp(mdl_gname(net->layer[k]->top[t]), b) == 0 &&
          !(k == i && t < l->n_bottom && strcmp(mdl_gname(l->bottom[t]), b) == 0))
        return mdl_graph_layer_fail(l, err,
                                    "bottom \"%s\" is produced only by a later layer (\"%s\")", b,
                                    mdl_gname(net->layer[k]->name));
  const char **names = mdl_xcalloc(known->len ? known->len : 1, sizeof *names);
  size_t n = 0;
  for (size_t k = 0; k < known->cap; k++)
    if (known->key[k]) names[n++] = known->key[k];
  const char *near = mdl_suggest_nearest(b, names, n);
  mdl_status st;
  if (near)
    st = mdl_graph_layer_fail(l, err,
                              "bottom \"%s\" is not produced by any earlier layer; did you mean "
                              "\"%s\"?",
                              b, near);
  else
    st = mdl_graph_layer_fail(l, err, "bottom \"%s\" is not produced by any earlier layer", b);
  free(names);
  return st;
}

/* ---- Split insertion: Caffe's InsertSplits ---- */

static char *split_blob_name(const char *layer, const char *blob, size_t top, int k) {
  size_t n = strlen(layer) + strlen(blob) + 64;
  char *s = mdl_xmalloc(n);
  snprintf(s, n, "%s_%s_%zu_split_%d", blob, layer, top, k);
  return s;
}

static Caffe__LayerParameter *split_layer(const char *layer, const char *blob, size_t top,
                                          int count, float loss_weight) {
  Caffe__LayerParameter *l = mdl_xmalloc(sizeof *l);
  caffe__layer_parameter__init(l);
  size_t n = strlen(layer) + strlen(blob) + 64;
  l->name = mdl_xmalloc(n);
  snprintf(l->name, n, "%s_%s_%zu_split", blob, layer, top);
  l->type = mdl_xstrdup("Split");
  mdl_push_str(&l->bottom, &l->n_bottom, blob);
  l->n_top = (size_t)count;
  l->top = mdl_xcalloc((size_t)count, sizeof *l->top);
  for (int k = 0; k < count; k++) l->top[k] = split_blob_name(layer, blob, top, k);
  if (loss_weight != 0) {
    l->n_loss_weight = (size_t)count;
    l->loss_weight = mdl_xcalloc((size_t)count, sizeof *l->loss_weight);
    l->loss_weight[0] = loss_weight;
  }
  return l;
}

mdl_status mdl_graph_insert_splits(Caffe__NetParameter *net, Caffe__LayerParameter *const *dropped,
                                   size_t n_dropped, const Caffe__NetState *s, mdl_error *err) {
  size_t nl = net->n_layer, n_slots = 0, n_bottoms = 0;
  size_t *top_base = mdl_xcalloc(nl + 1, sizeof *top_base);
  size_t *bot_base = mdl_xcalloc(nl + 1, sizeof *bot_base);
  for (size_t i = 0; i < nl; i++) {
    top_base[i] = n_slots;
    bot_base[i] = n_bottoms;
    n_slots += net->layer[i]->n_top;
    n_bottoms += net->layer[i]->n_bottom;
  }
  /* Per top slot: how many consumers, its explicit loss weight, the next
   * split index; per bottom: the slot it reads. */
  int *count = mdl_xcalloc(n_slots + 1, sizeof *count);
  int *next_k = mdl_xcalloc(n_slots + 1, sizeof *next_k);
  float *loss = mdl_xcalloc(n_slots + 1, sizeof *loss);
  int *src = mdl_xcalloc(n_bottoms + 1, sizeof *src);
  int *slot_layer = mdl_xcalloc(n_slots + 1, sizeof *slot_layer);
  mdl_strmap last = {0};
  mdl_status st = MDL_OK;
  for (size_t i = 0; i < nl && st == MDL_OK; i++) {
    Caffe__LayerParameter *l = net->layer[i];
    for (size_t j = 0; j < l->n_bottom; j++) {
      int slot = mdl_strmap_get(&last, mdl_gname(l->bottom[j]));
      if (slot < 0) {
        st = unknown_bottom(net, i, j, dropped, n_dropped, s, &last, err);
        break;
      }
      src[bot_base[i] + j] = slot;
      count[slot]++;
    }
    for (size_t j = 0; j < l->n_top; j++) {
      slot_layer[top_base[i] + j] = (int)i;
      mdl_strmap_put(&last, mdl_gname(l->top[j]), (int)(top_base[i] + j));
    }
    size_t n_loss = l->n_loss_weight < l->n_top ? l->n_loss_weight : l->n_top;
    for (size_t j = 0; j < n_loss; j++) {
      int slot = mdl_strmap_get(&last, mdl_gname(l->top[j]));
      loss[slot] = l->loss_weight[j];
      if (loss[slot] != 0) count[slot]++;
    }
  }
  mdl_strmap_free(&last);
  if (st == MDL_OK) {
    size_t n_out = 0, cap = nl;
    Caffe__LayerParameter **out = mdl_xcalloc(cap ? cap : 1, sizeof *out);
    for (size_t i = 0; i < nl; i++) {
      Caffe__LayerParameter *l = net->layer[i];
      for (size_t j = 0; j < l->n_bottom; j++) {
        int slot = src[bot_base[i] + j];
        if (count[slot] <= 1) continue;
        size_t owner = (size_t)slot_layer[slot];
        char *name = split_blob_name(mdl_gname(net->layer[owner]->name), mdl_gname(l->bottom[j]),
                                     (size_t)slot - top_base[owner], next_k[slot]++);
        free(l->bottom[j]);
        l->bottom[j] = name;
      }
      if (n_out == cap) out = mdl_xrealloc(out, (cap = 2 * cap + 4) * sizeof *out);
      out[n_out++] = l;
      for (size_t j = 0; j < l->n_top; j++) {
        size_t slot = top_base[i] + j;
        if (count[slot] <= 1) continue;
        if (n_out == cap) out = mdl_xrealloc(out, (cap = 2 * cap + 4) * sizeof *out);
        out[n_out++] =
            split_layer(mdl_gname(l->name), mdl_gname(l->top[j]), j, count[slot], loss[slot]);
        if (loss[slot] != 0) {
          free(l->loss_weight);
          l->loss_weight = NULL;
          l->n_loss_weight = 0;
          next_k[slot]++;
        }
      }
    }
    free(net->layer);
    net->layer = out;
    net->n_layer = n_out;
  }
  free(top_base);
  free(bot_base);
  free(count);
  free(next_k);
  free(loss);
  free(src);
  free(slot_layer);
  return st;
}
