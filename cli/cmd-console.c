/* pocketenv console|shell|ssh|s [SANDBOX]: a terminal in a sandbox.
 *
 * Speaks the daemon's Cloudflare-style terminal WebSocket
 * (/v1/sandboxes/:id/ws/terminal?t=TOKEN, reference §4.4): binary frames
 * are raw terminal bytes both ways, text frames are JSON control messages
 * (server: ready, error, exit{code}; client: resize{cols, rows}). Binary,
 * so nothing is re-encoded on the way. The WebSocket client and the local
 * terminal's modes are ws-client.c's, shared with exec.
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
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"
#include "ws-client.h"

#define DETACH_KEY 0x1d /* Ctrl-] */
#define EXIT_API 1

static int ended_by; /* the signal that ended the session, 0 if none */

/* ---- the connection ---- */

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
    pe_ws_conn *c = ud;

    if (arg->opcode == WSLAY_BINARY_FRAME) {
        pe_ws_write_all(1, arg->msg, arg->msg_length);
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

/* ---- the session ---- */

/* A SIGTSTP from outside (raw mode sends Ctrl-Z to the sandbox as a byte):
 * give the terminal back, stop, and take it again when continued. SIGSTOP,
 * because a console started in its own session is an orphaned process
 * group, for which the kernel drops SIGTSTP's stop. */
static void suspend(wslay_event_context_ptr ctx)
{
    pe_ws_term_restore();
    raise(SIGSTOP);
    pe_ws_term_raw();
    send_resize(ctx);
}

static int relay(pe_ws_conn *c)
{
    struct wslay_event_callbacks cb;
    wslay_event_context_ptr ctx;
    bool stdin_open = true, detached = false;

    pe_ws_callbacks(&cb, on_msg);
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
            {pe_ws_sig_pipe[0], POLLIN, 0},
        };
        /* wslay's buffer may still hold bytes read with the handshake */
        int timeout = c->pre_off < c->pre_len ? 0 : -1;

        if (poll(fds, 3, timeout) < 0 && errno != EINTR)
            break;
        if (fds[2].revents & POLLIN) {
            unsigned char s = 0;
            if (read(pe_ws_sig_pipe[0], &s, 1) == 1 && s == SIGWINCH)
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
                unsigned char *k = pe_ws_tio_saved ? memchr(buf, DETACH_KEY, (size_t)n) : NULL;
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
    pe_ws_term_restore();
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
        if (strcmp(json_string_value(json_object_get(sb, "status")) ?: "", "INITIALIZING") == 0) {
            /* Still starting: wait for it, as create and start do. */
            fprintf(stderr, "pocketenv: %s is starting; waiting for it...\n", name);
            json_decref(out);
            if (pe_cli_wait_running(name) != 0)
                return pe_err_set(err, PE_API_EHTTP, 0, "sandbox %s did not start", name);
            return pick(a, name, id, err);
        }
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
    pe_ws_conn c = {.fd = -1};
    pe_api a;
    pe_err err;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX", 0, 1))
        return pe_cli_usage("console|shell|ssh|s [SANDBOX]");
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
    r = pe_ws_open(a.url, path, NULL, &c, &err);
    pe_api_close(&a);
    if (r < 0) {
        if (c.fd >= 0)
            close(c.fd);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    if (pipe2(pe_ws_sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "pocketenv: pipe: %s\n", strerror(errno));
        close(c.fd);
        return EXIT_API;
    }
    pe_ws_catch_signal(SIGWINCH);
    pe_ws_catch_signal(SIGTERM);
    pe_ws_catch_signal(SIGHUP);
    pe_ws_catch_signal(SIGINT);
    pe_ws_catch_signal(SIGQUIT);
    pe_ws_catch_signal(SIGTSTP);
    signal(SIGPIPE, SIG_IGN);
    pe_ws_term_raw();
    r = relay(&c);
    close(c.fd);
    if (ended_by) { /* the terminal is restored: now end as the signal would have */
        signal(ended_by, SIG_DFL);
        raise(ended_by);
    }
    return r;
}
