/* Fingerprints: canonical packing of the plan, data file digests with an
 * inode/size/mtime cache, flat settings and their differences. */
#include "runtime/ci/fingerprint.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fileio.h"
#include "common/pb.h"
#include "common/sha256.h"
#include "runtime/data/dataset.h"

/* ---- small growable lists ---- */

static void add_part(mdl_fingerprint *fp, const char *name, const char *sha) {
  fp->parts = mdl_xrealloc(fp->parts, (size_t)(fp->n_parts + 1) * sizeof *fp->parts);
  mdl_fp_part *p = &fp->parts[fp->n_parts++];
  p->name = mdl_xstrdup(name);
  memcpy(p->sha, sha, 65);
}

static void add_field(mdl_fingerprint *fp, const char *name, const char *value) {
  fp->fields = mdl_xrealloc(fp->fields, (size_t)(fp->n_fields + 1) * sizeof *fp->fields);
  fp->fields[fp->n_fields].name = mdl_xstrdup(name);
  fp->fields[fp->n_fields].value = mdl_xstrdup(value);
  fp->n_fields++;
}

void mdl_fingerprint_free(mdl_fingerprint *fp) {
  if (!fp) return;
  for (int i = 0; i < fp->n_parts; i++) free(fp->parts[i].name);
  for (int i = 0; i < fp->n_fields; i++) {
    free(fp->fields[i].name);
    free(fp->fields[i].value);
  }
  free(fp->parts);
  free(fp->fields);
  memset(fp, 0, sizeof *fp);
}

static void sha_message(const ProtobufCMessage *m, mdl_sha256 *s) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = mdl_xmalloc(n + 1);
  protobuf_c_message_pack(m, buf);
  mdl_sha256_update(s, buf, n);
  free(buf);
}

static void sha_str(const char *v, char hex[65]) {
  mdl_sha256_bytes(v, strlen(v), hex);
}

/* ---- flat settings: every present field of a message, by path ---- */

static bool present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd) {
  const char *base = (const char *)m;
  if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)(base + fd->quantifier_offset) == fd->id;
  if (fd->type == PROTOBUF_C_TYPE_MESSAGE) return *(void *const *)(base + fd->offset) != NULL;
  if (fd->type == PROTOBUF_C_TYPE_STRING) {
    const char *v = *(char *const *)(base + fd->offset);
    return v && (!fd->default_value || strcmp(v, fd->default_value) != 0);
  }
  if (fd->label == PROTOBUF_C_LABEL_REQUIRED) return true;
  return *(const protobuf_c_boolean *)(base + fd->quantifier_offset);
}

static void flatten(const ProtobufCMessage *m, const char *prefix, mdl_fingerprint *fp);

static void emit(const ProtobufCFieldDescriptor *fd, const void *v, const char *name,
                 mdl_fingerprint *fp) {
  char buf[64];
  const char *s = buf;
  switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
      snprintf(buf, sizeof buf, "%d", *(const int32_t *)v);
      break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
      snprintf(buf, sizeof buf, "%u", *(const uint32_t *)v);
      break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
      snprintf(buf, sizeof buf, "%lld", (long long)*(const int64_t *)v);
      break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
      snprintf(buf, sizeof buf, "%llu", (unsigned long long)*(const uint64_t *)v);
      break;
    case PROTOBUF_C_TYPE_FLOAT:
      snprintf(buf, sizeof buf, "%g", (double)*(const float *)v);
      break;
    case PROTOBUF_C_TYPE_DOUBLE:
      snprintf(buf, sizeof buf, "%g", *(const double *)v);
      break;
    case PROTOBUF_C_TYPE_BOOL:
      s = *(const protobuf_c_boolean *)v ? "true" : "false";
      break;
    case PROTOBUF_C_TYPE_ENUM: {
      const ProtobufCEnumValue *ev =
          protobuf_c_enum_descriptor_get_value(fd->descriptor, *(const int *)v);
      if (ev)
        s = ev->name;
      else
        snprintf(buf, sizeof buf, "%d", *(const int *)v);
      break;
    }
    case PROTOBUF_C_TYPE_STRING:
      s = *(char *const *)v ? *(char *const *)v : "";
      break;
    case PROTOBUF_C_TYPE_BYTES:
      snprintf(buf, sizeof buf, "<%zu bytes>", ((const ProtobufCBinaryData *)v)->len);
      break;
    case PROTOBUF_C_TYPE_MESSAGE: {
      char p[512];
      snprintf(p, sizeof p, "%s.", name);
      flatten(*(const ProtobufCMessage *const *)v, p, fp);
      return;
    }
  }
  add_field(fp, name, s);
}

