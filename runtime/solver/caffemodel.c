/* .caffemodel and .solverstate reading and writing; see caffemodel.h. */
#include "runtime/solver/caffemodel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEED_FIELD 1000

static mdl_status write_message(const ProtobufCMessage *m, const char *path, mdl_error *err) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return mdl_errorf(err, MDL_ERR_NOMEM, "%s: %zu bytes do not fit in memory", path, n);
  protobuf_c_message_pack(m, buf);
  mdl_status st = mdl_file_write_atomic(path, buf, n, err);
  free(buf);
  return st;
}

/* ---- blobs ---- */

static bool has_legacy(const Caffe__BlobProto *b) {
  return b->has_num || b->has_channels || b->has_height || b->has_width;
}

/* Product of dim[0..n), or -1 when an axis is negative or it overflows
 * (sizes come from the file). */
static int64_t shape_count(const int64_t *dim, int n) {
  int64_t c = 1;
  for (int i = 0; i < n; i++)
    if (dim[i] < 0 || __builtin_mul_overflow(c, dim[i], &c)) return -1;
  return c;
}

int64_t mdl_blob_proto_shape(const Caffe__BlobProto *b, int *n_axes, int64_t dim[8]) {
  if (b->shape) {
    int n = (int)(b->shape->n_dim < 8 ? b->shape->n_dim : 8);
    for (int i = 0; i < n; i++) dim[i] = b->shape->dim[i];
    *n_axes = n;
    return b->shape->n_dim > 8 ? -1 : shape_count(dim, n);
  }
  if (has_legacy(b)) {
    dim[0] = b->num;
    dim[1] = b->channels;
    dim[2] = b->height;
    dim[3] = b->width;
    *n_axes = 4;
    return shape_count(dim, 4);
  }
  *n_axes = 0;
  return -1;
}

static void proto_shape_str(const Caffe__BlobProto *b, char *buf, size_t size) {
  int n;
  int64_t d[8];
  if (mdl_blob_proto_shape(b, &n, d) < 0 && n == 0) {
    snprintf(buf, size, "(no shape, %zu values)", b->n_data ? b->n_data : b->n_double_data);
    return;
  }
  size_t used = 0;
  buf[0] = 0;
  for (int i = 0; i < n && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "x" : "", (long long)d[i]);
  if (n == 0) snprintf(buf, size, "scalar");
}

bool mdl_blob_proto_fits(const Caffe__BlobProto *b, const mdl_tensor *t) {
  if (b->shape) {
    if ((int)b->shape->n_dim != t->n) return false;
    for (int i = 0; i < t->n; i++)
      if (b->shape->dim[i] != t->d[i]) return false;
    return true;
  }
  if (has_legacy(b)) {
    if (t->n > 4) return false;
    int64_t legacy[4] = {b->num, b->channels, b->height, b->width};
    for (int i = 0; i < 4; i++) {
      int ax = t->n - 4 + i; /* Caffe's LegacyShape: missing leading axes are 1 */
      int64_t v = ax < 0 ? 1 : t->d[ax];
      if (v != legacy[i]) return false;
    }
    return true;
  }
  size_t n = b->n_data ? b->n_data : b->n_double_data;
  return (int64_t)n == t->count;
}

mdl_status mdl_blob_proto_values(const Caffe__BlobProto *b, float *dst, int64_t count,
                                 const char *what, mdl_error *err) {
  if (b->n_double_data && !b->n_data) {
    if ((int64_t)b->n_double_data != count)
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: %zu double values, expected %lld", what,
                        b->n_double_data, (long long)count);
    for (int64_t i = 0; i < count; i++) dst[i] = (float)b->double_data[i];
    return MDL_OK;
  }
  if ((int64_t)b->n_data != count)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: %zu values, expected %lld", what, b->n_data,
                      (long long)count);
  if (count) memcpy(dst, b->data, (size_t)count * sizeof(float));
  return MDL_OK;
}

/* ---- .caffemodel ---- */

static bool looks_like_text(const uint8_t *p, size_t n) {
  size_t k = n < 256 ? n : 256;
  for (size_t i = 0; i < k; i++)
    if (p[i] < 9 || (p[i] > 13 && p[i] < 32) || p[i] > 126) return false;
  return k > 0;
}

