/* What the adapters share (provider-http.c, provider-ws.c,
 * provider-stream.c): HTTP calls with deadlines, retries and error
 * mapping; an outbound WebSocket; the pump thread behind a stream. Not
 * for callers above lib/provider/. */
#ifndef PE_PROVIDER_INTERNAL_H
#define PE_PROVIDER_INTERNAL_H

#include <archive.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "provider/provider.h"
#include "provider/ws-client.h"

/* Largest answer kept in memory from one call (files have their own max). */
#define PE_PROVIDER_BODY_MAX (16u << 20)
#define PE_PROVIDER_TIMEOUT_MS 30000
#define PE_PROVIDER_CREATE_TIMEOUT_MS 120000

typedef struct pe__preq {
    const char *method;       /* NULL: GET */
    const char *url;          /* full URL (never holds a credential) */
    const char *content_type; /* of body */
    const void *body;
    size_t body_len;
    curl_mime *mime;            /* instead of body */
    const char *const *headers; /* extra "Name: value", NULL-terminated */
    bool idempotent;            /* may be sent again after a failure */
    size_t max;                 /* 0: PE_PROVIDER_BODY_MAX */
    int64_t timeout_ms;         /* 0: the provider's */
    /* Streaming answers: called with each piece of a 2xx body instead of
     * keeping it; return false to stop. */
    bool (*on_data)(const char *data, size_t len, void *ud);
    void *ud;
    volatile int *cancel; /* non-zero: abort the transfer */
    bool stream;          /* no deadline once the answer's head arrived */
    /* Where the key goes: NULL "Authorization: Bearer KEY"; else the name
     * of the provider's own header (E2B's "X-API-Key"). no_key: none at
     * all (a call inside a sandbox carries its own token in headers). */
    const char *key_header;
    bool no_key;
} pe__preq;

typedef struct pe__presp {
    long status;
    char *body; /* NUL-terminated, malloc'd */
    size_t len;
    char content_type[128];
    char header_value[128]; /* the value of preq's want_header, if any */
} pe__presp;

void pe__presp_free(pe__presp *r);

/* Make c open its sockets close-on-exec (every handle of ours). */
void pe__curl_cloexec(CURL *c);

/* Send rq; 2xx fills rs and returns 0. Anything else is an error naming
 * the provider and `what` ("create sandbox"): 401/403 PE_EAUTH "NAME
 * rejected the API key", 404 PE_ENOENT, other 4xx PE_EINVAL with the
 * provider's message, 5xx PE_EREMOTE, no answer in time PE_ETIMEDOUT,
 * a broken connection PE_EREMOTE. Idempotent calls are retried on
 * connection failures, 429, 502, 503 and 504 while the deadline allows;
 * others only on 429 and a refused connection (nothing was done). rs
 * keeps the error answer too (status, body) when the caller wants it. */
int pe__provider_http(pe_provider *p, const pe__preq *rq, pe__presp *rs, const char *what,
                      pe_err *err);

/* The error of a non-2xx answer rs, as pe__provider_http maps it. */
int pe__provider_status_error(pe_provider *p, const pe__presp *rs, const char *what, pe_err *err);

/* rs's body as JSON of `type` (JSON_OBJECT, JSON_ARRAY); anything else
 * (HTML from a proxy, a truncated body) is PE_EREMOTE "NAME answered WHAT
 * with something that is not its API". */
json_t *pe__provider_json(pe_provider *p, const pe__presp *rs, int type, const char *what,
                          pe_err *err);

/* One JSON call, the shape every REST adapter repeats: body (may be NULL)
 * sent as application/json with the extra headers; a 2xx answer parsed as
 * `type` (JSON_OBJECT, JSON_ARRAY) into *out when out is given. */
int pe__provider_json_call(pe_provider *p, const char *method, const char *url,
                           const char *const *headers, json_t *body, bool idempotent, int type,
                           json_t **out, const char *what, pe_err *err);

/* The same with the rest of the request (key header, timeout...) from
 * base; body, when given, replaces base's (content type JSON unless base
 * names one). */
int pe__provider_json_req(pe_provider *p, const pe__preq *base, json_t *body, int type,
                          json_t **out, const char *what, pe_err *err);

/* The sandbox's environment "K=V" list as a JSON object {K: V}. */
json_t *pe__env_object(char *const *env);