/* Long repeated fields (inline data) are summarised by their size. */
enum { MAX_REPEATED = 16 };

static void flatten(const ProtobufCMessage *m, const char *prefix, mdl_fingerprint *fp) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *fd = &d->fields[i];
    const char *base = (const char *)m;
    char name[512];
    if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + fd->quantifier_offset);
      const char *arr = *(char *const *)(base + fd->offset);
      if (n > MAX_REPEATED) {
        char v[32];
        snprintf(name, sizeof name, "%s%s.size", prefix, fd->name);
        snprintf(v, sizeof v, "%zu", n);
        add_field(fp, name, v);
        continue;
      }
      for (size_t k = 0; k < n; k++) {
        snprintf(name, sizeof name, "%s%s[%zu]", prefix, fd->name, k);
        emit(fd, arr + k * mdl_pb_value_size(fd->type), name, fp);
      }
    } else if (present(m, fd)) {
      snprintf(name, sizeof name, "%s%s", prefix, fd->name);
      emit(fd, base + fd->offset, name, fp);
    }
  }
}

/* ---- data files and the digest cache ---- */

typedef struct cache_entry {
  unsigned long long dev, ino;
  long long size, mtime_s, mtime_ns;
  char sha[65];
} cache_entry;

typedef struct hash_cache {
  cache_entry *e;
  int n;
  bool dirty;
} hash_cache;

static void cache_load(hash_cache *c, const char *path) {
  char *text = NULL;
  size_t len;
  mdl_error e;
  if (!path || mdl_file_read(path, &text, &len, &e) != MDL_OK) return;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    cache_entry x;
    if (sscanf(line, "%llu %llu %lld %lld %lld %64s", &x.dev, &x.ino, &x.size, &x.mtime_s,
               &x.mtime_ns, x.sha) != 6 ||
        strlen(x.sha) != 64)
      continue;
    c->e = mdl_xrealloc(c->e, (size_t)(c->n + 1) * sizeof *c->e);
    c->e[c->n++] = x;
  }
  free(text);
}

static mdl_status cache_save(const hash_cache *c, const char *path, mdl_error *err) {
  if (!path || !c->dirty) return MDL_OK;
  char *dir = mdl_path_dir(path);
  char dir_buf[4096];
  snprintf(dir_buf, sizeof dir_buf, "%s", dir);
  free(dir);
  for (char *p = dir_buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(dir_buf, 0777);
      *p = '/';
    }
  mkdir(dir_buf, 0777);
  size_t cap = (size_t)c->n * 160 + 1, used = 0;
  char *buf = mdl_xmalloc(cap);
  buf[0] = 0;
  for (int i = 0; i < c->n; i++)
    used +=
        (size_t)snprintf(buf + used, cap - used, "%llu %llu %lld %lld %lld %s\n", c->e[i].dev,
                         c->e[i].ino, c->e[i].size, c->e[i].mtime_s, c->e[i].mtime_ns, c->e[i].sha);
  mdl_status st = mdl_file_write_atomic(path, buf, used, err);
  free(buf);
  return st;
}