mdl_status mdl_caffemodel_read(const char *path, Caffe__NetParameter **out, mdl_error *err) {
  *out = NULL;
  char *text;
  size_t len;
  mdl_status st = mdl_file_read(path, &text, &len, err);
  if (st != MDL_OK) return st;
  uint8_t *buf = (uint8_t *)text;
  Caffe__NetParameter *np = caffe__net_parameter__unpack(NULL, len, buf);
  if (!np || (np->n_layer == 0 && np->n_layers == 0)) {
    Caffe__SolverState *ss = np ? NULL : caffe__solver_state__unpack(NULL, len, buf);
    bool text = looks_like_text(buf, len);
    if (np) caffe__net_parameter__free_unpacked(np, NULL);
    free(buf);
    if (ss) {
      caffe__solver_state__free_unpacked(ss, NULL);
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "%s is a .solverstate (optimiser state), not a .caffemodel: pass it to "
                        "--resume, or pass the _iter_N.caffemodel written beside it to --weights",
                        path);
    }
    if (text)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "%s is a text file, not a binary .caffemodel (weights)", path);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s is not a .caffemodel: no binary NetParameter with layers in it", path);
  }
  free(buf);
  *out = np;
  return MDL_OK;
}

static int find_net_layer(const mdl_net *net, const char *name) {
  if (!name) return -1;
  for (int i = 0; i < mdl_net_n_layers(net); i++)
    if (mdl_net_layer(net, i) && strcmp(mdl_net_layer_name(net, i), name) == 0) return i;
  return -1;
}

static mdl_status copy_layer(mdl_net *net, const char *what, const char *name, size_t n_blobs,
                             Caffe__BlobProto *const *blobs, int *n_loaded, mdl_error *err) {
  int i = find_net_layer(net, name);
  if (i < 0) return MDL_OK; /* Caffe: "Ignoring source layer" */
  mdl_layer *l = mdl_net_layer(net, i);
  if (n_blobs == 0 && l->n_param == 0) return MDL_OK; /* nothing to copy */
  if ((int)n_blobs != l->n_param)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: layer \"%s\" has %zu blobs in the file but %d in the net", what, name,
                      n_blobs, l->n_param);
  for (int j = 0; j < l->n_param; j++)
    if (!mdl_blob_proto_fits(blobs[j], &l->param[j])) {
      char a[128], b[128];
      proto_shape_str(blobs[j], a, sizeof a);
      mdl_tensor_shape_str(&l->param[j], b, sizeof b);
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "%s: cannot copy parameter %d of layer \"%s\": shape %s in the file, %s "
                        "in the net (rename the layer to learn it from scratch)",
                        what, j, name, a, b);
    }
  const mdl_backend *be = mdl_net_backend(net);
  for (int j = 0; j < l->n_param; j++) {
    char w[256];
    snprintf(w, sizeof w, "%s: layer \"%s\" parameter %d", what, name, j);
    mdl_tensor *t = &l->param[j];
    /* Straight into the weights when the backend's memory is the host's. */
    float *h = be->iface->host_visible ? t->data : mdl_xmalloc((size_t)t->count * sizeof *h + 1);
    mdl_status st = mdl_blob_proto_values(blobs[j], h, t->count, w, err);
    if (h != t->data) {
      if (st == MDL_OK) mdl_backend_to_device(be, t->data, h, t->count);
      free(h);
    }
    if (st != MDL_OK) return st;
  }
  (*n_loaded)++;
  return MDL_OK;
}

mdl_status mdl_caffemodel_copy(mdl_net *net, const Caffe__NetParameter *np, const char *what,
                               int *n_loaded, mdl_error *err) {
  int loaded = 0;
  mdl_status st = MDL_OK;
  for (size_t k = 0; k < np->n_layer && st == MDL_OK; k++)
    st = copy_layer(net, what, np->layer[k]->name, np->layer[k]->n_blobs, np->layer[k]->blobs,
                    &loaded, err);
  for (size_t k = 0; k < np->n_layers && st == MDL_OK; k++)
    st = copy_layer(net, what, np->layers[k]->name, np->layers[k]->n_blobs, np->layers[k]->blobs,
                    &loaded, err);
  if (n_loaded) *n_loaded = loaded;
  return st;
}

