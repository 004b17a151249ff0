/* pocketenv exec [-i] [-t] SANDBOX [--] COMMAND [ARGS...]: a command in a
 * sandbox over the daemon's streaming exec (/exec/:id/ws, our extension;
 * docs/design/daemon.md, "Streaming exec").
 *
 * One word is a shell command line (as upstream's CLI sends it: `exec web
 * 'cd /app && make'`); several are argv, so quoting is the caller's shell's
 * and `exec web sh -c 'exit 7'` exits 7. Output is written as it comes,
 * stdout and stderr apart, any bytes, however much. Standard input is sent
 * when it is not a terminal, or with -i, within the window the daemon
 * grants (so a large pipe never piles up in the daemon). -t runs the
 * command on a PTY: the local terminal is raw, its size follows. Without
 * -t, SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed to the command's
 * process group (Ctrl-C stops the remote command, not just the client),
 * and the client keeps going until the command says how it ended. Exit
 * code: the command's; 1 if the daemon refused or the connection failed;
 * 2 for bad arguments. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "api.h"
#include "cli.h"
#include "core/util.h"
#include "ws-client.h"

#define EXIT_API 1
#define EXIT_USAGE 2
#define CHUNK (64 * 1024)

typedef struct exec_state {
    pe_ws_conn c;
    bool tty, send_stdin;
    size_t window; /* stdin bytes the daemon will take now */
    bool started, stdin_done;
} exec_state;

static int usage(const char *why)
{
    fprintf(stderr,
            "pocketenv: %s\nusage: pocketenv exec [-i] [-t] SANDBOX [--] COMMAND [ARGS...]\n", why);
    return EXIT_USAGE;
}

static void send_text(wslay_event_context_ptr ctx, const char *text)
{
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, strlen(text)};

    wslay_event_queue_msg(ctx, &m);
}

static void send_resize(wslay_event_context_ptr ctx)
{
    struct winsize ws;
    char msg[80];

    if (ioctl(0, TIOCGWINSZ, &ws) < 0 || ws.ws_col == 0 || ws.ws_row == 0)
        return;
    snprintf(msg, sizeof(msg), "{\"type\":\"resize\",\"cols\":%u,\"rows\":%u}", ws.ws_col,
             ws.ws_row);
    send_text(ctx, msg);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    exec_state *x = ud;

    if (arg->opcode == WSLAY_BINARY_FRAME && arg->msg_length > 0) {
        pe_ws_write_all(arg->msg[0] == 2 ? 2 : 1, arg->msg + 1, arg->msg_length - 1);
    } else if (arg->opcode == WSLAY_TEXT_FRAME) {
        json_t *j = json_loadb((const char *)arg->msg, arg->msg_length, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));

        if (type && strcmp(type, "started") == 0) {
            x->started = true;
            if (x->tty)
                send_resize(ctx);
        } else if (type && strcmp(type, "window") == 0) {
            x->window += (size_t)json_integer_value(json_object_get(j, "bytes"));
        } else if (type && strcmp(type, "exit") == 0) {
            x->c.exited = true;
            x->c.exit_code = (int)json_integer_value(json_object_get(j, "code"));
        } else if (type && strcmp(type, "error") == 0) {
            snprintf(x->c.error, sizeof(x->c.error), "%s",
                     json_string_value(json_object_get(j, "message")) ?: "exec failed");
        }
        json_decref(j);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        x->c.closed = true;
        if (!x->c.exited && !x->c.error[0])
            snprintf(x->c.error, sizeof(x->c.error), "the daemon closed the exec (%u)",
                     arg->status_code);
    }
}

/* The command as the daemon takes it: {"command": line} for one word,
 * {"argv": [...]} for several; and the terminal's size with -t. */
static char *spec(int argc, char **argv, bool tty)
{
    json_t *o = json_object();
    struct winsize ws = {0};
    char *text;

    if (argc == 1) {
        json_object_set_new(o, "command", json_string(argv[0]));
    } else {
        json_t *a = json_array();
        for (int i = 0; i < argc; i++)
            json_array_append_new(a, json_string(argv[i]));
        json_object_set_new(o, "argv", a);
    }
    if (tty) {
        json_object_set_new(o, "tty", json_true());
        if (ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row) {
            json_object_set_new(o, "cols", json_integer(ws.ws_col));
            json_object_set_new(o, "rows", json_integer(ws.ws_row));
        }
    }
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* Read stdin within the window; at its end, tell the daemon. */
static void pump_stdin(exec_state *x, wslay_event_context_ptr ctx)
{
    unsigned char buf[CHUNK];
    size_t want = x->window < sizeof(buf) ? x->window : sizeof(buf);
    ssize_t n = read(0, buf, want);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        x->stdin_done = true;
        send_text(ctx, "{\"type\":\"eof\"}");
        return;
    }
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, buf, (size_t)n};
    wslay_event_queue_msg(ctx, &m);
    x->window -= (size_t)n;
}

static void on_signal_byte(exec_state *x, wslay_event_context_ptr ctx, unsigned char s)
{
    char msg[64];

    if (s == SIGWINCH) {
        if (x->tty)
            send_resize(ctx);
        return;
    }
    snprintf(msg, sizeof(msg), "{\"type\":\"signal\",\"signal\":\"%s\"}", sigabbrev_np(s));
    send_text(ctx, msg);
}

