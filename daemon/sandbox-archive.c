/* Archives of a sandbox's directories (daemon/sandbox-archive.h).
 *
 * Who touches the sandbox's files: never the daemon. A helper program,
 * pocketenv-archive (daemon/archive-helper.c), forked and exec'd so that
 * none of the daemon's memory (keys, store) is in it, does, after it has
 * become the sandbox's root:
 *  - running (or paused) sandbox: the helper enters the user and mount
 *    namespaces of its init (setns on a pidfd, the init checked by start
 *    time here) and takes uid/gid 0 there. Its root directory is then the
 *    sandbox's, so every path, symlink and ".." resolves inside the
 *    sandbox whatever the sandbox plants or swaps meanwhile; its powers
 *    are the sandbox root's (no host file capabilities, /proc/sys and the
 *    like refuse it, mknod is refused), and its ids map into the
 *    sandbox's range like the sandbox's own processes;
 *  - stopped sandbox: the helper unshares a user namespace that we map
 *    onto the sandbox's id range (as the runtime maps the sandbox's own),
 *    and chroots into the writable layer's upper/ (pe_sandbox_layer_dir).
 *    Same powers, same ids. We hold the sandbox's runtime lock meanwhile,
 *    so a start waits until the layer is done with.
 * Its fds are renumbered to 3..7 and everything else is closed before the
 * exec; it is killed after CHILD_TIMEOUT_MS.
 *
 * Unpacking reads the archive twice: first the helper as nobody checks
 * the headers, refusing a hostile archive before anything is written
 * (absolute paths, "..", writes through the archive's own symlinks,
 * device nodes, sizes); then the helper inside the sandbox unpacks with
 * libarchive's secure extraction flags as a second line. Setuid/setgid
 * bits are cleared on the way in and out.
 *
 * Threading: every function blocks; called from worker threads. fork in a
 * threaded process is followed at once by dup2/close_range/execv, which
 * are async-signal-safe. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cp-path.h"
#include "core/fs.h"
#include "core/install.h"
#include "core/log.h"
#include "core/utf8.h"
#include "core/util.h"
#include "sandbox-env.h"
#include "runtime/internal.h"
#include "sandbox-archive.h"

#define CHILD_TIMEOUT_MS (15 * 60 * 1000)
#define MSG_MAX 512

/* Fds of the child, renumbered before everything else is closed. */
enum { FD_DATA = 3, FD_MSG, FD_SYNC_IN, FD_SYNC_OUT, FD_TARGET, FD_FIRST_FREE };

struct box {
    bool running;
    int target; /* running: pidfd of the init; stopped: O_PATH of disk/upper */
    int lock;   /* stopped: the sandbox's runtime lock, held throughout */
    uid_t base; /* the sandbox's root on the host */
};

static void box_close(struct box *b)
{
    if (b->target >= 0)
        close(b->target);
    if (b->lock >= 0)
        close(b->lock);
    b->target = b->lock = -1;
}

static int read_state(pe_daemon *d, const char *id, struct box *b, pid_t *pid_out,
                      uint64_t *start_out, pe_err *err)
{
    char *text = NULL;
    json_t *info;
    const char *status;
    uint64_t start;
    pid_t pid;

    if (pe_sandbox_inspect(&d->sx, id, &text, err) < 0)
        return pe_err_set(err, PE_ESTATE, 0, "the sandbox has no files (never made, or gone)");
    info = json_loads(text, 0, NULL);
    free(text);
    status = json_string_value(json_object_get(info, "status"));
    pid = (pid_t)json_integer_value(json_object_get(info, "pid"));
    start = (uint64_t)json_integer_value(json_object_get(info, "startTime"));
    b->base = (uid_t)json_integer_value(json_object_get(info, "idBase"));
    b->running =
        status && (strcmp(status, "running") == 0 || strcmp(status, "paused") == 0) && pid > 0;
    json_decref(info);
    *pid_out = pid;
    *start_out = start;
    if (b->base == 0)
        return pe_err_set(err, PE_ESTATE, 0, "the sandbox has no user namespace of its own");
    return 0;
}