mdl_status mdl_caffemodel_load(mdl_net *net, const char *path, int *n_loaded, mdl_error *err) {
  Caffe__NetParameter *np;
  mdl_status st = mdl_caffemodel_read(path, &np, err);
  if (st != MDL_OK) return st;
  st = mdl_caffemodel_copy(net, np, path, n_loaded, err);
  caffe__net_parameter__free_unpacked(np, NULL);
  return st;
}

mdl_status mdl_caffemodel_save(const mdl_net *net, const char *path, mdl_error *err) {
  const mdl_graph *g = mdl_net_graph(net);
  int n = mdl_net_n_layers(net);
  Caffe__NetParameter np = CAFFE__NET_PARAMETER__INIT;
  np.name = g->net ? g->net->name : NULL;
  Caffe__LayerParameter *lps = mdl_xcalloc((size_t)n + 1, sizeof *lps);
  Caffe__LayerParameter **lpp = mdl_xcalloc((size_t)n + 1, sizeof *lpp);
  int total_blobs = 0;
  for (int i = 0; i < n; i++) {
    mdl_layer *l = mdl_net_layer(net, i);
    if (l) total_blobs += l->n_param;
  }
  Caffe__BlobProto *bp = mdl_xcalloc((size_t)total_blobs + 1, sizeof *bp);
  Caffe__BlobProto **bpp = mdl_xcalloc((size_t)total_blobs + 1, sizeof *bpp);
  Caffe__BlobShape *bs = mdl_xcalloc((size_t)total_blobs + 1, sizeof *bs);
  int64_t *dims = mdl_xcalloc((size_t)total_blobs * MDL_TENSOR_MAX_AXES + 1, sizeof *dims);
  /* Host copies of the weights when the backend's memory is not the host's. */
  const mdl_backend *be = mdl_net_backend(net);
  float **copies =
      be->iface->host_visible ? NULL : mdl_xcalloc((size_t)total_blobs + 1, sizeof *copies);
  int nb = 0;
  for (int i = 0; i < n; i++) {
    const Caffe__LayerParameter *src = g->layers[i].param;
    lps[i] = *src; /* shallow: packing only reads it */
    lps[i].n_blobs = 0;
    lps[i].blobs = NULL;
    mdl_layer *l = mdl_net_layer(net, i);
    if (l && l->n_param) {
      lps[i].blobs = &bpp[nb];
      lps[i].n_blobs = (size_t)l->n_param;
      for (int j = 0; j < l->n_param; j++, nb++) {
        const mdl_tensor *t = &l->param[j];
        caffe__blob_shape__init(&bs[nb]);
        bs[nb].n_dim = (size_t)t->n;
        bs[nb].dim = &dims[nb * MDL_TENSOR_MAX_AXES];
        for (int k = 0; k < t->n; k++) bs[nb].dim[k] = t->d[k];
        caffe__blob_proto__init(&bp[nb]);
        bp[nb].shape = &bs[nb];
        bp[nb].n_data = (size_t)t->count;
        bp[nb].data = t->data;
        if (copies) {
          copies[nb] = mdl_xmalloc((size_t)t->count * sizeof(float) + 1);
          mdl_backend_to_host(be, copies[nb], t->data, t->count);
          bp[nb].data = copies[nb];
        }
        bpp[nb] = &bp[nb];
      }
    }
    lpp[i] = &lps[i];
  }
  np.n_layer = (size_t)n;
  np.layer = lpp;
  mdl_status st = write_message(&np.base, path, err);
  for (int k = 0; copies && k < nb; k++) free(copies[k]);
  free(copies);
  free(lps);
  free(lpp);
  free(bp);
  free(bpp);
  free(bs);
  free(dims);
  return st;
}

char *mdl_snapshot_name(const char *prefix, int iter, const char *ext) {
  size_t n = strlen(prefix) + strlen(ext) + 32;
  char *s = mdl_xmalloc(n);
  snprintf(s, n, "%s_iter_%d%s", prefix, iter, ext);
  return s;
}

int mdl_snapshot_newest(const char *prefix) {
  const char *slash = strrchr(prefix, '/');
  const char *base = slash ? slash + 1 : prefix;
  size_t bl = strlen(base);
  char dir[4096];
  if (slash)
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - prefix) > 0 ? (int)(slash - prefix) : 1,
             prefix);
  else
    snprintf(dir, sizeof dir, ".");
  DIR *d = opendir(dir);
  long best = -1;
  if (!d) return -1;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *n = e->d_name;
    if (strncmp(n, base, bl) != 0 || strncmp(n + bl, "_iter_", 6) != 0) continue;
    char *end;
    long it = strtol(n + bl + 6, &end, 10);
    if (end == n + bl + 6 || strcmp(end, ".solverstate") != 0 || it > INT_MAX) continue;
    if (it > best) best = it;
  }
  closedir(d);
  return (int)best;
}

