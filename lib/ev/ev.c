/* The event loop: epoll over fds, timerfds, signalfds and one eventfd that
 * the worker pool (and pe_ev_post) write to when a completion is ready.
 *
 * Every watcher is a struct with a common head registered in epoll with
 * its address as data.ptr. Stopping removes it from epoll and from the
 * list of live watchers at once and marks it dead; dead watchers are freed
 * at the end of the dispatch round, because the round's event array may
 * still point at them. The end of a round touches the dead ones only: a
 * daemon holds a watcher per running sandbox (its init's pidfd), and a walk
 * of them all at every round cost each request more as sandboxes grew.
 *
 * Pools: the loop's own (pe_ev_submit) and any made with pe_ev_pool_new.
 * Each has a bounded FIFO of pending items (its mutex + condvar) and
 * threads started as items arrive: one more whenever more items wait than
 * threads are free to take them, up to the pool's maximum. A thread idle for the pool's
 * idle time exits; it cannot join itself, so it leaves its handle in the
 * pool's graveyard and joins the handles left there before it (a pool never
 * holds more unjoined threads than it ever ran at once); freeing the loop
 * joins the rest. Completions go to the loop's list (its own mutex); the
 * eventfd wakes the loop, which runs the done callbacks in completion
 * order. Threads block all signals so signalfds see them. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "pocketenv/ev.h"
#include "core/util.h"

enum watcher_kind { W_IO, W_TIMER, W_SIGNAL, W_WAKE };

struct watcher {
    int kind;
    int fd;
    bool dead;
    pe_ev_loop *loop;
    /* live: the loop's watchers (pprev: the pointer to this one); dead: the
     * loop's dead list, to be freed at the end of the round */
    struct watcher *next, **pprev;
};

struct pe_ev_io {
    struct watcher w;
    pe_ev_io_cb cb;
    void *ud;
};

struct pe_ev_timer {
    struct watcher w;
    pe_ev_timer_cb cb;
    void *ud;
};

struct pe_ev_signal {
    struct watcher w;
    int signo;
    pe_ev_signal_cb cb;
    void *ud;
};

struct work {
    pe_ev_work_cb work;
    pe_ev_done_cb done;
    void *ud;
    struct work *next;
};

struct grave {
    pthread_t thread;
    struct grave *next;
};

struct pe_ev_pool {
    pe_ev_loop *loop;
    pthread_mutex_t mu;     /* guards everything below */
    pthread_cond_t cv;      /* an item waits, or quit */
    pthread_cond_t gone_cv; /* a thread exited */
    struct work *queue_head, *queue_tail;
    unsigned queued, max_queued;
    unsigned live, busy, max_threads;
    uint64_t idle_ns;   /* 0: threads stay */
    bool quit;          /* pe_ev_loop_free: drain the queue and exit */
    struct grave *dead; /* exited threads not joined yet */
    struct pe_ev_pool *next;
};

struct pe_ev_loop {
    int epfd;
    bool stop;
    struct watcher *watchers; /* live */
    struct watcher *dead;     /* stopped this round */
    struct watcher wake;      /* eventfd: completions and pe_ev_stop */
    pe_ev_pool *pool;         /* its own (pe_ev_submit) */
    pe_ev_pool *pools;        /* every pool, its own included (loop thread) */

    pthread_mutex_t mu; /* guards everything below */
    struct work *done_head, *done_tail;
    bool quit; /* pe_ev_stop was called */
};

static void pool_free(pe_ev_pool *pool);

uint64_t pe_ev_now_ns(void)
{
    return pe_monotonic_ns();
}

static int watch(pe_ev_loop *loop, struct watcher *w, int kind, int fd, uint32_t events,
                 pe_err *err)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};

    w->kind = kind;
    w->fd = fd;
    w->loop = loop;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return pe_err_sys(err, "epoll_ctl add fd %d", fd);
    if (w != &loop->wake) {
        w->next = loop->watchers;
        if (w->next)
            w->next->pprev = &w->next;
        w->pprev = &loop->watchers;
        loop->watchers = w;
    }
    return 0;
}

static void unwatch(struct watcher *w)
{
    if (w == NULL || w->dead)
        return;
    epoll_ctl(w->loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->dead = true;
    *w->pprev = w->next;
    if (w->next)
        w->next->pprev = w->pprev;
    w->next = w->loop->dead;
    w->loop->dead = w;
}

pe_ev_loop *pe_ev_loop_new(unsigned workers, unsigned max_queued, pe_err *err)
{
    pe_ev_loop *loop = pe_xcalloc(1, sizeof(*loop));
    int efd = -1;

    pthread_mutex_init(&loop->mu, NULL);
    loop->pool =
        pe_ev_pool_new(loop, workers ? workers : 4, max_queued ? max_queued : 1024, 0, NULL);
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        pe_err_sys(err, "epoll_create1");
        goto fail;
    }
    efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        pe_err_sys(err, "eventfd");
        goto fail;
    }
    if (watch(loop, &loop->wake, W_WAKE, efd, EPOLLIN, err) < 0)
        goto fail;
    return loop;
