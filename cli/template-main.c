/* pocketenv-template: `pocketenv image build TEMPLATE` in a process of its
 * own (libcurl and libarchive stay out of every other command, as with
 * pocketenv-import).
 *
 *   pocketenv-template DATA_DIR NAME
 *
 * Progress goes to stderr: on a terminal one line rewritten in place
 * (layer, what it does, bytes), otherwise a line per change of step; then
 * a one-line outcome. Exit 0 when built, 125 with the error otherwise.
 * POCKETENV_BUILD_LOG=FILE: the build sandboxes' whole output (npm's,
 * apt's) is appended there, for a failure the last lines do not explain. */
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "image/image.h"
#include "runtime/security.h"
#include "template/template.h"

typedef struct view {
    bool tty;
    char last[400];
    int64_t last_ms;
} view;

static void human(char *buf, size_t len, int64_t bytes)
{
    if (bytes < 0)
        snprintf(buf, len, "?");
    else if (bytes < 10 * 1024 * 1024)
        snprintf(buf, len, "%.1f KiB", (double)bytes / 1024.0);
    else
        snprintf(buf, len, "%.1f MiB", (double)bytes / 1048576.0);
}

static void on_progress(void *ud, const char *step, const char *what, int64_t bytes, int64_t total)
{
    view *v = ud;
    char line[400], b[32], t[32];
    int64_t now = pe_monotonic_ms();

    snprintf(line, sizeof(line), "[%s] %s", step, what);
    if (!v->tty) {
        if (strcmp(line, v->last) != 0)
            fprintf(stderr, "%s\n", line);
        snprintf(v->last, sizeof(v->last), "%s", line);
        return;
    }
    if (now - v->last_ms < 200 && strcmp(line, v->last) == 0)
        return;
    v->last_ms = now;
    snprintf(v->last, sizeof(v->last), "%s", line);
    human(b, sizeof(b), bytes);
    human(t, sizeof(t), total);
    if (total > 0)
        fprintf(stderr, "\r\033[K%.*s  %s / %s", 100, line, b, t);
    else if (bytes > 0)
        fprintf(stderr, "\r\033[K%.*s  %s", 100, line, b);
    else
        fprintf(stderr, "\r\033[K%.*s", 100, line);
    fflush(stderr);
}

/* "node 150.2 MiB, claude-code 61.0 MiB": the layers it stands on. */
static void layer_sizes(const char *data_dir, const char *name, char *buf, size_t len)
{
    pe_image_info *v = NULL;
    size_t n = 0, used = 0;

    buf[0] = '\0';
    if (pe_image_list(data_dir, &v, &n, NULL) < 0)
        return;
    for (const pe_template *t = pe_template_find(name); t; t = pe_template_find(t->parent))
        for (size_t i = 0; i < n; i++)
            if (strcmp(v[i].name, t->name) == 0 && used < len) {
                char s[32];
                human(s, sizeof(s), v[i].size);
                used += (size_t)snprintf(buf + used, len - used, "%s%s %s", used ? ", " : "",
                                         t->name, s);
            }
    pe_image_info_free(v, n);
}

int main(int argc, char **argv)
{
    view v = {.tty = isatty(2)};
    pe_template_opts o = {.progress = on_progress, .ud = &v, .log_fd = -1};
    pe_runtime rt;
    pe_err err;
    char sizes[512];
    int64_t t0 = pe_monotonic_ms();
    int r;

    pe_log_init();
    if (argc != 3) {
        fprintf(stderr, "usage: pocketenv-template DATA_DIR NAME\n");
        return 2;
    }
    if (getenv("POCKETENV_BUILD_LOG") != NULL) {
        o.log_fd =
            open(getenv("POCKETENV_BUILD_LOG"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (o.log_fd < 0) {
            fprintf(stderr, "pocketenv: open %s: %s\n", getenv("POCKETENV_BUILD_LOG"),
                    strerror(errno));
            return 125;
        }
    }
    pe_err_clear(&err);
    if (pe_runtime_open(&rt, argv[1], &err) < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return 125;
    }
    {
        char *cache = pe_xasprintf("%s/cache", rt.data_dir);
        if (mkdir(cache, 0700) == 0 || errno == EEXIST)
            pe_seccomp_set_cache_dir(cache);
        free(cache);
    }
    r = pe_template_build(&rt, argv[2], &o, &err);
    if (v.tty)
        fprintf(stderr, "\r\033[K");
    if (r < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        pe_runtime_close(&rt);
        return 125;
    }
    layer_sizes(rt.data_dir, argv[2], sizes, sizeof(sizes));
    fprintf(stderr, "template %s is built (%s) in %.0f s\n", argv[2], sizes,
            (double)(pe_monotonic_ms() - t0) / 1000.0);
    pe_runtime_close(&rt);
    return 0;
}