static mdl_status hash_file(const char *path, const struct stat *sb, hash_cache *c,
                            mdl_fingerprint *fp, char sha[65], mdl_error *err) {
  for (int i = 0; i < c->n; i++) {
    cache_entry *x = &c->e[i];
    if (x->dev == (unsigned long long)sb->st_dev && x->ino == (unsigned long long)sb->st_ino &&
        x->size == (long long)sb->st_size && x->mtime_s == (long long)sb->st_mtim.tv_sec &&
        x->mtime_ns == (long long)sb->st_mtim.tv_nsec) {
      memcpy(sha, x->sha, 65);
      fp->files_cached++;
      return MDL_OK;
    }
  }
  mdl_status st = mdl_sha256_file(path, sha, err);
  if (st != MDL_OK) return st;
  fp->files_hashed++;
  c->e = mdl_xrealloc(c->e, (size_t)(c->n + 1) * sizeof *c->e);
  c->e[c->n++] = (cache_entry){(unsigned long long)sb->st_dev, (unsigned long long)sb->st_ino,
                               (long long)sb->st_size,         (long long)sb->st_mtim.tv_sec,
                               (long long)sb->st_mtim.tv_nsec, ""};
  memcpy(c->e[c->n - 1].sha, sha, 65);
  c->dirty = true;
  return MDL_OK;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A path a data set names: a file's digest, or a folder's files' digests
 * (LMDB: lock.mdb changes on every open and is left out). Strings that name
 * nothing on disk are settings, already in the job part. */
static mdl_status hash_path(const char *base_dir, const char *value, hash_cache *c,
                            mdl_fingerprint *fp, mdl_sha256 *s, mdl_error *err) {
  if (!value || !*value) return MDL_OK;
  char *path = mdl_path_join(base_dir, value);
  struct stat sb;
  mdl_status st = MDL_OK;
  char sha[65];
  if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
    st = hash_file(path, &sb, c, fp, sha, err);
    if (st == MDL_OK) {
      mdl_sha256_update(s, sha, 64);
      mdl_sha256_update(s, "\n", 1);
    }
  } else if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    char **names = NULL;
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
      if (de->d_name[0] == '.' || !strcmp(de->d_name, "lock.mdb")) continue;
      names = mdl_xrealloc(names, (size_t)(n + 1) * sizeof *names);
      names[n++] = mdl_xstrdup(de->d_name);
    }
    if (d) closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
      char *f = mdl_path_join(path, names[i]);
      struct stat fs;
      if (st == MDL_OK && stat(f, &fs) == 0 && S_ISREG(fs.st_mode)) {
        st = hash_file(f, &fs, c, fp, sha, err);
        if (st == MDL_OK) {
          mdl_sha256_update(s, names[i], strlen(names[i]) + 1);
          mdl_sha256_update(s, sha, 64);
        }
      }
      free(f);
      free(names[i]);
    }
    free(names);
  }
  free(path);
  return st;
}

static mdl_status hash_strings(const ProtobufCMessage *m, const char *base_dir, bool top,
                               hash_cache *c, mdl_fingerprint *fp, mdl_sha256 *s, mdl_error *err) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  mdl_status st = MDL_OK;
  for (unsigned i = 0; i < d->n_fields && st == MDL_OK; i++) {
    const ProtobufCFieldDescriptor *fd = &d->fields[i];
    if (top && (!strcmp(fd->name, "name") || !strcmp(fd->name, "from"))) continue;
    bool rep = fd->label == PROTOBUF_C_LABEL_REPEATED;
    /* members of a oneof share their storage: only the chosen one counts */
    if (!rep && (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && !present(m, fd)) continue;
    size_t n = rep ? *(const size_t *)(base + fd->quantifier_offset) : 1;
    void *const *vals =
        rep ? *(void **const *)(base + fd->offset) : (void *const *)(base + fd->offset);
    if (fd->type == PROTOBUF_C_TYPE_STRING) {
      for (size_t k = 0; k < n && st == MDL_OK; k++)
        st = hash_path(base_dir, vals[k], c, fp, s, err);
    } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
      for (size_t k = 0; k < n && st == MDL_OK; k++)
        if (vals[k]) st = hash_strings(vals[k], base_dir, false, c, fp, s, err);
    }
  }
  return st;
}

/* ---- the fingerprint ---- */

static void part_of_message(mdl_fingerprint *fp, const char *name, const ProtobufCMessage *m) {
  mdl_sha256 s;
  uint8_t d[32];
  char hex[65];
  mdl_sha256_init(&s);
  if (m) sha_message(m, &s);
  mdl_sha256_final(&s, d);
  mdl_sha256_hex(d, hex);
  add_part(fp, name, hex);
}

static void clear_str(char **p) {
  free(*p);
  *p = NULL;
}

