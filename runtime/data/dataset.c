/* Data sets and partitions: probing a source, the memory-budget check,
 * building a partition from its lineage in one fused pass, whole data sets,
 * `from` resolution and the plan description. Sources live in source_*.c,
 * per-record stages in stages.c, batches in batch.c. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/pb.h"
#include "runtime/data/dataset_impl.h"

char *mdl_data_path(const char *base_dir, const char *p) {
  return mdl_path_join(base_dir, p ? p : "");
}

mdl_status mdl_shape_from_dims(const char *what, const uint32_t *shape, size_t n, int *c, int *h,
                               int *w, mdl_error *err) {
  uint64_t d[3] = {1, 1, 1};
  if (n < 1 || n > 3)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: shape needs 1 to 3 values ([C, H, W], [H, W] or "
                      "[D]), it has %zu",
                      what, n);
  for (size_t i = 0; i < n; i++) {
    if (shape[i] == 0 || shape[i] > (1u << 20))
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: shape value %u", what, shape[i]);
    d[3 - n + i] = shape[i];
  }
  if (d[0] * d[1] * d[2] > (1u << 28))
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: records of %llu values are too big", what,
                      (unsigned long long)(d[0] * d[1] * d[2]));
  *c = (int)d[0];
  *h = (int)d[1];
  *w = (int)d[2];
  return MDL_OK;
}

const mdl_source_iface *mdl_source_for(const Memdl__Source *src, mdl_error *err) {
  switch (src ? src->kind_case : MEMDL__SOURCE__KIND__NOT_SET) {
    case MEMDL__SOURCE__KIND_IDX:
      return &mdl_source_idx;
    case MEMDL__SOURCE__KIND_LMDB:
      return &mdl_source_lmdb;
    case MEMDL__SOURCE__KIND_IMAGE_LIST:
      return &mdl_source_image_list;
    case MEMDL__SOURCE__KIND_CSV:
      return &mdl_source_csv;
    case MEMDL__SOURCE__KIND_SYNTHETIC:
      return &mdl_source_synthetic;
    case MEMDL__SOURCE__KIND_MEMORY:
      return &mdl_source_memory;
    case MEMDL__SOURCE__KIND_HDF5:
      return &mdl_source_hdf5;
    default:
      mdl_errorf(err, MDL_ERR_INVALID,
                 "the source names no kind (idx, lmdb, image_list, csv, synthetic, memory, hdf5)");
      return NULL;
  }
}

static const char *ds_name(const Memdl__DataSet *ds) {
  return ds->name && ds->name[0] ? ds->name : "(unnamed)";
}

static size_t dtype_size(mdl_dtype t) {
  return t == MDL_DTYPE_U8 ? 1 : sizeof(float);
}

static uint64_t record_bytes(const mdl_data_info *info) {
  return (uint64_t)info->channels * info->height * info->width * dtype_size(info->dtype) +
         sizeof(int32_t) + sizeof(int64_t);
}

/* Probe shared by mdl_data_probe and the builders. */
static mdl_status probe(const Memdl__DataSet *ds, const char *base_dir, mdl_stage_plan *plan,
                        const mdl_source_iface **iface, mdl_data_info *info, mdl_error *err) {
  memset(info, 0, sizeof *info);
  if (!ds) return mdl_errorf(err, MDL_ERR_INVALID, "no data set");
  if (!ds->source) {
    if (ds->from)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "data set \"%s\": built from \"%s\", which must be resolved first "
                        "(mdl_data_resolve)",
                        ds_name(ds), ds->from);
    return mdl_errorf(err, MDL_ERR_INVALID, "data set \"%s\" has no source", ds_name(ds));
  }
  mdl_status st = mdl_stages_compile(ds, plan, err);
  if (!st) {
    *iface = mdl_source_for(ds->source, err);
    if (!*iface) st = MDL_ERR_INVALID;
  }
  if (!st) {
    mdl_src_ctx ctx = {.src = ds->source, .base_dir = base_dir, .plan = plan};
    st = (*iface)->probe(&ctx, info, err);
  }
  if (st) {
    mdl_error_prefix(err, "data set \"%s\": ", ds_name(ds));
    return st;
  }
  if (plan->resize_h) {
    info->height = plan->resize_h;
    info->width = plan->resize_w;
  }
  if (plan->clean && plan->num_classes) info->num_classes = (int)plan->num_classes;
  info->crop = plan->crop;
  info->selected = (int64_t)llround((double)info->records * plan->keep_fraction);
  info->bytes = (uint64_t)info->selected * record_bytes(info);
  if (plan->crop && info->records && (plan->crop > info->height || plan->crop > info->width))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "data set \"%s\": crop_size %d is larger than its %dx%d records", ds_name(ds),
                      plan->crop, info->height, info->width);
  return MDL_OK;
}

