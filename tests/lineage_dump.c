/* Test helper: rebuilds a partition from a serialised PartitionLineage in a
 * process of its own and dumps what a trainer would get from it, so that
 * tests can compare rebuilds across processes (address layout, pid and
 * clock differ; the bits must not). Not part of memdl.
 *
 *   lineage_dump LINEAGE OUT
 *
 * OUT: the partition's record count (int64), its stored records, labels
 * and source record indices, then batch 3 of 8 records of a TRAIN batcher
 * with shuffle (seed 77) through the lineage's transform (random crop and
 * mirror), as floats, with its labels. Exit 0, or 1 with a message. */
#include <stdio.h>
#include <stdlib.h>

#include "common/pb.h"
#include "runtime/data/dataset.h"

static int fail(const char *what, const mdl_error *err) {
  fprintf(stderr, "lineage_dump: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) return fail("usage: lineage_dump LINEAGE OUT", NULL);
  FILE *f = fopen(argv[1], "rb");
  if (!f) return fail("cannot read the lineage", NULL);
  static uint8_t wire[1 << 20];
  size_t len = fread(wire, 1, sizeof wire, f);
  fclose(f);
  Memdl__PartitionLineage *lin = memdl__partition_lineage__unpack(NULL, len, wire);
  if (!lin) return fail("malformed lineage", NULL);
  mdl_error err = {0};
  mdl_partition *p = NULL;
  if (mdl_partition_build(lin, NULL, &p, &err)) return fail("build", &err);
  mdl_transform *xf = NULL;
  if (mdl_transform_new(lin->data, lin->base_dir, p->channels, p->height, p->width, &xf, &err))
    return fail("transform", &err);
  enum { B = 8 };
  mdl_batch_opts o = {.batch_size = B, .train = true, .shuffle = true, .seed = 77};
  mdl_batcher *b = NULL;
  if (mdl_batcher_new(&p, 1, xf, &o, &b, &err)) return fail("batcher", &err);
  int c, h, w;
  mdl_transform_out_shape(xf, &c, &h, &w);
  size_t n_out = (size_t)B * c * h * w;
  float *data = malloc(n_out * sizeof(float)), labels[B];
  mdl_batcher_seek(b, 3);
  if (mdl_batcher_next(b, data, labels, &err)) return fail("batch", &err);
  size_t rec =
      (size_t)p->channels * p->height * p->width * (p->dtype == MDL_DTYPE_U8 ? 1 : sizeof(float));
  FILE *out = fopen(argv[2], "wb");
  if (!out) return fail("cannot write the output", NULL);
  fwrite(&p->n, sizeof p->n, 1, out);
  fwrite(p->data, rec, (size_t)p->n, out);
  fwrite(p->label, sizeof *p->label, (size_t)p->n, out);
  fwrite(p->record, sizeof *p->record, (size_t)p->n, out);
  fwrite(data, sizeof(float), n_out, out);
  fwrite(labels, sizeof(float), B, out);
  if (fclose(out)) return fail("write failed", NULL);
  free(data);
  mdl_batcher_free(b);
  mdl_transform_free(xf);
  mdl_partition_free(p);
  memdl__partition_lineage__free_unpacked(lin, NULL);
  return 0;
}
