/* Loads job files, Caffe solvers and Caffe nets into one resolved mdl_job.
 * Paths in a job resolve against the job file's folder; paths in Caffe
 * files resolve as Caffe resolves them (the current directory), falling
 * back to the referring file's folder. */
#include "compiler/job.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/pb.h"
#include "compiler/textformat.h"

const char *mdl_kind_name(mdl_file_kind kind) {
  switch (kind) {
    case MDL_KIND_NET:
      return "net";
    case MDL_KIND_SOLVER:
      return "solver";
    case MDL_KIND_JOB:
      return "job";
    default:
      return "auto";
  }
}

mdl_status mdl_kind_parse(const char *name, mdl_file_kind *kind) {
  static const mdl_file_kind kinds[] = {MDL_KIND_NET, MDL_KIND_SOLVER, MDL_KIND_JOB};
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
    if (!strcmp(name, mdl_kind_name(kinds[i]))) {
      *kind = kinds[i];
      return MDL_OK;
    }
  return MDL_ERR_INVALID;
}

/* ---- kind detection ---------------------------------------------------- */

static bool has_field(const ProtobufCMessageDescriptor *d, const char *name, size_t len) {
  char buf[128];
  if (len >= sizeof buf) return false;
  memcpy(buf, name, len);
  buf[len] = '\0';
  return protobuf_c_message_descriptor_get_field_by_name(d, buf) != NULL;
}

/* Scores each kind by how many of the file's top-level field names it
 * knows; the best score wins, ties going to job, then solver, then net (a
 * job may name its net and solver; a solver may name its net). */
mdl_file_kind mdl_detect_kind(const char *text, size_t len) {
  int score_net = 0, score_solver = 0, score_job = 0;
  int depth = 0;
  size_t i = 0;
  while (i < len) {
    char c = text[i];
    if (c == '#') {
      while (i < len && text[i] != '\n') i++;
    } else if (c == '"' || c == '\'') {
      i++;
      while (i < len && text[i] != c && text[i] != '\n') i += (text[i] == '\\') ? 2 : 1;
      i++;
    } else if (c == '{' || c == '<' || c == '[') {
      depth++, i++;
    } else if (c == '}' || c == '>' || c == ']') {
      depth--, i++;
    } else if (depth == 0 && (isalpha((unsigned char)c) || c == '_')) {
      size_t s = i;
      while (i < len && (isalnum((unsigned char)text[i]) || text[i] == '_')) i++;
      size_t n = i - s;
      size_t j = i;
      while (j < len && isspace((unsigned char)text[j])) j++;
      if (j < len && (text[j] == ':' || text[j] == '{' || text[j] == '<')) {
        score_net += has_field(&caffe__net_parameter__descriptor, text + s, n);
        score_solver += has_field(&caffe__solver_parameter__descriptor, text + s, n);
        score_job += has_field(&memdl__job__descriptor, text + s, n);
        if (j < len && text[j] == ':') {
          /* skip the value so identifiers in it (enum names) don't count */
          i = j + 1;
          while (i < len && isspace((unsigned char)text[i])) i++;
          if (i < len && (text[i] == '{' || text[i] == '<')) continue;
          while (i < len && text[i] != '\n' && text[i] != '#' && text[i] != '"' &&
                 text[i] != '\'' && text[i] != '{')
            i++;
        }
      }
    } else {
      i++;
    }
  }
  if (score_job >= score_solver && score_job >= score_net && score_job > 0) return MDL_KIND_JOB;
  if (score_solver >= score_net && score_solver > 0) return MDL_KIND_SOLVER;
  return MDL_KIND_NET;
}

/* ---- file helpers -------------------------------------------------------- */

/* Caffe resolves a solver's net path against the current directory; a
 * file next to the solver is the friendlier fallback. */
static char *resolve_caffe_path(const char *referrer, const char *rel) {
  if (rel[0] == '/' || access(rel, F_OK) == 0) return mdl_xstrdup(rel);
  char *dir = mdl_path_dir(referrer);
  char *p = mdl_path_join(dir, rel);
  free(dir);
  if (access(p, F_OK) == 0) return p;
  free(p);
  return mdl_xstrdup(rel);
}

static mdl_status parse_as(const char *path, const char *text, size_t len,
                           const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
                           mdl_error *err) {
  return mdl_text_parse(text, len, path, d, out, err);
}

