/* The Slurm and MPI launch environments (see cluster_env.h): reading their
 * variables, expanding host lists, the launch's transport policy. Starts
 * nothing. */
#define _GNU_SOURCE
#include "runtime/dist/cluster_env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *env_get(mdl_getenv_fn get, void *ctx, const char *name) {
  const char *v = get ? get(ctx, name) : getenv(name);
  return v && v[0] ? v : NULL;
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
  if (!s) return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = (int)v;
  return true;
}

static void push_host(char ***hosts, int *n, int *cap, char *h) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 8;
    *hosts = mdl_xrealloc(*hosts, (size_t)*cap * sizeof **hosts);
  }
  (*hosts)[(*n)++] = h;
}

/* Expands one element ("pre[a-b,c]post...") into hosts. */
static mdl_status expand_one(const char *pre, size_t pre_len, const char *rest, char ***hosts,
                             int *n, int *cap, mdl_error *err) {
  const char *lb = strchr(rest, '[');
  if (!lb) {
    size_t rl = strlen(rest);
    char *h = mdl_xmalloc(pre_len + rl + 1);
    memcpy(h, pre, pre_len);
    memcpy(h + pre_len, rest, rl + 1);
    push_host(hosts, n, cap, h);
    return MDL_OK;
  }
  const char *rb = strchr(lb, ']');
  if (!rb) return mdl_errorf(err, MDL_ERR_INVALID, "host list: unclosed '[' in \"%s\"", rest);
  size_t lit = (size_t)(lb - rest);
  const char *p = lb + 1;
  while (p < rb) {
    const char *q = p;
    while (q < rb && *q != ',') q++;
    /* p..q is "a" or "a-b" */
    char item[64];
    if ((size_t)(q - p) >= sizeof item || q == p)
      return mdl_errorf(err, MDL_ERR_INVALID, "host list: bad range in \"%s\"", rest);
    memcpy(item, p, (size_t)(q - p));
    item[q - p] = 0;
    char *dash = strchr(item, '-');
    char *a = item, *b = dash ? dash + 1 : item;
    if (dash) *dash = 0;
    int width = (int)strlen(a);
    char *e1, *e2;
    long lo = strtol(a, &e1, 10), hi = strtol(b, &e2, 10);
    if (*e1 || *e2 || !*a || !*b || lo < 0 || hi < lo || hi - lo > 100000)
      return mdl_errorf(err, MDL_ERR_INVALID, "host list: bad range \"%s\"", item);
    for (long v = lo; v <= hi; v++) {
      char num[32];
      int nl = snprintf(num, sizeof num, "%0*ld", width, v);
      size_t np = pre_len + lit + (size_t)nl;
      char *np_buf = mdl_xmalloc(np + 1);
      memcpy(np_buf, pre, pre_len);
      memcpy(np_buf + pre_len, rest, lit);
      memcpy(np_buf + pre_len + lit, num, (size_t)nl);
      np_buf[np] = 0;
      mdl_status st = expand_one(np_buf, np, rb + 1, hosts, n, cap, err);
      free(np_buf);
      if (st != MDL_OK) return st;
    }
    p = q < rb ? q + 1 : q;
  }
  return MDL_OK;
}

mdl_status mdl_slurm_hostlist(const char *list, char ***hosts, int *n, mdl_error *err) {
  *hosts = NULL;
  *n = 0;
  int cap = 0;
  char *copy = mdl_xstrdup(list);
  mdl_status st = MDL_OK;
  char *p = copy;
  while (*p && st == MDL_OK) {
    /* a top-level element ends at a comma outside brackets */
    char *q = p;
    int depth = 0;
    while (*q && (depth > 0 || *q != ',')) {
      if (*q == '[') depth++;
      if (*q == ']') depth--;
      q++;
    }
    char save = *q;
    *q = 0;
    if (*p) st = expand_one("", 0, p, hosts, n, &cap, err);
    if (!save) break;
    p = q + 1;
  }
  free(copy);
  if (st == MDL_OK && *n == 0)
    st = mdl_errorf(err, MDL_ERR_INVALID, "host list \"%s\" is empty", list);
  if (st != MDL_OK) {
    for (int i = 0; i < *n; i++) free((*hosts)[i]);
    free(*hosts);
    *hosts = NULL;
    *n = 0;
  }
  return st;
}