mdl_status mdl_data_probe(const Memdl__DataSet *ds, const char *base_dir, mdl_data_info *info,
                          mdl_error *err) {
  mdl_stage_plan plan;
  const mdl_source_iface *iface;
  return probe(ds, base_dir, &plan, &iface, info, err);
}

static const char *dtype_name(mdl_dtype t) {
  return t == MDL_DTYPE_U8 ? "uint8" : "float";
}

static mdl_status over_budget(mdl_error *err, const char *what, uint64_t need, int64_t records,
                              const mdl_data_info *info, uint64_t budget) {
  return mdl_errorf(err, MDL_ERR_NOMEM,
                    "%s needs about %.1f MiB (%lld records of %dx%dx%d %s), over the memory "
                    "budget of %.1f MiB; nothing was loaded (raise memory_budget_mb, sample, or "
                    "use more partitions and workers)",
                    what, need / 1048576.0, (long long)records, info->channels, info->height,
                    info->width, dtype_name(info->dtype), budget / 1048576.0);
}

void mdl_partition_free(mdl_partition *p) {
  if (!p) return;
  free(p->data);
  free(p->label);
  free(p->record);
  free(p->class_count);
  free(p);
}

/* Shrinks storage to n records (keeps it when realloc refuses). */
static void shrink(mdl_partition *p, size_t rec_bytes) {
  if (p->n == 0) {
    free(p->data);
    free(p->label);
    free(p->record);
    p->data = NULL;
    p->label = NULL;
    p->record = NULL;
    return;
  }
  void *d = realloc(p->data, (size_t)p->n * rec_bytes);
  if (d) p->data = d;
  int32_t *l = realloc(p->label, (size_t)p->n * sizeof *l);
  if (l) p->label = l;
  int64_t *r = realloc(p->record, (size_t)p->n * sizeof *r);
  if (r) p->record = r;
}

static void count_classes(mdl_partition *p, int64_t max_label, uint32_t num_classes) {
  int64_t k = num_classes ? num_classes : max_label + 1;
  if (k <= 0 || k > (1 << 24)) k = 0; /* no counting for absurd label ranges */
  p->num_classes = (int)k;
  if (!k) return;
  p->class_count = mdl_xcalloc((size_t)k, sizeof *p->class_count);
  for (int64_t i = 0; i < p->n; i++)
    if (p->label[i] >= 0 && p->label[i] < k) p->class_count[p->label[i]]++;
}

