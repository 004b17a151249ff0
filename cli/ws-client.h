/* A WebSocket client for the CLI's console and exec, and the local
 * terminal's raw mode and signals around it (ws-client.c). */
#ifndef PE_CLI_WS_CLIENT_H
#define PE_CLI_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <wslay/wslay.h>

#include "pocketenv/err.h"

#define PE_WS_HANDSHAKE_MAX 8192

typedef struct pe_ws_conn {
    int fd;
    char pre[PE_WS_HANDSHAKE_MAX]; /* bytes read past the handshake's answer */
    size_t pre_len, pre_off;
    bool ready, closed, exited;
    int exit_code;
    char error[256];
} pe_ws_conn;

/* Connect to url's host and upgrade path to a WebSocket; authorization
 * (a whole header value, "Bearer ...") may be NULL. */
int pe_ws_open(const char *url, const char *path, const char *authorization, pe_ws_conn *c,
               pe_err *err);
/* wslay callbacks reading and writing c->fd (and the bytes read past the
 * handshake first); on_msg is the caller's. */
void pe_ws_callbacks(struct wslay_event_callbacks *cb, wslay_event_on_msg_recv_callback on_msg);
void pe_ws_write_all(int fd, const void *p, size_t n);

/* The self-pipe signals are written to (one byte: the signal number). */
extern int pe_ws_sig_pipe[2];
/* Catch signo into pe_ws_sig_pipe, unless it was ignored when we started. */
void pe_ws_catch_signal(int signo);
/* Raw mode on stdin's terminal (if it is one), restored at exit too. */
void pe_ws_term_raw(void);
void pe_ws_term_restore(void);
extern bool pe_ws_tio_saved; /* the terminal is in raw mode */

#endif
