/* The HTTP server: libmicrohttpd in external-epoll mode on a pe_ev_loop.
 *
 * MHD runs no thread of its own. Its epoll fd sits in our loop; when it is
 * readable, or when MHD's timeout (connection idle limit) expires, we call
 * MHD_run, which accepts, reads, calls on_access and writes. So every
 * handler runs on the loop thread and must not block: slow work goes to
 * the loop's worker pool and the handler defers its answer.
 *
 * A request's state is a struct conn in MHD's per-request pointer, created
 * on the first on_access call and freed in on_completed. Deferral suspends
 * the MHD connection; the answer is stored in the conn and the connection
 * resumed, and MHD calls on_access once more to queue it. MHD_run is never
 * entered recursively: an answer that arrives while MHD_run is on the stack
 * (a handler completing another request) only asks for one more round.
 *
 * Routes outside /xrpc (pe_http_route) share the request machinery: the
 * handler runs once the body is in, and may answer in full, defer, start
 * a stream, or upgrade to a WebSocket. A stream's body is pulled by MHD
 * through stream_read; with nothing queued the connection is suspended
 * ("parked") and the next write resumes it. An upgraded socket leaves MHD
 * for ws.c; MHD keeps only its slot until ws.c gives it back.
 *
 * Limits (STYLE rule 8): MHD's per-connection memory pool bounds the
 * request line and headers (431 beyond it), the body buffer stops at
 * max_json_body (413), the rate-limit table at rate_max_keys, the metrics
 * table at METRIC_ROWS (nsids come from the lexicon table, unknown ones
 * share one row), and MHD enforces connection counts and idle timeouts. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "http/server-internal.h"
#include "http/xrpc-internal.h"
#include "pocketenv/http.h"

#define MAX_ARGS 64
#define MAX_ROUTES 16
#define STREAM_BLOCK (64 * 1024)
#define METRIC_ROWS 512
#define JSON_TYPE "application/json; charset=utf-8"
#define DEFAULT_BANNER "Pocketenv: sandboxes over XRPC (/xrpc/io.pocketenv.*)\n"

static const double latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS PE_ARRAY_LEN(latency_buckets)

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
    uint64_t hist[N_BUCKETS + 1];
    uint64_t hist_count;
    double hist_sum;
    pe_http_metrics_fn metrics_fn;
    void *metrics_ud;
};

struct conn {
    pe_xrpc_request req; /* first: handlers get &conn->req */
    pe_http_server *srv;
    struct MHD_Connection *mc;
    uint64_t start_ns;
    const pe_xrpc_method *method;
    const char *label;
    const char *content_type;
    char *body;
    size_t body_len, body_cap;
    bool too_big, in_handler, deferred, dispatched;
    struct MHD_Response *resp;
    unsigned status;
    bool rl_set;
    long rl_limit, rl_remaining;
    long long rl_reset;
    unsigned retry_after;
    struct conn *dnext, *dprev;
    char client[INET6_ADDRSTRLEN];
    /* routes outside /xrpc */
    pe_http_request hreq;
    const struct route *route;
    size_t body_limit;
    struct pe_http_stream *stream; /* answered with a stream */
    pe_http_ws *ws;                /* answered 101, socket not handed over yet */
    struct pe_http_raw *raw;       /* raw upgrade answered, socket not handed over yet */
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

void pe_http_config_init(pe_http_config *cfg)
{
    *cfg = (pe_http_config){
        .host = "127.0.0.1",
        .port = 8789,
        .max_header_bytes = 32 * 1024,
        .max_json_body = 100 * 1024,
        .max_connections = 1024,
        .max_per_ip = 64,
        .timeout_s = 30,
        .rate_per_s = 500.0 / 30.0,
        .rate_burst = 500,
        .rate_max_keys = 65536,
        .banner = NULL,
    };
}

/* ---- responses ---------------------------------------------------------- */

/* r, with the headers every answer carries, becomes c's answer. */
static void use_response(struct conn *c, struct MHD_Response *r, unsigned status, const char *ctype)
{
    char num[32];

    if (r == NULL)
        abort(); /* MHD only fails here on allocation failure */
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(r, "Access-Control-Expose-Headers",
                            "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
                            "Retry-After");
    if (ctype)
        MHD_add_response_header(r, "Content-Type", ctype);
    if (c->rl_set) {
        snprintf(num, sizeof(num), "%ld", c->rl_limit);
        MHD_add_response_header(r, "X-RateLimit-Limit", num);
        snprintf(num, sizeof(num), "%ld", c->rl_remaining);
        MHD_add_response_header(r, "X-RateLimit-Remaining", num);
        snprintf(num, sizeof(num), "%lld", c->rl_reset);
        MHD_add_response_header(r, "X-RateLimit-Reset", num);
    }
    if (status == 429) {
        snprintf(num, sizeof(num), "%u", c->retry_after);
        MHD_add_response_header(r, "Retry-After", num);
    }
    if (c->resp)
        MHD_destroy_response(c->resp);
    c->resp = r;
    c->status = status;
}

static void set_response(struct conn *c, unsigned status, const char *ctype, char *body, size_t len)
{
    if (body)
        use_response(c, MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE), status,
                     ctype);
    else
        use_response(c, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT),
                     status, ctype);
}

static void set_text(struct conn *c, unsigned status, const char *ctype, const char *text)
{
    set_response(c, status, ctype, pe_xstrdup(text), strlen(text));
}

static void set_json(struct conn *c, unsigned status, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    json_decref(v);
    if (s == NULL)
        abort(); /* jansson fails only on allocation failure for valid values */
    set_response(c, status, JSON_TYPE, s, strlen(s));
}

/* Every XRPC error goes through here, so through pe__xrpc_error_for. */
static void set_error(struct conn *c, int code, const char *name, const char *message)
{
    pe_xrpc_error e = pe__xrpc_error_for(code);
    json_t *msg = json_string(message);

    if (msg == NULL) /* the message quoted invalid UTF-8 from the request */
        msg = json_string("request contains invalid UTF-8");
    set_json(c, e.status, json_pack("{s:s,s:o}", "error", name ? name : e.name, "message", msg));
}

