/* Terminal sessions: a shell on a PTY in a sandbox, shared by its viewers.
 *
 * Owns: the session table, each session's shell process, PTY, scrollback
 * ring and viewers. Threading: loop thread only; the one blocking step,
 * starting the shell inside the sandbox (pe_sandbox_proc_start forks into
 * its namespaces), runs as a worker job whose done callback brings the
 * session to RUNNING. The PTY master and the shell's pidfd are then watched
 * by the loop; the PTY is non-blocking, so reads and writes never stall it.
 *
 * States: STARTING (shell being started; viewers attach, input is kept)
 * -> RUNNING -> ENDING (shell exited, was killed, or failed to start:
 * viewers are told and closed) -> freed once the shell is reaped.
 *
 * Output goes to the scrollback ring (replayed to every new viewer, so
 * nothing is lost while nobody watched) and to every viewer. Text viewers
 * get valid UTF-8 only: a character split across two PTY reads is held
 * back until it is complete (carry), and invalid bytes become U+FFFD.
 * Binary viewers (Cloudflare protocol) get the bytes as they are, and the
 * /ssh viewers (upstream's SSH gateway protocol, terminal-ssh.c) the bytes
 * as they are in base64: a text frame, or an SSE "data:" line, per chunk.
 *
 * Backpressure (STYLE rule 15), per viewer: the HTTP layer queues what the
 * client has not taken. While every viewer is above HIGH_WATER the PTY is
 * not read, so the shell blocks on its terminal as it would on a slow local
 * one; any viewer draining resumes it. A viewer that falls more than
 * VIEWER_MAX behind the others is dropped (WebSocket close 1008 "viewer
 * too slow", or an SSE error event), so it never holds the rest back.
 * Input to the shell is bounded by INPUT_MAX.
 *
 * A session holds its sandbox (pe_daemon_hold) from creation to free, so
 * the idle stop never takes a sandbox with a live terminal; input touches
 * it. A session without viewers ends after --terminal-idle. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "core/log.h"
#include "core/utf8.h"
#include "core/util.h"
#include "pause.h"
#include "terminal.h"

#define RING_SIZE (64 * 1024)
#define READ_CHUNK (64 * 1024)
#define MAX_READS 64 /* per wakeup, gathered into one chunk; then the loop serves others */
#define HIGH_WATER (256 * 1024)
#define VIEWER_MAX (1024 * 1024)
#define INPUT_MAX (256 * 1024)
#define MAX_VIEWERS 64
#define WS_MESSAGE_MAX (256 * 1024)
#define SSE_PING_NS (15ull * 1000000000ull)

enum { ST_STARTING, ST_RUNNING, ST_ENDING };

typedef struct viewer {
    pe_term_session *s;
    int proto;
    int64_t iat; /* of the token that opened it */
    pe_http_ws *ws;
    pe_http_stream *st;
    pe_ev_timer *ping;
    struct viewer *next, *prev;
} viewer;

struct pe_term_session {
    pe_daemon *d;
    char *key, *did, *sandbox_id;
    uint64_t created_ns; /* the oldest unwatched session is reclaimed first */
    int state;
    pe_proc proc;
    /* A sandbox on a remote provider: its shell through the provider's PTY
     * (lib/sandbox), the same session otherwise: pty_fd is a socket to the
     * adapter's pump, status_fd readable once the shell ended. */
    bool remote;
    pe_provider_proc rproc;
    bool starting; /* the start job has not reported back */
    bool have_proc, reaped;
    pe_ev_io *pty_io, *pid_io;
    uint32_t pty_events;
    bool pty_eof;
    unsigned cols, rows;
    unsigned char ring[RING_SIZE];
    size_t ring_start, ring_len;
    unsigned char carry[4];
    size_t carry_len;
    char *in;
    size_t in_len;
    viewer *viewers;
    unsigned n_viewers;
    pe_ev_timer *idle;
    int exit_code;
    pe_term_session *next, *prev;
};

struct pe_terminals {
    pe_term_session *head;
    unsigned n;
};

static struct pe_terminals *table(pe_daemon *d)
{
    if (d->terms == NULL)
        d->terms = pe_xcalloc(1, sizeof(*d->terms));
    return d->terms;
}

/* ---- viewers ------------------------------------------------------------ */

static void session_check_flow(pe_term_session *s);
static void session_maybe_free(pe_term_session *s);

static size_t viewer_pending(const viewer *v)
{
    if (v->ws)
        return pe_http_ws_pending(v->ws);
    if (v->st)
        return pe_http_stream_pending(v->st);
    return 0;
}

static void sse_event(viewer *v, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    char *msg;

    json_decref(data);
    if (text == NULL)
        abort(); /* allocation failure: the strings are valid UTF-8 */
    msg = pe_xasprintf("event: %s\ndata: %s\n\n", event, text);
    pe_http_stream_write(v->st, msg, strlen(msg));
    free(msg);
    free(text);
}

static void cf_control(viewer *v, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);

    json_decref(msg);
    if (text == NULL)
        abort();
    pe_http_ws_send(v->ws, false, text, strlen(text));
    free(text);
}

