/* The HTTP server and its XRPC conventions (reference §1.1).
 *
 * A server is libmicrohttpd driven from a pe_ev_loop: no MHD thread, every
 * callback (handlers included) runs on the loop's thread. Routes:
 *
 *   GET /                 banner (text/plain, or HTML <pre> for Accept: text/html)
 *   GET /healthz          200 "ok", public
 *   GET /metrics          Prometheus text: requests by nsid and status,
 *                         latency histogram, plus the metrics hook's lines;
 *                         only for who the metrics-auth hook lets in, unless
 *                         cfg.metrics_public
 *   OPTIONS (not a route) CORS preflight: 204 with the allow headers for an
 *                         Origin in cfg.cors_origins, 403 for another Origin
 *   GET  /xrpc/<query>    }  parameters and body validated against the
 *   POST /xrpc/<procedure>}  lexicon table (lib/http/xrpc-table.c)
 *
 * Before any route: the request head is checked strictly (request-check.h):
 * header names must be tokens, values free of control characters, the
 * request target free of %00, and the body's framing unambiguous (one
 * Content-Length or Transfer-Encoding: chunked, not both). Anything else is
 * refused with 400 (501 for a transfer coding other than chunked) and, when
 * the framing is in doubt, the connection closed.
 *
 * XRPC errors are always JSON {"error": Name, "message": text}:
 *   400 InvalidRequest       bad nsid, bad parameter or body, wrong
 *                            Content-Type, wrong HTTP method for the nsid
 *                            (upstream's "Incorrect HTTP method (PUT)
 *                            expected POST"; upstream answers 400, not 405),
 *                            duplicate keys in a JSON body
 *   401 AuthenticationRequired, 403 Forbidden   GET /metrics without the
 *                            right token
 *   404 XRPCNotSupported     nsid not in the lexicons (upstream's 404 name)
 *   413 PayloadTooLarge      body over max_json_body
 *   429 RateLimitExceeded    token bucket empty, or the client's share of
 *                            buffered request bodies used up; Retry-After set
 *   501 MethodNotImplemented lexicon method with no registered handler
 *   503 NotEnoughResources   all buffered request bodies together at their
 *                            limit; Retry-After set
 * and whatever pe__xrpc_error_for maps a handler's pe_err code to.
 *
 * CORS: answers of the XRPC API and the server's own paths carry
 * Access-Control-Allow-Origin (the request's Origin, with Vary: Origin)
 * only when that Origin is one of cfg.cors_origins, exactly; never "*".
 * Routes (below) get no CORS header from the server at all.
 *
 * Besides XRPC, a program may serve its own paths (terminals, a web page)
 * with pe_http_route: a handler per path prefix gets the method, path,
 * query, headers and the raw body, and answers with a full response, later
 * (deferred), with a stream (Server-Sent Events), or by upgrading to a
 * WebSocket that the loop then drives (lib/http/ws.c, framing by wslay).
 * A route may also have a head callback (pe_http_route_head) that decides,
 * before a single body byte is read, whether the body is read at all, and
 * where to (memory or a file). These routes are not rate-limited: their
 * handlers authenticate.
 *
 * Memory (STYLE rule 8): request bodies kept in memory count against
 * cfg.max_buffered_per_client (per client address) and
 * cfg.max_buffered_total; a body that would go over either is refused
 * before it is read (429 or 503, Retry-After), XRPC bodies included.
 * Bodies written to a file (pe_http_body_to_fd) do not count. */
#ifndef POCKETENV_HTTP_H
#define POCKETENV_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <jansson.h>

#include "pocketenv/err.h"
#include "pocketenv/ev.h"

enum pe_xrpc_kind {
    PE_XRPC_QUERY = 1,
    PE_XRPC_PROCEDURE = 2,
};

/* Error codes for pe_err.code beyond err.h's, for failures only the API
 * has. Kept well above err.h's range so both can grow. */
