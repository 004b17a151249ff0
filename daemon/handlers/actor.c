/* io.pocketenv.actor.*: the caller's profile and sandbox listing.
 *
 * Every method needs a valid API token. A caller only ever sees itself: a
 * profile or listing asked for another DID or handle answers as if that
 * actor had nothing (NotFound / an empty page), so nothing about other
 * users leaks (upstream lists anyone's sandboxes without auth, §9.2). */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "cluster.h"
#include "daemon.h"
#include "oauth.h"

#define LIST_DEFAULT 30
#define LIST_MAX 100
#define LIST_SCAN_MAX 1000 /* newest rows an isRunning filter scans (the store's page max) */

/* Is `who` (a DID or handle from the parameters; NULL = self) the caller? */
static bool is_self(const char *who, const pe_store_user *u)
{
    return who == NULL || strcmp(who, u->did) == 0 || (u->handle && strcmp(who, u->handle) == 0);
}

/* The profile a client shows. Every field upstream's lexicon has that we
 * know is there: upstream's whoami prints "@handle (displayName)", and a
 * user here rarely has a display name (none until AT Protocol profiles
 * are read), so it falls back to the handle, or to the DID where the handle
 * is atproto's "unknown" marker: always something true about who this is.
 * id is the DID, the user's key in our store. */
static json_t *profile_view(const pe_store_user *u)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", u->did, "did", u->did, "handle", u->handle);
    const char *shown = u->display_name && *u->display_name        ? u->display_name
                        : strcmp(u->handle, "handle.invalid") != 0 ? u->handle
                                                                   : u->did;

    json_object_set_new(o, "displayName", json_string(shown));
    if (u->avatar)
        json_object_set_new(o, "avatar", json_string(u->avatar));
    pe_daemon_set_time(o, "createdAt", u->created_at);
    pe_daemon_set_time(o, "updatedAt", u->updated_at);
    return o;
}

/* A user signed in with AT Protocol: their profile as their repository
 * has it, read again when the copy is older than this. */
#define PROFILE_TTL_MS (10 * 60 * 1000)

static void profile_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_user u;

    if (pe_daemon_user_ensure(s, job->did, &u, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (pe_store_now_ms() - u.updated_at > PROFILE_TTL_MS &&
        pe_daemon_oauth_signed_in(job->d, job->did)) {
        pe_err e;
        pe_err_clear(&e);
        /* A PDS that does not answer leaves the last copy in place. */
        if (pe_daemon_oauth_profile_sync(job->d, s, job->did, NULL, &e) < 0)
            pe_log_warn("profile of %s: %s", job->did, e.msg);
        pe_store_user_clear(&u);
        if (pe_store_user_get(s, job->did, &u, &job->err) < 0) {
            pe_daemon_job_fail(job, &job->err, NULL);
            return;
        }
    }
    if (is_self(job->id, &u))
        job->out = profile_view(&u);
    else
        pe_daemon_job_fail(job, &(pe_err){.code = PE_ENOENT, .msg = "profile not found"},
                           "ProfileNotFound");
    pe_store_user_clear(&u);
}

static void get_profile(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *who = json_string_value(json_object_get(req->params, "did"));
    pe_daemon_job *job;

    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, profile_work);
    job->id = who ? pe_xstrdup(who) : NULL;
    pe_daemon_job_submit(job);
}

