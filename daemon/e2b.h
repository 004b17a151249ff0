/* The E2B API's pieces (docs/e2b.md): e2b.c owns the routes, the key,
 * the control plane, the filesystem service and /files; e2b-process.c the
 * process service. Loop thread, but for the jobs' work. */
#ifndef PE_DAEMON_E2B_H
#define PE_DAEMON_E2B_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon.h"

/* What envd reports as its version: the SDK turns features on by it
 * (0.5.2 closeStdin, 0.5.7 octet-stream uploads). */
#define PE_E2B_ENVD_VERSION "0.5.7"

/* A Connect error answer to a unary call: status and {"code", "message"}. */
void pe__e2b_connect_error(pe_http_request *req, const char *code, const char *message);
/* The Connect code for a pe_err code. */
const char *pe__e2b_connect_code(int err_code);

/* Connect's streaming framing: a flag byte, a 4-byte big-endian length,
 * that many bytes of JSON. parse: buf must be exactly one envelope, not
 * compressed, of at most max bytes: its payload, or an ENV_ code. */
enum { ENV_OK = 0, ENV_SHORT = -1, ENV_LENGTH = -2, ENV_COMPRESSED = -3, ENV_TOO_BIG = -4 };
int pe__e2b_envelope_parse(const unsigned char *buf, size_t len, size_t max, const char **payload,
                           size_t *plen);
/* Write msg (taken) as one envelope to st (NULL: dropped). */
void pe__e2b_envelope_send(pe_http_stream *st, unsigned char flags, json_t *msg);
/* Answer a stream call refused before it began: 200 with one end-of-stream
 * envelope carrying the Connect error. */
void pe__e2b_refuse_stream(pe_http_request *req, const char *code, const char *message);
/* The request's one envelope as a JSON object, or NULL after answering
 * with the stream error that fits. */
json_t *pe__e2b_stream_request(pe_http_request *req, size_t max);

/* filesystem.Filesystem/WatchDir of running sandbox_id (e2b-watch.c):
 * answers req; stop every watch at shutdown. */
void pe__e2b_watch(pe_daemon *d, pe_http_request *req, const char *sandbox_id);
void pe__e2b_watch_shutdown(pe_daemon *d);

/* The process service: req is a POST to /process.Process/<method> of
 * running sandbox sandbox_id, the caller's (checked). Answers req. */
void pe__e2b_process(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id,
                     const char *method);
/* Kill every process (shutdown). */
void pe__e2b_process_shutdown(pe_daemon *d);

/* A helper command run to its end in a sandbox (worker threads): argv,
 * stdin copied from in_fd (-1: none), stdout kept up to out_max (more is
 * PE_XRPC_ETOOBIG, the rest read and dropped), stderr's first 4 KiB. */
struct pe__e2b_run {
    const char *sandbox_id;
    const char **argv;
    int in_fd;          /* stdin from this fd (-1: none) */
    size_t out_max;     /* stdout kept up to this; more is an error */
    char *out, *errout; /* malloc'd, NUL-terminated */
    size_t out_len, err_len;
    int code; /* its exit status */
};
int pe__e2b_run_in(pe_daemon *d, struct pe__e2b_run *r, pe_err *err);
void pe__e2b_run_clear(struct pe__e2b_run *r);

/* Worker: 1 and *sb filled (clear it) when sandbox_id runs on a remote
 * provider, whose envd calls go through lib/sandbox; 0 when it is this
 * daemon's own (or unknown: the local path says so); -1 without a store. */
int pe__e2b_remote_row(pe_daemon *d, const char *sandbox_id, pe_store_sandbox *sb, pe_err *err);

/* The code interpreter (e2b-interp.c): req is /execute or /contexts… of
 * running sandbox sandbox_id, the caller's (checked). Answers req. */
void pe__e2b_interp(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id);
/* End every execution (shutdown). */
void pe__e2b_interp_shutdown(pe_daemon *d);

#endif
