/* Terminal sessions (terminal.c) and their HTTP front (terminal-http.c).
 *
 * A session is one shell on a PTY in a running sandbox, keyed by
 * (user, sandbox id, session name). Viewers attach over one of three
 * protocols and all see the same output; any of them can type and resize.
 * Everything here runs on the loop thread, except the exec job's work. */
#ifndef PE_DAEMON_TERMINAL_H
#define PE_DAEMON_TERMINAL_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon.h"

enum pe_term_proto {
    PE_TERM_WS_TEXT, /* /tty, /pty ws: text frames of output, text input */
    PE_TERM_WS_CF,   /* Cloudflare style: binary output, JSON control frames */
    PE_TERM_SSE,     /* /tty, /pty stream: event: output / exit / error */
};

#define PE_TERM_COLS_MAX 1000
#define PE_TERM_ROWS_MAX 1000

typedef struct pe_term_session pe_term_session;

/* The live session for key, or NULL. */
pe_term_session *pe__term_find(pe_daemon *d, const char *key);
/* A new session: the shell starts on the worker pool; viewers may attach
 * and type at once (input waits for the shell). NULL with err set when
 * the session limit is reached. */
pe_term_session *pe__term_create(pe_daemon *d, const char *key, const char *sandbox_id,
                                 unsigned cols, unsigned rows, pe_err *err);

/* Attach the request as a viewer (upgrading it, or answering it with an
 * event stream), replaying the scrollback. The request is answered. */
void pe__term_attach(pe_term_session *s, pe_http_request *req, int proto);
/* Keystrokes for the shell. -1 (PE_XRPC_EBUSY) if the input backlog is full. */
int pe__term_input(pe_term_session *s, const char *data, size_t len, pe_err *err);
/* Resize the PTY (values already checked). */
void pe__term_resize(pe_term_session *s, unsigned cols, unsigned rows);
/* Parse {"cols": int, "rows": int} (with "type":"resize" when need_type);
 * false unless both are integers in range. */
bool pe__term_parse_resize(const char *data, size_t len, bool need_type, unsigned *cols,
                           unsigned *rows);

#endif