static mdl_status load_net(const char *path, Caffe__NetParameter **out, mdl_error *err) {
  return mdl_text_parse_file(path, &caffe__net_parameter__descriptor, (ProtobufCMessage **)out,
                             err);
}

static void free_msg(void *m) {
  if (m) protobuf_c_message_free_unpacked((ProtobufCMessage *)m, NULL);
}

static Caffe__SolverParameter *new_solver(void) {
  Caffe__SolverParameter *s = mdl_xmalloc(sizeof *s);
  caffe__solver_parameter__init(s);
  return s;
}

static Memdl__Job *new_job(void) {
  Memdl__Job *j = mdl_xmalloc(sizeof *j);
  memdl__job__init(j);
  return j;
}

/* Replaces a string field the solver owns (protobuf-c frees non-default
 * strings with free()). */
static void set_str(char **field, const char *value) {
  free(*field);
  *field = value ? mdl_xstrdup(value) : NULL;
}

/* Loads a net a solver names, saying which solver field named it and,
 * when the file is missing, where it was looked for. */
static mdl_status load_solver_net(const char *solver_path, const char *field, const char *path,
                                  Caffe__NetParameter **out, mdl_error *err) {
  mdl_status st = load_net(path, out, err);
  if (st == MDL_OK) return st;
  if (access(path, F_OK) != 0 && err) {
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n,
             " (a solver's paths are relative to the current directory, as in Caffe, or to the "
             "solver's folder)");
  }
  mdl_error_prefix(err, "%s: %s: ", solver_path, field);
  return st;
}

/* Loads every net a solver names by path into its *_param fields, so the
 * plan carries the nets and workers never read the user's files. */
static mdl_status embed_solver_nets(mdl_job *job, const char *solver_path, mdl_error *err) {
  Caffe__SolverParameter *s = job->solver;
  int generic = (s->net != NULL) + (s->net_param != NULL);
  int train = (s->train_net != NULL) + (s->train_net_param != NULL);
  if (generic + train > 1)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: give the net once: one of net, net_param, train_net, train_net_param",
                      solver_path);
  if (s->net) {
    char *p = resolve_caffe_path(solver_path, s->net);
    mdl_status st = load_solver_net(solver_path, "net", p, &s->net_param, err);
    if (st == MDL_OK)
      job->net_path = p;
    else
      free(p);
    if (st) return st;
    set_str(&s->net, NULL);
  }
  if (s->train_net) {
    char *p = resolve_caffe_path(solver_path, s->train_net);
    mdl_status st = load_solver_net(solver_path, "train_net", p, &s->train_net_param, err);
    if (st == MDL_OK)
      job->net_path = p;
    else
      free(p);
    if (st) return st;
    set_str(&s->train_net, NULL);
  }
  if (s->n_test_net) {
    size_t n = s->n_test_net_param + s->n_test_net;
    s->test_net_param = mdl_xrealloc(s->test_net_param, n * sizeof *s->test_net_param);
    for (size_t i = 0; i < s->n_test_net; i++) {
      char *p = resolve_caffe_path(solver_path, s->test_net[i]);
      mdl_status st =
          load_solver_net(solver_path, "test_net", p, &s->test_net_param[s->n_test_net_param], err);
      free(p);
      if (st) return st;
      s->n_test_net_param++;
    }
    for (size_t i = 0; i < s->n_test_net; i++) free(s->test_net[i]);
    free(s->test_net);
    s->test_net = NULL;
    s->n_test_net = 0;
  }
  if (!s->net_param && !s->train_net_param && job->kind != MDL_KIND_JOB)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: the solver names no net (set net, net_param, train_net or "
                      "train_net_param)",
                      solver_path);
  return MDL_OK;
}