/* Detach v from its session; the connection is the caller's concern. */
static void viewer_unlink(viewer *v)
{
    pe_term_session *s = v->s;

    if (v->prev)
        v->prev->next = v->next;
    else
        s->viewers = v->next;
    if (v->next)
        v->next->prev = v->prev;
    s->n_viewers--;
    pe_ev_timer_stop(v->ping);
    free(v);
    if (s->n_viewers == 0 && s->state != ST_ENDING && s->idle)
        pe_ev_timer_set(s->idle, (uint64_t)(s->d->terminal_idle * 1e9) + 1, 0, NULL);
    session_check_flow(s);
}

/* Close v's connection with a reason and detach it. A slow viewer's close
 * frame jumps its backlog, or it would never see it. */
static void viewer_drop(viewer *v, unsigned code, const char *reason)
{
    bool slow = code == 1008 && strcmp(reason, "viewer too slow") == 0;

    if (v->ws && slow) {
        pe_http_ws_abort(v->ws, code, reason);
    } else if (v->ws) {
        if (v->proto == PE_TERM_WS_CF && code != 1000)
            cf_control(v, json_pack("{s:s,s:s}", "type", "error", "message", reason));
        pe_http_ws_close(v->ws, code, reason);
    } else if (v->st) {
        /* Both SSE protocols: event: error, data: {"message"}. */
        if (code != 1000)
            sse_event(v, "error", json_pack("{s:s}", "message", reason));
        pe_http_stream_close(v->st);
    }
    viewer_unlink(v);
}

/* Whether v is sent text (valid UTF-8) rather than the bytes. */
static bool viewer_wants_text(const viewer *v)
{
    return v->proto == PE_TERM_WS_TEXT || v->proto == PE_TERM_SSE;
}

/* The bytes in base64, for the /ssh viewers: a text frame, or one SSE
 * "data:" line (base64 has no newline). */
static void viewer_b64(viewer *v, const unsigned char *raw, size_t raw_len)
{
    size_t cap = sodium_base64_ENCODED_LEN(raw_len, sodium_base64_VARIANT_ORIGINAL);
    char *msg = pe_xmalloc(cap + 8);
    size_t n;

    if (v->proto == PE_TERM_WS_B64) {
        sodium_bin2base64(msg, cap, raw, raw_len, sodium_base64_VARIANT_ORIGINAL);
        pe_http_ws_send(v->ws, false, msg, strlen(msg));
    } else {
        memcpy(msg, "data: ", 6);
        sodium_bin2base64(msg + 6, cap, raw, raw_len, sodium_base64_VARIANT_ORIGINAL);
        n = strlen(msg);
        memcpy(msg + n, "\n\n", 2);
        pe_http_stream_write(v->st, msg, n + 2);
    }
    free(msg);
}

/* One chunk of output to one viewer; raw for binary, text for the rest. */
static void viewer_output(viewer *v, const unsigned char *raw, size_t raw_len, const char *text,
                          size_t text_len)
{
    if (v->proto == PE_TERM_WS_CF) {
        if (raw_len)
            pe_http_ws_send(v->ws, true, raw, raw_len);
    } else if (v->proto == PE_TERM_WS_B64 || v->proto == PE_TERM_SSE_B64) {
        if (raw_len)
            viewer_b64(v, raw, raw_len);
    } else if (v->proto == PE_TERM_WS_TEXT) {
        if (text_len)
            pe_http_ws_send(v->ws, false, text, text_len);
    } else if (text_len) {
        sse_event(v, "output", json_pack("{s:s%}", "data", text, text_len));
    }
}

/* ---- the ring ----------------------------------------------------------- */

static void ring_append(pe_term_session *s, const unsigned char *p, size_t n)
{
    if (n >= RING_SIZE) {
        memcpy(s->ring, p + n - RING_SIZE, RING_SIZE);
        s->ring_start = 0;
        s->ring_len = RING_SIZE;
        return;
    }
    for (size_t i = 0; i < n;) {
        size_t end = (s->ring_start + s->ring_len) % RING_SIZE;
        size_t room = RING_SIZE - end, take = n - i < room ? n - i : room;
        memcpy(s->ring + end, p + i, take);
        i += take;
        s->ring_len += take;
        if (s->ring_len > RING_SIZE) {
            s->ring_start = (s->ring_start + s->ring_len - RING_SIZE) % RING_SIZE;
            s->ring_len = RING_SIZE;
        }
    }
}

/* The ring in order, from its first character boundary. malloc'd. */
static unsigned char *ring_copy(pe_term_session *s, size_t *len)
{
    unsigned char *out = pe_xmalloc(s->ring_len + 1);
    size_t first =
        RING_SIZE - s->ring_start < s->ring_len ? RING_SIZE - s->ring_start : s->ring_len;
    size_t skip = 0;

    memcpy(out, s->ring + s->ring_start, first);
    memcpy(out + first, s->ring, s->ring_len - first);
    /* The oldest bytes may be the tail of a character cut by the wrap. */
    while (skip < 3 && skip < s->ring_len && (out[skip] & 0xc0) == 0x80)
        skip++;
    memmove(out, out + skip, s->ring_len - skip);
    *len = s->ring_len - skip;
    return out;
}

