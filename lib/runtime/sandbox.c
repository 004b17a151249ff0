/* Sandbox operations: one-shot run and the persistent lifecycle.
 *
 * Layout of the data directory:
 *   images/<name>/         base images (lib/image)
 *   sandboxes/<name>/      state.json, disk/{upper,work} (locked: an
 *                          flock on the directory itself)
 *   run/<key>/             one-shot runs in progress (locked by the
 *                          running command)
 * and, host-wide, /run/pocketenv/net/ for network leases (net.c),
 * /run/pocketenv/sandboxes/ for a running sandbox's run.json and spawn
 * socket (state.c) and /var/lib/pocketenv/idmap/<slot> for user id range
 * claims (idmap.c).
 *
 * Lifecycle of a persistent sandbox: created -> running <-> paused,
 * running/paused -> stopped -> running, any -> removed. Every change is on
 * disk before the call returns except a start's, which lasts only as long
 * as the boot (state.c): after a crash of the host a sandbox reads as its
 * last change before the start, never as running. A sandbox whose init
 * died on its own reads as "stopped"; the next state change cleans up its
 * cgroup.
 *
 * Crash safety: a one-shot run holds an flock on run/<key> for its whole
 * life and its processes die with it (PR_SET_PDEATHSIG on init, whose
 * death ends the pid namespace; mounts live only in that namespace). What
 * can remain after a SIGKILL (the run dir, an empty cgroup, the id range,
 * claimed as "run:<key>") is found by pe_runtime_gc through the unlocked
 * directory.
 *
 * No lock or note files: on ext4 without a journal every new inode is
 * checked against the recently deleted ones (about a minute back), so
 * each file a create makes and a delete frees slows every later create;
 * what gc needs is in the directory's name (the id, hence the layer) and
 * in the id range's claim (its owner). */
#include <dirent.h>
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/install.h"
#include "core/log.h"
#include "core/util.h"
#include "image/image.h"
#include "runtime/internal.h"
#include "runtime/sync.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int64_t unix_now(void)
{
    return (int64_t)time(NULL);
}

/* POCKETENV_INIT (the unit tests' build) or the installation's. */
static char *find_init(pe_err *err)
{
    const char *env = getenv("POCKETENV_INIT");

    if (env != NULL && *env)
        return pe_xstrdup(env);
    return pe_install_helper("pocketenv-init", err);
}

static char *default_data_dir(void)
{
    const char *env = getenv("POCKETENV_DATA");
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");

    if (env != NULL && *env)
        return pe_xstrdup(env);
    if (geteuid() == 0)
        return pe_xstrdup("/var/lib/pocketenv");
    if (xdg != NULL && *xdg)
        return pe_xasprintf("%s/pocketenv", xdg);
    return pe_xasprintf("%s/.local/share/pocketenv", home ? home : "/tmp");
}

int pe_runtime_open(pe_runtime *rt, const char *data_dir, pe_err *err)
{
    static const char *const subdirs[] = {"images", "sandboxes", "run", "idmap"};
    char real[PATH_MAX];

    memset(rt, 0, sizeof(*rt));
    rt->data_dir = data_dir ? pe_xstrdup(data_dir) : default_data_dir();
    if (pe_fs_mkdir_p(rt->data_dir, 0711, err) < 0)
        goto fail;
    if (realpath(rt->data_dir, real) == NULL) {
        pe_err_sys(err, "data directory %s", rt->data_dir);
        goto fail;
    }
    free(rt->data_dir);
    rt->data_dir = pe_xstrdup(real);
    for (size_t i = 0; i < PE_ARRAY_LEN(subdirs); i++) {
        cleanup_free char *p = pe_xasprintf("%s/%s", rt->data_dir, subdirs[i]);
        if (pe_fs_mkdir_p(p, 0711, err) < 0)
            goto fail;
    }
    rt->init_path = find_init(err);
    if (rt->init_path == NULL)
        goto fail;
    if (access(rt->init_path, R_OK) < 0) {
        pe_err_sys(err, "sandbox init %s", rt->init_path);
        goto fail;
    }
    pe_runtime_gc(rt, NULL);
    return 0;
fail:
    pe_err_prefix(err, "open runtime");
    pe_runtime_close(rt);
    return -1;
}

void pe_runtime_close(pe_runtime *rt)
{
    free(rt->data_dir);
    free(rt->init_path);
    memset(rt, 0, sizeof(*rt));
}

/* ---- validation and environment ---- */

static int validate_path(const char *what, const char *p, pe_err *err)
{
    if (p == NULL || p[0] != '/')
        return pe_err_set(err, PE_EINVAL, 0, "%s must be an absolute path: %s", what,
                          p ? p : "(none)");
    for (const char *s = p; (s = strstr(s, "..")) != NULL; s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '/' || s[2] == '\0'))
            return pe_err_set(err, PE_EINVAL, 0, "%s must not contain '..': %s", what, p);
    if (strlen(p) >= 4096)
        return pe_err_set(err, PE_EINVAL, 0, "%s is too long", what);
    return 0;
}

static int validate_net(const pe_sandbox_cfg *cfg, pe_err *err)
{
    if (cfg->net != PE_NET_NONE && cfg->net != PE_NET_NAT)
        return pe_err_set(err, PE_EINVAL, 0, "unknown network mode %d", cfg->net);
    if (cfg->net != PE_NET_NAT && (cfg->n_ports > 0 || cfg->net_allow_host))
        return pe_err_set(err, PE_EINVAL, 0, "--publish and --net-allow-host need --net nat");
    if (cfg->n_ports > PE_NET_MAX_PORTS)
        return pe_err_set(err, PE_EINVAL, 0, "at most %d published ports", PE_NET_MAX_PORTS);
    for (size_t i = 0; i < cfg->n_ports; i++)
        if (cfg->ports[i].port == 0)
            return pe_err_set(err, PE_EINVAL, 0, "published port %zu: port 0", i);
    /* resolv.conf and hosts take two mount slots. */
    if (cfg->net == PE_NET_NAT && cfg->n_binds > PE_MAX_BINDS - 2)
        return pe_err_set(err, PE_EINVAL, 0, "at most %d volumes with --net nat", PE_MAX_BINDS - 2);
    return 0;
}

static int validate_nofile(const pe_sandbox_cfg *cfg, pe_err *err);

static int validate_cfg(const pe_sandbox_cfg *cfg, pe_err *err)
{
    if (cfg->n_binds > PE_MAX_BINDS)
        return pe_err_set(err, PE_EINVAL, 0, "at most %d volumes", PE_MAX_BINDS);
    for (size_t i = 0; i < cfg->n_binds; i++) {
        struct stat st;
        if (validate_path("volume destination", cfg->binds[i].dest, err) < 0)
            return -1;
        if (strcmp(cfg->binds[i].dest, "/") == 0)
            return pe_err_set(err, PE_EINVAL, 0, "a volume cannot replace /");
        if (cfg->binds[i].host == NULL || stat(cfg->binds[i].host, &st) < 0)
            return pe_err_set(err, PE_EINVAL, errno, "volume source %s",
                              cfg->binds[i].host ? cfg->binds[i].host : "(none)");
    }
    if (cfg->workdir && validate_path("working directory", cfg->workdir, err) < 0)
        return -1;
    if (cfg->hostname && (strlen(cfg->hostname) == 0 || strlen(cfg->hostname) > 63))
        return pe_err_set(err, PE_EINVAL, 0, "hostname must be 1 to 63 characters");
    for (char **e = cfg->env; e && *e; e++)
        if (strchr(*e, '=') == NULL || **e == '=')
            return pe_err_set(err, PE_EINVAL, 0, "environment entry must be KEY=VALUE: %s", *e);
    if (cfg->memory_bytes < 0 || cfg->cpu_millis < 0 || cfg->pids_max < 0 || cfg->disk_bytes < 0 ||
        cfg->nofile_soft < 0 || cfg->nofile_hard < 0)
        return pe_err_set(err, PE_EINVAL, 0, "limits must not be negative");
    if (cfg->memory_bytes > 0 && cfg->memory_bytes < 4 * 1024 * 1024)
        return pe_err_set(err, PE_EINVAL, 0, "memory limit must be at least 4m");
    if (cfg->disk_bytes > 0 && cfg->disk_bytes < PE_MIN_DISK)
        return pe_err_set(err, PE_EINVAL, 0, "disk limit must be at least %dm", PE_MIN_DISK >> 20);
    if (validate_nofile(cfg, err) < 0)
        return -1;
    return validate_net(cfg, err);
}

