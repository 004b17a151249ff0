/* Supervised processes inside sandboxes: services (handlers/service.c) and
 * the daemon's own helpers (tailscaled, handlers/keys.c).
 *
 * A unit is one command run in a running sandbox through
 * pe_runtime_exec_start (argv, never a shell of ours), with the sandbox's
 * environment read from the store at every start, plus a marker
 * POCKETENV_UNIT=<key> so that its processes can be found again (after a
 * daemon restart, see pe_daemon_unit_kill_leftovers). Its stdout and
 * stderr go into a ring of PE_UNIT_LOG_MAX bytes (the newest are kept).
 *
 * Threading: each running unit has a thread of its own that starts the
 * process, pumps its output and waits for it (poll on the pipes and the
 * pidfd), then applies the restart policy. The worker pool is not used:
 * a unit's lifetime is unbounded and would hold one of its few threads
 * for as long; units are capped per sandbox by their callers. The
 * registry and every unit's fields are under one mutex; the thread reads
 * the store through its own handle (pe_daemon_store), closed when it ends.
 *
 * Lifetime: a unit stays in the registry after its process ended (its
 * state and logs stay readable) until pe_daemon_unit_forget. The process
 * is its own session (the runtime setsid()s it), so stopping signals the
 * whole process group: SIGTERM, then SIGKILL after the timeout. A unit of
 * a sandbox that stops dies with it: its exec fails or its process is
 * killed, and the thread records STOPPED without restarting it.
 *
 * Restart policy (restart_on_failure): an exit with a non-zero status is
 * followed by a new start after 0.5, 1, 2, 4, ... up to 30 seconds; after
 * PE_UNIT_RESTART_MAX restarts in a row the unit is FAILED with the last
 * exit code. A run that lasted PE_UNIT_STABLE_S seconds resets the count.
 * A zero exit is STOPPED, never restarted. While it restarts after
 * failures and no run has lasted PE_UNIT_STABLE_S, it is in a crash loop
 * (pe_unit_state.crashloop), which views show with the last run's exit
 * code and last words: the tail of its stderr (of its stdout if it wrote
 * nothing there), kept apart from the ring so that chatter on stdout
 * never hides why it died. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "pause.h"
#include "sandbox-env.h"
#include "supervise.h"

#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_S 30

typedef struct unit {
    struct unit *next;
    pe_daemon *d;
    char *key;
    char *sandbox_id;
    char **argv;
    bool restart_on_failure;
    /* under mu */
    bool vouched; /* its caller saw the (remote) sandbox run: the first run
                   * need not wait for its record to say RUNNING */
    int state;
    int exit_code;
    int restarts;
    bool stop;
    bool thread_live;
    pid_t pgid; /* host pid of the running process (its group), 0 if none */
    pthread_t thread;
    pthread_cond_t cond;                   /* stop requested, thread ended */
    char *ring;                            /* PE_UNIT_LOG_MAX bytes */
    size_t head, len;                      /* ring[head..] holds the oldest of len bytes */
    bool cut;                              /* bytes were dropped from the front */
    unsigned long long written;            /* bytes ring_put has taken, ever */
    bool ended;                            /* a run ended since the last unit_start */
    bool waiting;                          /* in its backoff, before a restart */
    double run_started;                    /* monotonic start of the current run */
    char last_words[PE_UNIT_TAIL_MAX + 1]; /* of the last run that ended */
    /* Callers waiting in pe_daemon_unit_stop (they drop mu while they
     * wait on cond): a unit forgotten meanwhile is freed by the last of
     * them, never under their feet. */
    unsigned waiters;
    bool forgotten; /* out of the registry; freed when waiters reaches 0 */
} unit;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unit *units;
static bool detached; /* the daemon is exiting: start nothing more */

static unit *find(const char *key)
{
    for (unit *u = units; u; u = u->next)
        if (strcmp(u->key, key) == 0)
            return u;
    return NULL;
}

