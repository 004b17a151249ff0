/* Jobs: a request's blocking work on a worker pool, answered from the
 * loop thread when it is done (docs/design/daemon.md).
 *
 * Two pools. Short jobs (store queries, lookups) run on the loop's own
 * pool, a few threads that are never held for long. Long and lifecycle
 * jobs (execs, clones, backups, copies; creates, starts, stops, deletes)
 * can take seconds to minutes, mostly waiting for a process: they run on a
 * pool of their own whose threads start as work arrives, up to
 * lim.long_jobs, so that a user's execs never sit in front of anyone's
 * getSandbox. Within it each user has a lane per kind: lim.user_jobs jobs
 * of the lane run at once, lim.user_queue more wait in the lane (in
 * order), and beyond that the request is refused with 429. When a long job
 * ends, the next to run is taken from the waiting lane with the fewest
 * running jobs (the lane then moves to the back), so a user's calls only
 * ever wait behind that user's own jobs unless the whole pool is busy, and
 * then they get the first thread that frees up. Jobs without a user (the
 * tick, creates resumed at start) share one lane that is never refused.
 *
 * Threading: pe_daemon_job_new/submit, the lanes and everything called
 * back after the work run on the loop thread; job->work runs on a pool
 * thread and touches only the job, its thread's store and the (thread-
 * safe) auth and runtime. d->inflight counts accepted jobs, waiting ones
 * included, so that a draining daemon stops only once every request it
 * accepted has its answer. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/utf8.h"
#include "core/util.h"
#include "daemon.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static pthread_key_t store_key;
static pthread_once_t store_once = PTHREAD_ONCE_INIT;

static void store_close(void *p)
{
    pe_store_close(p);
}

static void store_key_init(void)
{
    if (pthread_key_create(&store_key, store_close) != 0)
        abort();
}

pe_store *pe_daemon_store(pe_daemon *d, pe_err *err)
{
    pe_store *s;

    pthread_once(&store_once, store_key_init);
    s = pthread_getspecific(store_key);
    if (s != NULL)
        return s;
    s = pe_store_open(d->store_url, err);
    if (s == NULL)
        return NULL;
    pthread_setspecific(store_key, s);
    return s;
}

pe_daemon_job *pe_daemon_job_new(pe_daemon *d, pe_xrpc_request *req, const char *did,
                                 pe_daemon_work_fn work)
{
    pe_daemon_job *job = pe_xcalloc(1, sizeof(*job));

    job->d = d;
    job->req = req;
    job->work = work;
    job->did = did ? pe_xstrdup(did) : NULL;
    job->init_pidfd = -1;
    return job;
}

/* ---- lanes: each user's long jobs ---- */

#define LONG_IDLE_NS (30ull * 1000000000ull) /* a long-pool thread idle this long exits */

struct pe_daemon_lane {
    char *did; /* "" for jobs without a user */
    int kind;  /* PE_JOB_LONG or PE_JOB_LIFECYCLE */
    unsigned running, waiting;
    pe_daemon_job *head, *tail; /* waiting, oldest first */
    struct pe_daemon_lane *next;
};

static struct pe_daemon_lane *lane_get(pe_daemon *d, const char *did, int kind)
{
    struct pe_daemon_lane *l, **tail = &d->lanes;

    for (l = d->lanes; l; l = l->next) {
        if (l->kind == kind && strcmp(l->did, did) == 0)
            return l;
        tail = &l->next;
    }
    l = pe_xcalloc(1, sizeof(*l));
    l->did = pe_xstrdup(did);
    l->kind = kind;
    *tail = l;
    return l;
}

static void lane_put(pe_daemon *d, struct pe_daemon_lane *l)
{
    struct pe_daemon_lane **pp;

    if (l->running || l->waiting)
        return;
    for (pp = &d->lanes; *pp != l; pp = &(*pp)->next)
        ;
    *pp = l->next;
    free(l->did);
    free(l);
}

static bool is_system(const struct pe_daemon_lane *l)
{
    return l->did[0] == '\0';
}

static bool lane_may_run(const pe_daemon *d, const struct pe_daemon_lane *l)
{
    return is_system(l) || l->running < d->lim.user_jobs;
}

static void job_work(void *ud);
static void job_done(void *ud);

/* Hand job to the long pool (counted first: from the submit on, the job
 * belongs to its thread until its done callback). */