/* Wait for a sandbox to reach a state: probe answers 1 (there), 0 (not
 * yet: asked again after 100 ms, later 500 ms) or -1 (err filled: it
 * cannot get there, or the call failed). PE_ETIMEDOUT "NAME: sandbox ID
 * did not become WANT within N s" after create_timeout_ms. */
typedef int (*pe__probe_fn)(pe_provider *p, const char *id, void *ud, pe_err *err);
int pe__provider_poll(pe_provider *p, const char *id, const char *want, pe__probe_fn probe,
                      void *ud, pe_err *err);

/* The end of a create, once the provider answered with *id: tell the
 * caller the id (spec->made), then wait for `want`; if that fails, remove
 * what the provider made (never leave a half-made sandbox behind), free
 * *id and prefix the error with "create a sandbox". */
int pe__provider_create_settle(pe_provider *p, const pe_provider_spec *spec, char **id,
                               const char *want, pe__probe_fn probe, void *ud, pe_err *err);

/* A malloc'd "%s%s" URL from the provider's base and a path built from
 * fmt; %E in fmt is not supported: escape parts with pe__url_escape. */
char *pe__provider_url(pe_provider *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *pe__url_escape(const char *s);

/* out->url from a preview template (pe_provider_config.preview_url, or
 * the provider's documented one): {port}, {id} and {key} replaced by
 * port, id and key (escaped; key NULL: "{key}" is refused), marked for
 * our proxy (out->proxy). PE_EREMOTE when the result does not fit. */
int pe__preview_fill(pe_provider *p, const char *tmpl, const char *id, const char *key,
                     uint16_t port, pe_provider_preview_link *out, pe_err *err);

/* "Authorization: Bearer KEY" for the provider's key (malloc'd; wipe
 * with pe__secret_free). */
char *pe__bearer(pe_provider *p);
void pe__secret_free(char *s);

/* Fail with a transport message, scrubbed of the credential. */
int pe__provider_fail(pe_provider *p, pe_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* One shell line for providers whose exec takes a string run by a shell
 * (Daytona's sessions, Runloop, Blaxel): `export K='v'; cd 'dir'; 'argv'...`
 * with every word quoted; a `sh -c SCRIPT` is sent as SCRIPT (the
 * provider's shell is one already). malloc'd. */
char *pe__shell_line(const pe_provider_exec_opts *o);

/* file_remove for providers without one: `rm [-r] PATH` through exec. */
int pe__provider_remove_by_exec(pe_provider *p, const char *id, const char *path, bool recursive,
                                pe_err *err);

/* tar in/out for providers with files but no archive call
 * (provider-tar.c): one file_write per entry; a walk of file_list and
 * file_read. Absolute names, "..", links and devices are refused. */
int pe__provider_tar_in_by_files(pe_provider *p, const char *id, const char *dir, const void *tar,
                                 size_t len, pe_err *err);
int pe__provider_tar_out_by_files(pe_provider *p, const char *id, const char *dir, size_t max,
                                  char **tar, size_t *len, pe_err *err);

/* A name in a tar we take: relative, not empty, never climbing with "..". */
bool pe__tar_name_ok(const char *name);

/* A tar archive written to memory, at most max bytes (toobig: it would
 * have been more); pe__tar_membuf_write is libarchive's write callback
 * for archive_write_open with the buffer as client data. */
typedef struct pe__tar_membuf {
    char *buf;
    size_t len, max;
    bool toobig;
} pe__tar_membuf;
la_ssize_t pe__tar_membuf_write(struct archive *a, void *ud, const void *data, size_t len);

/* base64 (standard alphabet). decode: NULL on bad input. */
char *pe__b64_encode(const void *data, size_t len);
unsigned char *pe__b64_decode(const char *s, size_t slen, size_t *len);

/* Daytona's multiplexed output (provider-daytona.c): 01 01 01 starts
 * stdout, 02 02 02 stderr. Incremental: a marker may be split across
 * calls; bytes 1 and 2 that turn out not to be a marker are output.
 * Start with fd 1; _end flushes what was held back. */
typedef struct pe__demux {
    int fd;
    unsigned char pend[3];
    size_t npend;
} pe__demux;
void pe__daytona_demux(pe__demux *d, const unsigned char *data, size_t len,
                       void (*out)(void *ud, int fd, const unsigned char *data, size_t len),
                       void *ud);
void pe__daytona_demux_end(pe__demux *d,
                           void (*out)(void *ud, int fd, const unsigned char *data, size_t len),
                           void *ud);

/* ---- outbound WebSocket (provider-ws.c, declared in ws-client.h) ---- */

/* Connect to url (http:// or https://, or ws(s)://) and upgrade it, with
 * the provider's Authorization and extra headers. A non-101 answer is
 * mapped like pe__provider_http's. */
int pe__ws_open(pe_provider *p, const char *url, const char *const *headers, const char *what,
                pe__ws **out, pe_err *err);

/* ---- streams (provider-stream.c) ---- */

typedef struct pe__stream_ops pe__stream_ops;

struct pe_provider_stream {
    pe_provider *p;
    const pe__stream_ops *ops;
    void *ud;
    bool tty;
    pthread_t thread;
    bool started;
    int ctl[2];          /* control pipe to the pump: 'k' kill, 'r' resize, 'q' quit */
    int done[2];         /* http_side: closed when the transfer ended */
    int in_fd;           /* where input comes from (stdin pipe or pty socket), -1 */
    int out_fd;          /* where stdout goes (or the pty socket) */
    int err_fd;          /* where stderr goes, -1 with tty */
    int status_w;        /* closed when the process ended */
    pe__ws *ws;          /* the WebSocket, when ops use one */
    volatile int cancel; /* HTTP streams: abort */
    unsigned short cols, rows;
    int exit_code;
    bool exited;
    bool direct; /* pe__stream_direct: no pump, ops called in place */
    char error[PE_ERR_MSG_MAX];
};

struct pe__stream_ops {
    /* HTTP streams: the whole transfer, on the pump thread (output through
     * pe__stream_output; set exit_code/exited). */
    int (*run_http)(struct pe_provider_stream *s);
    /* WebSocket streams: one message arrived. */
    void (*on_msg)(struct pe_provider_stream *s, int opcode, const unsigned char *data, size_t len);
    /* Input bytes from the caller (stdin or the pty); len 0 = EOF. */
    int (*on_input)(struct pe_provider_stream *s, const unsigned char *data, size_t len);
    int (*on_resize)(struct pe_provider_stream *s, unsigned short cols, unsigned short rows);
    void (*on_kill)(struct pe_provider_stream *s);
    /* The WebSocket ended without an exit: may find the exit code. */
    void (*on_end)(struct pe_provider_stream *s);
    void (*free_ud)(void *ud);
    /* Direct streams (pe__stream_direct): the process's own fds, no pump
     * thread; resize, kill and wait are these calls, made by the caller's
     * thread (on_resize and on_kill above are used too). */
    int (*wait)(struct pe_provider_stream *s, int *exit_code, pe_err *err);
    void (*kill_now)(struct pe_provider_stream *s); /* NULL: on_kill */
    /* HTTP streams whose input, kill and resize are calls of their own
     * (E2B's SendInput, SendSignal, Update): a second thread serves the
     * control pipe and the input while run_http runs the transfer, and a
     * kill is on_kill's (the stream then ends with the exit code) rather
     * than an aborted transfer. */
    bool http_side;
};

/* Make the stream's fds (pipes, or a socketpair with tty) into proc and
 * start the pump thread over ws (or run_http). On failure ud is freed
 * (ops->free_ud) and ws closed. */
int pe__stream_start(pe_provider *p, const pe__stream_ops *ops, void *ud, pe__ws *ws, bool tty,
                     bool stdin_pipe, pe_provider_proc *proc, pe_err *err);
/* Output from the pump thread: fd 1 or 2 (1 with tty). Blocks while the
 * reader is slow: that is the backpressure on the remote stream. */
void pe__stream_output(struct pe_provider_stream *s, int fd, const void *data, size_t len);
/* A stream for a process whose fds the caller gets as they are (the local
 * runtime's pe_proc): no pipes of ours, no thread, so no copy of its
 * output. ops needs wait; free_ud releases what proc does not hold. */
struct pe_provider_stream *pe__stream_direct(pe_provider *p, const pe__stream_ops *ops, void *ud,
                                             bool tty);
void pe__stream_exit(struct pe_provider_stream *s, int code);

#endif
