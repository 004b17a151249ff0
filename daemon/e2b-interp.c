/* The E2B code interpreter (docs/e2b.md): @e2b/code-interpreter's
 *   POST /execute                 {code, context_id, language, env_vars}
 *                                 → NDJSON: stdout, stderr, result (MIME
 *                                 bundle), error, number_of_executions,
 *                                 end_of_execution
 *   POST /contexts {language, cwd} → {id, language, cwd};  GET /contexts
 *   DELETE /contexts/:id;  POST /contexts/:id/restart
 * for a sandbox of the python template, on its Jupyter server.
 *
 * How the daemon reaches the kernel: each request runs a small gateway
 * (e2b-interp.py, embedded) with the sandbox's own python3 inside the
 * sandbox, which talks to the Jupyter server over the sandbox's loopback
 * (REST for kernels, the kernel's WebSocket channel for code) with the
 * Jupyter client library the template already has (tornado). So the
 * daemon needs no WebSocket client, no Jupyter message signing and no
 * route into the sandbox's network: the same exec path as every envd
 * call. A context is a Jupyter kernel (its id is the kernel's), so state
 * lives in the kernel between requests.
 *
 * An execution streams: the gateway's first line says the request is good
 * (ACCEPTED), the daemon answers 200 and passes on each line as the kernel
 * gives it, under backpressure (past HIGH_WATER unsent, the gateway's
 * output is not read). A client that leaves ends the gateway (the kernel
 * finishes the cell). The gateway interrupts an execution after 10
 * minutes. The context calls are short: a job runs the gateway to its end
 * and answers with its output (at most OUT_MAX).
 *
 * Threading: loop thread, but for the jobs and the gateway's start. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "e2b.h"
#include "sandbox-proc.h"

#define OUT_MAX (4u * 1024 * 1024) /* a context call's answer */
#define ID_MAX 64
#define HEAD_MAX (64 * 1024)     /* an execution's output before ACCEPTED: an error */
#define HIGH_WATER (1024 * 1024) /* an execution's output queued for the client */
#define ACCEPTED "{\"pocketenv\": \"accepted\"}\n"
#define EXIT_REFUSED 3    /* the gateway's "answer with this error" */
#define EXIT_NOTFOUND 127 /* no python3: not a python sandbox */
#define NO_PYTHON                                                                                  \
    "this sandbox has no python3: the code interpreter runs in sandboxes of the python template"

extern const char pe__e2b_interp_py[];

struct iop {
    pe_http_request *req;
    char *sandbox_id;
    const char *op; /* create, list, restart, remove */
    char *id;       /* the context of restart and remove */
    char *body;
    size_t body_len;
    /* the answer, made by the job */
    unsigned status;
    char *text;
    size_t text_len;
    const char *type;
};

static void iop_free(struct iop *op)
{
    free(op->sandbox_id);
    free(op->id);
    free(op->body);
    free(op->text);
    free(op);
}

static void set_error(struct iop *op, unsigned status, const char *message)
{
    json_t *o = json_pack("{s:i,s:s}", "code", (int)status, "message", message);

    free(op->text);
    op->status = status;
    op->text = json_dumps(o, JSON_COMPACT);
    op->text_len = strlen(op->text);
    op->type = "application/json";
    json_decref(o);
}

/* The gateway's refusal: its last line, {"status", "message"}. */
static void refused(struct iop *op, char *out, size_t len)
{
    char *last;
    json_t *o, *st;

    while (len > 0 && out[len - 1] == '\n')
        out[--len] = '\0';
    last = strrchr(out, '\n');
    o = json_loads(last ? last + 1 : out, 0, NULL);
    st = json_object_get(o, "status");
    if (json_is_integer(st) && json_integer_value(st) >= 400 && json_integer_value(st) < 600 &&
        json_is_string(json_object_get(o, "message")))
        set_error(op, (unsigned)json_integer_value(st),
                  json_string_value(json_object_get(o, "message")));
    else
        set_error(op, 502, "the code interpreter's gateway failed in the sandbox");
    json_decref(o);
}