static mdl_status load_job_file(mdl_job *job, const char *text, size_t len, mdl_error *err) {
  mdl_status st =
      parse_as(job->path, text, len, &memdl__job__descriptor, (ProtobufCMessage **)&job->job, err);
  if (st) return st;
  Memdl__Job *j = job->job;
  if (j->solver && j->solver_param)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: give solver or solver_param, not both", job->path);
  if (j->net && j->net_param)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: give net or net_param, not both", job->path);
  if (j->solver) {
    char *p = mdl_path_join(job->base_dir, j->solver);
    st = mdl_text_parse_file(p, &caffe__solver_parameter__descriptor,
                             (ProtobufCMessage **)&job->solver, err);
    if (st == MDL_OK) st = embed_solver_nets(job, p, err);
    free(p);
    if (st) return st;
  } else if (j->solver_param) {
    job->solver = j->solver_param; /* moved: the solver is job->solver from now on */
    j->solver_param = NULL;
    st = embed_solver_nets(job, job->path, err);
    if (st) return st;
  } else {
    job->solver = new_solver();
  }
  Caffe__SolverParameter *s = job->solver;
  Caffe__NetParameter *net = NULL;
  if (j->net) {
    char *p = mdl_path_join(job->base_dir, j->net);
    st = load_net(p, &net, err);
    if (st) {
      free(p);
      return st;
    }
    free(job->net_path);
    job->net_path = p;
  } else if (j->net_param) {
    net = j->net_param;
    j->net_param = NULL;
  }
  if (net) { /* the job's net replaces whatever the solver named */
    free_msg(s->net_param);
    free_msg(s->train_net_param);
    s->train_net_param = NULL;
    for (size_t i = 0; i < s->n_test_net_param; i++) free_msg(s->test_net_param[i]);
    free(s->test_net_param);
    s->test_net_param = NULL;
    s->n_test_net_param = 0;
    s->net_param = net;
  }
  if (!s->net_param && !s->train_net_param)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: no net: give net (a file), net_param, or a solver that names one",
                      job->path);
  return MDL_OK;
}

mdl_status mdl_job_load(const char *path, mdl_file_kind kind, mdl_job **out, mdl_error *err) {
  *out = NULL;
  char *text = NULL;
  size_t len = 0;
  mdl_status st = mdl_file_read(path, &text, &len, err);
  if (st) return st;

  mdl_job *job = mdl_xcalloc(1, sizeof *job);
  job->path = mdl_xstrdup(path);
  job->kind = kind == MDL_KIND_AUTO ? mdl_detect_kind(text, len) : kind;
  switch (job->kind) {
    case MDL_KIND_JOB:
      job->base_dir = mdl_path_dir(path);
      st = load_job_file(job, text, len, err);
      break;
    case MDL_KIND_SOLVER:
      job->base_dir = mdl_xstrdup(".");
      job->job = new_job();
      st = parse_as(path, text, len, &caffe__solver_parameter__descriptor,
                    (ProtobufCMessage **)&job->solver, err);
      if (st == MDL_OK) st = embed_solver_nets(job, path, err);
      break;
    default:
      job->base_dir = mdl_xstrdup(".");
      job->job = new_job();
      job->solver = new_solver();
      job->net_path = mdl_xstrdup(path);
      st = parse_as(path, text, len, &caffe__net_parameter__descriptor,
                    (ProtobufCMessage **)&job->solver->net_param, err);
      break;
  }
  free(text);
  if (st) {
    mdl_job_free(job);
    return st;
  }
  *out = job;
  return MDL_OK;
}

const Caffe__NetParameter *mdl_job_net(const mdl_job *job, Caffe__Phase phase, int test_index,
                                       mdl_error *err) {
  const Caffe__SolverParameter *s = job->solver;
  if (phase == CAFFE__PHASE__TRAIN) {
    if (s->train_net_param) return s->train_net_param;
    if (s->net_param) return s->net_param;
    mdl_errorf(err, MDL_ERR_INVALID, "%s: no train net", job->path);
    return NULL;
  }
  if (test_index >= 0 && (size_t)test_index < s->n_test_net_param)
    return s->test_net_param[test_index];
  if (s->net_param) return s->net_param;
  mdl_errorf(err, MDL_ERR_INVALID, "%s: no test net #%d", job->path, test_index);
  return NULL;
}

/* ---- --set field=value ----------------------------------------------------- */

/* Merges the text-format fragment into *msg with protobuf's merge rule
 * (scalars replaced, repeated fields appended, messages merged), via the
 * wire format: parse(a) ++ parse(b) == merge(a, b). */
static mdl_status merge_text(ProtobufCMessage **msg, const char *fragment, const char *origin,
                             mdl_error *err) {
  const ProtobufCMessageDescriptor *d = (*msg)->descriptor;
  ProtobufCMessage *patch = NULL;
  mdl_status st = mdl_text_parse(fragment, strlen(fragment), origin, d, &patch, err);
  if (st) return st;
  size_t na = protobuf_c_message_get_packed_size(*msg);
  size_t nb = protobuf_c_message_get_packed_size(patch);
  uint8_t *buf = mdl_xmalloc(na + nb);
  protobuf_c_message_pack(*msg, buf);
  protobuf_c_message_pack(patch, buf + na);
  free_msg(patch);
  ProtobufCMessage *merged = protobuf_c_message_unpack(d, NULL, na + nb, buf);
  free(buf);
  if (!merged) return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: could not merge", origin);
  free_msg(*msg);
  *msg = merged;
  return MDL_OK;
}

