/* TLS material for a cluster (`memdl certs`): a private CA, one certificate
 * per host signed by it, and a shared token, made with the OpenSSL library
 * that gRPC already links (libcrypto), so no openssl program is needed on
 * any node. Builds no gRPC credentials (rpc_server.c, rpc_client.c do). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/rpc/rpc.h"

/* OpenSSL's own reason for the last failure, with what we were doing. */
static mdl_status ssl_fail(mdl_error *err, const char *what) {
  char why[256] = "unknown error";
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, why, sizeof why);
  ERR_clear_error();
  return mdl_errorf(err, MDL_ERR_INTERNAL, "certs: %s: %s", what, why);
}

static bool add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
  if (!e) return false;
  bool ok = X509_add_ext(x, e, -1) == 1;
  X509_EXTENSION_free(e);
  return ok;
}

/* A certificate for key: the CA's own (issuer NULL, self-signed) or a
 * host's, valid for serving and for calling (a rank 0 that must present a
 * client certificate uses its node's). NULL on failure. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san, int days) {
  X509 *x = X509_new();
  BIGNUM *serial = BN_new();
  bool ok = x && serial && X509_set_version(x, 2) && BN_rand(serial, 127, 0, 0) &&
            BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) &&
            /* an hour's slack for clocks a little behind this one */
            X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
            X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) && X509_set_pubkey(x, key);
  X509_NAME *name = x ? X509_get_subject_name(x) : NULL;
  ok = ok &&
       X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"memdl", -1, -1,
                                  0) &&
       X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) &&
       X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  if (ok) {
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    ok = add_ext(x, &ctx, NID_subject_key_identifier, "hash") &&
         add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
  }
  if (ok && !issuer)
    ok = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
         add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  if (ok && issuer)
    ok = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
         add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth") &&
         add_ext(x, &ctx, NID_subject_alt_name, san);
  ok = ok && X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
  BN_free(serial);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* Writes through a new file of the given mode (keys 0600), replacing any. */
static mdl_status write_pem(const char *path, int mode, EVP_PKEY *key, X509 *cert, mdl_error *err) {
  unlink(path); /* a new file, so the mode below holds even if one was wider */
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return mdl_errorf(err, MDL_ERR_INVALID, "certs: %s: %s", path, strerror(errno));
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    return mdl_errorf(err, MDL_ERR_INTERNAL, "certs: %s: %s", path, strerror(errno));
  }
  bool ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1
                : PEM_write_X509(f, cert) == 1;
  ok = fclose(f) == 0 && ok;
  if (!ok) return mdl_errorf(err, MDL_ERR_INTERNAL, "certs: writing %s failed", path);
  return MDL_OK;
}

static char *dir_file(const char *dir, const char *name, const char *ext) {
  size_t n = strlen(dir) + strlen(name) + strlen(ext) + 2;
  char *p = mdl_xmalloc(n);
  snprintf(p, n, "%s/%s%s", dir, name, ext);
  return p;
}

/* The CA of an earlier `memdl certs` in dir (so nodes can be added later
 * and their certificates still verify), or a new one. */
static mdl_status load_or_make_ca(const char *dir, int days, EVP_PKEY **key, X509 **cert,
                                  bool *made, mdl_error *err) {
  char *kp = dir_file(dir, "ca", ".key"), *cp = dir_file(dir, "ca", ".pem");
  mdl_status st = MDL_OK;
  *made = false;
  if (access(kp, F_OK) == 0 || access(cp, F_OK) == 0) {
    FILE *kf = fopen(kp, "r"), *cf = fopen(cp, "r");
    *key = kf ? PEM_read_PrivateKey(kf, NULL, NULL, NULL) : NULL;
    *cert = cf ? PEM_read_X509(cf, NULL, NULL, NULL) : NULL;
    if (kf) fclose(kf);
    if (cf) fclose(cf);
    if (!*key || !*cert || X509_check_private_key(*cert, *key) != 1)
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "certs: %s and %s are not a CA certificate and its key; remove both to "
                      "start a new CA",
                      cp, kp);
  } else {
    *key = EVP_EC_gen("P-256");
    *cert = *key ? make_cert(*key, "memdl cluster CA", NULL, NULL, NULL, days) : NULL;
    if (!*key || !*cert) st = ssl_fail(err, "making the CA");
    if (st == MDL_OK) st = write_pem(kp, 0600, *key, NULL, err);
    if (st == MDL_OK) st = write_pem(cp, 0644, NULL, *cert, err);
    *made = st == MDL_OK;
  }
  free(kp);
  free(cp);
  return st;
}

