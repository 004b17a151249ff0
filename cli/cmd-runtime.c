/* pocketenv runtime ...: persistent local sandboxes, driven directly
 * through the runtime library (no daemon involved). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/util.h"
#include "runtime/cgroup.h"

static const pe_opt exec_opts[] = {
    {"tty", 't', false, OPT_TTY, NULL, "run on a terminal"},
    {"env", 'e', true, OPT_ENV, "K=V", "set an environment variable (repeatable)"},
    {"workdir", 'w', true, OPT_WORKDIR, "DIR", "working directory"},
    {"user", 'u', true, OPT_USER, "UID[:GID]", "run as this user"},
    {"timeout", 0, true, OPT_TIMEOUT, "S", "kill the command after S seconds (exit 124)"},
    {"help", 'h', false, OPT_HELP, NULL, "show this help"},
    {NULL, 0, false, 0, NULL, NULL},
};

static const pe_opt simple_opts[] = {
    {"timeout", 0, true, OPT_TIMEOUT, "S", "stop: seconds between SIGTERM and SIGKILL (10)"},
    {"json", 0, false, OPT_JSON, NULL, "ls/inspect: print JSON"},
    {"help", 'h', false, OPT_HELP, NULL, "show this help"},
    {NULL, 0, false, 0, NULL, NULL},
};

static void usage(void)
{
    printf("usage: pocketenv runtime COMMAND ...\n\n"
           "  create NAME [OPTIONS]        create a sandbox (see options below)\n"
           "  start NAME                   start it; it keeps running after this command\n"
           "  exec NAME [-t] [-e K=V] [-w DIR] [-u UID[:GID]] [--timeout S] -- CMD...\n"
           "  stop NAME [--timeout S]      SIGTERM, then SIGKILL after S seconds (10)\n"
           "  pause NAME | resume NAME     freeze / thaw every process\n"
           "  rm NAME                      remove (stopping it first)\n"
           "  ls [--json]                  list sandboxes\n"
           "  inspect NAME [--json]        show one sandbox\n"
           "  snapshot NAME                a read-only snapshot of its writable layer (JSON out)\n"
           "  snapshot-rm ID               remove a snapshot\n"
           "  create-from ID NAME [OPTS]   create a sandbox on snapshot ID's state\n"
           "  gc                           clean up after crashed commands\n"
           "  tune [favordynmods=on|off]   show or set the host's cgroup2 favordynmods\n"
           "                               option (removes a ~10 ms RCU wait from every\n"
           "                               sandbox start; host-wide, so never automatic)\n\n"
           "create options:\n");
    pe_opts_help(pe_sandbox_opts);
    printf("\nExample:\n  pocketenv runtime create box --image busybox --memory 256m\n"
           "  pocketenv runtime start box && pocketenv runtime exec box -- sh -c 'echo hi'\n");
}

struct simple_args {
    const char *name;
    double timeout;
    bool json, help, timeout_set;
    int npos;
};

static int on_simple(int id, const char *arg, void *ctx, pe_err *err)
{
    struct simple_args *a = ctx;
    switch (id) {
    case 0:
        if (a->npos++ > 0)
            return pe_err_set(err, PE_EINVAL, 0, "unexpected argument '%s'", arg);
        a->name = arg;
        return 0;
    case OPT_TIMEOUT:
        a->timeout_set = true;
        return pe_cli_parse_seconds(arg, &a->timeout, err);
    case OPT_JSON:
        a->json = true;
        return 0;
    default:
        a->help = true;
        return 0;
    }
}

static void print_table(const char *json)
{
    json_t *arr = json_loads(json, 0, NULL);
    size_t i;

    printf("%-24s %-9s %-16s %-8s %s\n", "NAME", "STATUS", "IMAGE", "PID", "CREATED");
    for (i = 0; arr && i < json_array_size(arr); i++) {
        json_t *o = json_array_get(arr, i);
        time_t t = (time_t)json_integer_value(json_object_get(o, "created"));
        char when[32];
        const char *image = json_string_value(json_object_get(o, "image"));
        struct tm tm;

        localtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        printf("%-24s %-9s %-16.16s %-8lld %s\n", json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "status")), image ? image : "",
               (long long)json_integer_value(json_object_get(o, "pid")), when);
    }
    json_decref(arr);
}

/* After start: where the published ports are, one line each. */
static void print_published(pe_runtime *rt, const char *name)
{
    char *text = NULL;
    json_t *o, *ports;
    pe_err err;

    if (pe_runtime_inspect(rt, name, &text, &err) < 0)
        return;
    o = json_loads(text, 0, NULL);
    free(text);
    ports = json_object_get(json_object_get(o, "network"), "ports");
    for (size_t i = 0; json_is_array(ports) && i < json_array_size(ports); i++) {
        json_t *p = json_array_get(ports, i);
        printf("published 127.0.0.1:%lld -> %s:%lld\n",
               (long long)json_integer_value(json_object_get(p, "host")), name,
               (long long)json_integer_value(json_object_get(p, "port")));
    }
    json_decref(o);
}

