/* Image list files as Caffe's ImageData layer reads them: one "path label"
 * per line (the label after the last space), paths under root, images PNG or
 * JPEG, converted to colour (BGR) or gray and resized to new_height x
 * new_width when given. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/data/dataset_impl.h"
#include "runtime/data/sources/datum.h"

typedef struct list_entry {
  char *path; /* points into the list text */
  int32_t label;
  int line;
} list_entry;

typedef struct image_list {
  char *list_path;
  char *text;
  list_entry *e;
  int64_t n;
} image_list;

static void list_free(image_list *l) {
  free(l->list_path);
  free(l->text);
  free(l->e);
  memset(l, 0, sizeof *l);
}

static mdl_status list_read(const mdl_src_ctx *c, image_list *l, mdl_error *err) {
  memset(l, 0, sizeof *l);
  const Memdl__ImageListSource *s = c->src->image_list;
  if (!s->list || !s->list[0])
    return mdl_errorf(err, MDL_ERR_INVALID, "image_list source names no list file");
  if (!s->new_height != !s->new_width)
    return mdl_errorf(err, MDL_ERR_INVALID, "image_list: new_height and new_width go together");
  l->list_path = mdl_data_path(c->base_dir, s->list);
  size_t len;
  mdl_status st = mdl_file_read(l->list_path, &l->text, &len, err);
  if (st) {
    list_free(l);
    return st;
  }
  size_t cap = 0;
  int line = 0;
  for (char *p = l->text; p && *p;) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = 0;
    line++;
    char *end = p + strlen(p);
    while (end > p && isspace((unsigned char)end[-1])) *--end = 0;
    char *start = p;
    while (*start && isspace((unsigned char)*start)) start++;
    if (*start) {
      char *sp = strrchr(start, ' ');
      char *tab = strrchr(start, '\t');
      if (tab && (!sp || tab > sp)) sp = tab;
      char *endp = NULL;
      long v = sp ? strtol(sp + 1, &endp, 10) : 0;
      if (!sp || !endp || *endp || endp == sp + 1 || v < INT32_MIN || v > INT32_MAX) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s:%d: expected \"path label\", got \"%s\"",
                        l->list_path, line, start);
        list_free(l);
        return st;
      }
      char *pe = sp;
      while (pe > start && isspace((unsigned char)pe[-1])) pe--;
      *pe = 0;
      if (l->n == (int64_t)cap) {
        cap = cap ? cap * 2 : 256;
        l->e = mdl_xrealloc(l->e, cap * sizeof *l->e);
      }
      l->e[l->n++] = (list_entry){start, (int32_t)v, line};
    }
    p = nl ? nl + 1 : NULL;
  }
  return MDL_OK;
}

static char *image_path(const mdl_src_ctx *c, const char *rel) {
  const char *root = c->src->image_list->root ? c->src->image_list->root : "";
  size_t nr = strlen(root), np = strlen(rel);
  char *joined = mdl_xmalloc(nr + np + 1);
  memcpy(joined, root, nr);
  memcpy(joined + nr, rel, np + 1);
  char *p = mdl_data_path(c->base_dir, joined);
  free(joined);
  return p;
}

static int list_channels(const mdl_src_ctx *c) {
  return c->src->image_list->is_color ? 3 : 1;
}

static mdl_status load_image(const mdl_src_ctx *c, const image_list *l, int64_t i, bool header_only,
                             mdl_image *img, mdl_error *err) {
  char *path = image_path(c, l->e[i].path);
  char *buf;
  size_t len;
  mdl_status st = mdl_file_read(path, &buf, &len, err);
  if (!st) {
    if (header_only)
      st = mdl_image_probe((uint8_t *)buf, len, list_channels(c), &img->c, &img->h, &img->w, err);
    else
      st = mdl_image_decode((uint8_t *)buf, len, list_channels(c), img, err);
    if (st) mdl_error_prefix(err, "%s: ", path);
    free(buf);
  }
  if (st) mdl_error_prefix(err, "%s:%d: record %lld: ", l->list_path, l->e[i].line, (long long)i);
  free(path);
  return st;
}

static mdl_status list_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  image_list l;
  mdl_status st = list_read(c, &l, err);
  if (st) return st;
  const Memdl__ImageListSource *s = c->src->image_list;
  info->records = l.n;
  info->dtype = MDL_DTYPE_U8;
  info->channels = list_channels(c);
  int32_t mx = -1;
  for (int64_t i = 0; i < l.n; i++) mx = l.e[i].label > mx ? l.e[i].label : mx;
  info->num_classes = mx + 1;
  if (s->new_height) {
    info->height = (int)s->new_height;
    info->width = (int)s->new_width;
  } else if (l.n == 0) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: the list names no images", l.list_path);
  } else {
    mdl_image img = {0};
    st = load_image(c, &l, 0, true, &img, err);
    info->height = img.h;
    info->width = img.w;
  }
  list_free(&l);
  return st;
}

static mdl_status list_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                            mdl_error *err) {
  (void)info;
  image_list l;
  mdl_status st = list_read(c, &l, err);
  if (st) return st;
  const Memdl__ImageListSource *s = c->src->image_list;
  const char *saved_name = sink->src_name;
  sink->src_name = l.list_path;
  mdl_image img = {0};
  uint8_t *resized = NULL;
  size_t resized_cap = 0;
  for (int64_t i = 0; i < l.n && !st; i++) {
    if (mdl_select_done(&sink->sel, i)) break;
    if (!mdl_sink_want(sink, i)) continue;
    st = load_image(c, &l, i, false, &img, err);
    if (st) break;
    mdl_rec rec = {.index = i,
                   .label = l.e[i].label,
                   .dtype = MDL_DTYPE_U8,
                   .c = img.c,
                   .h = img.h,
                   .w = img.w,
                   .px = img.px,
                   .name = l.e[i].path};
    if (s->new_height && (img.h != (int)s->new_height || img.w != (int)s->new_width)) {
      size_t need = (size_t)img.c * s->new_height * s->new_width;
      if (need > resized_cap) {
        resized = mdl_xrealloc(resized, need);
        resized_cap = need;
      }
      mdl_resize_u8(img.px, img.c, img.h, img.w, resized, (int)s->new_height, (int)s->new_width);
      rec.h = (int)s->new_height;
      rec.w = (int)s->new_width;
      rec.px = resized;
    }
    st = mdl_sink_put(sink, &rec, err);
  }
  free(resized);
  mdl_image_free(&img);
  sink->src_name = saved_name;
  list_free(&l);
  return st;
}

const mdl_source_iface mdl_source_image_list = {"image_list", list_probe, list_scan};