/* A host name becomes a file name: no folders, no hidden files. */
static mdl_status check_host(const char *h, mdl_error *err) {
  size_t n = strlen(h);
  bool ok = n > 0 && n < 254 && h[0] != '.' && h[0] != '-';
  for (size_t i = 0; ok && i < n; i++)
    ok = (h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
         (h[i] >= '0' && h[i] <= '9') || h[i] == '.' || h[i] == '-' || h[i] == ':' || h[i] == '_';
  if (!ok)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "certs: \"%s\" is not a host name (letters, digits, '.', '-', '_', ':')", h);
  return MDL_OK;
}

/* The names a host's certificate answers to: its own, and localhost with
 * the loopback addresses, since rank 0 reaches the ranks of its own node by
 * a Unix socket, which gRPC checks as "localhost". */
static void host_san(const char *host, char *buf, size_t cap) {
  unsigned char ip[16];
  bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
  snprintf(buf, cap, "%s:%s,DNS:localhost,IP:127.0.0.1,IP:::1", is_ip ? "IP" : "DNS", host);
}

static mdl_status make_token(const char *dir, bool *made, mdl_error *err) {
  char *path = dir_file(dir, "token", "");
  mdl_status st = MDL_OK;
  *made = false;
  if (access(path, F_OK) != 0) {
    unsigned char raw[32];
    char hex[65];
    if (RAND_bytes(raw, sizeof raw) != 1) st = ssl_fail(err, "random token");
    for (int i = 0; st == MDL_OK && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    int fd = st == MDL_OK ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
    if (st == MDL_OK && fd < 0)
      st = mdl_errorf(err, MDL_ERR_INVALID, "certs: %s: %s", path, strerror(errno));
    if (fd >= 0) {
      hex[64] = '\n';
      if (write(fd, hex, 65) != 65)
        st = mdl_errorf(err, MDL_ERR_INTERNAL, "certs: %s: short write", path);
      close(fd);
    }
    *made = st == MDL_OK;
  }
  free(path);
  return st;
}

mdl_status mdl_rpc_certs_make(const char *dir, const char *const *hosts, int n_hosts, int days,
                              FILE *log, mdl_error *err) {
  if (!log) log = stderr;
  if (days < 1 || days > 36500)
    return mdl_errorf(err, MDL_ERR_INVALID, "certs: %d days: expected 1 to 36500", days);
  for (int i = 0; i < n_hosts; i++)
    if (check_host(hosts[i], err) != MDL_OK) return MDL_ERR_INVALID;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return mdl_errorf(err, MDL_ERR_INVALID, "certs: mkdir %s: %s", dir, strerror(errno));
  EVP_PKEY *ca_key = NULL;
  X509 *ca = NULL;
  bool new_ca = false, new_token = false;
  mdl_status st = load_or_make_ca(dir, days, &ca_key, &ca, &new_ca, err);
  for (int i = 0; st == MDL_OK && i < n_hosts; i++) {
    char san[600];
    host_san(hosts[i], san, sizeof san);
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = key ? make_cert(key, hosts[i], ca, ca_key, san, days) : NULL;
    if (!cert) st = ssl_fail(err, hosts[i]);
    char *kp = dir_file(dir, hosts[i], ".key"), *cp = dir_file(dir, hosts[i], ".pem");
    if (st == MDL_OK) st = write_pem(kp, 0600, key, NULL, err);
    if (st == MDL_OK) st = write_pem(cp, 0644, NULL, cert, err);
    free(kp);
    free(cp);
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  if (st == MDL_OK) st = make_token(dir, &new_token, err);
  if (st == MDL_OK)
    fprintf(log, "memdl certs: %s: %s CA, %d host certificate(s) (%d days), %s token\n", dir,
            new_ca ? "a new" : "the existing", n_hosts, days, new_token ? "a new" : "the existing");
  X509_free(ca);
  EVP_PKEY_free(ca_key);
  return st;
}