mdl_status mdl_slurm_tasks_per_node(const char *spec, int n_nodes, int **counts, mdl_error *err) {
  *counts = NULL;
  int *c = mdl_xcalloc((size_t)(n_nodes > 0 ? n_nodes : 1), sizeof *c);
  int k = 0;
  const char *p = spec;
  while (*p) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 1 || v > 100000) goto bad;
    long rep = 1;
    p = end;
    if (*p == '(') {
      if (p[1] != 'x') goto bad;
      rep = strtol(p + 2, &end, 10);
      if (end == p + 2 || *end != ')' || rep < 1) goto bad;
      p = end + 1;
    }
    for (long r = 0; r < rep; r++) {
      if (k >= n_nodes) goto bad;
      c[k++] = (int)v;
    }
    if (*p == ',')
      p++;
    else if (*p)
      goto bad;
  }
  if (k != n_nodes) goto bad;
  *counts = c;
  return MDL_OK;
bad:
  free(c);
  return mdl_errorf(err, MDL_ERR_INVALID, "tasks per node \"%s\" does not describe %d nodes", spec,
                    n_nodes);
}

void mdl_cluster_env_free(mdl_cluster_env *e) {
  if (!e) return;
  for (int i = 0; i < e->n_workers; i++) {
    if (e->workers) free(e->workers[i]);
    if (e->worker_hosts) free(e->worker_hosts[i]);
  }
  free(e->workers);
  free(e->worker_hosts);
  free(e->same_node);
  free(e->listen);
  free(e->host);
  free(e->sock_dir);
  memset(e, 0, sizeof *e);
}

/* This machine's name without its domain, as Slurm names nodes. */
static char *short_hostname(void) {
  char h[256];
  if (gethostname(h, sizeof h) != 0) return mdl_xstrdup("localhost");
  h[sizeof h - 1] = 0;
  char *dot = strchr(h, '.');
  if (dot) *dot = 0;
  return mdl_xstrdup(h);
}

/* What tells this launch from another one on the same node (two jobs, or
 * two steps of one job): the launcher's job id, else the port. Only
 * [A-Za-z0-9._-] are kept, since it becomes part of a path. */
static void launch_key(mdl_getenv_fn get, void *ctx, mdl_launch_kind kind, int base_port, char *buf,
                       size_t cap) {
  const char *job = NULL, *step = NULL;
  if (kind == MDL_LAUNCH_SLURM) {
    job = env_get(get, ctx, "SLURM_JOB_ID");
    step = env_get(get, ctx, "SLURM_STEP_ID");
  } else {
    job = env_get(get, ctx, "OMPI_MCA_ess_base_jobid");
    if (!job) job = env_get(get, ctx, "PMIX_NAMESPACE");
    if (!job) job = env_get(get, ctx, "PMI_JOBID");
  }
  if (job)
    snprintf(buf, cap, "%s%s%s", job, step ? "." : "", step ? step : "");
  else
    snprintf(buf, cap, "p%d", base_port);
  for (char *p = buf; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '.' || *p == '-'))
      *p = '_';
}

/* The folder of same-node sockets; a socket path must fit sun_path (108
 * bytes), so a long $TMPDIR gives way to /tmp. */
static char *sock_dir_path(mdl_getenv_fn get, void *ctx, const char *key) {
  const char *tmp = env_get(get, ctx, "TMPDIR");
  if (!tmp || strlen(tmp) + strlen(key) > 60) tmp = "/tmp";
  char buf[200];
  snprintf(buf, sizeof buf, "%s/memdl-launch-%u-%s", tmp, (unsigned)geteuid(), key);
  return mdl_xstrdup(buf);
}