/* Empties a repeated field, freeing what its elements own. */
static void clear_repeated(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd) {
  size_t *n = (size_t *)((char *)msg + fd->quantifier_offset);
  void **arr = (void **)((char *)msg + fd->offset);
  for (size_t i = 0; i < *n; i++) {
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE) mdl_pb_free(((ProtobufCMessage **)*arr)[i]);
    if (fd->type == PROTOBUF_C_TYPE_STRING) free(((char **)*arr)[i]);
    if (fd->type == PROTOBUF_C_TYPE_BYTES) free(((ProtobufCBinaryData *)*arr)[i].data);
  }
  free(*arr);
  *arr = NULL;
  *n = 0;
}

/* The value as the text format wants it: string fields take what was
 * written (quoted here, so `--set snapshot_prefix=/tmp/x/lenet` and
 * `--set type=Adam` work), enum fields their bare name; values already
 * quoted or given as a [list] pass unchanged. Caller frees. */
static char *field_value(const ProtobufCFieldDescriptor *fd, const char *value) {
  bool quoted = value[0] == '"' || value[0] == '\'' || value[0] == '[';
  if ((fd->type == PROTOBUF_C_TYPE_STRING || fd->type == PROTOBUF_C_TYPE_BYTES) && !quoted) {
    size_t n = strlen(value);
    char *q = mdl_xmalloc(2 * n + 3), *o = q;
    *o++ = '"';
    for (const char *p = value; *p; p++) {
      if (*p == '"' || *p == '\\') *o++ = '\\';
      *o++ = *p;
    }
    *o++ = '"';
    *o = 0;
    return q;
  }
  if (fd->type == PROTOBUF_C_TYPE_ENUM && (value[0] == '"' || value[0] == '\'')) {
    size_t n = strlen(value);
    if (n >= 2 && value[n - 1] == value[0]) {
      char *q = mdl_xstrdup(value + 1);
      q[n - 2] = 0;
      return q;
    }
  }
  return mdl_xstrdup(value);
}

/* "a.b.c" with value v as the fragment "a { b { c: v } }". */
static char *nested_fragment(const char *path, size_t len, const char *v) {
  size_t cap = len * 2 + strlen(v) + 64;
  char *frag = mdl_xmalloc(cap);
  size_t n = 0, depth = 0;
  const char *p = path, *end = path + len;
  while (p < end) {
    const char *q = memchr(p, '.', (size_t)(end - p));
    if (!q) q = end;
    n += (size_t)snprintf(frag + n, cap - n, "%.*s%s", (int)(q - p), p, q == end ? ": " : " { ");
    if (q != end) depth++;
    p = q + 1;
  }
  n += (size_t)snprintf(frag + n, cap - n, "%s", v);
  while (depth--) n += (size_t)snprintf(frag + n, cap - n, " }");
  return frag;
}

/* Applies path=value to *msg. A repeated message field on the way applies
 * the rest to each element it has (`accept.at_least=0.9` changes the
 * criterion the job has instead of adding an empty one); a repeated scalar
 * at the end is replaced, not appended to. */
