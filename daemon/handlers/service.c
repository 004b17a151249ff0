/* io.pocketenv.service.*: a sandbox's named long-running commands
 * (reference §1.9), and our io.pocketenv.service.getServiceLogs.
 *
 * A service is a row (name, command, description, ports) and, while its
 * sandbox runs, a unit of the supervisor (supervise.c) keyed by the
 * service's id: `/bin/sh -c COMMAND` run by the runtime inside the sandbox
 * (the sandbox's own shell, never the host's), with the sandbox's
 * variables and secrets, restarted on failure with a backoff, its output
 * in a 64 KiB ring that getServiceLogs reads.
 *
 * The row's status is what the owner asked for: RUNNING (addService,
 * startService, restartService) or STOPPED (stopService). Services asked
 * to run start with their sandbox, after its files and keys are in place,
 * and stop with it. The status a view shows is what the process does:
 * RUNNING, STOPPED, or FAILED with the exit code once the restart policy
 * gave up (exitCode is shown once a run has ended). `status` keeps
 * upstream's words, which its clients compare against; our `state` says
 * more: CRASHLOOP while it is being restarted after failures (status is
 * RUNNING then), with `lastError`, the end of what its last run wrote
 * (lexicons/README.md).
 *
 * Ports are recorded (sandbox_ports rows of the service); exposing them
 * belongs to the ports work (exposePort), not to this file.
 *
 * Threading: handlers on the loop thread; jobs on workers; starting and
 * stopping units is thread-safe (supervise.c). */
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "sandbox-find.h"
#include "sandbox-keys.h"
#include "sandbox-services.h"
#include "supervise.h"

#define NAME_MAX_LEN 63
#define COMMAND_MAX 8192
#define DESCRIPTION_MAX 1024
#define PORTS_MAX 16
#define PER_SANDBOX_MAX 16
#define NOT_FOUND "ServiceNotFound"

/* ---- checks (loop thread) ---- */

static int check_service(const json_t *o, pe_err *err)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *cmd = json_string_value(json_object_get(o, "command"));
    const char *desc = json_string_value(json_object_get(o, "description"));
    const json_t *ports = json_object_get(o, "ports"), *p;
    size_t n, i;

    if (name == NULL || cmd == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "service.name and service.command are required");
    n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN)
        return pe_err_set(err, PE_EINVAL, 0, "service name must be 1 to %d characters",
                          NAME_MAX_LEN);
    for (i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (i > 0 && (c == '-' || c == '_' || c == '.'))))
            return pe_err_set(err, PE_EINVAL, 0,
                              "service name must be letters, digits, '-', '_' and '.', starting "
                              "with a letter or digit");
    }
    n = strlen(cmd);
    if (n == 0 || n > COMMAND_MAX || n != json_string_length(json_object_get(o, "command")))
        return pe_err_set(err, PE_EINVAL, 0,
                          "service command must be 1 to %d bytes of text without NUL", COMMAND_MAX);
    if (desc && strlen(desc) > DESCRIPTION_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "service description longer than %d bytes",
                          DESCRIPTION_MAX);
    if (ports == NULL || json_is_null(ports))
        return 0;
    if (!json_is_array(ports) || json_array_size(ports) > PORTS_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "service ports must be at most %d ports", PORTS_MAX);
    json_array_foreach(ports, i, p)
    {
        json_int_t v = json_integer_value(p);
        if (!json_is_integer(p) || v < 1 || v > 65535)
            return pe_err_set(err, PE_EINVAL, 0, "service ports must be integers in 1..65535");
        for (size_t j = 0; j < i; j++)
            if (json_integer_value(json_array_get(ports, j)) == v)
                return pe_err_set(err, PE_EINVAL, 0, "service port %lld given twice", (long long)v);
    }
    return 0;
}

/* ---- views ---- */

/* Output as a JSON string; if it is not UTF-8, bytes past ASCII become
 * '?'. cut: it may start inside a UTF-8 sequence, skipped to the next. */
static json_t *printable(char *text, size_t len, bool cut)
{
    size_t skip = 0;
    json_t *str;

    while (cut && skip < len && ((unsigned char)text[skip] & 0xc0) == 0x80)
        skip++;
    str = json_stringn(text + skip, len - skip);
    if (str == NULL) {
        for (size_t i = skip; i < len; i++)
            if ((unsigned char)text[i] >= 0x80 || text[i] == '\0')
                text[i] = '?';
        str = json_stringn(text + skip, len - skip);
    }
    return str;
}

/* What a view says the service does: its status (upstream's words) and
 * our state, which tells a crash loop apart. */
static int service_status(const char *id, int sandbox_status, pe_unit_state *st, bool *known)
{
    *known = pe_daemon_unit_state(id, st);
    if (*known && sandbox_status == PE_STORE_RUNNING)
        return st->live ? PE_STORE_RUNNING : st->state;
    return PE_STORE_STOPPED;
}

