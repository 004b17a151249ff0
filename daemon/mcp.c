/* MCP (Model Context Protocol) over streamable HTTP at /mcp.
 *
 * One endpoint: POST carries one JSON-RPC message; a request is answered
 * with application/json, or for tools/call (which may run long) with a
 * text/event-stream when the client accepts one, carrying progress
 * notifications and then the answer. Sessions: initialize creates one and
 * answers its id in Mcp-Session-Id, which every later request carries;
 * DELETE ends it. Every event of a stream has an id ("<stream>-<n>") and
 * is kept with its session, so a client that lost a stream reconnects
 * with GET and Last-Event-ID and gets what it missed, then the rest live
 * (the spec's resumability). A GET without Last-Event-ID is answered 405:
 * this server sends nothing unasked.
 *
 * Auth: every request, not just initialize, carries the user's API token
 * (Bearer); a session belongs to the user that made it and is unknown
 * (404) to anyone else. Tools act through the XRPC handlers with that same
 * header (mcp-tools.c), so their owner checks are the API's.
 *
 * Bounds (STYLE rule 8): a message of at most MCP_MAX_BODY bytes, no
 * batches (JSON-RPC arrays: removed from MCP in 2025-06-18), sessions per
 * user and in all, calls in flight per session, streams and outputs kept
 * per session; idle sessions end after MCP_SESSION_IDLE_S. Loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sodium.h>
#include <sys/random.h>

#include "core/log.h"
#include "core/util.h"
#include "mcp.h"

#define MCP_MAX_BODY (1024 * 1024)
#define MCP_SESSIONS_PER_USER 32
#define MCP_SESSIONS_MAX 1024
#define MCP_SESSION_IDLE_S 3600.0
#define MCP_INFLIGHT_MAX 16   /* tools/call at once per session */
#define MCP_STREAMS_KEPT 16   /* finished streams kept for replay per session */
#define MCP_OUTPUTS_KEPT 8    /* exec outputs kept for read_output per session */
#define MCP_HEARTBEAT_S 1.0   /* progress while a tool runs, for clients that asked */
#define MCP_STREAM_EVENTS 600 /* progress events kept per stream (the answer always is) */
#define MCP_SUBS_MAX 8        /* resource subscriptions per session */
#define MCP_SUB_POLL_S 1.0    /* how often subscribed resources are looked at */
#define MCP_SERVER_NAME "pocketenv"

/* Newest first; the first is what a client without a preference gets. */
static const char *const versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05",
                                       NULL};

struct mcp_stream {
    pe_mcp_session *s;
    unsigned long num;
    json_t *events; /* JSON texts; [0] "" is the priming event */
    bool done;      /* the answer is in events */
    pe_http_stream *http;
    struct mcp_stream *next;
};

struct pe_mcp_session {
    struct mcp_server *srv;
    char id[33];
    char *did;
    char version[16];
    bool dead;
    int refs;
    double last_used;
    unsigned inflight;
    unsigned long next_stream, next_output;
    struct mcp_stream *streams; /* newest first */
    json_t *outputs;            /* [{id, stdout, stderr}], oldest first */
    struct mcp_pending *calls;  /* in flight, for notifications/cancelled */
    /* resources/subscribe: uri -> the fingerprint last seen (null before
     * the first look), looked at every MCP_SUB_POLL_S with the token of
     * the latest subscribe; updates go to the GET stream (listen) */
    json_t *subs;
    char *sub_auth;
    pe_ev_timer *poll;
    unsigned polls; /* looks in flight */
    pe_http_stream *listen;
    pe_mcp_session *next;
};

struct mcp_server {
    pe_daemon *d;
    pe_mcp_session *sessions;
    unsigned n_sessions;
};

struct mcp_pending {
    pe_mcp_call call; /* first: tools get &pending->call */
    json_t *rpc_id;
    json_t *progress_token;
    struct mcp_stream *st; /* answering with a stream */
    pe_http_request *req;  /* answering with JSON (deferred) */
    pe_ev_timer *heartbeat, *later;
    void (*later_fn)(pe_mcp_call *c);
    double t0, last_progress;
    char last_message[128];
    char *uri;     /* resources/read: the resource the tool's answer becomes */
    char *sub_uri; /* a subscription's look: the answer is fingerprinted */
    bool cancelled;
    struct mcp_pending *next_call;
};

static double now_s(void)
{
    return (double)pe_ev_now_ns() / 1e9;
}

/* ---- answers ---- */

static void respond_json(pe_http_request *req, unsigned status, json_t *msg, const char *sid)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    const char *headers[] = {"Mcp-Session-Id", sid, "Cache-Control", "no-store", NULL};

    if (sid == NULL)
        headers[0] = "Cache-Control", headers[1] = "no-store", headers[2] = NULL;
    pe_http_respond(req, status, text ? "application/json" : NULL, text ? text : "",
                    text ? strlen(text) : 0, headers);
    free(text);
    json_decref(msg);
}

static json_t *rpc_error(json_t *id, int code, const char *message)
{
    return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                     "error", "code", code, "message", message);
}

/* An error of the transport itself: HTTP status and a JSON-RPC error. */
static void respond_rpc_error(pe_http_request *req, unsigned status, json_t *id, int code,
                              const char *message)
{
    respond_json(req, status, rpc_error(id, code, message), NULL);
}

/* ---- sessions ---- */

static void stream_free(struct mcp_stream *st)
{
    if (st->http)
        pe_http_stream_close(st->http);
    json_decref(st->events);
    free(st);
}