/* The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open). */
static int64_t nr_open(void)
{
    char *text = NULL;
    int64_t v = 1048576;

    if (pe_fs_read_file("/proc/sys/fs/nr_open", 64, &text, NULL, NULL) == 0) {
        long long n = strtoll(text, NULL, 10);
        if (n > 0)
            v = n;
        free(text);
    }
    return v;
}

static int validate_nofile(const pe_sandbox_cfg *cfg, pe_err *err)
{
    int64_t max = nr_open();

    if (cfg->nofile_soft > 0 && cfg->nofile_hard > 0 && cfg->nofile_soft > cfg->nofile_hard)
        return pe_err_set(err, PE_EINVAL, 0,
                          "open-files soft limit %lld is above the hard limit %lld",
                          (long long)cfg->nofile_soft, (long long)cfg->nofile_hard);
    if (cfg->nofile_soft > max || cfg->nofile_hard > max)
        return pe_err_set(err, PE_EINVAL, 0, "open-files limit above the kernel's maximum %lld",
                          (long long)max);
    if ((cfg->nofile_soft > 0 && cfg->nofile_soft < PE_MIN_NOFILE) ||
        (cfg->nofile_hard > 0 && cfg->nofile_hard < PE_MIN_NOFILE))
        return pe_err_set(err, PE_EINVAL, 0, "open-files limit must be at least %d", PE_MIN_NOFILE);
    return 0;
}

/* Environment of a process: defaults, the sandbox's, then the process's;
 * a later KEY= replaces an earlier one. LANG is a default because without
 * it every program is in the C locale and treats bytes above 127 as
 * unprintable (`ls` shows "caf??", a shell's line editor breaks UTF-8);
 * C.UTF-8 is the one locale every image has: Debian's libc-bin ships it,
 * busybox and musl need no locale files for it. */
static char **build_env(const pe_sandbox_cfg *cfg, char **extra, bool tty, uint32_t uid)
{
    size_t n = 5, k = 0;
    char **out;

    for (char **e = cfg->env; e && *e; e++)
        n++;
    for (char **e = extra; e && *e; e++)
        n++;
    out = pe_xcalloc(n + 1, sizeof(char *));
    out[k++] = pe_xstrdup("PATH=" DEFAULT_PATH);
    out[k++] = pe_xstrdup(uid == 0 ? "HOME=/root" : "HOME=/");
    out[k++] = pe_xasprintf("HOSTNAME=%s", cfg->hostname ? cfg->hostname : "sandbox");
    out[k++] = pe_xstrdup("LANG=C.UTF-8");
    if (tty)
        out[k++] = pe_xstrdup("TERM=xterm-256color");
    for (int pass = 0; pass < 2; pass++) {
        for (char **e = pass ? extra : cfg->env; e && *e; e++) {
            size_t klen = (size_t)(strchr(*e, '=') - *e) + 1;
            size_t j;
            for (j = 0; j < k; j++)
                if (strncmp(out[j], *e, klen) == 0)
                    break;
            if (j < k)
                free(out[j]);
            out[j] = pe_xstrdup(*e);
            if (j == k)
                k++;
        }
    }
    return out;
}

static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

/* a then b in a new vector (NULL if both are empty): an image's
 * environment under the sandbox's own, which wins (build_env). */
static char **concat_env(char **a, char **b)
{
    size_t n = 0, k = 0;
    char **v;

    for (char **e = a; e && *e; e++)
        n++;
    for (char **e = b; e && *e; e++)
        n++;
    if (n == 0)
        return NULL;
    v = pe_xcalloc(n + 1, sizeof(char *));
    for (char **e = a; e && *e; e++)
        v[k++] = pe_xstrdup(*e);
    for (char **e = b; e && *e; e++)
        v[k++] = pe_xstrdup(*e);
    return v;
}

static char **layers_of_stack(const pe_image_stack *stack)
{
    char **v = pe_xcalloc(stack->n + 1, sizeof(char *));

    for (size_t i = 0; i < stack->n; i++)
        v[i] = pe_xstrdup(stack->dirs[i]);
    return v;
}

/* cfg's cgroup limits, defaults applied (cfg may be a state from before
 * the defaults existed). */
static void limits_of(const pe_sandbox_cfg *cfg, pe_cgroup_limits *l)
{
    l->memory_bytes = cfg->memory_bytes;
    l->cpu_millis = cfg->cpu_millis;
    l->pids_max = cfg->pids_max > 0 ? cfg->pids_max : PE_DEFAULT_PIDS;
}

/* argv for pocketenv-init; the sync socket is always fd 3 there, and a
 * persistent sandbox's spawn socket fd 4. */
static char **init_argv(bool persist, bool tty, long uid, long gid, char *const *cmd)
{
    size_t n = 0, k = 0;
    char **v;

    for (char *const *c = cmd; c && *c; c++)
        n++;
    v = pe_xcalloc(n + 12, sizeof(char *));
    v[k++] = pe_xstrdup("pocketenv-init");
    v[k++] = pe_xstrdup("--sync");
    v[k++] = pe_xstrdup("3");
    if (uid >= 0) {
        v[k++] = pe_xstrdup("--uid");
        v[k++] = pe_xasprintf("%ld", uid);
    }
    if (gid >= 0) {
        v[k++] = pe_xstrdup("--gid");
        v[k++] = pe_xasprintf("%ld", gid);
    }
    if (tty)
        v[k++] = pe_xstrdup("--tty");
    if (persist) {
        v[k++] = pe_xstrdup("--persist");
        v[k++] = pe_xstrdup("--spawn");
        v[k++] = pe_xstrdup("4");
    }
    v[k++] = pe_xstrdup("--");
    for (char *const *c = cmd; c && *c; c++)
        v[k++] = pe_xstrdup(*c);
    return v;
}

/* ---- networking ---- */

/* --net nat: lease an address (and host ports) for sandbox `key`, and
 * write resolv.conf and hosts, bound read-only over the image's: into dir
 * for a one-shot run (whose directory goes with it), into the run
 * directory for a persistent sandbox (state.c: they last as long as its
 * start does). *out is cfg with those two binds appended; free it with
 * net_cfg_free. */
static int net_prepare(pe_runtime *rt, const pe_sandbox_cfg *cfg, const char *dir, const char *key,
                       bool persist, pe_net_lease *l, pe_sandbox_cfg *out, pe_err *err)
{
    static const char *const files[] = {"resolv.conf", "hosts"};
    char *paths[2] = {NULL, NULL};
    size_t n = cfg->n_binds;

    *out = *cfg;
    memset(l, 0, sizeof(*l));
    if (cfg->net != PE_NET_NAT)
        return 0;
    for (size_t i = 0; i < 2; i++) {
        paths[i] = persist ? pe__run_file(dir, files[i]) : NULL;
        if (paths[i] == NULL)
            paths[i] = pe_xasprintf("%s/%s", dir, files[i]);
    }
    if (pe__net_acquire(cfg, rt->data_dir, key, l, err) < 0)
        goto fail;
    if (pe__net_write_etc(paths[0], paths[1], cfg->hostname ? cfg->hostname : "sandbox", l, err) <
        0) {
        pe__net_release(l);
        goto fail;
    }
    out->binds = pe_xcalloc(n + 2, sizeof(pe_bind));
    if (n > 0)
        memcpy(out->binds, cfg->binds, n * sizeof(pe_bind));
    for (size_t i = 0; i < 2; i++) {
        out->binds[n + i].host = paths[i];
        out->binds[n + i].dest = pe_xasprintf("/etc/%s", files[i]);
        out->binds[n + i].ro = true;
    }
    out->n_binds = n + 2;
    return 0;
fail:
    free(paths[0]);
    free(paths[1]);
    return -1;
}

static void net_cfg_free(const pe_sandbox_cfg *cfg, pe_sandbox_cfg *out)
{
    if (out->binds == cfg->binds)
        return;
    for (size_t i = cfg->n_binds; i < out->n_binds; i++) {
        free(out->binds[i].host);
        free(out->binds[i].dest);
    }
    free(out->binds);
    out->binds = cfg->binds;
}

/* ---- one-shot ---- */

/* Create run/<key> already locked: it is made as .new-<key>, locked, then
 * renamed, so gc (which only looks at run-*) never sees it unlocked. */
static int claim_run_dir(const char *data_dir, const char *key, const char *dir, pe_err *err)
{
    cleanup_free char *tmp = pe_xasprintf("%s/run/.new-%s", data_dir, key + 4);
    int lock;

    if (mkdir(tmp, 0700) < 0)
        return pe_err_sys(err, "create %s", tmp);
    lock = pe__lock_file(tmp, LOCK_EX, err);
    if (lock < 0) {
        rmdir(tmp);
        return -1;
    }
    if (rename(tmp, dir) < 0) {
        pe_err_sys(err, "create %s", dir);
        close(lock);
        rmdir(tmp);
        return -1;
    }
    return lock;
}