static int long_start(pe_daemon *d, pe_daemon_job *job, pe_err *err)
{
    job->started = true;
    job->lane->running++;
    d->long_running++;
    if (pe_ev_pool_submit(d->long_pool, job_work, job_done, job, err) == 0)
        return 0;
    job->started = false;
    job->lane->running--;
    d->long_running--;
    err->code = PE_XRPC_EBUSY;
    return -1;
}

static int refuse_lane(pe_daemon *d, const struct pe_daemon_lane *l, pe_err *err)
{
    if (l->running < d->lim.user_jobs) /* not the user's doing: the whole pool is busy */
        return pe_err_set(err, PE_XRPC_EBUSY, 0,
                          "the daemon runs as many long jobs as it allows (--long-jobs %u) and "
                          "%u of yours wait already: try again shortly",
                          d->lim.long_jobs, l->waiting);
    return pe_err_set(err, PE_XRPC_ERATE, 0,
                      "you have %u running and %u waiting %s, the most this daemon allows one "
                      "user (--user-jobs %u, --user-queue %u): wait for one to finish, then try "
                      "again",
                      l->running, l->waiting,
                      l->kind == PE_JOB_LIFECYCLE
                          ? "sandbox starts, stops and deletes"
                          : "long jobs (execs, clones, backups, restores, copies)",
                      d->lim.user_jobs, d->lim.user_queue);
}

/* Run job now, or keep it waiting in its lane, or refuse it (-1, err). */
static int long_admit(pe_daemon *d, pe_daemon_job *job, pe_err *err)
{
    struct pe_daemon_lane *l = lane_get(d, job->did ? job->did : "", job->kind);

    job->lane = l;
    if (lane_may_run(d, l) && l->waiting == 0 && d->long_running < d->lim.long_jobs) {
        if (long_start(d, job, err) == 0)
            return 0;
    } else if (job->background || is_system(l) || l->waiting < d->lim.user_queue) {
        if (l->tail)
            l->tail->next_waiting = job;
        else
            l->head = job;
        l->tail = job;
        l->waiting++;
        d->long_waiting++;
        return 0;
    } else {
        refuse_lane(d, l, err);
    }
    job->lane = NULL;
    lane_put(d, l);
    return -1;
}

static pe_daemon_job *lane_pop(pe_daemon *d, struct pe_daemon_lane *l)
{
    pe_daemon_job *job = l->head;

    l->head = job->next_waiting;
    if (l->head == NULL)
        l->tail = NULL;
    job->next_waiting = NULL;
    l->waiting--;
    d->long_waiting--;
    return job;
}

/* The waiting lane that gets the next thread: fewest running first; among
 * equals the first in the list, which then goes to the back. */
static struct pe_daemon_lane *next_lane(pe_daemon *d)
{
    struct pe_daemon_lane *best = NULL, **pp, *l;

    for (l = d->lanes; l; l = l->next)
        if (l->waiting && lane_may_run(d, l) && (best == NULL || l->running < best->running))
            best = l;
    if (best == NULL || best->next == NULL)
        return best;
    for (pp = &d->lanes; *pp != best; pp = &(*pp)->next)
        ;
    *pp = best->next;
    for (l = best->next; l->next; l = l->next)
        ;
    l->next = best;
    best->next = NULL;
    return best;
}

static void job_finish(pe_daemon_job *job);

/* Start waiting jobs while the pool has room. */
static void long_dispatch(pe_daemon *d)
{
    struct pe_daemon_lane *l;
    pe_err err;

    while (!d->draining && d->long_running < d->lim.long_jobs && (l = next_lane(d)) != NULL) {
        pe_daemon_job *job = lane_pop(d, l);

        pe_err_clear(&err);
        if (long_start(d, job, &err) < 0) {
            pe_daemon_job_fail(job, &err, NULL);
            job_finish(job);
        }
    }
}

void pe_daemon_jobs_drain(pe_daemon *d)
{
    pe_err err;

    pe_daemon_job *all = NULL, **tail = &all;

    pe_err_clear(&err);
    pe_err_set(&err, PE_XRPC_EBUSY, 0, "the daemon is shutting down");
    /* Taken out first: finishing a job may free its emptied lane. */
    for (struct pe_daemon_lane *l = d->lanes; l; l = l->next) {
        while (l->waiting) {
            *tail = lane_pop(d, l);
            tail = &(*tail)->next_waiting;
        }
    }
    while (all) {
        pe_daemon_job *job = all;

        all = job->next_waiting;
        job->next_waiting = NULL;
        pe_daemon_job_fail(job, &err, NULL);
        job_finish(job);
    }
}