static int print_snapshot(pe_runtime *rt, const char *name, pe_err *err)
{
    pe_runtime_snapshot_info info;
    json_t *o;
    char *text;

    if (pe_runtime_snapshot(rt, name, &info, err) < 0)
        return -1;
    o = json_pack("{s:s, s:s, s:f, s:I, s:I}", "id", info.id, "image", info.image, "frozenMs",
                  info.frozen_ms, "sizeBytes", (json_int_t)info.size_bytes, "exclusiveBytes",
                  (json_int_t)info.exclusive_bytes);
    text = json_dumps(o, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(o);
    free(info.image);
    return 0;
}

static int cmd_create(pe_runtime *rt, int argc, char **argv, const char *snapshot, pe_err *err);
static int cmd_exec(pe_runtime *rt, int argc, char **argv, pe_err *err, int *code);

/* NAME (the one positional argument) and --help, common to create and exec. */
static int on_name_or_help(int id, const char *arg, pe_cli_sandbox *s, pe_err *err)
{
    if (id == OPT_HELP) {
        usage();
        exit(0);
    }
    if (s->cfg.name != NULL)
        return pe_err_set(err, PE_EINVAL, 0, "unexpected argument '%s'", arg);
    s->cfg.name = pe_xstrdup(arg);
    return 0;
}

static int on_create(int id, const char *arg, void *ctx, pe_err *err)
{
    pe_cli_sandbox *s = ctx;
    if (id == 0 || id == OPT_HELP)
        return on_name_or_help(id, arg, s, err);
    if (id == OPT_TTY || id == OPT_TIMEOUT)
        return pe_err_set(err, PE_EINVAL, 0, "this option belongs to 'exec', not 'create'");
    return pe_cli_sandbox_opt(id, arg, s, err);
}

static int cmd_create(pe_runtime *rt, int argc, char **argv, const char *snapshot, pe_err *err)
{
    pe_cli_sandbox s;
    int idx = 1, r;

    pe_cli_sandbox_init(&s);
    /* Persistent sandboxes are for work that needs the network (clone,
     * install, serve); one-shot `run` stays offline unless asked. */
    s.cfg.net = PE_NET_NAT;
    r = pe_opts_parse(pe_sandbox_opts, argc, argv, &idx, false, on_create, &s, err);
    if (r == 0 && s.cfg.name == NULL)
        r = pe_err_set(err, PE_EINVAL, 0, "create: missing NAME");
    if (r == 0)
        r = snapshot ? pe_runtime_create_from(rt, &s.cfg, snapshot, err)
                     : pe_runtime_create(rt, &s.cfg, err);
    if (r == 0)
        printf("%s\n", s.cfg.name);
    pe_cli_sandbox_clear(&s);
    return r;
}

static int on_exec(int id, const char *arg, void *ctx, pe_err *err)
{
    pe_cli_sandbox *s = ctx;
    if (id == 0 || id == OPT_HELP)
        return on_name_or_help(id, arg, s, err);
    if (id == OPT_ENV) {
        if (strchr(arg, '=') == NULL || arg[0] == '=')
            return pe_err_set(err, PE_EINVAL, 0, "environment must be KEY=VALUE: %s", arg);
        s->proc.env = pe_xrealloc(s->proc.env, (size_t)(s->n_env + 2) * sizeof(char *));
        s->proc.env[s->n_env++] = (char *)arg;
        s->proc.env[s->n_env] = NULL;
        return 0;
    }
    if (id == OPT_WORKDIR) {
        if (arg[0] != '/')
            return pe_err_set(err, PE_EINVAL, 0, "working directory must be absolute: %s", arg);
        s->proc.workdir = arg;
        return 0;
    }
    return pe_cli_sandbox_opt(id, arg, s, err);
}

static int cmd_exec(pe_runtime *rt, int argc, char **argv, pe_err *err, int *code)
{
    pe_cli_sandbox s;
    pe_proc_result res;
    int idx = 1, r;

    pe_cli_sandbox_init(&s);
    /* Options and NAME in any order, then CMD (after "--", or the first
     * word once NAME is known). */
    for (;;) {
        r = pe_opts_parse(exec_opts, argc, argv, &idx, true, on_exec, &s, err);
        if (r != 0 || idx >= argc || s.cfg.name != NULL || strcmp(argv[idx - 1], "--") == 0)
            break;
        s.cfg.name = pe_xstrdup(argv[idx++]);
    }
    if (r == 0 && s.cfg.name == NULL)
        r = pe_err_set(err, PE_EINVAL, 0, "exec: missing NAME");
    if (r == 0 && idx >= argc)
        r = pe_err_set(err, PE_EINVAL, 0, "exec: no command given (exec NAME -- CMD...)");
    if (r == 0) {
        s.proc.argv = argv + idx;
        r = pe_runtime_exec(rt, s.cfg.name, &s.proc, &res, err);
        if (r < 0 && err->code == PE_ENOEXEC)
            pe_err_prefix(err, "%s", argv[idx]);
        else if (r == 0 && res.timed_out) {
            fprintf(stderr, "pocketenv: exec: timed out after %gs\n", s.proc.timeout);
            *code = 124;
        } else if (r == 0)
            *code = res.exit_code;
    }
    pe_cli_sandbox_clear(&s);
    return r;
}

static int cmd_tune(int argc, char **argv, pe_err *err)
{
    int want = -1, r;

    if (argc > 2)
        return pe_err_set(err, PE_EINVAL, 0, "tune takes one setting");
    if (argc == 2) {
        if (strcmp(argv[1], "favordynmods=on") == 0)
            want = 1;
        else if (strcmp(argv[1], "favordynmods=off") == 0)
            want = 0;
        else
            return pe_err_set(err, PE_EINVAL, 0, "unknown setting '%s' (favordynmods=on|off)",
                              argv[1]);
    }
    r = pe_cgroup_favordynmods(want, err);
    if (r < 0)
        return -1;
    printf("favordynmods=%s\n", r ? "on" : "off");
    return 0;
}

int pe_cmd_runtime(int argc, char **argv)
{
    struct simple_args a;
    const char *sub;
    pe_runtime rt;
    pe_err err;
    char *json = NULL;
    int idx = 2, r = 0, code = 0;

    pe_err_clear(&err);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc < 2)
            fprintf(stderr, "pocketenv runtime: missing COMMAND (create, start, exec, ...)\n");
        usage();
        return argc < 2 ? 2 : 0;
    }
    sub = argv[1];
    if (pe_cli_open_runtime(&rt, &err) < 0)
        return pe_cli_fail(&err);
    if (strcmp(sub, "create") == 0) {
        r = cmd_create(&rt, argc - 1, argv + 1, NULL, &err);
        goto out;
    }
    if (strcmp(sub, "create-from") == 0) {
        if (argc < 3)
            r = pe_err_set(&err, PE_EINVAL, 0, "create-from: missing snapshot ID");
        else
            r = cmd_create(&rt, argc - 2, argv + 2, argv[2], &err);
        goto out;
    }
    if (strcmp(sub, "exec") == 0) {
        r = cmd_exec(&rt, argc - 1, argv + 1, &err, &code);
        goto out;
    }
    if (strcmp(sub, "tune") == 0) {
        r = cmd_tune(argc - 1, argv + 1, &err);
        goto out;
    }
    memset(&a, 0, sizeof(a));
    a.timeout = 10;
    r = pe_opts_parse(simple_opts, argc, argv, &idx, false, on_simple, &a, &err);
    if (r < 0)
        goto out;
    if (a.help) {
        usage();
        goto out;
    }
    if (strcmp(sub, "ls") == 0 || strcmp(sub, "gc") == 0) {
        if (a.name != NULL) {
            r = pe_err_set(&err, PE_EINVAL, 0, "%s takes no NAME", sub);
            goto out;
        }
    } else if (a.name == NULL) {
        r = pe_err_set(&err, PE_EINVAL, 0, "%s: missing NAME", sub);
        goto out;
    }
    if (strcmp(sub, "start") == 0) {
        r = pe_runtime_start(&rt, a.name, &err);
        if (r == 0)
            print_published(&rt, a.name);
    } else if (strcmp(sub, "stop") == 0)
        r = pe_runtime_stop(&rt, a.name, a.timeout, &err);
    else if (strcmp(sub, "pause") == 0)
        r = pe_runtime_pause(&rt, a.name, &err);
    else if (strcmp(sub, "resume") == 0)
        r = pe_runtime_resume(&rt, a.name, &err);
    else if (strcmp(sub, "rm") == 0)
        r = pe_runtime_remove(&rt, a.name, &err);
    else if (strcmp(sub, "gc") == 0)
        r = pe_runtime_gc(&rt, &err);
    else if (strcmp(sub, "snapshot") == 0)
        r = print_snapshot(&rt, a.name, &err);
    else if (strcmp(sub, "snapshot-rm") == 0)
        r = pe_runtime_snapshot_remove(&rt, a.name, &err);
    else if (strcmp(sub, "inspect") == 0) {
        r = pe_runtime_inspect(&rt, a.name, &json, &err);
        if (r == 0)
            printf("%s\n", json);
    } else if (strcmp(sub, "ls") == 0) {
        r = pe_runtime_list(&rt, &json, &err);
        if (r == 0 && a.json)
            printf("%s\n", json);
        else if (r == 0)
            print_table(json);
    } else {
        r = pe_err_set(&err, PE_EINVAL, 0, "unknown runtime command '%s'", sub);
    }
out:
    free(json);
    pe_runtime_close(&rt);
    if (r < 0)
        return pe_cli_fail(&err);
    return code;
}