mdl_status mdl_partition_build(const Memdl__PartitionLineage *lineage, const mdl_build_opts *opts,
                               mdl_partition **out, mdl_error *err) {
  *out = NULL;
  double t0 = (mdl_now() * 1e3);
  if (!lineage || !lineage->data)
    return mdl_errorf(err, MDL_ERR_INVALID, "lineage without a data set");
  const Memdl__DataSet *ds = lineage->data;
  uint32_t count = lineage->count ? lineage->count : 1;
  if (lineage->index >= count)
    return mdl_errorf(err, MDL_ERR_INVALID, "data set \"%s\": partition %u of %u does not exist",
                      ds_name(ds), lineage->index, count);
  mdl_stage_plan plan;
  const mdl_source_iface *iface;
  mdl_data_info info;
  mdl_status st = probe(ds, lineage->base_dir, &plan, &iface, &info, err);
  if (st) return st;

  mdl_sink sink;
  memset(&sink, 0, sizeof sink);
  mdl_select_init(&sink.sel, &plan, lineage->index, count, ds->partition_scheme, info.records);
  int64_t upper = mdl_select_count(&sink.sel);
  int64_t expect = (int64_t)llround((double)upper * plan.keep_fraction);
  uint64_t need = (uint64_t)expect * record_bytes(&info);
  uint64_t budget = opts ? opts->memory_budget_bytes : 0;
  if (budget && need > budget) {
    char what[160];
    snprintf(what, sizeof what, "data set \"%s\" partition %u of %u", ds_name(ds), lineage->index,
             count);
    return over_budget(err, what, need, expect, &info, budget);
  }

  mdl_partition *p = mdl_xcalloc(1, sizeof *p);
  p->index = lineage->index;
  p->count = count;
  p->dtype = info.dtype;
  p->channels = info.channels;
  p->height = info.height;
  p->width = info.width;
  sink.plan = &plan;
  sink.p = p;
  sink.elems = (uint64_t)info.channels * info.height * info.width;
  sink.max_label = -1;
  char *src_name = mdl_data_source_str(ds->source);
  sink.src_name = src_name;
  /* Reserve the expected count up front (address space only until
   * touched); growth doubles beyond it. */
  if (expect > 0) {
    int64_t cap = expect + expect / 16 + 16;
    if (cap > upper) cap = upper;
    size_t esz = dtype_size(p->dtype);
    p->data = malloc((size_t)cap * sink.elems * esz);
    p->label = malloc((size_t)cap * sizeof *p->label);
    p->record = malloc((size_t)cap * sizeof *p->record);
    if (!p->data || !p->label || !p->record) {
      st = mdl_errorf(err, MDL_ERR_NOMEM, "data set \"%s\": out of memory reserving %lld records",
                      ds_name(ds), (long long)cap);
      goto fail;
    }
    sink.cap = cap;
  }
  mdl_src_ctx ctx = {.src = ds->source, .base_dir = lineage->base_dir, .plan = &plan};
  st = iface->scan(&ctx, &info, &sink, err);
  if (st) {
    mdl_error_prefix(err, "data set \"%s\": ", ds_name(ds));
    goto fail;
  }
  p->passes = 1;
  shrink(p, sink.elems * dtype_size(p->dtype));
  count_classes(p, sink.max_label, plan.clean ? plan.num_classes : 0);
  p->bytes =
      (uint64_t)p->n * (sink.elems * dtype_size(p->dtype) + sizeof(int32_t) + sizeof(int64_t));
  p->build_ms = (mdl_now() * 1e3) - t0;
  free(sink.tmp);
  free(src_name);
  *out = p;
  return MDL_OK;
fail:
  free(sink.tmp);
  free(src_name);
  mdl_partition_free(p);
  return st;
}

Memdl__PartitionLineage *mdl_lineage_new(const Memdl__DataSet *ds, uint32_t index, uint32_t count,
                                         const char *base_dir) {
  Memdl__PartitionLineage l = MEMDL__PARTITION_LINEAGE__INIT;
  l.data = (Memdl__DataSet *)ds;
  l.has_index = 1;
  l.index = index;
  l.has_count = 1;
  l.count = count;
  l.base_dir = (char *)base_dir;
  return mdl_pb_dup(&l);
}

void mdl_dataset_free(mdl_dataset *d) {
  if (!d) return;
  for (uint32_t i = 0; i < d->n_parts; i++) mdl_partition_free(d->part[i]);
  free(d->part);
  mdl_transform_free(d->transform);
  free(d->class_count);
  free(d->name);
  free(d);
}

