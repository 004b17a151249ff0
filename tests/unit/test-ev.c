/* Unit tests for the event loop (lib/ev/ev.c): fd watchers, timers,
 * signals, the worker pool and cross-thread posts. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "task.h"
#include "pocketenv/ev.h"

static pe_ev_loop *new_loop(void)
{
    pe_err err = {0};
    pe_ev_loop *loop = pe_ev_loop_new(2, 4, &err);
    if (loop == NULL)
        TEST_FAIL("loop: %s", err.msg);
    return loop;
}

static int count;

static void on_readable(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    char buf[16];
    ASSERT(events & EPOLLIN);
    ASSERT(read(fd, buf, sizeof(buf)) == 1);
    count++;
    pe_ev_io_stop(io); /* stopping from inside the callback is allowed */
    pe_ev_stop(ud);
}

TEST_CASE(io_watcher)
{
    pe_ev_loop *loop = new_loop();
    int p[2];

    ASSERT_EQ_INT(pipe(p), 0);
    ASSERT(pe_ev_io_start(loop, p[0], EPOLLIN, on_readable, loop, NULL) != NULL);
    ASSERT_EQ_INT(write(p[1], "x", 1), 1);
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    ASSERT_EQ_INT(count, 1);
    pe_ev_loop_free(loop);
    close(p[0]);
    close(p[1]);
}

/* Eight watchers, all readable in the same round. The first to run stops
 * three others that have not run yet, with their events possibly already
 * in the round's array: those must never run. The rest run once each; a
 * watcher started after the stops runs too; two that never fire are still
 * live at pe_ev_loop_free, which frees them (ASan: no leak, no double free). */
#define N_ANY 8
static pe_ev_io *any_io[N_ANY];
static int any_fired[N_ANY], any_stopped[N_ANY], any_runs;
static pe_ev_loop *any_loop;

static void on_any(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    long i = (long)ud;
    char c;

    (void)events;
    ASSERT_EQ_INT(read(fd, &c, 1), 1);
    any_fired[i]++;
    any_runs++;
    if (any_runs == 1)
        for (int k = 0, n = 0; k < N_ANY && n < 3; k++)
            if (k != i) {
                pe_ev_io_stop(any_io[k]);
                any_stopped[k] = 1;
                n++;
            }
    pe_ev_io_stop(io);
    if (any_runs >= N_ANY - 3) /* the first round's, then the late one */
        pe_ev_stop(any_loop);
}

TEST_CASE(watchers_stopped_in_any_order)
{
    int p[N_ANY + 3][2];

    any_loop = new_loop();
    for (long i = 0; i < N_ANY + 3; i++) {
        ASSERT_EQ_INT(pipe(p[i]), 0);
        if (i < N_ANY) {
            any_io[i] = pe_ev_io_start(any_loop, p[i][0], EPOLLIN, on_any, (void *)i, NULL);
            ASSERT(any_io[i] != NULL);
            ASSERT_EQ_INT(write(p[i][1], "x", 1), 1);
        }
    }
    /* two that never fire, one between the others and one after */
    ASSERT(pe_ev_io_start(any_loop, p[N_ANY][0], EPOLLIN, on_any, (void *)0L, NULL) != NULL);
    ASSERT_EQ_INT(pe_ev_run(any_loop, NULL), 0);
    ASSERT_EQ_INT(any_runs, N_ANY - 3);
    for (int k = 0; k < N_ANY; k++)
        ASSERT_EQ_INT(any_fired[k], any_stopped[k] ? 0 : 1);
    /* The list is whole after the stops: a new watcher still fires. */
    ASSERT(pe_ev_io_start(any_loop, p[N_ANY + 1][0], EPOLLIN, on_any, (void *)0L, NULL) != NULL);
    ASSERT(pe_ev_io_start(any_loop, p[N_ANY + 2][0], EPOLLIN, on_any, (void *)1L, NULL) != NULL);
    any_fired[0] = 0;
    ASSERT_EQ_INT(write(p[N_ANY + 1][1], "x", 1), 1);
    ASSERT_EQ_INT(pe_ev_run(any_loop, NULL), 0);
    ASSERT_EQ_INT(any_fired[0], 1);
    pe_ev_loop_free(any_loop);
    for (int i = 0; i < N_ANY + 3; i++) {
        close(p[i][0]);
        close(p[i][1]);
    }
}

static void on_tick(pe_ev_timer *t, void *ud)
{
    if (++count == 3) {
        pe_ev_timer_stop(t);
        pe_ev_stop(ud);
    }
}

TEST_CASE(repeating_timer)
{
    pe_ev_loop *loop = new_loop();

    ASSERT(pe_ev_timer_start(loop, 1000000, 1000000, on_tick, loop, NULL) != NULL);
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    ASSERT_EQ_INT(count, 3);
    pe_ev_loop_free(loop);
}

static void on_signal(pe_ev_signal *s, int signo, void *ud)
{
    ASSERT_EQ_INT(signo, SIGUSR1);
    count++;
    pe_ev_stop(ud);
}

TEST_CASE(signal_watcher)
{
    pe_ev_loop *loop = new_loop();

    ASSERT(pe_ev_signal_start(loop, SIGUSR1, on_signal, loop, NULL) != NULL);
    ASSERT_EQ_INT(kill(getpid(), SIGUSR1), 0);
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    ASSERT_EQ_INT(count, 1);
    pe_ev_loop_free(loop);
}

struct job {
    pe_ev_loop *loop;
    pthread_t loop_thread, work_thread;
    int done;
};