/* layer_dir: NULL for a tmpfs writable layer dropped at the end; else a
 * directory with upper/ and work/ that keeps the run's changes. */
static int run_oneshot(pe_runtime *rt, const pe_sandbox_cfg *cfg_in, const pe_proc_opts *proc,
                       const char *layer_dir, pe_proc_result *res, pe_err *err)
{
    pe_sandbox_cfg cfg = *cfg_in, ncfg = *cfg_in;
    pe_net_lease lease = {0};
    char key[32] = "run-";
    cleanup_free char *dir = NULL;
    cleanup_fd int devnull = -1;
    pe_image_stack stack = {0};
    char **env = NULL;
    cleanup_fd int lock = -1;
    pe_cgroup *cg = NULL;
    pe_cgroup_limits lim;
    pe_spawn_req req;
    pe_spawn_res sp;
    char **envp = NULL, **argv = NULL;
    uint32_t base = 0;
    long uid = proc->has_user ? (long)proc->uid : -1;
    long gid = proc->has_user ? (long)proc->gid : -1;
    int relay[3] = {-1, -1, -1};
    bool own[3] = {false, false, false};
    int ret = -1, init_fd;

    if (proc->argv == NULL || proc->argv[0] == NULL || proc->argv[0][0] == '\0')
        return pe_err_set(err, PE_EINVAL, 0, "no command given");
    if (validate_cfg(&cfg, err) < 0)
        return -1;
    if (pe_image_resolve_stack(rt->data_dir, cfg.image ? cfg.image : PE_DEFAULT_IMAGE, &stack,
                               err) < 0)
        return -1;
    env = concat_env(stack.env, cfg.env);
    cfg.env = env;
    ncfg.env = env;
    init_fd = pe__init_memfd(rt->init_path, err);
    if (init_fd < 0) {
        pe_image_stack_clear(&stack);
        free_strv(env);
        return -1;
    }
    pe__random_hex(key + 4, 6);
    dir = pe_xasprintf("%s/run/%s", rt->data_dir, key);
    lock = claim_run_dir(rt->data_dir, key, dir, err);
    if (lock < 0) {
        pe_image_stack_clear(&stack);
        free_strv(env);
        return -1;
    }
    if (cfg.userns) {
        cleanup_free char *owner = pe_xasprintf("run:%s", key);
        if (pe__idmap_alloc(rt->data_dir, owner, &base, err) < 0)
            goto out;
    }
    pe__cfg_apply_defaults(&cfg);
    limits_of(&cfg, &lim);
    /* Every sandbox has a pids limit (a default one at least), so every
     * one-shot run has a cgroup of its own: a lean one, as a one-shot is
     * never paused and its CPU time never read. */
    if (pe_cgroup_create_lean(key, &lim, &cg, err) < 0)
        goto out;
    if (cfg.hostname == NULL)
        cfg.hostname = (char *)"sandbox";
    if (net_prepare(rt, &cfg, dir, key + 4, false, &lease, &ncfg, err) < 0)
        goto out;
    envp = build_env(&cfg, proc->env, proc->tty, proc->has_user ? proc->uid : 0);
    argv = init_argv(false, proc->tty, uid, gid, proc->argv);

    memset(&req, 0, sizeof(req));
    req.cfg = &ncfg;
    req.lowers = (const char *const *)stack.dirs;
    req.n_lowers = stack.n;
    req.disk_dir = layer_dir;
    req.disk_idmap = layer_dir != NULL;
    req.net = lease.addr ? &lease : NULL;
    req.id_base = base;
    req.cg = cg;
    req.argv = argv;
    req.envp = envp;
    req.workdir = proc->workdir ? proc->workdir : (cfg.workdir ? cfg.workdir : "/");
    req.tty = proc->tty;
    req.uid = uid;
    req.gid = gid;
    req.stdio[0] = req.stdio[1] = req.stdio[2] = -1;
    req.init_fd = init_fd;
    req.spawn_fd = -1;
    if (proc->out_fd > 2 && !proc->tty) {
        devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0) {
            pe_err_sys(err, "open /dev/null");
            goto out;
        }
        req.stdio[0] = devnull;
        req.stdio[1] = req.stdio[2] = proc->out_fd;
    } else if (!proc->tty && pe__stdio_guard(req.stdio, relay, own, err) < 0) {
        goto out;
    }
    if (pe__spawn_sandbox(&req, &sp, err) < 0)
        goto out;
    pe__stdio_guard_close(req.stdio, NULL, own);
    memcpy(sp.relay, relay, sizeof(relay));
    relay[0] = relay[1] = relay[2] = -1;
    ret = pe__wait_process(&sp, proc->timeout, res, err);
out:
    if (ret < 0)
        pe_err_prefix(err, "run");
    if (cg != NULL) {
        pe_err e2;
        if (pe_cgroup_destroy(cg, &e2) < 0)
            pe_log_warn("%s", e2.msg);
        pe_cgroup_free(cg);
    }
    pe__stdio_guard_close(req.stdio, relay, own);
    pe__net_release(&lease);
    net_cfg_free(&cfg, &ncfg);
    if (base)
        pe__idmap_release(rt->data_dir, base);
    pe_fs_rm_rf(dir, NULL);
    free_strv(envp);
    free_strv(argv);
    free_strv(env);
    pe_image_stack_clear(&stack);
    return ret;
}

int pe_runtime_run(pe_runtime *rt, const pe_sandbox_cfg *cfg, const pe_proc_opts *proc,
                   pe_proc_result *res, pe_err *err)
{
    return run_oneshot(rt, cfg, proc, NULL, res, err);
}

int pe_runtime_run_capture(pe_runtime *rt, const pe_sandbox_cfg *cfg, const pe_proc_opts *proc,
                           const char *layer_dir, pe_proc_result *res, pe_err *err)
{
    if (!cfg->userns)
        return pe_err_set(err, PE_EINVAL, 0,
                          "a captured writable layer needs a user namespace (its files must "
                          "belong to host root)");
    return run_oneshot(rt, cfg, proc, layer_dir, res, err);
}

/* ---- persistent sandboxes ---- */

static char *sandbox_dir(pe_runtime *rt, const char *name)
{
    return pe_xasprintf("%s/sandboxes/%s", rt->data_dir, name);
}