/* stdin for the gateway: the request's body in an unnamed file. */
static int body_fd(const struct iop *op, pe_err *err)
{
    int fd = memfd_create("pe-e2b-interp", MFD_CLOEXEC);
    size_t off = 0;

    if (fd < 0)
        return pe_err_sys(err, "memfd_create"), -1;
    while (off < op->body_len) {
        ssize_t n = write(fd, op->body + off, op->body_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return pe_err_sys(err, "write the request for the gateway"), -1;
        }
        off += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0) {
        close(fd);
        return pe_err_sys(err, "lseek"), -1;
    }
    return fd;
}

static void interp_work(pe_daemon_job *job, pe_store *s)
{
    struct iop *op = job->ud;
    const char *argv[] = {"python3", "-c", pe__e2b_interp_py, op->op, op->id, NULL};
    struct pe__e2b_run r = {.sandbox_id = op->sandbox_id, .argv = argv, .out_max = OUT_MAX};
    pe_err err;

    (void)s;
    pe_err_clear(&err);
    if ((r.in_fd = body_fd(op, &err)) < 0 || pe__e2b_run_in(job->d, &r, &err) < 0) {
        if (r.in_fd >= 0)
            close(r.in_fd);
        pe__e2b_run_clear(&r);
        if (err.code == PE_ENOEXEC && err.errnum == ENOENT) {
            set_error(op, 503, NO_PYTHON);
            return;
        }
        if (err.code == PE_ENOTCAP) { /* a remote provider without stdin */
            set_error(op, 501, err.msg);
            return;
        }
        pe_log_warn("e2b interpreter %s in %s: %s", op->op, op->sandbox_id, err.msg);
        set_error(op, err.code == PE_XRPC_ETOOBIG ? 502 : 500,
                  err.code == PE_XRPC_ETOOBIG ? "the code interpreter's answer is too long"
                                              : "the code interpreter could not run");
        return;
    }
    close(r.in_fd);
    if (r.code == 0) {
        op->status = strcmp(op->op, "restart") == 0 || strcmp(op->op, "remove") == 0 ? 204 : 200;
        op->type = "application/json";
        op->text = r.out;
        op->text_len = r.out_len;
        r.out = NULL;
    } else if (r.code == EXIT_REFUSED) {
        refused(op, r.out, r.out_len);
    } else if (r.code == EXIT_NOTFOUND) {
        set_error(op, 503, NO_PYTHON);
    } else {
        pe_log_warn("e2b interpreter %s in %s: exit %d: %.300s", op->op, op->sandbox_id, r.code,
                    r.errout);
        set_error(op, 502, "the code interpreter's gateway failed in the sandbox");
    }
    pe__e2b_run_clear(&r);
}

static void interp_after(pe_daemon_job *job)
{
    struct iop *op = job->ud;

    if (job->failed)
        set_error(op, 500, "the code interpreter could not run");
    pe_http_respond(op->req, op->status, op->status == 204 ? NULL : op->type,
                    op->status == 204 ? "" : op->text, op->status == 204 ? 0 : op->text_len, NULL);
    iop_free(op);
}

/* A context id as the gateway puts it in a Jupyter URL: nothing that
 * could lead to another of the server's paths. */
static bool id_ok(const char *s, size_t n)
{
    if (n == 0 || n > ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '-' || (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= 'A' && s[i] <= 'Z')))
            return false;
    return true;
}

static void answer_error(pe_http_request *req, unsigned status, const char *message)
{
    struct iop op = {0};

    set_error(&op, status, message);
    pe_http_respond(req, status, op.type, op.text, op.text_len, NULL);
    free(op.text);
}

