/* Paused sandboxes (issue 19, docs/design/checkpoint.md): pausing freezes
 * every process of a local sandbox (the cgroup freezer: memory, open files
 * and sockets are kept, nothing runs), and the next exec, terminal or
 * preview request thaws it before it is served, saying so.
 *
 * The runtime keeps the truth (its state file says "paused"); the daemon
 * keeps a copy here so that the request paths, some of them per HTTP
 * request, answer "is it paused?" without reading a file. The copy is
 * refreshed from the runtime by each housekeeping pass, so a pause made
 * behind the daemon's back (`pocketenv runtime pause`) is seen within a
 * tick. Each entry also remembers the last resume (what woke it, when), so
 * that the owner sees it in getSandbox. Any thread.
 *
 * A remote sandbox is paused and resumed by its provider, where its
 * adapter declares the pause capability (E2B's pause keeps memory); the
 * copy here is then the only one the daemon has (its pause is this
 * daemon's doing: the idle policy's).
 *
 * The store's row keeps a copy too (paused, resumed_by, resumed_at:
 * written when this copy changes), for the other nodes of a cluster: a
 * view of a sandbox this daemon has no entry for shows the row's. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "pause.h"
#include "sandbox-services.h"

struct paused {
    char *id;
    bool paused;
    char *by;   /* what last resumed it ("exec", "terminal", "preview"...) */
    int64_t at; /* when (unix ms) */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct paused *tab;
static size_t tab_n, tab_cap;

static struct paused *find(const char *id, bool add)
{
    for (size_t i = 0; i < tab_n; i++)
        if (strcmp(tab[i].id, id) == 0)
            return &tab[i];
    if (!add)
        return NULL;
    if (tab_n == tab_cap) {
        tab_cap = tab_cap ? tab_cap * 2 : 16;
        tab = pe_xrealloc(tab, tab_cap * sizeof(*tab));
    }
    tab[tab_n] = (struct paused){.id = pe_xstrdup(id)};
    return &tab[tab_n++];
}

/* Update the copy; true if it changed (*at: the resume's time, if by). */
static bool note(const char *id, bool paused, const char *by, int64_t *at)
{
    struct paused *p;
    bool changed = false;

    pthread_mutex_lock(&lock);
    p = find(id, paused || by);
    if (p) {
        changed = p->paused != paused || by;
        p->paused = paused;
        if (by) {
            free(p->by);
            p->by = pe_xstrdup(by);
            p->at = pe_store_now_ms();
            if (at)
                *at = p->at;
        }
    }
    pthread_mutex_unlock(&lock);
    if (changed) /* getSandbox's cached answers show paused and resumedBy */
        pe_store_write_gen_bump();
    return changed;
}

/* The store's copy, which the other nodes of a cluster show (their read
 * caches hear the row's change): failing, this node's answers stay right,
 * the others' stale until the next change, so it is only logged. */
static void record(pe_store *s, const char *id, bool paused, const char *by, int64_t at)
{
    pe_err err;

    pe_err_clear(&err);
    if (s && pe_store_sandbox_set_paused(s, id, paused, by, at, &err) < 0 && err.code != PE_ENOENT)
        pe_log_warn("record pause of %s: %s", id, err.msg);
}

/* note, and the store's copy when it changed. */
static void note_and_record(pe_daemon *d, const char *id, bool paused, const char *by)
{
    int64_t at = 0;
    pe_err err;

    if (!note(id, paused, by, &at))
        return;
    pe_err_clear(&err);
    record(pe_daemon_store(d, &err), id, paused, by, at);
}

bool pe_daemon_paused(const char *id)
{
    struct paused *p;
    bool r;

    pthread_mutex_lock(&lock);
    p = find(id, false);
    r = p && p->paused;
    pthread_mutex_unlock(&lock);
    return r;
}

void pe_daemon_paused_note(pe_store *s, const pe_store_sandbox *sb, bool paused)
{
    /* The row may say otherwise even when the copy did not change: a
     * restart forgot the copy of a sandbox no longer frozen. */
    if (note(sb->id, paused, NULL, NULL) || (sb->paused != 0) != paused)
        record(s, sb->id, paused, NULL, 0);
}