static void viewer_replay(pe_term_session *s, viewer *v)
{
    size_t len, used, tlen;
    unsigned char *raw = ring_copy(s, &len);
    char *text;

    if (len == 0) {
        free(raw);
        return;
    }
    if (!viewer_wants_text(v)) {
        viewer_output(v, raw, len, NULL, 0);
    } else {
        /* The unfinished tail is in the carry: the next chunk completes it. */
        size_t n = len >= s->carry_len ? len - s->carry_len : 0;
        text = pe_xmalloc(3 * n + 1);
        tlen = pe_utf8_sanitize(raw, n, true, text, &used);
        viewer_output(v, NULL, 0, text, tlen);
        free(text);
    }
    free(raw);
}

/* ---- output ------------------------------------------------------------- */

static void session_output(pe_term_session *s, const unsigned char *p, size_t n)
{
    unsigned char buf[4 + READ_CHUNK];
    char *text = NULL;
    size_t tlen = 0, used = 0, all;
    viewer *v, *next;
    bool any_text = false;

    ring_append(s, p, n);
    for (v = s->viewers; v; v = v->next)
        any_text |= viewer_wants_text(v);
    /* Text: carry + new bytes, up to the last whole character. */
    memcpy(buf, s->carry, s->carry_len);
    memcpy(buf + s->carry_len, p, n);
    all = s->carry_len + n;
    if (any_text) {
        text = pe_xmalloc(3 * all + 1);
        tlen = pe_utf8_sanitize(buf, all, false, text, &used);
    } else {
        /* Only the carry, which must stay right for a text viewer that
         * attaches later: an unfinished character at the very end. */
        used = all - pe_utf8_unfinished(buf, all);
    }
    s->carry_len = all - used;
    memcpy(s->carry, buf + used, s->carry_len);
    for (v = s->viewers; v; v = next) {
        next = v->next;
        viewer_output(v, p, n, text, tlen);
        if (viewer_pending(v) > VIEWER_MAX) {
            pe_log_info("terminal %s: dropping a viewer %zu bytes behind", s->sandbox_id,
                        viewer_pending(v));
            viewer_drop(v, 1008, "viewer too slow");
        }
    }
    free(text);
}

/* ---- the PTY ------------------------------------------------------------ */

static void pty_watch(pe_term_session *s)
{
    uint32_t want = 0;
    bool all_full = s->n_viewers > 0;

    for (viewer *v = s->viewers; v && all_full; v = v->next)
        all_full = viewer_pending(v) > HIGH_WATER;
    if (!s->pty_eof && !all_full)
        want |= EPOLLIN;
    if (s->in_len > 0)
        want |= EPOLLOUT;
    if (s->pty_io && want != s->pty_events) {
        pe_ev_io_modify(s->pty_io, want, NULL);
        s->pty_events = want;
    }
}

/* ---- the shell, local (pe_proc) or remote (pe_provider_proc) ---- */

static int shell_pty(const pe_term_session *s)
{
    return s->remote ? s->rproc.pty_fd : s->proc.pty_fd;
}

static void shell_kill(pe_term_session *s)
{
    if (s->remote)
        pe_provider_proc_kill_now(&s->rproc);
    else
        pe_proc_signal(&s->proc, SIGKILL); /* no-op if it already exited */
}

/* Once it has ended (its status fd readable). */
static int shell_wait(pe_term_session *s, int *code, pe_err *err)
{
    return s->remote ? pe_provider_proc_wait(&s->rproc, code, err)
                     : pe_proc_wait(&s->proc, code, err);
}

static void shell_close(pe_term_session *s)
{
    if (s->remote)
        pe_provider_proc_close(&s->rproc); /* and the provider opened for it */
    else
        pe_proc_close(&s->proc);
}

static void session_check_flow(pe_term_session *s)
{
    if (s->state == ST_RUNNING)
        pty_watch(s);
}

static void pty_flush_input(pe_term_session *s)
{
    while (s->in_len > 0) {
        ssize_t n = write(shell_pty(s), s->in, s->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno != EAGAIN)
                s->in_len = 0; /* the shell is gone: its exit is on its way */
            break;
        }
        memmove(s->in, s->in + n, s->in_len - (size_t)n);
        s->in_len -= (size_t)n;
    }
}

enum { PTY_MORE = 1, PTY_EMPTY = 0, PTY_EOF = -1 };

/* Read what the PTY has now, up to one READ_CHUNK. */
static int pty_read(pe_term_session *s)
{
    static unsigned char buf[READ_CHUNK]; /* loop thread only */
    size_t len = 0;
    int r = PTY_MORE;

    /* A PTY hands out about 4 KiB per read: gather up to READ_CHUNK into
     * one message per viewer rather than one per read. */
    for (int i = 0; i < MAX_READS && len < sizeof(buf); i++) {
        ssize_t n = read(shell_pty(s), buf + len, sizeof(buf) - len);
        if (n > 0) {
            len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        /* EIO: every slave fd is closed (the shell exited). */
        r = n < 0 && errno == EAGAIN ? PTY_EMPTY : PTY_EOF;
        break;
    }
    if (len > 0)
        session_output(s, buf, len);
    return r;
}

static void on_pty(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    pe_term_session *s = ud;

    if (events & EPOLLOUT)
        pty_flush_input(s);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (pty_read(s) == PTY_EOF || (events & (EPOLLHUP | EPOLLERR) && !(events & EPOLLIN))) {
            /* Nothing more will come; stop watching, or HUP would spin.
             * The pidfd tells when the shell is gone. */
            s->pty_eof = true;
            pe_ev_io_stop(s->pty_io);
            s->pty_io = NULL;
            return;
        }
    }
    if (s->state == ST_RUNNING)
        pty_watch(s);
}