/* Lock and load sandbox `name`. Returns the lock fd (caller closes). */
static int open_locked(pe_runtime *rt, const char *name, pe_state *st, char **dir_out, pe_err *err)
{
    cleanup_free char *dir = NULL;
    struct stat sb;
    int lock;

    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    dir = sandbox_dir(rt, name);
    if (stat(dir, &sb) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no such sandbox: %s", name);
    lock = pe__lock_file(dir, LOCK_EX, err);
    if (lock < 0)
        return -1;
    if (pe__state_load(dir, st, err) < 0) {
        close(lock);
        /* Removed while we waited for the lock. */
        if (stat(dir, &sb) < 0)
            return pe_err_set(err, PE_ENOENT, 0, "no such sandbox: %s", name);
        return -1;
    }
    *dir_out = pe_steal_ptr(&dir);
    return lock;
}

static void set_status(pe_state *st, const char *status)
{
    free(st->status);
    st->status = pe_xstrdup(status);
}

static bool is_up(const pe_state *st)
{
    return strcmp(st->status, "running") == 0 || strcmp(st->status, "paused") == 0;
}

/* Size in the largest whole unit ("512 MiB", "1 GiB"), else bytes. */
static void human_size(int64_t bytes, char *out, size_t len)
{
    static const char *const units[] = {"GiB", "MiB", "KiB"};

    for (int i = 0; i < 3; i++) {
        int64_t unit = (int64_t)1 << (10 * (3 - i));
        if (bytes >= unit && bytes % unit == 0) {
            snprintf(out, len, "%lld %s", (long long)(bytes / unit), units[i]);
            return;
        }
    }
    snprintf(out, len, "%lld bytes", (long long)bytes);
}

/* OOM kills counted by st's cgroup (memory.events on v2, oom_control on
 * v1) and its memory limit; *kills is -1 when unknown (no cgroup). */
static void oom_count_of(const pe_state *st, pe_cgroup *cg, int64_t *kills, int64_t *limit)
{
    int64_t max = -1;

    *kills = -1;
    *limit = st->cfg.memory_bytes;
    if (cg == NULL)
        return;
    pe_cgroup_oom_read(cg, kills, &max);
    if (max > 0)
        *limit = max;
}

static void oom_count(const pe_state *st, int64_t *kills, int64_t *limit)
{
    pe_cgroup *cg = NULL;

    if (pe_cgroup_open(st->id, &cg, NULL) < 0)
        cg = NULL;
    oom_count_of(st, cg, kills, limit);
    pe_cgroup_free(cg);
}

/* Why init is gone, when the OOM killer acted in the sandbox since it
 * started (the cgroup is made fresh at each start): a message, else NULL.
 * It states what is known: the kernel counts kills per cgroup, not which
 * process, but init is tiny and its death ends the sandbox, so a count
 * here with init gone is the memory limit's doing in all but a race with
 * another cause of death. */
static char *oom_reason(const pe_state *st)
{
    int64_t kills, limit;
    char size[32];

    oom_count(st, &kills, &limit);
    if (kills <= 0)
        return NULL;
    if (limit <= 0)
        return pe_xasprintf("out of memory: the kernel's OOM killer killed %lld process%s",
                            (long long)kills, kills == 1 ? "" : "es");
    human_size(limit, size, sizeof(size));
    return pe_xasprintf("out of memory: the kernel's OOM killer killed %lld process%s at the "
                        "sandbox's memory limit of %s",
                        (long long)kills, kills == 1 ? "" : "es", size);
}

int pe_runtime_oom_kills(pe_runtime *rt, const char *name, int64_t *kills, int64_t *limit,
                         pe_err *err)
{
    cleanup_free char *dir = NULL;
    pe_state st;

    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    dir = sandbox_dir(rt, name);
    if (pe__state_load(dir, &st, err) < 0)
        return -1;
    oom_count(&st, kills, limit);
    pe__state_clear(&st);
    return 0;
}

void pe_runtime_size_text(int64_t bytes, char *out, size_t len)
{
    human_size(bytes, out, len);
}

/* A sandbox that claims to run but whose init is gone is stopped; if the
 * OOM killer did it, its state says so (error) before the cgroup, which
 * holds the count, goes. Saved at once (the caller holds the lock): not
 * every caller saves (an exec refused as "not running"), and the reason
 * must outlive the cgroup. */
static void reconcile(const char *dir, pe_state *st)
{
    if (is_up(st) && !pe__state_alive(st)) {
        char *why = oom_reason(st);
        if (why != NULL) {
            free(st->error);
            st->error = why;
        }
        pe_cgroup_destroy_key(st->id, NULL);
        pe__net_release(&st->net);
        set_status(st, "stopped");
        st->pid = 0;
        st->start_time = 0;
        pe__state_save(dir, st, NULL);
    }
}

int pe__sandbox_lock(pe_runtime *rt, const char *name, pe_state *st, char **dir_out, pe_err *err)
{
    int lock = open_locked(rt, name, st, dir_out, err);

    if (lock >= 0)
        reconcile(*dir_out, st);
    return lock;
}

static int open_pidfd(const pe_state *st, pe_err *err)
{
    int fd = (int)syscall(SYS_pidfd_open, st->pid, 0);
    if (fd < 0 || pe__proc_start_time(st->pid) != st->start_time) {
        if (fd >= 0)
            close(fd);
        return pe_err_set(err, PE_ESTATE, 0, "sandbox %s is not running", st->cfg.name);
    }
    return fd;
}

/* ---- writable layers ---- */

#define LAYER_PREFIX_LEN 17 /* 16 hex digits and '-' */

/* This data directory's layers are named <hash of its path>-<sandbox
 * id>: gc finds its own among the host's by name, and two data
 * directories never pick the same name. */
void pe__layer_prefix(const pe_runtime *rt, char out[LAYER_PREFIX_LEN + 1])
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (const char *p = rt->data_dir; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    snprintf(out, LAYER_PREFIX_LEN + 1, "%016llx-", (unsigned long long)h);
}

/* A name we made: the prefix and a 16-hex id, nothing a path could
 * abuse even if a state file were edited. */
static bool layer_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n != LAYER_PREFIX_LEN + 16 || s[LAYER_PREFIX_LEN - 1] != '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (i != LAYER_PREFIX_LEN - 1 &&
            !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* The one place that says where a sandbox's writable layer (its upper/
 * and work/) is: the layers filesystem for a sandbox with a disk limit,
 * else disk/ in its directory. Mounts the layers filesystem if the layer
 * is there (after a reboot it is not mounted until someone needs it). */
static int disk_dir_of(const char *dir, const pe_state *st, char **out, pe_err *err)
{
    cleanup_free char *root = NULL;

    if (st->layer == NULL) {
        *out = pe_xasprintf("%s/disk", dir);
        return 0;
    }
    if (!layer_name_ok(st->layer))
        return pe_err_set(err, PE_ESYS, EINVAL, "bad layer name in %s/state.json", dir);
    if (pe__layers_ready(false, err) < 0)
        return -1;
    root = pe__layers_dir();
    *out = pe_xasprintf("%s/%s", root, st->layer);
    return 0;
}

int pe_runtime_layer_dir(pe_runtime *rt, const char *name, char **out, pe_err *err)
{
    cleanup_free char *dir = NULL;
    pe_state st;
    int r;

    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    dir = sandbox_dir(rt, name);
    if (pe__state_load(dir, &st, err) < 0)
        return -1;
    r = disk_dir_of(dir, &st, out, err);
    pe__state_clear(&st);
    return r;
}

/* The layer of sandbox (or staging dir) id: this data directory's prefix
 * and the id, so that gc finds a dead create's layer from its dir's name. */
static void layer_name_of(const pe_runtime *rt, const char *id, char name[LAYER_PREFIX_LEN + 17])
{
    pe__layer_prefix(rt, name);
    snprintf(name + LAYER_PREFIX_LEN, 17, "%.16s", id);
}

/* create: the writable layer, with a limit on the layers filesystem or
 * without one in disk/ (its name: layer_name_of). */
static int make_disk(pe_runtime *rt, const pe_sandbox_cfg *cfg, const char *from, const char *stage,
                     const char *id, uint32_t base, char **layer_out, pe_err *err)
{
    cleanup_free char *disk = pe_xasprintf("%s/disk", stage);
    cleanup_free char *owner = NULL;
    char name[LAYER_PREFIX_LEN + 17];

    if (cfg->disk_bytes == 0 && from != NULL)
        return pe_err_set(err, PE_EINVAL, 0,
                          "a sandbox made from a snapshot needs a disk limit (its layer is a "
                          "snapshot on the layers filesystem)");
    if (cfg->disk_bytes == 0) {
        for (int i = 0; i < 3; i++) {
            cleanup_free char *p =
                i == 0 ? pe_xstrdup(disk) : pe_xasprintf("%s/%s", disk, i == 1 ? "upper" : "work");
            if (mkdir(p, 0755) < 0 || (base && chown(p, base, base) < 0))
                return pe_err_sys(err, "create %s", p);
        }
        return 0;
    }
    layer_name_of(rt, id, name);
    if (pe__layers_ready(true, err) < 0)
        return pe_err_prefix(err, "a disk limit needs the layers filesystem");
    owner = pe_xasprintf("%s\n%s\n%s\n", rt->data_dir, cfg->name, id);
    if ((from ? pe__layer_create_from(name, from, cfg->disk_bytes, base, owner, err)
              : pe__layer_create(name, cfg->disk_bytes, base, owner, err)) < 0)
        return -1;
    *layer_out = pe_xstrdup(name);
    return 0;
}

/* A sandbox is built in a staging directory, sandboxes/.new-<id>, locked
 * while it is made, and renamed to its name (RENAME_NOREPLACE) only when
 * complete: a create killed half-way leaves no sandbox that cannot start,
 * just a staging directory that pe_runtime_gc removes (its lock is free). */
int pe_runtime_create(pe_runtime *rt, const pe_sandbox_cfg *cfg, pe_err *err)
{
    return pe__sandbox_create(rt, cfg, NULL, err);
}

