/* io.pocketenv.sandbox.exposePort, unexposePort, getExposedPorts,
 * exposeVscode (reference §1.4, §3.5): a port of a sandbox made reachable
 * through the daemon's own reverse proxy (daemon/proxy.c).
 *
 * A row of sandbox_ports is the whole state: the proxy reads it on every
 * request, so unexposePort takes effect at once. previewUrl is the Host
 * form http://<port>-<name>-<tag>.localhost:<daemon port>/, the tag unique
 * across users (docs/design/ports.md says why not the path form). A port
 * is private unless the body says "public": true (our extension); a
 * private port opens with the owner's API token (Bearer), the owner's
 * preview cookie (a browser: io.pocketenv.port.createPreviewLink, our
 * extension, makes the one-time sign-in link), or its secret, which
 * exposePort and getExposedPorts hand the owner as shareUrl (previewUrl +
 * ?pe_secret=...).
 *
 * Handlers check input on the loop thread and do store and runtime work
 * on a worker. Another user's sandbox answers as a missing one. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "ports.h"
#include "pocketenv/store-ports.h"
#include "records.h"
#include "sandbox-find.h"

#define SANDBOX_NOT_FOUND "SandboxNotFound"
#define DESCRIPTION_MAX 1000
#define PER_SANDBOX_MAX 64
/* code-server's port. Upstream uses 1024, below the 1025 its own lexicon
 * allows for an exposed port, so getExposedPorts would answer what the
 * lexicon refuses; 13337 is where Coder's templates run code-server. */
#define VSCODE_PORT 13337
#define VSCODE_BIND "0.0.0.0:13337"
#define VSCODE_SETTLE_MS 1000
#define CODE_TTL 60 /* seconds a sign-in link works, once */

/* remote: the sandbox runs on a provider. A row with a preview URL is
 * served at the provider's (its own rules); one without, by our proxy
 * over the provider's link (pe_provider_preview_link.proxy) or a stream
 * the adapter opens (.forward: kubernetes' port-forward), under the same
 * rules as a local sandbox's. */
static json_t *port_view(pe_daemon *d, const char *name, const char *tag, const pe_store_port *p,
                         bool remote)
{
    bool theirs = remote && p->preview_url;
    cleanup_free char *url =
        theirs ? pe_xstrdup(p->preview_url) : pe_daemon_preview_url(d, name, tag, p->port);
    json_t *o = json_pack("{s:i, s:s, s:b}", "port", p->port, "previewUrl", url, "public",
                          p->public_access);

    if (p->description)
        json_object_set_new(o, "description", json_string(p->description));
    if (!theirs && !p->public_access && p->secret)
        json_object_set_new(o, "shareUrl", json_sprintf("%s?pe_secret=%s", url, p->secret));
    return o;
}

static bool lookup(pe_daemon_job *job, pe_store *s, bool running, pe_store_sandbox *sb)
{
    if (pe_daemon_transfer_sandbox(job->d, s, job->did, job->id, !running, sb, &job->err) == 0)
        return true;
    pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
    return false;
}

/* Insert the row for port; the reply is {previewUrl, shareUrl?, ...}. An
 * existing row is PE_EEXIST unless reuse (exposeVscode: answer it). */
