/* GET / and the web page's files, over lib/http's prefix routes.
 *
 * One route, "/", catches every path no longer prefix claims (the
 * terminals, /xrpc/, /healthz and /metrics are matched first). Browsers
 * asking for / get the page; other clients (curl: no text/html in Accept)
 * keep the text banner, which names the owner and the public key like the
 * page's footer. Files come from the in-memory table of web.c only: a path
 * is looked up, never opened. Runs on the loop thread; the table is
 * read-only. */
#include <string.h>

#include "daemon.h"
#include "web.h"

static void answer_file(pe_http_request *req, const pe_web_file *f)
{
    bool html = strncmp(f->type, "text/html", 9) == 0;
    const char *const headers[] = {
        "Cache-Control",
        PE_WEB_CACHE_CONTROL,
        "ETag",
        f->etag,
        "X-Content-Type-Options",
        "nosniff",
        "Referrer-Policy",
        "no-referrer",
        html ? "Content-Security-Policy" : NULL,
        PE_WEB_CSP,
        NULL,
    };

    if (pe_web_not_modified(f, pe_http_header(req, "If-None-Match")))
        pe_http_respond(req, 304, NULL, NULL, 0, headers);
    else
        pe_http_respond(req, 200, f->type, f->body, f->len, headers);
}

static void on_web(pe_http_request *req, void *ud)
{
    pe_daemon *d = ud;
    const char *banner = pe_web_banner(d->web);
    const pe_web_file *f;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        pe_http_respond_error(req, 405, "MethodNotAllowed", "only GET and HEAD here");
        return;
    }
    if (strcmp(req->path, "/") == 0 && banner &&
        !pe_web_wants_html(pe_http_header(req, "Accept"))) {
        pe_http_respond(req, 200, "text/plain; charset=utf-8", banner, strlen(banner), NULL);
        return;
    }
    f = pe_web_lookup(d->web, req->path);
    if (f == NULL) {
        pe_http_respond_error(req, 404, "NotFound", "Not Found");
        return;
    }
    answer_file(req, f);
}

int pe_daemon_register_web(pe_daemon *d, pe_err *err)
{
    if (d->web == NULL)
        return 0; /* lib/http's own banner at / */
    return pe_http_route(d->srv, "/", 0, on_web, d, err);
}