fail:
    if (efd >= 0)
        close(efd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    pool_free(loop->pool);
    pthread_mutex_destroy(&loop->mu);
    free(loop);
    return NULL;
}

static void wake(pe_ev_loop *loop)
{
    uint64_t one = 1;
    ssize_t n = write(loop->wake.fd, &one, sizeof(one));
    (void)n; /* EAGAIN means the counter is already non-zero: awake anyway */
}

static void free_watcher(struct watcher *w)
{
    if (w->kind != W_IO)
        close(w->fd); /* timers and signals own their fd; io watchers do not */
    free(w);
}

static void reap_dead(pe_ev_loop *loop)
{
    struct watcher *w;

    while ((w = loop->dead)) {
        loop->dead = w->next;
        free_watcher(w);
    }
}

static void run_completions(pe_ev_loop *loop)
{
    uint64_t v;
    struct work *list;

    if (read(loop->wake.fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return;
    pthread_mutex_lock(&loop->mu);
    list = loop->done_head;
    loop->done_head = loop->done_tail = NULL;
    pthread_mutex_unlock(&loop->mu);
    while (list) {
        struct work *next = list->next;
        if (list->done)
            list->done(list->ud);
        free(list);
        list = next;
    }
}

static void dispatch(struct watcher *w, uint32_t events)
{
    uint64_t ticks;
    struct signalfd_siginfo si;

    if (w->dead)
        return;
    switch (w->kind) {
    case W_IO: {
        pe_ev_io *io = (pe_ev_io *)w;
        io->cb(io, w->fd, events, io->ud);
        break;
    }
    case W_TIMER: {
        pe_ev_timer *t = (pe_ev_timer *)w;
        if (read(w->fd, &ticks, sizeof(ticks)) != sizeof(ticks))
            return; /* re-armed or disarmed since the event: nothing to deliver */
        t->cb(t, t->ud);
        break;
    }
    case W_SIGNAL: {
        pe_ev_signal *s = (pe_ev_signal *)w;
        while (!w->dead && read(w->fd, &si, sizeof(si)) == sizeof(si))
            s->cb(s, (int)si.ssi_signo, s->ud);
        break;
    }
    case W_WAKE:
        run_completions(w->loop);
        break;
    }
}

int pe_ev_run(pe_ev_loop *loop, pe_err *err)
{
    struct epoll_event evs[64];

    loop->stop = false;
    while (!loop->stop) {
        int n = epoll_wait(loop->epfd, evs, (int)PE_ARRAY_LEN(evs), -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return pe_err_sys(err, "epoll_wait");
        }
        for (int i = 0; i < n; i++)
            dispatch(evs[i].data.ptr, evs[i].events);
        reap_dead(loop);
        pthread_mutex_lock(&loop->mu);
        if (loop->quit)
            loop->stop = true;
        pthread_mutex_unlock(&loop->mu);
    }
    pthread_mutex_lock(&loop->mu);
    loop->quit = false;
    pthread_mutex_unlock(&loop->mu);
    return 0;
}

void pe_ev_stop(pe_ev_loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    loop->quit = true;
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
}

pe_ev_io *pe_ev_io_start(pe_ev_loop *loop, int fd, uint32_t events, pe_ev_io_cb cb, void *ud,
                         pe_err *err)
{
    pe_ev_io *io = pe_xcalloc(1, sizeof(*io));

    io->cb = cb;
    io->ud = ud;
    if (watch(loop, &io->w, W_IO, fd, events, err) < 0) {
        free(io);
        return NULL;
    }
    return io;
}

int pe_ev_io_modify(pe_ev_io *io, uint32_t events, pe_err *err)
{
    struct epoll_event ev = {.events = events, .data.ptr = &io->w};

    if (epoll_ctl(io->w.loop->epfd, EPOLL_CTL_MOD, io->w.fd, &ev) < 0)
        return pe_err_sys(err, "epoll_ctl mod fd %d", io->w.fd);
    return 0;
}

void pe_ev_io_stop(pe_ev_io *io)
{
    if (io)
        unwatch(&io->w);
}

static void ns_to_ts(uint64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / 1000000000ull);
    ts->tv_nsec = (long)(ns % 1000000000ull);
}

int pe_ev_timer_set(pe_ev_timer *t, uint64_t first_ns, uint64_t interval_ns, pe_err *err)
{
    struct itimerspec its = {0};

    ns_to_ts(first_ns, &its.it_value);
    ns_to_ts(interval_ns, &its.it_interval);
    if (timerfd_settime(t->w.fd, 0, &its, NULL) < 0)
        return pe_err_sys(err, "timerfd_settime");
    return 0;
}

pe_ev_timer *pe_ev_timer_start(pe_ev_loop *loop, uint64_t first_ns, uint64_t interval_ns,
                               pe_ev_timer_cb cb, void *ud, pe_err *err)
{
    cleanup_fd int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    pe_ev_timer *t = NULL;

    if (fd < 0) {
        pe_err_sys(err, "timerfd_create");
        return NULL;
    }
    t = pe_xcalloc(1, sizeof(*t));
    t->cb = cb;
    t->ud = ud;
    t->w.fd = fd;
    if (pe_ev_timer_set(t, first_ns, interval_ns, err) < 0 ||
        watch(loop, &t->w, W_TIMER, fd, EPOLLIN, err) < 0) {
        free(t);
        return NULL;
    }
    pe_steal_fd(&fd);
    return t;
}

void pe_ev_timer_stop(pe_ev_timer *t)
{
    if (t)
        unwatch(&t->w);
}

pe_ev_signal *pe_ev_signal_start(pe_ev_loop *loop, int signo, pe_ev_signal_cb cb, void *ud,
                                 pe_err *err)
{
    sigset_t set;
    cleanup_fd int fd = -1;
    pe_ev_signal *s = NULL;

    sigemptyset(&set);
    sigaddset(&set, signo);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        pe_err_set(err, PE_ESYS, 0, "block signal %d", signo);
        return NULL;
    }
    fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) {
        pe_err_sys(err, "signalfd %d", signo);
        return NULL;
    }
    s = pe_xcalloc(1, sizeof(*s));
    s->signo = signo;
    s->cb = cb;
    s->ud = ud;
    if (watch(loop, &s->w, W_SIGNAL, fd, EPOLLIN, err) < 0) {
        free(s);
        return NULL;
    }
    pe_steal_fd(&fd);
    return s;
}