static int add_port(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb, int port,
                    const char *desc, bool pub, bool reuse)
{
    cleanup_free char *id = pe_store_new_id("port_"), *secret = pe_daemon_preview_secret(),
                      *tag = NULL;
    cleanup_free char *url = NULL;
    pe_store_port p = {.id = id,
                       .sandbox_id = sb->id,
                       .port = port,
                       .description = desc,
                       .preview_url = url,
                       .public_access = pub,
                       .secret = secret};
    pe_store_port *list = NULL, got = {0};
    pe_provider_preview_link link = {0};
    bool remote = pe_sandbox_is_remote(sb), proxied = false;
    size_t n = 0;

    if (pe_store_preview_tag(s, sb->id, &tag, &job->err) < 0 ||
        pe_store_port_list(s, sb->id, &list, &n, &job->err) < 0)
        return pe_daemon_job_fail(job, &job->err, NULL);
    /* A remote sandbox's preview is its provider's: its link, with the
     * header it wants (a preview token, never the API key). One that
     * wants the provider's credential itself goes through our proxy when
     * the provider can open the port for it (forward: kubernetes'
     * port-forward), under our own preview URL; otherwise none. */
    if (remote && pe_sandbox_preview(&job->d->sx, s, sb, port, &link, &job->err) < 0) {
        pe_store_port_list_free(list, n);
        return pe_daemon_job_fail(job, &job->err, NULL);
    }
    if (remote && link.forward) { /* served as a local sandbox's is, by our proxy */
        remote = false;
        proxied = true;
        explicit_bzero(&link, sizeof(link));
    }
    if (remote && link.needs_credential) {
        pe_store_port_list_free(list, n);
        pe_err_set(&job->err, PE_ENOTCAP, 0,
                   "not supported by %s: a preview that needs the API key (not proxied here yet)",
                   sb->backend);
        return pe_daemon_job_fail(job, &job->err, NULL);
    }
    /* a link for our proxy is kept out of the row and of every answer */
    remote = remote && !link.proxy;
    url = remote ? pe_xstrdup(link.url) : pe_daemon_preview_url(job->d, sb->name, tag, port);
    p.preview_url = proxied || link.proxy ? NULL : url; /* without one: ours (port_view) */
    pe_store_port_list_free(list, n);
    if (n >= PER_SANDBOX_MAX) {
        pe_err_set(&job->err, PE_EINVAL, 0, "a sandbox exposes at most %d ports", PER_SANDBOX_MAX);
        return pe_daemon_job_fail(job, &job->err, NULL);
    }
    if (pe_store_port_add(s, &p, &job->err) < 0) {
        if (!(reuse && job->err.code == PE_EEXIST))
            return pe_daemon_job_fail(job, &job->err,
                                      job->err.code == PE_ENOENT ? SANDBOX_NOT_FOUND : NULL);
        if (pe_store_port_get(s, sb->id, port, &got, &job->err) < 0)
            return pe_daemon_job_fail(job, &job->err, NULL);
        job->out = port_view(job->d, sb->name, tag, &got, remote);
        pe_store_port_clear(&got);
        return 0;
    }
    job->out = port_view(job->d, sb->name, tag, &p, remote);
    if (remote && link.header_name[0]) { /* our extension: what the link wants sent */
        json_t *h = json_pack("{s:s}", link.header_name, link.header_value);
        if (link.header2_name[0])
            json_object_set_new(h, link.header2_name, json_string(link.header2_value));
        json_object_set_new(job->out, "previewHeaders", h);
    }
    explicit_bzero(&link, sizeof(link));
    pe_log_info("event=expose sandbox=%s port=%d public=%d", sb->id, port, pub);
    pe_daemon_record_sync(job->d, s, sb->id); /* the record's ports */
    return 0;
}

/* ---- exposePort ---- */

static void expose_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    int port = (int)json_integer_value(json_object_get(job->in, "port"));

    if (!lookup(job, s, false, &sb))
        return;
    add_port(job, s, &sb, port, json_string_value(json_object_get(job->in, "description")),
             json_is_true(json_object_get(job->in, "public")), false);
    pe_store_sandbox_clear(&sb);
}

static void submit(pe_daemon *d, pe_xrpc_request *req, const char *did, pe_daemon_work_fn work)
{
    pe_daemon_submit(d, req, did, work, json_string_value(json_object_get(req->params, "id")),
                     req->body ? json_deep_copy(req->body) : json_object());
}