static void session_unref(pe_mcp_session *s)
{
    if (--s->refs > 0)
        return;
    while (s->streams) {
        struct mcp_stream *st = s->streams;
        s->streams = st->next;
        stream_free(st);
    }
    json_decref(s->outputs);
    json_decref(s->subs);
    if (s->sub_auth)
        sodium_memzero(s->sub_auth, strlen(s->sub_auth));
    free(s->sub_auth);
    free(s->did);
    free(s);
}

/* Unlink and drop the server's reference (calls in flight keep theirs). */
static void session_end(struct mcp_server *m, pe_mcp_session *s)
{
    for (pe_mcp_session **pp = &m->sessions; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    m->n_sessions--;
    s->dead = true;
    if (s->poll) {
        pe_ev_timer_stop(s->poll);
        s->poll = NULL;
    }
    if (s->listen) {
        pe_http_stream_close(s->listen);
        s->listen = NULL;
    }
    for (struct mcp_stream *st = s->streams; st; st = st->next) {
        if (st->http) {
            pe_http_stream_close(st->http);
            st->http = NULL;
        }
    }
    session_unref(s);
}

static void sweep(struct mcp_server *m)
{
    double now = now_s();
    pe_mcp_session *s = m->sessions, *next;

    for (; s; s = next) {
        next = s->next;
        if (s->inflight == 0 && now - s->last_used > MCP_SESSION_IDLE_S)
            session_end(m, s);
    }
}

static pe_mcp_session *session_find(struct mcp_server *m, const char *id, const char *did)
{
    for (pe_mcp_session *s = m->sessions; s; s = s->next) {
        /* another user's session is as unknown as a made-up id */
        if (strcmp(s->id, id) == 0 && strcmp(s->did, did) == 0) {
            s->last_used = now_s();
            return s;
        }
    }
    return NULL;
}

static pe_mcp_session *session_new(struct mcp_server *m, const char *did, const char *version,
                                   pe_err *err)
{
    unsigned char raw[16];
    unsigned mine = 0;
    pe_mcp_session *s;

    sweep(m);
    for (s = m->sessions; s; s = s->next)
        mine += strcmp(s->did, did) == 0;
    if (mine >= MCP_SESSIONS_PER_USER || m->n_sessions >= MCP_SESSIONS_MAX) {
        pe_err_set(err, PE_XRPC_ERATE, 0,
                   "too many MCP sessions: end unused ones (HTTP DELETE /mcp) or wait for them to "
                   "expire");
        return NULL;
    }
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        pe_err_sys(err, "getrandom");
        return NULL;
    }
    s = pe_xcalloc(1, sizeof(*s));
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(s->id + 2 * i, 3, "%02x", raw[i]);
    s->srv = m;
    s->did = pe_xstrdup(did);
    snprintf(s->version, sizeof(s->version), "%s", version);
    s->refs = 1;
    s->last_used = now_s();
    s->outputs = json_array();
    s->subs = json_object();
    s->next = m->sessions;
    m->sessions = s;
    m->n_sessions++;
    return s;
}

char *pe__mcp_output_put(pe_mcp_session *s, json_t *stdout_text, json_t *stderr_text)
{
    char id[32];

    if (s == NULL)
        return NULL;
    snprintf(id, sizeof(id), "out-%lu", ++s->next_output);
    if (json_array_size(s->outputs) >= MCP_OUTPUTS_KEPT)
        json_array_remove(s->outputs, 0);
    json_array_append_new(s->outputs,
                          json_pack("{s:s, s:O, s:O}", "id", id, "stdout",
                                    stdout_text ? stdout_text : json_string(""), "stderr",
                                    stderr_text ? stderr_text : json_string("")));
    return pe_xstrdup(id);
}

json_t *pe__mcp_output_get(pe_mcp_session *s, const char *id, const char *stream)
{
    json_t *o;
    size_t i;

    if (s == NULL)
        return NULL;
    json_array_foreach(s->outputs, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "id")), id) == 0)
            return json_object_get(o, stream);
    }
    return NULL;
}

/* ---- streams ---- */

static void stream_write_event(struct mcp_stream *st, size_t i)
{
    const char *data = json_string_value(json_array_get(st->events, i));
    char *ev;

    if (st->http == NULL)
        return;
    if (i == 0)
        ev = pe_xasprintf("id: %lu-0\nretry: 1000\ndata: \n\n", st->num);
    else
        ev = pe_xasprintf("id: %lu-%zu\ndata: %s\n\n", st->num, i, data);
    pe_http_stream_write(st->http, ev, strlen(ev));
    free(ev);
}

static void stream_on_close(pe_http_stream *hs, void *ud)
{
    struct mcp_stream *st = ud;

    (void)hs;
    st->http = NULL; /* the events stay, for a client that comes back */
}

/* Append an event (msg stolen) and send it if a client listens; the
 * answer (last) ends the stream. */
static void stream_push(struct mcp_stream *st, json_t *msg, bool last)
{
    char *text = json_dumps(msg, JSON_COMPACT);

    json_decref(msg);
    json_array_append_new(st->events, json_string(text ? text : "{}"));
    free(text);
    stream_write_event(st, json_array_size(st->events) - 1);
    if (last) {
        st->done = true;
        if (st->http) {
            pe_http_stream_close(st->http);
            st->http = NULL;
        }
    }
}

static struct mcp_stream *stream_new(pe_mcp_session *s)
{
    struct mcp_stream *st = pe_xcalloc(1, sizeof(*st)), **pp;
    unsigned n = 0;