int pe__sandbox_create(pe_runtime *rt, const pe_sandbox_cfg *cfg, const char *from, pe_err *err)
{
    cleanup_free char *dir = NULL;
    cleanup_free char *stage = NULL;
    cleanup_free char *disk = NULL;
    cleanup_free char *owner = NULL;
    pe_image_stack stack = {0};
    cleanup_fd int lock = -1;
    pe_state st;
    char id[32];
    uint32_t base = 0;

    if (cfg->name == NULL || !pe_name_valid(cfg->name))
        return pe_err_set(err, PE_EINVAL, 0,
                          "invalid sandbox name '%s': use 1-63 letters, digits, '-', '_', '.'",
                          cfg->name ? cfg->name : "");
    if (validate_cfg(cfg, err) < 0)
        return -1;
    dir = sandbox_dir(rt, cfg->name);
    if (access(dir, F_OK) == 0)
        return pe_err_set(err, PE_EEXIST, 0, "sandbox %s already exists", cfg->name);
    if (pe_image_resolve_stack(rt->data_dir, cfg->image ? cfg->image : PE_DEFAULT_IMAGE, &stack,
                               err) < 0)
        return -1;
    pe__random_hex(id, 8);
    stage = pe_xasprintf("%s/sandboxes/.new-%s", rt->data_dir, id);
    memset(&st, 0, sizeof(st));
    if (mkdir(stage, 0711) < 0) {
        pe_image_stack_clear(&stack);
        return pe_err_sys(err, "create %s", stage);
    }
    lock = pe__lock_file(stage, LOCK_EX, err);
    if (lock < 0) {
        pe_image_stack_clear(&stack);
        rmdir(stage);
        return -1;
    }
    if (cfg->userns) {
        /* pe_runtime_gc finds it by this owner, should the create die
         * before the rename */
        owner = pe_xasprintf("sandbox:%s:%s", cfg->name, id);
        if (pe__idmap_alloc(rt->data_dir, owner, &base, err) < 0)
            goto fail;
    }
    if (make_disk(rt, cfg, from, stage, id, base, &st.layer, err) < 0)
        goto fail;
    /* Build the state from a deep copy of cfg through its JSON form. */
    {
        json_t *j = pe__cfg_to_json(cfg);
        int r = pe__cfg_from_json(j, &st.cfg, err);
        json_decref(j);
        if (r < 0)
            goto fail;
    }
    if (st.cfg.hostname == NULL)
        st.cfg.hostname = pe_xstrdup(cfg->name);
    pe__cfg_apply_defaults(&st.cfg);
    {
        char **env = concat_env(stack.env, st.cfg.env);
        free_strv(st.cfg.env);
        st.cfg.env = env;
    }
    st.id = pe_xstrdup(id);
    st.status = pe_xstrdup("created");
    st.rootfs = pe_xstrdup(stack.dirs[0]);
    st.layers = layers_of_stack(&stack);
    st.id_base = base;
    st.created = unix_now();
    if (pe__state_save_new(stage, &st, err) < 0)
        goto fail;
    if (renameat2(AT_FDCWD, stage, AT_FDCWD, dir, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST)
            pe_err_set(err, PE_EEXIST, 0, "sandbox %s already exists", cfg->name);
        else
            pe_err_sys(err, "rename %s", stage);
        goto fail;
    }
    pe__state_clear(&st);
    pe_image_stack_clear(&stack);
    return 0;
fail:
    if (st.layer != NULL)
        pe__layer_remove(st.layer, NULL);
    pe__state_clear(&st);
    pe_image_stack_clear(&stack);
    if (base)
        pe__idmap_release(rt->data_dir, base);
    pe_fs_rm_rf(stage, NULL);
    return err->code == PE_EEXIST ? -1 : pe_err_prefix(err, "create sandbox %s", cfg->name);
}

/* The stored config with a start's extra binds appended, in *out (which
 * borrows every string; free only out->binds). Extra binds are checked as
 * create checks stored ones. */
static int with_extra_binds(const pe_sandbox_cfg *cfg, const pe_start_extra *x, pe_sandbox_cfg *out,
                            pe_err *err)
{
    *out = *cfg;
    if (x == NULL || x->n_binds == 0)
        return 0;
    if (cfg->n_binds + x->n_binds > PE_MAX_BINDS)
        return pe_err_set(err, PE_EINVAL, 0, "at most %d volumes", PE_MAX_BINDS);
    out->binds = pe_xcalloc(cfg->n_binds + x->n_binds, sizeof(pe_bind));
    if (cfg->n_binds > 0)
        memcpy(out->binds, cfg->binds, cfg->n_binds * sizeof(pe_bind));
    memcpy(out->binds + cfg->n_binds, x->binds, x->n_binds * sizeof(pe_bind));
    out->n_binds = cfg->n_binds + x->n_binds;
    if (validate_cfg(out, err) < 0) {
        free(out->binds);
        out->binds = cfg->binds;
        return -1;
    }
    return 0;
}

static int start_locked(pe_runtime *rt, const char *dir, pe_state *st, const pe_start_extra *x,
                        pe_err *err)
{
    cleanup_free char *disk = NULL;
    cleanup_fd int devnull = -1;
    pe_cgroup *cg = NULL;
    pe_cgroup_limits lim;
    pe_spawn_req req;
    pe_spawn_res sp;
    pe_sandbox_cfg ncfg, xcfg;
    pe_net_lease lease;
    json_t *egress = NULL;
    char **envp = NULL, **argv = NULL;
    const char *one[1] = {st->rootfs};
    const char *const *lowers = st->layers ? (const char *const *)st->layers : one;
    size_t n_lowers = 0;
    int init_fd, ret = -1;
    cleanup_fd int spawn_fd = -1;

    for (n_lowers = 0; st->layers && st->layers[n_lowers]; n_lowers++)
        ;
    if (st->layers == NULL)
        n_lowers = 1;
    init_fd = pe__init_memfd(rt->init_path, err);
    if (init_fd < 0)
        return -1;
    for (size_t i = 0; i < n_lowers; i++)
        if (access(lowers[i], F_OK) < 0)
            return pe_err_set(err, PE_ENOENT, errno, "image %s of sandbox %s (layer %s)",
                              st->cfg.image ? st->cfg.image : "", st->cfg.name, lowers[i]);
    if (disk_dir_of(dir, st, &disk, err) < 0)
        return -1;
    if (access(disk, F_OK) < 0)
        return pe_err_set(err, PE_ESYS, errno, "writable layer %s", disk);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        return pe_err_sys(err, "open /dev/null");
    pe__cfg_apply_defaults(&st->cfg);
    limits_of(&st->cfg, &lim);
    if (with_extra_binds(&st->cfg, x, &xcfg, err) < 0)
        return -1;
    if (net_prepare(rt, &xcfg, dir, st->id, true, &lease, &ncfg, err) < 0)
        goto out_binds;
    if (pe_cgroup_create(st->id, &lim, &cg, err) < 0) {
        pe__net_release(&lease);
        net_cfg_free(&xcfg, &ncfg);
        goto out_binds;
    }
    spawn_fd = pe__spawn_listen(dir, err);
    if (spawn_fd < 0) {
        pe_cgroup_destroy(cg, NULL);
        pe__net_release(&lease);
        goto out;
    }
    envp = build_env(&st->cfg, x ? x->env : NULL, false, st->cfg.uid);
    argv = init_argv(true, false, -1, -1, NULL);
    memset(&req, 0, sizeof(req));
    req.cfg = &ncfg;
    req.net = lease.addr ? &lease : NULL;
    egress = lease.addr ? pe__egress_load(dir) : NULL;
    req.egress = egress;
    req.lowers = lowers;
    req.n_lowers = n_lowers;
    req.disk_dir = disk;
    req.id_base = st->id_base;
    req.cg = cg;
    req.persist = true;
    req.argv = argv;
    req.envp = envp;
    req.workdir = "/";
    req.uid = req.gid = -1;
    req.stdio[0] = req.stdio[1] = req.stdio[2] = devnull;
    req.init_fd = init_fd;
    req.spawn_fd = spawn_fd;
    if (pe__spawn_sandbox(&req, &sp, err) < 0) {
        pe__spawn_unlink(dir);
        pe_cgroup_destroy(cg, NULL);
        pe__net_release(&lease);
        goto out;
    }
    close(sp.pidfd);
    st->net = lease;
    set_status(st, "running");
    st->pid = sp.pid;
    st->start_time = sp.start_time;
    st->started = unix_now();
    free(st->error);
    st->error = NULL;
    ret = pe__state_save_started(dir, st, err);
out:
    json_decref(egress);
    net_cfg_free(&xcfg, &ncfg);
    pe_cgroup_free(cg);
    /* envp may hold a start's secrets: wipe before freeing. */
    for (char **e = envp; e && *e; e++)
        explicit_bzero(*e, strlen(*e));
    free_strv(envp);
    free_strv(argv);
out_binds:
    if (xcfg.binds != st->cfg.binds)
        free(xcfg.binds);
    return ret;
}

int pe_runtime_start(pe_runtime *rt, const char *name, pe_err *err)
{
    return pe_runtime_start_with(rt, name, NULL, err);
}