static void expose_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *desc = json_string_value(json_object_get(req->body, "description"));
    json_t *pub = json_object_get(req->body, "public");
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if ((desc && strlen(desc) > DESCRIPTION_MAX &&
         pe_err_set(&err, PE_EINVAL, 0, "description longer than %d bytes", DESCRIPTION_MAX)) ||
        (pub && !json_is_boolean(pub) &&
         pe_err_set(&err, PE_EINVAL, 0, "public must be a boolean"))) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    submit(d, req, did, expose_work);
}

/* ---- unexposePort ---- */

static void unexpose_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    int port = (int)json_integer_value(json_object_get(job->in, "port"));

    if (!lookup(job, s, false, &sb))
        return;
    if (pe_store_port_delete(s, sb.id, port, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? "PortNotFound" : NULL);
    else
        pe_log_info("event=unexpose sandbox=%s port=%d", sb.id, port);
    if (!job->failed)
        pe_daemon_record_sync(job->d, s, sb.id);
    pe_store_sandbox_clear(&sb);
}

static void unexpose_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        submit(d, req, did, unexpose_work);
}

/* ---- getExposedPorts ---- */

static void list_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    pe_store_port *list = NULL;
    cleanup_free char *tag = NULL;
    size_t n = 0;
    json_t *arr;

    if (!lookup(job, s, false, &sb))
        return;
    if (pe_store_preview_tag(s, sb.id, &tag, &job->err) < 0 ||
        pe_store_port_list(s, sb.id, &list, &n, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(
                arr, port_view(job->d, sb.name, tag, &list[i], pe_sandbox_is_remote(&sb)));
        job->out = json_pack("{s:o}", "ports", arr);
    }
    pe_store_port_list_free(list, n);
    pe_store_sandbox_clear(&sb);
}

static void list_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        submit(d, req, did, list_work);
}

/* ---- exposeVscode ---- */

/* Does something accept connections on addr:port? (blocking, short) */
static bool listening(const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct pollfd pfd;
    int fd, soerr = 0;
    socklen_t sl = sizeof(soerr);
    bool ok = false;

    if (addr == NULL || inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return false;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
        ok = poll(&pfd, 1, 500) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
             soerr == 0;
    }
    close(fd);
    return ok;
}

static int no_code_server(pe_err *err)
{
    return pe_err_set(err, PE_EINVAL, 0,
                      "the sandbox's image has no code-server (install it, e.g. from "
                      "https://github.com/coder/code-server, then call exposeVscode again)");
}

/* Start code-server in sb as upstream does (--bind-addr 0.0.0.0:13337
 * --auth none: the preview proxy does the access control), argv only, no
 * shell. It is our child: job->init_pidfd hands its pidfd to the reaper.
 * A missing binary is a 400 that says so. */
static int start_vscode(pe_daemon_job *job, const pe_store_sandbox *sb)
{
    char *argv[] = {(char *)"code-server", (char *)"--bind-addr", (char *)VSCODE_BIND,
                    (char *)"--auth",      (char *)"none",        NULL};
    pe_proc_opts opts = {.argv = argv};
    pe_proc p = {.pid = -1,
                 .pidfd = -1,
                 .signal_pidfd = -1,
                 .stdin_fd = -1,
                 .stdout_fd = -1,
                 .stderr_fd = -1,
                 .pty_fd = -1};
    struct pollfd pfd;
    int code = 0;

    if (pe_sandbox_proc_start(&job->d->sx, sb->id, &opts, &p, &job->err) < 0) {
        if (job->err.errnum == ENOENT)
            return no_code_server(&job->err);
        return pe_err_prefix(&job->err, "start code-server");
    }
    pfd = (struct pollfd){.fd = p.pidfd, .events = POLLIN};
    if (poll(&pfd, 1, VSCODE_SETTLE_MS) == 1) { /* ended at once: why? */
        if (pe_proc_wait(&p, &code, &job->err) < 0) {
            pe_proc_close(&p);
            return -1;
        }
        pe_proc_close(&p);
        if (code == 127)
            return no_code_server(&job->err);
        return pe_err_set(&job->err, PE_XRPC_EUPSTREAM, 0, "code-server exited with status %d",
                          code);
    }
    job->init_pidfd = pe_steal_fd(&p.pidfd);
    pe_proc_close(&p);
    pe_log_info("event=vscode_start sandbox=%s", sb->id);
    return 0;
}