/* mu held. */
static void ring_put(unit *u, const char *data, size_t n)
{
    u->written += n;
    if (n >= PE_UNIT_LOG_MAX) {
        data += n - PE_UNIT_LOG_MAX;
        u->cut |= u->len > 0 || n > PE_UNIT_LOG_MAX;
        n = PE_UNIT_LOG_MAX;
        u->head = 0;
        u->len = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (u->len == PE_UNIT_LOG_MAX) {
            u->head = (u->head + 1) % PE_UNIT_LOG_MAX;
            u->len--;
            u->cut = true;
        }
        u->ring[(u->head + u->len) % PE_UNIT_LOG_MAX] = data[i];
        u->len++;
    }
}

static void note(unit *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(unit *u, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        ring_put(u, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* The environment of one start: the sandbox's, then the marker. */
static char **unit_env(unit *u, pe_err *err)
{
    pe_store *s = pe_daemon_store(u->d, err);
    char **env = NULL;
    size_t n = 0;

    if (s == NULL || pe_daemon_sandbox_env(u->d, s, u->sandbox_id, &env, err) < 0)
        return NULL;
    while (env[n])
        n++;
    env = pe_xrealloc(env, (n + 2) * sizeof(char *));
    env[n] = pe_xasprintf("POCKETENV_UNIT=%s", u->key);
    env[n + 1] = NULL;
    return env;
}

/* The newest PE_UNIT_TAIL_MAX bytes of one stream of a run. */
typedef struct tail {
    char b[PE_UNIT_TAIL_MAX];
    size_t len;
} tail;

static void tail_put(tail *t, const char *data, size_t n)
{
    if (n >= sizeof(t->b)) {
        memcpy(t->b, data + n - sizeof(t->b), sizeof(t->b));
        t->len = sizeof(t->b);
        return;
    }
    if (t->len + n > sizeof(t->b)) {
        size_t drop = t->len + n - sizeof(t->b);
        memmove(t->b, t->b + drop, t->len - drop);
        t->len -= drop;
    }
    memcpy(t->b + t->len, data, n);
    t->len += n;
}

/* mu held: the run's last words (stderr's, else stdout's) into u. */
static void keep_last_words(unit *u, const tail *t)
{
    const tail *w = t[1].len ? &t[1] : &t[0];

    memcpy(u->last_words, w->b, w->len);
    u->last_words[w->len] = '\0';
}

/* Read what fds (stdout, stderr; -1: closed) have, as pf[1..2] polled
 * them (all of it once the process ended), into the run's tails and u's
 * ring; an fd at its end becomes -1 (it stays open until its owner closes
 * it). */
static void drain(unit *u, int fds[2], const struct pollfd *pf, bool ended, tail t[2])
{
    char buf[8192];

    for (int i = 0; i < 2; i++) {
        ssize_t n;
        if (fds[i] < 0 || !(pf[i + 1].revents || ended))
            continue;
        while ((n = read(fds[i], buf, sizeof(buf))) > 0) {
            tail_put(&t[i], buf, (size_t)n);
            pthread_mutex_lock(&mu);
            ring_put(u, buf, (size_t)n);
            pthread_mutex_unlock(&mu);
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            fds[i] = -1;
    }
}

/* Pump output until the process ends; its exit code. */
static int run_once(unit *u, pe_proc *p)
{
    int fds[2] = {p->stdout_fd, p->stderr_fd}, code = -1;
    tail t[2] = {{.len = 0}, {.len = 0}};
    pe_err err;

    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    for (;;) {
        struct pollfd pf[3] = {{p->pidfd, POLLIN, 0}, {fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        bool ended;

        if (poll(pf, 3, -1) < 0 && errno != EINTR)
            break;
        ended = pf[0].revents & POLLIN;
        drain(u, fds, pf, ended, t);
        if (ended)
            break;
    }
    pe_err_clear(&err);
    if (pe_proc_wait(p, &code, &err) < 0)
        code = -1;
    pthread_mutex_lock(&mu);
    keep_last_words(u, t);
    pthread_mutex_unlock(&mu);
    return code;
}

/* ---- a unit of a remote sandbox ----
 *
 * Its provider runs the command as a streaming exec (pe_sandbox_exec_start:
 * the sandbox's environment, the marker) that this thread holds open for
 * the process's life, pumping its output into the ring as for a local one;
 * the process ending is status_fd. There is no process group to signal
 * from another thread: a stop sets u->stop and this thread, which owns the
 * stream, asks the provider to end the process (proc_kill), then kills it
 * (proc_kill_now) after PE_UNIT_STOP_TIMEOUT, and gives up on it 5 s later.
 * A stream that broke before an exit code counts as a failure (-1), so the
 * restart policy applies to a dropped connection too. */
#define REMOTE_POLL_MS 200
#define REMOTE_GIVE_UP_S 5.0

static int run_remote(unit *u, pe_provider_proc *pp)
{
    int fds[2] = {pp->stdout_fd, pp->stderr_fd}, code = -1;
    tail t[2] = {{.len = 0}, {.len = 0}};
    double kill_at = 0;
    bool killed_now = false;
    pe_err err;

    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            fcntl(fds[i], F_SETFL, O_NONBLOCK);
    for (;;) {
        struct pollfd pf[3] = {
            {pp->status_fd, POLLIN, 0}, {fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        bool ended, stop;

        if (poll(pf, 3, REMOTE_POLL_MS) < 0 && errno != EINTR)
            break;
        ended = pf[0].revents & (POLLIN | POLLHUP);
        drain(u, fds, pf, ended, t);
        if (ended)
            break;
        pthread_mutex_lock(&mu);
        stop = u->stop || detached;
        pthread_mutex_unlock(&mu);
        if (stop && kill_at == 0) {
            pe_provider_proc_kill(pp);
            kill_at = pe_monotonic_s() + PE_UNIT_STOP_TIMEOUT;
        } else if (stop && !killed_now && pe_monotonic_s() >= kill_at) {
            pe_provider_proc_kill_now(pp);
            killed_now = true;
        } else if (killed_now && pe_monotonic_s() >= kill_at + REMOTE_GIVE_UP_S) {
            code = 137; /* the provider never said it ended: proc_close cuts it */
            goto out;
        }
    }
    pe_err_clear(&err);
    if (pe_provider_proc_wait(pp, &code, &err) < 0) {
        code = -1;
        pthread_mutex_lock(&mu);
        note(u, "[pocketenv] %s\n", err.msg);
        pthread_mutex_unlock(&mu);
    }
out:
    pthread_mutex_lock(&mu);
    keep_last_words(u, t);
    pthread_mutex_unlock(&mu);
    return code;
}

/* start_and_wait of a unit whose sandbox sb runs on a provider. */
static bool start_remote(unit *u, pe_store *s, const pe_store_sandbox *sb, int *code)
{
    cleanup_free char *marker = pe_xasprintf("POCKETENV_UNIT=%s", u->key);
    char *env[] = {marker, NULL};
    pe_provider_exec_opts o = {.argv = u->argv, .env = env};
    pe_provider_proc pp;
    pe_err err;

    pe_err_clear(&err);
    if (pe_sandbox_exec_start(&u->d->sx, s, sb, &o, &pp, &err) < 0) {
        pthread_mutex_lock(&mu);
        u->state = PE_STORE_FAILED;
        u->exit_code = err.code == PE_ENOENT ? 127 : 126;
        note(u, "[pocketenv] cannot start %s: %s\n", u->argv[0], err.msg);
        pthread_mutex_unlock(&mu);
        return false;
    }
    if (pp.stdin_fd >= 0) {
        close(pp.stdin_fd);
        pp.stdin_fd = -1;
    }
    pthread_mutex_lock(&mu);
    u->state = PE_STORE_RUNNING;
    u->run_started = pe_monotonic_s();
    pthread_mutex_unlock(&mu);
    *code = run_remote(u, &pp);
    pe_provider_proc_close(&pp);
    return true;
}

/* The row of u's sandbox when a provider runs it: 1 (sb set), 0 local, -1
 * when it is gone or not running (u is STOPPED then). */
static int remote_sandbox(unit *u, pe_store **s, pe_store_sandbox *sb)
{
    bool vouched;
    pe_err err;

    pe_err_clear(&err);
    *s = pe_daemon_store(u->d, &err);
    if (*s == NULL || pe_store_sandbox_get(*s, u->sandbox_id, sb, &err) < 0)
        return 0; /* the local path reports what is wrong */
    if (!pe_sandbox_is_remote(sb)) {
        pe_store_sandbox_clear(sb);
        return 0;
    }
    pthread_mutex_lock(&mu);
    vouched = u->vouched;
    u->vouched = false; /* a restart goes by the record */
    pthread_mutex_unlock(&mu);
    if (sb->status == PE_STORE_RUNNING || vouched)
        return 1;
    pe_store_sandbox_clear(sb);
    pthread_mutex_lock(&mu);
    u->state = PE_STORE_STOPPED; /* the sandbox is not running */
    pthread_mutex_unlock(&mu);
    return -1;
}

/* One start; false if the unit is done (stopped, failed to start). */
static bool start_and_wait(unit *u, int *code)
{
    pe_proc_opts opts = {.argv = u->argv, .capture = true};
    pe_proc p;
    pe_err err;

    pe_err_clear(&err);
    pthread_mutex_lock(&mu);
    if (detached || u->stop) {
        u->state = PE_STORE_STOPPED;
        pthread_mutex_unlock(&mu);
        return false;
    }
    pthread_mutex_unlock(&mu);
    {
        pe_store *s = NULL;
        pe_store_sandbox sb;
        int r = remote_sandbox(u, &s, &sb);
        bool ran;
        if (r < 0)
            return false;
        if (r > 0 && pe_daemon_paused(u->sandbox_id)) {
            /* paused where it runs (a provider whose pause keeps no
             * processes ended it): no restart now, its resume starts it
             * again (pe_daemon_services_revive) */
            pe_store_sandbox_clear(&sb);
            pthread_mutex_lock(&mu);
            u->state = PE_STORE_STOPPED;
            note(u, "[pocketenv] the sandbox is paused: started again at its resume\n");
            pthread_mutex_unlock(&mu);
            return false;
        }
        if (r > 0) {
            ran = start_remote(u, s, &sb, code);
            pe_store_sandbox_clear(&sb);
            return ran;
        }
    }
    opts.env = unit_env(u, &err);
    if (opts.env == NULL || pe_runtime_exec_start(&u->d->rt, u->sandbox_id, &opts, &p, &err) < 0) {
        pe_daemon_env_free(opts.env);
        pthread_mutex_lock(&mu);
        if (err.code == PE_ESTATE) {
            u->state = PE_STORE_STOPPED; /* the sandbox is not running */
        } else {
            u->state = PE_STORE_FAILED;
            u->exit_code = err.errnum == ENOENT ? 127 : 126;
            note(u, "[pocketenv] cannot start %s: %s\n", u->argv[0], err.msg);
        }
        pthread_mutex_unlock(&mu);
        return false;
    }
    pe_daemon_env_free(opts.env);
    close(p.stdin_fd);
    p.stdin_fd = -1;
    pthread_mutex_lock(&mu);
    u->pgid = pe_proc_host_pid(&p);
    u->state = PE_STORE_RUNNING;
    u->run_started = pe_monotonic_s();
    if (u->stop && u->pgid > 0) /* stopped while it was starting */
        kill(-u->pgid, SIGTERM);
    pthread_mutex_unlock(&mu);
    *code = run_once(u, &p);
    pe_proc_close(&p);
    return true;
}

static void *unit_main(void *arg)
{
    unit *u = arg;

    for (;;) {
        double started = pe_monotonic_s();
        int code = -1, delay;
        bool ran = start_and_wait(u, &code);

        pthread_mutex_lock(&mu);
        u->pgid = 0;
        if (!ran)
            break;
        u->exit_code = code;
        u->ended = true;
        if (u->stop || detached || code == 0 || !u->restart_on_failure) {
            u->state = u->stop || code == 0 ? PE_STORE_STOPPED : PE_STORE_FAILED;
            if (u->stop)
                note(u, "[pocketenv] stopped\n");
            else
                note(u, "[pocketenv] exited with status %d\n", code);
            break;
        }
        if (pe_monotonic_s() - started >= PE_UNIT_STABLE_S)
            u->restarts = 0;
        if (u->restarts >= PE_UNIT_RESTART_MAX) {
            u->state = PE_STORE_FAILED;
            note(u, "[pocketenv] exited with status %d; %d restarts in a row: giving up\n", code,
                 u->restarts);
            break;
        }
        delay = BACKOFF_FIRST_MS << (u->restarts < 8 ? u->restarts : 8);
        delay = delay > BACKOFF_MAX_S * 1000 ? BACKOFF_MAX_S * 1000 : delay;
        u->restarts++;
        note(u, "[pocketenv] exited with status %d; restart %d in %.1f s\n", code, u->restarts,
             delay / 1000.0);
        {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += delay / 1000;
            until.tv_nsec += (long)(delay % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            u->waiting = true;
            while (!u->stop && pthread_cond_timedwait(&u->cond, &mu, &until) != ETIMEDOUT)
                ;
            u->waiting = false;
        }
        if (u->stop) {
            u->state = PE_STORE_STOPPED;
            break;
        }
        pthread_mutex_unlock(&mu);
    }
    u->thread_live = false;
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void unit_free(unit *u)
{
    for (char **a = u->argv; a && *a; a++)
        free(*a);
    free(u->argv);
    free(u->key);
    free(u->sandbox_id);
    free(u->ring);
    pthread_cond_destroy(&u->cond);
    free(u);
}

/* Wait (mu held) for u's thread to end, then join it. */
static void join_locked(unit *u, double timeout)
{
    double deadline = pe_monotonic_s() + timeout;
    bool killed = false;

    while (u->thread_live) {
        struct timespec until;
        double left = deadline - pe_monotonic_s();
        if (left <= 0 && !killed) {
            if (u->pgid > 0)
                kill(-u->pgid, SIGKILL);
            killed = true;
            deadline = pe_monotonic_s() + 10;
            continue;
        }
        if (left <= 0)
            break; /* a process that outlives SIGKILL: leave the thread */
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&u->cond, &mu, &until);
    }
    if (!u->thread_live && u->thread) {
        pthread_t t = u->thread;
        u->thread = 0;
        pthread_mutex_unlock(&mu);
        pthread_join(t, NULL);
        pthread_mutex_lock(&mu);
    }
}

static int unit_start(pe_daemon *d, const char *key, const char *sandbox_id, char *const *argv,
                      bool restart_on_failure, bool vouched, pe_err *err)
{
    pthread_condattr_t ca;
    size_t n = 0;
    unit *u;

    pthread_mutex_lock(&mu);
    u = find(key);
    if (u && u->thread_live) {
        pthread_mutex_unlock(&mu);
        return 0; /* running (or restarting): nothing to do */
    }
    if (u && u->thread) {
        /* Ended, not joined yet: taken out under the lock, so two starts
         * never join one thread. */
        pthread_t t = u->thread;
        u->thread = 0;
        u->waiters++;
        pthread_mutex_unlock(&mu);
        pthread_join(t, NULL);
        pthread_mutex_lock(&mu);
        u->waiters--;
        if (u->forgotten) { /* forgotten meanwhile: start afresh */
            if (u->waiters == 0)
                unit_free(u);
            u = find(key);
        }
        if (u && u->thread_live) { /* another start won meanwhile */
            pthread_mutex_unlock(&mu);
            return 0;
        }
    }
    if (u == NULL) {
        u = pe_xcalloc(1, sizeof(*u));
        u->d = d;
        u->key = pe_xstrdup(key);
        u->ring = pe_xmalloc(PE_UNIT_LOG_MAX);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&u->cond, &ca);
        pthread_condattr_destroy(&ca);
        u->next = units;
        units = u;
    }
    for (char **a = u->argv; a && *a; a++)
        free(*a);
    free(u->argv);
    free(u->sandbox_id);
    while (argv[n])
        n++;
    u->argv = pe_xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        u->argv[i] = pe_xstrdup(argv[i]);
    u->sandbox_id = pe_xstrdup(sandbox_id);
    u->restart_on_failure = restart_on_failure;
    u->vouched = vouched;
    u->stop = false;
    u->restarts = 0;
    u->exit_code = 0;
    u->ended = false;
    u->waiting = false;
    u->last_words[0] = '\0';
    u->run_started = pe_monotonic_s();
    u->state = PE_STORE_INITIALIZING;
    u->thread_live = true;
    if (pthread_create(&u->thread, NULL, unit_main, u) != 0) {
        u->thread_live = false;
        u->thread = 0;
        u->state = PE_STORE_FAILED;
        pthread_mutex_unlock(&mu);
        return pe_err_set(err, PE_ESYS, errno, "start a supervisor thread");
    }
    pthread_mutex_unlock(&mu);
    return 0;
}

int pe_daemon_unit_start(pe_daemon *d, const char *key, const char *sandbox_id, char *const *argv,
                         bool restart_on_failure, pe_err *err)
{
    return unit_start(d, key, sandbox_id, argv, restart_on_failure, false, err);
}

int pe_daemon_unit_start_starting(void *d, const char *key, const char *sandbox_id,
                                  char *const *argv, pe_err *err)
{
    return unit_start(d, key, sandbox_id, argv, true, true, err);
}

int pe_daemon_unit_stop(const char *key, double timeout)
{
    unit *u;

    pthread_mutex_lock(&mu);
    u = find(key);
    if (u == NULL) {
        pthread_mutex_unlock(&mu);
        return -1;
    }
    u->stop = true;
    pthread_cond_broadcast(&u->cond);
    if (u->pgid > 0)
        kill(-u->pgid, SIGTERM);
    u->waiters++;
    join_locked(u, timeout);
    if (--u->waiters > 0 || !u->forgotten)
        u = NULL;
    pthread_mutex_unlock(&mu);
    if (u)
        unit_free(u); /* forgotten while this call waited */
    return 0;
}

void pe_daemon_unit_forget(const char *key)
{
    unit **pp, *u = NULL;

    pe_daemon_unit_stop(key, PE_UNIT_STOP_TIMEOUT);
    pthread_mutex_lock(&mu);
    for (pp = &units; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0 && !(*pp)->thread_live) {
            u = *pp;
            *pp = u->next;
            break;
        }
    }
    if (u && u->waiters > 0) { /* another stop still waits on it: it frees */
        u->forgotten = true;
        u = NULL;
    }
    pthread_mutex_unlock(&mu);
    if (u)
        unit_free(u);
}

void pe_daemon_unit_stop_sandbox(const char *sandbox_id)
{
    for (;;) {
        char *key = NULL;

        pthread_mutex_lock(&mu);
        for (unit *u = units; u && key == NULL; u = u->next)
            if (strcmp(u->sandbox_id, sandbox_id) == 0 && u->thread_live && !u->stop)
                key = pe_xstrdup(u->key);
        pthread_mutex_unlock(&mu);
        if (key == NULL)
            return;
        pe_daemon_unit_stop(key, PE_UNIT_STOP_TIMEOUT);
        free(key);
    }
}

void pe_daemon_unit_forget_sandbox(const char *sandbox_id)
{
    char **keys = NULL;
    size_t n = 0;

    /* The keys first, then each forgotten once: a unit whose process
     * outlives SIGKILL stays registered rather than being spun on. */
    pthread_mutex_lock(&mu);
    for (unit *u = units; u; u = u->next) {
        if (strcmp(u->sandbox_id, sandbox_id) != 0)
            continue;
        keys = pe_xrealloc(keys, (n + 1) * sizeof(char *));
        keys[n++] = pe_xstrdup(u->key);
    }
    pthread_mutex_unlock(&mu);
    for (size_t i = 0; i < n; i++) {
        pe_daemon_unit_forget(keys[i]);
        free(keys[i]);
    }
    free(keys);
}

bool pe_daemon_unit_state(const char *key, pe_unit_state *out)
{
    unit *u;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&mu);
    u = find(key);
    if (u) {
        out->state = u->state == PE_STORE_INITIALIZING ? PE_STORE_RUNNING : u->state;
        out->exit_code = u->exit_code;
        out->restarts = u->restarts;
        out->live = u->thread_live;
        out->ended = u->ended;
        out->crashloop = u->thread_live && !u->stop && u->restarts > 0 &&
                         (u->waiting || pe_monotonic_s() - u->run_started < PE_UNIT_STABLE_S);
        memcpy(out->last_words, u->last_words, sizeof(out->last_words));
    }
    pthread_mutex_unlock(&mu);
    return u != NULL;
}

char *pe_daemon_unit_logs(const char *key, size_t *len, bool *cut, unsigned long long *written)
{
    char *out = NULL;
    unit *u;

    *len = 0;
    *cut = false;
    *written = 0;
    pthread_mutex_lock(&mu);
    u = find(key);
    if (u) {
        out = pe_xmalloc(u->len + 1);
        for (size_t i = 0; i < u->len; i++)
            out[i] = u->ring[(u->head + i) % PE_UNIT_LOG_MAX];
        out[u->len] = '\0';
        *len = u->len;
        *cut = u->cut;
        *written = u->written;
    }
    pthread_mutex_unlock(&mu);
    return out;
}

/* ---- leftovers of an earlier daemon ---- */

static bool same_ns(pid_t a, pid_t b)
{
    char pa[64], pb[64];
    struct stat sa, sb;

    snprintf(pa, sizeof(pa), "/proc/%d/ns/pid", (int)a);
    snprintf(pb, sizeof(pb), "/proc/%d/ns/pid", (int)b);
    return stat(pa, &sa) == 0 && stat(pb, &sb) == 0 && sa.st_ino == sb.st_ino &&
           sa.st_dev == sb.st_dev;
}

/* Does /proc/<pid>/environ hold POCKETENV_UNIT=<anything>? */
static bool marked(pid_t pid)
{
    static const char marker[] = "POCKETENV_UNIT=";
    char path[64], buf[65536];
    ssize_t n, off = 0;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    while (off < (ssize_t)sizeof(buf) - 1 &&
           (n = read(fd, buf + off, sizeof(buf) - 1 - (size_t)off)) > 0)
        off += n;
    close(fd);
    for (ssize_t i = 0; i < off; i += (ssize_t)strlen(buf + i) + 1) {
        buf[off] = '\0';
        if (strncmp(buf + i, marker, sizeof(marker) - 1) == 0)
            return true;
    }
    return false;
}

int pe_daemon_unit_kill_leftovers(pid_t init_pid)
{
    DIR *dir = opendir("/proc");
    struct dirent *e;
    int killed = 0;

    if (dir == NULL)
        return 0;
    while ((e = readdir(dir)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == init_pid)
            continue;
        /* Only that sandbox's processes: its pid namespace is the init's. */
        if (same_ns((pid_t)pid, init_pid) && marked((pid_t)pid) && kill((pid_t)pid, SIGKILL) == 0)
            killed++;
    }
    closedir(dir);
    return killed;
}

void pe_daemon_units_detach(void)
{
    pthread_mutex_lock(&mu);
    detached = true;
    pthread_mutex_unlock(&mu);
}
