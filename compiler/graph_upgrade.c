/* Caffe's net upgrades (upgrade_proto.cpp) on memdl's owned copy of a net:
 * V1 `layers { type: CONVOLUTION }` to `layer { type: "Convolution" }`,
 * net-level inputs to an Input layer, legacy data transform fields, and old
 * BatchNorm param specs. Moves sub-messages rather than copying them; knows
 * nothing of phases or shapes. */
#include <stdlib.h>
#include <string.h>

#include "compiler/graph_internal.h"
#include "compiler/layers.h"

static const char *str_or(const char *s, const char *def) {
  return s ? s : def;
}

/* Caffe's UpgradeNetDataTransformation for one V1 data layer: the legacy
 * scale/mean_file/crop_size/mirror fields of its *_param (passed by address,
 * as the three parameter types differ) move to transform_param. */
static void move_transform(Caffe__V1LayerParameter *l, protobuf_c_boolean *has_scale, float *scale,
                           char **mean_file, protobuf_c_boolean *has_crop, uint32_t *crop,
                           protobuf_c_boolean *has_mirror, protobuf_c_boolean *mirror) {
  if (!l->transform_param) {
    l->transform_param = mdl_xmalloc(sizeof *l->transform_param);
    caffe__transformation_parameter__init(l->transform_param);
  }
  Caffe__TransformationParameter *t = l->transform_param;
  if (*has_scale) {
    t->has_scale = 1;
    t->scale = *scale;
    *has_scale = 0;
  }
  if (*mean_file) {
    free(t->mean_file);
    t->mean_file = *mean_file;
    *mean_file = NULL;
  }
  if (*has_crop) {
    t->has_crop_size = 1;
    t->crop_size = *crop;
    *has_crop = 0;
  }
  if (*has_mirror) {
    t->has_mirror = 1;
    t->mirror = *mirror;
    *has_mirror = 0;
  }
}

static void upgrade_v1_transform(Caffe__V1LayerParameter *l) {
  if (l->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__DATA && l->data_param) {
    Caffe__DataParameter *p = l->data_param;
    move_transform(l, &p->has_scale, &p->scale, &p->mean_file, &p->has_crop_size, &p->crop_size,
                   &p->has_mirror, &p->mirror);
  } else if (l->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__IMAGE_DATA && l->image_data_param) {
    Caffe__ImageDataParameter *p = l->image_data_param;
    move_transform(l, &p->has_scale, &p->scale, &p->mean_file, &p->has_crop_size, &p->crop_size,
                   &p->has_mirror, &p->mirror);
  } else if (l->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__WINDOW_DATA &&
             l->window_data_param) {
    Caffe__WindowDataParameter *p = l->window_data_param;
    move_transform(l, &p->has_scale, &p->scale, &p->mean_file, &p->has_crop_size, &p->crop_size,
                   &p->has_mirror, &p->mirror);
  }
}

/* Moves a repeated field (count + array) from src to dst. */
#define MOVE_REPEATED(dst, src, field)   \
  do {                                   \
    (dst)->n_##field = (src)->n_##field; \
    (dst)->field = (src)->field;         \
    (src)->n_##field = 0;                \
    (src)->field = NULL;                 \
  } while (0)

/* Moves an optional message field. */
#define MOVE_MSG(dst, src, field) \
  do {                            \
    (dst)->field = (src)->field;  \
    (src)->field = NULL;          \
  } while (0)

