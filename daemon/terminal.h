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
#include <stdint.h>

#include "cluster.h"
#include "daemon.h"

enum pe_term_proto {
    PE_TERM_WS_TEXT, /* /tty, /pty ws: text frames of output, text input */
    PE_TERM_WS_CF,   /* Cloudflare style: binary output, JSON control frames */
    PE_TERM_SSE,     /* /tty, /pty stream: event: output / exit / error */
    PE_TERM_WS_B64,  /* /ssh ws: text frames of base64 output, text input */
    PE_TERM_SSE_B64, /* /ssh stream: event: connected, data: base64, close / error */
};

#define PE_TERM_COLS_MAX 1000
#define PE_TERM_ROWS_MAX 1000

typedef struct pe_term_session pe_term_session;

/* The live session for key, or NULL. */
pe_term_session *pe__term_find(pe_daemon *d, const char *key);
/* A new session of user did: the shell starts on the worker pool; viewers
 * may attach and type at once (input waits for the shell). When did has
 * d->terminals_per_user sessions, or the daemon PE_TERM_MAX, the oldest one
 * nobody watches (of did; for the daemon's limit, of anyone) is ended to
 * make room; if there is none, NULL with err set (PE_XRPC_ERATE for the
 * user's limit, PE_XRPC_EBUSY for the daemon's). So abandoned sessions
 * are reclaimed first, and one user cannot fill the table for everyone. */
pe_term_session *pe__term_create(pe_daemon *d, const char *key, const char *did,
                                 const char *sandbox_id, unsigned cols, unsigned rows, pe_err *err);

/* Attach the request as a viewer (upgrading it, or answering it with an
 * event stream), replaying the scrollback. The request is answered. iat:
 * of the token that opened it; pe_daemon_terminal_recheck closes the
 * viewer once its user's tokens issued then are revoked. */
void pe__term_attach(pe_term_session *s, pe_http_request *req, int proto, int64_t iat);

/* Sessions per user (the default of --terminals-per-user) and in all. */
#define PE_TERM_PER_USER 64
#define PE_TERM_MAX 1024
/* End the session as if its shell had exited (upstream's /ssh/disconnect):
 * viewers are closed cleanly, the shell is killed. s is gone after. */
void pe__term_close(pe_term_session *s);

/* Keystrokes for the shell. -1 (PE_XRPC_EBUSY) if the input backlog is full. */
int pe__term_input(pe_term_session *s, const char *data, size_t len, pe_err *err);
/* Resize the PTY (values already checked). */
void pe__term_resize(pe_term_session *s, unsigned cols, unsigned rows);
/* Parse {"cols": int, "rows": int} (with "type":"resize" when need_type);
 * false unless both are integers in range. */
bool pe__term_parse_resize(const char *data, size_t len, bool need_type, unsigned *cols,
                           unsigned *rows);

/* The same for a viewer's message: PE_TERM_NOT_RESIZE (something else),
 * PE_TERM_RESIZE_IGNORE (a resize with a size below 1: a client without a
 * terminal says 0x0), PE_TERM_RESIZE_OK (cols and rows, clamped to the
 * maximum). */
enum { PE_TERM_NOT_RESIZE, PE_TERM_RESIZE_IGNORE, PE_TERM_RESIZE_OK };
int pe__term_resize_message(const char *data, size_t len, bool need_type, unsigned *cols,
                            unsigned *rows);

/* ---- the HTTP side (terminal-http.c), shared with /ssh (terminal-ssh.c) ---- */

/* The caller's DID and the token's iat, or NULL after answering 401. A
 * token is taken from the header, then ?token=, then ?t=; an API token
 * from the URL only on a WebSocket handshake (websocket) without an Origin
 * header (upstream's CLI; no browser can pass for it), any other request
 * must put a terminal token there. */
char *pe__term_authenticate(pe_daemon *d, pe_http_request *req, bool websocket, int64_t *iat);

/* found(d, req, sandbox_id, ud) runs on the loop once the store said
 * whether ident (an id or a name) is a running sandbox of did: with its
 * id, or with NULL after req was answered (404 SandboxNotFound for a
 * missing or someone else's sandbox, 400 SandboxNotRunning, 503). The
 * request is deferred meanwhile; found always runs once (and frees ud). */
typedef void (*pe_term_found_fn)(pe_daemon *d, pe_http_request *req, const char *sandbox_id,
                                 void *ud);
void pe__term_find_sandbox(pe_daemon *d, pe_http_request *req, const char *did, const char *ident,
                           pe_term_found_fn found, void *ud);
/* The same for a route of sessions of its own (/ssh/connect), which are
 * not relayed by default: another node's sandbox is relayed there, and
 * then gets the answer (cluster.h) to remember where the session is. */
void pe__term_find_sandbox_then(pe_daemon *d, pe_http_request *req, const char *did,
                                const char *ident, pe_term_found_fn found, void *ud,
                                pe_cluster_relay_then_fn then);
/* Forget the sessions of other nodes /ssh remembers (shutdown). */
void pe__term_ssh_shutdown(pe_daemon *d);

/* A session's key: its user, sandbox (or another namespace that no
 * sandbox id can be) and name. malloc'd. */
char *pe__term_session_key(const char *did, const char *sandbox_id, const char *session);

/* The /ssh routes (terminal-ssh.c), registered with the others. */
int pe__term_register_ssh(pe_daemon *d, pe_err *err);

#endif