void pe_ev_signal_stop(pe_ev_signal *s)
{
    if (s)
        unwatch(&s->w);
}

static void post_done(pe_ev_loop *loop, struct work *w)
{
    pthread_mutex_lock(&loop->mu);
    w->next = NULL;
    if (loop->done_tail)
        loop->done_tail->next = w;
    else
        loop->done_head = w;
    loop->done_tail = w;
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
}

/* Called with pool->mu held, which it keeps. Waits for an item; false
 * when the thread should exit (quit with nothing left, or idle too long). */
static bool wait_item(pe_ev_pool *pool)
{
    struct timespec until;

    if (pool->idle_ns) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(pool->idle_ns / 1000000000ull);
        until.tv_nsec += (long)(pool->idle_ns % 1000000000ull);
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    while (pool->queue_head == NULL && !pool->quit) {
        int rc = pool->idle_ns ? pthread_cond_timedwait(&pool->cv, &pool->mu, &until)
                               : pthread_cond_wait(&pool->cv, &pool->mu);

        if (rc == ETIMEDOUT && pool->queue_head == NULL)
            return false;
    }
    return pool->queue_head != NULL;
}

/* An exiting thread: into the graveyard, then join those that were there. */
static void worker_exit(pe_ev_pool *pool)
{
    struct grave *me = pe_xcalloc(1, sizeof(*me)), *older;

    me->thread = pthread_self();
    older = pool->dead;
    pool->dead = me;
    pool->live--;
    pthread_cond_broadcast(&pool->gone_cv);
    pthread_mutex_unlock(&pool->mu);
    while (older) {
        struct grave *next = older->next;
        pthread_join(older->thread, NULL);
        free(older);
        older = next;
    }
}

static void *worker_main(void *arg)
{
    pe_ev_pool *pool = arg;

    pthread_mutex_lock(&pool->mu);
    while (wait_item(pool)) {
        struct work *w = pool->queue_head;

        pool->queue_head = w->next;
        if (pool->queue_head == NULL)
            pool->queue_tail = NULL;
        pool->queued--;
        pool->busy++;
        pthread_mutex_unlock(&pool->mu);
        w->work(w->ud);
        post_done(pool->loop, w);
        pthread_mutex_lock(&pool->mu);
        pool->busy--;
    }
    worker_exit(pool);
    return NULL;
}

/* Called with mu held. A thread starts with every signal blocked: it
 * inherits the mask of the creating thread, so block, create, restore. */
