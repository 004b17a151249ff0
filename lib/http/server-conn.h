/* The state of a request and of the server, shared by the server's files:
 * server.c (libmicrohttpd on the loop, request phases, XRPC, limits),
 * server-routes.c (routes outside /xrpc: head callbacks, bodies to files,
 * answers) and server-upgrade.c (streams, WebSocket and raw upgrades).
 * Loop thread only; nothing here is public (pocketenv/http.h is). */
#ifndef PE_HTTP_SERVER_CONN_H
#define PE_HTTP_SERVER_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <microhttpd.h>

#include "http/request-check.h"
#include "http/server-internal.h"
#include "http/xrpc-internal.h"
#include "pocketenv/http.h"

#define MAX_ROUTES 32
#define METRIC_ROWS 512
#define MAX_CORS_ORIGINS 32
#define PE_HTTP_LATENCY_BUCKETS 14
#define JSON_TYPE "application/json; charset=utf-8"

struct handler_slot {
    pe_xrpc_handler fn;
    void *ud;
};

struct rate_entry {
    struct rate_entry *next;
    uint64_t hash;
    double tokens;
    uint64_t last_ns;
    char key[];
};

struct route {
    char *prefix; /* a path prefix, or a host suffix when by_host */
    size_t plen, max_body;
    bool by_host;
    pe_http_handler fn;
    pe_http_head_fn head; /* optional: before the body */
    void *ud;
};

struct pe_http_stream {
    pe_http_server *srv;
    struct conn *c; /* NULL once the connection is gone */
    char *buf;      /* queued bytes: [off, len) */
    size_t off, len, cap;
    bool parked;      /* connection suspended: nothing was queued */
    bool user_closed; /* pe_http_stream_close: end after the queue, no callbacks */
    bool gone;        /* on_close delivered (or owed no more) */
    bool ending;      /* server shutdown: end after the queue */
    pe_http_stream_callbacks cb;
    void *ud;
    struct pe_http_stream *next, *prev; /* srv->streams */
};

struct metric_row {
    const char *label; /* static: an nsid from the table or a route name */
    unsigned status;
    uint64_t count;
};

struct conn;

struct pe_http_server {
    pe_ev_loop *loop;
    struct MHD_Daemon *mhd;
    pe_ev_io *io;
    pe_ev_timer *timer;
    uint64_t timer_due_ns; /* when the timer is armed to fire (monotonic), 0: not armed */
    int kick_fd;           /* eventfd: "run MHD soon" (pe__http_kick) */
    pe_ev_io *kick_io;
    bool kicked; /* kick_fd holds a count not yet read */
    pe_http_config cfg;
    char *host, *banner, *banner_html;
    unsigned port;
    struct handler_slot *handlers; /* indexed like pe__xrpc_methods */
    bool in_mhd, need_run;
    struct conn *deferred; /* suspended connections, for shutdown */
    struct route routes[MAX_ROUTES];
    size_t n_routes;
    struct pe_http_stream *streams; /* live streams, for shutdown */
    pe_http_ws *ws_list;            /* live WebSockets (ws.c), for shutdown */
    struct pe_http_raw *raws;       /* live raw upgrades, for shutdown */

    struct rate_entry **rate_tab;
    size_t rate_nbuckets, rate_count;
    uint64_t rate_seed;
    pe_http_rate_key_fn rate_key;
    void *rate_key_ud;

    struct metric_row rows[METRIC_ROWS];
    size_t n_rows;
    uint64_t hist[PE_HTTP_LATENCY_BUCKETS + 1];
    uint64_t hist_count;
    double hist_sum;
    pe_http_metrics_fn metrics_fn;
    void *metrics_ud;
    pe_http_metrics_auth_fn metrics_auth;
    void *metrics_auth_ud;

    pe_http_budget *budget;
    char *cors[MAX_CORS_ORIGINS + 1]; /* NULL-terminated copy of cfg.cors_origins */
};

/* xrpc-call.c: answers of requests made with pe_xrpc_call. */
struct pe_xrpc_call;
void pe__xrpc_call_answer(struct pe_xrpc_call *call, json_t *out, unsigned status, const char *name,
                          const char *message);
void pe__xrpc_call_defer(struct pe_xrpc_call *call);

enum conn_phase {
    PH_NEW,  /* request line seen (on_uri): the head is not processed yet */
    PH_HEAD, /* headers in: a head callback decides, or holds the request */
    PH_BODY, /* the body is read (or there is none), then the handler runs */
};

