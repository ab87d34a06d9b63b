/* PNG (libpng) and JPEG (libjpeg) decoding from memory into CHW planes, BGR
 * for colour, with the channel conversions Caffe's OpenCV calls make. Does
 * not read files and does not resize. */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* jpeglib.h needs size_t and FILE declared first. */
#include <jpeglib.h>
/* JWRN_JPEG_EOF */
#include <jerror.h>
#include <png.h>

#include "runtime/data/sources/datum.h"

void mdl_image_free(mdl_image *img) {
  if (!img) return;
  free(img->px);
  free(img->tmp);
  memset(img, 0, sizeof *img);
}

static int grow(void **p, size_t *cap, size_t need) {
  if (*cap >= need) return 0;
  void *q = realloc(*p, need);
  if (!q) return -1;
  *p = q;
  *cap = need;
  return 0;
}

static bool is_png(const uint8_t *b, size_t n) {
  return n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8);
}
static bool is_jpeg(const uint8_t *b, size_t n) {
  return n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff;
}

/* Interleaved rows (src_c = 1 or 3, BGR) to CHW planes with `c` channels. */
static void to_planes(const uint8_t *hwc, int src_c, int h, int w, int c, uint8_t *out) {
  size_t hw = (size_t)h * w;
  if (src_c == c) {
    if (c == 1) {
      memcpy(out, hwc, hw);
      return;
    }
    for (size_t i = 0; i < hw; i++)
      for (int k = 0; k < c; k++) out[k * hw + i] = hwc[i * c + k];
  } else if (src_c == 1) { /* gray to BGR: replicate */
    for (int k = 0; k < c; k++) memcpy(out + k * hw, hwc, hw);
  } else { /* BGR to gray: OpenCV's fixed-point BT.601 weights */
    for (size_t i = 0; i < hw; i++) {
      const uint8_t *p = hwc + i * 3;
      out[i] = (uint8_t)((p[0] * 1868 + p[1] * 9617 + p[2] * 4899 + (1 << 13)) >> 14);
    }
  }
}

/* ---- PNG ---- */

typedef struct png_src {
  const uint8_t *p;
  size_t len, pos;
  char msg[200];
} png_src;

static void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  png_src *s = png_get_io_ptr(png);
  if (s->len - s->pos < n) png_error(png, "unexpected end of PNG data");
  memcpy(out, s->p + s->pos, n);
  s->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
  png_src *s = png_get_error_ptr(png);
  snprintf(s->msg, sizeof s->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
  (void)png, (void)msg;
}

static mdl_status png_decode(const uint8_t *buf, size_t len, int channels, mdl_image *img,
                             bool header_only, mdl_error *err) {
  png_src src = {.p = buf, .len = len};
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
  if (!png) return mdl_errorf(err, MDL_ERR_NOMEM, "PNG: out of memory");
  png_infop info = png_create_info_struct(png);
  png_bytep *volatile rows = NULL;
  if (!info || setjmp(png_jmpbuf(png))) {
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return mdl_errorf(err, MDL_ERR_INVALID, "corrupt PNG: %s", src.msg[0] ? src.msg : "no memory");
  }
  png_set_read_fn(png, &src, png_read_mem);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  bool colour = (type & PNG_COLOR_MASK_COLOR) != 0;
  int src_c = colour ? 3 : 1;
  int c = channels ? channels : src_c;
  if (w == 0 || h == 0 || (uint64_t)w * h > (1u << 28)) png_error(png, "bad image size");
  img->c = c;
  img->h = (int)h;
  img->w = (int)w;
  img->dtype = MDL_DTYPE_U8;
  if (header_only) {
    png_destroy_read_struct(&png, &info, NULL);
    return MDL_OK;
  }
  if (depth == 16) png_set_strip_16(png);
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  if (colour) png_set_bgr(png);
  png_read_update_info(png, info);
  size_t rowbytes = png_get_rowbytes(png, info);
  if (rowbytes != (size_t)w * src_c) png_error(png, "unsupported pixel layout");
  size_t hw = (size_t)h * w;
  if (grow((void **)&img->tmp, &img->tmp_cap, hw * src_c) || grow(&img->px, &img->px_cap, hw * c))
    png_error(png, "out of memory");
  rows = malloc(h * sizeof *rows);
  if (!rows) png_error(png, "out of memory");
  for (png_uint_32 y = 0; y < h; y++) rows[y] = img->tmp + (size_t)y * rowbytes;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  free(rows);
  png_destroy_read_struct(&png, &info, NULL);
  to_planes(img->tmp, src_c, (int)h, (int)w, c, img->px);
  return MDL_OK;
}