mdl_status mdl_cluster_env_make_sock_dir(const mdl_cluster_env *e, mdl_error *err) {
  if (!e->sock_dir) return MDL_OK;
  if (mkdir(e->sock_dir, 0700) != 0 && errno != EEXIST)
    return mdl_errorf(err, MDL_ERR_INTERNAL, "launch: mkdir %s: %s", e->sock_dir, strerror(errno));
  /* someone else may have made it first: it must still be ours alone, or
   * another user could connect to (or stand in for) our ranks */
  struct stat st;
  if (lstat(e->sock_dir, &st) != 0)
    return mdl_errorf(err, MDL_ERR_INTERNAL, "launch: %s: %s", e->sock_dir, strerror(errno));
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "launch: %s is not a folder of ours with mode 0700 (owner %u, mode %03o); "
                      "remove it or set MEMDL_PORT or TMPDIR to use another",
                      e->sock_dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
  return MDL_OK;
}

static char *host_port(const char *host, int port) {
  char buf[300];
  if (strchr(host, ':'))
    snprintf(buf, sizeof buf, "[%s]:%d", host, port);
  else
    snprintf(buf, sizeof buf, "%s:%d", host, port);
  return mdl_xstrdup(buf);
}

/* Slurm's block placement: host and local rank of every rank, from the
 * step's node list and tasks per node. */
static mdl_status slurm_placement(mdl_getenv_fn get, void *ctx, int size, char **host, int *local,
                                  mdl_error *err) {
  mdl_status st = MDL_OK;
  const char *nl = env_get(get, ctx, "SLURM_STEP_NODELIST");
  const char *tpn = env_get(get, ctx, "SLURM_STEP_TASKS_PER_NODE");
  if (!nl) nl = env_get(get, ctx, "SLURM_JOB_NODELIST");
  if (!tpn) tpn = env_get(get, ctx, "SLURM_TASKS_PER_NODE");
  char **nodes = NULL;
  int n_nodes = 0, *counts = NULL;
  if (!nl) st = mdl_errorf(err, MDL_ERR_INVALID, "Slurm: SLURM_STEP_NODELIST is not set");
  if (st == MDL_OK) st = mdl_slurm_hostlist(nl, &nodes, &n_nodes, err);
  if (st == MDL_OK) {
    if (tpn) {
      st = mdl_slurm_tasks_per_node(tpn, n_nodes, &counts, err);
    } else { /* spread evenly, in blocks */
      counts = mdl_xcalloc((size_t)n_nodes, sizeof *counts);
      for (int i = 0; i < n_nodes; i++) counts[i] = size / n_nodes + (i < size % n_nodes);
    }
  }
  if (st == MDL_OK) {
    int r = 0;
    for (int i = 0; i < n_nodes && r < size; i++)
      for (int j = 0; j < counts[i] && r < size; j++, r++) {
        host[r] = mdl_xstrdup(nodes[i]);
        local[r] = j;
      }
    if (r != size)
      st = mdl_errorf(err, MDL_ERR_INVALID, "Slurm: %s places %d tasks, SLURM_NTASKS is %d",
                      tpn ? tpn : "the node list", r, size);
  }
  for (int i = 0; i < n_nodes; i++) free(nodes[i]);
  free(nodes);
  free(counts);
  return st;
}

/* MPI's placement: every rank on this host, or the hosts MEMDL_HOSTS
 * names; the launcher's local rank must agree. */
