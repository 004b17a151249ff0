/* io.pocketenv.sandbox.getNetworkPolicy / putNetworkPolicy /
 * getNetworkDenials (our lexicons): parse, call sandbox-netpolicy.c (the
 * policy's store, its hand-over to the runtime, the DNS forwarder) or the
 * runtime's denial log, answer.
 *
 * Threading: handlers on the loop thread, their work on workers. */
#include <stdbool.h>
#include <stdlib.h>

#include "core/util.h"
#include "daemon.h"
#include "netpolicy.h"
#include "pocketenv/egress.h"
#include "sandbox-find.h"

static json_t *view(json_t *policy)
{
    bool dflt = policy == NULL;

    if (dflt)
        policy = json_pack("{s:s, s:[], s:[], s:[], s:[], s:[]}", "mode", "open", "allowDomains",
                           "denyDomains", "allowCidrs", "denyCidrs", "ports");
    return json_pack("{s:o, s:b}", "policy", policy, "isDefault", dflt);
}

static void get_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    json_t *policy = NULL;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_daemon_netpolicy_get(job->d, sb.id, &policy, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    else
        job->out = view(policy);
    pe_store_sandbox_clear(&sb);
}

static void put_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    json_t *policy = json_object_get(job->in, "policy");

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (json_is_null(policy))
        policy = NULL;
    if (pe_sandbox_is_remote(&sb) && policy != NULL) {
        /* accepted, it would read as enforced: nothing here sees the
         * provider's traffic (a reset to the default is harmless) */
        pe_err_set(&job->err, PE_ENOTCAP, 0, "not supported by %s: %s", sb.backend,
                   PE_DAEMON_NETPOLICY_REMOTE_WHY);
        pe_daemon_job_fail(job, &job->err, NULL);
    } else if (pe_daemon_netpolicy_put(job->d, &sb, policy, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    else
        job->out = view(policy ? json_incref(policy) : NULL);
    pe_store_sandbox_clear(&sb);
}

static void denials_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_sandbox sb;
    json_t *list = NULL;
    json_int_t limit = json_integer_value(json_object_get(job->in, "limit"));

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_sandbox_egress_denials(&job->d->sx, &sb, (size_t)limit, &list, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, NULL);
    else
        job->out = json_pack("{s:o}", "denials", list);
    pe_store_sandbox_clear(&sb);
}

/* limit: the table checked its range when given. */
static void denials_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const json_t *l = json_object_get(req->params, "limit");

    if (did)
        pe_daemon_submit(d, req, did, denials_work,
                         json_string_value(json_object_get(req->params, "id")),
                         json_pack("{s:I}", "limit", l ? json_integer_value(l) : 100));
}

static void get_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);

    if (did)
        pe_daemon_submit(d, req, did, get_work,
                         json_string_value(json_object_get(req->params, "id")), NULL);
}

/* The policy is checked here, on the loop thread: a bad one is a 400 and
 * nothing is stored. */
static void put_handler(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    json_t *policy = json_object_get(req->body, "policy"), *in;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (policy == NULL) {
        pe_err_set(&err, PE_EINVAL, 0, "policy is required (null removes it)");
        pe_xrpc_respond_err(req, &err);
        return;
    }
    if (json_is_null(policy)) {
        in = json_pack("{s:n}", "policy");
    } else {
        json_t *p = pe_egress_policy_parse(policy, &err);
        if (p == NULL) {
            pe_err_prefix(&err, "policy");
            pe_xrpc_respond_err(req, &err);
            return;
        }
        in = json_pack("{s:o}", "policy", p);
    }
    pe_daemon_submit(d, req, did, put_work, json_string_value(json_object_get(req->params, "id")),
                     in);
}

int pe_daemon_register_netpolicy(pe_daemon *d, pe_err *err)
{
    if (pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getNetworkPolicy", get_handler, d, err) <
            0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.putNetworkPolicy", put_handler, d, err) <
            0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.sandbox.getNetworkDenials", denials_handler, d,
                         err) < 0)
        return -1;
    return 0;
}