static int spawn(pe_ev_pool *pool, pe_err *err)
{
    sigset_t all, old;
    pthread_t th;
    int rc;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&th, NULL, worker_main, pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return pe_err_set(err, PE_ESYS, rc, "start worker thread");
    pool->live++;
    return 0;
}

pe_ev_pool *pe_ev_pool_new(pe_ev_loop *loop, unsigned max_threads, unsigned max_queued,
                           uint64_t idle_ns, pe_err *err)
{
    pe_ev_pool *pool = pe_xcalloc(1, sizeof(*pool));
    pthread_condattr_t ca;

    pool->loop = loop;
    pool->max_threads = max_threads ? max_threads : 1;
    pool->max_queued = max_queued;
    pool->idle_ns = idle_ns;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* idle timeouts ignore clock changes */
    pthread_cond_init(&pool->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&pool->gone_cv, NULL);
    pool->next = loop->pools;
    loop->pools = pool;
    (void)err; /* nothing here can fail short of allocation, which aborts */
    return pool;
}

int pe_ev_pool_submit(pe_ev_pool *pool, pe_ev_work_cb work, pe_ev_done_cb done, void *ud,
                      pe_err *err)
{
    struct work *w;
    unsigned takers;

    if (work == NULL) {
        pe_ev_post(pool->loop, done, ud);
        return 0;
    }
    pthread_mutex_lock(&pool->mu);
    /* Room: a thread to take it (one not running an item, or one we may
     * start), or a place in the queue. */
    takers = pool->max_threads - pool->busy;
    if (pool->queued >= takers + pool->max_queued) {
        pthread_mutex_unlock(&pool->mu);
        return pe_err_set(err, PE_ESYS, EAGAIN, "worker queue full (%u items)", pool->max_queued);
    }
    if (pool->queued + 1 > pool->live - pool->busy && pool->live < pool->max_threads &&
        spawn(pool, err) < 0 && pool->live == 0) {
        pthread_mutex_unlock(&pool->mu);
        return -1; /* no thread at all; with some, the item waits for one */
    }
    w = pe_xcalloc(1, sizeof(*w));
    w->work = work;
    w->done = done;
    w->ud = ud;
    if (pool->queue_tail)
        pool->queue_tail->next = w;
    else
        pool->queue_head = w;
    pool->queue_tail = w;
    pool->queued++;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

int pe_ev_submit(pe_ev_loop *loop, pe_ev_work_cb work, pe_ev_done_cb done, void *ud, pe_err *err)
{
    return pe_ev_pool_submit(loop->pool, work, done, ud, err);
}

pe_ev_pool *pe_ev_loop_pool(pe_ev_loop *loop)
{
    return loop->pool;
}

void pe_ev_pool_stats_get(pe_ev_pool *pool, pe_ev_pool_stats *out)
{
    pthread_mutex_lock(&pool->mu);
    out->threads = pool->live;
    out->busy = pool->busy;
    out->queued = pool->queued;
    pthread_mutex_unlock(&pool->mu);
}

/* Queued items still run: their done callbacks own memory the callers
 * expect back. Every thread is joined. */
static void pool_drain(pe_ev_pool *pool)
{
    struct grave *dead;

    pthread_mutex_lock(&pool->mu);
    pool->quit = true;
    pthread_cond_broadcast(&pool->cv);
    while (pool->live > 0)
        pthread_cond_wait(&pool->gone_cv, &pool->mu);
    dead = pool->dead;
    pool->dead = NULL;
    pthread_mutex_unlock(&pool->mu);
    while (dead) {
        struct grave *next = dead->next;
        pthread_join(dead->thread, NULL);
        free(dead);
        dead = next;
    }
}

static void pool_free(pe_ev_pool *pool)
{
    if (pool == NULL)
        return;
    pthread_cond_destroy(&pool->cv);
    pthread_cond_destroy(&pool->gone_cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

void pe_ev_post(pe_ev_loop *loop, pe_ev_done_cb done, void *ud)
{
    struct work *w = pe_xcalloc(1, sizeof(*w));

    w->done = done;
    w->ud = ud;
    post_done(loop, w);
}

void pe_ev_loop_free(pe_ev_loop *loop)
{
    struct watcher *w;

    if (loop == NULL)
        return;
    for (pe_ev_pool *p = loop->pools; p; p = p->next)
        pool_drain(p);
    /* Then the completions are delivered one last time. */
    run_completions(loop);
    while (loop->pools) {
        pe_ev_pool *next = loop->pools->next;
        pool_free(loop->pools);
        loop->pools = next;
    }
    while ((w = loop->watchers)) {
        loop->watchers = w->next;
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
        free_watcher(w);
    }
    reap_dead(loop);
    close(loop->wake.fd);
    close(loop->epfd);
    pthread_mutex_destroy(&loop->mu);
    free(loop);
}