enum pe_xrpc_err_code {
    PE_XRPC_EAUTH = 100, /* 401 AuthenticationRequired */
    PE_XRPC_EFORBIDDEN,  /* 403 Forbidden */
    PE_XRPC_EUPSTREAM,   /* 502 UpstreamFailure */
    PE_XRPC_EBUSY,       /* 503 ServiceUnavailable: queue full, shutting down */
    PE_XRPC_ENOTIMPL,    /* 501 MethodNotImplemented */
    PE_XRPC_ETOOBIG,     /* 413 PayloadTooLarge */
    PE_XRPC_ERATE,       /* 429 RateLimitExceeded */
    PE_XRPC_ENOMETHOD,   /* 404 XRPCNotSupported: nsid not in the lexicons */
};

typedef struct pe_http_config {
    const char *host;         /* listen address, numeric IPv4/IPv6 (default "127.0.0.1") */
    unsigned port;            /* 0: any free port, see pe_http_server_port */
    size_t max_header_bytes;  /* per-connection buffer for the request line + headers (32 KiB) */
    size_t max_json_body;     /* JSON body limit (100 KiB, as upstream) */
    unsigned max_connections; /* all clients (1024) */
    unsigned max_per_ip;      /* connections per client address (64) */
    unsigned timeout_s;       /* idle connection timeout (30 s) */
    double rate_per_s;        /* token bucket refill rate (500 / 30 s, as upstream) */
    double rate_burst;        /* bucket size (500); 0 disables rate limiting */
    unsigned rate_max_keys;   /* buckets kept at most (65536) */
    const char *banner;       /* GET / text (default: a short banner) */
    /* Request-body bytes held in memory (XRPC bodies and route bodies not
     * sent to a file): in total (64 MiB) and per client address (16 MiB). */
    size_t max_buffered_total;
    size_t max_buffered_per_client;
    /* Origins (exact "scheme://host[:port]" as browsers send them) whose
     * pages may call the API cross-origin; NULL-terminated, copied. NULL:
     * none, the default (the daemon's own page is same-origin). */
    const char *const *cors_origins;
    bool metrics_public; /* GET /metrics without a token (false) */
} pe_http_config;

void pe_http_config_init(pe_http_config *cfg);

typedef struct pe_http_server pe_http_server;

/* Listen and register with loop. cfg is copied (strings too). */
pe_http_server *pe_http_server_new(pe_ev_loop *loop, const pe_http_config *cfg, pe_err *err);
/* The port actually bound (useful with port 0). */
unsigned pe_http_server_port(const pe_http_server *srv);
/* Stop listening, answer every still-deferred request with 503, close all
 * connections. Requests handed out become invalid: complete or cancel the
 * work that holds them before calling this. */
void pe_http_server_free(pe_http_server *srv);

/* The request a handler receives. Everything is borrowed and lives until
 * the request is answered. */
typedef struct pe_xrpc_request {
    int kind; /* enum pe_xrpc_kind */
    const char *nsid;
    json_t *params;            /* validated and coerced; {} when none */
    json_t *body;              /* validated input, NULL when the lexicon has none */
    const char *authorization; /* Authorization header value, NULL if absent */
    const char *client_addr;   /* numeric address of the peer */
    struct pe_xrpc_call *call; /* NULL over HTTP; set for pe_xrpc_call */
} pe_xrpc_request;

/* A handler answers exactly once: before returning with pe_xrpc_respond*,
 * or later after pe_http_response_defer. */
typedef void (*pe_xrpc_handler)(pe_xrpc_request *req, void *ud);

/* Serve nsid (which must be in the lexicon table) with fn. Replaces an
 * earlier registration. Fails with PE_ENOENT for an nsid not in the table. */
int pe_xrpc_register(pe_http_server *srv, const char *nsid, pe_xrpc_handler fn, void *ud,
                     pe_err *err);

/* 200 with out as the JSON body; steals out. NULL: 200 with an empty body
 * (procedures without output, as upstream). */
void pe_xrpc_respond(pe_xrpc_request *req, json_t *out);
/* The XRPC error that err->code maps to, with err->msg as the message.
 * Messages of 5xx errors are logged, not sent: they may name paths. */