    st->s = s;
    st->num = ++s->next_stream;
    st->events = json_array();
    json_array_append_new(st->events, json_string(""));
    st->next = s->streams;
    s->streams = st;
    /* drop the oldest finished streams past the bound */
    for (pp = &s->streams; *pp;) {
        if (++n > MCP_STREAMS_KEPT && (*pp)->done) {
            struct mcp_stream *old = *pp;
            *pp = old->next;
            stream_free(old);
        } else {
            pp = &(*pp)->next;
        }
    }
    return st;
}

static const pe_http_stream_callbacks stream_cb = {.on_close = stream_on_close};

static bool start_sse(pe_http_request *req, struct mcp_stream *st)
{
    const char *headers[] = {"Cache-Control", "no-store", "X-Accel-Buffering", "no", NULL};

    st->http = pe_http_respond_stream(req, 200, "text/event-stream", headers, &stream_cb, st);
    return st->http != NULL;
}

/* ---- tools/call ---- */

static void pending_free(struct mcp_pending *p)
{
    for (struct mcp_pending **pp = &p->call.session->calls; *pp; pp = &(*pp)->next_call) {
        if (*pp == p) {
            *pp = p->next_call;
            break;
        }
    }
    if (p->sub_uri)
        p->call.session->polls--;
    free(p->sub_uri);
    if (p->heartbeat)
        pe_ev_timer_stop(p->heartbeat);
    if (p->later)
        pe_ev_timer_stop(p->later);
    json_decref(p->rpc_id);
    json_decref(p->progress_token);
    free(p->uri);
    json_decref(p->call.args);
    json_decref(p->call.state);
    free(p->call.authorization);
    free(p->call.did);
    p->call.session->inflight--;
    session_unref(p->call.session);
    free(p);
}

/* A tool's answer as resources/read's: its first text, or the tool's
 * error as a JSON-RPC error (-32002: the resource is not there). */
static json_t *as_resource(struct mcp_pending *p, json_t *result)
{
    const char *text = json_string_value(
        json_object_get(json_array_get(json_object_get(result, "content"), 0), "text"));
    json_t *msg;

    if (json_is_true(json_object_get(result, "isError")))
        msg = rpc_error(p->rpc_id, -32002, text ? text : "resource not found");
    else
        msg = json_pack("{s:s, s:O, s:{s:[{s:s, s:s, s:s}]}}", "jsonrpc", "2.0", "id", p->rpc_id,
                        "result", "contents", "uri", p->uri, "mimeType", "text/plain", "text",
                        text ? text : "");
    json_decref(result);
    return msg;
}

static void sub_looked(struct mcp_pending *p, json_t *result);

static void call_finish(pe_mcp_call *c, json_t *result)
{
    struct mcp_pending *p = (struct mcp_pending *)c;
    json_t *msg;

    if (p->sub_uri) {
        sub_looked(p, result);
        if (p->req) /* resources/subscribe answers once the baseline is in */
            respond_json(p->req, 200,
                         json_pack("{s:s, s:O, s:{}}", "jsonrpc", "2.0", "id", p->rpc_id, "result"),
                         NULL);
        pending_free(p);
        return;
    }
    if (p->cancelled) {
        /* the client gave up on it: no answer on a stream (the spec's
         * "SHOULD NOT respond"); a plain POST still needs one */
        json_decref(result);
        if (p->st) {
            p->st->done = true;
            if (p->st->http) {
                pe_http_stream_close(p->st->http);
                p->st->http = NULL;
            }
        } else {
            respond_json(p->req, 200, rpc_error(p->rpc_id, -32800, "request cancelled"), NULL);
        }
        pending_free(p);
        return;
    }
    msg = p->uri
              ? as_resource(p, result)
              : json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", p->rpc_id, "result", result);
    if (p->st)
        stream_push(p->st, msg, true);
    else
        respond_json(p->req, 200, msg, NULL);
    pending_free(p);
}

/* Progress in elapsed seconds: the one measure that only grows, whoever
 * reports (the tool, or the heartbeat between its reports). */
static void send_progress(struct mcp_pending *p, const char *message)
{
    double elapsed = now_s() - p->t0;

    /* past the bound (a tool that runs for many minutes) progress is not
     * sent: every event sent is kept for a client that resumes */
    if (p->st == NULL || p->progress_token == NULL ||
        json_array_size(p->st->events) >= MCP_STREAM_EVENTS)
        return;
    if (elapsed <= p->last_progress)
        elapsed = p->last_progress + 0.001;
    p->last_progress = elapsed;
    stream_push(p->st,
                json_pack("{s:s, s:s, s:{s:O, s:f, s:s}}", "jsonrpc", "2.0", "method",
                          "notifications/progress", "params", "progressToken", p->progress_token,
                          "progress", elapsed, "message", message),
                false);
}

static void call_progress(pe_mcp_call *c, double progress, const char *message)
{
    struct mcp_pending *p = (struct mcp_pending *)c;

    (void)progress;
    snprintf(p->last_message, sizeof(p->last_message), "%s", message ? message : "");
    send_progress(p, p->last_message);
}

static void heartbeat(pe_ev_timer *t, void *ud)
{
    struct mcp_pending *p = ud;
    char m[160];

    (void)t;
    snprintf(m, sizeof(m), "%s%s%s: running for %.0f s", p->call.tool ? p->call.tool->name : "call",
             p->last_message[0] ? ", " : "", p->last_message, now_s() - p->t0);
    send_progress(p, m);
}

