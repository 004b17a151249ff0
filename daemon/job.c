/* Jobs: a request's blocking work on the worker pool, answered from the
 * loop thread when it is done (docs/design/daemon.md).
 *
 * Threading: pe_daemon_job_new/submit and everything they call back after
 * the work run on the loop thread; job->work runs on a pool thread and
 * touches only the job, its thread's store and the (thread-safe) auth and
 * runtime. d->inflight counts submitted jobs so that a draining daemon
 * stops only once every request it accepted has its answer. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
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

    pe_err_clear(&job->err);
    s = pe_daemon_store(job->d, &job->err);
    if (s == NULL) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    job->work(job, s);
}

static void job_done(void *ud)
{
    pe_daemon_job *job = ud;
    pe_daemon *d = job->d;

    if (job->init_pidfd >= 0)
        pe_daemon_watch_init(d, pe_steal_fd(&job->init_pidfd));
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
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
}

int pe_daemon_submit(pe_daemon *d, pe_xrpc_request *req, const char *did, pe_daemon_work_fn work,
                     const char *id, json_t *in)
{
    pe_daemon_job *job = pe_daemon_job_new(d, req, did, work);

    job->id = id ? pe_xstrdup(id) : NULL;
    job->in = in;
    return pe_daemon_job_submit(job);
}

int pe_daemon_job_submit(pe_daemon_job *job)
{
    pe_daemon *d = job->d;
    pe_err err;

    pe_err_clear(&err);
    if (d->draining)
        pe_err_set(&err, PE_XRPC_EBUSY, 0, "the daemon is shutting down");
    else if (pe_ev_submit(d->loop, job_work, job_done, job, &err) == 0) {
        if (job->req)
            pe_http_response_defer(job->req);
        d->inflight++;
        return 0;
    } else
        err.code = PE_XRPC_EBUSY;
    if (job->req)
        pe_xrpc_respond_err(job->req, &err);
    else
        pe_log_warn("background job dropped: %s", err.msg);
    job_free(job);
    return -1;
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
