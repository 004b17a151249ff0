/* envd's filesystem.Filesystem/WatchDir (a Connect server stream) for
 * each sandbox, from the daemon: an inotify watch on the directory as the
 * sandbox sees it. Out: {"start":{}}, then {"filesystem":{"name",
 * "type"}} per change (type: 1 create, 2 write,
 * 3 remove, 4 rename, 5 chmod, as envd's EventType), keepalives at
 * Keepalive-Ping-Interval, and the end-of-stream envelope once the
 * directory itself goes (or the daemon stops).
 *
 * The directory is opened inside the sandbox's root (openat2 with
 * RESOLVE_IN_ROOT: a symlink of the sandbox's cannot point the watch at
 * the host) and the watch is added through that fd, on a worker. A
 * recursive watch also watches every directory under it (at most DIRS_MAX),
 * each opened beneath the first with openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS (a symlink is never followed out), and names its
 * events by their path under the watched directory ("sub/f.txt"); a
 * directory made later is added when its creation is read (on the loop:
 * one openat2 and one inotify_add_watch). A directory moved within the
 * tree keeps the name it had when it was added.
 *
 * Loop thread otherwise. Backpressure: past HIGH_WATER unsent, the
 * inotify fd is not read (the kernel's queue overflows and drops, which
 * costs events, not memory). At most WATCHES_MAX watches daemon-wide. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "e2b.h"
#include "sandbox-env.h"

#define WATCHES_MAX 256
#define REQUEST_MAX (64 * 1024)
#define HIGH_WATER (256 * 1024)
#define KEEPALIVE_MAX 3600
#define PATH_MAX_LEN 4096
#define DIRS_MAX 1024 /* directories of one recursive watch */
#define MASK                                                                                       \
    (IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |                 \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* A watched directory of a recursive watch: its path under the root. */
struct wdir {
    int wd;
    char *rel;
};

typedef struct ewatch {
    pe_daemon *d;
    char *sandbox_id, *path;
    int ifd;
    int root;    /* the watched directory (O_PATH), kept by a recursive watch */
    int root_wd; /* its inotify watch */
    bool recursive;
    struct wdir *dirs;
    size_t n_dirs;
    uint64_t keepalive_ns;
    bool opening;
    pe_http_request *req; /* while opening */
    pe_http_stream *st;
    pe_ev_io *io;
    pe_ev_timer *keepalive;
    pe_err err;
    struct ewatch *next;
} ewatch;

static ewatch *watches;
static unsigned n_watches;

static void unlink_watch(ewatch *w)
{
    for (ewatch **p = &watches; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            return;
        }
}

static void watch_free(ewatch *w)
{
    unlink_watch(w);
    n_watches--;
    pe_ev_io_stop(w->io);
    pe_ev_timer_stop(w->keepalive);
    if (w->ifd >= 0)
        close(w->ifd);
    if (w->root >= 0)
        close(w->root);
    for (size_t i = 0; i < w->n_dirs; i++)
        free(w->dirs[i].rel);
    free(w->dirs);
    pe_daemon_release(w->d, w->sandbox_id);
    free(w->sandbox_id);
    free(w->path);
    free(w);
}

/* End the stream ({} or a Connect error) and the watch. */
static void finish(ewatch *w, const char *code, const char *message)
{
    if (w->st) {
        pe__e2b_envelope_send(
            w->st, 0x02,
            code ? json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message)
                 : json_object());
        pe_http_stream_close(w->st);
        w->st = NULL;
    }
    watch_free(w);
}

static int type_of(uint32_t mask)
{
    if (mask & IN_CREATE)
        return 1;
    if (mask & IN_MODIFY)
        return 2;
    if (mask & IN_DELETE)
        return 3;
    if (mask & IN_MOVED_FROM)
        return 4;
    if (mask & IN_MOVED_TO)
        return 1; /* envd reports a rename's new name as created */
    if (mask & IN_ATTRIB)
        return 5;
    return 0;
}

static void arm(ewatch *w)
{
    bool room = w->st && pe_http_stream_pending(w->st) < HIGH_WATER;

    pe_ev_io_modify(w->io, room ? EPOLLIN : 0, NULL);
}

/* ---- the directories of a recursive watch ---- */

static const char *rel_of(const ewatch *w, int wd)
{
    for (size_t i = 0; i < w->n_dirs; i++)
        if (w->dirs[i].wd == wd)
            return w->dirs[i].rel;
    return NULL;
}

