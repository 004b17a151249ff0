/* The reactor: one epoll loop for fds, timers, signals, and completions of
 * blocking work run on a small worker pool (STYLE rule 12).
 *
 * Threading: everything here is called on the loop's thread, except
 * pe_ev_stop and pe_ev_post, which any thread may call. Callbacks always run on
 * the loop's thread, and a work item's done callback runs there after its
 * work callback returned on a pool thread.
 *
 * Lifetime: a watcher stays valid until its *_stop call, which may be made
 * from inside any callback (its own included); memory is released after the
 * current dispatch round, so a stopped watcher's pending event is dropped,
 * never delivered. pe_ev_loop_free waits for running work items and
 * frees every watcher still started. */
#ifndef POCKETENV_EV_H
#define POCKETENV_EV_H

#include <stdint.h>

#include "pocketenv/err.h"

typedef struct pe_ev_loop pe_ev_loop;
typedef struct pe_ev_io pe_ev_io;
typedef struct pe_ev_timer pe_ev_timer;
typedef struct pe_ev_signal pe_ev_signal;
typedef struct pe_ev_pool pe_ev_pool;

/* events: EPOLLIN / EPOLLOUT (from <sys/epoll.h>), as given and received. */
typedef void (*pe_ev_io_cb)(pe_ev_io *io, int fd, uint32_t events, void *ud);
typedef void (*pe_ev_timer_cb)(pe_ev_timer *t, void *ud);
typedef void (*pe_ev_signal_cb)(pe_ev_signal *s, int signo, void *ud);
/* work runs on a pool thread and must not touch the loop; done runs on the
 * loop's thread afterwards. */
typedef void (*pe_ev_work_cb)(void *ud);
typedef void (*pe_ev_done_cb)(void *ud);

/* workers: size of the loop's own pool (0: 4), whose threads start as
 * work arrives and stay. max_queued bounds work items waiting for a
 * thread (0: 1024); a full queue is EAGAIN. */
pe_ev_loop *pe_ev_loop_new(unsigned workers, unsigned max_queued, pe_err *err);
void pe_ev_loop_free(pe_ev_loop *loop);

/* Dispatch until pe_ev_stop. Returns 0, or -1 if epoll_wait failed. */
int pe_ev_run(pe_ev_loop *loop, pe_err *err);
/* Make pe_ev_run return after the current round. Any thread. */
void pe_ev_stop(pe_ev_loop *loop);

pe_ev_io *pe_ev_io_start(pe_ev_loop *loop, int fd, uint32_t events, pe_ev_io_cb cb, void *ud,
                         pe_err *err);
int pe_ev_io_modify(pe_ev_io *io, uint32_t events, pe_err *err);
/* Stops watching; does not close the fd. NULL is a no-op. */
void pe_ev_io_stop(pe_ev_io *io);

/* First expiry after first_ns (0: disarmed, e.g. to arm later), then
 * every interval_ns (0: once). Backed by a timerfd on CLOCK_MONOTONIC. */
pe_ev_timer *pe_ev_timer_start(pe_ev_loop *loop, uint64_t first_ns, uint64_t interval_ns,
                               pe_ev_timer_cb cb, void *ud, pe_err *err);
int pe_ev_timer_set(pe_ev_timer *t, uint64_t first_ns, uint64_t interval_ns, pe_err *err);
void pe_ev_timer_stop(pe_ev_timer *t);

/* Deliver signo through a signalfd. Blocks signo in the calling thread:
 * start signal watchers before creating other threads (pool threads block
 * every signal themselves). Stopping does not unblock it. */
pe_ev_signal *pe_ev_signal_start(pe_ev_loop *loop, int signo, pe_ev_signal_cb cb, void *ud,
                                 pe_err *err);
void pe_ev_signal_stop(pe_ev_signal *s);

/* Run work(ud) on the pool, then done(ud) on the loop. work may be NULL
 * (done only: a way to run something on the loop from another thread).
 * Returns -1 (EAGAIN) when the queue is full. */
int pe_ev_submit(pe_ev_loop *loop, pe_ev_work_cb work, pe_ev_done_cb done, void *ud, pe_err *err);
/* A further worker pool of the loop, for work that must not wait behind
 * the loop's own pool (or hold it): up to max_threads threads, one more
 * started whenever more items wait than threads are free to take them, and
 * one that stays idle for idle_ns (0: forever) exits. max_queued bounds
 * the items that wait with every thread busy and max_threads reached (0:
 * such a submit is EAGAIN). Done callbacks run on the loop like
 * pe_ev_submit's. Freed (its queue drained, its threads joined) by
 * pe_ev_loop_free. Loop thread. */
pe_ev_pool *pe_ev_pool_new(pe_ev_loop *loop, unsigned max_threads, unsigned max_queued,
                           uint64_t idle_ns, pe_err *err);
int pe_ev_pool_submit(pe_ev_pool *pool, pe_ev_work_cb work, pe_ev_done_cb done, void *ud,
                      pe_err *err);

/* What a pool is doing now (any thread): threads alive, threads running
 * an item, items waiting. */
typedef struct pe_ev_pool_stats {
    unsigned threads, busy, queued;
} pe_ev_pool_stats;
void pe_ev_pool_stats_get(pe_ev_pool *pool, pe_ev_pool_stats *out);
/* The loop's own pool (the one pe_ev_submit uses). */
pe_ev_pool *pe_ev_loop_pool(pe_ev_loop *loop);

/* Like submit with work NULL, callable from any thread: done(ud) runs on
 * the loop soon. Never fails for lack of queue room (the caller owns ud's
 * memory and must not lose the completion). */
void pe_ev_post(pe_ev_loop *loop, pe_ev_done_cb done, void *ud);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t pe_ev_now_ns(void);

#endif
