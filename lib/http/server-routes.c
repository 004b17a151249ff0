/* Routes outside /xrpc (pe_http_route): registering them, the head
 * callback's decisions (hold, continue, body to a file, per-request data),
 * and full answers. Streams and upgrades are server-upgrade.c's; the
 * request's phases are server.c's (see the top of that file).
 *
 * A body sent to a file is written as it arrives, on the loop thread, with
 * plain write(2) (a regular file: the page cache takes it). A multipart
 * body is decoded on the way by libmicrohttpd's post processor, which
 * keeps at most POST_BUFFER bytes of it. Loop thread only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "http/server-conn.h"

/* A multipart upload's other parts and part headers, on top of max_bytes. */
#define FORM_SLACK (1ull << 20)
#define POST_BUFFER (64 * 1024) /* libmicrohttpd's post processor buffer */

/* ---- bodies sent to a file ---------------------------------------------- */

/* Bytes of a body bound for a file (pe_http_body_to_fd). A failure
 * answers (once the body is over, see on_body) and closes; the handler
 * never runs, and the route's data free function cleans the file up. */
static void fd_write(struct conn *c, const char *data, size_t len)
{
    if (c->resp)
        return;
    if (len > c->fd_max - c->hreq.body_len) {
        pe__http_refuse_too_big(c);
        return;
    }
    while (len > 0) {
        ssize_t n = write(c->body_fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            pe_log_error("http %s %s: store the request body: %s", c->client, c->label,
                         n < 0 ? strerror(errno) : "short write");
            c->close_after = true;
            pe__http_set_error(c, PE_ESYS, NULL, "Internal Server Error");
            return;
        }
        data += n;
        len -= (size_t)n;
        c->hreq.body_len += (size_t)n;
    }
}

/* libmicrohttpd's post processor hands over each part's content as it is
 * decoded; only the named part goes to the file, and only one of it. */
static enum MHD_Result form_part(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size)
{
    struct conn *c = cls;

    if (key == NULL || strcmp(key, c->form_field) != 0)
        return MHD_YES;
    if (off == 0 && c->form_seen && c->hreq.body_len > 0) {
        c->close_after = true;
        pe__http_set_error(c, PE_EINVAL, NULL, "more than one multipart part named this way");
        return MHD_NO;
    }
    c->form_seen = true;
    fd_write(c, data, size);
    return c->resp ? MHD_NO : MHD_YES;
}

void pe__http_fd_feed(struct conn *c, const char *data, size_t len)
{
    if (len > c->raw_max - c->raw_seen) {
        pe__http_refuse_too_big(c);
        return;
    }
    c->raw_seen += len;
    if (c->pp == NULL) {
        fd_write(c, data, len);
        return;
    }
    if (MHD_post_process(c->pp, data, len) != MHD_YES && c->resp == NULL) {
        c->close_after = true;
        pe__http_set_error(c, PE_EINVAL, NULL, "malformed multipart/form-data body");
    }
}

/* The whole body is in: a multipart one must have ended cleanly. */
void pe__http_fd_end(struct conn *c)
{
    struct MHD_PostProcessor *pp = pe_steal_ptr(&c->pp);

    if (pp && MHD_destroy_post_processor(pp) != MHD_YES && c->resp == NULL)
        pe__http_set_error(c, PE_EINVAL, NULL, "malformed multipart/form-data body");
}

/* ---- routes ------------------------------------------------------------- */

const struct route *pe__http_route_find(pe_http_server *s, const char *url)
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
const struct route *pe__http_host_route_find(pe_http_server *s, const char *host)
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

/* Headers are in: the request the route's callbacks get. Its body limit
 * is checked when the body is let in (begin_body): a head callback may
 * send the body to a file instead. */
void pe__http_route_start(struct conn *c, const struct route *r, const char *url,
                          const char *method)
{
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
        .content_length = c->content_length,
        .body_chunked = c->chunked,
    };
}