static void forget_dir(ewatch *w, int wd)
{
    for (size_t i = 0; i < w->n_dirs; i++)
        if (w->dirs[i].wd == wd) {
            free(w->dirs[i].rel);
            w->dirs[i] = w->dirs[--w->n_dirs];
            return;
        }
}

/* Watch directory rel (under the root, no symlink followed) and, with
 * walk, every directory under it, up to DIRS_MAX in all. Best effort: a
 * directory that went or cannot be opened is left out. */
static void add_dir(ewatch *w, const char *rel, bool walk)
{
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
                                      RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
    char self[64];
    int fd, wd;
    DIR *dir;
    struct dirent *e;

    if (w->n_dirs >= DIRS_MAX)
        return;
    fd = (int)syscall(SYS_openat2, w->root, rel, &how, sizeof(how));
    if (fd < 0)
        return;
    snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
    wd = inotify_add_watch(w->ifd, self, MASK);
    if (wd < 0 || rel_of(w, wd)) { /* gone, or the same directory again */
        close(fd);
        return;
    }
    w->dirs = pe_xrealloc(w->dirs, (w->n_dirs + 1) * sizeof(*w->dirs));
    w->dirs[w->n_dirs++] = (struct wdir){.wd = wd, .rel = pe_xstrdup(rel)};
    if (!walk || (dir = fdopendir(fd)) == NULL) {
        close(fd);
        return;
    }
    while ((e = readdir(dir)) != NULL && w->n_dirs < DIRS_MAX) {
        if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *sub = pe_xasprintf("%s/%s", rel, e->d_name);
        add_dir(w, sub, true);
        free(sub);
    }
    closedir(dir);
}

static void on_events(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    ewatch *w = ud;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    bool gone = false;

    (void)io, (void)events;
    n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            finish(w, "internal", "the watch failed");
        return;
    }
    for (char *p = buf; p < buf + n;) {
        const struct inotify_event *ev = (const struct inotify_event *)p;
        int type = type_of(ev->mask);
        const char *rel = w->recursive ? rel_of(w, ev->wd) : ".";
        p += sizeof(*ev) + ev->len;
        if (rel == NULL) /* a directory no longer watched */
            continue;
        /* "./x" under the root: its name is x */
        char *name =
            strcmp(rel, ".") == 0 ? pe_xstrdup(ev->name) : pe_xasprintf("%s/%s", rel + 2, ev->name);
        /* A new directory is watched before the client hears of it: what
         * it then makes there is seen. */
        if (w->recursive && ev->len && (ev->mask & IN_ISDIR) &&
            (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
            char *sub = pe_xasprintf("%s/%s", rel, ev->name);
            add_dir(w, sub, true);
            free(sub);
        }
        if (ev->len && type)
            pe__e2b_envelope_send(
                w->st, 0, json_pack("{s:{s:s,s:i}}", "filesystem", "name", name, "type", type));
        free(name);
        if (ev->wd != w->root_wd) {
            if (ev->mask & IN_IGNORED)
                forget_dir(w, ev->wd);
            continue;
        }
        gone = gone || (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT));
    }
    if (gone) {
        finish(w, NULL, NULL); /* the directory went: the watch is over */
        return;
    }
    arm(w);
}

static void on_drain(pe_http_stream *st, void *ud)
{
    (void)st;
    arm(ud);
}

static void on_close(pe_http_stream *st, void *ud)
{
    ewatch *w = ud;

    (void)st;
    w->st = NULL;
    watch_free(w);
}

static void on_keepalive(pe_ev_timer *t, void *ud)
{
    ewatch *w = ud;

    (void)t;
    pe__e2b_envelope_send(w->st, 0, json_pack("{s:{}}", "keepalive"));
}

/* ---- opening (worker) ---- */

static void open_work(void *ud)
{
    ewatch *w = ud;
    char self[64];
    pe_store_sandbox sb;
    int dir, remote = pe__e2b_remote_row(w->d, w->sandbox_id, &sb, &w->err);

    /* inotify sees this host's files only; the provider interface has no
     * watch (docs/e2b.md) */
    if (remote != 0) {
        if (remote > 0)
            pe_err_set(&w->err, PE_ENOTCAP, 0, "not supported by %s: watching a directory",
                       sb.backend);
        pe_store_sandbox_clear(&sb);
        return;
    }
    if ((dir = pe_daemon_open_sandbox_dir(w->d, w->sandbox_id, w->path, &w->err)) < 0)
        return;
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd < 0) {
        pe_err_sys(&w->err, "inotify_init1");
        close(dir);
        return;
    }
    /* Through the fd: the directory openat2 found inside the sandbox. */
    snprintf(self, sizeof(self), "/proc/self/fd/%d", dir);
    if ((w->root_wd = inotify_add_watch(w->ifd, self, MASK)) < 0) {
        pe_err_set(&w->err, errno == ENOTDIR ? PE_EINVAL : PE_ESYS, errno, "watch %s", w->path);
        close(w->ifd);
        w->ifd = -1;
        close(dir);
        return;
    }
    if (!w->recursive) {
        close(dir);
        return;
    }
    /* The root again as ".": the directories under it, each found beneath it. */
    w->root = dir;
    add_dir(w, ".", true);
}