struct conn {
    pe_xrpc_request req; /* first: handlers get &conn->req */
    pe_http_server *srv;
    struct MHD_Connection *mc;
    uint64_t start_ns;
    enum conn_phase phase;
    int target_status; /* on_uri's verdict on the raw target (0: fine) */
    size_t target_len; /* its length before MHD decoded it in place */
    char target_msg[80];
    const pe_xrpc_method *method;
    const char *label;
    const char *content_type;
    const char *cors_origin; /* the request's Origin, when it is allowed */
    char *body;
    size_t body_len, body_cap;
    bool in_handler, in_head, deferred, dispatched, continued;
    bool close_after; /* the answer says Connection: close */
    bool has_body;    /* a Content-Length over 0, or chunked */
    bool chunked;
    long long content_length; /* -1: none (or chunked) */
    size_t drained;           /* body bytes read and dropped after an answer */
    size_t reserved;          /* bytes taken from the buffered-bytes budget */
    struct MHD_Response *resp;
    unsigned status;
    bool rl_set;
    long rl_limit, rl_remaining;
    long long rl_reset;
    unsigned retry_after;
    const char *retry_after_text; /* Retry-After of a budget refusal */
    struct conn *dnext, *dprev;
    char client[INET6_ADDRSTRLEN];
    char *reply_header[2]; /* name, value: one extra header of the answer */
    /* routes outside /xrpc */
    pe_http_request hreq;
    const struct route *route;
    size_t body_limit;
    struct pe_http_stream *stream; /* answered with a stream */
    pe_http_ws *ws;                /* answered 101, socket not handed over yet */
    struct pe_http_raw *raw;       /* raw upgrade answered, socket not handed over yet */
    /* the body into a file (pe_http_body_to_fd) */
    int body_fd;
    unsigned long long fd_max, raw_max, raw_seen;
    struct MHD_PostProcessor *pp;
    char *form_field;
    bool form_seen;
    /* pe_http_set_data */
    void *data;
    void (*data_free)(void *);
};

/* A raw upgrade (pe_http_upgrade_raw): the socket belongs to the owner
 * between on_socket and pe_http_raw_close. */
struct pe_http_raw {
    pe_http_server *srv;
    struct MHD_UpgradeResponseHandle *urh;
    pe_http_raw_callbacks cb;
    void *ud;
    struct pe_http_raw *next, *prev; /* srv->raws */
};

static inline struct conn *pe__http_conn_of(pe_http_request *req)
{
    return (struct conn *)((char *)req - offsetof(struct conn, hreq));
}

/* ---- server.c ---- */

/* r, with the headers every answer carries, becomes c's answer. */
void pe__http_use_response(struct conn *c, struct MHD_Response *r, unsigned status,
                           const char *ctype);
/* body (may be NULL) is taken. */
void pe__http_set_response(struct conn *c, unsigned status, const char *ctype, char *body,
                           size_t len);
/* An XRPC error, through pe__xrpc_error_for (name NULL: its name). */
void pe__http_set_error(struct conn *c, int code, const char *name, const char *message);
void pe__http_refuse_too_big(struct conn *c);
/* An answer may be stored now (in a callback, or while deferred). */
bool pe__http_check_answer_once(struct conn *c);
/* Same, for a stream or an upgrade, which a head callback may not start. */
bool pe__http_check_handler_answer(struct conn *c);
/* An answer was stored: wake the connection if it waits for it. */
void pe__http_answered(struct conn *c);
void pe__http_deferred_unlink(struct conn *c);
/* Have MHD run soon from the loop, never on the caller's stack. */
void pe__http_kick(pe_http_server *s);

/* ---- server-routes.c ---- */

const struct route *pe__http_route_find(pe_http_server *s, const char *url);
const struct route *pe__http_host_route_find(pe_http_server *s, const char *host);
/* Headers are in: the request the route's callbacks get. */
void pe__http_route_start(struct conn *c, const struct route *r, const char *url,
                          const char *method);
/* The body is in: run the route's handler. */
void pe__http_route_dispatch(struct conn *c);
/* Body bytes bound for a file, and the end of them. */
void pe__http_fd_feed(struct conn *c, const char *data, size_t len);
void pe__http_fd_end(struct conn *c);
void pe__http_add_headers(struct MHD_Response *r, const char *const *headers);

/* ---- server-upgrade.c ---- */

/* The connection of a stream, or a raw upgrade not yet handed over, ended. */
void pe__http_stream_gone(struct pe_http_stream *st);
void pe__http_raw_end(struct pe_http_raw *raw);

#endif