int pe_daemon_jobs_init(pe_daemon *d, pe_err *err)
{
    /* Queue room as large as the pool: a job handed over just as a thread
     * finishes may wait a moment for it, never be refused. */
    d->long_pool = pe_ev_pool_new(d->loop, d->lim.long_jobs, d->lim.long_jobs, LONG_IDLE_NS, err);
    return d->long_pool ? 0 : -1;
}

void pe_daemon_jobs_metrics(pe_daemon *d, FILE *out)
{
    pe_ev_pool_stats st;

    pe_ev_pool_stats_get(d->long_pool, &st);
    fprintf(out,
            "# HELP pocketenv_long_jobs Long jobs (execs, clones, backups, copies, starts, "
            "stops) by state.\n"
            "# TYPE pocketenv_long_jobs gauge\n"
            "pocketenv_long_jobs{state=\"running\"} %u\n"
            "pocketenv_long_jobs{state=\"queued\"} %u\n"
            "# HELP pocketenv_long_threads Threads of the long-job pool.\n"
            "# TYPE pocketenv_long_threads gauge\n"
            "pocketenv_long_threads %u\n",
            d->long_running, d->long_waiting, st.threads);
}

static void job_free(pe_daemon_job *job)
{
    if (job->init_pidfd >= 0)
        close(job->init_pidfd);
    json_decref(job->in);
    json_decref(job->out);
    free(job->did);
    free(job->id);
    free(job);
}

int pe_daemon_job_fail(pe_daemon_job *job, const pe_err *err, const char *name)
{
    if (&job->err != err)
        job->err = *err;
    job->failed = true;
    job->err_name = name;
    return -1;
}

static void job_work(void *ud)
{
    pe_daemon_job *job = ud;
    pe_store *s;

    job->ran_ns = pe_monotonic_ns();
    pe_err_clear(&job->err);
    s = pe_daemon_store(job->d, &job->err);
    if (s == NULL) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    job->work(job, s);
}

/* An error message is JSON text in the answer: it must be UTF-8, but it
 * may quote bytes (a file name of a sandbox) or have been cut inside a
 * character when context was added. Invalid bytes become U+FFFD, and the
 * result is cut between characters to fit. */
static void err_make_text(pe_err *e)
{
    char text[sizeof(e->msg) * 3];
    size_t used, n = strnlen(e->msg, sizeof(e->msg));

    n = pe_utf8_sanitize((const unsigned char *)e->msg, n, true, text, &used);
    if (n >= sizeof(e->msg))
        for (n = sizeof(e->msg) - 1; ((unsigned char)text[n] & 0xc0) == 0x80; n--)
            ;
    memcpy(e->msg, text, n);
    e->msg[n] = '\0';
}

/* A lifecycle job (create, start, stop, delete) this slow is logged with
 * where its time went, its lane or its work: every client waits on these,
 * most with a timeout of their own (30 s for our tests' and SDKs'). */
#define SLOW_LIFECYCLE_MS 2000

static void log_if_slow(const pe_daemon_job *job)
{
    uint64_t now = pe_monotonic_ns(), ran = job->ran_ns ? job->ran_ns : now;
    long long waited = (long long)((ran - job->queued_ns) / 1000000u);
    long long worked = (long long)((now - ran) / 1000000u);

    if (job->kind == PE_JOB_LIFECYCLE && job->queued_ns && waited + worked >= SLOW_LIFECYCLE_MS)
        pe_log_info("slow lifecycle job for %s: waited %lld ms for a thread, ran %lld ms%s",
                    job->id ? job->id : "(new sandbox)", waited, worked,
                    job->failed ? " and failed" : "");
}

/* The job is over (done, or never started): answer, chain, free. */
static void job_finish(pe_daemon_job *job)
{
    pe_daemon *d = job->d;
    struct pe_daemon_lane *l = job->lane;

    log_if_slow(job);
    if (l && job->started) {
        l->running--;
        d->long_running--;
    }
    if (job->init_pidfd >= 0)
        pe_daemon_watch_init(d, pe_steal_fd(&job->init_pidfd));
    if (job->err.code != PE_OK)
        err_make_text(&job->err);
    if (job->req != NULL) {
        if (job->failed)
            pe_xrpc_respond_err_named(job->req, &job->err, job->err_name);
        else
            pe_xrpc_respond(job->req, pe_steal_ptr(&job->out));
        job->req = NULL;
    } else if (job->failed) {
        pe_log_warn("background job: %s", job->err.msg);
    }
    if (job->after)
        job->after(job);
    job_free(job);
    if (l) {
        lane_put(d, l);
        long_dispatch(d);
    }
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
}