void pe_xrpc_respond_err(pe_xrpc_request *req, const pe_err *err);
/* Same status as pe_xrpc_respond_err, with a custom error name, for the
 * handler-specific names clients match on ("SandboxNotFound"). */
void pe_xrpc_respond_err_named(pe_xrpc_request *req, const pe_err *err, const char *name);

/* Answer with another server's XRPC answer as it came: status and its
 * JSON body (len 0: empty), relayed byte for byte (a daemon forwarding a
 * call to the node that runs the sandbox, daemon/cluster.c; or an answer
 * this daemon dumped earlier, daemon/read-cache.h). Unlike
 * pe_xrpc_respond_err, a 5xx message is sent: the caller vouches for it. */
void pe_xrpc_respond_relayed(pe_xrpc_request *req, unsigned status, const char *json_body,
                             size_t len);
/* One extra header on req's answer (copied; a later call replaces it). */
void pe_xrpc_set_reply_header(pe_xrpc_request *req, const char *name, const char *value);
/* The handler registered for nsid, so a wrapper can call through to it;
 * -1 if none. */
int pe_xrpc_handler_get(pe_http_server *srv, const char *nsid, pe_xrpc_handler *fn, void **ud);

/* Called by a handler that will answer later (from a pe_ev done callback,
 * on the loop thread). The connection is suspended until the answer. */
void pe_http_response_defer(pe_xrpc_request *req);

/* Call a registered XRPC handler from inside the program (the daemon's MCP
 * server uses the API's handlers, with their validation and owner checks,
 * rather than a copy of them). params (string, integer or boolean values,
 * as a query string would carry) and body are validated against the
 * lexicon as an HTTP request's are; neither is stolen. done runs exactly
 * once on the loop thread, never before pe_xrpc_call returns: with out
 * (the caller's; NULL for an empty answer) and status 200, or with the
 * XRPC error's status, name and message (5xx messages are generic, as
 * over HTTP). Returns -1 (err: PE_ENOENT for an unknown or unserved nsid,
 * PE_EINVAL with the lexicon's message for bad input) without calling
 * done. Not rate-limited: the caller limits its own requests. */
typedef void (*pe_xrpc_call_done)(json_t *out, unsigned status, const char *error_name,
                                  const char *message, void *ud);
int pe_xrpc_call(pe_http_server *srv, const char *nsid, json_t *params, json_t *body,
                 const char *authorization, const char *client_addr, pe_xrpc_call_done done,
                 void *ud, pe_err *err);

/* Rate-limit key for a request that carries an Authorization header: fill
 * key (e.g. with the token's verified subject) and return 1, or return 0
 * to have the request limited by client address like an anonymous one.
 * Without a hook the header value itself is the key. */
typedef int (*pe_http_rate_key_fn)(const char *authorization, char *key, size_t key_size, void *ud);
void pe_http_set_rate_key(pe_http_server *srv, pe_http_rate_key_fn fn, void *ud);

/* Extra lines for GET /metrics (e.g. sandboxes by state), written after
 * the server's own, in Prometheus text format. */
typedef void (*pe_http_metrics_fn)(FILE *out, void *ud);
void pe_http_set_metrics_hook(pe_http_server *srv, pe_http_metrics_fn fn, void *ud);

/* Who may read GET /metrics when cfg.metrics_public is false: return 0 to
 * serve it, PE_XRPC_EAUTH (401) or PE_XRPC_EFORBIDDEN (403) to refuse.
 * authorization is the header's value, NULL when absent. Without a hook
 * every such request is answered 401. Loop thread; must not block. */
typedef int (*pe_http_metrics_auth_fn)(const char *authorization, void *ud);
void pe_http_set_metrics_auth(pe_http_server *srv, pe_http_metrics_auth_fn fn, void *ud);

/* ---- routes outside /xrpc ------------------------------------------------
 *
 * Everything below runs on the loop thread, like the XRPC handlers. */

/* A request to a registered prefix. Strings are borrowed and live until the
 * request is answered (for an upgrade or a stream: until that call). */