static void open_done(void *ud)
{
    static const pe_http_stream_callbacks cb = {.on_drain = on_drain, .on_close = on_close};
    ewatch *w = ud;
    pe_daemon *d = w->d;
    pe_http_request *req = w->req;
    pe_err err;

    w->opening = false;
    w->req = NULL;
    if (w->ifd < 0) {
        char msg[PE_ERR_MSG_MAX + 64];
        if (w->err.code == PE_ENOENT)
            snprintf(msg, sizeof(msg), "path '%s' does not exist", w->path);
        else if (w->err.code == PE_EINVAL)
            snprintf(msg, sizeof(msg), "path '%s' is not a directory", w->path);
        else if (w->err.code == PE_ENOTCAP)
            snprintf(msg, sizeof(msg), "%s", w->err.msg);
        else
            snprintf(msg, sizeof(msg), "cannot watch '%s'", w->path);
        if (w->err.code == PE_ESYS)
            pe_log_warn("e2b watch %s: %s", w->sandbox_id, w->err.msg);
        pe__e2b_refuse_stream(req, pe__e2b_connect_code(w->err.code), msg);
        watch_free(w);
    } else {
        pe_err_clear(&err);
        w->st = pe_http_respond_stream(req, 200, "application/connect+json", NULL, &cb, w);
        w->io = pe_ev_io_start(d->loop, w->ifd, EPOLLIN, on_events, w, &err);
        if (w->keepalive_ns)
            w->keepalive =
                pe_ev_timer_start(d->loop, w->keepalive_ns, w->keepalive_ns, on_keepalive, w, &err);
        pe__e2b_envelope_send(w->st, 0, json_pack("{s:{}}", "start"));
        if (w->io == NULL)
            finish(w, "internal", "cannot watch");
    }
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
}

void pe__e2b_watch(pe_daemon *d, pe_http_request *req, const char *sandbox_id)
{
    json_t *in = pe__e2b_stream_request(req, REQUEST_MAX);
    const char *path = json_string_value(json_object_get(in, "path"));
    const char *ka = pe_http_header(req, "Keepalive-Ping-Interval");
    ewatch *w;
    pe_err err;

    if (in == NULL)
        return;
    if (path == NULL || path[0] == '\0' || strlen(path) > PATH_MAX_LEN) {
        json_decref(in);
        pe__e2b_refuse_stream(req, "invalid_argument", "path: a directory");
        return;
    }
    if (n_watches >= WATCHES_MAX) {
        json_decref(in);
        pe__e2b_refuse_stream(req, "resource_exhausted", "too many watches on this daemon");
        return;
    }
    w = pe_xcalloc(1, sizeof(*w));
    w->d = d;
    w->ifd = -1;
    w->root = -1;
    w->recursive = json_is_true(json_object_get(in, "recursive"));
    w->sandbox_id = pe_xstrdup(sandbox_id);
    w->path = path[0] == '/' ? pe_xstrdup(path) : pe_xasprintf("/root/%s", path);
    json_decref(in);
    if (ka) {
        char *end;
        long s = strtol(ka, &end, 10);
        if (*end == '\0' && s > 0 && s <= KEEPALIVE_MAX)
            w->keepalive_ns = (uint64_t)s * 1000000000ull;
    }
    w->req = req;
    w->opening = true;
    w->next = watches;
    watches = w;
    n_watches++;
    pe_daemon_hold(d, sandbox_id);
    pe_err_clear(&err);
    if (pe_ev_submit(d->loop, open_work, open_done, w, &err) < 0) {
        pe__e2b_refuse_stream(req, "unavailable", "the daemon is busy");
        watch_free(w);
        return;
    }
    d->inflight++;
    pe_http_defer(req);
}

void pe__e2b_watch_shutdown(pe_daemon *d)
{
    (void)d;
    while (watches)
        finish(watches, "unavailable", "the daemon is shutting down");
}