mdl_status mdl_fingerprint_compute(const mdl_job *job, const mdl_fp_inputs *in, mdl_fingerprint *fp,
                                   mdl_error *err) {
  memset(fp, 0, sizeof *fp);
  /* net: every net the solver builds from */
  const Caffe__SolverParameter *sp = job->solver;
  mdl_sha256 s;
  uint8_t d[32];
  char hex[65];
  mdl_sha256_init(&s);
  if (sp->net_param) sha_message(&sp->net_param->base, &s);
  if (sp->train_net_param) sha_message(&sp->train_net_param->base, &s);
  for (size_t i = 0; i < sp->n_test_net_param; i++) sha_message(&sp->test_net_param[i]->base, &s);
  mdl_sha256_final(&s, d);
  mdl_sha256_hex(d, hex);
  add_part(fp, "net", hex);

  /* solver: without the nets and the paths that only say where files are */
  Caffe__SolverParameter *sc = mdl_pb_dup(sp);
  mdl_pb_free(sc->net_param);
  sc->net_param = NULL;
  mdl_pb_free(sc->train_net_param);
  sc->train_net_param = NULL;
  for (size_t i = 0; i < sc->n_test_net_param; i++) mdl_pb_free(sc->test_net_param[i]);
  sc->n_test_net_param = 0;
  clear_str(&sc->net);
  clear_str(&sc->train_net);
  for (size_t i = 0; i < sc->n_test_net; i++) free(sc->test_net[i]);
  sc->n_test_net = 0;
  clear_str(&sc->snapshot_prefix);
  part_of_message(fp, "solver", &sc->base);
  flatten(&sc->base, "", fp);
  mdl_pb_free(sc);

  /* job: data set settings, acceptance, cluster, CI settings; not where
   * things are written */
  Memdl__Job *jc = mdl_pb_dup(job->job);
  clear_str(&jc->net);
  clear_str(&jc->solver);
  mdl_pb_free(jc->net_param);
  jc->net_param = NULL;
  mdl_pb_free(jc->solver_param);
  jc->solver_param = NULL;
  mdl_pb_free(jc->output);
  jc->output = NULL;
  if (jc->ci) {
    /* an unset string with a default points at the shared default */
    if (jc->ci->registry != memdl__ci__registry__default_value) free(jc->ci->registry);
    jc->ci->registry = NULL;
  }
  part_of_message(fp, "job", &jc->base);
  flatten(&jc->base, "job.", fp);
  mdl_pb_free(jc);

  /* data: the bytes of every file each data set reads */
  hash_cache c = {0};
  cache_load(&c, in ? in->cache : NULL);
  mdl_status st = MDL_OK;
  const Memdl__Job *j = job->job;
  for (size_t i = 0; i < j->n_data && st == MDL_OK; i++) {
    Memdl__DataSet *set = NULL;
    st = mdl_data_resolve(j->data, j->n_data, j->data[i], &set, err);
    if (st != MDL_OK) break;
    mdl_sha256_init(&s);
    st = hash_strings(&set->base, job->base_dir, true, &c, fp, &s, err);
    mdl_pb_free(set);
    if (st != MDL_OK) break;
    mdl_sha256_final(&s, d);
    mdl_sha256_hex(d, hex);
    char name[300];
    snprintf(name, sizeof name, "data %s", j->data[i]->name ? j->data[i]->name : "");
    add_part(fp, name, hex);
  }
  if (st == MDL_OK && in && in->weights) {
    st = mdl_sha256_file(in->weights, hex, err);
    if (st == MDL_OK) add_part(fp, "weights", hex);
  }
  if (st == MDL_OK) st = cache_save(&c, in ? in->cache : NULL, err);
  free(c.e);
  if (st == MDL_OK) {
    char v[32];
    const char *version = in && in->version ? in->version : "";
    sha_str(version, hex);
    add_part(fp, "version", hex);
    add_field(fp, "memdl_version", version);
    const char *device = in && in->device ? in->device : "cpu";
    sha_str(device, hex);
    add_part(fp, "device", hex);
    add_field(fp, "device", device);
    snprintf(v, sizeof v, "%d", in && in->workers > 0 ? in->workers : 1);
    sha_str(v, hex);
    add_part(fp, "workers", hex);
    add_field(fp, "workers", v);
    mdl_sha256_init(&s);
    for (int i = 0; i < fp->n_parts; i++) {
      mdl_sha256_update(&s, fp->parts[i].name, strlen(fp->parts[i].name));
      mdl_sha256_update(&s, " ", 1);
      mdl_sha256_update(&s, fp->parts[i].sha, 64);
      mdl_sha256_update(&s, "\n", 1);
    }
    mdl_sha256_final(&s, d);
    mdl_sha256_hex(d, fp->hex);
  }
  if (st != MDL_OK) mdl_fingerprint_free(fp);
  return st;
}