static mdl_status set_path(ProtobufCMessage **msg, const char *path, size_t len, const char *value,
                           const char *origin, mdl_error *err) {
  const char *dot = memchr(path, '.', len);
  size_t first = dot ? (size_t)(dot - path) : len;
  char name[128];
  if (first >= sizeof name)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: field name too long", origin);
  memcpy(name, path, first);
  name[first] = 0;
  const ProtobufCFieldDescriptor *fd =
      protobuf_c_message_descriptor_get_field_by_name((*msg)->descriptor, name);
  if (!fd)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: %s has no field \"%s\"", origin,
                      (*msg)->descriptor->name, name);
  if (!dot) {
    char *v = field_value(fd, value);
    char *frag = nested_fragment(path, len, v);
    free(v);
    /* parse first, so that a bad value leaves the job as it was */
    ProtobufCMessage *check = NULL;
    mdl_status st = mdl_text_parse(frag, strlen(frag), origin, (*msg)->descriptor, &check, err);
    mdl_pb_free(check);
    if (st == MDL_OK) {
      if (fd->label == PROTOBUF_C_LABEL_REPEATED) clear_repeated(*msg, fd);
      st = merge_text(msg, frag, origin, err);
    }
    free(frag);
    return st;
  }
  if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: \"%s\" is not a message, it has no fields", origin,
                      name);
  const char *rest = dot + 1;
  size_t rest_len = len - first - 1;
  if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
    size_t n = *(size_t *)((char *)*msg + fd->quantifier_offset);
    ProtobufCMessage **arr = *(ProtobufCMessage ***)((char *)*msg + fd->offset);
    for (size_t i = 0; i < n; i++) {
      mdl_status st = set_path(&arr[i], rest, rest_len, value, origin, err);
      if (st != MDL_OK) return st;
    }
    if (n) return MDL_OK;
  } else {
    ProtobufCMessage **sub = (ProtobufCMessage **)((char *)*msg + fd->offset);
    if (*sub) return set_path(sub, rest, rest_len, value, origin, err);
  }
  /* nothing there yet: create it, with the value at its place */
  const ProtobufCMessageDescriptor *d = fd->descriptor;
  const char *p = rest, *end = rest + rest_len;
  const ProtobufCFieldDescriptor *leaf = NULL;
  while (d && p < end) { /* find the leaf's type, for quoting */
    const char *q = memchr(p, '.', (size_t)(end - p));
    if (!q) q = end;
    char nm[128];
    snprintf(nm, sizeof nm, "%.*s", (int)(q - p), p);
    leaf = protobuf_c_message_descriptor_get_field_by_name(d, nm);
    if (!leaf)
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: %s has no field \"%s\"", origin, d->name, nm);
    d = leaf->type == PROTOBUF_C_TYPE_MESSAGE ? leaf->descriptor : NULL;
    p = q + 1;
  }
  char *v = leaf ? field_value(leaf, value) : mdl_xstrdup(value);
  char *frag = nested_fragment(path, len, v);
  free(v);
  ProtobufCMessage *check = NULL;
  mdl_status st = mdl_text_parse(frag, strlen(frag), origin, (*msg)->descriptor, &check, err);
  mdl_pb_free(check);
  if (st == MDL_OK) st = merge_text(msg, frag, origin, err);
  free(frag);
  return st;
}

mdl_status mdl_job_set(mdl_job *job, const char *assignment, mdl_error *err) {
  const char *eq = strchr(assignment, '=');
  if (!eq || eq == assignment)
    return mdl_errorf(err, MDL_ERR_INVALID, "--set %s: expected FIELD=VALUE", assignment);
  size_t keylen = (size_t)(eq - assignment);
  const char *value = eq + 1;
  const char *dot = memchr(assignment, '.', keylen);
  size_t firstlen = dot ? (size_t)(dot - assignment) : keylen;
  char origin[160];
  snprintf(origin, sizeof origin, "--set %.*s", (int)keylen, assignment);

  /* The nets and the solver file were loaded with the job: changing the
   * field that named them would change nothing, silently. */
  static const char *const loaded[] = {"net",      "net_param",       "train_net",
                                       "test_net", "train_net_param", "test_net_param",
                                       "solver",   "solver_param"};
  for (size_t i = 0; i < sizeof loaded / sizeof *loaded; i++)
    if (firstlen == strlen(loaded[i]) && !strncmp(assignment, loaded[i], firstlen))
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "%s: the nets and the solver are read when the file is loaded; change "
                        "\"%s\" in the file (or name another file) instead",
                        origin, loaded[i]);

  ProtobufCMessage **target = NULL;
  if (has_field(&caffe__solver_parameter__descriptor, assignment, firstlen))
    target = (ProtobufCMessage **)&job->solver;
  else if (has_field(&memdl__job__descriptor, assignment, firstlen))
    target = (ProtobufCMessage **)&job->job;
  else
    return mdl_errorf(err, MDL_ERR_INVALID, "--set %.*s: no such solver or job field", (int)keylen,
                      assignment);
  /* On failure part way (one element of several), earlier elements keep the
   * new value; the value is checked by the first, so that does not happen
   * for a bad value. */
  return set_path(target, assignment, keylen, value, origin, err);
}

void mdl_job_free(mdl_job *job) {
  if (!job) return;
  free_msg(job->job);
  free_msg(job->solver);
  free(job->path);
  free(job->base_dir);
  free(job->net_path);
  free(job);
}
