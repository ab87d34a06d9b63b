/* fork/exec of ./memdl (or another program) with both output streams
 * drained through poll, so a chatty child never blocks on a full pipe. */
#include "tests/clitest.h"

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

static void append(buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = '\0';
}

/* memdl: argv without the program, run as ./memdl and killed alone on
 * timeout; else argv[0] is looked up in PATH and runs in a process group of
 * its own: on timeout it gets SIGTERM (a launcher then stops what it
 * started) and 15 s later the group gets SIGKILL. */
static mdl_run_result run_child(const char *const *argv, bool memdl, int timeout_s,
                                const mdl_signal_step *steps) {
  int next_step = 0;
  int out[2], err[2];
  mdl_run_result r = {0};
  if (pipe(out) || pipe(err)) abort();
  pid_t pid = fork();
  if (pid < 0) abort();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]), close(err[0]), close(out[1]), close(err[1]);
    if (!memdl) {
      setpgid(0, 0);
      execvp(argv[0], (char *const *)argv);
      perror(argv[0]);
      _exit(127);
    }
    int n = 0;
    while (argv[n]) n++;
    char **args = calloc((size_t)n + 2, sizeof *args);
    args[0] = "./memdl";
    for (int i = 0; i < n; i++) args[i + 1] = (char *)argv[i];
    execv(args[0], args);
    perror("exec ./memdl");
    _exit(127);
  }
  if (!memdl) setpgid(pid, pid); /* both sides, so a kill cannot come first */
  close(out[1]), close(err[1]);
  buf bo = {0}, be = {0};
  append(&bo, "", 0), append(&be, "", 0);
  struct pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  time_t deadline = time(NULL) + timeout_s;
  int open_fds = 2, killed = 0;
  while (open_fds > 0) {
    int left = (int)(deadline - time(NULL));
    if (left <= 0 && !killed) {
      kill(pid, memdl ? SIGKILL : SIGTERM);
      killed = 1;
      deadline += 15;
    } else if (left <= 0 && killed == 1 && !memdl) {
      kill(-pid, SIGKILL);
      killed = 2;
    }
    if (poll(fds, 2, left > 0 ? left * 1000 : 1000) < 0) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char chunk[65536];
      ssize_t got = read(fds[i].fd, chunk, sizeof chunk);
      if (got <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      } else {
        append(i ? &be : &bo, chunk, (size_t)got);
        while (i && steps && steps[next_step].after && strstr(be.p, steps[next_step].after)) {
          for (int k = 0; k < (steps[next_step].times ? steps[next_step].times : 1); k++)
            kill(pid, steps[next_step].sig);
          next_step++;
        }
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  r.out = bo.p;
  r.err = be.p;
  return r;
}

mdl_run_result mdl_run_memdl(const char *const *argv, int timeout_s) {
  return run_child(argv, true, timeout_s, NULL);
}

mdl_run_result mdl_run_memdl_signals(const char *const *argv, int timeout_s,
                                     const mdl_signal_step *steps) {
  return run_child(argv, true, timeout_s, steps);
}

mdl_run_result mdl_run_program(const char *const *argv, int timeout_s) {
  return run_child(argv, false, timeout_s, NULL);
}

void mdl_run_result_free(mdl_run_result *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}

const char *mdl_last_line(const char *s, char *buf, size_t size) {
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
  size_t start = n;
  while (start > 0 && s[start - 1] != '\n') start--;
  size_t len = n - start < size - 1 ? n - start : size - 1;
  memcpy(buf, s + start, len);
  buf[len] = '\0';
  return buf;
}