typedef struct pe_http_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* percent-decoded path, without the query */
    const char *rest;   /* path after the registered prefix */
    const char *authorization;
    const char *client_addr;
    const char *body; /* raw body, NUL-terminated; "" when none or sent to a file */
    size_t body_len;  /* its length; with pe_http_body_to_fd, the bytes written */
    /* The declared Content-Length; -1 when the body is chunked or there is
     * no Content-Length (then no body). Valid from the head callback on. */
    long long content_length;
    bool body_chunked;      /* Transfer-Encoding: chunked */
    bool form_part_missing; /* pe_http_body_to_fd with a form field: the
                             * multipart body had no part of that name */
} pe_http_request;

/* Answers exactly once, like an XRPC handler: pe_http_respond,
 * pe_http_respond_stream or pe_http_upgrade_ws, before returning or after
 * pe_http_defer. The handler runs once the whole body has arrived; a body
 * over the route's max_body is answered 413 without calling it. */
typedef void (*pe_http_handler)(pe_http_request *req, void *ud);

/* Serve every path starting with prefix (e.g. "/tty/") with fn; the
 * longest matching prefix wins; /xrpc/, /healthz and /metrics stay the
 * server's. max_body 0: cfg.max_json_body. At most 32 routes (PE_EINVAL beyond). */
int pe_http_route(pe_http_server *srv, const char *prefix, size_t max_body, pe_http_handler fn,
                  void *ud, pe_err *err);

/* Serve every request whose Host header (without its port) ends with
 * suffix (".localhost"), with at least one character before it, with fn,
 * whatever its path: such requests never reach /xrpc/ or the path routes.
 * req->rest is the whole path. For preview URLs of a reverse proxy. */
int pe_http_route_host(pe_http_server *srv, const char *suffix, size_t max_body, pe_http_handler fn,
                       void *ud, pe_err *err);

/* -- the head callback --
 *
 * pe_http_route_head gives a route a callback that runs once the request
 * line and headers are in and before any body byte is read (libmicrohttpd
 * reads nothing of the body meanwhile, not even while the request is held:
 * a held connection is suspended, so the client's bytes wait in the
 * kernel's socket buffers). req is the request the handler will get later,
 * with body "" and content_length / body_chunked set. The callback does
 * exactly one of:
 *
 *   - answer: pe_http_respond or pe_http_respond_error (no stream, no
 *     upgrade). The body is never read into memory and the handler never
 *     runs. A request without a body keeps its connection; a body of at
 *     most cfg.max_json_body declared with Content-Length is read and
 *     dropped (nothing buffered) so the connection stays usable; a larger
 *     or chunked body is not read: the answer goes out at once with
 *     Connection: close.
 *   - hold: pe_http_defer, then later (loop thread, e.g. from a worker
 *     job's completion) either answer as above or pe_http_continue.
 *     Nothing times a held request out: the work that holds it must end.
 *   - nothing (or pe_http_continue): the body is read, into memory up to
 *     the route's max_body and the buffered-bytes budget (over: 413, or
 *     429/503 before a byte is read), or to a file after
 *     pe_http_body_to_fd; then the handler runs as usual.
 *
 * Per-request state that the head callback makes for the handler (an open
 * file, a store verdict) hangs on the request with pe_http_set_data, whose
 * free function runs exactly once when the request is over, however it
 * ends (answered early, client gone, body refused, server shutdown).
 * Not for prefixes of host routes' suffixes: prefix names the route as
 * given to pe_http_route or pe_http_route_host. */
typedef void (*pe_http_head_fn)(pe_http_request *req, void *ud);

/* Give the route registered with prefix (a path prefix, or a host suffix
 * starting with '.') a head callback; ud is the route's. PE_ENOENT when
 * there is no such route. Replaces an earlier head callback. */
int pe_http_route_head(pe_http_server *srv, const char *prefix, pe_http_head_fn fn, pe_err *err);

/* From a head callback or a held request: read the body now (then run the
 * handler). Once per request; ignored (and logged) elsewhere. */