/* ---- .solverstate ---- */

mdl_status mdl_solverstate_save(mdl_solver *s, const char *learned_net, uint64_t seed,
                                const char *path, mdl_error *err) {
  int nb = mdl_solver_n_blobs(s), sets = mdl_solver_history_sets(s);
  const mdl_solver_blob *blobs = mdl_solver_blobs(s);
  int nh = nb * sets;
  Caffe__SolverState ss = CAFFE__SOLVER_STATE__INIT;
  ss.has_iter = 1;
  ss.iter = mdl_solver_iter(s);
  ss.learned_net = (char *)learned_net;
  ss.has_current_step = 1;
  ss.current_step = mdl_solver_current_step(s);
  Caffe__BlobProto *bp = mdl_xcalloc((size_t)nh + 1, sizeof *bp);
  Caffe__BlobProto **bpp = mdl_xcalloc((size_t)nh + 1, sizeof *bpp);
  Caffe__BlobShape *bs = mdl_xcalloc((size_t)nh + 1, sizeof *bs);
  /* History in host memory: the solver's own on host-visible backends. */
  bool host = mdl_solver_backend(s)->iface->host_visible;
  float *copy[2] = {NULL, NULL};
  for (int k = 0; k < sets; k++) {
    float *h = mdl_solver_history(s, k);
    if (!host) {
      h = copy[k] = mdl_xmalloc(mdl_solver_total(s) * sizeof(float) + 1);
      mdl_solver_history_get(s, k, h);
    }
    for (int i = 0; i < nb; i++) {
      int m = k * nb + i;
      caffe__blob_shape__init(&bs[m]);
      bs[m].n_dim = (size_t)blobs[i].n_axes;
      bs[m].dim = (int64_t *)blobs[i].dim;
      caffe__blob_proto__init(&bp[m]);
      bp[m].shape = &bs[m];
      bp[m].n_data = blobs[i].count;
      bp[m].data = h + blobs[i].offset;
      bpp[m] = &bp[m];
    }
  }
  ss.n_history = (size_t)nh;
  ss.history = bpp;
  uint8_t seed_bytes[8];
  for (int i = 0; i < 8; i++) seed_bytes[i] = (uint8_t)(seed >> (8 * i));
  ProtobufCMessageUnknownField uf = {
      .tag = SEED_FIELD, .wire_type = PROTOBUF_C_WIRE_TYPE_64BIT, .len = 8, .data = seed_bytes};
  ss.base.n_unknown_fields = 1;
  ss.base.unknown_fields = &uf;
  mdl_status st = write_message(&ss.base, path, err);
  free(copy[0]);
  free(copy[1]);
  free(bp);
  free(bpp);
  free(bs);
  return st;
}

static bool printable(const char *s) {
  for (; s && *s; s++)
    if ((unsigned char)*s < 32) return false;
  return true;
}

static mdl_status not_a_state(const char *path, const uint8_t *buf, size_t len, mdl_error *err) {
  Caffe__NetParameter *np = caffe__net_parameter__unpack(NULL, len, buf);
  bool model = np && (np->n_layer || np->n_layers);
  if (np) caffe__net_parameter__free_unpacked(np, NULL);
  if (model)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s is a .caffemodel (weights), not a .solverstate: to start from these "
                      "weights use --weights %s; to resume, pass the _iter_N.solverstate written "
                      "beside it",
                      path, path);
  if (looks_like_text(buf, len))
    return mdl_errorf(err, MDL_ERR_INVALID, "%s is a text file, not a binary .solverstate", path);
  return mdl_errorf(err, MDL_ERR_INVALID, "%s is not a .solverstate (binary SolverState)", path);
}