/* Caffe's UpgradeV1LayerParameter, moving fields out of v1. */
static mdl_status upgrade_v1_layer(Caffe__V1LayerParameter *v1, size_t index,
                                   Caffe__LayerParameter **out, mdl_error *err) {
  const char *name = str_or(v1->name, "");
  if (v1->layer)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "layers entry %zu (\"%s\") holds a V0 `layer { }` definition; the V0 format "
                      "is not supported (upgrade it with Caffe's upgrade_net_proto_text)",
                      index, name);
  if (!v1->has_type || v1->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__NONE)
    return mdl_errorf(err, MDL_ERR_INVALID, "layers entry %zu (\"%s\") has no type", index, name);
  const mdl_layer_def *def = mdl_layer_find_v1(v1->type);
  if (!def)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "layers entry %zu (\"%s\") has V1 type %d, which "
                      "memdl does not know",
                      index, name, (int)v1->type);
  upgrade_v1_transform(v1);

  Caffe__LayerParameter *l = mdl_xmalloc(sizeof *l);
  caffe__layer_parameter__init(l);
  l->name = v1->name;
  v1->name = NULL;
  l->type = mdl_xstrdup(def->type);
  MOVE_REPEATED(l, v1, bottom);
  MOVE_REPEATED(l, v1, top);
  MOVE_REPEATED(l, v1, include);
  MOVE_REPEATED(l, v1, exclude);
  MOVE_REPEATED(l, v1, blobs);
  MOVE_REPEATED(l, v1, loss_weight);

  /* param names, share modes, blobs_lr and weight_decay become ParamSpecs,
   * as many as the longest of the four lists. */
  size_t np = v1->n_param;
  if (v1->n_blob_share_mode > np) np = v1->n_blob_share_mode;
  if (v1->n_blobs_lr > np) np = v1->n_blobs_lr;
  if (v1->n_weight_decay > np) np = v1->n_weight_decay;
  if (np) {
    l->n_param = np;
    l->param = mdl_xcalloc(np, sizeof *l->param);
    for (size_t i = 0; i < np; i++) {
      Caffe__ParamSpec *ps = mdl_xmalloc(sizeof *ps);
      caffe__param_spec__init(ps);
      if (i < v1->n_param) {
        ps->name = v1->param[i];
        v1->param[i] = NULL;
      }
      if (i < v1->n_blob_share_mode) {
        ps->has_share_mode = 1;
        ps->share_mode =
            v1->blob_share_mode[i] == CAFFE__V1_LAYER_PARAMETER__DIM_CHECK_MODE__PERMISSIVE
                ? CAFFE__PARAM_SPEC__DIM_CHECK_MODE__PERMISSIVE
                : CAFFE__PARAM_SPEC__DIM_CHECK_MODE__STRICT;
      }
      if (i < v1->n_blobs_lr) {
        ps->has_lr_mult = 1;
        ps->lr_mult = v1->blobs_lr[i];
      }
      if (i < v1->n_weight_decay) {
        ps->has_decay_mult = 1;
        ps->decay_mult = v1->weight_decay[i];
      }
      l->param[i] = ps;
    }
  }

  MOVE_MSG(l, v1, accuracy_param);
  MOVE_MSG(l, v1, argmax_param);
  MOVE_MSG(l, v1, concat_param);
  MOVE_MSG(l, v1, contrastive_loss_param);
  MOVE_MSG(l, v1, convolution_param);
  MOVE_MSG(l, v1, data_param);
  MOVE_MSG(l, v1, dropout_param);
  MOVE_MSG(l, v1, dummy_data_param);
  MOVE_MSG(l, v1, eltwise_param);
  MOVE_MSG(l, v1, exp_param);
  MOVE_MSG(l, v1, hdf5_data_param);
  MOVE_MSG(l, v1, hdf5_output_param);
  MOVE_MSG(l, v1, hinge_loss_param);
  MOVE_MSG(l, v1, image_data_param);
  MOVE_MSG(l, v1, infogain_loss_param);
  MOVE_MSG(l, v1, inner_product_param);
  MOVE_MSG(l, v1, lrn_param);
  MOVE_MSG(l, v1, memory_data_param);
  MOVE_MSG(l, v1, mvn_param);
  MOVE_MSG(l, v1, pooling_param);
  MOVE_MSG(l, v1, power_param);
  MOVE_MSG(l, v1, relu_param);
  MOVE_MSG(l, v1, sigmoid_param);
  MOVE_MSG(l, v1, softmax_param);
  MOVE_MSG(l, v1, slice_param);
  MOVE_MSG(l, v1, tanh_param);
  MOVE_MSG(l, v1, threshold_param);
  MOVE_MSG(l, v1, window_data_param);
  MOVE_MSG(l, v1, transform_param);
  MOVE_MSG(l, v1, loss_param);
  *out = l;
  return MDL_OK;
}
#undef MOVE_MSG
#undef MOVE_REPEATED

