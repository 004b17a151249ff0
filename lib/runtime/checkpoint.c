/* Memory checkpointing: can this host save a sandbox's processes and
 * memory (CRIU) so that a stopped sandbox could restart where it was?
 * docs/design/checkpoint.md has the design; this file only answers the
 * question, at run time, by asking CRIU itself: `criu check` exercises the
 * kernel features a dump and a restore need (it fails, for instance, on
 * kernels whose vDSO layout CRIU 3.17 does not know). No checkpoint is
 * taken anywhere yet: a yes means the host could, not that we do. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "pocketenv/runtime.h"

#define CHECK_TIMEOUT_MS 10000
#define OUT_MAX 8192

extern char **environ;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What CRIU said went wrong: its "Error (file:line): what" lines, the
 * prefix cut and the child-exit noise left out; the first (usually the
 * cause) and the last (what gave up), else out's last non-empty line.
 * Bounded, printable ASCII only. */
static char *what_failed(const char *out)
{
    const char *first = NULL, *last = NULL, *any = NULL, *line = out;
    size_t first_len = 0, last_len = 0, any_len = 0;
    char *r, *w;

    while (*line) {
        const char *end = strchr(line, '\n'), *msg = line;
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > 0) {
            any = line;
            any_len = len;
        }
        if (strncmp(line, "Error (", 7) == 0 && (msg = memchr(line, ')', len)) != NULL &&
            msg + 2 < line + len && strncmp(msg + 1, ": ", 2) == 0 &&
            strncmp(msg + 3, "exited, status=", 15) != 0) {
            msg += 3;
            if (first == NULL) {
                first = msg;
                first_len = (size_t)(line + len - msg);
            }
            last = msg;
            last_len = (size_t)(line + len - msg);
        }
        line += len + (end != NULL);
    }
    if (first == NULL && any == NULL)
        return pe_xstrdup("no output");
    if (first == NULL)
        r = pe_xasprintf("%.*s", (int)(any_len > 300 ? 300 : any_len), any);
    else if (first == last)
        r = pe_xasprintf("%.*s", (int)(first_len > 300 ? 300 : first_len), first);
    else
        r = pe_xasprintf("%.*s ... %.*s", (int)(first_len > 200 ? 200 : first_len), first,
                         (int)(last_len > 200 ? 200 : last_len), last);
    for (w = r; *w; w++)
        if ((unsigned char)*w < 0x20 || (unsigned char)*w > 0x7e)
            *w = '?';
    return r;
}

/* Run argv, stdout and stderr to *out (at most OUT_MAX bytes kept),
 * bounded by CHECK_TIMEOUT_MS. Its exit status, -1 if it could not run
 * (errno: ENOENT when the program is missing), -2 on timeout. */
static int run_capture(char *const argv[], char **out)
{
    posix_spawn_file_actions_t fa;
    int p[2], status = 0, r = -1;
    size_t len = 0;
    pid_t pid;
    int64_t deadline = now_ms() + CHECK_TIMEOUT_MS;

    *out = pe_xcalloc(OUT_MAX + 1, 1);
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    errno = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (errno != 0) {
        close(p[0]);
        return -1;
    }
    for (;;) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        int64_t left = deadline - now_ms();
        char buf[1024];
        ssize_t n;
        if (left <= 0 || poll(&pf, 1, (int)left) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(p[0]);
            return -2;
        }
        n = read(p[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (len < OUT_MAX) {
            size_t k = (size_t)n < OUT_MAX - len ? (size_t)n : OUT_MAX - len;
            memcpy(*out + len, buf, k);
            len += k;
        }
    }
    close(p[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED(status))
        r = WEXITSTATUS(status);
    else
        r = 128 + WTERMSIG(status);
    return r;
}

int pe_runtime_checkpoint_probe(char **reason)
{
    char *argv[] = {(char *)"criu", (char *)"check", NULL};
    char *out = NULL, *why;
    int r = run_capture(argv, &out);

    if (r == 0) {
        *reason = pe_xstrdup("criu check passed");
        free(out);
        return 1;
    }
    if (r == -1 && errno == ENOENT) {
        *reason = pe_xstrdup("criu is not installed");
    } else if (r == -1) {
        *reason = pe_xasprintf("criu check could not run: %s", strerror(errno));
    } else if (r == -2) {
        *reason = pe_xasprintf("criu check did not finish within %d s", CHECK_TIMEOUT_MS / 1000);
    } else {
        why = what_failed(out);
        *reason = pe_xasprintf("criu check failed (exit %d): %s", r, why);
        free(why);
    }
    free(out);
    return 0;
}