/* ---- text form and differences ---- */

typedef struct sbuf {
  char *s;
  size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (b->len + (size_t)n + 1 > b->cap) {
    b->cap = (b->len + (size_t)n + 1) * 2;
    b->s = mdl_xrealloc(b->s, b->cap);
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

char *mdl_fingerprint_format(const mdl_fingerprint *fp) {
  sbuf b = {0};
  sb_printf(&b, "fingerprint %s\n", fp->hex);
  for (int i = 0; i < fp->n_parts; i++)
    sb_printf(&b, "part %s %s\n", fp->parts[i].sha, fp->parts[i].name);
  for (int i = 0; i < fp->n_fields; i++) {
    /* values with a newline or tab would break the line format */
    char *v = mdl_xstrdup(fp->fields[i].value);
    for (char *p = v; *p; p++)
      if (*p == '\n' || *p == '\t') *p = ' ';
    sb_printf(&b, "field %s\t%s\n", fp->fields[i].name, v);
    free(v);
  }
  if (!b.s) sb_printf(&b, "%s", "");
  return b.s;
}

mdl_status mdl_fingerprint_parse(const char *text, mdl_fingerprint *fp, mdl_error *err) {
  memset(fp, 0, sizeof *fp);
  char *copy = mdl_xstrdup(text);
  char *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (!strncmp(line, "fingerprint ", 12) && strlen(line + 12) == 64) {
      memcpy(fp->hex, line + 12, 65);
    } else if (!strncmp(line, "part ", 5) && strlen(line) > 5 + 65 && line[5 + 64] == ' ') {
      char sha[65];
      memcpy(sha, line + 5, 64);
      sha[64] = 0;
      add_part(fp, line + 5 + 65, sha);
    } else if (!strncmp(line, "field ", 6) && strchr(line, '\t')) {
      char *tab = strchr(line, '\t');
      *tab = 0;
      add_field(fp, line + 6, tab + 1);
    }
  }
  free(copy);
  if (!fp->hex[0]) {
    mdl_fingerprint_free(fp);
    return mdl_errorf(err, MDL_ERR_INVALID, "not a fingerprint file (no \"fingerprint\" line)");
  }
  return MDL_OK;
}

static const mdl_fp_part *find_part(const mdl_fingerprint *fp, const char *name) {
  for (int i = 0; i < fp->n_parts; i++)
    if (!strcmp(fp->parts[i].name, name)) return &fp->parts[i];
  return NULL;
}

static const char *find_field(const mdl_fingerprint *fp, const char *name) {
  for (int i = 0; i < fp->n_fields; i++)
    if (!strcmp(fp->fields[i].name, name)) return fp->fields[i].value;
  return NULL;
}

char *mdl_fingerprint_diff(const mdl_fingerprint *old, const mdl_fingerprint *cur) {
  sbuf b = {0};
  int field_changes = 0;
  for (int i = 0; i < cur->n_fields; i++) {
    const char *was = find_field(old, cur->fields[i].name);
    if (was && !strcmp(was, cur->fields[i].value)) continue;
    sb_printf(&b, "%s %s \xe2\x86\x92 %s\n", cur->fields[i].name, was ? was : "(unset)",
              cur->fields[i].value);
    field_changes++;
  }
  for (int i = 0; i < old->n_fields; i++)
    if (!find_field(cur, old->fields[i].name)) {
      sb_printf(&b, "%s %s \xe2\x86\x92 (unset)\n", old->fields[i].name, old->fields[i].value);
      field_changes++;
    }
  for (int i = 0; i < cur->n_parts; i++) {
    const char *name = cur->parts[i].name;
    const mdl_fp_part *was = find_part(old, name);
    /* settings already said field by field */
    bool settings = !strcmp(name, "solver") || !strcmp(name, "job") || !strcmp(name, "version") ||
                    !strcmp(name, "device") || !strcmp(name, "workers");
    if (!was)
      sb_printf(&b, "%s is new\n", name);
    else if (strcmp(was->sha, cur->parts[i].sha) && (!settings || !field_changes))
      sb_printf(&b, "%s changed\n", name);
  }
  for (int i = 0; i < old->n_parts; i++)
    if (!find_part(cur, old->parts[i].name)) sb_printf(&b, "%s removed\n", old->parts[i].name);
  if (!b.s) sb_printf(&b, "%s", "");
  return b.s;
}