static void later_fire(pe_ev_timer *t, void *ud)
{
    struct mcp_pending *p = ud;
    void (*fn)(pe_mcp_call * c) = p->later_fn;

    (void)t;
    pe_ev_timer_stop(p->later);
    p->later = NULL;
    fn(&p->call);
}

void pe__mcp_later(pe_mcp_call *c, double secs, void (*fn)(pe_mcp_call *c))
{
    struct mcp_pending *p = (struct mcp_pending *)c;
    pe_err err;

    p->later_fn = fn;
    p->later = pe_ev_timer_start(c->d->loop, (uint64_t)(secs * 1e9), 0, later_fire, p, &err);
    if (p->later == NULL)
        fn(c); /* no timer: poll at once rather than never */
}

static bool accepts(pe_http_request *req, const char *type)
{
    const char *a = pe_http_header(req, "Accept");

    return a == NULL || strstr(a, type) != NULL || strstr(a, "*/*") != NULL;
}

/* Run tool name with args (an object) for the request rpc; uri: for
 * resources/read, the resource its answer is. */
static void start_call(struct mcp_server *m, pe_mcp_session *s, pe_http_request *req,
                       const char *did, json_t *rpc, const char *name, json_t *args,
                       const char *uri)
{
    json_t *params = json_object_get(rpc, "params"), *id = json_object_get(rpc, "id");
    json_t *token = json_object_get(json_object_get(params, "_meta"), "progressToken");
    struct mcp_pending *p;
    pe_err err;

    if (s->inflight >= MCP_INFLIGHT_MAX) {
        respond_json(req, 200,
                     rpc_error(id, -32000,
                               "too many tool calls in flight in this session: wait "
                               "for one to end"),
                     NULL);
        return;
    }
    p = pe_xcalloc(1, sizeof(*p));
    p->call.d = m->d;
    p->call.session = s;
    s->refs++;
    s->inflight++;
    p->call.authorization = pe_xstrdup(req->authorization);
    p->call.did = pe_xstrdup(did);
    p->call.args = args ? json_deep_copy(args) : json_object();
    p->uri = uri ? pe_xstrdup(uri) : NULL;
    p->call.finish = call_finish;
    p->call.progress = call_progress;
    p->rpc_id = json_incref(id);
    p->progress_token =
        (json_is_string(token) || json_is_integer(token)) ? json_incref(token) : NULL;
    p->t0 = now_s();
    p->next_call = s->calls;
    s->calls = p;
    if (accepts(req, "text/event-stream")) {
        p->st = stream_new(s);
        if (!start_sse(req, p->st)) {
            pending_free(p);
            return;
        }
        /* the priming event (an id, no data) lets a client resume at
         * once; clients before 2025-11-25 may not expect an empty event */
        if (strcmp(s->version, "2025-11-25") >= 0)
            stream_write_event(p->st, 0);
        if (p->progress_token)
            p->heartbeat = pe_ev_timer_start(m->d->loop, (uint64_t)(MCP_HEARTBEAT_S * 1e9),
                                             (uint64_t)(MCP_HEARTBEAT_S * 1e9), heartbeat, p, &err);
    } else {
        p->req = req;
        pe_http_defer(req);
    }
    if (pe__mcp_tool_start(&p->call, name) < 0) {
        char *msg =
            pe_xasprintf("unknown tool \"%s\": call tools/list for the tools there are", name);
        json_t *e = rpc_error(id, -32602, msg);
        free(msg);
        if (p->st)
            stream_push(p->st, e, true);
        else
            respond_json(req, 200, e, NULL);
        pending_free(p);
    }
}

static void tools_call(struct mcp_server *m, pe_mcp_session *s, pe_http_request *req,
                       const char *did, json_t *rpc)
{
    json_t *params = json_object_get(rpc, "params"), *id = json_object_get(rpc, "id");
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");

    if (name == NULL || (args && !json_is_object(args))) {
        respond_json(
            req, 200,
            rpc_error(id, -32602, "tools/call needs params.name and an object params.arguments"),
            NULL);
        return;
    }
    start_call(m, s, req, did, rpc, name, args, NULL);
}

/* ---- resources: a sandbox's files and its services' output ----
 *
 *   pocketenv://sandbox/NAME/file/PATH          (PATH: the rest, from /)
 *   pocketenv://sandbox/NAME/service/SERVICE/logs
 *
 * Read through the file_read and service_logs tools, so they answer what
 * those would (a file's first 256 KiB; a service's kept output). */
#define RES_PREFIX "pocketenv://sandbox/"

static json_t *resource_templates(void)
{
    return json_pack(
        "{s:[{s:s, s:s, s:s, s:s}, {s:s, s:s, s:s, s:s}]}", "resourceTemplates", "uriTemplate",
        RES_PREFIX "{sandbox}/file/{+path}", "name", "sandbox-file", "description",
        "A file of a running sandbox (its first 256 KiB; file_read pages through more).",
        "mimeType", "text/plain", "uriTemplate", RES_PREFIX "{sandbox}/service/{service}/logs",
        "name", "service-logs", "description",
        "The latest output of a sandbox's background command (service_start).", "mimeType",
        "text/plain");
}