static const char *state_name(int status, const pe_unit_state *st)
{
    return status == PE_STORE_RUNNING && st->crashloop ? "CRASHLOOP" : pe_store_status_name(status);
}

static json_t *view(pe_store *s, const pe_store_service *v, int sandbox_status)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "id", v->id, "sandboxId", v->sandbox_id, "name",
                          v->name, "command", v->command);
    json_t *ports = json_array();
    int64_t *p = NULL;
    size_t n = 0;
    pe_unit_state st;
    bool known;
    int status = service_status(v->id, sandbox_status, &st, &known);
    pe_err err;

    pe_err_clear(&err);
    pe_daemon_set_str(o, "description", v->description);
    if (pe_store_service_ports(s, v->id, &p, &n, &err) == 0)
        for (size_t i = 0; i < n; i++)
            json_array_append_new(ports, json_integer(p[i]));
    free(p);
    json_object_set_new(o, "ports", ports);
    json_object_set_new(o, "status", json_string(pe_store_status_name(status)));
    json_object_set_new(o, "state", json_string(state_name(status, &st)));
    if (known && (!st.live || st.ended))
        json_object_set_new(o, "exitCode", json_integer(st.exit_code));
    if (known && st.ended && st.last_words[0])
        json_object_set_new(o, "lastError", printable(st.last_words, strlen(st.last_words), true));
    json_object_set_new(o, "restarts", json_integer(known ? st.restarts : 0));
    pe_daemon_set_time(o, "createdAt", v->created_at);
    pe_daemon_set_time(o, "updatedAt", v->updated_at);
    return o;
}

/* ---- jobs ---- */