static mdl_status upgrade_v1(Caffe__NetParameter *net, mdl_error *err) {
  if (!net->n_layers) return MDL_OK;
  if (net->n_layer)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "the net mixes `layer { type: \"...\" }` entries with legacy `layers { "
                      "type: ... }` entries; use one format");
  size_t n = net->n_layers;
  net->layer = mdl_xcalloc(n, sizeof *net->layer);
  for (size_t i = 0; i < n; i++) {
    mdl_status st = upgrade_v1_layer(net->layers[i], i, &net->layer[net->n_layer], err);
    if (st != MDL_OK) return st;
    net->n_layer++;
  }
  for (size_t i = 0; i < n; i++) protobuf_c_message_free_unpacked(&net->layers[i]->base, NULL);
  free(net->layers);
  net->layers = NULL;
  net->n_layers = 0;
  return MDL_OK;
}

/* Caffe's UpgradeNetInput: input + input_shape (or 4 input_dim per input)
 * become one Input layer named "input", placed first. */
static mdl_status upgrade_inputs(Caffe__NetParameter *net, mdl_error *err) {
  size_t n = net->n_input;
  if (!n) {
    if (net->n_input_shape || net->n_input_dim)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "the net gives input_shape or input_dim but no input names");
    return MDL_OK;
  }
  if (net->n_input_shape && net->n_input_dim)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "the net gives both input_shape and input_dim; give one of them");
  if (net->n_input_shape && net->n_input_shape != n)
    return mdl_errorf(err, MDL_ERR_INVALID, "the net has %zu inputs but %zu input_shape entries", n,
                      net->n_input_shape);
  if (!net->n_input_shape && net->n_input_dim != 4 * n) {
    if (!net->n_input_dim)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "input \"%s\" has no shape; give input_shape, or 4 input_dim values (N, C, "
                        "H, W) per input",
                        str_or(net->input[0], ""));
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "the net has %zu inputs but %zu input_dim values; give 4 (N, C, H, W) per "
                      "input",
                      n, net->n_input_dim);
  }
  Caffe__LayerParameter *l = mdl_xmalloc(sizeof *l);
  caffe__layer_parameter__init(l);
  l->name = mdl_xstrdup("input");
  l->type = mdl_xstrdup("Input");
  l->n_top = n;
  l->top = net->input;
  net->input = NULL;
  net->n_input = 0;
  Caffe__InputParameter *ip = mdl_xmalloc(sizeof *ip);
  caffe__input_parameter__init(ip);
  ip->n_shape = n;
  if (net->n_input_shape) {
    ip->shape = net->input_shape;
    net->input_shape = NULL;
    net->n_input_shape = 0;
  } else {
    ip->shape = mdl_xcalloc(n, sizeof *ip->shape);
    for (size_t i = 0; i < n; i++) {
      Caffe__BlobShape *bs = mdl_xmalloc(sizeof *bs);
      caffe__blob_shape__init(bs);
      bs->n_dim = 4;
      bs->dim = mdl_xcalloc(4, sizeof *bs->dim);
      for (int k = 0; k < 4; k++) bs->dim[k] = net->input_dim[4 * i + (size_t)k];
      ip->shape[i] = bs;
    }
    free(net->input_dim);
    net->input_dim = NULL;
    net->n_input_dim = 0;
  }
  l->input_param = ip;
  net->layer = mdl_xrealloc(net->layer, (net->n_layer + 1) * sizeof *net->layer);
  memmove(net->layer + 1, net->layer, net->n_layer * sizeof *net->layer);
  net->layer[0] = l;
  net->n_layer++;
  return MDL_OK;
}

/* Caffe's UpgradeNetBatchNorm: three param specs were once required to
 * freeze the statistics; they now only may say lr_mult 0. */
static void upgrade_batch_norm(Caffe__NetParameter *net) {
  for (size_t i = 0; i < net->n_layer; i++) {
    Caffe__LayerParameter *l = net->layer[i];
    if (!l->type || strcmp(l->type, "BatchNorm") != 0 || l->n_param != 3) continue;
    for (size_t k = 0; k < 3; k++) {
      l->param[k]->has_lr_mult = l->param[k]->has_decay_mult = 1;
      l->param[k]->lr_mult = l->param[k]->decay_mult = 0;
    }
  }
}

mdl_status mdl_graph_upgrade(Caffe__NetParameter *net, mdl_error *err) {
  mdl_status st = upgrade_v1(net, err);
  if (st == MDL_OK) st = upgrade_inputs(net, err);
  if (st == MDL_OK) upgrade_batch_norm(net);
  return st;
}
