/* A node hears what other nodes change (daemon/cluster.h, docs/cluster.md):
 * a connection of its own to the PostgreSQL store LISTENs on the store's
 * channels (pocketenv/store-listen.h), its socket watched by the loop.
 *
 * What a node keeps between calls that another node's change can make
 * stale is getSandbox's read cache (read-cache.h): a sandbox's row, its
 * record's, and the lease and name of the node it runs on ("node X is
 * down"). Every notification therefore bumps the store's write
 * generation, which drops every kept answer, as a write of this process
 * does. The cache keeps answers of a PostgreSQL store only while the
 * connection listens (pe_daemon_cluster_listening): one that broke, or is
 * not up yet, could miss a change.
 *
 * Connecting blocks (libpq), so it runs on the loop's pool, whose done
 * callback hands the listener to the loop. A failed connect or a lost
 * connection is retried after a backoff (RETRY_FIRST_NS, doubled up to
 * RETRY_MAX_NS); once back, the generation is bumped again: what was sent
 * while nobody listened is lost, so whatever was kept is read anew.
 *
 * A user's tokens revoked elsewhere (PE_STORE_USERS_CHANNEL) makes this
 * node read the store's revocations at once, as its tick would, and end
 * what a revoked token opened (terminals, previews, exec streams).
 *
 * Lifetime: the state outlives pe__cluster_listen_free while a connect or
 * a reload is under way; its completion (which the loop delivers even as
 * it is freed) then frees it. Loop thread only, but for the connect's
 * work. */
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "cluster.h"
#include "core/log.h"
#include "core/util.h"
#include "pocketenv/store-listen.h"

#define RETRY_FIRST_NS 100000000ull /* 0.1 s */
#define RETRY_MAX_NS 5000000000ull  /* 5 s */

struct pe_cluster_listen {
    pe_daemon *d;
    char *url;
    char *name;           /* the node's: in the connection's application_name */
    pe_store_listener *l; /* NULL while down */
    pe_ev_io *io;
    pe_ev_timer *retry;
    uint64_t backoff_ns;
    bool connecting;   /* a connect is on the pool */
    bool freed;        /* pe__cluster_listen_free ran: the connect's done frees */
    bool failing;      /* the last attempt failed: logged once per run */
    bool ever;         /* connected once: a later connect is a reconnect */
    bool reloading;    /* a revocations reload is on the pool */
    bool reload_again; /* and another was asked for meanwhile */
    uint64_t heard, lost;
};

struct connect_job {
    struct pe_cluster_listen *lw;
    char *url, *name;
    pe_store_listener *l;
    pe_err err;
};

static void connect_soon(struct pe_cluster_listen *lw);

static void listen_free(struct pe_cluster_listen *lw)
{
    pe_ev_io_stop(lw->io);
    pe_ev_timer_stop(lw->retry);
    pe_store_listen_close(lw->l);
    free(lw->url);
    free(lw->name);
    free(lw);
}

/* Free lw once it is let go and nothing on the pool still holds it. */
static void maybe_free(struct pe_cluster_listen *lw)
{
    if (lw->freed && !lw->connecting && !lw->reloading)
        listen_free(lw);
}

/* ---- revocations: read anew, then end what revoked tokens opened ---- */

static void reload(struct pe_cluster_listen *lw);

