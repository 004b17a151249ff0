/* pocketenv console|shell|ssh|s [SANDBOX]: a terminal in a sandbox.
 *
 * Speaks the daemon's Cloudflare-style terminal WebSocket
 * (/v1/sandboxes/:id/ws/terminal?t=TOKEN, reference §4.4): binary frames
 * are raw terminal bytes both ways, text frames are JSON control messages
 * (server: ready, error, exit{code}; client: resize{cols, rows}). Binary,
 * so nothing is re-encoded on the way. WebSocket framing is libwslay's;
 * the opening handshake (one HTTP request) and Sec-WebSocket-Accept
 * (SHA-1, base64: nettle) are the only parts written here, because Debian's
 * libcurl is built without WebSocket support.
 *
 * The local terminal is in raw mode while connected and restored on every
 * way out (exit, detach, lost connection, SIGTERM/SIGHUP/SIGINT/SIGQUIT)
 * and while stopped by SIGTSTP. Signals reach the loop through a
 * self-pipe, so the restore runs in normal context; raw mode sends Ctrl-C
 * to the sandbox as a byte, so a SIGINT here came from someone else and
 * ends the console like SIGTERM. Window
 * size changes (SIGWINCH) are sent as resize messages. Ctrl-] detaches:
 * the shell keeps running in its session and the next console reattaches,
 * with the recent screen replayed. Exit code: the shell's, 0 on detach,
 * 1 if the connection fails; after one of those signals the console ends
 * by it once the terminal is restored, so its parent sees why. Without a
 * SANDBOX, the first running one. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "api.h"
#include "cli.h"
#include "core/util.h"

#define DETACH_KEY 0x1d /* Ctrl-] */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define HANDSHAKE_MAX 8192
#define EXIT_API 1

static int sig_pipe[2] = {-1, -1};
static int ended_by; /* the signal that ended the session, 0 if none */
static struct termios saved_tio;
static bool tio_saved, at_exit;

static void restore_terminal(void)
{
    if (tio_saved) {
        tcsetattr(0, TCSAFLUSH, &saved_tio);
        tio_saved = false;
    }
}

static void on_signal(int signo)
{
    unsigned char b = (unsigned char)signo;
    int saved = errno;
    ssize_t r = write(sig_pipe[1], &b, 1);

    (void)r;
    errno = saved;
}

/* Watch signo through sig_pipe, unless it was ignored when we started
 * (nohup, a background job's SIGINT): that choice is our caller's. */
static void catch_signal(int signo)
{
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART}, old;

    if (sigaction(signo, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
        return;
    sigemptyset(&sa.sa_mask);
    sigaction(signo, &sa, NULL);
}

static void raw_mode(void)
{
    struct termios raw;

    if (!isatty(0) || tcgetattr(0, &saved_tio) < 0)
        return;
    tio_saved = true;
    if (!at_exit) {
        atexit(restore_terminal);
        at_exit = true;
    }
    raw = saved_tio;
    cfmakeraw(&raw);
    tcsetattr(0, TCSAFLUSH, &raw);
}

/* ---- the connection ---- */

typedef struct conn {
    int fd;
    char pre[HANDSHAKE_MAX]; /* bytes read past the handshake's answer */
    size_t pre_len, pre_off;
    bool ready, closed, exited;
    int exit_code;
    char error[256];
} conn;

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    conn *c = ud;
    ssize_t n;

    if (c->pre_off < c->pre_len) {
        n = (ssize_t)(c->pre_len - c->pre_off < len ? c->pre_len - c->pre_off : len);
        memcpy(buf, c->pre + c->pre_off, (size_t)n);
        c->pre_off += (size_t)n;
        return n;
    }
    n = recv(c->fd, buf, len, 0);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    conn *c = ud;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);

    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EINTR)
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static int on_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    return getrandom(buf, len, 0) == (ssize_t)len ? 0 : -1;
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *s = p;

    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void send_resize(wslay_event_context_ptr ctx)
{
    struct winsize ws;
    char msg[80];
    struct wslay_event_msg m;

    if (ioctl(1, TIOCGWINSZ, &ws) < 0 && ioctl(0, TIOCGWINSZ, &ws) < 0)
        return;
    if (ws.ws_col == 0 || ws.ws_row == 0)
        return;
    snprintf(msg, sizeof(msg), "{\"type\":\"resize\",\"cols\":%u,\"rows\":%u}", ws.ws_col,
             ws.ws_row);
    m = (struct wslay_event_msg){WSLAY_TEXT_FRAME, (const uint8_t *)msg, strlen(msg)};
    wslay_event_queue_msg(ctx, &m);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    conn *c = ud;

    if (arg->opcode == WSLAY_BINARY_FRAME) {
        write_all(1, arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_TEXT_FRAME) {
        json_t *j = json_loadb((const char *)arg->msg, arg->msg_length, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));

        if (type && strcmp(type, "ready") == 0) {
            c->ready = true;
            send_resize(ctx);
        } else if (type && strcmp(type, "exit") == 0) {
            c->exited = true;
            c->exit_code = (int)json_integer_value(json_object_get(j, "code"));
        } else if (type && strcmp(type, "error") == 0) {
            snprintf(c->error, sizeof(c->error), "%s",
                     json_string_value(json_object_get(j, "message")) ?: "terminal error");
        }
        json_decref(j);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        c->closed = true;
        if (!c->exited && !c->error[0] && arg->status_code != WSLAY_CODE_NORMAL_CLOSURE)
            snprintf(c->error, sizeof(c->error), "the daemon closed the terminal (%u)",
                     arg->status_code);
    }
}