mdl_status mdl_dataset_build(const Memdl__DataSet *ds, const char *base_dir, uint32_t partitions,
                             const mdl_build_opts *opts, mdl_dataset **out, mdl_error *err) {
  *out = NULL;
  double t0 = (mdl_now() * 1e3);
  uint32_t count = partitions ? partitions : ds && ds->partitions ? ds->partitions : 1;
  mdl_stage_plan plan;
  const mdl_source_iface *iface;
  mdl_data_info info;
  mdl_status st = probe(ds, base_dir, &plan, &iface, &info, err);
  if (st) return st;
  uint64_t budget = opts ? opts->memory_budget_bytes : 0;
  if (budget && info.bytes > budget) {
    char what[160];
    snprintf(what, sizeof what, "data set \"%s\"", ds_name(ds));
    return over_budget(err, what, info.bytes, info.selected, &info, budget);
  }
  mdl_dataset *d = mdl_xcalloc(1, sizeof *d);
  d->name = mdl_xstrdup(ds_name(ds));
  d->part = mdl_xcalloc(count, sizeof *d->part);
  d->dtype = info.dtype;
  d->channels = info.channels;
  d->height = info.height;
  d->width = info.width;
  Memdl__PartitionLineage lin = MEMDL__PARTITION_LINEAGE__INIT;
  lin.data = (Memdl__DataSet *)ds;
  lin.has_count = 1;
  lin.count = count;
  lin.base_dir = (char *)base_dir;
  for (uint32_t i = 0; i < count; i++) {
    lin.has_index = 1;
    lin.index = i;
    st = mdl_partition_build(&lin, opts, &d->part[i], err);
    if (st) goto fail;
    d->n_parts = i + 1;
  }
  if (info.records > 0 || d->n > 0) {
    st =
        mdl_transform_new(ds, base_dir, info.channels, info.height, info.width, &d->transform, err);
    if (st) {
      mdl_error_prefix(err, "data set \"%s\": ", ds_name(ds));
      goto fail;
    }
  }
  int k = 0;
  for (uint32_t i = 0; i < count; i++)
    k = d->part[i]->num_classes > k ? d->part[i]->num_classes : k;
  d->num_classes = k;
  d->class_count = k ? mdl_xcalloc((size_t)k, sizeof *d->class_count) : NULL;
  bool any = false;
  for (uint32_t i = 0; i < count; i++) {
    const mdl_partition *p = d->part[i];
    d->n += p->n;
    d->scanned += p->scanned;
    d->filtered += p->filtered;
    for (int r = 0; r < MDL_DROP_COUNT; r++) d->dropped[r] += p->dropped[r];
    for (int c = 0; c < p->num_classes; c++) d->class_count[c] += p->class_count[c];
    d->bytes += p->bytes;
    if (p->n) {
      d->vmin = any ? fminf(d->vmin, p->vmin) : p->vmin;
      d->vmax = any ? fmaxf(d->vmax, p->vmax) : p->vmax;
      any = true;
    }
  }
  d->build_ms = (mdl_now() * 1e3) - t0;
  *out = d;
  return MDL_OK;
fail:
  mdl_dataset_free(d);
  return st;
}

/* ---- from ---- */

static const Memdl__DataSet *find_set(Memdl__DataSet *const *sets, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (sets[i]->name && !strcmp(sets[i]->name, name)) return sets[i];
  return NULL;
}

mdl_status mdl_data_resolve(Memdl__DataSet *const *sets, size_t n_sets, const Memdl__DataSet *ds,
                            Memdl__DataSet **out, mdl_error *err) {
  *out = NULL;
  if (ds->from && ds->from[0] && ds->source)
    return mdl_errorf(err, MDL_ERR_INVALID, "data set \"%s\" has both a source and from: \"%s\"",
                      ds_name(ds), ds->from);
  /* chain[0] = ds, chain[k] = the set chain[k-1] is built from. */
  const Memdl__DataSet **chain = mdl_xcalloc(n_sets + 2, sizeof *chain);
  size_t depth = 0;
  const Memdl__DataSet *cur = ds;
  for (;;) {
    chain[depth++] = cur;
    if (!cur->from || !cur->from[0]) break;
    const Memdl__DataSet *next = find_set(sets, n_sets, cur->from);
    if (!next) {
      mdl_status st =
          mdl_errorf(err, MDL_ERR_INVALID,
                     "data set \"%s\" is built from \"%s\", which the job does not define",
                     ds_name(cur), cur->from);
      free(chain);
      return st;
    }
    if (depth > n_sets) {
      free(chain);
      return mdl_errorf(err, MDL_ERR_INVALID, "data set \"%s\": `from` goes round in a cycle",
                        ds_name(ds));
    }
    if (next->from && next->from[0] && next->source) {
      free(chain);
      return mdl_errorf(err, MDL_ERR_INVALID, "data set \"%s\" has both a source and from: \"%s\"",
                        ds_name(next), next->from);
    }
    cur = next;
  }
  Memdl__DataSet *r = mdl_pb_dup(ds);
  if (depth > 1) {
    const Memdl__DataSet *root = chain[depth - 1];
    size_t n = 0;
    for (size_t k = 0; k < depth; k++) n += chain[k]->n_stage;
    Memdl__Stage **stages = mdl_xcalloc(n ? n : 1, sizeof *stages);
    size_t j = 0;
    for (size_t k = depth; k-- > 0;)
      for (size_t i = 0; i < chain[k]->n_stage; i++) stages[j++] = mdl_pb_dup(chain[k]->stage[i]);
    for (size_t i = 0; i < r->n_stage; i++) mdl_pb_free(r->stage[i]);
    free(r->stage);
    r->stage = stages;
    r->n_stage = n;
    mdl_pb_free(r->source);
    r->source = root->source ? mdl_pb_dup(root->source) : NULL;
    free(r->from);
    r->from = NULL;
  }
  free(chain);
  *out = r;
  return MDL_OK;
}