/* The tool and arguments that read uri, or -1 for a URI of no resource. */
static int resource_call(const char *uri, const char **tool, json_t **args)
{
    const char *rest, *slash, *what;
    char *sandbox;
    int r = 0;

    if (uri == NULL || strncmp(uri, RES_PREFIX, strlen(RES_PREFIX)) != 0 ||
        (slash = strchr(rest = uri + strlen(RES_PREFIX), '/')) == NULL || slash == rest)
        return -1;
    sandbox = pe_xasprintf("%.*s", (int)(slash - rest), rest);
    what = slash + 1;
    if (strncmp(what, "file/", 5) == 0 && what[5] != '\0') {
        char *path = pe_xasprintf("/%s", what[5] == '/' ? what + 6 : what + 5);
        *args = json_pack("{s:s, s:s, s:i}", "sandbox", sandbox, "path", path, "length", 262144);
        *tool = "file_read";
        free(path);
    } else if (strncmp(what, "service/", 8) == 0 && strlen(what) > 13 &&
               strcmp(what + strlen(what) - 5, "/logs") == 0) {
        char *svc = pe_xasprintf("%.*s", (int)(strlen(what) - 13), what + 8);
        *args = json_pack("{s:s, s:s}", "sandbox", sandbox, "name", svc);
        *tool = "service_logs";
        free(svc);
    } else {
        r = -1;
    }
    free(sandbox);
    return r;
}

#define NO_SUCH_RESOURCE "no such resource: resources/templates/list shows the URIs there are"

static void resources_read(struct mcp_server *m, pe_mcp_session *s, pe_http_request *req,
                           const char *did, json_t *rpc)
{
    json_t *id = json_object_get(rpc, "id"), *args = NULL;
    const char *uri = json_string_value(json_object_get(json_object_get(rpc, "params"), "uri"));
    const char *tool;

    if (resource_call(uri, &tool, &args) < 0) {
        respond_json(req, 200, rpc_error(id, -32002, NO_SUCH_RESOURCE), NULL);
        return;
    }
    start_call(m, s, req, did, rpc, tool, args, uri);
    json_decref(args);
}

/* ---- subscriptions: resources looked at on a timer, changes sent as
 * notifications/resources/updated on the session's GET stream ----
 *
 * A sandbox's files and a service's output change without telling the
 * daemon (a process inside writes them), so "changed" is found by looking:
 * every MCP_SUB_POLL_S each subscribed resource is read through its tool,
 * as resources/read would, and a different answer (content, or the
 * resource appearing or going) is an update. A look costs one exec of a
 * few milliseconds; MCP_SUBS_MAX bounds them per session. */

static void sub_notify(pe_mcp_session *s, const char *uri)
{
    json_t *msg = json_pack("{s:s, s:s, s:{s:s}}", "jsonrpc", "2.0", "method",
                            "notifications/resources/updated", "params", "uri", uri);
    char *text = json_dumps(msg, JSON_COMPACT), *ev;

    json_decref(msg);
    if (s->listen && text) {
        ev = pe_xasprintf("data: %s\n\n", text);
        pe_http_stream_write(s->listen, ev, strlen(ev));
        free(ev);
    }
    free(text);
}

static void sub_looked(struct mcp_pending *p, json_t *result)
{
    pe_mcp_session *s = p->call.session;
    const char *text = json_string_value(
        json_object_get(json_array_get(json_object_get(result, "content"), 0), "text"));
    unsigned char h[crypto_generichash_BYTES];
    char hex[2 * sizeof(h) + 2];
    json_t *old = json_object_get(s->subs, p->sub_uri);

    hex[0] = json_is_true(json_object_get(result, "isError")) ? 'e' : 'o';
    crypto_generichash(h, sizeof(h), (const unsigned char *)(text ? text : ""),
                       text ? strlen(text) : 0, NULL, 0);
    sodium_bin2hex(hex + 1, sizeof(hex) - 1, h, sizeof(h));
    json_decref(result);
    if (s->dead || old == NULL) /* unsubscribed meanwhile */
        return;
    if (json_is_string(old) && strcmp(json_string_value(old), hex) != 0)
        sub_notify(s, p->sub_uri);
    json_object_set_new(s->subs, p->sub_uri, json_string(hex));
}

/* Look at uri once; with req, answer it (id) after the look. */
static void sub_look(pe_mcp_session *s, const char *uri, pe_http_request *req, json_t *id)
{
    struct mcp_pending *p;
    const char *tool;
    json_t *args;

    if (resource_call(uri, &tool, &args) < 0)
        return;
    p = pe_xcalloc(1, sizeof(*p));
    p->call.d = s->srv->d;
    p->call.session = s;
    s->refs++;
    s->inflight++;
    s->polls++;
    p->call.authorization = pe_xstrdup(s->sub_auth);
    p->call.did = pe_xstrdup(s->did);
    p->call.args = args;
    p->call.finish = call_finish;
    p->call.progress = call_progress;
    p->sub_uri = pe_xstrdup(uri);
    p->t0 = now_s();
    p->next_call = s->calls;
    s->calls = p;
    if (req) {
        p->req = req;
        p->rpc_id = json_incref(id);
        pe_http_defer(req);
    }
    if (pe__mcp_tool_start(&p->call, tool) < 0) {
        if (req)
            respond_json(req, 200, rpc_error(id, -32603, "internal error"), NULL);
        pending_free(p);
    }
}

static void sub_tick(pe_ev_timer *t, void *ud)
{
    pe_mcp_session *s = ud;
    const char *uri;
    json_t *v;

    (void)t;
    if (s->polls > 0) /* the last round is still looking */
        return;
    json_object_foreach(s->subs, uri, v)
    {
        sub_look(s, uri, NULL, NULL);
    }
}