static struct job jobs[4];

static void job_work(void *ud)
{
    struct job *j = ud;
    j->work_thread = pthread_self();
    usleep(10000);
}

static void job_done(void *ud)
{
    struct job *j = ud;
    ASSERT(pthread_equal(pthread_self(), j->loop_thread));
    ASSERT(!pthread_equal(j->work_thread, j->loop_thread));
    j->done = 1;
    if (++count == 4)
        pe_ev_stop(j->loop);
}

TEST_CASE(worker_pool_completions_run_on_loop)
{
    pe_ev_loop *loop = new_loop();
    pe_err err = {0};

    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){.loop = loop, .loop_thread = pthread_self()};
        ASSERT_EQ_INT(pe_ev_submit(loop, job_work, job_done, &jobs[i], &err), 0);
    }
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ_INT(jobs[i].done, 1);
    pe_ev_loop_free(loop);
}

static void block_work(void *ud)
{
    usleep(50000);
}

static void noop_done(void *ud)
{
}

TEST_CASE(worker_queue_is_bounded)
{
    pe_ev_loop *loop = new_loop(); /* 2 threads, 4 queued */
    pe_err err = {0};
    int rc = 0, i;

    for (i = 0; i < 100 && rc == 0; i++)
        rc = pe_ev_submit(loop, block_work, noop_done, NULL, &err);
    ASSERT_EQ_INT(rc, -1);
    ASSERT_EQ_INT(err.errnum, EAGAIN);
    ASSERT(i <= 7);
    pe_ev_loop_free(loop); /* drains what was queued */
}

/* ---- further pools ---- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open, inside;

/* An item that holds its thread until the gate opens. */
static void gate_work(void *ud)
{
    pthread_mutex_lock(&gate_mu);
    inside++;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
}

static void wait_inside(int n)
{
    pthread_mutex_lock(&gate_mu);
    while (inside < n)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
}

static void open_gate(void)
{
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static pe_ev_loop *stop_loop_at;
static int stop_at;

static void done_count(void *ud)
{
    if (++count == stop_at)
        pe_ev_stop(stop_loop_at);
}

/* Items that block hold threads of their own, started as they arrive: a
 * pool beside the loop's (2 threads, both blocked) is not delayed by it,
 * and a full pool without a queue refuses rather than queues. */
TEST_CASE(pool_grows_beside_a_blocked_loop_pool)
{
    pe_ev_loop *loop = new_loop();
    pe_ev_pool *pool = pe_ev_pool_new(loop, 6, 0, 0, NULL);
    pe_ev_pool_stats st;
    pe_err err = {0};

    stop_loop_at = loop;
    stop_at = 8;
    for (int i = 0; i < 2; i++)
        ASSERT_EQ_INT(pe_ev_submit(loop, gate_work, done_count, NULL, &err), 0);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ_INT(pe_ev_pool_submit(pool, gate_work, done_count, NULL, &err), 0);
    wait_inside(8);
    pe_ev_pool_stats_get(pool, &st);
    ASSERT_EQ_INT(st.threads, 6);
    ASSERT_EQ_INT(st.busy, 6);
    ASSERT_EQ_INT(st.queued, 0);
    ASSERT_EQ_INT(pe_ev_pool_submit(pool, gate_work, done_count, NULL, &err), -1);
    ASSERT_EQ_INT(err.errnum, EAGAIN);
    open_gate();
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    ASSERT_EQ_INT(count, 8);
    pe_ev_loop_free(loop);
}

/* Threads idle for the pool's idle time exit (and are joined); the next
 * item starts a new one. */
TEST_CASE(pool_idle_threads_exit)
{
    pe_ev_loop *loop = new_loop();
    pe_ev_pool *pool = pe_ev_pool_new(loop, 3, 4, 20 * 1000000ull, NULL);
    pe_ev_pool_stats st;
    pe_err err = {0};

    stop_loop_at = loop;
    stop_at = 3;
    for (int i = 0; i < 3; i++)
        ASSERT_EQ_INT(pe_ev_pool_submit(pool, gate_work, done_count, NULL, &err), 0);
    wait_inside(3);
    open_gate();
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    for (int i = 0; i < 400; i++) {
        pe_ev_pool_stats_get(pool, &st);
        if (st.threads == 0)
            break;
        usleep(5000);
    }
    ASSERT_EQ_INT(st.threads, 0);
    stop_at = 4;
    ASSERT_EQ_INT(pe_ev_pool_submit(pool, gate_work, done_count, NULL, &err), 0);
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    ASSERT_EQ_INT(count, 4);
    pe_ev_loop_free(loop);
}

static void stop_loop(void *ud)
{
    pe_ev_stop(ud);
}

static void *poster(void *arg)
{
    pe_ev_post(arg, stop_loop, arg);
    return NULL;
}

TEST_CASE(post_from_other_thread)
{
    pe_ev_loop *loop = new_loop();
    pthread_t th;

    ASSERT_EQ_INT(pthread_create(&th, NULL, poster, loop), 0);
    ASSERT_EQ_INT(pe_ev_run(loop, NULL), 0);
    pthread_join(th, NULL);
    pe_ev_loop_free(loop);
}

int main(void)
{
    return RUN_TESTS(io_watcher, watchers_stopped_in_any_order, repeating_timer, signal_watcher,
                     worker_pool_completions_run_on_loop, worker_queue_is_bounded,
                     pool_grows_beside_a_blocked_loop_pool, pool_idle_threads_exit,
                     post_from_other_thread);
}