/* Which operation req asks for; *id: the context in the path. */
static const char *op_of(pe_http_request *req, char **id)
{
    const char *m = req->method, *rest = req->rest, *slash;

    *id = NULL;
    if (strncmp(req->path, "/execute", 8) == 0)
        return rest[0] == '\0' && strcmp(m, "POST") == 0 ? "execute" : NULL;
    if (rest[0] == '\0')
        return strcmp(m, "POST") == 0 ? "create" : strcmp(m, "GET") == 0 ? "list" : NULL;
    if (rest[0] != '/')
        return NULL;
    rest++;
    slash = strchr(rest, '/');
    if (!id_ok(rest, slash ? (size_t)(slash - rest) : strlen(rest)))
        return NULL;
    *id = slash ? pe_xasprintf("%.*s", (int)(slash - rest), rest) : pe_xstrdup(rest);
    if (slash == NULL && strcmp(m, "DELETE") == 0)
        return "remove";
    if (slash && strcmp(slash, "/restart") == 0 && strcmp(m, "POST") == 0)
        return "restart";
    free(*id);
    *id = NULL;
    return NULL;
}

/* ---- an execution, streamed ---- */

typedef struct ixec {
    pe_daemon *d;
    char *sandbox_id;
    pe_http_request *req; /* until answered */
    pe_http_stream *st;   /* once accepted, until the client goes */
    pe_sbproc *p;
    char *head; /* the output before ACCEPTED */
    size_t head_len;
    struct ixec *next;
} ixec;

static ixec *execs; /* live, for shutdown */

static void ixec_free(ixec *x)
{
    for (ixec **q = &execs; *q; q = &(*q)->next)
        if (*q == x) {
            *q = x->next;
            break;
        }
    if (x->st)
        pe_http_stream_close(x->st);
    pe_sbproc_free(x->p);
    pe_daemon_release(x->d, x->sandbox_id);
    free(x->sandbox_id);
    free(x->head);
    free(x);
}

static void ixec_refuse(ixec *x, unsigned status, const char *message)
{
    if (x->req)
        answer_error(x->req, status, message);
    x->req = NULL;
}

static void ixec_watch(ixec *x)
{
    if (x->p)
        pe_sbproc_read(x->p, x->st == NULL || pe_http_stream_pending(x->st) < HIGH_WATER);
}

static void on_exec_drain(pe_http_stream *st, void *ud)
{
    (void)st;
    ixec_watch(ud);
}

/* The client went: the gateway ends (SIGKILL; it holds nothing). */
static void on_exec_close(pe_http_stream *st, void *ud)
{
    ixec *x = ud;

    (void)st;
    x->st = NULL;
    pe_sbproc_signal(x->p, SIGKILL);
    ixec_watch(x);
}

static const pe_http_stream_callbacks exec_stream_cb = {.on_drain = on_exec_drain,
                                                        .on_close = on_exec_close};

static void on_exec_output(pe_sbproc *p, int which, const unsigned char *buf, size_t n, void *ud)
{
    ixec *x = ud;
    size_t skip = strlen(ACCEPTED);

    (void)p;
    if (which != 1) /* stderr: the gateway's own failure, which its exit says */
        return;
    if (x->req == NULL) {
        if (x->st)
            pe_http_stream_write(x->st, buf, n);
        ixec_watch(x);
        return;
    }
    if (x->head_len + n > HEAD_MAX) {
        pe_sbproc_signal(x->p, SIGKILL);
        return;
    }
    x->head = pe_xrealloc(x->head, x->head_len + n + 1);
    memcpy(x->head + x->head_len, buf, n);
    x->head_len += n;
    x->head[x->head_len] = '\0';
    if (x->head_len >= skip && strncmp(x->head, ACCEPTED, skip) == 0) {
        x->st =
            pe_http_respond_stream(x->req, 200, "application/x-ndjson", NULL, &exec_stream_cb, x);
        x->req = NULL;
        if (x->head_len > skip)
            pe_http_stream_write(x->st, x->head + skip, x->head_len - skip);
        x->head_len = 0;
    }
    ixec_watch(x);
}

static void on_exec_started(pe_sbproc *p, const pe_err *err, void *ud)
{
    ixec *x = ud;

    if (err == NULL)
        return;
    if (err->code == PE_ENOEXEC && err->errnum == ENOENT) {
        ixec_refuse(x, 503, NO_PYTHON);
    } else if (err->code == PE_ENOTCAP) { /* "not supported by PROVIDER: stdin" */
        ixec_refuse(x, 501, err->msg);
    } else {
        pe_log_warn("e2b interpreter execute in %s: %s", x->sandbox_id, err->msg);
        ixec_refuse(x, 500, "the code interpreter could not run");
    }
    pe_sbproc_free(p);
    x->p = NULL;
    ixec_free(x);
}