static void resources_subscribe(struct mcp_server *m, pe_mcp_session *s, pe_http_request *req,
                                json_t *rpc, bool on)
{
    json_t *id = json_object_get(rpc, "id"), *args = NULL;
    const char *uri = json_string_value(json_object_get(json_object_get(rpc, "params"), "uri"));
    const char *tool;
    pe_err err;

    if (resource_call(uri, &tool, &args) < 0) {
        respond_json(req, 200, rpc_error(id, -32002, NO_SUCH_RESOURCE), NULL);
        return;
    }
    json_decref(args);
    if (on) {
        if (s->sub_auth)
            sodium_memzero(s->sub_auth, strlen(s->sub_auth));
        free(s->sub_auth);
        s->sub_auth = pe_xstrdup(req->authorization);
        if (s->poll == NULL)
            s->poll = pe_ev_timer_start(m->d->loop, (uint64_t)(MCP_SUB_POLL_S * 1e9),
                                        (uint64_t)(MCP_SUB_POLL_S * 1e9), sub_tick, s, &err);
    }
    if (!on) {
        json_object_del(s->subs, uri);
    } else if (json_object_get(s->subs, uri) == NULL) {
        if (json_object_size(s->subs) >= MCP_SUBS_MAX) {
            respond_json(req, 200,
                         rpc_error(id, -32000,
                                   "too many subscriptions in this session (at most 8): "
                                   "unsubscribe from one first"),
                         NULL);
            return;
        }
        /* answered after the first look, the baseline: a change made
         * once the client has its answer is always reported */
        json_object_set_new(s->subs, uri, json_null());
        sub_look(s, uri, req, id);
        return;
    }
    respond_json(req, 200, json_pack("{s:s, s:O, s:{}}", "jsonrpc", "2.0", "id", id, "result"),
                 NULL);
}

static void listen_on_close(pe_http_stream *hs, void *ud)
{
    pe_mcp_session *s = ud;

    (void)hs;
    s->listen = NULL;
}

static const pe_http_stream_callbacks listen_cb = {.on_close = listen_on_close};

/* notifications/cancelled: the call requestId of this session is given up. */
static void cancel_call(pe_mcp_session *s, json_t *rpc)
{
    json_t *rid = json_object_get(json_object_get(rpc, "params"), "requestId");

    for (struct mcp_pending *p = s->calls; p; p = p->next_call) {
        if (p->sub_uri == NULL && !p->cancelled && p->rpc_id && json_equal(p->rpc_id, rid)) {
            p->cancelled = true;
            if (p->call.cancel)
                p->call.cancel(&p->call);
            return;
        }
    }
}

/* ---- JSON-RPC ---- */

static const char *negotiate(const char *asked)
{
    for (size_t i = 0; asked && versions[i]; i++)
        if (strcmp(asked, versions[i]) == 0)
            return versions[i];
    return versions[0]; /* ours; the client decides whether it can go on */
}

static void initialize(struct mcp_server *m, pe_http_request *req, const char *did, json_t *rpc)
{
    json_t *params = json_object_get(rpc, "params"), *id = json_object_get(rpc, "id");
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    const char *version = negotiate(asked);
    pe_mcp_session *s;
    pe_err err;

    if (!json_is_object(params) || asked == NULL) {
        respond_rpc_error(req, 400, id, -32602, "initialize needs params.protocolVersion");
        return;
    }
    pe_err_clear(&err);
    s = session_new(m, did, version, &err);
    if (s == NULL) {
        respond_rpc_error(req, err.code == PE_XRPC_ERATE ? 429 : 500, id, -32000, err.msg);
        return;
    }
    respond_json(
        req, 200,
        json_pack("{s:s, s:O, s:{s:s, s:{s:{s:b}, s:{s:b, s:b}}, s:{s:s, s:s, s:s}, s:s}}",
                  "jsonrpc", "2.0", "id", id, "result", "protocolVersion", version, "capabilities",
                  "tools", "listChanged", false, "resources", "subscribe", true, "listChanged",
                  false, "serverInfo", "name", MCP_SERVER_NAME, "title", "Pocketenv sandboxes",
                  "version", "1", "instructions",
                  "Pocketenv runs sandboxes: isolated Linux machines. Create one with "
                  "sandbox_create (sandbox_templates lists the bases), run commands with exec, "
                  "start servers with service_start and open them with port_expose. Sandboxes "
                  "keep running between calls: list yours with sandbox_list, and delete those "
                  "you no longer need."),
        s->id);
}

