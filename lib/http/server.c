/* The HTTP server: libmicrohttpd in external-epoll mode on a pe_ev_loop.
 *
 * MHD runs no thread of its own. Its epoll fd sits in our loop; when it is
 * readable, or when MHD's timeout (connection idle limit) expires, we call
 * MHD_run, which accepts, reads, calls on_access and writes. So every
 * handler runs on the loop thread and must not block: slow work goes to
 * the loop's worker pool and the handler defers its answer.
 *
 * A request's state is a struct conn (server-conn.h) in MHD's per-request
 * pointer, created by on_uri and freed in on_completed. Deferral suspends
 * the MHD connection; the answer is stored in the conn and the connection
 * resumed, and MHD calls on_access once more to queue it. MHD_run is never
 * entered recursively: an answer that arrives while MHD_run is on the stack
 * (a handler completing another request) only asks for one more round.
 *
 * A request goes through three phases (enum conn_phase). NEW: MHD has the
 * request line (on_uri, which gets the raw target before MHD decodes it,
 * creates the conn). HEAD: the headers are in (MHD's first on_access
 * call): they are checked strictly (request-check.c), the request is
 * routed, and a route's head callback may answer, hold, or let the body
 * come. BODY: the body arrives (into memory, or into a file) and the
 * handler runs at its end. Holding suspends the connection during the
 * first call; MHD reads nothing of the body while suspended, and repeats
 * the first call (data_size 0, no body byte yet) when resumed, which is
 * where the held request's answer is queued or its body let in.
 *
 * When an answer is known before the body (an error, a head callback's
 * answer), MHD would close the connection if it were queued at once (it
 * cannot tell whether a body follows): so an answer to a request without a
 * body waits for the next call, a small declared body (up to
 * max_json_body) is read and dropped first, and only a larger or chunked
 * body is refused at once, with Connection: close.
 *
 * Routes outside /xrpc (pe_http_route, server-routes.c) share the request
 * machinery: the handler runs once the body is in, and may answer in full,
 * defer, start a stream, or upgrade to a WebSocket (server-upgrade.c). A
 * stream's body is pulled by MHD through stream_read; with nothing queued
 * the connection is suspended ("parked") and the next write resumes it. An
 * upgraded socket leaves MHD for ws.c; MHD keeps only its slot until ws.c
 * gives it back.
 *
 * Limits (STYLE rule 8): MHD's per-connection memory pool bounds the
 * request line and headers (431 beyond it), a body in memory stops at
 * max_json_body or the route's max_body (413) and counts against the
 * buffered-bytes budget (per client address and in total: 429 / 503
 * before it is read), the rate-limit table at rate_max_keys, the metrics
 * table at METRIC_ROWS (nsids come from the lexicon table, unknown ones
 * share one row), and MHD enforces connection counts and idle timeouts. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "http/server-conn.h"

#define MAX_ARGS 64
#define BUDGET_RETRY_S "1"
/* What of a refused chunked body is still read (and dropped) to answer. */
#define DRAIN_MAX (1u << 20)
#define DEFAULT_BANNER "Pocketenv: sandboxes over XRPC (/xrpc/io.pocketenv.*)\n"

static const double latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS PE_ARRAY_LEN(latency_buckets)
_Static_assert(N_BUCKETS == PE_HTTP_LATENCY_BUCKETS, "the histogram's size (server-conn.h)");

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
        .max_buffered_total = 64u << 20,
        .max_buffered_per_client = 16u << 20,
        .cors_origins = NULL,
        .metrics_public = false,
    };
}

/* ---- responses ---------------------------------------------------------- */

/* CORS headers, for the API and the server's own paths only: a route
 * (a preview's proxied app) speaks for itself. Only an allowed Origin is
 * echoed, never "*": a page of another origin (a sandbox's preview, in the
 * owner's browser) must not read the API's answers. */
static void add_cors(struct conn *c, struct MHD_Response *r)
{
    if (c->route || c->srv->cors[0] == NULL)
        return;
    MHD_add_response_header(r, "Vary", "Origin");
    if (c->cors_origin == NULL)
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", c->cors_origin);
    MHD_add_response_header(r, "Access-Control-Expose-Headers",
                            "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
                            "Retry-After");
}