/* ---- opening handshake ---- */

/* url: only to name the daemon in an error. */
static int dial(const char *host, const char *port, const char *url, pe_err *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    int fd = -1, r;

    r = getaddrinfo(host, port, &hints, &res);
    if (r != 0)
        return pe_err_set(err, PE_API_ECONNECT, 0, "resolve %s: %s", host, gai_strerror(r));
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return pe_err_set(err, PE_API_ECONNECT, errno,
                          "cannot reach the Pocketenv daemon at %s: %s", url, strerror(errno));
    return fd;
}

static void accept_key(const char *key, char *out)
{
    struct sha1_ctx sha;
    uint8_t digest[SHA1_DIGEST_SIZE];

    sha1_init(&sha);
    sha1_update(&sha, strlen(key), (const uint8_t *)key);
    sha1_update(&sha, strlen(WS_GUID), (const uint8_t *)WS_GUID);
    sha1_digest(&sha, sizeof(digest), digest);
    base64_encode_raw(out, sizeof(digest), digest);
    out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

/* Connect to url's host and upgrade path to a WebSocket. */
static int ws_open(const char *url, const char *path, conn *c, pe_err *err)
{
    char host[256], port[8] = "80", key[32], want[40], *end;
    uint8_t nonce[16];
    const char *p, *hp;
    cleanup_free char *req = NULL;
    size_t len = 0, hl;

    if (strncmp(url, "http://", 7) != 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "console needs an http:// daemon URL (POCKETENV_API_URL is %s)", url);
    hp = url + 7;
    hl = strcspn(hp, "/");
    if (hl == 0 || hl >= sizeof(host))
        return pe_err_set(err, PE_EINVAL, 0, "bad daemon URL %s", url);
    memcpy(host, hp, hl);
    host[hl] = '\0';
    if (host[0] == '[') { /* [v6]:port */
        char *close = strchr(host, ']');
        if (close == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "bad daemon URL %s", url);
        if (close[1] == ':')
            snprintf(port, sizeof(port), "%.5s", close + 2);
        *close = '\0';
        memmove(host, host + 1, strlen(host));
    } else if ((end = strrchr(host, ':')) != NULL) {
        snprintf(port, sizeof(port), "%.5s", end + 1);
        *end = '\0';
    }
    c->fd = dial(host, port, url, err);
    if (c->fd < 0)
        return -1;
    if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
        return pe_err_sys(err, "getrandom");
    base64_encode_raw(key, sizeof(nonce), nonce);
    key[BASE64_ENCODE_RAW_LENGTH(sizeof(nonce))] = '\0';
    accept_key(key, want);
    req = pe_xasprintf("GET %s%s HTTP/1.1\r\nHost: %.*s\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n",
                       hp + hl, path, (int)hl, hp, key);
    write_all(c->fd, req, strlen(req));
    /* The answer's head; what follows it is the WebSocket stream. */
    for (;;) {
        ssize_t n = recv(c->fd, c->pre + len, sizeof(c->pre) - 1 - len, 0);
        char *head_end;

        if (n <= 0)
            return pe_err_set(err, PE_API_ECONNECT, 0, "the daemon closed the connection");
        len += (size_t)n;
        c->pre[len] = '\0';
        head_end = strstr(c->pre, "\r\n\r\n");
        if (head_end == NULL) {
            if (len == sizeof(c->pre) - 1)
                return pe_err_set(err, PE_API_ECONNECT, 0, "answer too long");
            continue;
        }
        *head_end = '\0';
        c->pre_off = (size_t)(head_end + 4 - c->pre);
        c->pre_len = len;
        break;
    }
    if (strncmp(c->pre, "HTTP/1.1 101", 12) != 0) {
        /* An XRPC-style error body may follow; the status line is enough. */
        const char *sp = strchr(c->pre, ' ');
        int status = sp ? atoi(sp + 1) : 0;
        return pe_err_set(err, PE_API_EHTTP, 0, "%s",
                          status == 401   ? "not logged in (token refused)"
                          : status == 404 ? "sandbox not found"
                          : status == 400 ? "the sandbox is not running"
                                          : "the daemon refused the terminal");
    }
    for (p = c->pre; (p = strcasestr(p, "\r\nSec-WebSocket-Accept:")) != NULL; p++) {
        const char *v = p + strlen("\r\nSec-WebSocket-Accept:");
        while (*v == ' ')
            v++;
        if (strncmp(v, want, strlen(want)) == 0)
            return 0;
    }
    return pe_err_set(err, PE_API_ECONNECT, 0, "the daemon's WebSocket handshake is wrong");
}

/* ---- the session ---- */

/* A SIGTSTP from outside (raw mode sends Ctrl-Z to the sandbox as a byte):
 * give the terminal back, stop, and take it again when continued. SIGSTOP,
 * because a console started in its own session is an orphaned process
 * group, for which the kernel drops SIGTSTP's stop. */
static void suspend(wslay_event_context_ptr ctx)
{
    restore_terminal();
    raise(SIGSTOP);
    raw_mode();
    send_resize(ctx);
}

static int relay(conn *c)
{
    struct wslay_event_callbacks cb = {on_recv, on_send, on_genmask, NULL, NULL, NULL, on_msg};
    wslay_event_context_ptr ctx;
    bool stdin_open = true, detached = false;

    if (wslay_event_context_client_init(&ctx, &cb, c) != 0)
        return EXIT_API;
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    while (!c->closed && (wslay_event_want_read(ctx) || wslay_event_want_write(ctx))) {
        struct pollfd fds[3] = {
            {c->fd,
             (short)((wslay_event_want_read(ctx) ? POLLIN : 0) |
                     (wslay_event_want_write(ctx) ? POLLOUT : 0)),
             0},
            {c->ready && stdin_open ? 0 : -1, POLLIN, 0},
            {sig_pipe[0], POLLIN, 0},
        };
        /* wslay's buffer may still hold bytes read with the handshake */
        int timeout = c->pre_off < c->pre_len ? 0 : -1;

        if (poll(fds, 3, timeout) < 0 && errno != EINTR)
            break;
        if (fds[2].revents & POLLIN) {
            unsigned char s = 0;
            if (read(sig_pipe[0], &s, 1) == 1 && s == SIGWINCH)
                send_resize(ctx);
            else if (s == SIGTSTP)
                suspend(ctx);
            else if (s == SIGTERM || s == SIGHUP || s == SIGINT || s == SIGQUIT) {
                ended_by = s;
                break;
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            unsigned char buf[4096];
            ssize_t n = read(0, buf, sizeof(buf));
            if (n <= 0) {
                stdin_open = false; /* the shell keeps running until it exits */
            } else {
                unsigned char *k = tio_saved ? memchr(buf, DETACH_KEY, (size_t)n) : NULL;
                size_t send_n = k ? (size_t)(k - buf) : (size_t)n;
                if (send_n > 0) {
                    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, buf, send_n};
                    wslay_event_queue_msg(ctx, &m);
                }
                if (k) {
                    detached = true;
                    wslay_event_queue_close(ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
                }
            }
        }
        if (((fds[0].revents & POLLIN) || timeout == 0) && wslay_event_recv(ctx) != 0)
            break;
        if ((fds[0].revents & POLLOUT) || wslay_event_want_write(ctx))
            if (wslay_event_send(ctx) != 0)
                break;
        if (fds[0].revents & (POLLERR | POLLHUP) && !(fds[0].revents & POLLIN))
            break;
        if (c->exited && !wslay_event_get_close_sent(ctx))
            wslay_event_queue_close(ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    }
    wslay_event_context_free(ctx);
    restore_terminal();
    if (detached) {
        fprintf(stderr,
                "\r\n[detached: the shell keeps running; `pocketenv console` reattaches]\n");
        return 0;
    }
    if (ended_by) {
        fprintf(stderr,
                "\r\npocketenv: ended by SIG%s; the shell keeps running and `pocketenv console` "
                "reattaches\n",
                sigabbrev_np(ended_by));
        return EXIT_API;
    }
    if (c->exited)
        return c->exit_code >= 0 && c->exit_code <= 255 ? c->exit_code : EXIT_API;
    fprintf(stderr, "\r\npocketenv: %s\n", c->error[0] ? c->error : "terminal connection lost");
    return EXIT_API;
}

/* The sandbox to open: the one named, or the first running one. */
static int pick(pe_api *a, const char *name, char **id, pe_err *err)
{
    json_t *out = NULL, *prof = NULL, *params, *sb;
    int r;

    if (name) {
        params = json_pack("{s:s}", "id", name);
        r = pe_api_call(a, "io.pocketenv.sandbox.getSandbox", params, NULL, &out, err);
        json_decref(params);
        if (r < 0) {
            if (strcmp(a->error_name, "SandboxNotFound") == 0)
                pe_err_set(err, PE_API_EHTTP, 0, "sandbox %s not found", name);
            return -1;
        }
        sb = json_object_get(out, "sandbox");
        if (strcmp(json_string_value(json_object_get(sb, "status")) ?: "", "RUNNING") != 0) {
            json_decref(out);
            return pe_err_set(err, PE_API_EHTTP, 0,
                              "sandbox %s is not running: start it with `pocketenv start %s`", name,
                              name);
        }
    } else {
        if (pe_api_call(a, "io.pocketenv.actor.getProfile", NULL, NULL, &prof, err) < 0)
            return -1;
        params = json_pack("{s:s, s:i, s:b}", "did",
                           json_string_value(json_object_get(prof, "did")) ?: "", "limit", 1,
                           "isRunning", 1);
        r = pe_api_call(a, "io.pocketenv.actor.getActorSandboxes", params, NULL, &out, err);
        json_decref(params);
        json_decref(prof);
        if (r < 0)
            return -1;
        sb = json_array_get(json_object_get(out, "sandboxes"), 0);
        if (sb == NULL) {
            json_decref(out);
            return pe_err_set(err, PE_API_EHTTP, 0, "no sandbox is running");
        }
    }
    *id = pe_xstrdup(json_string_value(json_object_get(sb, "id")) ?: "");
    json_decref(out);
    return 0;
}

int pe_cmd_console(int argc, char **argv)
{
    cleanup_free char *id = NULL;
    cleanup_free char *path = NULL;
    cleanup_free char *token = NULL;
    json_t *out = NULL;
    conn c = {.fd = -1};
    pe_api a;
    pe_err err;
    int r;

    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: pocketenv console|shell|ssh|s [SANDBOX]\n");
        return 2;
    }
    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0 || pick(&a, argc == 2 ? argv[1] : NULL, &id, &err) < 0 ||
        pe_api_call(&a, "io.pocketenv.actor.getTerminalToken", NULL, NULL, &out, &err) < 0) {
        pe_api_close(&a);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    token = pe_xstrdup(json_string_value(json_object_get(out, "token")) ?: "");
    json_decref(out);
    path = pe_xasprintf("/v1/sandboxes/%s/ws/terminal?t=%s", id, token);
    r = ws_open(a.url, path, &c, &err);
    pe_api_close(&a);
    if (r < 0) {
        if (c.fd >= 0)
            close(c.fd);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "pocketenv: pipe: %s\n", strerror(errno));
        close(c.fd);
        return EXIT_API;
    }
    catch_signal(SIGWINCH);
    catch_signal(SIGTERM);
    catch_signal(SIGHUP);
    catch_signal(SIGINT);
    catch_signal(SIGQUIT);
    catch_signal(SIGTSTP);
    signal(SIGPIPE, SIG_IGN);
    raw_mode();
    r = relay(&c);
    close(c.fd);
    if (ended_by) { /* the terminal is restored: now end as the signal would have */
        signal(ended_by, SIG_DFL);
        raise(ended_by);
    }
    return r;
}
