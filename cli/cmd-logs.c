/* pocketenv logs [-f] SANDBOX|SERVICE_ID: what services print, as docker
 * logs shows a container's output.
 *
 * A sandbox's output is its services' (a sandbox has no main process of
 * its own: `run -d` makes its command the service "main"); with several,
 * each line is prefixed with "NAME | ". A service is named by its id
 * (`service ls`). The daemon keeps the newest 64 KiB of each service
 * (getServiceLogs, ours); -f polls it and prints what was written since,
 * counted by the answer's `written`, until Ctrl-C or until what it follows
 * has ended: the service STOPPED or FAILED, every service of the sandbox
 * so, or the sandbox gone. Exit 0, 1 if the daemon refused or is not
 * there, 2 for bad arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"

#define EXIT_API 1
#define POLL_US (300 * 1000)
#define MAX_FOLLOWED 64 /* a sandbox has at most 16 services */

typedef struct followed {
    char *id;
    unsigned long long written; /* what the last answer said */
    bool seen;                  /* printed once already */
    bool line_start;            /* the next byte printed starts a line */
} followed;

typedef struct logs_state {
    pe_api api;
    followed f[MAX_FOLLOWED];
    size_t n;
} logs_state;

#define USAGE "logs [-f] SANDBOX|SERVICE_ID"

static followed *slot(logs_state *st, const char *id)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->f[i].id, id) == 0)
            return &st->f[i];
    if (st->n == MAX_FOLLOWED)
        return NULL;
    st->f[st->n] = (followed){pe_xstrdup(id), 0, false, true};
    return &st->f[st->n++];
}

/* text[0..len) on stdout, each line after prefix (if any). */
static void print_lines(followed *f, const char *prefix, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (prefix && f->line_start)
            printf("%s | ", prefix);
        putchar(text[i]);
        f->line_start = text[i] == '\n';
    }
    fflush(stdout);
}

/* Print what service id wrote since the last call. *state: its state
 * (RUNNING, CRASHLOOP, STOPPED, FAILED), "" if the daemon does not say.
 * 0; 1 if there is no such service (nothing said); -1 after saying why
 * on stderr. */
static int print_new(logs_state *st, const char *id, const char *prefix, char *state, size_t size)
{
    json_t *params = json_pack("{s:s}", "serviceId", id), *out = NULL, *logs;
    followed *f = slot(st, id);
    unsigned long long written;
    size_t len, from = 0;
    pe_err err;
    int r;

    pe_err_clear(&err);
    r = pe_api_call(&st->api, "io.pocketenv.service.getServiceLogs", params, NULL, &out, &err);
    json_decref(params);
    if (r < 0 && strcmp(st->api.error_name, "ServiceNotFound") == 0)
        return 1;
    if (r < 0 || f == NULL) {
        fprintf(stderr, "pocketenv: %s\n", f ? err.msg : "too many services to follow");
        json_decref(out);
        return -1;
    }
    logs = json_object_get(out, "logs");
    len = json_string_length(logs);
    written = (unsigned long long)json_integer_value(json_object_get(out, "written"));
    /* Only the new bytes, unless this is the first look, the daemon
     * restarted (written went back) or more came than the ring holds. */
    if (f->seen && written >= f->written && written - f->written <= len)
        from = len - (size_t)(written - f->written);
    print_lines(f, prefix, (json_string_value(logs) ?: "") + from, len - from);
    f->seen = true;
    f->written = written;
    snprintf(state, size, "%s", json_string_value(json_object_get(out, "state")) ?: "");
    json_decref(out);
    return 0;
}

static bool ended(const char *state)
{
    return strcmp(state, "STOPPED") == 0 || strcmp(state, "FAILED") == 0;
}

/* One round over a sandbox's services. *done: every one has ended (or
 * there are none). 0; 1 if name is no sandbox; -1 on another error. */
static int sandbox_round(logs_state *st, const char *name, bool *done)
{
    json_t *params = json_pack("{s:s}", "sandboxId", name), *out = NULL, *svc, *list;
    pe_err err;
    size_t i;
    int r;

    pe_err_clear(&err);
    *done = true;
    r = pe_api_call(&st->api, "io.pocketenv.service.getServices", params, NULL, &out, &err);
    json_decref(params);
    if (r < 0) {
        bool missing = strcmp(st->api.error_name, "SandboxNotFound") == 0;
        if (!missing)
            fprintf(stderr, "pocketenv: %s\n", err.msg);
        return missing ? 1 : -1;
    }
    list = json_object_get(out, "services");
    json_array_foreach(list, i, svc)
    {
        char state[32];
        const char *prefix = json_array_size(list) > 1 ? pe_cli_str(svc, "name") : NULL;
        r = print_new(st, pe_cli_str(svc, "id"), prefix, state, sizeof(state));
        if (r < 0) {
            json_decref(out);
            return -1;
        }
        *done = *done && (r == 1 || ended(state)); /* 1: deleted meanwhile */
    }
    if (json_array_size(list) == 0 && !st->n)
        fprintf(stderr, "pocketenv: sandbox %s has no services: logs shows what they print\n",
                name);
    json_decref(out);
    return 0;
}

static int logs(logs_state *st, const char *target, bool follow)
{
    bool is_sandbox = true, done = false;
    char state[32];

    for (bool first = true;; first = false) {
        int r = is_sandbox ? sandbox_round(st, target, &done) : 0;
        if (r == 1 && first) {
            is_sandbox = false; /* not a sandbox: a service id? */
        } else if (r == 1) {
            return 0; /* the sandbox is gone */
        } else if (r < 0) {
            return EXIT_API;
        }
        if (!is_sandbox) {
            r = print_new(st, target, NULL, state, sizeof(state));
            if (r == 1 && first)
                fprintf(stderr, "pocketenv: no sandbox or service %s\n", target);
            if (r != 0)
                return r == 1 && !first ? 0 : EXIT_API; /* later: it was deleted */
            done = ended(state);
        }
        if (!follow || done || (is_sandbox && st->n == 0))
            return 0;
        usleep(POLL_US);
    }
}

int pe_cmd_logs(int argc, char **argv)
{
    const char *target = NULL;
    bool follow = false;
    logs_state st;
    pe_err err;
    int r;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0)
            follow = true;
        else if (argv[i][0] == '-' && argv[i][1] != '\0')
            return pe_cli_why("unknown option %s", argv[i]), pe_cli_usage(USAGE);
        else if (target != NULL)
            return pe_cli_why("unexpected argument '%s'", argv[i]), pe_cli_usage(USAGE);
        else
            target = argv[i];
    }
    if (target == NULL)
        return pe_cli_why("missing SANDBOX or SERVICE_ID"), pe_cli_usage(USAGE);
    memset(&st, 0, sizeof(st));
    pe_err_clear(&err);
    if (pe_api_open(&st.api, true, &err) < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_API;
    }
    r = logs(&st, target, follow);
    pe_api_close(&st.api);
    for (size_t i = 0; i < st.n; i++)
        free(st.f[i].id);
    return r;
}