/* r, with the headers every answer carries, becomes c's answer. */
void pe__http_use_response(struct conn *c, struct MHD_Response *r, unsigned status,
                           const char *ctype)
{
    char num[32];

    if (r == NULL)
        abort(); /* MHD only fails here on allocation failure */
    add_cors(c, r);
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
    if (c->reply_header[0])
        MHD_add_response_header(r, c->reply_header[0], c->reply_header[1]);
    if (c->retry_after_text) {
        MHD_add_response_header(r, "Retry-After", c->retry_after_text);
    } else if (status == 429) {
        snprintf(num, sizeof(num), "%u", c->retry_after);
        MHD_add_response_header(r, "Retry-After", num);
    }
    if (c->resp)
        MHD_destroy_response(c->resp);
    c->resp = r;
    c->status = status;
}

void pe__http_set_response(struct conn *c, unsigned status, const char *ctype, char *body,
                           size_t len)
{
    if (body)
        pe__http_use_response(c, MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE),
                              status, ctype);
    else
        pe__http_use_response(
            c, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT), status,
            ctype);
}

static void set_text(struct conn *c, unsigned status, const char *ctype, const char *text)
{
    pe__http_set_response(c, status, ctype, pe_xstrdup(text), strlen(text));
}

static void set_json(struct conn *c, unsigned status, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    json_decref(v);
    if (s == NULL)
        abort(); /* jansson fails only on allocation failure for valid values */
    pe__http_set_response(c, status, JSON_TYPE, s, strlen(s));
}

/* Every XRPC error goes through here, so through pe__xrpc_error_for. */
void pe__http_set_error(struct conn *c, int code, const char *name, const char *message)
{
    pe_xrpc_error e = pe__xrpc_error_for(code);
    json_t *msg = json_string(message);

    if (msg == NULL) /* the message quoted invalid UTF-8 from the request */
        msg = json_string("request contains invalid UTF-8");
    set_json(c, e.status, json_pack("{s:s,s:o}", "error", name ? name : e.name, "message", msg));
}

/* ---- running MHD from the loop ------------------------------------------ */

/* MHD's timeout is the earliest connection's idle deadline, moved by every
 * byte: re-arming the timerfd after each run would reprogram the CPU's
 * timer every time, which in a VM is an exit to the hypervisor. So the
 * timer is set only to fire earlier than it would; firing too early costs
 * one MHD_run that finds nothing due and arms it again. */
static void arm_timer(pe_http_server *s)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    uint64_t ns, due;

    if (MHD_get_timeout(s->mhd, &ms) != MHD_YES)
        return; /* nothing due: a timer still armed fires once, harmlessly */
    ns = ms ? (uint64_t)ms * 1000000ull : 1; /* 0 would disarm the timerfd */
    due = pe_monotonic_ns() + ns;
    if (s->timer_due_ns != 0 && s->timer_due_ns <= due)
        return;
    if (pe_ev_timer_set(s->timer, ns, 0, NULL) == 0)
        s->timer_due_ns = due;
}

/* MHD wants to run again at once: it acts on a resumed connection only in
 * the run after the one that saw the resume. */
static bool mhd_due_now(pe_http_server *s)
{
    MHD_UNSIGNED_LONG_LONG ms = 1;

    return MHD_get_timeout(s->mhd, &ms) == MHD_YES && ms == 0;
}

static void run_mhd(pe_http_server *s)
{
    int again = 0;

    if (s->in_mhd) {
        s->need_run = true;
        return;
    }
    do {
        s->need_run = false;
        s->in_mhd = true;
        MHD_run(s->mhd);
        s->in_mhd = false;
        /* a couple of runs here save a timer interrupt each; more go
         * through the timer, so that nothing can spin the loop */
    } while (s->need_run || (again++ < 2 && mhd_due_now(s)));
    arm_timer(s);
}

/* Have MHD run soon from the loop, not on the caller's stack: an answer or
 * a stream write must never call back into its caller (on_close, on_drain)
 * before it returns. An eventfd, not the timer: a 1 ns timer costs a timer
 * interrupt (and in a VM two exits) per answer. */
void pe__http_kick(pe_http_server *s)
{
    uint64_t one = 1;

    if (s->in_mhd) {
        s->need_run = true;
        return;
    }
    if (s->kicked)
        return;
    if (write(s->kick_fd, &one, sizeof(one)) == sizeof(one)) {
        s->kicked = true;
    } else if (pe_ev_timer_set(s->timer, 1, 0, NULL) == 0) {
        /* cannot happen with a count this small: the timer as before */
        s->timer_due_ns = pe_monotonic_ns();
    }
}