/* ---- descriptions ---- */

typedef struct sbuf {
  char *s;
  size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return;
    }
    b->cap = (b->n + (size_t)k + 1) * 2;
    b->s = mdl_xrealloc(b->s, b->cap);
  }
}

static sbuf sb_new(void) {
  sbuf b = {mdl_xmalloc(128), 0, 128};
  b.s[0] = 0;
  return b;
}

char *mdl_data_source_str(const Memdl__Source *src) {
  sbuf b = sb_new();
  switch (src ? src->kind_case : MEMDL__SOURCE__KIND__NOT_SET) {
    case MEMDL__SOURCE__KIND_IDX:
      sb_printf(&b, "idx %s + %s", src->idx->images ? src->idx->images : "?",
                src->idx->labels ? src->idx->labels : "?");
      break;
    case MEMDL__SOURCE__KIND_LMDB:
      sb_printf(&b, "lmdb %s", src->lmdb->path ? src->lmdb->path : "?");
      break;
    case MEMDL__SOURCE__KIND_IMAGE_LIST:
      sb_printf(&b, "image list %s", src->image_list->list ? src->image_list->list : "?");
      break;
    case MEMDL__SOURCE__KIND_CSV:
      sb_printf(&b, "csv %s", src->csv->path ? src->csv->path : "?");
      break;
    case MEMDL__SOURCE__KIND_SYNTHETIC:
      sb_printf(&b, "synthetic (seed %llu)", (unsigned long long)src->synthetic->seed);
      break;
    case MEMDL__SOURCE__KIND_MEMORY:
      sb_printf(&b, "memory (%zu labels)", src->memory->n_label);
      break;
    case MEMDL__SOURCE__KIND_HDF5:
      sb_printf(&b, "hdf5 %s", src->hdf5->source ? src->hdf5->source : "?");
      break;
    default:
      sb_printf(&b, "no source");
  }
  return b.s;
}

char *mdl_data_describe(const Memdl__DataSet *ds) {
  sbuf b = sb_new();
  static const char *kinds[] = {"?",   "idx",       "lmdb",   "image_list",
                                "csv", "synthetic", "memory", "hdf5"};
  int kc = ds->source ? (int)ds->source->kind_case : 0;
  sb_printf(&b, "%s", ds->source ? (kc >= 1 && kc <= 7 ? kinds[kc] : "?") : "from ");
  if (!ds->source && ds->from) sb_printf(&b, "\"%s\"", ds->from);
  /* Record stages, in order: one fused pass. */
  sb_printf(&b, " -> [decode");
  for (size_t i = 0; i < ds->n_stage; i++) {
    const Memdl__Stage *s = ds->stage[i];
    switch (s->kind_case) {
      case MEMDL__STAGE__KIND_CLEAN:
        sb_printf(&b, ", clean");
        if (s->clean->num_classes) sb_printf(&b, " (%u classes)", s->clean->num_classes);
        break;
      case MEMDL__STAGE__KIND_SPLIT:
        sb_printf(&b, ", split %s%g", s->split->rest ? "rest of " : "", s->split->fraction);
        break;
      case MEMDL__STAGE__KIND_SAMPLE:
        sb_printf(&b, ", sample %g", s->sample->fraction);
        break;
      case MEMDL__STAGE__KIND_RESIZE:
        sb_printf(&b, ", resize %ux%u", s->resize->height, s->resize->width);
        break;
      default:
        break;
    }
  }
  sb_printf(&b, "] 1 fused pass, cached");
  /* Batch stages: one affine map plus crop/mirror. */
  int n_affine = 0, crop = 0;
  bool mirror = false;
  for (size_t i = 0; i < ds->n_stage; i++) {
    const Memdl__Stage *s = ds->stage[i];
    const char *sep = n_affine ? ", " : " -> per batch: affine (";
    if (s->kind_case == MEMDL__STAGE__KIND_TRANSFORM) {
      const Caffe__TransformationParameter *t = s->transform;
      if (t->scale != 1.0f) {
        sb_printf(&b, "%sscale %g", sep, t->scale);
        n_affine++;
        sep = ", ";
      }
      if (t->n_mean_value) {
        sb_printf(&b, "%smean_value", sep);
        n_affine++;
        sep = ", ";
      }
      if (t->mean_file && t->mean_file[0]) {
        sb_printf(&b, "%smean_file", sep);
        n_affine++;
      }
      if (t->crop_size) crop = (int)t->crop_size;
      mirror |= t->mirror;
    } else if (s->kind_case == MEMDL__STAGE__KIND_NORMALIZE) {
      sb_printf(&b, "%snormalize", sep);
      n_affine++;
    }
  }
  if (n_affine) sb_printf(&b, ")");
  const char *sep = n_affine ? ", " : " -> per batch: ";
  if (crop) {
    sb_printf(&b, "%scrop %d (random in TRAIN, centred in TEST)", sep, crop);
    sep = ", ";
  }
  if (mirror) sb_printf(&b, "%smirror", sep);
  return b.s;
}