static int box_open(pe_daemon *d, const char *id, struct box *b, pe_err *err)
{
    uint64_t start = 0;
    pid_t pid = 0;

    b->target = b->lock = -1;
    if (read_state(d, id, b, &pid, &start, err) < 0)
        return -1;
    if (!b->running) {
        /* The runtime's own lock: a start waits until the writable layer
         * is done with. Read the state again under it. */
        cleanup_free char *lock = pe_xasprintf("%s/sandboxes/%s", d->rt.data_dir, id);
        b->lock = pe__lock_file(lock, LOCK_EX, err);
        if (b->lock < 0 || read_state(d, id, b, &pid, &start, err) < 0) {
            box_close(b);
            return -1;
        }
        if (b->running) {
            box_close(b);
            return pe_err_set(err, PE_ESTATE, 0, "the sandbox started meanwhile: try again");
        }
    }
    if (b->running) {
        b->target = (int)syscall(SYS_pidfd_open, pid, 0);
        /* Checked after the open: the pidfd is that very init's. */
        if (b->target < 0 || start == 0 || pe__proc_start_time(pid) != start) {
            box_close(b);
            return pe_err_set(err, PE_ESTATE, 0, "the sandbox stopped meanwhile");
        }
        return 0;
    }
    {
        cleanup_free char *layer = NULL;
        cleanup_free char *upper = NULL;
        if (pe_sandbox_layer_dir(&d->sx, id, &layer, err) == 0)
            upper = pe_xasprintf("%s/upper", layer);
        b->target = upper ? open(upper, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    }
    if (b->target < 0)
        return pe_err_set(err, PE_ESTATE, errno, "the sandbox has no writable layer");
    return 0;
}

static int write_maps(pid_t pid, uid_t base, pe_err *err)
{
    char path[64], line[64];

    snprintf(line, sizeof(line), "0 %u %u\n", (unsigned)base, PE_IDMAP_SIZE);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, i ? "gid_map" : "uid_map");
        if (pe_fs_write_str(path, line, err) < 0)
            return -1;
    }
    return 0;
}

/* The child's message until it exits (bounded by the deadline), and how
 * it ended. The message may quote a file name of the sandbox, which is
 * bytes, not text: it is made valid UTF-8 (invalid bytes become U+FFFD)
 * before it goes anywhere near a JSON answer. */
static int collect(pid_t pid, int msgfd, char *msg, pe_err *err)
{
    char text[MSG_MAX * 3 + 1];
    size_t got = 0, used, len;
    int status = 0;

    for (;;) {
        struct pollfd p = {msgfd, POLLIN, 0};
        int pr = poll(&p, 1, CHILD_TIMEOUT_MS);
        ssize_t n;

        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) { /* not reaped yet: the pid is still this child's */
            kill(pid, SIGKILL);
            got = (size_t)snprintf(msg, MSG_MAX, "took longer than %d s", CHILD_TIMEOUT_MS / 1000);
            break;
        }
        n = read(msgfd, msg + got, MSG_MAX - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == MSG_MAX)
            break;
    }
    len = pe_utf8_sanitize((const unsigned char *)msg, got, true, text, &used);
    if (len > MSG_MAX) /* leave room in the error for context; cut between characters */
        for (len = MSG_MAX; ((unsigned char)text[len] & 0xc0) == 0x80; len--)
            ;
    text[len] = '\0';
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (strstr(text, "no such directory") || strstr(text, "no such file") ||
        strstr(text, "does not exist"))
        return pe_err_set(err, PE_ENOENT, 0, "%s", text);
    return pe_err_set(err, PE_EINVAL, 0, "%s", got ? text : "the archive process failed");
}

/* pocketenv-archive, found as core/install.h says (or where
 * POCKETENV_ARCHIVE_HELPER says); NULL with helper_err if nowhere. */
static char *helper_path;
static pe_err helper_err;
static pthread_once_t helper_once = PTHREAD_ONCE_INIT;