void pe_http_continue(pe_http_request *req);

/* From a head callback or a held request, before pe_http_continue: write
 * the body to fd as it arrives instead of keeping it (fd stays the
 * caller's; writes are plain write(2) on the loop thread, so fd should be
 * a regular file). At most max_bytes are written: a declared body over it
 * is answered 413 before it is read, a chunked one when it gets there
 * (connection closed). With form_field not NULL and a multipart/form-data
 * body, only the content of the part of that name is written, decoded by
 * libmicrohttpd's post processor as it arrives (its other parts are read
 * and dropped; the whole body may be up to max_bytes + 1 MiB); a body that
 * is not multipart is written as it is. A failed write answers 500 and
 * closes. The handler then gets body "" with body_len the bytes written.
 * Returns -1 (err set) when called at the wrong time or when the multipart
 * body cannot be parsed (no boundary). */
int pe_http_body_to_fd(pe_http_request *req, int fd, unsigned long long max_bytes,
                       const char *form_field, pe_err *err);

/* The fd pe_http_body_to_fd wrote the body to (the caller's), or -1: what
 * relays the request elsewhere sends (body_len bytes from its start). */
int pe_http_body_fd(pe_http_request *req);

/* State for the rest of the request (see above); data is freed with
 * free_fn (may be NULL) when the request is over. One per request: a
 * second call frees the first. */
void pe_http_set_data(pe_http_request *req, void *data, void (*free_fn)(void *));
void *pe_http_data(pe_http_request *req);
/* The data, now the caller's: the request forgets it (free_fn will not
 * run). For state that outlives the request (a proxied stream). */
void *pe_http_take_data(pe_http_request *req);

/* Every header (name, value) or every query argument (decoded name, value;
 * value NULL for an argument without '='), in the order received. */
typedef void (*pe_http_each_fn)(const char *name, const char *value, void *ud);
void pe_http_header_each(pe_http_request *req, pe_http_each_fn fn, void *ud);
void pe_http_query_each(pe_http_request *req, pe_http_each_fn fn, void *ud);

/* A query argument (decoded) or header of the request, NULL if absent.
 * Valid while the request is unanswered. */
const char *pe_http_query(pe_http_request *req, const char *key);
const char *pe_http_header(pe_http_request *req, const char *name);

/* The answer: status, Content-Type (NULL: none), len bytes of body (copied)
 * and extra headers as {"Name", "value", ..., NULL} (NULL: none). */
void pe_http_respond(pe_http_request *req, unsigned status, const char *content_type,
                     const void *body, size_t len, const char *const *headers);
/* Answer with the regular file open at fd, with its length; fd is
 * closed once sent (or at once, if the answer is refused). */
void pe_http_respond_fd(pe_http_request *req, unsigned status, const char *content_type, int fd,
                        const char *const *headers);
/* pe_http_respond with a JSON body {"error": name, "message": message}. */
void pe_http_respond_error(pe_http_request *req, unsigned status, const char *name,
                           const char *message);
/* The handler answers later (on the loop thread); the connection waits.
 * From a head callback: hold the request (see pe_http_route_head). */
void pe_http_defer(pe_http_request *req);

/* -- streaming (Server-Sent Events and the like) --
 *
 * The response is sent chunked as the program writes. The server buffers
 * what the client has not taken yet; pe_http_stream_pending tells how much,
 * so the writer can bound it. A client that goes away is noticed on the next
 * write (the connection is parked while nothing is queued), so a writer that
 * must notice promptly writes periodically (SSE's ": ping"). */
typedef struct pe_http_stream pe_http_stream;

typedef struct pe_http_stream_callbacks {
    /* Optional: everything queued has been handed to the socket. */
    void (*on_drain)(pe_http_stream *st, void *ud);
    /* The client went away or the server is shutting down. Called once,
     * never after pe_http_stream_close; st is invalid after it returns. */
    void (*on_close)(pe_http_stream *st, void *ud);
} pe_http_stream_callbacks;