/* ---- ending ------------------------------------------------------------- */

static const char *signal_name(int code)
{
    const char *abbrev = code > 128 ? sigabbrev_np(code - 128) : NULL;
    static char buf[32];

    if (abbrev == NULL)
        return NULL;
    snprintf(buf, sizeof(buf), "SIG%s", abbrev);
    return buf;
}

/* Tell every viewer why the session ends and close them. */
static void session_close_viewers(pe_term_session *s, bool exited, const char *why)
{
    char reason[64];

    snprintf(reason, sizeof(reason), "exit %d", s->exit_code);
    while (s->viewers) {
        viewer *v = s->viewers;
        if (!exited) {
            viewer_drop(v, s->d->draining ? 1001 : 1011, why);
            continue;
        }
        if (v->proto == PE_TERM_WS_CF) {
            json_t *m = json_pack("{s:s,s:i}", "type", "exit", "code", s->exit_code);
            if (signal_name(s->exit_code))
                json_object_set_new(m, "signal", json_string(signal_name(s->exit_code)));
            cf_control(v, m);
        } else if (v->proto == PE_TERM_SSE) {
            sse_event(v, "exit", json_pack("{s:i}", "code", s->exit_code));
        } else if (v->proto == PE_TERM_SSE_B64) {
            /* upstream's SSH gateway knows no exit code: the channel closed */
            static const char close_event[] = "event: close\ndata: closed\n\n";
            pe_http_stream_write(v->st, close_event, sizeof(close_event) - 1);
        }
        viewer_drop(v, 1000, v->proto == PE_TERM_WS_B64 ? "closed" : reason);
    }
}

static void session_unlink(pe_term_session *s)
{
    struct pe_terminals *t = table(s->d);

    if (s->prev)
        s->prev->next = s->next;
    else if (t->head == s)
        t->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    t->n--;
}

/* Free once nothing refers to s any more: ended, and the shell reaped (or
 * never started, and the exec job done). */
static void session_maybe_free(pe_term_session *s)
{
    if (s->state != ST_ENDING || s->starting || (s->have_proc && !s->reaped))
        return;
    pe_ev_io_stop(s->pty_io);
    pe_ev_io_stop(s->pid_io);
    pe_ev_timer_stop(s->idle);
    if (s->have_proc)
        shell_close(s);
    pe_daemon_release(s->d, s->sandbox_id);
    free(s->in);
    free(s->key);
    free(s->did);
    free(s->sandbox_id);
    free(s);
}

/* Leave the table (a new viewer of the key gets a new shell) and close
 * the viewers. exited: with the shell's exit code; else with why. */
static void session_end(pe_term_session *s, bool exited, const char *why)
{
    if (s->state == ST_ENDING)
        return;
    s->state = ST_ENDING;
    session_unlink(s);
    session_close_viewers(s, exited, why);
    pe_ev_timer_stop(s->idle);
    s->idle = NULL;
    if (s->have_proc && !s->reaped)
        shell_kill(s);
    session_maybe_free(s);
}

static void on_shell_exit(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    pe_term_session *s = ud;
    pe_err err;
    int code = -1;

    /* The last output first: the shell's final words come before its exit. */
    if (s->pty_io && !s->pty_eof)
        while (pty_read(s) == PTY_MORE)
            ;
    pe_ev_io_stop(s->pid_io);
    s->pid_io = NULL;
    if (shell_wait(s, &code, &err) < 0)
        pe_log_warn("terminal %s: %s", s->sandbox_id, err.msg);
    s->reaped = true;
    s->exit_code = code;
    pe_log_info("terminal %s: shell exited with %d", s->sandbox_id, code);
    if (s->state != ST_ENDING)
        session_end(s, true, NULL);
    else
        session_maybe_free(s);
}

static void on_idle(pe_ev_timer *t, void *ud)
{
    pe_term_session *s = ud;

    if (s->n_viewers > 0)
        return;
    pe_log_info("terminal %s: no viewer for %gs, ending the session", s->sandbox_id,
                s->d->terminal_idle);
    session_end(s, false, "idle");
}

/* ---- starting the shell (worker) ---------------------------------------- */

struct start_job {
    pe_daemon *d;
    pe_term_session *s;
    char *sandbox_id;
    unsigned cols, rows;
    pe_proc proc;
    bool remote;
    pe_provider_proc rproc;
    bool ok;
    bool resumed; /* the sandbox was paused: this session resumed it */
    pe_err err;
};