/* ---- overlap of two data sets drawn from one source ---- */

static bool same_message(const ProtobufCMessage *a, const ProtobufCMessage *b) {
  if (!a || !b) return a == b;
  size_t na = protobuf_c_message_get_packed_size(a), nb = protobuf_c_message_get_packed_size(b);
  if (na != nb) return false;
  uint8_t *x = mdl_xmalloc(na + 1), *y = mdl_xmalloc(nb + 1);
  protobuf_c_message_pack(a, x);
  protobuf_c_message_pack(b, y);
  bool same = memcmp(x, y, na) == 0;
  free(x);
  free(y);
  return same;
}

/* A split of a that b's rest excludes (or the reverse): keep draw < f in
 * one, draw >= g in the other, same seed, f <= g. */
static bool split_excludes(const Memdl__DataSet *a, const Memdl__DataSet *b) {
  for (size_t i = 0; i < a->n_stage; i++) {
    const Memdl__SplitStage *x =
        a->stage[i]->kind_case == MEMDL__STAGE__KIND_SPLIT ? a->stage[i]->split : NULL;
    if (!x || x->rest) continue;
    for (size_t j = 0; j < b->n_stage; j++) {
      const Memdl__SplitStage *y =
          b->stage[j]->kind_case == MEMDL__STAGE__KIND_SPLIT ? b->stage[j]->split : NULL;
      if (y && y->rest && y->seed == x->seed && x->fraction <= y->fraction) return true;
    }
  }
  return false;
}

static void describe_splits(const Memdl__DataSet *d, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  for (size_t i = 0; i < d->n_stage && used < n; i++) {
    if (d->stage[i]->kind_case != MEMDL__STAGE__KIND_SPLIT) continue;
    const Memdl__SplitStage *x = d->stage[i]->split;
    used += (size_t)snprintf(buf + used, n - used, "%ssplit { fraction: %g%s seed: %llu }",
                             used ? ", " : "", x->fraction, x->rest ? " rest: true" : "",
                             (unsigned long long)x->seed);
  }
  if (!used) snprintf(buf, n, "every record");
}

bool mdl_data_overlap(const Memdl__DataSet *a, const Memdl__DataSet *b, char *why, size_t n) {
  if (!a->source || !b->source || !same_message(&a->source->base, &b->source->base)) return false;
  if (split_excludes(a, b) || split_excludes(b, a)) return false;
  char sa[256], sb[256];
  describe_splits(a, sa, sizeof sa);
  describe_splits(b, sb, sizeof sb);
  snprintf(why, n,
           "data sets \"%s\" (%s) and \"%s\" (%s) read the same source and can share records; "
           "give one split { fraction: F } and the other the same split with rest: true",
           a->name ? a->name : "?", sa, b->name ? b->name : "?", sb);
  return true;
}