static mdl_status mpi_placement(mdl_getenv_fn get, void *ctx, int size, int rank,
                                const char *lrank_s, const char *lsize_s, char **host, int *local,
                                mdl_error *err) {
  mdl_status st = MDL_OK;
  int lsize = 0;
  const char *hosts_s = env_get(get, ctx, "MEMDL_HOSTS");
  if (hosts_s) {
    char **h = NULL;
    int n = 0;
    st = mdl_slurm_hostlist(hosts_s, &h, &n, err);
    if (st == MDL_OK && n != size)
      st = mdl_errorf(err, MDL_ERR_INVALID, "MEMDL_HOSTS names %d hosts for %d ranks", n, size);
    for (int r = 0; st == MDL_OK && r < size; r++) {
      host[r] = mdl_xstrdup(h[r]);
      for (int q = 0; q < r; q++)
        if (!strcmp(host[q], host[r])) local[r]++;
    }
    for (int i = 0; i < n; i++) free(h[i]);
    free(h);
  } else if (lsize_s && parse_int(lsize_s, 1, 65536, &lsize) && lsize == size) {
    for (int r = 0; r < size; r++) {
      host[r] = short_hostname();
      local[r] = r;
    }
  } else {
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "MPI: the ranks span several hosts; name them in MEMDL_HOSTS (one per rank, "
                    "comma-separated, Slurm's [a-b] ranges allowed)");
  }
  int lr;
  if (st == MDL_OK && lrank_s && parse_int(lrank_s, 0, 65535, &lr) && lr != local[rank])
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "MPI: local rank %d disagrees with MEMDL_HOSTS (expected %d)", lr, local[rank]);
  return st;
}

/* Every rank's address from everyone's node and local rank: a Unix socket
 * for those on rank 0's node, a TCP port on every interface for the others
 * (rank 0 must reach them from its node). */
static void place_ranks(mdl_cluster_env *out, char **host, const int *local, int base_port) {
  int size = out->size, rank = out->rank;
  out->local_rank = local[rank];
  out->host = mdl_xstrdup(host[rank]);
  out->worker_hosts = mdl_xcalloc((size_t)size, sizeof *out->worker_hosts);
  out->same_node = mdl_xcalloc((size_t)size, sizeof *out->same_node);
  char buf[400];
  for (int r = 1; r < size; r++) {
    bool same = !strcmp(host[r], host[0]);
    if (same)
      snprintf(buf, sizeof buf, "unix:%s/rank%d.sock", out->sock_dir, r);
    else
      snprintf(buf, sizeof buf, "0.0.0.0:%d", base_port + local[r]);
    out->workers[r - 1] = same ? mdl_xstrdup(buf) : host_port(host[r], base_port + local[r]);
    out->worker_hosts[r - 1] = mdl_xstrdup(host[r]);
    out->same_node[r - 1] = same;
    out->n_same_node += same;
    if (r == rank) out->listen = mdl_xstrdup(buf);
  }
}

mdl_status mdl_cluster_env_detect(mdl_getenv_fn get, void *ctx, int base_port, mdl_cluster_env *out,
                                  mdl_error *err) {
  memset(out, 0, sizeof *out);
  const char *port_s = env_get(get, ctx, "MEMDL_PORT");
  if (port_s && !parse_int(port_s, 1, 65535, &base_port))
    return mdl_errorf(err, MDL_ERR_INVALID, "MEMDL_PORT=%s is not a port", port_s);
  if (base_port <= 0) base_port = 7070;

  const char *rank_s = env_get(get, ctx, "OMPI_COMM_WORLD_RANK");
  const char *size_s = env_get(get, ctx, "OMPI_COMM_WORLD_SIZE");
  const char *lrank_s = env_get(get, ctx, "OMPI_COMM_WORLD_LOCAL_RANK");
  const char *lsize_s = env_get(get, ctx, "OMPI_COMM_WORLD_LOCAL_SIZE");
  mdl_launch_kind kind = MDL_LAUNCH_NONE;
  if (rank_s && size_s) {
    kind = MDL_LAUNCH_MPI;
  } else if ((rank_s = env_get(get, ctx, "PMI_RANK")) && (size_s = env_get(get, ctx, "PMI_SIZE"))) {
    kind = MDL_LAUNCH_MPI;
    lrank_s = env_get(get, ctx, "MPI_LOCALRANKID");
    lsize_s = env_get(get, ctx, "MPI_LOCALNRANKS");
  } else if ((rank_s = env_get(get, ctx, "SLURM_PROCID")) &&
             (size_s = env_get(get, ctx, "SLURM_NTASKS"))) {
    kind = MDL_LAUNCH_SLURM;
    lrank_s = env_get(get, ctx, "SLURM_LOCALID");
  } else {
    return MDL_OK;
  }
  int rank, size;
  if (!parse_int(size_s, 1, 65536, &size) || !parse_int(rank_s, 0, size - 1, &rank))
    return mdl_errorf(err, MDL_ERR_INVALID, "launcher: rank \"%s\" of size \"%s\" is not valid",
                      rank_s, size_s);
  if (size == 1) return MDL_OK;
  out->kind = kind;
  out->rank = rank;
  out->size = size;
  out->n_workers = size - 1;
  out->workers = mdl_xcalloc((size_t)size, sizeof *out->workers);

  /* every rank computes everyone's host and local rank the same way */
  char **host = mdl_xcalloc((size_t)size, sizeof *host);
  int *local = mdl_xcalloc((size_t)size, sizeof *local);
  mdl_status st = MDL_OK;
  if (kind == MDL_LAUNCH_SLURM)
    st = slurm_placement(get, ctx, size, host, local, err);
  else
    st = mpi_placement(get, ctx, size, rank, lrank_s, lsize_s, host, local, err);
  if (st == MDL_OK) {
    int lr;
    if (kind == MDL_LAUNCH_SLURM && lrank_s && parse_int(lrank_s, 0, 65535, &lr) &&
        lr != local[rank])
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "Slurm: SLURM_LOCALID %d disagrees with the node list (expected %d); "
                      "memdl needs the block distribution",
                      lr, local[rank]);
  }
  if (st == MDL_OK) {
    char key[96];
    launch_key(get, ctx, kind, base_port, key, sizeof key);
    out->sock_dir = sock_dir_path(get, ctx, key);
    place_ranks(out, host, local, base_port);
  }
  for (int r = 0; r < size; r++) free(host[r]);
  free(host);
  free(local);
  if (st != MDL_OK) mdl_cluster_env_free(out);
  return st;
}