/* The sandbox's variables and secrets as "K=V", plus TERM. */
static char **shell_env(pe_daemon *d, const char *sandbox_id)
{
    size_t cap = 2, n = 0;
    char **env = pe_xcalloc(cap, sizeof(*env));
    pe_err err;
    pe_store *st = pe_daemon_store(d, &err);

    env[n++] = pe_xstrdup("TERM=xterm-256color");
    for (int kind = PE_STORE_VARIABLE; st && kind <= PE_STORE_SECRET; kind++) {
        pe_store_kv *list = NULL;
        size_t k = 0;
        if (pe_store_kv_list(st, kind, sandbox_id, &list, &k, &err) < 0)
            continue;
        env = pe_xrealloc(env, (cap = n + k + 1) * sizeof(*env));
        for (size_t i = 0; i < k; i++) {
            unsigned char *plain = NULL;
            size_t plen = 0;
            if (list[i].key[0] == '\0' || strchr(list[i].key, '='))
                continue;
            if (kind == PE_STORE_VARIABLE) {
                env[n++] = pe_xasprintf("%s=%s", list[i].key, list[i].value);
            } else if (pe_auth_unseal(d->auth, list[i].value, &plain, &plen, &err) == 0) {
                env[n++] = pe_xasprintf("%s=%s", list[i].key, (const char *)plain);
                pe_auth_plain_free(plain);
            }
        }
        pe_store_kv_list_free(list, k);
    }
    env[n] = NULL;
    return env;
}

/* A remote sandbox's shell: the provider's PTY, with the sandbox's
 * variables and secrets (lib/sandbox). false: the sandbox is local. */
static bool start_remote(struct start_job *j)
{
    /* the providers' images have bash; those that take no command ignore it */
    char *argv[] = {(char *)"bash", (char *)"-i", NULL};
    pe_provider_exec_opts o = {.argv = argv,
                               .tty = true,
                               .cols = (unsigned short)j->cols,
                               .rows = (unsigned short)j->rows};
    pe_store *st = pe_daemon_store(j->d, &j->err);
    pe_store_sandbox sb;
    int r;

    if (st == NULL || pe_store_sandbox_get(st, j->sandbox_id, &sb, &j->err) < 0)
        return false; /* the local start says what is wrong */
    if (!pe_sandbox_is_remote(&sb)) {
        pe_store_sandbox_clear(&sb);
        return false;
    }
    j->remote = true;
    pe_err_clear(&j->err);
    /* paused there (by this node or another): resumed for the shell */
    r = pe_daemon_wake_row(j->d, &sb, "terminal", &j->err);
    j->resumed = r > 0;
    j->ok = r >= 0 && pe_sandbox_exec_start(&j->d->sx, st, &sb, &o, &j->rproc, &j->err) == 0;
    pe_store_sandbox_clear(&sb);
    return true;
}

static void start_work(void *ud)
{
    struct start_job *j = ud;
    /* bash -i where the image has it, else sh -i; exec keeps one process. */
    char *argv[] = {(char *)"/bin/sh", (char *)"-c",
                    (char *)"if command -v bash >/dev/null 2>&1; then exec bash -i; "
                            "else exec sh -i; fi",
                    NULL};
    char **env = shell_env(j->d, j->sandbox_id);
    pe_proc_opts opts = {.argv = argv,
                         .env = env,
                         .tty = true,
                         .tty_cols = (unsigned short)j->cols,
                         .tty_rows = (unsigned short)j->rows};
    int r;

    pe_err_clear(&j->err);
    if (start_remote(j)) {
        pe_sandbox_env_free(env);
        return;
    }
    pe_err_clear(&j->err);
    /* A frozen sandbox would start a frozen shell: thaw it first. */
    r = pe_daemon_wake(j->d, j->sandbox_id, "terminal", &j->err);
    j->resumed = r > 0;
    j->ok =
        r >= 0 && pe_sandbox_proc_start(&j->d->sx, j->sandbox_id, &opts, &j->proc, &j->err) == 0;
    for (char **e = env; *e; e++) {
        memset(*e, 0, strlen(*e)); /* secrets */
        free(*e);
    }
    free(env);
}

static void session_running(pe_term_session *s, struct start_job *j)
{
    struct winsize ws = {.ws_row = (unsigned short)s->rows, .ws_col = (unsigned short)s->cols};
    pe_err err;
    int ended_fd;

    s->remote = j->remote;
    if (s->remote)
        s->rproc = j->rproc;
    else
        s->proc = j->proc;
    s->have_proc = true;
    fcntl(shell_pty(s), F_SETFL, fcntl(shell_pty(s), F_GETFL) | O_NONBLOCK);
    /* a resize while it started */
    if (s->remote && pe_provider_proc_resize(&s->rproc, (unsigned short)s->cols,
                                             (unsigned short)s->rows, &err) < 0)
        pe_log_warn("terminal %s: resize: %s", s->sandbox_id, err.msg);
    else if (!s->remote)
        ioctl(s->proc.pty_fd, TIOCSWINSZ, &ws);
    ended_fd = s->remote ? s->rproc.status_fd : s->proc.pidfd;
    s->pid_io = pe_ev_io_start(s->d->loop, ended_fd, EPOLLIN, on_shell_exit, s, &err);
    s->pty_events = EPOLLIN;
    s->pty_io = pe_ev_io_start(s->d->loop, shell_pty(s), EPOLLIN, on_pty, s, &err);
    if (s->pid_io == NULL || s->pty_io == NULL) {
        pe_log_warn("terminal %s: %s", s->sandbox_id, err.msg);
        session_end(s, false, "Session error");
        return;
    }
    s->state = ST_RUNNING;
    for (viewer *v = s->viewers; v; v = v->next)
        if (v->proto == PE_TERM_WS_CF)
            cf_control(v, json_pack("{s:s}", "type", "ready"));
    pty_flush_input(s);
    pty_watch(s);
}

