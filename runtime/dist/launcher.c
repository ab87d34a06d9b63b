/* Local worker processes (see launcher.h). */
#define _GNU_SOURCE
#include "runtime/dist/launcher.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct local_worker {
  pid_t pid; /* 0: not running */
  int generation;
  char addr[300];
} local_worker;

extern char **environ;

struct mdl_local_workers {
  mdl_launch_opts o;
  char **envp; /* the workers' environment, built before any fork */
  char *exe;
  char **prefix;
  char dir[256];
  char token_path[300];
  char token[65];
  int k;
  local_worker *w;
  bool stopped;
};

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static mdl_status make_token(mdl_local_workers *lw, mdl_error *err) {
  unsigned char raw[32];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return mdl_errorf(err, MDL_ERR_INTERNAL, "getrandom: %s", strerror(errno));
    }
    got += (size_t)r;
  }
  for (int i = 0; i < 32; i++) snprintf(lw->token + 2 * i, 3, "%02x", raw[i]);
  snprintf(lw->token_path, sizeof lw->token_path, "%s/token", lw->dir);
  int fd = open(lw->token_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: %s", lw->token_path, strerror(errno));
  ssize_t n = write(fd, lw->token, 64);
  close(fd);
  if (n != 64) return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: short write", lw->token_path);
  return MDL_OK;
}

static mdl_status spawn(mdl_local_workers *lw, int i, mdl_error *err) {
  local_worker *w = &lw->w[i];
  w->generation++;
  snprintf(w->addr, sizeof w->addr, "unix:%s/w%d-%d.sock", lw->dir, i, w->generation);
  char threads[32], timeout[32];
  const char *argv[40];
  int n = 0;
  /* the memdl binary itself (/proc/self/exe) shows as `memdl worker ...`
   * in ps, not as /proc/self/exe; another program keeps its own name */
  argv[n++] = lw->o.exe ? lw->exe : "memdl";
  for (int j = 0; j < lw->o.n_prefix && n < 20; j++) argv[n++] = lw->prefix[j];
  argv[n++] = "--listen";
  argv[n++] = w->addr;
  argv[n++] = "--token-file";
  argv[n++] = lw->token_path;
  /* the one folder whose files the worker may map as shared weights */
  argv[n++] = "--shm-dir";
  argv[n++] = lw->dir;
  if (lw->o.device) {
    argv[n++] = "--device";
    argv[n++] = lw->o.device;
  }
  if (lw->o.threads > 0) {
    snprintf(threads, sizeof threads, "%d", lw->o.threads);
    argv[n++] = "--threads";
    argv[n++] = threads;
  }
  if (lw->o.driver_timeout_ms > 0) {
    snprintf(timeout, sizeof timeout, "%d", lw->o.driver_timeout_ms);
    argv[n++] = "--driver-timeout-ms";
    argv[n++] = timeout;
  }
  argv[n] = NULL;
  pid_t parent = getpid();
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return mdl_errorf(err, MDL_ERR_INTERNAL, "fork: %s", strerror(errno));
  if (pid == 0) {
    /* the child: only async-signal-safe calls until exec */
    setpgid(0, 0);
    /* SIGTERM: the worker stops, and removes this folder if we are gone */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
#endif
      for (int fd = 3; fd < 4096; fd++) close(fd);
    execve(lw->exe, (char *const *)argv, lw->envp);
    _exit(127);
  }
  w->pid = pid;
  return MDL_OK;
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char path[600];
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  rmdir(dir);
}

/* Removes our own memdl-* directories in parent whose driver is gone. */
static void sweep_stale(const char *parent) {
  DIR *d = opendir(parent);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "memdl-", 6) || strlen(e->d_name) != 12) continue;
    char dir[300], pidpath[400];
    snprintf(dir, sizeof dir, "%s/%s", parent, e->d_name);
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) continue;
    snprintf(pidpath, sizeof pidpath, "%s/driver.pid", dir);
    FILE *f = fopen(pidpath, "r");
    if (!f) continue;
    int pid = 0;
    bool ok = fscanf(f, "%d", &pid) == 1;
    fclose(f);
    if (ok && pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) remove_dir(dir);
  }
  closedir(d);
}