/* ---- running MHD from the loop ------------------------------------------ */

static void arm_timer(pe_http_server *s)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    uint64_t ns = 0;

    if (MHD_get_timeout(s->mhd, &ms) == MHD_YES)
        ns = ms ? (uint64_t)ms * 1000000ull : 1; /* 0 would disarm the timerfd */
    pe_ev_timer_set(s->timer, ns, 0, NULL);
}

static void run_mhd(pe_http_server *s)
{
    if (s->in_mhd) {
        s->need_run = true;
        return;
    }
    do {
        s->need_run = false;
        s->in_mhd = true;
        MHD_run(s->mhd);
        s->in_mhd = false;
    } while (s->need_run);
    arm_timer(s);
}

/* Have MHD run soon from the loop, not on the caller's stack: an answer or
 * a stream write must never call back into its caller (on_close, on_drain)
 * before it returns. The MHD timer doubles as the kick. */
static void kick(pe_http_server *s)
{
    if (s->in_mhd)
        s->need_run = true;
    else
        pe_ev_timer_set(s->timer, 1, 0, NULL);
}

static void on_mhd_io(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    run_mhd(ud);
}

static void on_mhd_timer(pe_ev_timer *t, void *ud)
{
    run_mhd(ud);
}

/* ---- metrics ------------------------------------------------------------ */

static void metrics_record(pe_http_server *s, const char *label, unsigned status, double secs)
{
    size_t i, b;

    for (i = 0; i < s->n_rows; i++)
        if (s->rows[i].label == label && s->rows[i].status == status)
            break;
    if (i == s->n_rows) {
        if (s->n_rows == METRIC_ROWS)
            i = METRIC_ROWS - 1; /* full: fold into the last row rather than grow */
        else
            s->rows[s->n_rows++] = (struct metric_row){label, status, 0};
    }
    s->rows[i].count++;
    for (b = 0; b < N_BUCKETS && secs > latency_buckets[b]; b++)
        ;
    s->hist[b]++;
    s->hist_count++;
    s->hist_sum += secs;
}