static void start_done(void *ud)
{
    struct start_job *j = ud;
    pe_term_session *s = j->s;
    pe_daemon *d = j->d;
    char why[PE_ERR_MSG_MAX + 16];

    s->starting = false;
    if (!j->ok) {
        pe_log_warn("terminal %s: start shell: %s", j->sandbox_id, j->err.msg);
        snprintf(why, sizeof(why), "Session error: %.100s", j->err.msg);
        if (s->state == ST_ENDING)
            session_maybe_free(s);
        else
            session_end(s, false, why);
    } else if (s->state == ST_ENDING && j->remote) {
        /* Ended while starting: the pump is stopped, the remote shell
         * ends with its connection (no wait on the loop for its answer). */
        pe_provider_proc_kill(&j->rproc);
        pe_provider_proc_close(&j->rproc);
        session_maybe_free(s);
    } else if (s->state == ST_ENDING) {
        /* Ended while starting (idle, shutdown): nobody wants this shell. */
        s->proc = j->proc;
        s->have_proc = true;
        pe_proc_signal(&s->proc, SIGKILL);
        pe_proc_wait(&s->proc, &s->exit_code, &j->err);
        s->reaped = true;
        session_maybe_free(s);
    } else {
        if (j->resumed) { /* said first, in the scrollback for later viewers too */
            static const char note[] = "[pocketenv: the sandbox was paused; this terminal "
                                       "resumed it]\r\n";
            session_output(s, (const unsigned char *)note, sizeof(note) - 1);
        }
        session_running(s, j);
    }
    free(j->sandbox_id);
    free(j);
    if (--d->inflight == 0 && d->draining)
        pe_ev_stop(d->loop);
}

/* ---- sessions ----------------------------------------------------------- */

pe_term_session *pe__term_find(pe_daemon *d, const char *key)
{
    for (pe_term_session *s = table(d)->head; s; s = s->next)
        if (strcmp(s->key, key) == 0)
            return s;
    return NULL;
}

/* The oldest session without viewers, of did (NULL: of anyone). */
static pe_term_session *oldest_unwatched(struct pe_terminals *t, const char *did)
{
    pe_term_session *best = NULL;

    for (pe_term_session *s = t->head; s; s = s->next)
        if (s->n_viewers == 0 && s->state != ST_ENDING && (did == NULL || !strcmp(s->did, did)) &&
            (best == NULL || s->created_ns < best->created_ns))
            best = s;
    return best;
}

/* Room for one more session of did, ending an abandoned one if need be. */
static int make_room(pe_daemon *d, const char *did, pe_err *err)
{
    struct pe_terminals *t = table(d);
    unsigned mine = 0;
    pe_term_session *victim;

    for (pe_term_session *s = t->head; s; s = s->next)
        mine += strcmp(s->did, did) == 0;
    if (mine >= d->terminals_per_user) {
        if ((victim = oldest_unwatched(t, did)) == NULL)
            return pe_err_set(err, PE_XRPC_ERATE, 0,
                              "you have %u terminal sessions with viewers: close one first",
                              d->terminals_per_user);
        pe_log_info("terminal %s: reclaimed (the user's session limit)", victim->sandbox_id);
        session_end(victim, false, "reclaimed: too many sessions");
    }
    if (t->n >= PE_TERM_MAX) {
        if ((victim = oldest_unwatched(t, NULL)) == NULL)
            return pe_err_set(err, PE_XRPC_EBUSY, 0, "too many terminal sessions (%d)",
                              PE_TERM_MAX);
        pe_log_info("terminal %s: reclaimed (the daemon's session limit)", victim->sandbox_id);
        session_end(victim, false, "reclaimed: too many sessions");
    }
    return 0;
}

pe_term_session *pe__term_create(pe_daemon *d, const char *key, const char *did,
                                 const char *sandbox_id, unsigned cols, unsigned rows, pe_err *err)
{
    struct pe_terminals *t = table(d);
    pe_term_session *s;
    struct start_job *j;

    if (make_room(d, did, err) < 0)
        return NULL;
    s = pe_xcalloc(1, sizeof(*s));
    s->d = d;
    s->key = pe_xstrdup(key);
    s->did = pe_xstrdup(did);
    s->created_ns = pe_ev_now_ns();
    s->sandbox_id = pe_xstrdup(sandbox_id);
    s->cols = cols ? cols : 80;
    s->rows = rows ? rows : 24;
    s->state = ST_STARTING;
    s->starting = true;
    s->proc.pty_fd = s->proc.pidfd = s->proc.signal_pidfd = -1;
    s->rproc = (pe_provider_proc){-1, -1, -1, -1, -1, NULL, NULL, false, 0, 0};
    s->idle = pe_ev_timer_start(d->loop, 0, 0, on_idle, s, err);
    j = pe_xcalloc(1, sizeof(*j));
    j->d = d;
    j->s = s;
    j->sandbox_id = pe_xstrdup(sandbox_id);
    j->cols = s->cols;
    j->rows = s->rows;
    if (s->idle == NULL || pe_ev_submit(d->loop, start_work, start_done, j, err) < 0) {
        pe_ev_timer_stop(s->idle);
        free(j->sandbox_id);
        free(j);
        free(s->key);
        free(s->did);
        free(s->sandbox_id);
        free(s);
        err->code = PE_XRPC_EBUSY;
        return NULL;
    }
    d->inflight++;
    /* The idle stop leaves a sandbox alone while a session of it lives. */
    pe_daemon_hold(d, sandbox_id);
    s->next = t->head;
    if (s->next)
        s->next->prev = s;
    t->head = s;
    t->n++;
    /* Nobody watches yet: a session made and never attached (an /ssh/connect
     * nobody streams) ends as an abandoned one does. The first viewer's
     * attach disarms it. */
    pe_ev_timer_set(s->idle, (uint64_t)(d->terminal_idle * 1e9) + 1, 0, NULL);
    return s;
}