mdl_status mdl_solverstate_load(const char *path, mdl_solver *s, char **learned_net, uint64_t *seed,
                                bool *has_seed, mdl_error *err) {
  if (learned_net) *learned_net = NULL;
  if (has_seed) *has_seed = false;
  char *text;
  size_t len;
  mdl_status st = mdl_file_read(path, &text, &len, err);
  if (st != MDL_OK) return st;
  uint8_t *buf = (uint8_t *)text;
  Caffe__SolverState *ss = caffe__solver_state__unpack(NULL, len, buf);
  bool bad = !ss || !ss->has_iter || !printable(ss->learned_net);
  for (unsigned k = 0; ss && k < ss->base.n_unknown_fields; k++)
    if (ss->base.unknown_fields[k].tag == 100) bad = true; /* NetParameter.layer */
  if (bad) {
    if (ss) caffe__solver_state__free_unpacked(ss, NULL);
    st = not_a_state(path, buf, len, err);
    free(buf);
    return st;
  }
  free(buf);
  /* a state from outside the schedule would train a negative count of
   * iterations or none at all (and write no weights): say so instead */
  int max_iter = mdl_solver_cfg(s)->max_iter;
  if (ss->iter < 0 || ss->current_step < 0 || (max_iter > 0 && ss->iter >= max_iter)) {
    if (ss->iter >= 0 && ss->current_step >= 0)
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: iteration %d, and the solver's max_iter is %d: nothing left to "
                      "train (raise max_iter to continue)",
                      path, ss->iter, max_iter);
    else
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: iteration %d, step %d: not a position in any schedule (damaged or "
                      "forged state)",
                      path, ss->iter, ss->current_step);
    caffe__solver_state__free_unpacked(ss, NULL);
    return st;
  }
  int nb = mdl_solver_n_blobs(s), sets = mdl_solver_history_sets(s);
  const mdl_solver_blob *blobs = mdl_solver_blobs(s);
  if ((int)ss->n_history != nb * sets) {
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "%s: %zu history blobs, but this net and the %s solver need %d (%d learnable "
                    "blobs x %d)",
                    path, ss->n_history, mdl_solver_kind_name(mdl_solver_cfg(s)->kind), nb * sets,
                    nb, sets);
    caffe__solver_state__free_unpacked(ss, NULL);
    return st;
  }
  for (int m = 0; m < nb * sets; m++) {
    const Caffe__BlobProto *b = ss->history[m];
    size_t have = b->n_data ? b->n_data : b->n_double_data;
    if (have != blobs[m % nb].count) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: history blob %d holds %zu values, expected %zu",
                      path, m, have, blobs[m % nb].count);
      caffe__solver_state__free_unpacked(ss, NULL);
      return st;
    }
  }
  /* Into the history in place on host-visible backends, else through a
   * host copy of each set. */
  bool host = mdl_solver_backend(s)->iface->host_visible;
  float *h = host ? NULL : mdl_xcalloc(mdl_solver_total(s) + 1, sizeof *h);
  for (int k = 0; k < sets; k++) {
    float *base = host ? mdl_solver_history(s, k) : h;
    for (int i = 0; i < nb; i++)
      mdl_blob_proto_values(ss->history[k * nb + i], base + blobs[i].offset,
                            (int64_t)blobs[i].count, path, err);
    if (!host) mdl_solver_history_put(s, k, h);
  }
  free(h);
  mdl_solver_set_position(s, ss->iter, ss->current_step);
  for (unsigned k = 0; k < ss->base.n_unknown_fields; k++) {
    const ProtobufCMessageUnknownField *u = &ss->base.unknown_fields[k];
    if (u->tag == SEED_FIELD && u->wire_type == PROTOBUF_C_WIRE_TYPE_64BIT && u->len == 8) {
      uint64_t v = 0;
      for (int i = 0; i < 8; i++) v |= (uint64_t)u->data[i] << (8 * i);
      if (seed) *seed = v;
      if (has_seed) *has_seed = true;
    }
  }
  if (learned_net && ss->learned_net && *ss->learned_net) {
    const char *ln = ss->learned_net;
    struct stat sb;
    if (stat(ln, &sb) == 0 || ln[0] == '/') {
      *learned_net = mdl_xstrdup(ln);
    } else {
      const char *base = strrchr(ln, '/');
      base = base ? base + 1 : ln;
      char *dir = mdl_path_dir(path);
      size_t n = strlen(dir) + strlen(base) + 2;
      *learned_net = mdl_xmalloc(n);
      snprintf(*learned_net, n, "%s/%s", dir, base);
      free(dir);
    }
  }
  caffe__solver_state__free_unpacked(ss, NULL);
  return MDL_OK;
}
