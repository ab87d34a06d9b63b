/* bench/plot_allreduce.py, the SVG that bench/bench_allreduce_netns.sh
 * --plot writes: one panel per model size, a line per measured mode, the
 * bandwidth bound computed from the header's link rate, +return modes and
 * comment lines left out, no table refused. The benchmark itself (root,
 * network namespaces, minutes) is not run here. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testutil.h"

#define PLOT "bench/plot_allreduce.py"

TestSuite(plot_allreduce, .init = tu_dir_setup, .fini = tu_dir_teardown);

/* At 100 Mbit/s the bound of 1.25 MB is 2 (K-1)/K * 1.25e6 * 8 / 1e8 s:
 * 100 ms at K=2 and 175 ms at K=8; the mpi line sits exactly on it, so its
 * points must coincide with the bound's. */
static const char TABLE[] =
    "# 2 CPUs; driver and 8 workers in their own namespaces; links %s, 0 per end\n"
    "# mode  bytes  workers  rounds  round_ms(median)  ...\n"
    "# alpha-beta model (exchange.h): alpha 100.0 us, beta 80.000 ns/byte (0.01 GB/s)\n"
    "star 1250000 2 5 410.0 400.0 0.012 0.000 400.4\n"
    "ring 1250000 2 5 120.0 110.0 0.041 0.000 100.2\n"
    "ring+return 1250000 2 5 230.0 220.0 0.021 0.000 200.3\n"
    "star 1250000 8 5 1610.0 1600.0 0.012 0.000 1600.4\n"
    "ring 1250000 8 5 200.0 190.0 0.100 0.000 176.4\n"
    "mpi 1250000 2 8 100.000 99.0 0.050 0.000 100.2\n"
    "mpi 1250000 8 8 175.000 170.0 0.114 0.000 176.4\n"
    "star 60000000 2 5 19300.0 19200.0 0.012 0.000 19200.4\n"
    "ring 60000000 2 5 4900.0 4850.0 0.049 0.000 4800.2\n"
    "mpi 60000000 2 8 5200.000 5100.0 0.046 0.000 4800.2\n";

static char *plot_text(const char *table, int *rc) {
  const char *in = tu_dir_write("table.txt", table);
  const char *out = tu_dir_path("plot.svg");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "python3 %s '%s' 'test' < '%s' 2>&1", PLOT, out, in);
  *rc = system(cmd);
  if (*rc != 0) return NULL;
  size_t len;
  return tu_read(out, &len);
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

/* The points="..." of the n-th polyline drawn in colour (0-based); caller
 * frees. */
static char *points(const char *svg, const char *colour, int n) {
  char key[64];
  snprintf(key, sizeof key, "stroke=\"%s\"", colour);
  for (const char *p = svg; (p = strstr(p, "<polyline points=\"")); p++) {
    const char *end = strchr(p, '>');
    const char *c = strstr(p, key);
    if (!c || c > end || n-- > 0) continue;
    const char *a = p + strlen("<polyline points=\"");
    return strndup(a, (size_t)(strchr(a, '"') - a));
  }
  return NULL;
}

/* TABLE with the header's link rate */
static char *plot(const char *rate, int *rc) {
  char table[sizeof TABLE + 64];
  snprintf(table, sizeof table, TABLE, rate);
  return plot_text(table, rc);
}

Test(plot_allreduce, panels_modes_and_bound) {
  int rc;
  char *svg = plot("100mbit", &rc);
  cr_assert_eq(rc, 0, "plot_allreduce.py failed");
  cr_assert(strstr(svg, "<svg") && strstr(svg, "</svg>"), "not an SVG document");
  cr_assert_eq(count(svg, " MB model</text>"), 2, "one panel per size: %s", svg);
  cr_assert(strstr(svg, ">1.25 MB model<") && strstr(svg, ">60 MB model<"));
  cr_assert(strstr(svg, "OpenMPI MPI_Allreduce") && strstr(svg, "driver star"), "legend");
  cr_assert(!strstr(svg, "peer, schedule"), "a mode with no lines in the legend");
  /* per panel: star, ring, mpi measured and their models dashed, the bound
   * dotted: +return modes are not drawn */
  cr_assert_eq(count(svg, "<polyline"), 2 * 7, "%s", svg);
  cr_assert_eq(count(svg, "stroke-dasharray=\"1,3\""), 2 + 1, "bound in each panel and legend");
  char *mpi = points(svg, "#ff7f0e", 0), *bound = points(svg, "#555555", 0);
  cr_assert(mpi && bound, "mpi and bound lines in the first panel");
  cr_assert_str_eq(mpi, bound, "the mpi line at the bound's figures must lie on it");
  free(mpi);
  free(bound);
  free(svg);
}

Test(plot_allreduce, bound_follows_rate) {
  /* the same table at 1gbit: the bound is ten times lower and leaves the
   * mpi line */
  int rc;
  char *svg = plot("1gbit", &rc);
  cr_assert_eq(rc, 0);
  char *mpi = points(svg, "#ff7f0e", 0), *bound = points(svg, "#555555", 0);
  cr_assert(mpi && bound);
  cr_assert_str_neq(mpi, bound, "a 10x faster link must lower the bound");
  free(mpi);
  free(bound);
  free(svg);
}

Test(plot_allreduce, no_table_refused) {
  int rc;
  char *svg = plot_text("# only comments\nstar 12 nonsense\n", &rc);
  cr_assert_neq(rc, 0, "an empty plot must fail");
  cr_assert_null(svg);
}