static void reload_work(pe_daemon_job *job, pe_store *s)
{
    if (pe_daemon_auth_refresh(job->d->auth, s, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
}

static void reload_after(pe_daemon_job *job)
{
    struct pe_cluster_listen *lw = job->ud;

    lw->reloading = false;
    if (lw->freed) { /* the daemon is torn down: nothing to recheck */
        maybe_free(lw);
        return;
    }
    if (job->failed) /* the tick reads them again in any case */
        pe_log_warn("event=revocations_reload_failed reason=\"%s\"", job->err.msg);
    /* As the tick does after its own read (housekeeping.c). */
    pe_daemon_terminal_recheck(job->d);
    pe_daemon_proxy_recheck(job->d);
    pe_daemon_exec_stream_recheck(job->d);
    if (lw->reload_again) {
        lw->reload_again = false;
        reload(lw);
    }
}

/* Another node (or `pocketenv token revoke` on the store) revoked a
 * user's tokens: this node refuses them now, not at its next tick. One
 * reload at a time; notifications meanwhile make one more. */
static void reload(struct pe_cluster_listen *lw)
{
    pe_daemon_job *job;

    if (lw->reloading) {
        lw->reload_again = true;
        return;
    }
    job = pe_daemon_job_new(lw->d, NULL, NULL, reload_work);
    job->ud = lw;
    job->after = reload_after;
    lw->reloading = true;
    if (pe_daemon_job_submit(job) < 0) /* draining, or the pool is full: the tick will */
        lw->reloading = false;
}

static void on_notify(const char *channel, const char *payload, void *ud)
{
    struct pe_cluster_listen *lw = ud;

    lw->heard++;
    if (strcmp(channel, PE_STORE_USERS_CHANNEL) == 0) {
        pe_log_info("event=tokens_revoked_elsewhere did=%s", payload);
        reload(lw);
        return;
    }
    /* Drop the read cache's answers: one may show the row or the node
     * that just changed (read-cache.h). */
    pe_store_write_gen_bump();
    if (strcmp(channel, PE_STORE_NODES_CHANNEL) == 0)
        pe_log_info("event=node_changed node=%s", payload);
}

/* Read what arrived; on a broken connection, let it go and try again. */
static void drain(struct pe_cluster_listen *lw)
{
    pe_err err = {0};

    if (pe_store_listen_read(lw->l, on_notify, lw, &err) >= 0)
        return;
    pe_log_warn("event=store_listen_lost reason=\"%s\"", err.msg);
    lw->lost++;
    pe_ev_io_stop(lw->io);
    lw->io = NULL;
    pe_store_listen_close(lw->l);
    lw->l = NULL; /* the read cache keeps no more answers of the store */
    pe_store_write_gen_bump();
    lw->backoff_ns = RETRY_FIRST_NS;
    connect_soon(lw);
}

static void on_readable(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    (void)io;
    (void)fd;
    (void)events;
    drain(ud);
}

static void connect_work(void *ud)
{
    struct connect_job *cj = ud;

    cj->l = pe_store_listen_open(cj->url, cj->name, &cj->err);
}

static void retry_later(struct pe_cluster_listen *lw)
{
    connect_soon(lw);
    if (lw->backoff_ns < RETRY_MAX_NS)
        lw->backoff_ns = lw->backoff_ns * 2 > RETRY_MAX_NS ? RETRY_MAX_NS : lw->backoff_ns * 2;
}

static void connect_done(void *ud)
{
    struct connect_job *cj = ud;
    struct pe_cluster_listen *lw = cj->lw;
    pe_err err = {0};

    lw->connecting = false;
    if (lw->freed) {
        pe_store_listen_close(cj->l);
        maybe_free(lw);
    } else if (cj->l == NULL) {
        if (!lw->failing)
            pe_log_warn("event=store_listen_failed reason=\"%s\"", cj->err.msg);
        lw->failing = true;
        retry_later(lw);
    } else if ((lw->io = pe_ev_io_start(lw->d->loop, pe_store_listen_fd(cj->l), EPOLLIN,
                                        on_readable, lw, &err)) == NULL) {
        pe_log_warn("event=store_listen_failed reason=\"%s\"", err.msg);
        pe_store_listen_close(cj->l);
        retry_later(lw);
    } else {
        lw->l = cj->l;
        lw->failing = false;
        lw->backoff_ns = RETRY_FIRST_NS;
        /* What changed while nobody listened is not kept (see above),
         * and a revocation then unheard is read now. */
        pe_store_write_gen_bump();
        if (lw->ever)
            reload(lw);
        pe_log_info("event=%s", lw->ever ? "store_listen_restored" : "store_listening");
        lw->ever = true;
        /* A notification read into libpq's buffer with the LISTENs'
         * answers would never make the socket readable again. */
        drain(lw);
    }
    free(cj->url);
    free(cj->name);
    free(cj);
}

static void connect_now(struct pe_cluster_listen *lw)
{
    struct connect_job *cj = pe_xcalloc(1, sizeof(*cj));
    pe_err err;

    cj->lw = lw;
    cj->url = pe_xstrdup(lw->url);
    cj->name = pe_xasprintf("pocketenv-listen/%s", lw->name);
    lw->connecting = true;
    if (pe_ev_submit(lw->d->loop, connect_work, connect_done, cj, &err) < 0) {
        lw->connecting = false; /* the pool is full: try again later */
        free(cj->url);
        free(cj->name);
        free(cj);
        retry_later(lw);
    }
}

static void on_retry(pe_ev_timer *t, void *ud)
{
    struct pe_cluster_listen *lw = ud;

    (void)t;
    if (!lw->connecting && lw->l == NULL && !lw->d->draining)
        connect_now(lw);
}

/* Arm the retry timer for the current backoff. */
static void connect_soon(struct pe_cluster_listen *lw)
{
    pe_err err;

    if (lw->retry == NULL)
        lw->retry = pe_ev_timer_start(lw->d->loop, lw->backoff_ns, 0, on_retry, lw, &err);
    else if (pe_ev_timer_set(lw->retry, lw->backoff_ns, 0, &err) < 0)
        pe_log_warn("event=store_listen_retry_failed reason=\"%s\"", err.msg);
    if (lw->retry == NULL) /* no timerfd: the read cache stays off on this store */
        pe_log_warn("event=store_listen_retry_failed reason=\"%s\"", err.msg);
}

struct pe_cluster_listen *pe__cluster_listen_start(pe_daemon *d, const char *node_name)
{
    struct pe_cluster_listen *lw = pe_xcalloc(1, sizeof(*lw));

    lw->d = d;
    lw->name = pe_xstrdup(node_name);
    lw->url = pe_xstrdup(d->store_url);
    lw->backoff_ns = RETRY_FIRST_NS;
    connect_now(lw);
    return lw;
}

bool pe__cluster_listen_up(const struct pe_cluster_listen *lw)
{
    return lw && lw->l;
}

void pe__cluster_listen_metrics(const struct pe_cluster_listen *lw, FILE *out)
{
    if (lw == NULL)
        return;
    fprintf(out,
            "# HELP pocketenv_store_notifications_total Notifications heard from the "
            "PostgreSQL store (other nodes' changes).\n"
            "# TYPE pocketenv_store_notifications_total counter\n"
            "pocketenv_store_notifications_total %llu\n"
            "# HELP pocketenv_store_listen_up 1 while the store's notifications are heard.\n"
            "# TYPE pocketenv_store_listen_up gauge\n"
            "pocketenv_store_listen_up %d\n"
            "# HELP pocketenv_store_listen_lost_total Times the listening connection broke.\n"
            "# TYPE pocketenv_store_listen_lost_total counter\n"
            "pocketenv_store_listen_lost_total %llu\n",
            (unsigned long long)lw->heard, lw->l ? 1 : 0, (unsigned long long)lw->lost);
}

void pe__cluster_listen_free(struct pe_cluster_listen *lw)
{
    if (lw == NULL)
        return;
    /* A connect or a reload still on the pool frees it when it is done
     * (the loop delivers their completions even as it is freed); nothing
     * else may fire meanwhile. */
    pe_ev_io_stop(lw->io);
    lw->io = NULL;
    pe_ev_timer_stop(lw->retry);
    lw->retry = NULL;
    lw->freed = true;
    maybe_free(lw);
}