/* The caller's service and its sandbox. */
static bool lookup(pe_daemon_job *job, pe_store *s, pe_store_service *v, pe_store_sandbox *sb)
{
    if (pe_store_service_get(s, job->did, job->id, v, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
        return false;
    }
    if (pe_store_sandbox_get(s, v->sandbox_id, sb, &job->err) < 0) {
        pe_store_service_clear(v);
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
        return false;
    }
    return true;
}

static void reply(pe_daemon_job *job, pe_store *s, const char *id, int sandbox_status)
{
    pe_store_service v;

    if (pe_store_service_get(s, NULL, id, &v, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
        return;
    }
    job->out = json_pack("{s:o}", "service", view(s, &v, sandbox_status));
    pe_store_service_clear(&v);
}

static int set_ports(pe_daemon_job *job, pe_store *s, const char *sandbox_id, const char *id,
                     const char *name, const json_t *ports)
{
    int64_t p[PORTS_MAX];
    size_t n = json_array_size(ports);

    for (size_t i = 0; i < n && i < PORTS_MAX; i++)
        p[i] = json_integer_value(json_array_get(ports, i));
    return pe_store_service_set_ports(s, sandbox_id, id, name, p, n, &job->err);
}

static void add_work(pe_daemon_job *job, pe_store *s)
{
    const json_t *o = json_object_get(job->in, "service");
    const char *name = json_string_value(json_object_get(o, "name"));
    cleanup_free char *id = NULL;
    pe_store_service v;
    pe_store_sandbox sb;
    int64_t total = 0;
    size_t n = 0;
    pe_store_service *list = NULL;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    if (pe_store_service_list(s, sb.id, 1, 0, &list, &n, &total, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        goto out;
    }
    pe_store_service_list_free(list, n);
    if (total >= PER_SANDBOX_MAX) {
        pe_err_set(&job->err, PE_EINVAL, 0, "a sandbox has at most %d services", PER_SANDBOX_MAX);
        pe_daemon_job_fail(job, &job->err, NULL);
        goto out;
    }
    if (pe_store_service_add(s, sb.id, name, json_string_value(json_object_get(o, "command")),
                             json_string_value(json_object_get(o, "description")), PE_STORE_RUNNING,
                             &id, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        goto out;
    }
    if (set_ports(job, s, sb.id, id, name, json_object_get(o, "ports")) < 0) {
        pe_store_service_delete(s, id, NULL); /* all or nothing */
        pe_daemon_job_fail(job, &job->err, NULL);
        goto out;
    }
    if (sb.status == PE_STORE_RUNNING && pe_store_service_get(s, NULL, id, &v, &job->err) == 0) {
        if (pe_daemon_service_unit_start(job->d, &v, &job->err) < 0)
            pe_log_warn("sandbox %s: service %s not started: %s", sb.id, name, job->err.msg);
        pe_err_clear(&job->err);
        pe_store_service_clear(&v);
    }
    reply(job, s, id, sb.status);
out:
    pe_store_sandbox_clear(&sb);
}

static void list_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_service *list = NULL;
    pe_store_sandbox sb;
    int64_t total = 0;
    size_t n = 0;
    json_t *arr;

    if (!pe_daemon_job_sandbox(job, s, job->id, &sb))
        return;
    /* The lexicon has no limit/offset: every service (at most 16). */
    if (pe_store_service_list(s, sb.id, 1000, 0, &list, &n, &total, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, NULL);
        pe_store_sandbox_clear(&sb);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, view(s, &list[i], sb.status));
    job->out = json_pack("{s:o, s:I}", "services", arr, "total", (json_int_t)total);
    pe_store_service_list_free(list, n);
    pe_store_sandbox_clear(&sb);
}

enum { OP_START, OP_STOP, OP_RESTART };

static void control(pe_daemon_job *job, pe_store *s, int op)
{
    pe_store_service v;
    pe_store_sandbox sb;
    int want = op == OP_STOP ? PE_STORE_STOPPED : PE_STORE_RUNNING;

    if (!lookup(job, s, &v, &sb))
        return;
    if (op != OP_START)
        pe_daemon_unit_stop(v.id, PE_UNIT_STOP_TIMEOUT);
    if (pe_store_service_set_status(s, v.id, want, &job->err) < 0) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
    } else if (want == PE_STORE_RUNNING && sb.status != PE_STORE_RUNNING) {
        /* Recorded: it starts with the sandbox. */
        reply(job, s, v.id, sb.status);
    } else {
        if (want == PE_STORE_RUNNING && pe_daemon_service_unit_start(job->d, &v, &job->err) < 0)
            pe_daemon_job_fail(job, &job->err, NULL);
        else
            reply(job, s, v.id, sb.status);
    }
    pe_store_service_clear(&v);
    pe_store_sandbox_clear(&sb);
}

static void start_work(pe_daemon_job *job, pe_store *s)
{
    control(job, s, OP_START);
}

static void stop_work(pe_daemon_job *job, pe_store *s)
{
    control(job, s, OP_STOP);
}

static void restart_work(pe_daemon_job *job, pe_store *s)
{
    control(job, s, OP_RESTART);
}

static void update_work(pe_daemon_job *job, pe_store *s)
{
    const json_t *o = json_object_get(job->in, "service");
    const json_t *ports = json_object_get(o, "ports");
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *cmd = json_string_value(json_object_get(o, "command"));
    pe_unit_state st;
    pe_store_service v, nv;
    pe_store_sandbox sb;
    bool restart;

    if (!lookup(job, s, &v, &sb))
        return;
    restart = strcmp(v.command, cmd) != 0 && pe_daemon_unit_state(v.id, &st) && st.live;
    if (pe_store_service_update(s, v.id, name, cmd,
                                json_string_value(json_object_get(o, "description")),
                                &job->err) < 0 ||
        (ports && !json_is_null(ports) && set_ports(job, s, sb.id, v.id, name, ports) < 0)) {
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
        goto out;
    }
    /* A running service runs the new command from now on. */
    if (restart && pe_store_service_get(s, NULL, v.id, &nv, &job->err) == 0) {
        pe_daemon_unit_stop(v.id, PE_UNIT_STOP_TIMEOUT);
        if (pe_daemon_service_unit_start(job->d, &nv, &job->err) < 0)
            pe_log_warn("service %s not restarted: %s", v.id, job->err.msg);
        pe_err_clear(&job->err);
        pe_store_service_clear(&nv);
    }
    reply(job, s, v.id, sb.status);
out:
    pe_store_service_clear(&v);
    pe_store_sandbox_clear(&sb);
}

static void delete_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_service v;
    pe_store_sandbox sb;

    if (!lookup(job, s, &v, &sb))
        return;
    pe_daemon_unit_forget(v.id); /* the process first, then the row */
    if (pe_store_service_delete(s, v.id, &job->err) < 0)
        pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
    else
        job->out = json_object();
    pe_store_service_clear(&v);
    pe_store_sandbox_clear(&sb);
}

static void logs_work(pe_daemon_job *job, pe_store *s)
{
    pe_store_service v;
    pe_store_sandbox sb;
    size_t len = 0;
    bool cut = false;
    unsigned long long written = 0;
    pe_unit_state st;
    bool known;
    char *text;
    json_t *str;
    int status;

    if (!lookup(job, s, &v, &sb))
        return;
    status = service_status(v.id, sb.status, &st, &known);
    text = pe_daemon_unit_logs(v.id, &len, &cut, &written);
    str = text ? printable(text, len, cut) : json_string("");
    job->out = json_pack("{s:o, s:b, s:i, s:I, s:s}", "logs", str, "truncated", cut, "max",
                         PE_UNIT_LOG_MAX, "written", (json_int_t)written, "state",
                         state_name(status, &st));
    free(text);
    pe_store_service_clear(&v);
    pe_store_sandbox_clear(&sb);
}

/* ---- handlers ---- */

/* kind: stopping a service waits for it (up to its stop timeout), so
 * what may stop one is a lifecycle job, off the short pool. */
static void submit(pe_daemon *d, pe_xrpc_request *req, pe_daemon_work_fn work, const char *param,
                   bool with_service, int kind)
{
    cleanup_free char *did = pe_daemon_auth(d, req);
    const char *id = json_string_value(json_object_get(req->params, param));
    pe_daemon_job *job;
    pe_err err;

    if (did == NULL)
        return;
    pe_err_clear(&err);
    if (with_service && check_service(json_object_get(req->body, "service"), &err) < 0) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    job = pe_daemon_job_new(d, req, did, work);
    job->id = pe_xstrdup(id ? id : "");
    job->in = req->body ? json_deep_copy(req->body) : NULL;
    job->kind = kind;
    pe_daemon_job_submit(job);
}

#define HANDLER(fn, work, param, body, kind)                                                       \
    static void fn(pe_xrpc_request *req, void *ud)                                                 \
    {                                                                                              \
        submit(ud, req, work, param, body, kind);                                                  \
    }
HANDLER(add_service, add_work, "sandboxId", true, PE_JOB_LIFECYCLE)
HANDLER(get_services, list_work, "sandboxId", false, PE_JOB_SHORT)
HANDLER(start_service, start_work, "serviceId", false, PE_JOB_LIFECYCLE)
HANDLER(stop_service, stop_work, "serviceId", false, PE_JOB_LIFECYCLE)
HANDLER(restart_service, restart_work, "serviceId", false, PE_JOB_LIFECYCLE)
HANDLER(update_service, update_work, "serviceId", true, PE_JOB_LIFECYCLE)
HANDLER(delete_service, delete_work, "serviceId", false, PE_JOB_LIFECYCLE)
HANDLER(get_service_logs, logs_work, "serviceId", false, PE_JOB_SHORT)

/* ---- after a daemon restart ---- */

/* Sandboxes that kept running while no daemon was up: what an earlier
 * daemon supervised in them is killed (its output pipes are gone) and
 * started again, with keys and tailscale as at a start. */
static void adopt_one(pe_daemon_job *job, const pe_store_sandbox *sb)
{
    char *text = NULL;
    json_t *info;
    pid_t pid;
    int killed;

    if (sb->status != PE_STORE_RUNNING || !pe_daemon_is_mine(job->d, sb) ||
        pe_sandbox_inspect(&job->d->sx, sb->id, &text, &job->err) < 0) {
        pe_err_clear(&job->err);
        return;
    }
    info = json_loads(text, 0, NULL);
    free(text);
    pid = (pid_t)json_integer_value(json_object_get(info, "pid"));
    json_decref(info);
    if (pid <= 0)
        return;
    killed = pe_daemon_unit_kill_leftovers(pid);
    if (killed)
        pe_log_info("event=adopt sandbox=%s leftovers_killed=%d", sb->id, killed);
    pe_daemon_sandbox_started(job->d, sb);
}

static void adopt_work(pe_daemon_job *job, pe_store *s)
{
    for (int64_t offset = 0;;) {
        pe_store_sandbox *list = NULL;
        size_t n = 0;

        if (pe_store_sandbox_list(s, NULL, 1000, offset, &list, &n, NULL, &job->err) < 0) {
            pe_daemon_job_fail(job, &job->err, NULL);
            return;
        }
        for (size_t i = 0; i < n; i++)
            adopt_one(job, &list[i]);
        pe_store_sandbox_list_free(list, n);
        if (n < 1000)
            return;
        offset += (int64_t)n;
    }
}

int pe_daemon_register_services(pe_daemon *d, pe_err *err)
{
    static const struct {
        const char *nsid;
        pe_xrpc_handler fn;
    } routes[] = {
        {"io.pocketenv.service.addService", add_service},
        {"io.pocketenv.service.getServices", get_services},
        {"io.pocketenv.service.startService", start_service},
        {"io.pocketenv.service.stopService", stop_service},
        {"io.pocketenv.service.restartService", restart_service},
        {"io.pocketenv.service.updateService", update_service},
        {"io.pocketenv.service.deleteService", delete_service},
        {"io.pocketenv.service.getServiceLogs", get_service_logs},
    };
    pe_daemon_job *job;

    for (size_t i = 0; i < PE_ARRAY_LEN(routes); i++)
        if (pe_xrpc_register(d->srv, routes[i].nsid, routes[i].fn, d, err) < 0)
            return -1;
    job = pe_daemon_job_new(d, NULL, NULL, adopt_work);
    job->kind = PE_JOB_LIFECYCLE; /* stops and starts services: off the short pool */
    pe_daemon_job_submit(job);
    return 0;
}
