/* io.pocketenv.sandbox.getIdlePolicy, putIdlePolicy (our lexicons) and
 * createSandbox's idlePolicy: what the housekeeping pass does with a
 * running sandbox nobody used (no exec, terminal, preview traffic) for
 * timeout seconds: "stop" it (the old behaviour, the default), "pause" it
 * (cgroup freezer: memory kept; the next exec, terminal or preview request
 * resumes it, pause.c) or "snapshot-then-stop" (a snapshot named
 * <name>-idle-<time>, then stop). The pass itself is housekeeping.c's. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "idle.h"
#include "pocketenv/store-idle.h"
#include "sandbox-find.h"

static json_t *view(pe_daemon *d, const pe_store_idle *p)
{
    const char *action = p ? p->action : PE_IDLE_STOP;
    int64_t timeout = p ? p->timeout : 0;

    return json_pack("{s:s, s:I, s:I, s:b}", "action", action, "timeout", (json_int_t)timeout,
                     "effectiveTimeout", (json_int_t)(timeout > 0 ? timeout : d->idle_timeout),
                     "isDefault", p == NULL);
}

static void get_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    pe_store_idle p;
    pe_err e2;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    pe_err_clear(&e2);
    if (pe_store_idle_get(s, sb.id, &p, &e2) == 0) {
        job->out = view(job->d, &p);
        pe_store_idle_clear(&p);
    } else if (e2.code == PE_ENOENT) {
        job->out = view(job->d, NULL);
    } else {
        pe_daemon_job_fail(job, &e2, NULL);
    }
    pe_store_sandbox_clear(&sb);
}

static void put_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    pe_store_idle p = {0};

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_store_idle_put(s, sb.id, json_string_value(json_object_get(job->in, "action")),
                          json_integer_value(json_object_get(job->in, "timeout")), &job->err) < 0 ||
        pe_store_idle_get(s, sb.id, &p, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
    } else {
        pe_log_info("event=idle_policy sandbox=%s action=%s timeout=%lld", sb.id, p.action,
                    (long long)p.timeout);
        job->out = view(job->d, &p);
    }
    pe_store_idle_clear(&p);
    pe_store_sandbox_clear(&sb);
}

static void get_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        pe_daemon_submit(d, req, did, get_work,
                         json_string_value(json_object_get(req->params, "id")), NULL);
}

/* Checked here, on the loop thread: a bad policy is a 400, nothing stored. */
static void put_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    json_t *in;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    in = pe_daemon_idle_parse(req->body, &err);
    if (in == NULL) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_daemon_submit(d, req, did, put_work, json_string_value(json_object_get(req->params, "id")),
                     in);
}

int pe_daemon_register_idle(pe_daemon *d, pe_err *err)
{
    if (pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getIdlePolicy", get_handler, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.putIdlePolicy", put_handler, d, err) < 0)
        return -1;
    return 0;
}