/* job->in: {limit, offset, isRunning?} */
static void list_work(pe_daemon_job *job, pe_store *s)
{
    json_int_t limit = json_integer_value(json_object_get(job->in, "limit"));
    json_int_t offset = json_integer_value(json_object_get(job->in, "offset"));
    json_t *running = json_object_get(job->in, "isRunning");
    json_t *arr = json_array();
    pe_store_sandbox *list = NULL;
    pe_store_user u;
    int64_t total = 0;
    size_t n = 0;

    job->out = json_pack("{s:o, s:I}", "sandboxes", arr, "total", (json_int_t)0);
    if (pe_daemon_user_ensure(s, job->did, &u, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (!is_self(job->id, &u)) {
        pe_store_user_clear(&u);
        return; /* someone else's: nothing to see */
    }
    pe_store_user_clear(&u);
    if (running == NULL) {
        if (pe_store_sandbox_list(s, job->did, limit, offset, &list, &n, &total, &job->err) < 0) {
            pe_daemon_job_fail(job, &job->err, NULL);
            return;
        }
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, pe_daemon_cluster_view(job->d, s, &list[i]));
    } else {
        /* upstream: true = RUNNING, false = STOPPED. The store pages by
         * owner only, so filter a bounded scan here. */
        int want = json_is_true(running) ? PE_STORE_RUNNING : PE_STORE_STOPPED;
        if (pe_store_sandbox_list(s, job->did, LIST_SCAN_MAX, 0, &list, &n, NULL, &job->err) < 0) {
            pe_daemon_job_fail(job, &job->err, NULL);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (list[i].status != want)
                continue;
            if (total >= offset && total < offset + limit)
                json_array_append_new(arr, pe_daemon_cluster_view(job->d, s, &list[i]));
            total++;
        }
    }
    pe_store_sandbox_list_free(list, n);
    json_object_set_new(job->out, "total", json_integer(total));
}

static void get_actor_sandboxes(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    json_t *limit = json_object_get(req->params, "limit");
    json_t *offset = json_object_get(req->params, "offset");
    json_t *running = json_object_get(req->params, "isRunning");
    json_int_t l = limit ? json_integer_value(limit) : LIST_DEFAULT;
    pe_daemon_job *job;

    if (did == NULL)
        return;
    job = pe_daemon_job_new(d, req, did, list_work);
    job->id = pe_xstrdup(json_string_value(json_object_get(req->params, "did")));
    job->in = json_pack("{s:I, s:I}", "limit", l > LIST_MAX ? (json_int_t)LIST_MAX : l, "offset",
                        offset ? json_integer_value(offset) : (json_int_t)0);
    if (running)
        json_object_set_new(job->in, "isRunning", json_boolean(json_is_true(running)));
    pe_daemon_job_submit(job);
}

/* A short-lived token for terminals only (the ?t= of the terminal
 * WebSocket). Unlike upstream's, it expires and cannot call the API. */
static void get_terminal_token(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;
    cleanup_free char *did = pe_daemon_auth(d, req);
    char *jwt = NULL;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (pe_auth_token_mint(d->auth, did, PE_DAEMON_TERMINAL_TOKEN_TTL, PE_AUTH_SCOPE_TERMINAL, &jwt,
                           &err) < 0) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_xrpc_respond(req, json_pack("{s:s}", "token", jwt));
    free(jwt);
}

/* The sealing key, for anyone: it is public, and a client needs it before
 * it can send its first secret. */
static void get_public_key(pe_xrpc_request *req, void *ud)
{
    pe_daemon *d = ud;

    pe_xrpc_respond(req, json_pack("{s:s}", "publicKey", pe_auth_public_key_hex(d->auth)));
}

/* POST /login {handle, cli}: upstream's CLI starts an AT Protocol OAuth
 * sign-in here (reference §1.11): daemon/oauth.c serves it. A daemon
 * without the sign-in routes says how a token is had instead, rather than
 * a bare 404/405. */
static void on_login(pe_http_request *req, void *ud)
{
    if (strcmp(req->path, "/login") != 0) {
        pe_http_respond_error(req, 404, "NotFound", "Not Found");
        return;
    }
    if (strcmp(req->method, "POST") == 0 && pe_daemon_oauth_upstream_login(ud, req))
        return;
    pe_http_respond_error(
        req, 501, "MethodNotImplemented",
        "signing in with a handle is not available on this daemon yet: on the daemon's "
        "machine, the owner's token is in ~/.pocketenv/token.json (written by pocketenv serve), "
        "and `pocketenv token create --did DID` makes one for another user; use it with "
        "POCKETENV_TOKEN=TOKEN or `pocketenv login --token TOKEN`");
}

int pe_daemon_register_actor(pe_daemon *d, pe_err *err)
{
    if (pe_http_route(d->srv, "/login", 0, on_login, d, err) < 0)
        return -1;
    if (pe_xrpc_register(d->srv, "io.pocketenv.actor.getProfile", get_profile, d, err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.actor.getActorSandboxes", get_actor_sandboxes, d,
                         err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.actor.getTerminalToken", get_terminal_token, d,
                         err) < 0 ||
        pe_xrpc_register(d->srv, "io.pocketenv.server.getPublicKey", get_public_key, d, err) < 0)
        return -1;
    return 0;
}