void mdl_launch_sec_free(mdl_launch_sec *s) {
  if (!s) return;
  free(s->tls_dir);
  free(s->token_file);
  free(s->ca);
  free(s->cert);
  free(s->key);
  memset(s, 0, sizeof *s);
}

static char *dir_file(const char *dir, const char *name, const char *ext) {
  char buf[1200];
  snprintf(buf, sizeof buf, "%s/%s%s", dir, name, ext);
  return mdl_xstrdup(buf);
}

void mdl_launch_sec_from_dir(mdl_launch_sec *s, const char *host, bool serving) {
  if (!s->tls_dir) return;
  if (!s->ca) s->ca = dir_file(s->tls_dir, "ca", ".pem");
  char *own = host ? NULL : short_hostname();
  if (!s->cert && !s->key && (serving || s->require_client_cert)) {
    s->cert = dir_file(s->tls_dir, host ? host : own, ".pem");
    s->key = dir_file(s->tls_dir, host ? host : own, ".key");
  }
  free(own);
  char *token = dir_file(s->tls_dir, "token", "");
  if (!s->token_file && access(token, F_OK) == 0)
    s->token_file = token;
  else
    free(token);
}

/* "1-3" or "1,4" into buf: the ranks of workers whose same_node is want. */
static int rank_list(const mdl_cluster_env *e, bool want, char *buf, size_t cap) {
  int n = 0;
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < e->n_workers; i++) {
    if (e->same_node[i] != want) continue;
    int lo = i + 1, hi = lo;
    while (hi < e->n_workers && e->same_node[hi] == want) hi++;
    if (len < cap)
      len += (size_t)snprintf(buf + len, cap - len, lo == hi ? "%s%d" : "%s%d-%d", n ? "," : "", lo,
                              hi);
    n += hi - lo + 1;
    i = hi - 1;
  }
  return n;
}

/* The distinct other nodes, comma-separated, into buf. */
static void other_nodes(const mdl_cluster_env *e, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < e->n_workers && len < cap; i++) {
    if (e->same_node[i]) continue;
    bool seen = false;
    for (int j = 0; j < i; j++)
      seen |= !e->same_node[j] && !strcmp(e->worker_hosts[j], e->worker_hosts[i]);
    if (!seen)
      len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? "," : "", e->worker_hosts[i]);
  }
}