static void on_exec_exited(pe_sbproc *p, int code, void *ud)
{
    ixec *x = ud;
    struct iop op = {0};
    char none[1] = "";

    (void)p;
    if (x->req && code == EXIT_REFUSED) {
        refused(&op, x->head ? x->head : none, x->head_len);
        pe_http_respond(x->req, op.status, op.type, op.text, op.text_len, NULL);
        free(op.text);
        x->req = NULL;
    } else if (x->req) {
        pe_log_warn("e2b interpreter execute in %s: exit %d before it began", x->sandbox_id, code);
        ixec_refuse(x, code == EXIT_NOTFOUND ? 503 : 502,
                    code == EXIT_NOTFOUND ? NO_PYTHON
                                          : "the code interpreter's gateway failed in the sandbox");
    }
    ixec_free(x);
}

static const pe_sbproc_callbacks exec_proc_cb = {
    .started = on_exec_started, .output = on_exec_output, .exited = on_exec_exited};

static void execute(pe_daemon *d, pe_http_request *req, const char *sandbox_id)
{
    ixec *x = pe_xcalloc(1, sizeof(*x));
    pe_sbproc_spec spec = {.sandbox_id = sandbox_id};
    pe_err err;

    spec.argv = pe_xcalloc(5, sizeof(char *)); /* NULL-terminated */
    spec.argv[0] = pe_xstrdup("python3");
    spec.argv[1] = pe_xstrdup("-c");
    spec.argv[2] = pe_xstrdup(pe__e2b_interp_py);
    spec.argv[3] = pe_xstrdup("execute");
    spec.stdin_required = true; /* the request goes in on stdin */
    x->d = d;
    x->sandbox_id = pe_xstrdup(sandbox_id);
    x->req = req;
    pe_err_clear(&err);
    if ((x->p = pe_sbproc_start(d, &spec, &exec_proc_cb, x, &err)) == NULL) {
        answer_error(req, 503, "the daemon is busy");
        free(x->sandbox_id);
        free(x);
        return;
    }
    pe_daemon_hold(d, sandbox_id); /* no idle stop while it runs */
    x->next = execs;
    execs = x;
    pe_http_defer(req);
    pe_sbproc_write(x->p, req->body, req->body_len);
    pe_sbproc_close_stdin(x->p);
}

void pe__e2b_interp_shutdown(pe_daemon *d)
{
    (void)d;
    while (execs) {
        ixec *x = execs;
        ixec_refuse(x, 503, "the daemon is shutting down");
        ixec_free(x); /* the gateway killed and reaped */
    }
}

void pe__e2b_interp(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id)
{
    struct iop *op;
    pe_daemon_job *job;
    pe_err why;
    char *id;
    const char *what = op_of(req, &id);

    if (what == NULL) {
        answer_error(req, 404, "no such code interpreter path (docs/e2b.md)");
        return;
    }
    if (strcmp(what, "execute") == 0) {
        execute(d, req, sandbox_id);
        return;
    }
    op = pe_xcalloc(1, sizeof(*op));
    op->req = req;
    op->sandbox_id = pe_xstrdup(sandbox_id);
    op->op = what;
    op->id = id ? id : pe_xstrdup("");
    op->body = pe_xcalloc(1, req->body_len + 1);
    if (req->body_len)
        memcpy(op->body, req->body, req->body_len);
    op->body_len = req->body_len;
    job = pe_daemon_job_new(d, NULL, did, interp_work);
    job->ud = op;
    job->after = interp_after;
    job->kind = PE_JOB_LONG;
    pe_http_defer(req);
    pe_err_clear(&why);
    if (pe_daemon_job_submit_why(job, &why) < 0) {
        answer_error(req, why.code == PE_XRPC_ERATE ? 429 : 503, why.msg);
        iop_free(op);
    }
}
