/* memdl certs: the flags of making a cluster's TLS folder; the certificates
 * themselves are runtime/rpc/rpc_certs.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "runtime/dist/cluster_env.h"
#include "runtime/rpc/rpc.h"

static const char USAGE[] =
    "usage: memdl certs DIR [--hosts NODES] [--days N]\n"
    "\n"
    "Makes what a multi-node launch needs for TLS in DIR, a folder every node\n"
    "sees (created mode 0700): a CA (ca.pem, ca.key), a certificate and key\n"
    "per node (NODE.pem, NODE.key) and a shared token (token). Then\n"
    "`memdl run JOB --tls-dir DIR` (or the job's cluster { tls { dir: DIR } })\n"
    "under srun or mpirun: every rank serves with its node's certificate, rank 0\n"
    "checks them against ca.pem, and calls carry the token.\n"
    "Run it again with more nodes to add them: the CA and the token are kept.\n"
    "\n"
    "  --hosts NODES  the node names as the launch names them (Slurm's node\n"
    "                 list, or MEMDL_HOSTS under mpirun), comma-separated, with\n"
    "                 Slurm's ranges: \"node[01-16],gpu1\" (default: this host)\n"
    "  --days N       validity (default 365)\n"
    "\n"
    "Made with the OpenSSL library gRPC links; no openssl program is needed.\n"
    "Anyone who can read DIR can join the cluster: keep it private to you.\n"
    "exit status: 0 made, 1 failure, 2 invalid usage\n";

/* This machine's name without its domain, as Slurm names nodes. */
static void this_host(char *buf, size_t cap) {
  if (gethostname(buf, cap) != 0) snprintf(buf, cap, "localhost");
  buf[cap - 1] = 0;
  char *dot = strchr(buf, '.');
  if (dot) *dot = 0;
}

int mdl_cmd_certs(int argc, char **argv) {
  const char *dir = NULL, *hosts_s = NULL;
  int days = 365;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool has_next = i + 1 < argc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      return 0;
    } else if (!strcmp(a, "--hosts") && has_next) {
      hosts_s = argv[++i];
    } else if (!strcmp(a, "--days") && has_next) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*end || end == argv[i] || v < 1 || v > 36500) {
        fprintf(stderr, "memdl certs: --days takes 1..36500, not \"%s\"\n", argv[i]);
        return 2;
      }
      days = (int)v;
    } else if (a[0] != '-' && !dir) {
      dir = a;
    } else {
      fprintf(stderr, "memdl certs: unknown flag or missing value: %s\n\n%s", a, USAGE);
      return 2;
    }
  }
  if (!dir) {
    fprintf(stderr, "memdl certs: DIR is required\n\n%s", USAGE);
    return 2;
  }
  mdl_error err;
  mdl_error_clear(&err);
  char own[256];
  char *own_list[1] = {own};
  char **hosts = own_list;
  int n = 1;
  this_host(own, sizeof own);
  if (hosts_s && mdl_slurm_hostlist(hosts_s, &hosts, &n, &err) != MDL_OK) {
    fprintf(stderr, "memdl certs: --hosts: %s\n", err.msg);
    return 2;
  }
  mdl_status st = mdl_rpc_certs_make(dir, (const char *const *)hosts, n, days, stderr, &err);
  if (st != MDL_OK) fprintf(stderr, "memdl %s\n", err.msg); /* err says "certs: ..." */
  if (hosts != own_list) {
    for (int i = 0; i < n; i++) free(hosts[i]);
    free(hosts);
  }
  return st == MDL_OK ? 0 : st == MDL_ERR_INVALID ? 2 : 1;
}