/* The first file a rank would miss: rank 0's CA, each other node's
 * certificate and key in the shared folder. */
static mdl_status check_tls_files(const mdl_cluster_env *e, const mdl_launch_sec *s,
                                  mdl_error *err) {
  const char *hint = "; make them with `memdl certs DIR --hosts NODES` in a folder every node sees";
  if (s->ca && access(s->ca, R_OK) != 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "launch: TLS CA %s: %s%s", s->ca, strerror(errno),
                      s->tls_dir ? hint : "");
  if (!s->tls_dir) return MDL_OK;
  for (int i = 0; i < e->n_workers; i++) {
    if (e->same_node[i] && !s->ca) continue;
    char *cert = dir_file(s->tls_dir, e->worker_hosts[i], ".pem");
    char *key = dir_file(s->tls_dir, e->worker_hosts[i], ".key");
    bool ok = access(cert, R_OK) == 0 && access(key, R_OK) == 0;
    free(key);
    if (!ok) {
      mdl_status st = mdl_errorf(err, MDL_ERR_INVALID,
                                 "launch: rank %d on %s has no certificate %s (or its key)%s",
                                 i + 1, e->worker_hosts[i], cert, hint);
      free(cert);
      return st;
    }
    free(cert);
  }
  return MDL_OK;
}

mdl_status mdl_cluster_env_check(const mdl_cluster_env *e, const mdl_launch_sec *s, char *report,
                                 size_t cap, mdl_error *err) {
  bool tls = s->ca || s->cert;
  if (tls && !s->ca)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "launch: TLS needs the CA that signed the ranks' certificates (--tls-ca, "
                      "or --tls-dir DIR holding ca.pem)");
  if (tls && e->rank > 0 && !(s->cert && s->key))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "launch: rank %d on %s has a TLS CA but no certificate and key to serve "
                      "with (--tls-cert/--tls-key, or --tls-dir DIR holding %s.pem)",
                      e->rank, e->host, e->host);
  char same[256], other[256], nodes[512];
  rank_list(e, true, same, sizeof same);
  int n_other = rank_list(e, false, other, sizeof other);
  other_nodes(e, nodes, sizeof nodes);
  bool auth = s->token_file || (tls && s->require_client_cert);
  if (n_other > 0 && !tls && !s->insecure)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "launch: rank(s) %s on %s would send weights in clear over the network: "
                      "give --tls-dir DIR (made by `memdl certs DIR --hosts NODES`) or pass "
                      "--insecure",
                      other, nodes);
  if (n_other > 0 && !auth && !s->insecure)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "launch: rank(s) %s on %s would take calls from anyone who reaches their "
                      "port: give a token (--token-file, or a token file in --tls-dir) or pass "
                      "--insecure",
                      other, nodes);
  mdl_status st = tls ? check_tls_files(e, s, err) : MDL_OK;
  if (st != MDL_OK || !report) return st;
  size_t len = (size_t)snprintf(report, cap, "memdl: launch (%s, %d ranks): rank 0 drives on %s",
                                e->kind == MDL_LAUNCH_SLURM ? "Slurm" : "MPI", e->size,
                                e->host ? e->host : "?");
  bool many = e->n_same_node > 1;
  if (e->n_same_node > 0 && len < cap)
    len += (size_t)snprintf(report + len, cap - len, "; %s %s %s on Unix sockets in %s%s",
                            many ? "ranks" : "rank", same, many ? "serve" : "serves", e->sock_dir,
                            tls ? " with TLS" : " (no network)");
  many = n_other > 1;
  if (n_other > 0 && len < cap)
    len += (size_t)snprintf(report + len, cap - len, "; %s %s on %s %s TCP %s, %s",
                            many ? "ranks" : "rank", other, nodes, many ? "serve" : "serves",
                            tls ? "with TLS" : "in clear (--insecure)",
                            s->token_file ? "with a token"
                            : auth        ? "requiring client certificates"
                                          : "WITHOUT a token (--insecure)");
  return MDL_OK;
}