static void find_helper(void)
{
    const char *env = getenv("POCKETENV_ARCHIVE_HELPER");

    helper_path =
        env && *env ? pe_xstrdup(env) : pe_install_helper("pocketenv-archive", &helper_err);
}

static _Noreturn void child_exec(int data, int msgp, int sync_in, int sync_out, int target,
                                 const char **argv, const char **envp)
{
    const int src[] = {data, msgp, sync_in, sync_out, target >= 0 ? target : data};
    int high[PE_ARRAY_LEN(src)];

    /* Out of the way first: a source may sit on a target number. */
    for (size_t i = 0; i < PE_ARRAY_LEN(src); i++)
        if ((high[i] = fcntl(src[i], F_DUPFD, 64)) < 0)
            _exit(3);
    for (size_t i = 0; i < PE_ARRAY_LEN(src); i++)
        if (dup2(high[i], FD_DATA + (int)i) < 0)
            _exit(3);
    syscall(SYS_close_range, FD_FIRST_FREE, ~0U, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The daemon blocks its signals for signalfd; the helper must not. */
    {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
    }
    execve(helper_path, (char *const *)argv, (char *const *)envp);
    if (write(FD_MSG, "cannot run pocketenv-archive", 28) < 0)
        _exit(4);
    _exit(4);
}

/* Run the helper with argv: inside sandbox id (pack, unpack; argv[2] is
 * set here to how it enters) or, id NULL, as nobody (check); data is the
 * archive's fd. */
static int run_child(pe_daemon *d, const char *id, int data, const char **argv, pe_err *err)
{
    struct box b = {.target = -1, .lock = -1};
    int msgp[2] = {-1, -1}, to_child[2] = {-1, -1}, from_child[2] = {-1, -1};
    char msg[MSG_MAX + 1];
    int r = -1;
    pid_t pid;
    char c;

    /* The helper gets none of the daemon's environment (it may hold a
     * store password), only what sanitizer builds read. Built before the
     * fork: the child must not allocate. */
    cleanup_free char *asan = NULL, *ubsan = NULL;
    const char *envp[3] = {NULL, NULL, NULL};
    size_t ne = 0;

    if (getenv("ASAN_OPTIONS"))
        envp[ne++] = asan = pe_xasprintf("ASAN_OPTIONS=%s", getenv("ASAN_OPTIONS"));
    if (getenv("UBSAN_OPTIONS"))
        envp[ne++] = ubsan = pe_xasprintf("UBSAN_OPTIONS=%s", getenv("UBSAN_OPTIONS"));
    pthread_once(&helper_once, find_helper);
    if (helper_path == NULL) /* the installation's fault, never the request's: 500 */
        return pe_err_set(err, PE_ESYS, 0, "%s", helper_err.msg);
    if (id && box_open(d, id, &b, err) < 0)
        return -1;
    if (id)
        argv[2] = b.running ? "running" : "stopped";
    if (pipe2(msgp, O_CLOEXEC) < 0 || pipe2(to_child, O_CLOEXEC) < 0 ||
        pipe2(from_child, O_CLOEXEC) < 0) {
        pe_err_sys(err, "pipe");
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        pe_err_sys(err, "fork");
        goto out;
    }
    if (pid == 0)
        child_exec(data, msgp[1], to_child[0], from_child[1], b.target, argv, envp);
    close(msgp[1]);
    close(to_child[0]);
    close(from_child[1]);
    msgp[1] = to_child[0] = from_child[1] = -1;
    if (id && !b.running) {
        /* The helper has its user namespace: map it onto the sandbox's ids. */
        pe_err e2;
        pe_err_clear(&e2);
        c = read(from_child[0], &c, 1) == 1 && write_maps(pid, b.base, &e2) == 0;
        if (write(to_child[1], &c, 1) != 1)
            pe_log_warn("archive helper %d: lost its handshake", (int)pid);
    }
    r = collect(pid, msgp[0], msg, err);
out:
    for (int i = 0; i < 2; i++) {
        if (msgp[i] >= 0)
            close(msgp[i]);
        if (to_child[i] >= 0)
            close(to_child[i]);
        if (from_child[i] >= 0)
            close(from_child[i]);
    }
    box_close(&b);
    return r;
}

int pe_daemon_archive_dir(pe_daemon *d, const char *id, const char *dir, int fmt, int out_fd,
                          int64_t max_out, pe_err *err)
{
    char max[32];
    const char *argv[] = {
        "pocketenv-archive", "pack", "?", dir, fmt == PE_ARCHIVE_ZSTD ? "zstd" : "gzip", max, NULL};

    if (strcmp(dir, "/") != 0 && pe_daemon_check_sandbox_path("directory", dir, err) < 0)
        return -1;
    snprintf(max, sizeof(max), "%lld", (long long)max_out);
    return run_child(d, id, out_fd, argv, err);
}

static int check(pe_daemon *d, int in_fd, const pe_archive_limits *lim, bool one_top, pe_err *err);

int pe_daemon_archive_path(pe_daemon *d, const char *id, const char *path, bool follow,
                           bool must_dir, int out_fd, int64_t max_out, pe_err *err)
{
    char max[32];
    const char *flags = follow && must_dir ? "follow,dir" : follow ? "follow" : "-";
    const char *argv[] = {"pocketenv-archive", "packtop", "?", path, "gzip", max, flags, NULL};

    if (strcmp(path, "/") != 0 && pe_daemon_check_sandbox_path("path", path, err) < 0)
        return -1;
    snprintf(max, sizeof(max), "%lld", (long long)max_out);
    return run_child(d, id, out_fd, argv, err);
}

int pe_daemon_archive_unpack_to(pe_daemon *d, const char *id, const char *dest, bool contents,
                                int in_fd, const pe_archive_limits *lim, pe_err *err)
{
    const char *argv[] = {
        "pocketenv-archive", "unpackto", "?", dest, contents ? "contents" : "whole", NULL};
    bool slash;
    cleanup_free char *trimmed = pe_cp_trim(dest, &slash);
    if (strcmp(trimmed, "/") != 0 &&
        pe_daemon_check_sandbox_path("directoryPath", trimmed, err) < 0)
        return -1;
    if (check(d, in_fd, lim, true, err) < 0)
        return -1;
    if (lseek(in_fd, 0, SEEK_SET) < 0)
        return pe_err_sys(err, "rewind the archive");
    return run_child(d, id, in_fd, argv, err);
}

int pe_daemon_archive_unpack(pe_daemon *d, const char *id, const char *dir, int in_fd,
                             const pe_archive_limits *lim, bool keep_owner, pe_err *err)
{
    const char *argv[] = {
        "pocketenv-archive", "unpack", "?", dir, keep_owner ? "owners" : "root", NULL};

    if (strcmp(dir, "/") != 0 && pe_daemon_check_sandbox_path("directory", dir, err) < 0)
        return -1;
    if (pe_daemon_archive_check(d, in_fd, lim, err) < 0)
        return -1;
    if (lseek(in_fd, 0, SEEK_SET) < 0)
        return pe_err_sys(err, "rewind the archive");
    return run_child(d, id, in_fd, argv, err);
}

int pe_daemon_archive_check(pe_daemon *d, int in_fd, const pe_archive_limits *lim, pe_err *err)
{
    return check(d, in_fd, lim, false, err);
}

/* The check as pe_daemon_archive_check's; one_top: also a docker cp copy
 * (every entry under the first). */
static int check(pe_daemon *d, int in_fd, const pe_archive_limits *lim, bool one_top, pe_err *err)
{
    char bytes[32], entries[32];
    const char *argv[] = {"pocketenv-archive",       "check", bytes, entries,
                          one_top ? "onetop" : NULL, NULL};

    snprintf(bytes, sizeof(bytes), "%lld", (long long)lim->max_bytes);
    snprintf(entries, sizeof(entries), "%lld", (long long)lim->max_entries);
    if (lseek(in_fd, 0, SEEK_SET) < 0)
        return pe_err_sys(err, "rewind the archive");
    return run_child(d, NULL, in_fd, argv, err);
}