mdl_status mdl_local_workers_start(int k, const mdl_launch_opts *o, mdl_local_workers **out,
                                   mdl_error *err) {
  *out = NULL;
  if (k < 1 || k > 1024)
    return mdl_errorf(err, MDL_ERR_INVALID, "local workers: %d, expected 1 to 1024", k);
  mdl_local_workers *lw = mdl_xcalloc(1, sizeof *lw);
  lw->o = *o;
  lw->o.log = o->log ? o->log : stderr;
  lw->exe = mdl_xstrdup(o->exe ? o->exe : "/proc/self/exe");
  static const char *const default_prefix[] = {"worker"};
  const char *const *prefix = o->argv_prefix ? o->argv_prefix : default_prefix;
  lw->o.n_prefix = o->argv_prefix ? o->n_prefix : 1;
  lw->prefix = mdl_xcalloc((size_t)lw->o.n_prefix + 1, sizeof *lw->prefix);
  for (int j = 0; j < lw->o.n_prefix; j++) lw->prefix[j] = mdl_xstrdup(prefix[j]);
  lw->o.device = o->device ? mdl_xstrdup(o->device) : NULL;
  lw->o.unset_env = NULL;
  size_t n_env = 0;
  while (environ && environ[n_env]) n_env++;
  lw->envp = mdl_xcalloc(n_env + 1, sizeof *lw->envp);
  for (size_t i = 0, j = 0; i < n_env; i++) {
    bool drop = false;
    for (const char *const *u = o->unset_env; u && *u; u++) {
      size_t ul = strlen(*u);
      if (!strncmp(environ[i], *u, ul) && environ[i][ul] == '=') drop = true;
    }
    if (!drop) lw->envp[j++] = mdl_xstrdup(environ[i]);
  }
  lw->k = k;
  lw->w = mdl_xcalloc((size_t)k, sizeof *lw->w);
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !tmp[0] || strlen(tmp) > 120) tmp = "/tmp";
  struct stat shm;
  if (stat("/dev/shm", &shm) == 0 && S_ISDIR(shm.st_mode) && access("/dev/shm", W_OK | X_OK) == 0)
    tmp = "/dev/shm";
  sweep_stale(tmp);
  snprintf(lw->dir, sizeof lw->dir, "%s/memdl-XXXXXX", tmp);
  if (!mkdtemp(lw->dir)) {
    mdl_status st = mdl_errorf(err, MDL_ERR_INTERNAL, "mkdtemp %s: %s", lw->dir, strerror(errno));
    lw->dir[0] = 0;
    mdl_local_workers_free(lw);
    return st;
  }
  chmod(lw->dir, 0700);
  /* who owns the directory: a later run removes it if this driver dies
   * without cleaning up (SIGKILL), so /dev/shm does not fill up */
  char pidpath[300];
  snprintf(pidpath, sizeof pidpath, "%s/driver.pid", lw->dir);
  FILE *pf = fopen(pidpath, "w");
  if (pf) {
    fprintf(pf, "%d\n", (int)getpid());
    fclose(pf);
  }
  mdl_status st = make_token(lw, err);
  for (int i = 0; st == MDL_OK && i < k; i++) st = spawn(lw, i, err);
  if (st != MDL_OK) {
    mdl_local_workers_stop(lw, 0);
    mdl_local_workers_free(lw);
    return st;
  }
  *out = lw;
  return MDL_OK;
}

int mdl_local_workers_count(const mdl_local_workers *lw) {
  return lw->k;
}
const char *mdl_local_workers_address(const mdl_local_workers *lw, int i) {
  return lw->w[i].addr;
}
pid_t mdl_local_workers_pid(const mdl_local_workers *lw, int i) {
  return lw->w[i].pid;
}
const char *mdl_local_workers_dir(const mdl_local_workers *lw) {
  return lw->dir;
}

const char *mdl_local_workers_token(const mdl_local_workers *lw, size_t *len) {
  if (len) *len = 64;
  return lw->token;
}

bool mdl_local_workers_alive(mdl_local_workers *lw, int i) {
  local_worker *w = &lw->w[i];
  if (w->pid <= 0) return false;
  int status;
  pid_t r = waitpid(w->pid, &status, WNOHANG);
  if (r == w->pid || (r < 0 && errno == ECHILD)) {
    w->pid = 0;
    return false;
  }
  return true;
}

static void socket_unlink(const char *addr) {
  if (!strncmp(addr, "unix:", 5)) unlink(addr + 5);
}

static void reap(local_worker *w, int grace_ms) {
  if (w->pid <= 0) return;
  int status;
  for (int waited = 0; waited < grace_ms; waited += 10) {
    pid_t r = waitpid(w->pid, &status, WNOHANG);
    if (r == w->pid || (r < 0 && errno == ECHILD)) {
      w->pid = 0;
      return;
    }
    sleep_ms(10);
  }
  kill(w->pid, SIGKILL);
  while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR) {
  }
  w->pid = 0;
}

void mdl_local_workers_kill(mdl_local_workers *lw, int i) {
  local_worker *w = &lw->w[i];
  if (w->pid > 0) kill(w->pid, SIGKILL);
  reap(w, 0);
}

mdl_status mdl_local_workers_restart(mdl_local_workers *lw, int i, mdl_error *err) {
  local_worker *w = &lw->w[i];
  if (w->pid > 0) kill(w->pid, SIGKILL);
  reap(w, 0);
  socket_unlink(w->addr);
  return spawn(lw, i, err);
}

void mdl_local_workers_stop(mdl_local_workers *lw, int grace_ms) {
  if (!lw || lw->stopped) return;
  lw->stopped = true;
  for (int i = 0; i < lw->k; i++)
    if (lw->w[i].pid > 0) kill(lw->w[i].pid, SIGTERM);
  for (int i = 0; i < lw->k; i++) {
    reap(&lw->w[i], grace_ms);
    socket_unlink(lw->w[i].addr);
  }
  if (lw->dir[0]) remove_dir(lw->dir);
}

void mdl_local_workers_free(mdl_local_workers *lw) {
  if (!lw) return;
  mdl_local_workers_stop(lw, 1000);
  for (int j = 0; lw->prefix && j < lw->o.n_prefix; j++) free(lw->prefix[j]);
  free(lw->prefix);
  for (char **e = lw->envp; e && *e; e++) free(*e);
  free(lw->envp);
  free((char *)lw->o.device);
  free(lw->exe);
  free(lw->w);
  free(lw);
}