int pe_runtime_start_with(pe_runtime *rt, const char *name, const pe_start_extra *extra,
                          pe_err *err)
{
    cleanup_free char *dir = NULL;
    pe_state st;
    int lock, ret;

    lock = open_locked(rt, name, &st, &dir, err);
    if (lock < 0)
        return -1;
    reconcile(dir, &st);
    if (is_up(&st))
        ret = pe_err_set(err, PE_ESTATE, 0, "sandbox %s is already %s", name, st.status);
    else
        ret = start_locked(rt, dir, &st, extra, err);
    if (ret < 0)
        pe_err_prefix(err, "start sandbox %s", name);
    pe__state_clear(&st);
    close(lock);
    return ret;
}

/* Wait until the process behind pidfd has exited, at most `timeout` s. */
static bool wait_exit(int pidfd, double timeout)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int ms = timeout <= 0 ? 0 : (int)(timeout * 1000);
    return poll(&p, 1, ms) == 1;
}

/* Stop what runs: SIGTERM to init (which passes it on), SIGKILL after
 * timeout, then empty and remove the cgroup. Thaws a paused sandbox first:
 * frozen processes cannot act on SIGTERM. */
static int stop_locked(pe_state *st, double timeout, pe_err *err)
{
    pe_cgroup *cg = NULL;
    cleanup_fd int pidfd = -1;

    if (pe_cgroup_open(st->id, &cg, NULL) == 0 && strcmp(st->status, "paused") == 0)
        pe_cgroup_freeze(cg, false, NULL);
    pidfd = (int)syscall(SYS_pidfd_open, st->pid, 0);
    if (pidfd >= 0 && pe__proc_start_time(st->pid) == st->start_time) {
        if (timeout > 0)
            syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0);
        if (timeout <= 0 || !wait_exit(pidfd, timeout)) {
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            wait_exit(pidfd, 5);
        }
    }
    if (cg != NULL) {
        if (pe_cgroup_destroy(cg, err) < 0) {
            pe_cgroup_free(cg);
            return -1;
        }
        pe_cgroup_free(cg);
    }
    /* The veth dies with the namespace; only our claims go now. */
    pe__net_release(&st->net);
    set_status(st, "stopped");
    st->pid = 0;
    st->start_time = 0;
    return 0;
}

int pe_runtime_stop(pe_runtime *rt, const char *name, double timeout, pe_err *err)
{
    cleanup_free char *dir = NULL;
    pe_state st;
    int lock, ret = 0;

    lock = open_locked(rt, name, &st, &dir, err);
    if (lock < 0)
        return -1;
    reconcile(dir, &st);
    if (is_up(&st))
        ret = stop_locked(&st, timeout, err);
    if (ret == 0) {
        pe__spawn_unlink(dir);
        ret = pe__state_save(dir, &st, err);
    }
    if (ret < 0)
        pe_err_prefix(err, "stop sandbox %s", name);
    pe__state_clear(&st);
    close(lock);
    return ret;
}

static int freeze(pe_runtime *rt, const char *name, bool frozen, pe_err *err)
{
    cleanup_free char *dir = NULL;
    pe_cgroup *cg = NULL;
    pe_state st;
    int lock, ret = -1;
    const char *want = frozen ? "running" : "paused";

    lock = open_locked(rt, name, &st, &dir, err);
    if (lock < 0)
        return -1;
    reconcile(dir, &st);
    if (strcmp(st.status, want) != 0) {
        pe_err_set(err, PE_ESTATE, 0, "sandbox %s is %s, not %s", name, st.status, want);
        goto out;
    }
    if (pe_cgroup_open(st.id, &cg, err) < 0 || pe_cgroup_freeze(cg, frozen, err) < 0)
        goto out;
    set_status(&st, frozen ? "paused" : "running");
    ret = pe__state_save(dir, &st, err);
out:
    if (ret < 0)
        pe_err_prefix(err, "%s sandbox %s", frozen ? "pause" : "resume", name);
    pe_cgroup_free(cg);
    pe__state_clear(&st);
    close(lock);
    return ret;
}

int pe_runtime_pause(pe_runtime *rt, const char *name, pe_err *err)
{
    return freeze(rt, name, true, err);
}

int pe_runtime_resume(pe_runtime *rt, const char *name, pe_err *err)
{
    return freeze(rt, name, false, err);
}

/* Remove layer `name`, mounting the layers filesystem if needed (after a
 * reboot). Its image gone (removed by an operator) is its layer gone. */
static int remove_layer(const char *name, pe_err *err)
{
    pe_err e2;

    if (pe__layers_ready(false, &e2) < 0) {
        if (e2.errnum == ENOENT)
            return 0;
        if (err != NULL)
            *err = e2;
        return -1;
    }
    return pe__layer_remove(name, err);
}

/* A removal step this slow is logged by name: a delete's caller waits for
 * all of them, and which one stalls (under another process's I/O, say) is
 * otherwise invisible. *t: the step's start, moved on to now. */
#define SLOW_STEP_MS 1000

static void step_took(const char *what, const char *step, int64_t *t)
{
    int64_t now = pe_monotonic_ms();

    if (now - *t >= SLOW_STEP_MS)
        pe_log_warn("remove sandbox %s: %s took %lld ms", what, step, (long long)(now - *t));
    *t = now;
}

/* Finish removing a sandbox whose directory is already renamed to
 * sandboxes/.rm-*: its writable layer first, while the state file still
 * says what to release; then the rest, then its id range (last, so the
 * range is never handed to another sandbox while files it owns remain).
 * A crash at any point leaves the .rm- directory, never a half sandbox;
 * the next rm, gc or daemon start comes back here. */
static int finish_removal(pe_runtime *rt, const char *gone, pe_err *err)
{
    cleanup_free char *disk = pe_xasprintf("%s/disk", gone);
    pe_state st;
    bool have_state = pe__state_load(gone, &st, NULL) == 0;
    int64_t t = pe_monotonic_ms();
    int r = 0;

    if (have_state && st.layer != NULL && layer_name_ok(st.layer)) {
        r = remove_layer(st.layer, err);
        step_took(gone, "its writable layer", &t);
    }
    if (r == 0) {
        r = pe_fs_rm_rf(disk, err);
        step_took(gone, "its disk directory", &t);
    }
    if (r == 0) {
        /* Named by the directory's inode: while it is still there. */
        pe__run_files_remove(gone);
        r = pe_fs_rm_rf(gone, err);
        step_took(gone, "its directory", &t);
    }
    if (r == 0 && have_state && st.id_base)
        pe__idmap_release(rt->data_dir, st.id_base);
    if (have_state)
        pe__state_clear(&st);
    return r;
}

int pe_runtime_remove(pe_runtime *rt, const char *name, pe_err *err)
{
    cleanup_free char *dir = NULL;
    cleanup_free char *gone = NULL;
    pe_state st;
    int64_t t = pe_monotonic_ms();
    int lock, ret = -1;

    lock = open_locked(rt, name, &st, &dir, err);
    step_took(name, "its lock", &t);
    if (lock < 0)
        return -1;
    reconcile(dir, &st);
    if (is_up(&st)) {
        int r = stop_locked(&st, 0, err);
        step_took(name, "stopping it", &t);
        if (r < 0)
            goto out;
    }
    pe_cgroup_destroy_key(st.id, NULL);
    step_took(name, "its cgroup", &t);
    /* Rename first so the name is free at once and a crash mid-removal
     * leaves a directory that gc finishes, not a half sandbox. */
    gone = pe_xasprintf("%s/sandboxes/.rm-%s-%s", rt->data_dir, name, st.id);
    if (rename(dir, gone) < 0) {
        pe_err_sys(err, "remove %s", dir);
        goto out;
    }
    ret = finish_removal(rt, gone, err);
out:
    if (ret < 0)
        pe_err_prefix(err, "remove sandbox %s", name);
    pe__state_clear(&st);
    close(lock);
    return ret;
}

/* Start proc in sandbox name with stdio[i] >= 0 as its 0,1,2. oom (may
 * be NULL) gets the sandbox's OOM kill count and memory limit before the
 * process starts, read from the cgroup opened here anyway (a separate
 * pe_runtime_oom_kills would load the state and open it again). */
