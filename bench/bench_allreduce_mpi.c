/* MPI_Allreduce (float sum) of the sizes bench_allreduce measures, for the
 * ratio in bench/bench_allreduce.sh, and one rank per network namespace on
 * shaped links in bench/bench_allreduce_netns.sh. Built with mpicc outside
 * Bazel:
 *   mpicc -O2 bench_allreduce_mpi.c -o bench_allreduce_mpi
 *   mpirun -np K ./bench_allreduce_mpi 1.7,60,240 [rounds]
 * Buffers are allocated and touched once, as the gRPC benchmark's are.
 * Prints per size: bytes, ranks, rounds, median and best ms of the slowest
 * rank (the scripts parse these columns). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  double mb[8];
  int n = 0, rounds = argc > 2 ? atoi(argv[2]) : 0;
  char *list = strdup(argc > 1 ? argv[1] : "1.7,60,240");
  for (char *t = strtok(list, ","); t && n < 8; t = strtok(NULL, ",")) mb[n++] = atof(t);
  size_t max = 0;
  for (int i = 0; i < n; i++)
    if ((size_t)(mb[i] * 1e6) > max) max = (size_t)(mb[i] * 1e6);
  float *a = malloc(max + 4), *b = malloc(max + 4);
  for (size_t j = 0; j < max / 4 + 1; j++) a[j] = b[j] = (float)(j % 1000) * 1e-3f;
  for (int i = 0; i < n; i++) {
    size_t bytes = ((size_t)(mb[i] * 1e6) + 3) & ~(size_t)3;
    int count = (int)(bytes / 4), r_n = rounds > 0 ? rounds : bytes < 10000000 ? 50 : 8;
    double *t = calloc((size_t)r_n, sizeof *t);
    for (int r = -2; r < r_n; r++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Allreduce(a, b, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double dt = MPI_Wtime() - t0, worst;
      MPI_Allreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (r >= 0) t[r] = worst;
    }
    qsort(t, (size_t)r_n, sizeof *t, cmp_d);
    if (rank == 0) printf("%zu %d %d %.3f %.3f\n", bytes, size, r_n, t[r_n / 2] * 1e3, t[0] * 1e3);
    fflush(stdout);
    free(t);
  }
  free(a);
  free(b);
  free(list);
  MPI_Finalize();
  return 0;
}