static void on_request(struct mcp_server *m, pe_http_request *req, const char *did, json_t *rpc,
                       const char *method)
{
    json_t *id = json_object_get(rpc, "id");
    const char *sid = pe_http_header(req, "Mcp-Session-Id");
    const char *pv = pe_http_header(req, "MCP-Protocol-Version");
    pe_mcp_session *s;

    if (strcmp(method, "initialize") == 0) {
        if (sid != NULL) {
            respond_rpc_error(req, 400, id, -32600,
                              "initialize starts a session: send it without Mcp-Session-Id");
            return;
        }
        initialize(m, req, did, rpc);
        return;
    }
    if (sid == NULL) {
        respond_rpc_error(req, 400, id, -32000,
                          "no Mcp-Session-Id header: send initialize first and then its session "
                          "id with every request");
        return;
    }
    if ((s = session_find(m, sid, did)) == NULL) {
        respond_rpc_error(req, 404, id, -32001, "session not found: initialize a new one");
        return;
    }
    if (pv && strcmp(pv, s->version) != 0 && strcmp(negotiate(pv), pv) != 0) {
        respond_rpc_error(req, 400, id, -32000, "unsupported MCP-Protocol-Version");
        return;
    }
    if (strcmp(method, "ping") == 0)
        respond_json(req, 200, json_pack("{s:s, s:O, s:{}}", "jsonrpc", "2.0", "id", id, "result"),
                     NULL);
    else if (strcmp(method, "tools/list") == 0)
        respond_json(req, 200,
                     json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result",
                               pe__mcp_tools_list()),
                     NULL);
    else if (strcmp(method, "tools/call") == 0)
        tools_call(m, s, req, did, rpc);
    else if (strcmp(method, "resources/list") == 0)
        respond_json(
            req, 200,
            json_pack("{s:s, s:O, s:{s:[]}}", "jsonrpc", "2.0", "id", id, "result", "resources"),
            NULL);
    else if (strcmp(method, "resources/templates/list") == 0)
        respond_json(req, 200,
                     json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result",
                               resource_templates()),
                     NULL);
    else if (strcmp(method, "resources/read") == 0)
        resources_read(m, s, req, did, rpc);
    else if (strcmp(method, "resources/subscribe") == 0)
        resources_subscribe(m, s, req, rpc, true);
    else if (strcmp(method, "resources/unsubscribe") == 0)
        resources_subscribe(m, s, req, rpc, false);
    else {
        char *msg = pe_xasprintf("method not found: %s", method);
        respond_json(req, 200, rpc_error(id, -32601, msg), NULL);
        free(msg);
    }
}

static void on_post(struct mcp_server *m, pe_http_request *req, const char *did)
{
    const char *ct = pe_http_header(req, "Content-Type");
    json_error_t je;
    json_t *rpc, *id, *method;

    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0) {
        respond_rpc_error(req, 415, NULL, -32700, "Content-Type must be application/json");
        return;
    }
    if (!accepts(req, "application/json") && !accepts(req, "text/event-stream")) {
        respond_rpc_error(req, 406, NULL, -32000,
                          "Accept must allow application/json and text/event-stream");
        return;
    }
    rpc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (rpc == NULL) {
        respond_rpc_error(req, 400, NULL, -32700, "parse error: the body is not JSON");
        return;
    }
    if (json_is_array(rpc)) {
        json_decref(rpc);
        respond_rpc_error(req, 400, NULL, -32600,
                          "batches are not supported: send one JSON-RPC message per request");
        return;
    }
    id = json_object_get(rpc, "id");
    method = json_object_get(rpc, "method");
    if (!json_is_object(rpc) ||
        strcmp(json_string_value(json_object_get(rpc, "jsonrpc")) ?: "", "2.0") != 0 ||
        (id && !json_is_string(id) && !json_is_integer(id)) ||
        (method && !json_is_string(method)) || (method == NULL && id == NULL) ||
        (method == NULL && !json_object_get(rpc, "result") && !json_object_get(rpc, "error"))) {
        respond_rpc_error(req, 400, json_is_string(id) || json_is_integer(id) ? id : NULL, -32600,
                          "invalid request: not a JSON-RPC 2.0 message");
        json_decref(rpc);
        return;
    }
    if (method == NULL || id == NULL) {
        /* a notification or a response: taken (202); the session must exist
         * unless it is the client's answer to nothing we asked */
        const char *sid = pe_http_header(req, "Mcp-Session-Id");
        pe_mcp_session *s = sid ? session_find(m, sid, did) : NULL;
        if (s == NULL) {
            respond_rpc_error(req, sid ? 404 : 400, NULL, -32001,
                              sid ? "session not found: initialize a new one"
                                  : "no Mcp-Session-Id header");
        } else {
            if (method && strcmp(json_string_value(method), "notifications/cancelled") == 0)
                cancel_call(s, rpc);
            pe_http_respond(req, 202, NULL, "", 0, NULL);
        }
        json_decref(rpc);
        return;
    }
    on_request(m, req, did, rpc, json_string_value(method));
    json_decref(rpc);
}

/* GET with Last-Event-ID "<stream>-<n>": replay what came after, then
 * stay on the stream until its answer. */
static void on_get(struct mcp_server *m, pe_http_request *req, const char *did)
{
    const char *sid = pe_http_header(req, "Mcp-Session-Id");
    const char *last = pe_http_header(req, "Last-Event-ID");
    unsigned long num = 0, n = 0;
    struct mcp_stream *st;
    pe_mcp_session *s;
    char *end = NULL;

    if (!accepts(req, "text/event-stream")) {
        respond_rpc_error(req, 406, NULL, -32000, "Accept must allow text/event-stream");
        return;
    }
    if (sid == NULL) {
        respond_rpc_error(req, 400, NULL, -32000, "no Mcp-Session-Id header");
        return;
    }
    if ((s = session_find(m, sid, did)) == NULL) {
        respond_rpc_error(req, 404, NULL, -32001, "session not found: initialize a new one");
        return;
    }
    if (last == NULL) {
        /* the session's own stream, for notifications no request carries
         * (resource updates); one at a time, the newest wins */
        const char *headers[] = {"Cache-Control", "no-store", "X-Accel-Buffering", "no", NULL};
        if (s->listen) {
            pe_http_stream_close(s->listen);
            s->listen = NULL;
        }
        s->listen = pe_http_respond_stream(req, 200, "text/event-stream", headers, &listen_cb, s);
        return;
    }
    num = strtoul(last, &end, 10);
    if (end && *end == '-')
        n = strtoul(end + 1, &end, 10);
    for (st = s->streams; st; st = st->next)
        if (st->num == num)
            break;
    if (st == NULL || end == NULL || *end != '\0' || n >= json_array_size(st->events)) {
        respond_rpc_error(req, 404, NULL, -32002,
                          "no such event to resume from (streams are kept for a while only)");
        return;
    }
    if (st->http) { /* a client may follow a stream once at a time */
        pe_http_stream_close(st->http);
        st->http = NULL;
    }
    if (!start_sse(req, st))
        return;
    for (size_t i = n + 1; i < json_array_size(st->events); i++)
        stream_write_event(st, i);
    if (st->done) {
        pe_http_stream_close(st->http);
        st->http = NULL;
    }
}

