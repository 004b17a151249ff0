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
 * The answer is sent when the execution ends (the gateway's output is
 * kept, at most OUT_MAX), not line by line as it comes; the gateway
 * interrupts an execution after 10 minutes.
 *
 * Threading: loop thread, but for the gateway's run (a long job). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "e2b.h"

#define OUT_MAX (64u * 1024 * 1024) /* an execution's results (charts are PNG) */
#define ID_MAX 64
#define EXIT_REFUSED 3    /* the gateway's "answer with this error" */
#define EXIT_NOTFOUND 127 /* no python3: not a python sandbox */
#define NO_PYTHON                                                                                  \
    "this sandbox has no python3: the code interpreter runs in sandboxes of the python template"

extern const char pe__e2b_interp_py[];

struct iop {
    pe_http_request *req;
    char *sandbox_id;
    const char *op; /* execute, create, list, restart, remove */
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
        pe_log_warn("e2b interpreter %s in %s: %s", op->op, op->sandbox_id, err.msg);
        set_error(op, err.code == PE_XRPC_ETOOBIG ? 413 : 500,
                  err.code == PE_XRPC_ETOOBIG ? "the execution's output is over 64 MiB"
                                              : "the code interpreter could not run");
        return;
    }
    close(r.in_fd);
    if (r.code == 0) {
        op->status = strcmp(op->op, "restart") == 0 || strcmp(op->op, "remove") == 0 ? 204 : 200;
        op->type = strcmp(op->op, "execute") == 0 ? "application/x-ndjson" : "application/json";
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
