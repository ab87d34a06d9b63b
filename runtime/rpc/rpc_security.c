/* Who may talk to whom: the token file and its constant-time comparison,
 * loopback detection and the plain-TCP check. No gRPC here; the
 * credentials themselves are built by rpc_server.c and rpc_client.c. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "runtime/rpc/rpc_internal.h"

mdl_status mdl_rpc_read_text(const char *what, const char *path, char **out, size_t *len,
                             mdl_error *err) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return mdl_errorf(err, MDL_ERR_INVALID, "%s %s: %s", what, path, strerror(errno));
  size_t cap = 4096, n = 0;
  char *buf = mdl_xmalloc(cap);
  for (;;) {
    if (n + 1 >= cap) {
      if (cap >= (1u << 24)) {
        fclose(f);
        free(buf);
        return mdl_errorf(err, MDL_ERR_INVALID, "%s %s: larger than 16 MiB", what, path);
      }
      cap *= 2;
      buf = mdl_xrealloc(buf, cap);
    }
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    if (r == 0) break;
    n += r;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s %s: read error", what, path);
  }
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return MDL_OK;
}

mdl_status mdl_rpc_token_read(const char *path, char **out, size_t *len, mdl_error *err) {
  *out = NULL;
  *len = 0;
  struct stat st;
  if (stat(path, &st) != 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "token file %s: %s", path, strerror(errno));
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "token file %s: readable by group or others (mode %03o); chmod 600 it", path,
                      (unsigned)(st.st_mode & 0777));
  char *buf;
  size_t n;
  mdl_status s = mdl_rpc_read_text("token file", path, &buf, &n, err);
  if (s != MDL_OK) return s;
  while (n > 0 &&
         (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    buf[--n] = 0;
  if (n < 16) {
    free(buf);
    return mdl_errorf(err, MDL_ERR_INVALID, "token file %s: token shorter than 16 bytes", path);
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e) {
      free(buf);
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "token file %s: token must be printable ASCII (it is sent as metadata)",
                        path);
    }
  *out = buf;
  *len = n;
  return MDL_OK;
}

/* Time depends on the expected token's length only. */
bool mdl_rpc_token_equal(const char *want, size_t want_len, const unsigned char *got,
                         size_t got_len) {
  unsigned diff = (unsigned)(want_len != got_len);
  for (size_t i = 0; i < want_len; i++) {
    unsigned char g = i < got_len ? got[i] : 0;
    diff |= (unsigned)((unsigned char)want[i] ^ g);
  }
  return diff == 0;
}

/* Splits "host:port" / "[v6]:port" into host. */
static bool addr_host(const char *addr, char *host, size_t cap) {
  if (addr[0] == '[') {
    const char *end = strchr(addr, ']');
    if (!end || (size_t)(end - addr - 1) >= cap) return false;
    memcpy(host, addr + 1, (size_t)(end - addr - 1));
    host[end - addr - 1] = 0;
    return true;
  }
  const char *colon = strrchr(addr, ':');
  size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
  if (n >= cap) return false;
  memcpy(host, addr, n);
  host[n] = 0;
  return true;
}

static bool in6_loopback(const struct in6_addr *a) {
  if (IN6_IS_ADDR_LOOPBACK(a)) return true;
  if (IN6_IS_ADDR_V4MAPPED(a)) return a->s6_addr[12] == 127;
  return false;
}

static bool sockaddr_loopback(const struct addrinfo *ai) {
  if (ai->ai_family == AF_INET) {
    struct sockaddr_in in;
    memcpy(&in, ai->ai_addr, sizeof in);
    return (ntohl(in.sin_addr.s_addr) >> 24) == 127;
  }
  if (ai->ai_family == AF_INET6) {
    struct sockaddr_in6 in6;
    memcpy(&in6, ai->ai_addr, sizeof in6);
    return in6_loopback(&in6.sin6_addr);
  }
  return false;
}

bool mdl_rpc_addr_is_loopback(const char *addr) {
  if (!strncmp(addr, "unix:", 5) || !strncmp(addr, "unix-abstract:", 14)) return true;
  const char *a = addr;
  if (!strncmp(a, "ipv4:", 5) || !strncmp(a, "ipv6:", 5)) a += 5;
  if (!strncmp(a, "dns:///", 7)) a += 7;
  char host[256];
  if (!addr_host(a, host, sizeof host)) return false;
  if (!strcmp(host, "localhost")) return true;
  if (!host[0]) return false; /* ":port" listens on every interface */
  struct in_addr v4;
  struct in6_addr v6;
  if (inet_pton(AF_INET, host, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &v6) == 1) return in6_loopback(&v6);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return false;
  bool all = true;
  for (struct addrinfo *p = res; p; p = p->ai_next)
    if (!sockaddr_loopback(p)) all = false;
  freeaddrinfo(res);
  return all;
}

mdl_status mdl_rpc_check_transport(const char *addr, const mdl_rpc_security *sec, FILE *log,
                                   mdl_error *err) {
  if (mdl_rpc_addr_is_loopback(addr)) return MDL_OK;
  if (sec && (sec->tls_cert || sec->tls_ca)) return MDL_OK;
  if (sec && sec->insecure) {
    /* say what actually travels in clear: there may be no token at all */
    fprintf(log ? log : stderr,
            "memdl: WARNING: plain TCP on %s, a non-loopback address: %s (--insecure)\n", addr,
            sec->token ? "weights and the token travel unencrypted"
                       : "weights travel unencrypted and calls carry no token");
    return MDL_OK;
  }
  return mdl_errorf(err, MDL_ERR_INVALID,
                    "%s is not a loopback address: use TLS (--tls-cert/--tls-key, --tls-ca) or "
                    "pass --insecure to allow plain TCP",
                    addr);
}

bool mdl_rpc_addr_is_shared(const char *addr) {
  /* a path socket is guarded by its file's mode and its folder's; an
   * abstract socket has neither, and TCP (even on loopback) is open to every
   * local user, and beyond loopback to the network */
  return strncmp(addr, "unix:", 5) != 0;
}

mdl_status mdl_rpc_check_server_auth(const char *addr, const mdl_rpc_security *sec, FILE *log,
                                     mdl_error *err) {
  if (!mdl_rpc_addr_is_shared(addr)) return MDL_OK;
  if (sec->token) return MDL_OK;
  if (sec->require_client_cert && sec->tls_cert && sec->tls_ca) return MDL_OK;
  if (sec->insecure) {
    fprintf(log ? log : stderr,
            "memdl: WARNING: serving on %s without authentication: no token (--token-file) and "
            "no required client certificates, so any %s can call it (--insecure)\n",
            addr,
            mdl_rpc_addr_is_loopback(addr) ? "local user" : "local user or host that reaches it");
    return MDL_OK;
  }
  return mdl_errorf(
      err, MDL_ERR_INVALID,
      "refusing to serve on %s without authentication: any %s could call it; give "
      "--token-file (or TLS with --tls-ca and --require-client-cert), listen on a "
      "unix:/path socket in a private folder, or pass --insecure",
      addr, mdl_rpc_addr_is_loopback(addr) ? "local user" : "local user or host that reaches it");
}