static void metrics_write(pe_http_server *s, FILE *f)
{
    uint64_t cum = 0;

    fputs("# HELP pocketenv_http_requests_total HTTP requests by XRPC method (or route) and "
          "status.\n# TYPE pocketenv_http_requests_total counter\n",
          f);
    for (size_t i = 0; i < s->n_rows; i++)
        fprintf(f, "pocketenv_http_requests_total{nsid=\"%s\",status=\"%u\"} %llu\n",
                s->rows[i].label, s->rows[i].status, (unsigned long long)s->rows[i].count);
    fputs("# HELP pocketenv_http_request_duration_seconds Time from request headers to the "
          "end of the response.\n# TYPE pocketenv_http_request_duration_seconds histogram\n",
          f);
    for (size_t b = 0; b < N_BUCKETS; b++) {
        cum += s->hist[b];
        fprintf(f, "pocketenv_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                latency_buckets[b], (unsigned long long)cum);
    }
    fprintf(f, "pocketenv_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
            (unsigned long long)s->hist_count);
    fprintf(f, "pocketenv_http_request_duration_seconds_sum %.6f\n", s->hist_sum);
    fprintf(f, "pocketenv_http_request_duration_seconds_count %llu\n",
            (unsigned long long)s->hist_count);
    if (s->metrics_fn)
        s->metrics_fn(f, s->metrics_ud);
}

static void serve_metrics(struct conn *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        abort();
    metrics_write(c->srv, f);
    fclose(f);
    set_response(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- rate limiting: a token bucket per key ------------------------------ */

static uint64_t hash_key(uint64_t seed, const char *key)
{
    uint64_t h = 1469598103934665603ull ^ seed;

    for (; *key; key++) {
        h ^= (unsigned char)*key;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* Drop buckets that have refilled: they are indistinguishable from new
 * ones. If every bucket is in use, drop them all: failing open, as upstream
 * does when its Redis fails, beats refusing every new client. */
static void rate_sweep(pe_http_server *s, uint64_t now)
{
    bool all = s->rate_count >= s->cfg.rate_max_keys;

    for (int pass = 0; pass < 2 && all; pass++) {
        for (size_t i = 0; i < s->rate_nbuckets; i++) {
            struct rate_entry **pp = &s->rate_tab[i];
            while (*pp) {
                struct rate_entry *e = *pp;
                double t = e->tokens + (double)(now - e->last_ns) / 1e9 * s->cfg.rate_per_s;
                if (pass == 1 || t >= s->cfg.rate_burst) {
                    *pp = e->next;
                    free(e);
                    s->rate_count--;
                } else {
                    pp = &e->next;
                }
            }
        }
        all = s->rate_count >= s->cfg.rate_max_keys;
    }
}

static struct rate_entry *rate_find(pe_http_server *s, const char *key, uint64_t now)
{
    uint64_t h = hash_key(s->rate_seed, key);
    struct rate_entry **head = &s->rate_tab[h & (s->rate_nbuckets - 1)], *e;
    size_t klen = strlen(key);

    for (e = *head; e; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    rate_sweep(s, now);
    head = &s->rate_tab[h & (s->rate_nbuckets - 1)];
    e = pe_xmalloc(sizeof(*e) + klen + 1);
    memcpy(e->key, key, klen + 1);
    e->hash = h;
    e->tokens = s->cfg.rate_burst;
    e->last_ns = now;
    e->next = *head;
    *head = e;
    s->rate_count++;
    return e;
}

/* Take one token for this request; false when the bucket is empty. */
static bool rate_take(struct conn *c)
{
    pe_http_server *s = c->srv;
    char key[512];
    uint64_t now = pe_ev_now_ns();
    struct rate_entry *e;
    double missing;

    if (s->cfg.rate_burst <= 0)
        return true;
    if (c->req.authorization && s->rate_key &&
        s->rate_key(c->req.authorization, key + 4, sizeof(key) - 4, s->rate_key_ud) == 1)
        memcpy(key, "tok:", 4);
    else if (c->req.authorization && !s->rate_key)
        snprintf(key, sizeof(key), "tok:%s", c->req.authorization);
    else
        snprintf(key, sizeof(key), "ip:%s", c->client);
    e = rate_find(s, key, now);
    e->tokens += (double)(now - e->last_ns) / 1e9 * s->cfg.rate_per_s;
    if (e->tokens > s->cfg.rate_burst)
        e->tokens = s->cfg.rate_burst;
    e->last_ns = now;
    c->rl_set = true;
    c->rl_limit = (long)s->cfg.rate_burst;
    missing = s->cfg.rate_burst - e->tokens;
    c->rl_reset = (long long)time(NULL) + (long long)ceil(missing / s->cfg.rate_per_s);
    if (e->tokens < 1.0) {
        c->rl_remaining = 0;
        c->retry_after = (unsigned)ceil((1.0 - e->tokens) / s->cfg.rate_per_s);
        return false;
    }
    e->tokens -= 1.0;
    c->rl_remaining = (long)e->tokens;
    return true;
}

/* ---- XRPC dispatch ------------------------------------------------------ */

struct arg_list {
    pe_xrpc_arg args[MAX_ARGS];
    size_t n;
};

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct arg_list *l = cls;

    if (l->n == MAX_ARGS)
        return MHD_NO; /* more are ignored; a declared one past 64 reads as absent */
    l->args[l->n++] = (pe_xrpc_arg){key, value};
    return MHD_YES;
}

static struct conn *conn_of(pe_xrpc_request *req)
{
    return (struct conn *)req;
}

static void deferred_unlink(struct conn *c)
{
    pe_http_server *s = c->srv;

    if (c->dprev)
        c->dprev->dnext = c->dnext;
    else
        s->deferred = c->dnext;
    if (c->dnext)
        c->dnext->dprev = c->dprev;
    c->dnext = c->dprev = NULL;
}

/* An answer was stored: if the connection was suspended, wake it. */
static void answered(struct conn *c)
{
    if (c->in_handler || !c->deferred)
        return; /* on_access queues it when the handler returns */
    c->deferred = false;
    deferred_unlink(c);
    MHD_resume_connection(c->mc);
    kick(c->srv);
}

static bool check_answer_once(struct conn *c)
{
    if (c->resp == NULL && c->dispatched && (c->in_handler || c->deferred))
        return true;
    pe_log_error("http: %s answered twice or after it was closed", c->label);
    return false;
}

void pe_xrpc_respond(pe_xrpc_request *req, json_t *out)
{
    struct conn *c = conn_of(req);

    if (!check_answer_once(c)) {
        json_decref(out);
        return;
    }
    if (out)
        set_json(c, 200, out);
    else
        set_response(c, 200, NULL, NULL, 0);
    answered(c);
}

void pe_xrpc_respond_err_named(pe_xrpc_request *req, const pe_err *err, const char *name)
{
    struct conn *c = conn_of(req);
    pe_xrpc_error e = pe__xrpc_error_for(err->code);

    if (!check_answer_once(c))
        return;
    if (e.status >= 500) {
        pe_log_error("%s: %s", c->label, err->msg);
        set_error(c, err->code, name, e.name);
    } else {
        set_error(c, err->code, name, err->msg);
    }
    answered(c);
}

void pe_xrpc_respond_err(pe_xrpc_request *req, const pe_err *err)
{
    pe_xrpc_respond_err_named(req, err, NULL);
}

void pe_http_response_defer(pe_xrpc_request *req)
{
    struct conn *c = conn_of(req);

    if (c->in_handler && c->resp == NULL)
        c->deferred = true;
}

/* The request is complete (body read): validate the body, run the handler. */
static void xrpc_dispatch(struct conn *c)
{
    pe_http_server *s = c->srv;
    const struct handler_slot *h = &s->handlers[c->method - pe__xrpc_methods];
    char msg[512];
    json_t *body = NULL;

    if (c->too_big) {
        set_error(c, PE_XRPC_ETOOBIG, NULL, "request entity too large");
        return;
    }
    if (pe__xrpc_body(c->method, c->content_type, c->body, c->body_len, &body, msg, sizeof(msg)) <
        0) {
        set_error(c, PE_EINVAL, NULL, msg);
        return;
    }
    c->req.body = body;
    c->dispatched = true;
    c->in_handler = true;
    h->fn(&c->req, h->ud);
    c->in_handler = false;
    if (c->resp == NULL && !c->deferred) {
        pe_log_error("http: handler for %s returned without an answer", c->label);
        set_error(c, PE_ESYS, NULL, "Internal Server Error");
    }
}

/* Headers are in: everything that can be decided before the body. */
static void xrpc_start(struct conn *c, const char *nsid, const char *method)
{
    pe_http_server *s = c->srv;
    struct arg_list args = {.n = 0};
    const char *want, *len_hdr;
    char msg[512];

    c->label = "xrpc-unknown";
    /* First, so that even requests for unknown methods count (as upstream's
     * global limiter does). */
    if (!rate_take(c)) {
        set_error(c, PE_XRPC_ERATE, NULL, "Too many requests, please try again later.");
        return;
    }
    if (!pe__xrpc_nsid_valid(nsid)) {
        set_error(c, PE_EINVAL, NULL, "invalid xrpc path");
        return;
    }
    c->method = pe__xrpc_lookup(nsid);
    if (c->method == NULL) {
        set_error(c, PE_XRPC_ENOMETHOD, NULL, "Method Not Implemented");
        return;
    }
    c->label = c->req.nsid = c->method->nsid;
    c->req.kind = c->method->kind;
    want = c->method->kind == PE_XRPC_QUERY ? "GET" : "POST";
    if (strcmp(method, want) != 0 &&
        !(c->method->kind == PE_XRPC_QUERY && !strcmp(method, "HEAD"))) {
        snprintf(msg, sizeof(msg), "Incorrect HTTP method (%s) expected %s", method, want);
        set_error(c, PE_EINVAL, NULL, msg);
        return;
    }
    if (s->handlers[c->method - pe__xrpc_methods].fn == NULL) {
        set_error(c, PE_XRPC_ENOTIMPL, NULL, "Method Not Implemented");
        return;
    }
    MHD_get_connection_values(c->mc, MHD_GET_ARGUMENT_KIND, collect_arg, &args);
    if (pe__xrpc_params(c->method, args.args, args.n, &c->req.params, msg, sizeof(msg)) < 0) {
        set_error(c, PE_EINVAL, NULL, msg);
        return;
    }
    c->content_type = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Content-Type");
    len_hdr = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Content-Length");
    if (len_hdr && strlen(len_hdr) > 15)
        c->too_big = true;
    else if (len_hdr && strtoull(len_hdr, NULL, 10) > s->cfg.max_json_body)
        c->too_big = true;
    if (c->too_big) /* answer now: MHD then closes instead of reading the body */
        set_error(c, PE_XRPC_ETOOBIG, NULL, "request entity too large");
}

static void body_append(struct conn *c, const char *data, size_t len)
{
    size_t limit = c->body_limit;

    if (c->too_big || len > limit - c->body_len) {
        c->too_big = true; /* keep reading (and dropping) to answer cleanly */
        return;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap * 2 : 4096;
        while (cap < c->body_len + len)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        c->body = pe_xrealloc(c->body, cap + 1); /* + NUL for pe_http_request.body */
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, data, len);
    c->body_len += len;
}

/* ---- routes outside /xrpc ----------------------------------------------- */

static struct conn *conn_of_http(pe_http_request *req)
{
    return (struct conn *)((char *)req - offsetof(struct conn, hreq));
}

static const struct route *route_find(pe_http_server *s, const char *url)
{
    const struct route *best = NULL;

    for (size_t i = 0; i < s->n_routes; i++) {
        const struct route *r = &s->routes[i];
        if (!r->by_host && strncmp(url, r->prefix, r->plen) == 0 &&
            (best == NULL || r->plen > best->plen))
            best = r;
    }
    return best;
}

/* The host route whose suffix ends the Host header (port left out), with
 * at least one character before it: "8080-box.localhost:8789" matches
 * ".localhost"; "localhost:8789" does not. */
static const struct route *host_route_find(pe_http_server *s, const char *host)
{
    size_t hl;
    const char *colon;

    if (host == NULL)
        return NULL;
    colon = strrchr(host, ':');
    hl = colon ? (size_t)(colon - host) : strlen(host);
    for (size_t i = 0; i < s->n_routes; i++) {
        const struct route *r = &s->routes[i];
        if (r->by_host && hl > r->plen && strncasecmp(host + hl - r->plen, r->prefix, r->plen) == 0)
            return r;
    }
    return NULL;
}

/* Headers are in: everything that can be decided before the body. */
static void custom_start(struct conn *c, const struct route *r, const char *url, const char *method)
{
    const char *len_hdr = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Content-Length");

    c->route = r;
    c->label = r->prefix;
    c->body_limit = r->max_body;
    c->hreq = (pe_http_request){
        .method = method,
        .path = url,
        .rest = r->by_host ? url : url + r->plen,
        .authorization = c->req.authorization,
        .client_addr = c->client,
        .body = "",
    };
    if (len_hdr && (strlen(len_hdr) > 15 || strtoull(len_hdr, NULL, 10) > r->max_body)) {
        c->too_big = true;
        set_error(c, PE_XRPC_ETOOBIG, NULL, "request entity too large");
    }
}

static void custom_dispatch(struct conn *c)
{
    if (c->too_big) {
        set_error(c, PE_XRPC_ETOOBIG, NULL, "request entity too large");
        return;
    }
    if (c->body) {
        c->body[c->body_len] = '\0';
        c->hreq.body = c->body;
        c->hreq.body_len = c->body_len;
    }
    c->dispatched = true;
    c->in_handler = true;
    c->route->fn(&c->hreq, c->route->ud);
    c->in_handler = false;
    if (c->resp == NULL && !c->deferred) {
        pe_log_error("http: handler for %s returned without an answer", c->label);
        set_error(c, PE_ESYS, NULL, "Internal Server Error");
    }
}

static int add_route(pe_http_server *srv, const char *prefix, bool by_host, size_t max_body,
                     pe_http_handler fn, void *ud, pe_err *err)
{
    struct route *r = NULL;

    for (size_t i = 0; i < srv->n_routes; i++)
        if (srv->routes[i].by_host == by_host && strcmp(srv->routes[i].prefix, prefix) == 0)
            r = &srv->routes[i];
    if (r == NULL) {
        if (srv->n_routes == MAX_ROUTES)
            return pe_err_set(err, PE_EINVAL, 0, "route %s: more than %d routes", prefix,
                              MAX_ROUTES);
        r = &srv->routes[srv->n_routes++];
        r->prefix = pe_xstrdup(prefix);
        r->plen = strlen(prefix);
        r->by_host = by_host;
    }
    r->max_body = max_body ? max_body : srv->cfg.max_json_body;
    r->fn = fn;
    r->ud = ud;
    return 0;
}

int pe_http_route(pe_http_server *srv, const char *prefix, size_t max_body, pe_http_handler fn,
                  void *ud, pe_err *err)
{
    if (prefix == NULL || prefix[0] != '/')
        return pe_err_set(err, PE_EINVAL, 0, "route prefix must start with '/'");
    return add_route(srv, prefix, false, max_body, fn, ud, err);
}

int pe_http_route_host(pe_http_server *srv, const char *suffix, size_t max_body, pe_http_handler fn,
                       void *ud, pe_err *err)
{
    if (suffix == NULL || suffix[0] != '.' || suffix[1] == '\0')
        return pe_err_set(err, PE_EINVAL, 0, "host route suffix must start with '.'");
    return add_route(srv, suffix, true, max_body, fn, ud, err);
}

struct each_ctx {
    pe_http_each_fn fn;
    void *ud;
};

static enum MHD_Result each_value(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct each_ctx *e = cls;

    e->fn(key, value, e->ud);
    return MHD_YES;
}

void pe_http_header_each(pe_http_request *req, pe_http_each_fn fn, void *ud)
{
    struct each_ctx e = {fn, ud};

    MHD_get_connection_values(conn_of_http(req)->mc, MHD_HEADER_KIND, each_value, &e);
}

void pe_http_query_each(pe_http_request *req, pe_http_each_fn fn, void *ud)
{
    struct each_ctx e = {fn, ud};

    MHD_get_connection_values(conn_of_http(req)->mc, MHD_GET_ARGUMENT_KIND, each_value, &e);
}

const char *pe_http_query(pe_http_request *req, const char *key)
{
    return MHD_lookup_connection_value(conn_of_http(req)->mc, MHD_GET_ARGUMENT_KIND, key);
}

const char *pe_http_header(pe_http_request *req, const char *name)
{
    return MHD_lookup_connection_value(conn_of_http(req)->mc, MHD_HEADER_KIND, name);
}

static void add_headers(struct MHD_Response *r, const char *const *headers)
{
    for (; headers && headers[0] && headers[1]; headers += 2)
        MHD_add_response_header(r, headers[0], headers[1]);
}

void pe_http_respond(pe_http_request *req, unsigned status, const char *content_type,
                     const void *body, size_t len, const char *const *headers)
{
    struct conn *c = conn_of_http(req);
    char *copy = NULL;

    if (!check_answer_once(c))
        return;
    if (len > 0) {
        copy = pe_xmalloc(len);
        memcpy(copy, body, len);
    }
    set_response(c, status, content_type, copy, len);
    add_headers(c->resp, headers);
    answered(c);
}

void pe_http_respond_fd(pe_http_request *req, unsigned status, const char *content_type, int fd,
                        const char *const *headers)
{
    struct conn *c = conn_of_http(req);
    struct stat st;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        pe_http_respond_error(req, 500, "InternalServerError", "the answer cannot be read");
        return;
    }
    if (!check_answer_once(c)) {
        close(fd);
        return;
    }
    /* MHD reads fd as the client takes it (sendfile where it can), and
     * closes it with the response. */
    use_response(c, MHD_create_response_from_fd64((uint64_t)st.st_size, fd), status, content_type);
    add_headers(c->resp, headers);
    answered(c);
}

void pe_http_respond_error(pe_http_request *req, unsigned status, const char *name,
                           const char *message)
{
    json_t *msg = json_string(message);

    if (msg == NULL)
        msg = json_string("request contains invalid UTF-8");
    json_t *v = json_pack("{s:s,s:o}", "error", name, "message", msg);
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    json_decref(v);
    if (text == NULL)
        abort(); /* allocation failure */
    pe_http_respond(req, status, JSON_TYPE, text, strlen(text), NULL);
    free(text);
}

void pe_http_defer(pe_http_request *req)
{
    struct conn *c = conn_of_http(req);

    if (c->in_handler && c->resp == NULL)
        c->deferred = true;
}

/* ---- streams ------------------------------------------------------------ */

static void stream_unlink(struct pe_http_stream *st)
{
    pe_http_server *s = st->srv;

    if (st->prev)
        st->prev->next = st->next;
    else if (s->streams == st)
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->next = st->prev = NULL;
}

/* The connection is over: tell the owner once, unless it let go. */
static void stream_gone(struct pe_http_stream *st)
{
    if (st->c) {
        st->c->stream = NULL;
        st->c = NULL;
    }
    if (st->gone)
        return;
    st->gone = true;
    stream_unlink(st);
    if (!st->user_closed && st->cb.on_close)
        st->cb.on_close(st, st->ud);
}

static void stream_unpark(struct pe_http_stream *st)
{
    if (!st->parked || st->c == NULL)
        return;
    st->parked = false;
    MHD_resume_connection(st->c->mc);
    kick(st->srv);
}

/* MHD pulls the body: hand it what is queued, or park the connection
 * (suspend) until the next write, so an idle stream costs no wakeups. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct pe_http_stream *st = cls;
    size_t n;

    if (st->len > st->off) {
        n = st->len - st->off < max ? st->len - st->off : max;
        memcpy(buf, st->buf + st->off, n);
        st->off += n;
        if (st->off == st->len) {
            st->off = st->len = 0;
            if (!st->user_closed && !st->gone && st->cb.on_drain)
                st->cb.on_drain(st, st->ud);
        }
        return (ssize_t)n;
    }
    if (st->user_closed || st->ending || st->c == NULL)
        return MHD_CONTENT_READER_END_OF_STREAM;
    st->parked = true;
    MHD_suspend_connection(st->c->mc);
    return 0;
}

static void stream_free(void *cls)
{
    struct pe_http_stream *st = cls;

    stream_gone(st);
    free(st->buf);
    free(st);
}

pe_http_stream *pe_http_respond_stream(pe_http_request *req, unsigned status,
                                       const char *content_type, const char *const *headers,
                                       const pe_http_stream_callbacks *cb, void *ud)
{
    struct conn *c = conn_of_http(req);
    struct pe_http_stream *st;
    struct MHD_Response *r;

    if (!check_answer_once(c))
        return NULL;
    st = pe_xcalloc(1, sizeof(*st));
    st->srv = c->srv;
    st->c = c;
    st->cb = *cb;
    st->ud = ud;
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, st,
                                          stream_free);
    if (r == NULL)
        abort(); /* allocation failure */
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    if (content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    add_headers(r, headers);
    c->resp = r;
    c->status = status;
    c->stream = st;
    st->next = c->srv->streams;
    if (st->next)
        st->next->prev = st;
    c->srv->streams = st;
    answered(c);
    return st;
}

int pe_http_stream_write(pe_http_stream *st, const void *data, size_t len)
{
    if (st->user_closed || st->c == NULL)
        return -1;
    if (st->off > 0 && st->off == st->len)
        st->off = st->len = 0;
    if (st->len + len > st->cap) {
        if (st->off > 0) { /* compact before growing */
            memmove(st->buf, st->buf + st->off, st->len - st->off);
            st->len -= st->off;
            st->off = 0;
        }
        if (st->len + len > st->cap) {
            st->cap = (st->len + len) * 2;
            st->buf = pe_xrealloc(st->buf, st->cap);
        }
    }
    memcpy(st->buf + st->len, data, len);
    st->len += len;
    stream_unpark(st);
    return 0;
}

size_t pe_http_stream_pending(const pe_http_stream *st)
{
    return st->len - st->off;
}

void pe_http_stream_close(pe_http_stream *st)
{
    if (st == NULL || st->user_closed)
        return;
    st->user_closed = true;
    if (st->c == NULL)
        return; /* already gone: freed with its response */
    stream_unpark(st);
}

/* ---- WebSocket handshake (the framing is ws.c's) ------------------------ */

static void on_upgrade(void *cls, struct MHD_Connection *mc, void *con_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    struct conn *c = con_cls;

    if (c)
        c->ws = NULL;
    pe__ws_attach(cls, sock, extra_in, extra_in_size, urh);
}

/* Sec-WebSocket-Accept: base64(SHA-1(key + the RFC's GUID)). */
static void ws_accept_key(const char *key, char out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct sha1_ctx ctx;
    uint8_t digest[SHA1_DIGEST_SIZE];

    sha1_init(&ctx);
    sha1_update(&ctx, strlen(key), (const uint8_t *)key);
    sha1_update(&ctx, sizeof(guid) - 1, (const uint8_t *)guid);
    sha1_digest(&ctx, sizeof(digest), digest);
    base64_encode_raw(out, sizeof(digest), digest);
    out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

static bool has_token(const char *list, const char *token)
{
    size_t n = strlen(token);

    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncasecmp(p, token, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
            return true;
        p = strchr(p, ',');
    }
    return false;
}

pe_http_ws *pe_http_upgrade_ws(pe_http_request *req, const pe_http_ws_callbacks *cb,
                               size_t max_message, void *ud)
{
    static const char *const need_ws[] = {"Upgrade", "websocket", NULL};
    static const char *const need_13[] = {"Sec-WebSocket-Version", "13", NULL};
    struct conn *c = conn_of_http(req);
    const char *upgrade = pe_http_header(req, "Upgrade");
    const char *connection = pe_http_header(req, "Connection");
    const char *key = pe_http_header(req, "Sec-WebSocket-Key");
    const char *version = pe_http_header(req, "Sec-WebSocket-Version");
    char accept[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1];
    struct MHD_Response *r;
    pe_http_ws *ws;

    if (!check_answer_once(c))
        return NULL;
    if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0) {
        static const char msg[] = "{\"error\":\"UpgradeRequired\",\"message\":\"WebSocket only\"}";
        pe_http_respond(req, 426, JSON_TYPE, msg, sizeof(msg) - 1, need_ws);
        return NULL;
    }
    if (strcmp(c->hreq.method, "GET") != 0 || !has_token(connection, "upgrade") || key == NULL ||
        strlen(key) != 24 || version == NULL || strcmp(version, "13") != 0) {
        static const char msg[] = "{\"error\":\"InvalidRequest\","
                                  "\"message\":\"bad WebSocket handshake\"}";
        pe_http_respond(req, 400, JSON_TYPE, msg, sizeof(msg) - 1, need_13);
        return NULL;
    }
    ws_accept_key(key, accept);
    ws = pe__ws_new(c->srv, cb, max_message, ud);
    r = MHD_create_response_for_upgrade(on_upgrade, ws);
    if (r == NULL)
        abort(); /* allocation failure */
    MHD_add_response_header(r, "Upgrade", "websocket");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    c->resp = r;
    c->status = 101;
    c->ws = ws;
    answered(c);
    return ws;
}

/* ---- raw upgrades (a proxy relays the bytes itself) --------------------- */

static void raw_unlink(struct pe_http_raw *raw)
{
    pe_http_server *s = raw->srv;

    if (raw->prev)
        raw->prev->next = raw->next;
    else if (s->raws == raw)
        s->raws = raw->next;
    if (raw->next)
        raw->next->prev = raw->prev;
    raw->next = raw->prev = NULL;
}

static void on_raw_upgrade(void *cls, struct MHD_Connection *mc, void *con_cls,
                           const char *extra_in, size_t extra_in_size, MHD_socket sock,
                           struct MHD_UpgradeResponseHandle *urh)
{
    struct pe_http_raw *raw = cls;
    struct conn *c = con_cls;

    if (c)
        c->raw = NULL;
    raw->urh = urh;
    raw->cb.on_socket(raw, sock, extra_in, extra_in_size, raw->ud);
}

pe_http_raw *pe_http_upgrade_raw(pe_http_request *req, const char *const *headers,
                                 const pe_http_raw_callbacks *cb, void *ud)
{
    struct conn *c = conn_of_http(req);
    struct pe_http_raw *raw;
    struct MHD_Response *r;

    if (!check_answer_once(c))
        return NULL;
    raw = pe_xcalloc(1, sizeof(*raw));
    raw->srv = c->srv;
    raw->cb = *cb;
    raw->ud = ud;
    r = MHD_create_response_for_upgrade(on_raw_upgrade, raw);
    if (r == NULL)
        abort(); /* allocation failure */
    add_headers(r, headers);
    raw->next = c->srv->raws;
    if (raw->next)
        raw->next->prev = raw;
    c->srv->raws = raw;
    c->resp = r;
    c->status = 101;
    c->raw = raw;
    answered(c);
    return raw;
}

void pe_http_raw_close(pe_http_raw *raw)
{
    pe_http_server *s;

    if (raw == NULL)
        return;
    s = raw->srv;
    raw_unlink(raw);
    if (raw->urh) {
        MHD_upgrade_action(raw->urh, MHD_UPGRADE_ACTION_CLOSE);
        kick(s);
    }
    free(raw);
}

/* The owner is told (on_close) and must stop using the socket; the server
 * then gives it back to MHD. */
static void raw_end(struct pe_http_raw *raw)
{
    raw_unlink(raw);
    raw->next = raw->prev = NULL;
    if (raw->cb.on_close)
        raw->cb.on_close(raw, raw->ud);
    if (raw->urh)
        MHD_upgrade_action(raw->urh, MHD_UPGRADE_ACTION_CLOSE);
    free(raw);
}

pe_ev_loop *pe__http_loop(pe_http_server *srv)
{
    return srv->loop;
}

void pe__http_run(pe_http_server *srv)
{
    run_mhd(srv);
}

pe_http_ws **pe__http_ws_list(pe_http_server *srv)
{
    return &srv->ws_list;
}

/* ---- routes ------------------------------------------------------------- */

static void serve_preflight(struct conn *c)
{
    set_response(c, 204, NULL, NULL, 0);
    MHD_add_response_header(c->resp, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
    MHD_add_response_header(c->resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    MHD_add_response_header(c->resp, "Access-Control-Max-Age", "86400");
}

static void serve_banner(struct conn *c)
{
    const char *accept = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Accept");

    if (accept && strstr(accept, "text/html"))
        set_text(c, 200, "text/html; charset=utf-8", c->srv->banner_html);
    else
        set_text(c, 200, "text/plain; charset=utf-8", c->srv->banner);
}

static void route(struct conn *c, const char *url, const char *method)
{
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    const struct route *r;

    c->label = "other";
    if ((r = host_route_find(
             c->srv, MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Host"))) != NULL) {
        custom_start(c, r, url, method);
    } else if (!strcmp(method, "OPTIONS")) {
        c->label = "preflight";
        serve_preflight(c);
    } else if (!strncmp(url, "/xrpc/", 6)) {
        xrpc_start(c, url + 6, method);
    } else if (!strcmp(url, "/healthz") && get) {
        c->label = "/healthz";
        set_text(c, 200, "text/plain; charset=utf-8", "ok");
    } else if (!strcmp(url, "/metrics") && get) {
        c->label = "/metrics";
        serve_metrics(c);
    } else if ((r = route_find(c->srv, url)) != NULL) {
        custom_start(c, r, url, method);
    } else if (!strcmp(url, "/") && get) {
        c->label = "/";
        serve_banner(c);
    } else {
        set_error(c, PE_ENOENT, NULL, "Not Found");
    }
}

static struct conn *conn_new(pe_http_server *s, struct MHD_Connection *mc)
{
    struct conn *c = pe_xcalloc(1, sizeof(*c));
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    c->srv = s;
    c->mc = mc;
    c->start_ns = pe_ev_now_ns();
    snprintf(c->client, sizeof(c->client), "unknown");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->client,
                  sizeof(c->client));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->client,
                  sizeof(c->client));
    c->req.client_addr = c->client;
    c->body_limit = s->cfg.max_json_body;
    c->req.authorization = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
    return c;
}

static enum MHD_Result queue(struct conn *c)
{
    enum MHD_Result r = MHD_queue_response(c->mc, c->status, c->resp);

    MHD_destroy_response(c->resp);
    c->resp = NULL;
    return r;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mc, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *data_size, void **con_cls)
{
    struct conn *c = *con_cls;

    if (c == NULL) {
        c = conn_new(cls, mc);
        *con_cls = c;
        route(c, url, method);
        /* An answer queued before MHD has read the whole request makes it
         * close the connection afterwards (it cannot tell whether a body
         * follows): so answer on the next call, when the request is in,
         * and keep-alive works. Only a body too large to read is answered
         * now, and that connection closes. */
        return c->resp && c->too_big ? queue(c) : MHD_YES;
    }
    if (c->resp && *data_size && c->body_len + *data_size <= c->srv->cfg.max_json_body) {
        /* An early answer (an error found from the head): read and drop
         * the body first, so the connection stays usable. */
        c->body_len += *data_size;
        *data_size = 0;
        return MHD_YES;
    }
    if (c->resp) /* an early error, or a deferred answer after resume */
        return queue(c);
    if (*data_size) {
        body_append(c, data, *data_size);
        *data_size = 0;
        return MHD_YES;
    }
    if (c->dispatched)
        return MHD_YES; /* resumed without an answer cannot happen; stay put */
    if (c->route)
        custom_dispatch(c);
    else
        xrpc_dispatch(c);
    if (c->resp)
        return queue(c);
    c->dnext = c->srv->deferred;
    if (c->dnext)
        c->dnext->dprev = c;
    c->srv->deferred = c;
    MHD_suspend_connection(mc);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    pe_http_server *s = cls;
    struct conn *c = *con_cls;

    if (c == NULL)
        return;
    *con_cls = NULL;
    if (c->status) {
        double secs = (double)(pe_ev_now_ns() - c->start_ns) / 1e9;
        metrics_record(s, c->label, c->status, secs);
        pe_log_info("http %s %s %u %.2fms%s", c->client, c->label, c->status, secs * 1e3,
                    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (aborted)");
    }
    if (c->deferred)
        deferred_unlink(c);
    if (c->stream)
        stream_gone(c->stream);
    if (c->ws) /* answered 101 but the upgrade never happened */
        pe__ws_abort(pe_steal_ptr(&c->ws));
    if (c->raw) /* same for a raw upgrade */
        raw_end(pe_steal_ptr(&c->raw));
    if (c->resp)
        MHD_destroy_response(c->resp);
    json_decref(c->req.params);
    json_decref(c->req.body);
    free(c->body);
    free(c);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];

    vsnprintf(buf, sizeof(buf), fmt, ap);
    buf[strcspn(buf, "\n")] = '\0';
    pe_log_debug("microhttpd: %s", buf);
}

/* ---- lifetime ----------------------------------------------------------- */

static char *html_banner(const char *text)
{
    size_t cap = strlen(text) * 6 + 64, n = 0;
    char *out = pe_xmalloc(cap);

    n += (size_t)snprintf(out, cap, "<!doctype html><pre>");
    for (; *text; text++) {
        const char *rep = *text == '<'   ? "&lt;"
                          : *text == '>' ? "&gt;"
                          : *text == '&' ? "&amp;"
                                         : NULL;
        if (rep) {
            memcpy(out + n, rep, strlen(rep));
            n += strlen(rep);
        } else {
            out[n++] = *text;
        }
    }
    snprintf(out + n, cap - n, "</pre>\n");
    return out;
}

static int parse_listen(const pe_http_config *cfg, struct sockaddr_storage *ss, pe_err *err)
{
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (cfg->port > 65535)
        return pe_err_set(err, PE_EINVAL, 0, "listen port %u out of range", cfg->port);
    if (inet_pton(AF_INET, cfg->host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)cfg->port);
        return 0;
    }
    if (inet_pton(AF_INET6, cfg->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)cfg->port);
        return 0;
    }
    return pe_err_set(err, PE_EINVAL, 0, "listen address %s is not a numeric IP address",
                      cfg->host);
}

static int start_mhd(pe_http_server *s, pe_err *err)
{
    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE;
    const union MHD_DaemonInfo *info;

    if (parse_listen(&s->cfg, &ss, err) < 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(
        flags, (uint16_t)s->cfg.port, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->cfg.max_header_bytes, MHD_OPTION_CONNECTION_LIMIT,
        s->cfg.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->cfg.max_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
    if (s->mhd == NULL)
        return pe_err_set(err, PE_ESYS, errno, "listen on %s port %u", s->cfg.host, s->cfg.port);
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : s->cfg.port;
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL)
        return pe_err_set(err, PE_EUNSUP, 0, "libmicrohttpd has no epoll support");
    s->io = pe_ev_io_start(s->loop, info->epoll_fd, EPOLLIN, on_mhd_io, s, err);
    if (s->io == NULL)
        return -1;
    s->timer = pe_ev_timer_start(s->loop, 0, 0, on_mhd_timer, s, err);
    if (s->timer == NULL)
        return -1;
    arm_timer(s);
    return 0;
}

pe_http_server *pe_http_server_new(pe_ev_loop *loop, const pe_http_config *cfg, pe_err *err)
{
    pe_http_server *s = pe_xcalloc(1, sizeof(*s));
    size_t n = 1;

    s->loop = loop;
    s->cfg = *cfg;
    s->host = pe_xstrdup(cfg->host ? cfg->host : "127.0.0.1");
    s->cfg.host = s->host;
    s->banner = pe_xstrdup(cfg->banner ? cfg->banner : DEFAULT_BANNER);
    s->cfg.banner = s->banner;
    s->banner_html = html_banner(s->banner);
    s->handlers = pe_xcalloc(pe__xrpc_n_methods, sizeof(*s->handlers));
    if (s->cfg.rate_max_keys == 0)
        s->cfg.rate_max_keys = 1;
    while (n < s->cfg.rate_max_keys && n < (1u << 20))
        n <<= 1;
    s->rate_nbuckets = n;
    s->rate_tab = pe_xcalloc(n, sizeof(*s->rate_tab));
    if (getrandom(&s->rate_seed, sizeof(s->rate_seed), GRND_NONBLOCK) != sizeof(s->rate_seed))
        s->rate_seed = pe_ev_now_ns();
    if (s->cfg.rate_per_s <= 0)
        s->cfg.rate_per_s = 1e-9;
    if (start_mhd(s, err) < 0) {
        pe_err_prefix(err, "start HTTP server");
        pe_http_server_free(s);
        return NULL;
    }
    return s;
}

unsigned pe_http_server_port(const pe_http_server *srv)
{
    return srv->port;
}

int pe_xrpc_register(pe_http_server *srv, const char *nsid, pe_xrpc_handler fn, void *ud,
                     pe_err *err)
{
    const pe_xrpc_method *m = pe__xrpc_lookup(nsid);

    if (m == NULL)
        return pe_err_set(err, PE_ENOENT, 0, "register %s: not in the lexicons", nsid);
    srv->handlers[m - pe__xrpc_methods] = (struct handler_slot){fn, ud};
    return 0;
}

void pe_http_set_rate_key(pe_http_server *srv, pe_http_rate_key_fn fn, void *ud)
{
    srv->rate_key = fn;
    srv->rate_key_ud = ud;
}

void pe_http_set_metrics_hook(pe_http_server *srv, pe_http_metrics_fn fn, void *ud)
{
    srv->metrics_fn = fn;
    srv->metrics_ud = ud;
}

void pe_http_server_free(pe_http_server *s)
{
    if (s == NULL)
        return;
    if (s->mhd) {
        /* MHD must not be stopped with suspended connections: answer them. */
        while (s->deferred) {
            struct conn *c = s->deferred;
            set_error(c, PE_XRPC_EBUSY, NULL, "server shutting down");
            answered(c);
        }
        /* Parked streams too: they end after what is queued. */
        for (struct pe_http_stream *st = s->streams; st; st = st->next) {
            st->ending = true;
            if (st->c && st->parked) {
                st->parked = false;
                MHD_resume_connection(st->c->mc);
            }
        }
        pe__ws_close_all(s);
        while (s->raws)
            raw_end(s->raws);
        run_mhd(s);
        MHD_stop_daemon(s->mhd);
    }
    pe_ev_io_stop(s->io);
    pe_ev_timer_stop(s->timer);
    for (size_t i = 0; i < s->rate_nbuckets; i++) {
        while (s->rate_tab[i]) {
            struct rate_entry *e = s->rate_tab[i];
            s->rate_tab[i] = e->next;
            free(e);
        }
    }
    free(s->rate_tab);
    free(s->handlers);
    for (size_t i = 0; i < s->n_routes; i++)
        free(s->routes[i].prefix);
    free(s->host);
    free(s->banner);
    free(s->banner_html);
    free(s);
}