void pe__http_route_dispatch(struct conn *c)
{
    if (c->body_fd >= 0) {
        c->hreq.form_part_missing = c->form_field && !c->form_seen;
    } else if (c->body) {
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
        pe__http_set_error(c, PE_ESYS, NULL, "Internal Server Error");
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

int pe_http_route_head(pe_http_server *srv, const char *prefix, pe_http_head_fn fn, pe_err *err)
{
    bool by_host = prefix && prefix[0] == '.';

    for (size_t i = 0; prefix && i < srv->n_routes; i++) {
        if (srv->routes[i].by_host == by_host && strcmp(srv->routes[i].prefix, prefix) == 0) {
            srv->routes[i].head = fn;
            return 0;
        }
    }
    return pe_err_set(err, PE_ENOENT, 0, "head callback for %s: no such route",
                      prefix ? prefix : "(null)");
}

/* Between the head callback and the end of the hold: the only time the
 * body's fate may still be decided. */
static bool deciding(const struct conn *c)
{
    return c->phase == PH_HEAD && c->resp == NULL && !c->continued;
}

void pe_http_continue(pe_http_request *req)
{
    struct conn *c = pe__http_conn_of(req);

    if (!deciding(c)) {
        pe_log_error("http: %s: pe_http_continue outside a head callback or hold", c->label);
        return;
    }
    c->continued = true;
    if (c->in_head || !c->deferred) {
        c->deferred = false;
        return; /* the head callback returns next: the body follows */
    }
    c->deferred = false;
    pe__http_deferred_unlink(c);
    MHD_resume_connection(c->mc); /* MHD repeats the first call: see after_head */
    pe__http_kick(c->srv);
}

static bool is_multipart_form(const char *ctype)
{
    return ctype && strncasecmp(ctype, "multipart/form-data", 19) == 0;
}

int pe_http_body_to_fd(pe_http_request *req, int fd, unsigned long long max_bytes,
                       const char *form_field, pe_err *err)
{
    struct conn *c = pe__http_conn_of(req);

    if (!deciding(c) || c->body_fd >= 0 || fd < 0)
        return pe_err_set(err, PE_EINVAL, 0, "the body's destination is set once, before it comes");
    c->fd_max = max_bytes;
    c->raw_max = max_bytes;
    if (form_field &&
        is_multipart_form(MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Content-Type"))) {
        /* Decoded as it arrives: only the named part reaches the file. */
        c->pp = MHD_create_post_processor(c->mc, POST_BUFFER, form_part, c);
        if (c->pp == NULL)
            return pe_err_set(err, PE_EINVAL, 0,
                              "multipart/form-data body without a usable boundary");
        c->form_field = pe_xstrdup(form_field);
        c->raw_max = max_bytes > ~0ull - FORM_SLACK ? ~0ull : max_bytes + FORM_SLACK;
    }
    c->body_fd = fd;
    return 0;
}

int pe_http_body_fd(pe_http_request *req)
{
    return pe__http_conn_of(req)->body_fd;
}

void pe_http_set_data(pe_http_request *req, void *data, void (*free_fn)(void *))
{
    struct conn *c = pe__http_conn_of(req);

    if (c->data_free)
        c->data_free(c->data);
    c->data = data;
    c->data_free = free_fn;
}

void *pe_http_data(pe_http_request *req)
{
    return pe__http_conn_of(req)->data;
}

void *pe_http_take_data(pe_http_request *req)
{
    struct conn *c = pe__http_conn_of(req);

    c->data_free = NULL;
    return pe_steal_ptr(&c->data);
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

    MHD_get_connection_values(pe__http_conn_of(req)->mc, MHD_HEADER_KIND, each_value, &e);
}

void pe_http_query_each(pe_http_request *req, pe_http_each_fn fn, void *ud)
{
    struct each_ctx e = {fn, ud};

    MHD_get_connection_values(pe__http_conn_of(req)->mc, MHD_GET_ARGUMENT_KIND, each_value, &e);
}

const char *pe_http_query(pe_http_request *req, const char *key)
{
    return MHD_lookup_connection_value(pe__http_conn_of(req)->mc, MHD_GET_ARGUMENT_KIND, key);
}

const char *pe_http_header(pe_http_request *req, const char *name)
{
    return MHD_lookup_connection_value(pe__http_conn_of(req)->mc, MHD_HEADER_KIND, name);
}

void pe__http_add_headers(struct MHD_Response *r, const char *const *headers)
{
    for (; headers && headers[0] && headers[1]; headers += 2)
        MHD_add_response_header(r, headers[0], headers[1]);
}

void pe_http_respond(pe_http_request *req, unsigned status, const char *content_type,
                     const void *body, size_t len, const char *const *headers)
{
    struct conn *c = pe__http_conn_of(req);
    char *copy = NULL;

    if (!pe__http_check_answer_once(c))
        return;
    if (len > 0) {
        copy = pe_xmalloc(len);
        memcpy(copy, body, len);
    }
    pe__http_set_response(c, status, content_type, copy, len);
    pe__http_add_headers(c->resp, headers);
    pe__http_answered(c);
}

void pe_http_respond_fd(pe_http_request *req, unsigned status, const char *content_type, int fd,
                        const char *const *headers)
{
    struct conn *c = pe__http_conn_of(req);
    struct stat st;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        pe_http_respond_error(req, 500, "InternalServerError", "the answer cannot be read");
        return;
    }
    if (!pe__http_check_answer_once(c)) {
        close(fd);
        return;
    }
    /* MHD reads fd as the client takes it (sendfile where it can), and
     * closes it with the response. */
    pe__http_use_response(c, MHD_create_response_from_fd64((uint64_t)st.st_size, fd), status,
                          content_type);
    pe__http_add_headers(c->resp, headers);
    pe__http_answered(c);
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
    struct conn *c = pe__http_conn_of(req);

    if ((c->in_handler || c->in_head) && c->resp == NULL)
        c->deferred = true;
}