/* Send the command, then relay until it ends. */
static int relay(exec_state *x, const char *command)
{
    struct wslay_event_callbacks cb;
    wslay_event_context_ptr ctx;

    pe_ws_callbacks(&cb, on_msg);
    /* The callbacks get &x->c, which is x: it is exec_state's first member. */
    if (wslay_event_context_client_init(&ctx, &cb, &x->c) != 0)
        return EXIT_API;
    fcntl(x->c.fd, F_SETFL, O_NONBLOCK);
    send_text(ctx, command);
    if (!x->send_stdin) {
        x->stdin_done = true;
        send_text(ctx, "{\"type\":\"eof\"}");
    }
    while (!x->c.closed && (wslay_event_want_read(ctx) || wslay_event_want_write(ctx))) {
        bool stdin_ready = x->started && !x->stdin_done && x->window > 0;
        struct pollfd fds[3] = {
            {x->c.fd,
             (short)((wslay_event_want_read(ctx) ? POLLIN : 0) |
                     (wslay_event_want_write(ctx) ? POLLOUT : 0)),
             0},
            {stdin_ready ? 0 : -1, POLLIN, 0},
            {pe_ws_sig_pipe[0], POLLIN, 0},
        };
        int timeout = x->c.pre_off < x->c.pre_len ? 0 : -1;

        if (poll(fds, 3, timeout) < 0 && errno != EINTR)
            break;
        if (fds[2].revents & POLLIN) {
            unsigned char s = 0;
            if (read(pe_ws_sig_pipe[0], &s, 1) == 1)
                on_signal_byte(x, ctx, s);
        }
        if (fds[1].revents & (POLLIN | POLLHUP))
            pump_stdin(x, ctx);
        if (((fds[0].revents & POLLIN) || timeout == 0) && wslay_event_recv(ctx) != 0)
            break;
        if ((fds[0].revents & POLLOUT) || wslay_event_want_write(ctx))
            if (wslay_event_send(ctx) != 0)
                break;
        if (fds[0].revents & (POLLERR | POLLHUP) && !(fds[0].revents & POLLIN))
            break;
        if (x->c.exited && !wslay_event_get_close_sent(ctx))
            wslay_event_queue_close(ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    }
    wslay_event_context_free(ctx);
    pe_ws_term_restore();
    if (x->c.exited)
        return x->c.exit_code >= 0 && x->c.exit_code <= 255 ? x->c.exit_code : EXIT_API;
    fprintf(stderr, "%spocketenv: %s\n", x->tty ? "\r\n" : "",
            x->c.error[0] ? x->c.error : "the connection to the daemon was lost");
    return EXIT_API;
}

int pe_cmd_exec(int argc, char **argv)
{
    exec_state x = {.c = {.fd = -1}};
    cleanup_free char *path = NULL, *auth = NULL, *text = NULL;
    bool interactive = false;
    const char *sandbox = NULL;
    int i = 1, r;
    pe_api a;
    pe_err err;

    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '-' && argv[i][1]; i++) {
        for (const char *f = argv[i] + 1; *f; f++) {
            if (*f == 'i')
                interactive = true;
            else if (*f == 't')
                x.tty = true;
            else {
                char why[64];
                snprintf(why, sizeof(why), "unknown option -%c (exec takes -i and -t)", *f);
                return usage(why);
            }
        }
    }
    for (; i < argc && (strcmp(argv[i], "--interactive") == 0 || strcmp(argv[i], "--tty") == 0);
         i++)
        *(argv[i][2] == 'i' ? &interactive : &x.tty) = true;
    if (i < argc)
        sandbox = argv[i++];
    if (i < argc && strcmp(argv[i], "--") == 0)
        i++;
    if (sandbox != NULL && sandbox[0] == '-') {
        char why[300];
        snprintf(why, sizeof(why), "unknown option %.256s", sandbox);
        return usage(why);
    }
    if (sandbox == NULL || i >= argc)
        return usage(sandbox == NULL ? "missing SANDBOX" : "missing COMMAND");
    if (x.tty && !isatty(0))
        return usage("-t needs a terminal on standard input");
    x.send_stdin = interactive || x.tty || !isatty(0);
    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    path = pe_xasprintf("/exec/%s/ws", sandbox);
    auth = pe_xasprintf("Bearer %s", a.token);
    r = pe_ws_open(a.url, path, auth, &x.c, &err);
    pe_api_close(&a);
    if (r < 0) {
        if (x.c.fd >= 0)
            close(x.c.fd);
        if (strcmp(err.msg, "sandbox not found") == 0)
            fprintf(stderr, "pocketenv: sandbox %s not found\n", sandbox);
        else
            fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    text = spec(argc - i, argv + i, x.tty);
    if (pipe2(pe_ws_sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        fprintf(stderr, "pocketenv: pipe: %s\n", strerror(errno));
        close(x.c.fd);
        return EXIT_API;
    }
    pe_ws_catch_signal(SIGWINCH);
    pe_ws_catch_signal(SIGINT);
    pe_ws_catch_signal(SIGTERM);
    pe_ws_catch_signal(SIGHUP);
    pe_ws_catch_signal(SIGQUIT);
    if (x.tty)
        pe_ws_term_raw();
    r = relay(&x, text);
    close(x.c.fd);
    return r;
}