static void on_delete(struct mcp_server *m, pe_http_request *req, const char *did)
{
    const char *sid = pe_http_header(req, "Mcp-Session-Id");
    pe_mcp_session *s;

    if (sid == NULL) {
        respond_rpc_error(req, 400, NULL, -32000, "no Mcp-Session-Id header");
        return;
    }
    if ((s = session_find(m, sid, did)) == NULL) {
        respond_rpc_error(req, 404, NULL, -32001, "session not found");
        return;
    }
    session_end(m, s);
    pe_http_respond(req, 204, NULL, "", 0, NULL);
}

/* The bearer token's user, or NULL after a 401. */
static char *authenticate(struct mcp_server *m, pe_http_request *req)
{
    const char *h = req->authorization, *jwt = NULL;
    const char *www[] = {"WWW-Authenticate", "Bearer realm=\"pocketenv\"", NULL};
    enum pe_auth_result r;
    char *did = NULL;

    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        jwt = h + 7;
        while (*jwt == ' ')
            jwt++;
        if (*jwt == '\0' || strcmp(jwt, "null") == 0)
            jwt = NULL;
    }
    r = jwt ? pe_auth_token_verify(m->d->auth, jwt, PE_AUTH_SCOPE_API, &did, NULL)
            : PE_AUTH_MALFORMED;
    if (jwt && r == PE_AUTH_OK)
        return did;
    if (jwt)
        pe_log_info("auth %s: /mcp refused: %s", req->client_addr, pe_auth_result_name(r));
    {
        json_t *e = rpc_error(NULL, -32001,
                              jwt == NULL ? "authentication required: send your API token as "
                                            "Authorization: Bearer <token>"
                              : r == PE_AUTH_EXPIRED ? "token has expired"
                                                     : "invalid token");
        char *text = json_dumps(e, JSON_COMPACT);
        pe_http_respond(req, 401, "application/json", text, strlen(text), www);
        free(text);
        json_decref(e);
    }
    return NULL;
}

/* The spec asks servers to check Origin against DNS rebinding: a page
 * of another site that made the browser call us. Agents send no Origin;
 * a browser on the daemon's own page sends its own host. */
static bool same_origin(pe_http_request *req)
{
    const char *origin = pe_http_header(req, "Origin"), *host = pe_http_header(req, "Host");
    const char *rest;

    if (origin == NULL)
        return true;
    if (host == NULL)
        return false;
    if (strncmp(origin, "http://", 7) == 0)
        rest = origin + 7;
    else if (strncmp(origin, "https://", 8) == 0)
        rest = origin + 8;
    else
        return false;
    return strcasecmp(rest, host) == 0;
}

static void mcp_route(pe_http_request *req, void *ud)
{
    struct mcp_server *m = ud;
    char *did;

    if (req->rest[0] != '\0' && strcmp(req->rest, "/") != 0) {
        pe_http_respond_error(req, 404, "NotFound", "no such path");
        return;
    }
    if (strcmp(req->method, "POST") != 0 && strcmp(req->method, "GET") != 0 &&
        strcmp(req->method, "DELETE") != 0) {
        const char *allow[] = {"Allow", "GET, POST, DELETE", NULL};
        pe_http_respond(req, 405, NULL, "", 0, allow);
        return;
    }
    if (!same_origin(req)) {
        respond_rpc_error(req, 403, NULL, -32000,
                          "cross-origin requests are refused: MCP clients send no Origin");
        return;
    }
    if ((did = authenticate(m, req)) == NULL)
        return;
    if (strcmp(req->method, "POST") == 0)
        on_post(m, req, did);
    else if (strcmp(req->method, "GET") == 0)
        on_get(m, req, did);
    else
        on_delete(m, req, did);
    free(did);
}

/* For the shutdown: one daemon per process, and pe_daemon keeps no MCP
 * state of its own (the route's ud is the only other reference). */
static struct mcp_server *the_server;

int pe_daemon_register_mcp(pe_daemon *d, pe_err *err)
{
    struct mcp_server *m = pe_xcalloc(1, sizeof(*m));

    m->d = d;
    if (pe_http_route(d->srv, "/mcp", MCP_MAX_BODY, mcp_route, m, err) < 0) {
        free(m);
        return -1;
    }
    the_server = m;
    return 0;
}

void pe_daemon_mcp_shutdown(pe_daemon *d)
{
    struct mcp_server *m = the_server;

    (void)d;
    if (m == NULL)
        return;
    while (m->sessions)
        session_end(m, m->sessions);
    /* calls still in flight hold their session; their jobs were drained */
    free(m);
    the_server = NULL;
}