int pe__term_input(pe_term_session *s, const char *data, size_t len, pe_err *err)
{
    if (s->state == ST_ENDING)
        return pe_err_set(err, PE_ESTATE, 0, "the session has ended");
    if (len == 0) /* an empty message: nothing to type (and data may be NULL) */
        return 0;
    if (len > INPUT_MAX - s->in_len)
        return pe_err_set(err, PE_XRPC_EBUSY, 0, "the shell is not reading its input");
    pe_daemon_touch(s->d, s->sandbox_id);
    s->in = pe_xrealloc(s->in, s->in_len + len + 1);
    memcpy(s->in + s->in_len, data, len);
    s->in_len += len;
    if (s->state == ST_RUNNING) {
        pty_flush_input(s);
        pty_watch(s);
    }
    return 0;
}

void pe__term_resize(pe_term_session *s, unsigned cols, unsigned rows)
{
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};

    s->cols = cols;
    s->rows = rows;
    /* TIOCSWINSZ also sends SIGWINCH to the shell's foreground job. */
    if (s->state == ST_RUNNING && s->remote) {
        pe_err err;
        if (pe_provider_proc_resize(&s->rproc, (unsigned short)cols, (unsigned short)rows, &err) <
            0)
            pe_log_warn("terminal %s: resize: %s", s->sandbox_id, err.msg);
    } else if (s->state == ST_RUNNING && ioctl(s->proc.pty_fd, TIOCSWINSZ, &ws) < 0) {
        pe_log_warn("terminal %s: resize: %s", s->sandbox_id, strerror(errno));
    }
}

/* {"cols": int, "rows": int}, "type": "resize" too when need_type: true
 * with the raw values, false for anything else. */
static bool resize_values(const char *data, size_t len, bool need_type, json_int_t *cols,
                          json_int_t *rows)
{
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *c = json_object_get(o, "cols"), *r = json_object_get(o, "rows");
    const char *type = json_string_value(json_object_get(o, "type"));
    bool ok = json_is_object(o) && json_is_integer(c) && json_is_integer(r) &&
              (!need_type || (type && strcmp(type, "resize") == 0));

    *cols = ok ? json_integer_value(c) : 0;
    *rows = ok ? json_integer_value(r) : 0;
    json_decref(o);
    return ok;
}

bool pe__term_parse_resize(const char *data, size_t len, bool need_type, unsigned *cols,
                           unsigned *rows)
{
    json_int_t cv, rv;

    if (!resize_values(data, len, need_type, &cv, &rv) || cv < 1 || cv > PE_TERM_COLS_MAX ||
        rv < 1 || rv > PE_TERM_ROWS_MAX)
        return false;
    *cols = (unsigned)cv;
    *rows = (unsigned)rv;
    return true;
}

int pe__term_resize_message(const char *data, size_t len, bool need_type, unsigned *cols,
                            unsigned *rows)
{
    json_int_t cv, rv;

    if (!resize_values(data, len, need_type, &cv, &rv))
        return PE_TERM_NOT_RESIZE;
    /* A client without a terminal reports 0x0: nothing to apply. A size
     * past the maximum is clamped. Neither is ever typed into the shell. */
    if (cv < 1 || rv < 1)
        return PE_TERM_RESIZE_IGNORE;
    *cols = (unsigned)(cv > PE_TERM_COLS_MAX ? PE_TERM_COLS_MAX : cv);
    *rows = (unsigned)(rv > PE_TERM_ROWS_MAX ? PE_TERM_ROWS_MAX : rv);
    return PE_TERM_RESIZE_OK;
}

/* The session's own name: the last part of its key (terminal-http.c). */
static const char *session_name(const pe_term_session *s)
{
    const char *sep = strrchr(s->key, '\x1f');

    return sep ? sep + 1 : s->key;
}

void pe__term_close(pe_term_session *s)
{
    /* As if the shell had ended: viewers see a clean close. */
    session_end(s, true, NULL);
}

/* ---- attaching ---------------------------------------------------------- */