/* Start a streaming answer; the callbacks struct is copied. */
pe_http_stream *pe_http_respond_stream(pe_http_request *req, unsigned status,
                                       const char *content_type, const char *const *headers,
                                       const pe_http_stream_callbacks *cb, void *ud);
/* Queue len bytes (copied). -1 once the stream is over. */
int pe_http_stream_write(pe_http_stream *st, const void *data, size_t len);
size_t pe_http_stream_pending(const pe_http_stream *st);
/* Finish the response after what is queued; st is invalid afterwards and
 * no callback fires any more. */
void pe_http_stream_close(pe_http_stream *st);

/* -- WebSocket (RFC 6455) --
 *
 * After the 101 answer the socket leaves libmicrohttpd: the loop watches it
 * and wslay frames it. Pings are answered, fragmented messages reassembled,
 * and protocol errors close the connection with the RFC's code: 1002 for a
 * broken frame, 1007 for a text message that is not UTF-8, 1009 for a
 * message over max_message. */
typedef struct pe_http_ws pe_http_ws;

typedef struct pe_http_ws_callbacks {
    /* A whole message (text: valid UTF-8). */
    void (*on_message)(pe_http_ws *ws, bool binary, const char *data, size_t len, void *ud);
    /* Optional: the output queue became empty. */
    void (*on_drain)(pe_http_ws *ws, void *ud);
    /* The connection ended: code is the close code received or sent (1006
     * when it just dropped). Called once, never after pe_http_ws_close; ws
     * is invalid after it returns. */
    void (*on_close)(pe_http_ws *ws, unsigned code, void *ud);
} pe_http_ws_callbacks;

/* Check the handshake (GET, Upgrade: websocket, Sec-WebSocket-Key,
 * version 13) and answer 101; on a bad handshake answer 400 (426 without
 * an Upgrade header) and return NULL, the request then being answered.
 * max_message 0: 1 MiB. Messages may be queued at once; they go out after
 * the 101. The callbacks struct is copied. */
pe_http_ws *pe_http_upgrade_ws(pe_http_request *req, const pe_http_ws_callbacks *cb,
                               size_t max_message, void *ud);
/* Queue one message (copied). -1 once the connection is closing. */
int pe_http_ws_send(pe_http_ws *ws, bool binary, const void *data, size_t len);
/* Bytes queued and not yet written to the socket. */
size_t pe_http_ws_pending(const pe_http_ws *ws);
/* Send a close frame after what is queued (reason: short UTF-8, may be
 * NULL) and let go: the server finishes the closing handshake (or drops
 * the socket after a few seconds) on its own. ws is invalid afterwards and
 * no callback fires any more. */
void pe_http_ws_close(pe_http_ws *ws, unsigned code, const char *reason);
/* Like pe_http_ws_close, but the close frame goes ahead of what is queued
 * (which is dropped): for a peer that is not reading, e.g. too slow. */
void pe_http_ws_abort(pe_http_ws *ws, unsigned code, const char *reason);

/* -- raw upgrades --
 *
 * For a program that relays an upgraded connection's bytes itself (a
 * reverse proxy passing a WebSocket through): answer 101 with headers
 * (which must include Upgrade; MHD adds Connection: Upgrade), then the
 * client's socket is the program's until pe_http_raw_close. */
typedef struct pe_http_raw pe_http_raw;

typedef struct pe_http_raw_callbacks {
    /* The socket (blocking mode as accepted; not to be closed by the
     * program) and the bytes the server had read past the request. */
    void (*on_socket)(pe_http_raw *raw, int fd, const char *extra, size_t extra_len, void *ud);
    /* The upgrade never happened (client gone) or the server is shutting
     * down: stop using the socket at once. raw is invalid afterwards. */
    void (*on_close)(pe_http_raw *raw, void *ud);
} pe_http_raw_callbacks;

pe_http_raw *pe_http_upgrade_raw(pe_http_request *req, const char *const *headers,
                                 const pe_http_raw_callbacks *cb, void *ud);
/* Done with the socket: the server closes it. No callback fires after. */
void pe_http_raw_close(pe_http_raw *raw);

#endif