static void on_mhd_io(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    run_mhd(ud);
}

static void on_kick(pe_ev_io *io, int fd, uint32_t events, void *ud)
{
    pe_http_server *s = ud;
    uint64_t n;

    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    s->kicked = false;
    run_mhd(s);
}

static void on_mhd_timer(pe_ev_timer *t, void *ud)
{
    pe_http_server *s = ud;

    s->timer_due_ns = 0;
    run_mhd(s);
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
    fprintf(f,
            "# HELP pocketenv_http_body_bytes_buffered Request-body bytes held in memory.\n"
            "# TYPE pocketenv_http_body_bytes_buffered gauge\n"
            "pocketenv_http_body_bytes_buffered %zu\n",
            pe__http_budget_total(s->budget));
    if (s->metrics_fn)
        s->metrics_fn(f, s->metrics_ud);
}

static void serve_metrics(struct conn *c)
{
    pe_http_server *s = c->srv;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    int r;

    /* Request counts, latencies and sandbox states are the operator's: not
     * for anyone who can reach the port (or a page in a browser). */
    if (!s->cfg.metrics_public) {
        r = s->metrics_auth ? s->metrics_auth(c->req.authorization, s->metrics_auth_ud)
                            : PE_XRPC_EAUTH;
        if (r == PE_XRPC_EFORBIDDEN) {
            pe__http_set_error(c, PE_XRPC_EFORBIDDEN, NULL,
                               "the metrics are for the daemon's owner");
            return;
        }
        if (r != 0) {
            pe__http_set_error(c, PE_XRPC_EAUTH, NULL, "authentication required");
            return;
        }
    }
    f = open_memstream(&text, &len);
    if (f == NULL)
        abort();
    metrics_write(c->srv, f);
    fclose(f);
    pe__http_set_response(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
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

void pe__http_deferred_unlink(struct conn *c)
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
void pe__http_answered(struct conn *c)
{
    if (c->in_handler || c->in_head || !c->deferred)
        return; /* on_access queues it when the callback returns */
    c->deferred = false;
    pe__http_deferred_unlink(c);
    MHD_resume_connection(c->mc);
    pe__http_kick(c->srv);
}

bool pe__http_check_answer_once(struct conn *c)
{
    if (c->resp == NULL && (c->in_handler || c->in_head || c->deferred))
        return true;
    pe_log_error("http: %s answered twice or after it was closed", c->label);
    return false;
}

/* Streams and upgrades answer a request whose body is in: a head callback
 * (whose body is not) may only answer in full. */
bool pe__http_check_handler_answer(struct conn *c)
{
    if (!pe__http_check_answer_once(c))
        return false;
    if (c->phase != PH_HEAD)
        return true;
    pe_log_error("http: %s: a stream or upgrade from a head callback", c->label);
    pe__http_set_error(c, PE_ESYS, NULL, "Internal Server Error");
    pe__http_answered(c);
    return false;
}

void pe_xrpc_respond(pe_xrpc_request *req, json_t *out)
{
    struct conn *c = conn_of(req);

    if (req->call) {
        pe__xrpc_call_answer(req->call, out, 200, NULL, NULL);
        return;
    }
    if (!pe__http_check_answer_once(c)) {
        json_decref(out);
        return;
    }
    if (out)
        set_json(c, 200, out);
    else
        pe__http_set_response(c, 200, NULL, NULL, 0);
    pe__http_answered(c);
}

/* A 5xx says only its name: its message may describe our insides. Not so
 * for what a remote service answered (lib/provider's errors name the
 * provider and what it said, built to be shown and never to hold a
 * credential): "daytona rejected the API key" is what the client needs. */
static bool message_hidden(const pe_err *err, pe_xrpc_error e)
{
    switch (err->code) {
    case PE_ENOTCAP:
    case PE_EAUTH:
    case PE_EREMOTE:
    case PE_ETIMEDOUT:
        return false;
    default:
        return e.status >= 500;
    }
}

void pe_xrpc_respond_err_named(pe_xrpc_request *req, const pe_err *err, const char *name)
{
    struct conn *c = conn_of(req);
    pe_xrpc_error e = pe__xrpc_error_for(err->code);

    if (req->call) {
        if (e.status >= 500)
            pe_log_error("%s (local call): %s", req->nsid, err->msg);
        pe__xrpc_call_answer(req->call, NULL, e.status, name ? name : e.name,
                             message_hidden(err, e) ? e.name : err->msg);
        return;
    }
    if (!pe__http_check_answer_once(c))
        return;
    if (e.status >= 500 && !message_hidden(err, e)) {
        pe_log_warn("%s: %s", c->label, err->msg);
        pe__http_set_error(c, err->code, name, err->msg);
    } else if (e.status >= 500) {
        pe_log_error("%s: %s", c->label, err->msg);
        pe__http_set_error(c, err->code, name, e.name);
    } else {
        pe__http_set_error(c, err->code, name, err->msg);
    }
    pe__http_answered(c);
}

void pe_xrpc_respond_relayed(pe_xrpc_request *req, unsigned status, const char *json_body,
                             size_t len)
{
    struct conn *c = conn_of(req);
    json_t *v = NULL;

    if (req->call) {
        v = len ? json_loadb(json_body, len, 0, NULL) : NULL;
        if (status == 200) {
            pe__xrpc_call_answer(req->call, v, 200, NULL, NULL);
            return;
        }
        pe__xrpc_call_answer(req->call, NULL, status,
                             json_string_value(json_object_get(v, "error")),
                             json_string_value(json_object_get(v, "message")));
        json_decref(v);
        return;
    }
    if (!pe__http_check_answer_once(c))
        return;
    if (len) {
        char *copy = pe_xmalloc(len);
        memcpy(copy, json_body, len);
        pe__http_set_response(c, status, JSON_TYPE, copy, len);
    } else
        pe__http_set_response(c, status, NULL, NULL, 0);
    pe__http_answered(c);
}

void pe_xrpc_set_reply_header(pe_xrpc_request *req, const char *name, const char *value)
{
    struct conn *c = conn_of(req);

    if (req->call)
        return;
    free(c->reply_header[0]);
    free(c->reply_header[1]);
    c->reply_header[0] = pe_xstrdup(name);
    c->reply_header[1] = pe_xstrdup(value);
}

int pe_xrpc_handler_get(pe_http_server *srv, const char *nsid, pe_xrpc_handler *fn, void **ud)
{
    const pe_xrpc_method *m = pe__xrpc_lookup(nsid);

    if (m == NULL || srv->handlers[m - pe__xrpc_methods].fn == NULL)
        return -1;
    *fn = srv->handlers[m - pe__xrpc_methods].fn;
    *ud = srv->handlers[m - pe__xrpc_methods].ud;
    return 0;
}

void pe_xrpc_respond_err(pe_xrpc_request *req, const pe_err *err)
{
    pe_xrpc_respond_err_named(req, err, NULL);
}

void pe_http_response_defer(pe_xrpc_request *req)
{
    struct conn *c = conn_of(req);

    if (req->call) {
        pe__xrpc_call_defer(req->call);
        return;
    }
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

    if (pe__xrpc_body(c->method, c->content_type, c->body, c->body_len,
                      c->chunked || c->content_length >= 0, &body, msg, sizeof(msg)) < 0) {
        pe__http_set_error(c, PE_EINVAL, NULL, msg);
        return;
    }
    c->req.body = body;
    c->dispatched = true;
    c->in_handler = true;
    h->fn(&c->req, h->ud);
    c->in_handler = false;
    if (c->resp == NULL && !c->deferred) {
        pe_log_error("http: handler for %s returned without an answer", c->label);
        pe__http_set_error(c, PE_ESYS, NULL, "Internal Server Error");
    }
}

/* Headers are in: everything that can be decided before the body. */
static void xrpc_start(struct conn *c, const char *nsid, const char *method)
{
    pe_http_server *s = c->srv;
    struct arg_list args = {.n = 0};
    const char *want;
    char msg[512];

    c->label = "xrpc-unknown";
    /* First, so that even requests for unknown methods count (as upstream's
     * global limiter does). */
    if (!rate_take(c)) {
        pe__http_set_error(c, PE_XRPC_ERATE, NULL, "Too many requests, please try again later.");
        return;
    }
    if (!pe__xrpc_nsid_valid(nsid)) {
        pe__http_set_error(c, PE_EINVAL, NULL, "invalid xrpc path");
        return;
    }
    c->method = pe__xrpc_lookup(nsid);
    if (c->method == NULL) {
        pe__http_set_error(c, PE_XRPC_ENOMETHOD, NULL, "Method Not Implemented");
        return;
    }
    c->label = c->req.nsid = c->method->nsid;
    c->req.kind = c->method->kind;
    want = c->method->kind == PE_XRPC_QUERY ? "GET" : "POST";
    if (strcmp(method, want) != 0 &&
        !(c->method->kind == PE_XRPC_QUERY && !strcmp(method, "HEAD"))) {
        snprintf(msg, sizeof(msg), "Incorrect HTTP method (%s) expected %s", method, want);
        pe__http_set_error(c, PE_EINVAL, NULL, msg);
        return;
    }
    if (s->handlers[c->method - pe__xrpc_methods].fn == NULL) {
        pe__http_set_error(c, PE_XRPC_ENOTIMPL, NULL, "Method Not Implemented");
        return;
    }
    MHD_get_connection_values(c->mc, MHD_GET_ARGUMENT_KIND, collect_arg, &args);
    if (pe__xrpc_params(c->method, args.args, args.n, &c->req.params, msg, sizeof(msg)) < 0) {
        pe__http_set_error(c, PE_EINVAL, NULL, msg);
        return;
    }
    c->content_type = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Content-Type");
}

/* ---- request bodies ------------------------------------------------------ */

/* Take n bytes of the buffered-bytes budget for c, or answer 429 (the
 * client's share is used up) / 503 (everyone's is) and return -1. */
static int budget_reserve(struct conn *c, size_t n)
{
    switch (pe__http_budget_take(c->srv->budget, c->client, n)) {
    case PE_HTTP_BUDGET_OK:
        c->reserved += n;
        return 0;
    case PE_HTTP_BUDGET_CLIENT:
        c->retry_after_text = BUDGET_RETRY_S;
        pe__http_set_error(c, PE_XRPC_ERATE, NULL,
                           "too many request bodies in transit from your address; retry later");
        break;
    default:
        c->retry_after_text = BUDGET_RETRY_S;
        pe__http_set_error(c, PE_XRPC_EBUSY, NULL,
                           "the server is receiving too many request bodies; retry later");
        break;
    }
    c->close_after = true;
    return -1;
}

void pe__http_refuse_too_big(struct conn *c)
{
    c->close_after = true;
    pe__http_set_error(c, PE_XRPC_ETOOBIG, NULL, "request entity too large");
}

/* A body bound for memory: within the limit and the budget (a chunked
 * one takes its budget as it comes, see body_append). */
static void body_append(struct conn *c, const char *data, size_t len)
{
    size_t limit = c->body_limit;

    if (len > limit - c->body_len) {
        pe__http_refuse_too_big(c);
        return;
    }
    if (c->chunked && budget_reserve(c, len) < 0)
        return;
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

/* ---- what ws.c needs (server-internal.h) --------------------------------- */

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

/* A preflight for the API: the allow headers for an allowed Origin, 403
 * for another (its page must not call us), a plain Allow without one. */
static void serve_preflight(struct conn *c)
{
    const char *origin = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin");

    if (origin && c->cors_origin == NULL) {
        pe__http_set_error(c, PE_XRPC_EFORBIDDEN, NULL, "this origin may not call the API");
        return;
    }
    pe__http_set_response(c, 204, NULL, NULL, 0);
    if (origin == NULL) {
        MHD_add_response_header(c->resp, "Allow", "GET, HEAD, POST, OPTIONS");
        return;
    }
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

/* Paths the server answers itself; a route on a shorter prefix ("/")
 * never gets them. */
static bool own_path(const char *url)
{
    return !strncmp(url, "/xrpc/", 6) || !strcmp(url, "/healthz") || !strcmp(url, "/metrics");
}

static void route(struct conn *c, const char *url, const char *method)
{
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    const struct route *r;

    c->label = "other";
    if ((r = pe__http_host_route_find(
             c->srv, MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Host"))) != NULL) {
        pe__http_route_start(c, r, url, method);
        return;
    }
    r = own_path(url) ? NULL : pe__http_route_find(c->srv, url);
    if (!strcmp(method, "OPTIONS") && r == NULL) {
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
    } else if (r != NULL) {
        pe__http_route_start(c, r, url, method);
    } else if (!strcmp(url, "/") && get) {
        c->label = "/";
        serve_banner(c);
    } else {
        pe__http_set_error(c, PE_ENOENT, NULL, "Not Found");
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
    c->phase = PH_NEW;
    c->body_fd = -1;
    c->content_length = -1;
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
    return c;
}

/* MHD has the request line: the raw target is checked here, as this is
 * the only time it is seen before MHD percent-decodes it in place (a %00
 * would then silently cut the path or a query argument short). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *mc)
{
    struct conn *c = conn_new(cls, mc);

    c->target_status = pe__http_check_target(uri, c->target_msg, sizeof(c->target_msg));
    c->target_len = strlen(uri);
    return c;
}

static enum MHD_Result queue(struct conn *c)
{
    enum MHD_Result r;

    if (c->close_after)
        MHD_add_response_header(c->resp, "Connection", "close");
    r = MHD_queue_response(c->mc, c->status, c->resp);
    MHD_destroy_response(c->resp);
    c->resp = NULL;
    return r;
}

static void suspend(struct conn *c)
{
    c->dnext = c->srv->deferred;
    if (c->dnext)
        c->dnext->dprev = c;
    c->srv->deferred = c;
    MHD_suspend_connection(c->mc);
}

struct head_check {
    pe_http_framing f;
    int status;
    char msg[160];
    /* where MHD's strings lie in its buffer, for pe__http_check_hidden */
    const char *head;
    size_t head_len;
    pe_http_span *spans;
    size_t n_spans, cap_spans;
};

/* A string inside the head's bytes; one elsewhere (MHD moved it) is left
 * out, which only makes the check see less. */
static void add_span(struct head_check *h, const char *p, size_t len, bool name)
{
    if (h->head == NULL || p < h->head || p > h->head + h->head_len ||
        len > (size_t)(h->head + h->head_len - p))
        return;
    if (h->n_spans == h->cap_spans) {
        h->cap_spans = h->cap_spans ? h->cap_spans * 2 : 32;
        h->spans = pe_xrealloc(h->spans, h->cap_spans * sizeof(*h->spans));
    }
    h->spans[h->n_spans++] = (pe_http_span){(size_t)(p - h->head), len, name};
}

static enum MHD_Result check_one_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                        size_t key_size, const char *value, size_t value_size)
{
    struct head_check *h = cls;

    h->status = pe__http_check_header(&h->f, key ? key : "", key ? key_size : 0, value ? value : "",
                                      value ? value_size : 0, h->msg, sizeof(h->msg));
    if (key)
        add_span(h, key, key_size, true);
    if (value)
        add_span(h, value, value_size, false);
    return h->status ? MHD_NO : MHD_YES;
}

/* MHD parsed the head in place, from the method on: its size tells where
 * the head's bytes end. No size (another libmicrohttpd): no hidden-byte
 * check, the other checks still run. */
static void find_head(struct head_check *h, struct conn *c, const char *method)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);

    if (ci == NULL || ci->header_size == 0)
        return;
    h->head = method;
    h->head_len = ci->header_size;
}

/* The declared length, -1 without one; one too long to be real reads as
 * larger than any limit. MHD has already refused one that is not digits. */
static long long parse_length(const char *v)
{
    long long n = 0;

    if (v == NULL)
        return -1;
    if (strlen(v) > 15)
        return 999999999999999LL;
    for (; *v >= '0' && *v <= '9'; v++)
        n = n * 10 + (*v - '0');
    return n;
}

/* The strict checks of request-check.h, before any route: false after
 * answering (with Connection: close, the framing being in doubt). */
static bool head_ok(struct conn *c, const char *method, const char *url, const char *version)
{
    struct head_check h = {.status = c->target_status};

    if (h.status)
        snprintf(h.msg, sizeof(h.msg), "%s", c->target_msg);
    find_head(&h, c, method);
    /* The target as on_uri saw it (MHD decodes it in place afterwards). */
    add_span(&h, url, c->target_len, false);
    add_span(&h, version, strlen(version), false);
    if (h.status == 0)
        MHD_get_connection_values_n(c->mc, MHD_HEADER_KIND, check_one_header, &h);
    if (h.status == 0 && h.head)
        h.status =
            pe__http_check_hidden(h.head, h.head_len, h.spans, h.n_spans, h.msg, sizeof(h.msg));
    free(h.spans);
    if (h.status == 0)
        h.status = pe__http_check_framing(&h.f, !strcmp(version, MHD_HTTP_VERSION_1_0), h.msg,
                                          sizeof(h.msg));
    if (h.status == 0) {
        c->chunked = h.f.transfer_encoding != NULL;
        c->content_length = parse_length(h.f.content_length);
        c->has_body = c->chunked || c->content_length > 0;
        return true;
    }
    c->label = "bad-request";
    c->close_after = true;
    if (h.status == 501)
        pe__http_set_error(c, PE_XRPC_ENOTIMPL, "NotImplemented", h.msg);
    else
        pe__http_set_error(c, PE_EINVAL, NULL, h.msg);
    return false;
}

/* An answer known before the body (see the top of the file). */
static enum MHD_Result answer_before_body(struct conn *c)
{
    c->phase = PH_BODY;
    if (!c->has_body)
        return MHD_YES; /* queued at the next call, the end of the empty body */
    if (!c->close_after && c->content_length >= 0 &&
        (unsigned long long)c->content_length <= c->srv->cfg.max_json_body)
        return MHD_YES; /* read and dropped (on_body), answered at its end */
    c->close_after = true;
    return queue(c);
}

/* The body may come: where to, and whether it fits. */
static enum MHD_Result begin_body(struct conn *c)
{
    c->phase = PH_BODY;
    if (c->content_length > 0) {
        unsigned long long n = (unsigned long long)c->content_length;
        if (n > (c->body_fd >= 0 ? c->raw_max : c->body_limit)) {
            pe__http_refuse_too_big(c);
            return answer_before_body(c);
        }
        if (c->body_fd < 0 && budget_reserve(c, (size_t)n) < 0)
            return answer_before_body(c);
    }
    return MHD_YES;
}

/* After the head callback, and again when a held request resumes (MHD
 * repeats its first call then, before reading any of the body). */
static enum MHD_Result after_head(struct conn *c)
{
    if (c->resp)
        return answer_before_body(c);
    if (c->deferred) {
        suspend(c); /* held: MHD reads nothing more until it resumes */
        return MHD_YES;
    }
    return begin_body(c);
}

static enum MHD_Result on_head(struct conn *c, const char *url, const char *method,
                               const char *version)
{
    const char *origin = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin");

    c->phase = PH_HEAD;
    c->req.authorization = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Authorization");
    for (size_t i = 0; origin && c->srv->cors[i]; i++)
        if (strcmp(origin, c->srv->cors[i]) == 0)
            c->cors_origin = c->srv->cors[i];
    if (!head_ok(c, method, url, version))
        return queue(c);
    route(c, url, method);
    if (c->resp == NULL && c->route && c->route->head) {
        c->in_head = true;
        c->route->head(&c->hreq, c->route->ud);
        c->in_head = false;
    }
    return after_head(c);
}

static enum MHD_Result on_body(struct conn *c, const char *data, size_t *data_size)
{
    size_t n = *data_size;

    *data_size = 0;
    if (c->resp && n) {
        /* Answered already (before the body: a small declared one; or
         * while it came in): MHD queues an answer only once the request is
         * complete, so the rest is read and dropped, never kept. A chunked
         * body has no end we know of: past DRAIN_MAX, close unanswered. */
        c->drained += n;
        return c->chunked && c->drained > DRAIN_MAX ? MHD_NO : MHD_YES;
    }
    if (c->resp) /* an early answer, or a deferred one after resume */
        return queue(c);
    if (n) {
        if (c->body_fd >= 0)
            pe__http_fd_feed(c, data, n);
        else
            body_append(c, data, n);
        return MHD_YES; /* a refusal (c->resp) goes out at the end of the body */
    }
    if (c->dispatched)
        return MHD_YES; /* resumed without an answer cannot happen; stay put */
    pe__http_fd_end(c);
    if (c->resp == NULL && c->route)
        pe__http_route_dispatch(c);
    else if (c->resp == NULL)
        xrpc_dispatch(c);
    if (c->resp)
        return queue(c);
    suspend(c);
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mc, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *data_size, void **con_cls)
{
    struct conn *c = *con_cls;

    if (c == NULL) /* on_uri did not run: cannot happen with MHD 0.9.75, but be safe */
        c = *con_cls = conn_new(cls, mc);
    if (c->phase == PH_NEW)
        return on_head(c, url, method, version);
    if (c->phase == PH_HEAD)
        return after_head(c);
    return on_body(c, data, data_size);
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
        pe__http_deferred_unlink(c);
    if (c->stream)
        pe__http_stream_gone(c->stream);
    if (c->ws) /* answered 101 but the upgrade never happened */
        pe__ws_abort(pe_steal_ptr(&c->ws));
    if (c->raw) /* same for a raw upgrade */
        pe__http_raw_end(pe_steal_ptr(&c->raw));
    if (c->resp)
        MHD_destroy_response(c->resp);
    if (c->pp)
        MHD_destroy_post_processor(c->pp);
    if (c->reserved)
        pe__http_budget_give(s->budget, c->client, c->reserved);
    if (c->data_free)
        c->data_free(c->data);
    json_decref(c->req.params);
    json_decref(c->req.body);
    free(c->reply_header[0]);
    free(c->reply_header[1]);
    free(c->form_field);
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
        s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
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
    s->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->kick_fd < 0)
        return pe_err_sys(err, "eventfd");
    s->kick_io = pe_ev_io_start(s->loop, s->kick_fd, EPOLLIN, on_kick, s, err);
    if (s->kick_io == NULL)
        return -1;
    arm_timer(s);
    return 0;
}

pe_http_server *pe_http_server_new(pe_ev_loop *loop, const pe_http_config *cfg, pe_err *err)
{
    pe_http_server *s = pe_xcalloc(1, sizeof(*s));
    size_t n = 1;

    s->loop = loop;
    s->kick_fd = -1;
    s->cfg = *cfg;
    s->host = pe_xstrdup(cfg->host ? cfg->host : "127.0.0.1");
    s->cfg.host = s->host;
    s->banner = pe_xstrdup(cfg->banner ? cfg->banner : DEFAULT_BANNER);
    s->cfg.banner = s->banner;
    s->banner_html = html_banner(s->banner);
    s->handlers = pe_xcalloc(pe__xrpc_n_methods, sizeof(*s->handlers));
    s->budget = pe__http_budget_new(s->cfg.max_buffered_total, s->cfg.max_buffered_per_client);
    for (size_t i = 0; cfg->cors_origins && cfg->cors_origins[i]; i++) {
        if (i == MAX_CORS_ORIGINS) {
            pe_err_set(err, PE_EINVAL, 0, "more than %d CORS origins", MAX_CORS_ORIGINS);
            pe_http_server_free(s);
            return NULL;
        }
        s->cors[i] = pe_xstrdup(cfg->cors_origins[i]);
    }
    s->cfg.cors_origins = NULL; /* s->cors is the copy */
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

void pe_http_set_metrics_auth(pe_http_server *srv, pe_http_metrics_auth_fn fn, void *ud)
{
    srv->metrics_auth = fn;
    srv->metrics_auth_ud = ud;
}

void pe_http_server_free(pe_http_server *s)
{
    if (s == NULL)
        return;
    if (s->mhd) {
        /* MHD must not be stopped with suspended connections: answer them. */
        while (s->deferred) {
            struct conn *c = s->deferred;
            pe__http_set_error(c, PE_XRPC_EBUSY, NULL, "server shutting down");
            pe__http_answered(c);
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
            pe__http_raw_end(s->raws);
        run_mhd(s);
        MHD_stop_daemon(s->mhd);
    }
    pe_ev_io_stop(s->io);
    pe_ev_timer_stop(s->timer);
    pe_ev_io_stop(s->kick_io);
    if (s->kick_fd >= 0)
        close(s->kick_fd);
    for (size_t i = 0; i < s->rate_nbuckets; i++) {
        while (s->rate_tab[i]) {
            struct rate_entry *e = s->rate_tab[i];
            s->rate_tab[i] = e->next;
            free(e);
        }
    }
    free(s->rate_tab);
    free(s->handlers);
    pe__http_budget_free(s->budget);
    for (size_t i = 0; s->cors[i]; i++)
        free(s->cors[i]);
    for (size_t i = 0; i < s->n_routes; i++)
        free(s->routes[i].prefix);
    free(s->host);
    free(s->banner);
    free(s->banner_html);
    free(s);
}