static int exec_spawn_fds(pe_runtime *rt, const char *name, const pe_proc_opts *proc,
                          const int stdio[3], pe_spawn_res *sp, int64_t oom[2], pe_err *err)
{
    cleanup_free char *dir = NULL;
    pe_cgroup *cg = NULL;
    pe_state st;
    pe_exec_req req;
    char **envp = NULL;
    int lock, pidfd = -1, ret = -1;

    if (proc->argv == NULL || proc->argv[0] == NULL || proc->argv[0][0] == '\0')
        return pe_err_set(err, PE_EINVAL, 0, "no command given");
    if (proc->workdir && validate_path("working directory", proc->workdir, err) < 0)
        return -1;
    lock = open_locked(rt, name, &st, &dir, err);
    if (lock < 0)
        return -1;
    reconcile(dir, &st);
    if (strcmp(st.status, "running") != 0) {
        pe_err_set(err, PE_ESTATE, 0, "sandbox %s is %s", name, st.status);
        goto out;
    }
    if (oom != NULL) {
        if (pe_cgroup_open(st.id, &cg, err) < 0)
            goto out;
        oom_count_of(&st, cg, &oom[0], &oom[1]);
    }
    envp = build_env(&st.cfg, proc->env, proc->tty, proc->has_user ? proc->uid : st.cfg.uid);
    pe__cfg_apply_defaults(&st.cfg);
    memset(&req, 0, sizeof(req));
    req.nofile_soft = (uint64_t)st.cfg.nofile_soft;
    req.nofile_hard = (uint64_t)st.cfg.nofile_hard;
    req.userns = st.cfg.userns;
    req.argv = proc->argv;
    req.envp = envp;
    req.workdir = proc->workdir ? proc->workdir : (st.cfg.workdir ? st.cfg.workdir : "/");
    req.tty = proc->tty;
    req.tty_cols = proc->tty_cols;
    req.tty_rows = proc->tty_rows;
    req.uid = proc->has_user ? (long)proc->uid : (long)st.cfg.uid;
    req.gid = proc->has_user ? (long)proc->gid : (long)st.cfg.gid;
    memcpy(req.stdio, stdio, sizeof(req.stdio));
    /* The sandbox's init starts it, if it can (spawn-init.c); the lock
     * goes first either way: exec may take hours, stop/rm must not wait. */
    close(lock);
    lock = -1;
    ret = pe__spawn_via_init(dir, &req, sp, err);
    if (ret != 1)
        goto out;
    ret = -1;
    pidfd = open_pidfd(&st, err);
    if (pidfd < 0 || (cg == NULL && pe_cgroup_open(st.id, &cg, err) < 0))
        goto out;
    req.target_pidfd = pidfd;
    req.cg = cg;
    ret = pe__spawn_exec(&req, sp, err);
out:
    if (ret < 0)
        pe_err_prefix(err, "exec in sandbox %s", name);
    if (pidfd >= 0)
        close(pidfd);
    pe_cgroup_free(cg);
    free_strv(envp);
    pe__state_clear(&st);
    if (lock >= 0)
        close(lock);
    return ret;
}

/* Start proc in sandbox name; stdio[i] >= 0 become its 0,1,2. The
 * caller's terminals among the rest are replaced (pe__stdio_guard): by
 * pipes whose our ends land in sp->relay when relay, else by /dev/null. */
static int exec_spawn(pe_runtime *rt, const char *name, const pe_proc_opts *proc,
                      const int stdio[3], bool relay, pe_spawn_res *sp, int64_t oom[2], pe_err *err)
{
    int fds[3] = {stdio[0], stdio[1], stdio[2]};
    int ours[3] = {-1, -1, -1};
    bool own[3] = {false, false, false};
    int r;

    if (!proc->tty && pe__stdio_guard(fds, relay ? ours : NULL, own, err) < 0)
        return -1;
    r = exec_spawn_fds(rt, name, proc, fds, sp, oom, err);
    pe__stdio_guard_close(fds, r < 0 ? ours : NULL, own);
    if (r == 0)
        memcpy(sp->relay, ours, sizeof(ours));
    return r;
}

int pe_runtime_exec(pe_runtime *rt, const char *name, const pe_proc_opts *proc, pe_proc_result *res,
                    pe_err *err)
{
    static const int inherit[3] = {-1, -1, -1};
    pe_spawn_res sp;

    if (exec_spawn(rt, name, proc, inherit, true, &sp, NULL, err) < 0)
        return -1;
    if (pe__wait_process(&sp, proc->timeout, res, err) < 0)
        return pe_err_prefix(err, "exec in sandbox %s", name);
    return 0;
}

static void close_pipes(int pipes[3][2])
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            if (pipes[i][j] >= 0)
                close(pipes[i][j]);
}