void pe_daemon_paused_forget(const char *id)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < tab_n; i++) {
        if (strcmp(tab[i].id, id) == 0) {
            free(tab[i].id);
            free(tab[i].by);
            tab[i] = tab[--tab_n];
            break;
        }
    }
    pthread_mutex_unlock(&lock);
}

void pe_daemon_paused_view(const pe_store_sandbox *sb, json_t *view)
{
    struct paused *p;
    bool paused = sb->paused != 0;
    const char *by = sb->resumed_by;
    int64_t at = sb->resumed_at;

    /* This node's copy, where it has one, is the truth (the row may lag it
     * by a write); another node's sandbox has only the row. */
    pthread_mutex_lock(&lock);
    p = find(sb->id, false);
    if (p) {
        paused = p->paused;
        if (p->by) {
            by = p->by;
            at = p->at;
        }
    }
    if (paused)
        json_object_set_new(view, "paused", json_true());
    if (by) {
        pe_daemon_set_str(view, "resumedBy", by);
        pe_daemon_set_time(view, "resumedAt", at);
    }
    pthread_mutex_unlock(&lock);
}

/* Pause (pause true) or resume remote sandbox id through its provider:
 * 1 done, 0 id is not a remote sandbox, -1 err set. */
static int remote(pe_daemon *d, const char *id, bool pause, pe_err *err)
{
    pe_store *s = pe_daemon_store(d, err);
    pe_store_sandbox sb;
    int r;

    if (s == NULL || pe_store_sandbox_get(s, id, &sb, err) < 0)
        return -1;
    if (!pe_sandbox_is_remote(&sb)) {
        pe_store_sandbox_clear(&sb);
        return 0;
    }
    r = pause ? pe_sandbox_pause(&d->sx, s, &sb, err) : pe_sandbox_resume(&d->sx, s, &sb, err);
    if (r == 0 && !pause) {
        note_and_record(d, id, false, NULL); /* running: what starts now must not see it paused */
        pe_daemon_services_revive(d, s, &sb);
    }
    pe_store_sandbox_clear(&sb);
    return r < 0 ? -1 : 1;
}

int pe_daemon_pause(pe_daemon *d, const char *id, const char *why, pe_err *err)
{
    int r = remote(d, id, true, err);

    if (r < 0 || (r == 0 && pe_runtime_pause(&d->rt, id, err) < 0))
        return -1;
    note_and_record(d, id, true, NULL);
    pe_log_info("event=pause sandbox=%s reason=\"%s\"", id, why);
    return 0;
}

int pe_daemon_resume(pe_daemon *d, const char *id, const char *by, pe_err *err)
{
    int r = remote(d, id, false, err);

    if (r < 0)
        return -1;
    if (r == 0 && pe_runtime_resume(&d->rt, id, err) < 0) {
        if (err->code != PE_ESTATE)
            return -1;
        /* Not paused (any more): another request woke it first. */
        note_and_record(d, id, false, NULL);
        return 0;
    }
    note_and_record(d, id, false, by);
    /* Its idle clock starts over: frozen for hours, it must not be paused
     * or stopped again by the next pass before whatever woke it is served. */
    pe_daemon_touch(d, id);
    pe_log_info("event=resume sandbox=%s by=%s", id, by);
    return 1;
}

int pe_daemon_wake(pe_daemon *d, const char *id, const char *by, pe_err *err)
{
    if (!pe_daemon_paused(id))
        return 0;
    return pe_daemon_resume(d, id, by, err);
}

int pe_daemon_wake_row(pe_daemon *d, const pe_store_sandbox *sb, const char *by, pe_err *err)
{
    /* A remote sandbox that another node of the store paused: its row
     * says so, this daemon's memory does not (the provider is the same
     * from every node). */
    if (!pe_daemon_paused(sb->id) && !(sb->paused && pe_sandbox_is_remote(sb)))
        return 0;
    return pe_daemon_resume(d, sb->id, by, err);
}

void pe_daemon_paused_free(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < tab_n; i++) {
        free(tab[i].id);
        free(tab[i].by);
    }
    free(tab);
    tab = NULL;
    tab_n = tab_cap = 0;
    pthread_mutex_unlock(&lock);
}