static void vscode_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    char *addr = NULL;

    if (!lookup(job, s, true, &sb))
        return;
    if (sb.status != PE_STORE_RUNNING) {
        pe_err_set(&job->err, PE_ESTATE, 0, "sandbox %s is not running", sb.name);
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (pe_sandbox_is_remote(&sb)) {
        /* code-server is started as a process of this host's runtime and
         * reached at the sandbox's address here; a provider's sandbox has
         * neither (not "not running": it runs) */
        pe_err_set(&job->err, PE_ENOTCAP, 0, "not supported by %s: exposeVscode", sb.backend);
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (pe_daemon_sandbox_address(job->d, sb.id, &addr, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (!listening(addr, VSCODE_PORT) && start_vscode(job, &sb) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        pe_daemon_touch(job->d, sb.id);
        add_port(job, s, &sb, VSCODE_PORT, "VS Code Server", false, true);
    }
    free(addr);
    pe_store_sandbox_clear(&sb);
}

static void vscode_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        submit(d, req, did, vscode_work);
}

/* ---- io.pocketenv.port.createPreviewLink (our extension) ----
 *
 * The web page's preview.html asks for this with the API token it keeps,
 * then sends the browser to the link: the preview turns the code into its
 * cookie and redirects it away before any of the sandbox's content runs.
 * Only the sandbox's owner gets a link; another user's sandbox is a 404. */

static void link_work(pe_daemon_job *job, pe_store *s)
{
    pe_preview_target *t = job->ud;
    pe_store_port row;
    cleanup_free char *aud = NULL, *code = NULL;

    if (pe_store_port_find(s, t->ident, t->port, &row, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? "PortNotFound" : NULL);
        return;
    }
    if (strcmp(row.owner_did, job->did) != 0 ||
        (t->name_hint && strcasecmp(t->name_hint, row.sandbox_name) != 0)) {
        pe_err_set(&job->err, PE_ENOENT, 0, "no such exposed port");
        pe_daemon_job_fail(job, &job->err, "PortNotFound");
    } else if (aud = pe_xasprintf("%s:%d", row.sandbox_id, t->port),
               pe_auth_token_mint_aud(job->d->auth, job->did, CODE_TTL, PE_AUTH_SCOPE_PREVIEW_CODE,
                                      aud, &code, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        cleanup_free char *link = pe_daemon_preview_signin_link(t, code);
        job->out = json_pack("{s:s, s:o}", "url", link, "expiresAt",
                             pe_daemon_time_json(pe_store_now_ms() + CODE_TTL * 1000));
        explicit_bzero(code, strlen(code));
    }
    pe_store_port_clear(&row);
}

static void link_after(pe_daemon_job *job)
{
    pe_daemon_preview_target_clear(job->ud);
    free(job->ud);
}

static void link_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    pe_preview_target *t;
    pe_daemon_job *job;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    t = pe_xcalloc(1, sizeof(*t));
    if (pe_daemon_preview_parse(json_string_value(json_object_get(req->body, "url")), t, &err) <
        0) {
        free(t);
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, link_work);
    job->ud = t;
    job->after = link_after;
    if (pe_daemon_job_submit(job) < 0) { /* answered 503; after is not called */
        pe_daemon_preview_target_clear(t);
        free(t);
    }
}

int pe_daemon_register_ports(pe_daemon *d, pe_err *err)
{
    if (pe_xrpc_register(d->srv, "io.pocketenv.sandbox.exposePort", expose_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.unexposePort", unexpose_handler, d, err) <
            0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getExposedPorts", list_handler, d, err) <
            0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.exposeVscode", vscode_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.port.createPreviewLink", link_handler, d, err) < 0)
        return -1;
    return pe_daemon_register_proxy(d, err);
}