int pe_runtime_exec_start(pe_runtime *rt, const char *name, const pe_proc_opts *proc, pe_proc *out,
                          pe_err *err)
{
    int pipes[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    int stdio[3] = {-1, -1, -1};
    bool capture = proc->capture && !proc->tty;
    int64_t oom[2] = {-1, 0};
    pe_spawn_res sp;

    for (int i = 0; capture && i < 3; i++) {
        if (pipe2(pipes[i], O_CLOEXEC) < 0) {
            close_pipes(pipes);
            return pe_err_sys(err, "pipe");
        }
        /* The process reads fd 0 and writes 1 and 2. */
        stdio[i] = pipes[i][i == 0 ? 0 : 1];
    }
    if (exec_spawn(rt, name, proc, stdio, false, &sp, oom, err) < 0) {
        close_pipes(pipes);
        return -1;
    }
    for (int i = 0; capture && i < 3; i++) {
        close(stdio[i]);
        pipes[i][i == 0 ? 0 : 1] = -1;
    }
    out->pid = sp.pid;
    out->pidfd = sp.pidfd;
    out->signal_pidfd = sp.signal_pidfd;
    out->pty_fd = sp.pty_master;
    out->status_fd = sp.sync_fd;
    out->init_reaps = sp.init_conn >= 0;
    out->init_fd = sp.init_conn;
    out->stdin_fd = pipes[0][1];
    out->stdout_fd = pipes[1][0];
    out->stderr_fd = pipes[2][0];
    out->oom_kills = oom[0];
    out->oom_limit = oom[1];
    return 0;
}

/* The process is our child (pe__spawn_exec), or the sandbox's init's,
 * which reports its status (pe__spawn_via_init). */
int pe_proc_wait(pe_proc *p, int *exit_code, pe_err *err)
{
    int status;

    if (pe__spawn_reap(p->pid, p->pidfd, p->init_reaps ? p->init_fd : -1, &status) < 0)
        return pe_err_sys(err, "wait for process %d", (int)p->pid);
    if (WIFEXITED(status))
        *exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        *exit_code = 128 + WTERMSIG(status);
    else
        *exit_code = 255;
    return 0;
}

int pe_proc_signal(pe_proc *p, int sig)
{
    int fd = p->signal_pidfd >= 0 ? p->signal_pidfd : p->pidfd;
    return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

pid_t pe_proc_host_pid(const pe_proc *p)
{
    char path[64], line[128];
    int fd = p->signal_pidfd >= 0 ? p->signal_pidfd : p->pidfd;
    pid_t pid = 0;
    FILE *f;

    if (fd < 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    f = fopen(path, "re");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "Pid:", 4) == 0)
            pid = (pid_t)strtol(line + 4, NULL, 10);
    fclose(f);
    return pid > 0 ? pid : 0; /* -1 once the process is gone */
}

int pe_proc_signal_group(pe_proc *p, int sig)
{
    pid_t pid = pe_proc_host_pid(p);

    if (pid > 0 && kill(-pid, sig) == 0)
        return 0;
    return pe_proc_signal(p, sig);
}

void pe_proc_close(pe_proc *p)
{
    int *fds[] = {&p->pidfd,     &p->signal_pidfd, &p->stdin_fd, &p->stdout_fd,
                  &p->stderr_fd, &p->pty_fd,       &p->status_fd};
    for (size_t i = 0; i < PE_ARRAY_LEN(fds); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    if (p->init_reaps && p->init_fd >= 0) /* a zero-filled pe_proc has no init_fd */
        close(p->init_fd);
    p->init_fd = -1;
}

/* ---- listing ---- */

/* {"limitBytes", "usedBytes"} of a sandbox's writable layer: the qgroup's
 * numbers (as of btrfs's last commit) on the layers filesystem; null
 * without a disk limit or while the filesystem is not mounted (listing
 * never mounts it). */
static json_t *disk_usage(const pe_state *st)
{
    int64_t used = -1, limit = -1;

    if (st->layer == NULL || !layer_name_ok(st->layer) || !pe__layers_mounted() ||
        pe__layer_usage(st->layer, &used, &limit, NULL) < 0)
        return json_null();
    return json_pack("{s:I, s:I}", "limitBytes", (json_int_t)limit, "usedBytes", (json_int_t)used);
}

static json_t *describe(pe_runtime *rt, const char *name, pe_err *err)
{
    cleanup_free char *dir = sandbox_dir(rt, name);
    pe_state st;
    json_t *o;

    if (pe__state_load(dir, &st, err) < 0)
        return NULL;
    if (is_up(&st) && !pe__state_alive(&st)) {
        char *why = oom_reason(&st);
        set_status(&st, "stopped");
        st.pid = 0;
        if (why != NULL) {
            free(st.error);
            st.error = why;
        }
    }
    o = pe__state_to_json(&st);
    json_object_set_new(o, "disk", disk_usage(&st));
    pe__state_clear(&st);
    return o;
}

int pe_runtime_inspect(pe_runtime *rt, const char *name, char **json_out, pe_err *err)
{
    cleanup_free char *dir = NULL;
    struct stat sb;
    json_t *o;

    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    dir = sandbox_dir(rt, name);
    if (stat(dir, &sb) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no such sandbox: %s", name);
    o = describe(rt, name, err);
    if (o == NULL)
        return -1;
    *json_out = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    return 0;
}

int pe_runtime_init_of(pe_runtime *rt, const char *name, pe_runtime_init *out, pe_err *err)
{
    cleanup_free char *dir = NULL;
    pe_state st;

    memset(out, 0, sizeof(*out));
    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid sandbox name '%s'", name);
    dir = sandbox_dir(rt, name);
    if (access(dir, F_OK) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no such sandbox: %s", name);
    if (pe__state_load(dir, &st, err) < 0)
        return -1;
    out->id_base = st.id_base;
    out->running = strcmp(st.status, "running") == 0 && st.pid > 0 && pe__state_alive(&st);
    if (out->running) {
        out->pid = st.pid;
        out->start_time = st.start_time;
    }
    pe__state_clear(&st);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int pe_runtime_list(pe_runtime *rt, char **json_out, pe_err *err)
{
    cleanup_free char *base = pe_xasprintf("%s/sandboxes", rt->data_dir);
    json_t *arr = json_array();
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    DIR *d = opendir(base);

    if (d == NULL) {
        json_decref(arr);
        return pe_err_sys(err, "list %s", base);
    }
    while ((de = readdir(d)) != NULL) {
        if (!pe_name_valid(de->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = pe_xrealloc(names, cap * sizeof(char *));
        }
        names[n++] = pe_xstrdup(de->d_name);
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(char *), cmp_names);
    for (size_t i = 0; i < n; i++) {
        pe_err e2;
        json_t *o = describe(rt, names[i], &e2);
        if (o != NULL)
            json_array_append_new(arr, o);
        free(names[i]);
    }
    free(names);
    *json_out = json_dumps(arr, JSON_INDENT(2));
    json_decref(arr);
    return 0;
}

int pe_runtime_image_in_use(pe_runtime *rt, const char *image, pe_err *err)
{
    char *text = NULL;
    json_t *arr;
    int used = 0;
    size_t i;

    if (pe_runtime_list(rt, &text, err) < 0)
        return -1;
    arr = json_loads(text, 0, NULL);
    free(text);
    for (i = 0; arr && i < json_array_size(arr); i++) {
        const char *im = json_string_value(json_object_get(json_array_get(arr, i), "image"));
        if (im && strcmp(im, image) == 0)
            used = 1;
    }
    json_decref(arr);
    return used;
}

/* ---- crash cleanup ---- */

static void gc_run_dirs(pe_runtime *rt)
{
    cleanup_free char *base = pe_xasprintf("%s/run", rt->data_dir);
    struct dirent *de;
    DIR *d = opendir(base);

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        cleanup_free char *dir = NULL;
        cleanup_free char *owner = NULL;
        int lock;

        if (strncmp(de->d_name, "run-", 4) != 0)
            continue;
        dir = pe_xasprintf("%s/%s", base, de->d_name);
        lock = pe__lock_file(dir, LOCK_EX | LOCK_NB, NULL);
        if (lock < 0)
            continue; /* busy: a run in progress (or gone already) */
        pe_log_info("cleaning up after crashed run %s", de->d_name);
        pe_cgroup_destroy_key(de->d_name, NULL);
        owner = pe_xasprintf("run:%s", de->d_name);
        pe__idmap_release_owner(rt->data_dir, owner, "");
        pe_fs_rm_rf(dir, NULL);
        close(lock);
    }
    closedir(d);
}

/* The layer a create that died may have made: its name is the staging
 * dir's id under this data directory's prefix. Without the layers
 * filesystem there is none to remove now (gc_layers takes it later). */
static int gc_stage_layer(pe_runtime *rt, const char *id)
{
    char name[LAYER_PREFIX_LEN + 17];
    pe_err e2;

    layer_name_of(rt, id, name);
    if (!layer_name_ok(name) || !pe__layers_mounted())
        return 0;
    if (remove_layer(name, &e2) < 0) {
        pe_log_warn("%s", e2.msg);
        return -1;
    }
    return 0;
}

struct gc_layers_ctx {
    pe_runtime *rt;
};

/* Is layer `name` (of this data directory) still wanted? By a sandbox,
 * a create in progress or a removal to finish (which removes it). The
 * staging dir is looked at first: a create renames it to the sandbox's
 * name, so once it is gone the sandbox is there (or the create failed
 * and removed its layer itself). */
static bool layer_wanted(pe_runtime *rt, const char *name)
{
    const char *id = name + LAYER_PREFIX_LEN;
    cleanup_free char *stage = pe_xasprintf("%s/sandboxes/.new-%s", rt->data_dir, id);
    cleanup_free char *owner = NULL;
    cleanup_free char *dir = NULL;
    cleanup_free char *gone = NULL;
    char *sname, *end;
    pe_state st;
    bool used = false;

    if (access(stage, F_OK) == 0)
        return true;
    owner = pe__layer_owner(name);
    if (owner == NULL || (sname = strchr(owner, '\n')) == NULL)
        return false;
    sname++;
    end = strchr(sname, '\n');
    if (end != NULL)
        *end = '\0';
    if (!pe_name_valid(sname))
        return false;
    dir = sandbox_dir(rt, sname);
    if (pe__state_load(dir, &st, NULL) == 0) {
        used = st.layer != NULL && strcmp(st.layer, name) == 0;
        pe__state_clear(&st);
    }
    gone = pe_xasprintf("%s/sandboxes/.rm-%s-%s", rt->data_dir, sname, id);
    return used || access(gone, F_OK) == 0;
}

static void gc_layer(const char *name, void *arg)
{
    struct gc_layers_ctx *c = arg;
    pe_err e2;

    if (!layer_name_ok(name) || layer_wanted(c->rt, name))
        return;
    pe_log_info("removing layer %s: its sandbox is gone", name);
    if (pe__layer_remove(name, &e2) < 0)
        pe_log_warn("%s", e2.msg);
}

/* Layers of this data directory that no sandbox of it has (a data dir
 * whose sandboxes/ was emptied by hand, a removal that lost its state).
 * Only when the layers filesystem is mounted: gc never mounts it for
 * this. Another data directory's layers are never touched. */
static void gc_layers(pe_runtime *rt)
{
    struct gc_layers_ctx c = {rt};
    char prefix[LAYER_PREFIX_LEN + 1];

    pe__layer_prefix(rt, prefix);
    pe__layers_each(prefix, gc_layer, &c);
}

static void gc_removed(pe_runtime *rt)
{
    cleanup_free char *base = pe_xasprintf("%s/sandboxes", rt->data_dir);
    struct dirent *de;
    DIR *d = opendir(base);

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, ".rm-", 4) == 0) {
            /* Not while its remove still runs (it holds the lock). */
            cleanup_free char *p = pe_xasprintf("%s/%s", base, de->d_name);
            pe_err e2;
            int lock = pe__lock_file(p, LOCK_EX | LOCK_NB, NULL);

            if (lock == -2)
                continue;
            pe_log_info("finishing the removal of %s", de->d_name);
            if (finish_removal(rt, p, &e2) < 0)
                pe_log_warn("%s", e2.msg);
            if (lock >= 0)
                close(lock);
        } else if (strncmp(de->d_name, ".new-", 5) == 0) {
            /* a create that died before its rename (pe_runtime_create) */
            cleanup_free char *p = pe_xasprintf("%s/%s", base, de->d_name);
            cleanup_free char *id_owner = pe_xasprintf(":%s", de->d_name + 5);
            int lock = pe__lock_file(p, LOCK_EX | LOCK_NB, NULL);

            if (lock < 0)
                continue; /* still being made */
            if (gc_stage_layer(rt, de->d_name + 5) < 0) {
                close(lock);
                continue; /* its layer stays: so does the staging dir naming it */
            }
            pe__idmap_release_owner(rt->data_dir, "sandbox:", id_owner);
            pe_fs_rm_rf(p, NULL);
            close(lock);
        }
    }
    closedir(d);
}

int pe_runtime_gc(pe_runtime *rt, pe_err *err)
{
    gc_run_dirs(rt);
    gc_removed(rt);
    pe__idmap_gc_empty();
    gc_layers(rt);
    pe__net_gc();
    return pe_image_gc(rt->data_dir, err);
}