static void on_ws_message(pe_http_ws *ws, bool binary, const char *data, size_t len, void *ud)
{
    viewer *v = ud;
    pe_term_session *s = v->s;
    unsigned cols, rows;
    int kind;
    pe_err err;

    if (v->proto == PE_TERM_WS_CF && !binary) {
        /* Control frames; only resize is defined for clients. */
        kind = pe__term_resize_message(data, len, true, &cols, &rows);
        if (kind == PE_TERM_RESIZE_OK)
            pe__term_resize(s, cols, rows);
        else if (kind == PE_TERM_NOT_RESIZE)
            cf_control(v, json_pack("{s:s,s:s}", "type", "error", "message",
                                    "expected {\"type\":\"resize\",\"cols\",\"rows\"}"));
        return;
    }
    /* /tty, /pty, /ssh: a resize object, or keystrokes (upstream: anything
     * else). A resize is never typed, whatever its size. */
    if (v->proto != PE_TERM_WS_CF && len > 0 && data[0] == '{' &&
        (kind = pe__term_resize_message(data, len, true, &cols, &rows)) != PE_TERM_NOT_RESIZE) {
        if (kind == PE_TERM_RESIZE_OK)
            pe__term_resize(s, cols, rows);
        return;
    }
    if (pe__term_input(s, data, len, &err) < 0 && s->state != ST_ENDING)
        viewer_drop(v, 1008, "input backlog full");
}

static void on_ws_drain(pe_http_ws *ws, void *ud)
{
    session_check_flow(((viewer *)ud)->s);
}

static void on_ws_close(pe_http_ws *ws, unsigned code, void *ud)
{
    viewer_unlink(ud);
}

static void on_sse_drain(pe_http_stream *st, void *ud)
{
    session_check_flow(((viewer *)ud)->s);
}

static void on_sse_close(pe_http_stream *st, void *ud)
{
    viewer_unlink(ud);
}

static void on_sse_ping(pe_ev_timer *t, void *ud)
{
    viewer *v = ud;

    pe_http_stream_write(v->st, ": ping\n\n", 8);
}

void pe__term_attach(pe_term_session *s, pe_http_request *req, int proto, int64_t iat)
{
    static const pe_http_ws_callbacks wcb = {
        .on_message = on_ws_message, .on_drain = on_ws_drain, .on_close = on_ws_close};
    static const pe_http_stream_callbacks scb = {.on_drain = on_sse_drain,
                                                 .on_close = on_sse_close};
    static const char *const sse_headers[] = {"Cache-Control", "no-cache, no-transform",
                                              "X-Accel-Buffering", "no", NULL};
    viewer *v;

    if (s->n_viewers >= MAX_VIEWERS) {
        pe_http_respond_error(req, 503, "ServiceUnavailable", "too many viewers of this session");
        return;
    }
    v = pe_xcalloc(1, sizeof(*v));
    v->s = s;
    v->proto = proto;
    v->iat = iat;
    if (proto == PE_TERM_SSE || proto == PE_TERM_SSE_B64) {
        v->st = pe_http_respond_stream(req, 200, "text/event-stream", sse_headers, &scb, v);
        v->ping = pe_ev_timer_start(s->d->loop, SSE_PING_NS, SSE_PING_NS, on_sse_ping, v, NULL);
    } else {
        v->ws = pe_http_upgrade_ws(req, &wcb, WS_MESSAGE_MAX, v);
    }
    if (v->st == NULL && v->ws == NULL) {
        pe_ev_timer_stop(v->ping);
        free(v);
        return;
    }
    v->next = s->viewers;
    if (v->next)
        v->next->prev = v;
    s->viewers = v;
    s->n_viewers++;
    if (s->idle)
        pe_ev_timer_set(s->idle, 0, 0, NULL);
    if (proto == PE_TERM_WS_CF && s->state == ST_RUNNING)
        cf_control(v, json_pack("{s:s}", "type", "ready"));
    if (proto == PE_TERM_SSE_B64) {
        char *msg = pe_xasprintf("event: connected\ndata: %s\n\n", session_name(s));
        pe_http_stream_write(v->st, msg, strlen(msg));
        free(msg);
    }
    viewer_replay(s, v);
}

void pe_daemon_terminal_recheck(pe_daemon *d)
{
    struct pe_terminals *t = d->terms;

    for (pe_term_session *s = t ? t->head : NULL; s; s = s->next) {
        viewer *next;
        for (viewer *v = s->viewers; v; v = next) {
            next = v->next;
            if (pe_auth_revoked(d->auth, s->did, v->iat)) {
                pe_log_info("terminal %s: closing a viewer: its token was revoked", s->sandbox_id);
                viewer_drop(v, 1008, "token revoked");
            }
        }
    }
}

void pe_daemon_terminal_shutdown(pe_daemon *d)
{
    struct pe_terminals *t = d->terms;

    pe__term_ssh_shutdown(d);
    if (t == NULL)
        return;
    while (t->head) {
        pe_term_session *s = t->head;
        bool wait = s->have_proc && !s->reaped;
        session_end(s, false, "daemon shutting down");
        /* The loop is stopped: reap here (SIGKILL was sent, it is quick). */
        if (wait) {
            pe_err err;
            /* a remote shell is not waited for: closing its pump ends it */
            if (!s->remote)
                shell_wait(s, &s->exit_code, &err);
            s->reaped = true;
            session_maybe_free(s);
        }
    }
    free(t);
    d->terms = NULL;
}