/* ---- JPEG ---- */

typedef struct jpeg_err {
  struct jpeg_error_mgr pub;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
  jpeg_err *e = (jpeg_err *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jb, 1);
}

static void jpeg_on_message(j_common_ptr cinfo) {
  (void)cinfo;
}

/* libjpeg only warns when the data ends early and then pads the image with
 * gray; a truncated file is an error here, as for PNG (and is stopped before
 * a tiny file pads out a huge image). */
static void jpeg_on_emit(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

static mdl_status jpeg_decode(const uint8_t *buf, size_t len, int channels, mdl_image *img,
                              bool header_only, mdl_error *err) {
  struct jpeg_decompress_struct cinfo;
  jpeg_err e;
  memset(&e, 0, sizeof e);
  cinfo.err = jpeg_std_error(&e.pub);
  e.pub.error_exit = jpeg_on_error;
  e.pub.output_message = jpeg_on_message;
  e.pub.emit_message = jpeg_on_emit;
  if (setjmp(e.jb)) {
    jpeg_destroy_decompress(&cinfo);
    return mdl_errorf(err, MDL_ERR_INVALID, "corrupt JPEG: %s", e.msg);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, buf, (unsigned long)len);
  jpeg_read_header(&cinfo, TRUE);
  if ((uint64_t)cinfo.image_width * cinfo.image_height > (1u << 28)) {
    snprintf(e.msg, sizeof e.msg, "bad image size %ux%u", cinfo.image_width, cinfo.image_height);
    longjmp(e.jb, 1);
  }
  int src_c = cinfo.jpeg_color_space == JCS_GRAYSCALE ? 1 : 3;
  int c = channels ? channels : src_c;
  img->c = c;
  img->h = (int)cinfo.image_height;
  img->w = (int)cinfo.image_width;
  img->dtype = MDL_DTYPE_U8;
  if (header_only) {
    jpeg_destroy_decompress(&cinfo);
    return MDL_OK;
  }
  /* Gray output from a colour JPEG takes the luma plane, as OpenCV does. */
  int dc = c == 1 ? 1 : 3;
  cinfo.out_color_space = dc == 1 ? JCS_GRAYSCALE : JCS_EXT_BGR;
  jpeg_start_decompress(&cinfo);
  size_t w = cinfo.output_width, h = cinfo.output_height;
  if ((int)cinfo.output_components != dc) {
    snprintf(e.msg, sizeof e.msg, "unexpected %d components", cinfo.output_components);
    longjmp(e.jb, 1);
  }
  if (grow((void **)&img->tmp, &img->tmp_cap, h * w * dc) ||
      grow(&img->px, &img->px_cap, h * w * c)) {
    snprintf(e.msg, sizeof e.msg, "out of memory");
    longjmp(e.jb, 1);
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img->tmp + (size_t)cinfo.output_scanline * w * dc;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  to_planes(img->tmp, dc, (int)h, (int)w, c, img->px);
  return MDL_OK;
}

static mdl_status check_channels(int channels, mdl_error *err) {
  if (channels != 0 && channels != 1 && channels != 3)
    return mdl_errorf(err, MDL_ERR_INVALID, "cannot decode images to %d channels", channels);
  return MDL_OK;
}

mdl_status mdl_image_decode(const uint8_t *buf, size_t len, int channels, mdl_image *img,
                            mdl_error *err) {
  mdl_status st = check_channels(channels, err);
  if (st) return st;
  if (is_png(buf, len)) return png_decode(buf, len, channels, img, false, err);
  if (is_jpeg(buf, len)) return jpeg_decode(buf, len, channels, img, false, err);
  return mdl_errorf(err, MDL_ERR_INVALID, "not a PNG or JPEG image (%zu bytes)", len);
}

mdl_status mdl_image_probe(const uint8_t *buf, size_t len, int channels, int *c, int *h, int *w,
                           mdl_error *err) {
  mdl_status st = check_channels(channels, err);
  if (st) return st;
  mdl_image tmp = {0};
  if (is_png(buf, len))
    st = png_decode(buf, len, channels, &tmp, true, err);
  else if (is_jpeg(buf, len))
    st = jpeg_decode(buf, len, channels, &tmp, true, err);
  else
    return mdl_errorf(err, MDL_ERR_INVALID, "not a PNG or JPEG image (%zu bytes)", len);
  *c = tmp.c;
  *h = tmp.h;
  *w = tmp.w;
  mdl_image_free(&tmp);
  return st;
}
