/* curves.png: a canvas (chart.h) over an RGB pixel buffer. Lines are
 * stamped discs (dashes follow the distance along the line), text is the
 * 6x10 misc-fixed font at one pixel per dot. No anti-aliasing: the picture
 * is for reading numbers off, and stays byte-identical across machines. */
#include "runtime/ci/png.h"

#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"
#include "runtime/ci/chart.h"

#include "runtime/ci/font6x10.inc"

enum { GLYPH_W = 6, GLYPH_H = 10, GLYPH_ASCENT = 8 };

typedef struct raster {
  int w, h;
  uint8_t *px; /* RGB, rows top to bottom */
} raster;

static void plot(raster *r, int x, int y, unsigned c) {
  if (x < 0 || y < 0 || x >= r->w || y >= r->h || c == MDL_CI_NONE) return;
  uint8_t *p = r->px + 3 * ((size_t)y * r->w + x);
  p[0] = (uint8_t)(c >> 16);
  p[1] = (uint8_t)(c >> 8);
  p[2] = (uint8_t)c;
}

/* A filled disc of diameter d centred on (x, y); d <= 1 is one pixel. */
static void stamp(raster *r, double x, double y, double d, unsigned c) {
  double rad = d / 2;
  if (rad <= 0.5) {
    plot(r, (int)floor(x), (int)floor(y), c);
    return;
  }
  for (int iy = (int)floor(y - rad); iy <= (int)ceil(y + rad); iy++)
    for (int ix = (int)floor(x - rad); ix <= (int)ceil(x + rad); ix++) {
      double dx = ix + 0.5 - x, dy = iy + 0.5 - y;
      if (dx * dx + dy * dy <= rad * rad) plot(r, ix, iy, c);
    }
}

static void raster_line(void *ctx, double x1, double y1, double x2, double y2, unsigned c,
                        double width, const double *dash) {
  raster *r = ctx;
  double len = hypot(x2 - x1, y2 - y1);
  int steps = (int)ceil(len * 2) + 1;
  for (int i = 0; i <= steps; i++) {
    double t = (double)i / steps, along = t * len;
    if (dash && fmod(along, dash[0] + dash[1]) >= dash[0]) continue;
    stamp(r, x1 + t * (x2 - x1), y1 + t * (y2 - y1), width, c);
  }
}

static void raster_rect(void *ctx, double x, double y, double w, double h, unsigned fill,
                        unsigned stroke) {
  raster *r = ctx;
  if (fill != MDL_CI_NONE)
    for (int iy = (int)lround(y); iy < (int)lround(y + h); iy++)
      for (int ix = (int)lround(x); ix < (int)lround(x + w); ix++) plot(r, ix, iy, fill);
  if (stroke == MDL_CI_NONE) return;
  raster_line(r, x, y, x + w, y, stroke, 1, NULL);
  raster_line(r, x, y + h, x + w, y + h, stroke, 1, NULL);
  raster_line(r, x, y, x, y + h, stroke, 1, NULL);
  raster_line(r, x + w, y, x + w, y + h, stroke, 1, NULL);
}

static void raster_polyline(void *ctx, const double *xy, int n, unsigned c, double width) {
  if (n == 1) stamp(ctx, xy[0], xy[1], width, c);
  for (int i = 1; i < n; i++)
    raster_line(ctx, xy[2 * i - 2], xy[2 * i - 1], xy[2 * i], xy[2 * i + 1], c, width, NULL);
}

static void raster_circle(void *ctx, double x, double y, double rad, unsigned fill) {
  stamp(ctx, x, y, 2 * rad, fill);
}

static void glyph(raster *r, int x, int top, unsigned char ch, unsigned c) {
  if (ch < 32 || ch > 126) ch = '?';
  const unsigned char *g = mdl_font6x10[ch - 32];
  for (int row = 0; row < GLYPH_H; row++)
    for (int col = 0; col < GLYPH_W; col++)
      if (g[row] & (0x80 >> col)) plot(r, x + col, top + row, c);
}

static void raster_text(void *ctx, double x, double y, double size, bool bold, mdl_ci_anchor anchor,
                        unsigned c, const char *s) {
  (void)size; /* one font size: the 6x10 cell reads well at the chart's scale */
  int w = (int)strlen(s) * GLYPH_W;
  int left = (int)lround(x) - (anchor == MDL_CI_MIDDLE ? w / 2 : anchor == MDL_CI_END ? w : 0);
  int top = (int)lround(y) - GLYPH_ASCENT;
  for (int i = 0; s[i]; i++) {
    glyph(ctx, left + i * GLYPH_W, top, (unsigned char)s[i], c);
    if (bold) glyph(ctx, left + i * GLYPH_W + 1, top, (unsigned char)s[i], c);
  }
}

mdl_status mdl_ci_png(const mdl_ci_result *res, const char *jsonl, Memdl__Acceptance *const *accept,
                      int n_accept, const char *path, mdl_error *err) {
  raster r = {MDL_CI_CHART_W, MDL_CI_CHART_H, NULL};
  r.px = mdl_xcalloc((size_t)r.w * r.h, 3);
  mdl_ci_canvas c = {&r, raster_rect, raster_line, raster_polyline, raster_circle, raster_text};
  mdl_ci_chart_draw(res, jsonl, accept, n_accept, &c);

  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)r.w;
  img.height = (png_uint_32)r.h;
  img.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  mdl_status st = MDL_OK;
  void *buf = NULL;
  if (!png_image_write_to_memory(&img, NULL, &size, 0, r.px, 0, NULL)) {
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "%s: encoding the PNG: %s", path, img.message);
  } else {
    buf = mdl_xmalloc(size);
    if (!png_image_write_to_memory(&img, buf, &size, 0, r.px, 0, NULL))
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "%s: encoding the PNG: %s", path, img.message);
  }
  if (st == MDL_OK) st = mdl_file_write_atomic(path, buf, size, err);
  png_image_free(&img);
  free(buf);
  free(r.px);
  return st;
}
