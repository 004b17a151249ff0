/* XRPC handlers called from inside the program (pe_xrpc_call).
 *
 * The request a handler gets is a pe_xrpc_request whose call field points
 * here instead of at a connection; pe_xrpc_respond and friends (server.c)
 * hand such answers to pe__xrpc_call_answer. Input goes through the same
 * validators as an HTTP request's (xrpc.c), so a caller inside the program
 * can send nothing the API would refuse. The answer is delivered with
 * pe_ev_post, never from inside pe_xrpc_call: a caller may then free its
 * own state in done without caring how fast the handler was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "http/server-conn.h"

#define CALL_MAX_ARGS 64

struct pe_xrpc_call {
    pe_xrpc_request req;
    pe_ev_loop *loop;
    pe_xrpc_call_done done;
    void *ud;
    char *authorization, *client_addr;
    bool answered, deferred;
    json_t *out;
    unsigned status;
    char *error_name, *message;
};

static void call_free(struct pe_xrpc_call *call)
{
    json_decref(call->req.params);
    json_decref(call->req.body);
    json_decref(call->out);
    free(call->authorization);
    free(call->client_addr);
    free(call->error_name);
    free(call->message);
    free(call);
}

static void call_deliver(void *ud)
{
    struct pe_xrpc_call *call = ud;
    json_t *out = call->out;

    call->out = NULL;
    call->done(out, call->status, call->error_name, call->message, call->ud);
    call_free(call);
}

void pe__xrpc_call_answer(struct pe_xrpc_call *call, json_t *out, unsigned status, const char *name,
                          const char *message)
{
    if (call->answered) {
        pe_log_error("xrpc call %s answered twice", call->req.nsid);
        json_decref(out);
        return;
    }
    call->answered = true;
    call->out = out;
    call->status = status;
    call->error_name = name ? pe_xstrdup(name) : NULL;
    call->message = message ? pe_xstrdup(message) : NULL;
    pe_ev_post(call->loop, call_deliver, call);
}

void pe__xrpc_call_defer(struct pe_xrpc_call *call)
{
    if (!call->answered)
        call->deferred = true;
}

/* A parameter as a query string carries it; NULL for another type. */
static char *param_text(json_t *v)
{
    char buf[32];

    if (json_is_string(v))
        return pe_xstrdup(json_string_value(v));
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        return pe_xstrdup(buf);
    }
    if (json_is_boolean(v))
        return pe_xstrdup(json_is_true(v) ? "true" : "false");
    return NULL;
}

static int call_input(const pe_xrpc_method *m, json_t *params, json_t *body, json_t **params_out,
                      json_t **body_out, pe_err *err)
{
    pe_xrpc_arg args[CALL_MAX_ARGS];
    char *texts[CALL_MAX_ARGS];
    size_t n = 0;
    const char *key;
    json_t *v;
    char msg[512];
    int rc = 0;

    json_object_foreach(params, key, v)
    {
        if (n == CALL_MAX_ARGS)
            return pe_err_set(err, PE_EINVAL, 0, "too many parameters");
        texts[n] = param_text(v);
        if (texts[n] == NULL) {
            for (size_t i = 0; i < n; i++)
                free(texts[i]);
            return pe_err_set(err, PE_EINVAL, 0, "parameter %s: not a string, integer or boolean",
                              key);
        }
        args[n] = (pe_xrpc_arg){key, texts[n]};
        n++;
    }
    if (pe__xrpc_params(m, args, n, params_out, msg, sizeof(msg)) < 0)
        rc = pe_err_set(err, PE_EINVAL, 0, "%s", msg);
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    if (rc < 0)
        return rc;
    if (m->input != NULL) {
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        rc = pe__xrpc_body(m, "application/json", text, text ? strlen(text) : 0, true, body_out,
                           msg, sizeof(msg));
        free(text);
        if (rc < 0) {
            json_decref(*params_out);
            *params_out = NULL;
            return pe_err_set(err, PE_EINVAL, 0, "%s", msg);
        }
    }
    return 0;
}

int pe_xrpc_call(pe_http_server *srv, const char *nsid, json_t *params, json_t *body,
                 const char *authorization, const char *client_addr, pe_xrpc_call_done done,
                 void *ud, pe_err *err)
{
    const pe_xrpc_method *m = pe__xrpc_lookup(nsid);
    const struct handler_slot *h;
    struct pe_xrpc_call *call;
    json_t *p = NULL, *b = NULL, *empty = NULL;

    if (m == NULL || srv->handlers[m - pe__xrpc_methods].fn == NULL)
        return pe_err_set(err, PE_ENOENT, 0, "%s: no such method here", nsid);
    h = &srv->handlers[m - pe__xrpc_methods];
    if (params == NULL)
        params = empty = json_object();
    if (call_input(m, params, body, &p, &b, err) < 0) {
        json_decref(empty);
        return pe_err_prefix(err, "%s", nsid);
    }
    json_decref(empty);
    call = pe_xcalloc(1, sizeof(*call));
    call->loop = srv->loop;
    call->done = done;
    call->ud = ud;
    call->authorization = authorization ? pe_xstrdup(authorization) : NULL;
    call->client_addr = pe_xstrdup(client_addr ? client_addr : "local");
    call->req = (pe_xrpc_request){
        .kind = m->kind,
        .nsid = m->nsid,
        .params = p,
        .body = b,
        .authorization = call->authorization,
        .client_addr = call->client_addr,
        .call = call,
    };
    h->fn(&call->req, h->ud);
    if (!call->answered && !call->deferred) { /* as server.c does for HTTP */
        pe_log_error("xrpc call: handler for %s returned without an answer", m->nsid);
        pe__xrpc_call_answer(call, NULL, 500, "InternalServerError", "Internal Server Error");
    }
    return 0;
}