static void job_done(void *ud)
{
    job_finish(ud);
}

int pe_daemon_submit_kind(pe_daemon *d, pe_xrpc_request *req, const char *did,
                          pe_daemon_work_fn work, const char *id, json_t *in, int kind)
{
    pe_daemon_job *job = pe_daemon_job_new(d, req, did, work);

    job->id = id ? pe_xstrdup(id) : NULL;
    job->in = in;
    job->kind = kind;
    return pe_daemon_job_submit(job);
}

int pe_daemon_submit(pe_daemon *d, pe_xrpc_request *req, const char *did, pe_daemon_work_fn work,
                     const char *id, json_t *in)
{
    return pe_daemon_submit_kind(d, req, did, work, id, in, PE_JOB_SHORT);
}

int pe_daemon_job_submit_why(pe_daemon_job *job, pe_err *why)
{
    pe_daemon *d = job->d;
    pe_err err;
    int r;

    pe_err_clear(&err);
    job->queued_ns = pe_monotonic_ns();
    if (d->draining) {
        r = pe_err_set(&err, PE_XRPC_EBUSY, 0, "the daemon is shutting down");
    } else if (job->kind == PE_JOB_SHORT) {
        r = pe_ev_submit(d->loop, job_work, job_done, job, &err);
        if (r < 0)
            err.code = PE_XRPC_EBUSY;
    } else {
        r = long_admit(d, job, &err);
    }
    if (r == 0) {
        if (job->req)
            pe_http_response_defer(job->req);
        d->inflight++;
        return 0;
    }
    if (job->req)
        pe_xrpc_respond_err(job->req, &err);
    else if (why == NULL)
        pe_log_warn("background job dropped: %s", err.msg);
    if (why)
        *why = err;
    job_free(job);
    return -1;
}

int pe_daemon_job_submit(pe_daemon_job *job)
{
    return pe_daemon_job_submit_why(job, NULL);
}

/* ---- reaping sandbox inits ----
 *
 * pe_runtime_start clones a sandbox's init from the calling process, so in
 * the daemon every init started by us is our child and would stay a zombie
 * after it exits. Each one's pidfd is watched; when it turns readable the
 * init has exited and waitid(P_PIDFD) reaps exactly it, never an exec
 * helper that a worker is waiting for with waitpid. */
struct init_watch {
    pe_ev_io *io;
    int pidfd;
    pe_daemon *d;
    struct init_watch *next, *prev; /* d->watches: freed at shutdown */
};

static void watch_free(pe_daemon *d, struct init_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        d->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pe_ev_io_stop(w->io);
    close(w->pidfd);
    free(w);
}

static void on_init_exit(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    struct init_watch *w = ud;
    siginfo_t si;

    memset(&si, 0, sizeof(si));
    /* ECHILD: not our child (adopted from an earlier daemon); nothing to reap. */
    if (waitid((idtype_t)P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG) == 0 && si.si_pid == 0)
        return; /* not exited yet: spurious wakeup */
    watch_free(w->d, w);
}

void pe_daemon_watch_init(pe_daemon *d, int pidfd)
{
    struct init_watch *w = pe_xcalloc(1, sizeof(*w));
    pe_err err;

    w->pidfd = pidfd;
    w->d = d;
    w->io = pe_ev_io_start(d->loop, pidfd, EPOLLIN, on_init_exit, w, &err);
    if (w->io == NULL) {
        pe_log_warn("watch sandbox init: %s", err.msg);
        close(pidfd);
        free(w);
        return;
    }
    w->next = d->watches;
    if (w->next)
        w->next->prev = w;
    d->watches = w;
}

/* Shutdown: sandboxes outlive the daemon (the next one adopts them), so
 * their inits are simply no longer watched. */
void pe_daemon_watch_free_all(pe_daemon *d)
{
    while (d->watches)
        watch_free(d, d->watches);
}

void pe_daemon_set_time(json_t *o, const char *key, int64_t ms)
{
    if (ms > 0)
        json_object_set_new(o, key, pe_daemon_time_json(ms));
}

void pe_daemon_set_str(json_t *o, const char *key, const char *s)
{
    if (s != NULL)
        json_object_set_new(o, key, json_string(s));
}

json_t *pe_daemon_time_json(int64_t ms)
{
    char buf[40];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0)
        return json_null();
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + 19, sizeof(buf) - 19, ".%03dZ", (int)(ms % 1000));
    return json_string(buf);
}
