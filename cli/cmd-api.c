/* The API commands: login, logout, whoami, create, start, stop, rm, ls, ps,
 * exec. Each is a client of the daemon (api.h), as upstream's CLI is
 * (reference §6.2): same names, aliases, arguments and messages, with
 * these differences, all for a local daemon:
 *   - login takes a token (--token, or the daemon's token file), or a
 *     handle: AT Protocol sign-in through the daemon's /oauth/ routes
 *     (cmd-login.c), not upstream's POST /login;
 *   - create's default base is "debian", and its provider is left to the
 *     daemon (which records upstream's default, cloudflare); ls and ps
 *     show the backend that really runs each sandbox beside its provider;
 *   - exec writes the command's output exactly as it came (no newline
 *     added) and exits with the command's exit code.
 * Exit codes: 0, the remote command's for exec, 1 for an API error (as
 * upstream), 2 for a usage error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"
#include "pocketenv/auth.h"

#define EXIT_API 1
#define EXIT_USAGE 2

static bool color_on(void)
{
    const char *nc = getenv("NO_COLOR");
    return isatty(1) && !(nc && *nc);
}

static const char *c_ok(void)
{
    return color_on() ? "\033[38;2;0;232;198m" : "";
}
static const char *c_hi(void)
{
    return color_on() ? "\033[38;2;100;232;130m" : "";
}
static const char *c_off(void)
{
    return color_on() ? "\033[0m" : "";
}

static int fail(const pe_err *err)
{
    fprintf(stderr, "pocketenv: %s\n", err->msg[0] ? err->msg : "failed");
    return err->code == PE_EINVAL ? EXIT_USAGE : EXIT_API;
}

static int usage_error(const char *text)
{
    fprintf(stderr, "pocketenv: %s\n", text);
    return EXIT_USAGE;
}

/* ---- login, logout, whoami ---- */

static int whoami_with(pe_api *a)
{
    json_t *prof = NULL;
    pe_err err;
    int r;

    pe_err_clear(&err);
    r = pe_api_call(a, "io.pocketenv.actor.getProfile", NULL, NULL, &prof, &err);
    if (r < 0)
        return fail(&err);
    if (pe_cli_json) {
        pe_cli_print_json(prof);
        json_decref(prof);
        return 0;
    }
    const char *dn = json_string_value(json_object_get(prof, "displayName"));
    printf("You are logged in as %s@%s%s", c_ok(), pe_cli_str(prof, "handle"), c_off());
    if (dn && *dn)
        printf(" (%s)", dn);
    printf(".\n");
    json_decref(prof);
    return 0;
}

static int cmd_login(int argc, char **argv)
{
    const char *token = NULL;
    cleanup_free char *path = pe_api_token_path();
    pe_api a;
    pe_err err;
    int r;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
            token = argv[++i];
        else if (strncmp(argv[i], "--token=", 8) == 0)
            token = argv[i] + 8;
        else if (argv[i][0] != '-' && i + 1 == argc && token == NULL)
            return pe_cmd_login_handle(argv[i]);
        else if (argv[i][0] != '-')
            return usage_error("login takes one handle, or --token TOKEN");
        else if (strcmp(argv[i], "--token") == 0)
            return pe_cli_why("--token needs a value"), pe_cli_usage("login [--token TOKEN]");
        else
            return pe_cli_why("unknown option %s", argv[i]), pe_cli_usage("login [--token TOKEN]");
    }
    pe_err_clear(&err);
    if (path == NULL)
        return usage_error("HOME is not set: nowhere to keep the token");
    if (token != NULL)
        setenv("POCKETENV_TOKEN", token, 1); /* check it before keeping it */
    if (pe_api_open(&a, true, &err) < 0)
        return fail(&err);
    r = whoami_with(&a);
    pe_api_close(&a);
    if (r != 0 || token == NULL)
        return r;
    if (pe_auth_write_token_file(path, token, &err) < 0)
        return fail(&err);
    printf("%sLogin successful!%s Token saved in %s\n", c_ok(), c_off(), path);
    return 0;
}

static int cmd_logout(int argc, char **argv)
{
    cleanup_free char *path = pe_api_token_path();
    pe_api a;
    pe_err err;

    /* Signed in with a handle: the daemon revokes the PDS session and our
     * tokens; a local token (or no daemon) is only forgotten here. */
    pe_err_clear(&err);
    if (pe_api_open(&a, false, &err) == 0) {
        if (a.token != NULL && pe_cmd_logout_remote(a.url, a.token) == 1)
            printf("Signed out: the daemon revoked your AT Protocol session and tokens.\n");
        pe_api_close(&a);
    }
    if (path && unlink(path) < 0 && errno != ENOENT) {
        fprintf(stderr, "pocketenv: remove %s: %s\n", path, strerror(errno));
        return EXIT_API;
    }
    printf("Logged out successfully\n");
    return 0;
}

static int cmd_whoami(int argc, char **argv)
{
    pe_api a;
    pe_err err;
    int r;

    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0)
        return fail(&err);
    r = whoami_with(&a);
    pe_api_close(&a);
    return r;
}

/* ---- create, start, stop, rm ---- */

enum {
    O_BASE = 1,
    O_PROVIDER,
    O_REPO,
    O_SSH,
    O_KEEP_ALIVE,
    O_NO_WAIT,
    O_VCPUS,
    O_MEMORY,
    O_DISK,
    O_ON_IDLE,
    O_IDLE_AFTER,
};

static const pe_opt create_opts[] = {
    {"base", 'b', true, O_BASE, "BASE", "template (image) to start from (debian)"},
    {"provider", 'p', true, O_PROVIDER, "NAME", "upstream provider name (the daemon's default)"},
    {"repo", 'r', true, O_REPO, "REPO", "git repository to clone in it (URL or github:o/r)"},
    {"keep-alive", 'k', false, O_KEEP_ALIVE, NULL, "never stop it for being idle"},
    {"ssh", 's', false, O_SSH, NULL, "open a terminal in it once it runs"},
    {"no-wait", 0, false, O_NO_WAIT, NULL, "answer at once, not when it runs"},
    {"vcpus", 0, true, O_VCPUS, "N", "CPUs it may use (the daemon's default, 2)"},
    {"memory", 0, true, O_MEMORY, "GB", "memory it may use, in GB (the daemon's default, 4)"},
    {"disk", 0, true, O_DISK, "GB", "disk it may use, in GB (the daemon's default, 10)"},
    {"on-idle", 0, true, O_ON_IDLE, "ACTION", "stop, pause or snapshot-then-stop when idle (stop)"},
    {"idle-after", 0, true, O_IDLE_AFTER, "SECONDS", "idle time before that (the daemon's)"},
    {NULL, 0, false, 0, NULL, NULL},
};

struct create_args {
    const char *name, *base, *provider, *repo, *on_idle;
    bool ssh, keep_alive, no_wait;
    long long vcpus, memory, disk; /* 0: the daemon's default */
    long long idle_after;          /* 0: the daemon's --idle-timeout */
};

/* A whole number of 1 or more, for --vcpus, --memory and --disk. */
static int positive(const char *opt, const char *arg, long long *out, pe_err *err)
{
    char *end;

    errno = 0;
    *out = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || *out < 1)
        return pe_err_set(err, PE_EINVAL, 0, "--%s: a whole number of 1 or more, not '%s'", opt,
                          arg);
    return 0;
}

static int on_create_opt(int id, const char *arg, void *ctx, pe_err *err)
{
    struct create_args *c = ctx;

    switch (id) {
    case 0:
        if (c->name)
            return pe_err_set(err, PE_EINVAL, 0, "unexpected argument '%s'", arg);
        c->name = arg;
        return 0;
    case O_BASE:
        c->base = arg;
        return 0;
    case O_PROVIDER:
        c->provider = arg;
        return 0;
    case O_REPO:
        c->repo = arg;
        return 0;
    case O_SSH:
        c->ssh = true;
        return 0;
    case O_NO_WAIT:
        c->no_wait = true;
        return 0;
    case O_VCPUS:
        return positive("vcpus", arg, &c->vcpus, err);
    case O_MEMORY:
        return positive("memory", arg, &c->memory, err);
    case O_DISK:
        return positive("disk", arg, &c->disk, err);
    case O_ON_IDLE: /* the daemon names the actions it takes */
        c->on_idle = arg;
        return 0;
    case O_IDLE_AFTER:
        return positive("idle-after", arg, &c->idle_after, err);
    default:
        c->keep_alive = true;
        return 0;
    }
}

static int parse_create(int argc, char **argv, struct create_args *c)
{
    pe_err err;
    int idx = 1;

    pe_err_clear(&err);
    if (pe_opts_parse(create_opts, argc, argv, &idx, false, on_create_opt, c, &err) < 0)
        return fail(&err);
    return 0;
}

/* --ssh: once it runs, a terminal in it. */
static int then_console(const char *name)
{
    char *args[] = {(char *)"console", (char *)name, NULL};
    int r = pe_cli_wait_running(name);

    return r != 0 ? r : pe_cmd_console(2, args);
}

static int cmd_create(int argc, char **argv)
{
    struct create_args c = {0};
    json_t *body, *out = NULL;
    pe_api a;
    pe_err err;
    int r;

    r = parse_create(argc, argv, &c);
    if (r != 0)
        return r;
    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0)
        return fail(&err);
    body = json_pack("{s:s}", "base", c.base ? c.base : "debian");
    /* "local" is a backend, not a provider name (the lexicon's enum has
     * none such): older versions of this CLI took it for "the default". */
    if (c.provider && strcmp(c.provider, "local") != 0)
        json_object_set_new(body, "provider", json_string(c.provider));
    if (c.name)
        json_object_set_new(body, "name", json_string(c.name));
    if (c.repo)
        json_object_set_new(body, "repo", json_string(c.repo));
    if (c.keep_alive)
        json_object_set_new(body, "keepAlive", json_true());
    if (c.vcpus)
        json_object_set_new(body, "vcpus", json_integer(c.vcpus));
    if (c.memory)
        json_object_set_new(body, "memory", json_integer(c.memory));
    if (c.disk)
        json_object_set_new(body, "disk", json_integer(c.disk));
    if (c.on_idle || c.idle_after)
        json_object_set_new(body, "idlePolicy",
                            json_pack("{s:s, s:I}", "action", c.on_idle ? c.on_idle : "stop",
                                      "timeout", (json_int_t)c.idle_after));
    r = pe_api_call(&a, "io.pocketenv.sandbox.createSandbox", NULL, body, &out, &err);
    json_decref(body);
    pe_api_close(&a);
    if (r < 0)
        return fail(&err);
    /* Said only once it runs (unless --no-wait): a create that fails is
     * never "created successfully". */
    r = c.no_wait || c.ssh ? 0 : pe_cli_wait_running(pe_cli_str(out, "name"));
    if (r == 0 && pe_cli_json)
        pe_cli_print_json(out);
    else if (r == 0)
        printf("%sSandbox created successfully:%s %s\n", c_ok(), c_off(), pe_cli_str(out, "name"));
    fflush(stdout);
    if (r == 0 && c.ssh) {
        cleanup_free char *name = pe_xstrdup(pe_cli_str(out, "name"));
        json_decref(out);
        return then_console(name);
    }
    json_decref(out);
    return r;
}

/* Call a by-id procedure on the sandbox named on the command line. */
static int by_id(const char *usage, const char *nsid, int argc, char **argv, json_t *body,
                 const char *done)
{
    json_t *params, *out = NULL, *empty = body ? NULL : json_object();
    pe_api a;
    pe_err err;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX", 1, 1)) {
        json_decref(empty);
        return pe_cli_usage(usage);
    }
    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0) {
        json_decref(empty);
        return fail(&err);
    }
    params = json_pack("{s:s}", "id", argv[1]);
    r = pe_api_call(&a, nsid, params, body ? body : empty, &out, &err);
    json_decref(empty);
    json_decref(params);
    if (r < 0 && strcmp(a.error_name, "SandboxNotFound") == 0)
        pe_err_set(&err, PE_API_EHTTP, 0, "sandbox %s not found", argv[1]);
    pe_api_close(&a);
    json_decref(out);
    if (r < 0)
        return fail(&err);
    printf("%sSandbox %s %s%s\n", c_ok(), argv[1], done, c_off());
    return 0;
}

static int cmd_start(int argc, char **argv)
{
    struct create_args c = {0};
    json_t *body;
    char *args[2];
    int r;

    r = parse_create(argc, argv, &c);
    if (r != 0)
        return r;
    if (c.name == NULL || c.base || c.provider || c.vcpus || c.memory || c.disk) {
        if (c.name == NULL)
            pe_cli_why("missing SANDBOX");
        else
            pe_cli_why("start takes no --base, --provider, --vcpus, --memory or --disk "
                       "(they are create's)");
        return pe_cli_usage("start SANDBOX [-r REPO] [-k] [-s] [--no-wait]");
    }
    body = json_object();
    if (c.repo)
        json_object_set_new(body, "repo", json_string(c.repo));
    if (c.keep_alive)
        json_object_set_new(body, "keepAlive", json_true());
    args[0] = argv[0];
    args[1] = (char *)c.name;
    r = by_id("start SANDBOX [-r REPO] [-k] [-s] [--no-wait]", "io.pocketenv.sandbox.startSandbox",
              2, args, body, "started");
    json_decref(body);
    fflush(stdout);
    if (r == 0 && c.ssh)
        return then_console(c.name);
    if (r == 0 && !c.no_wait)
        r = pe_cli_wait_running(c.name);
    if (r == 0)
        printf("Run `pocketenv console %s` to open a terminal in it.\n", c.name);
    return r;
}

static int cmd_stop(int argc, char **argv)
{
    return by_id("stop SANDBOX", "io.pocketenv.sandbox.stopSandbox", argc, argv, NULL, "stopped");
}

/* rm [-f] SANDBOX...: every one named, as docker rm; -f is accepted as
 * docker's (a running sandbox is stopped and deleted either way). A name
 * that is not found is said and the rest go on; exit 1 if any failed. */
static bool is_force(const char *a)
{
    return strcmp(a, "-f") == 0 || strcmp(a, "--force") == 0;
}

static int cmd_rm(int argc, char **argv)
{
    char *args[2] = {argv[0], NULL};
    int n = 0, r = 0;

    for (int i = 1; i < argc; i++) {
        if (is_force(argv[i]))
            continue;
        if (argv[i][0] == '-') {
            pe_cli_why("unknown option %s", argv[i]);
            return pe_cli_usage("rm [-f] SANDBOX...");
        }
        n++;
    }
    if (n == 0) {
        pe_cli_why("missing SANDBOX");
        return pe_cli_usage("rm [-f] SANDBOX...");
    }
    for (int i = 1; i < argc; i++) {
        if (is_force(argv[i]))
            continue;
        args[1] = argv[i];
        if (by_id("rm [-f] SANDBOX...", "io.pocketenv.sandbox.deleteSandbox", 2, args, NULL,
                  "deleted successfully") != 0)
            r = EXIT_API;
    }
    return r;
}

/* ---- ls, ps ---- */

static int list(int argc, char **argv, bool running)
{
    json_t *params, *out = NULL, *prof = NULL, *sb;
    pe_api a;
    pe_err err;
    size_t i;
    int r;

    if (running && argc == 2 && (strcmp(argv[1], "-a") == 0 || strcmp(argv[1], "--all") == 0))
        running = false, argc = 1; /* docker's ps -a: every sandbox */
    if (pe_cli_bad_args(argc, argv, 1, "", 0, 0))
        return pe_cli_usage(running ? "ps [-a]" : "ls");
    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0)
        return fail(&err);
    /* as upstream: whose sandboxes is the profile's did */
    r = pe_api_call(&a, "io.pocketenv.actor.getProfile", NULL, NULL, &prof, &err);
    if (r == 0) {
        params = json_pack("{s:s, s:i}", "did", pe_cli_str(prof, "did"), "limit", 100);
        if (running)
            json_object_set_new(params, "isRunning", json_true());
        r = pe_api_call(&a, "io.pocketenv.actor.getActorSandboxes", params, NULL, &out, &err);
        json_decref(params);
        json_decref(prof);
    }
    pe_api_close(&a);
    if (r < 0)
        return fail(&err);
    if (pe_cli_json) {
        pe_cli_print_json(json_object_get(out, "sandboxes"));
        json_decref(out);
        return 0;
    }
    if (running)
        printf("%-28s %-12s %-10s %-8s %s\n", "NAME", "BASE", "PROVIDER", "BACKEND", "STATUS");
    else
        printf("%-28s %-12s %-10s %-8s %-13s %s\n", "NAME", "BASE", "PROVIDER", "BACKEND", "STATUS",
               "CREATED AT");
    json_array_foreach(json_object_get(out, "sandboxes"), i, sb)
    {
        const char *status = pe_cli_str(sb, "status");
        char when[48];

        if (running) {
            pe_cli_since(json_string_value(json_object_get(sb, "startedAt")), false, when,
                         sizeof(when));
            printf("%-28s %-12s %-10s %-8s %sUp %s%s\n", pe_cli_str(sb, "name"),
                   pe_cli_str(sb, "baseSandbox"), pe_cli_str(sb, "provider"),
                   pe_cli_str(sb, "backend"), c_hi(), when, c_off());
        } else {
            pe_cli_since(json_string_value(json_object_get(sb, "createdAt")), true, when,
                         sizeof(when));
            const char *why = json_string_value(json_object_get(sb, "statusReason"));
            bool failed = strcmp(status, "FAILED") == 0;
            printf("%-28s %-12s %-10s %-8s %s%-13s%s %s%s%s\n", pe_cli_str(sb, "name"),
                   pe_cli_str(sb, "baseSandbox"), pe_cli_str(sb, "provider"),
                   pe_cli_str(sb, "backend"), strcmp(status, "RUNNING") == 0 ? c_hi() : "", status,
                   c_off(), when, failed && why ? "  " : "", failed && why ? why : "");
        }
    }
    json_decref(out);
    return 0;
}

/* ---- inspect ---- */

static int cmd_inspect(int argc, char **argv)
{
    json_t *params, *out = NULL;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX", 1, 1))
        return pe_cli_usage("inspect SANDBOX");
    params = json_pack("{s:s}", "id", argv[1]);
    r = pe_cli_call("io.pocketenv.sandbox.getSandbox", params, NULL, &out, argv[1]);
    json_decref(params);
    if (r == 0)
        pe_cli_print_json(json_object_get(out, "sandbox"));
    json_decref(out);
    return r;
}

/* ---- dispatch ---- */

int pe_cmd_api(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"login", cmd_login},   {"logout", cmd_logout},   {"whoami", cmd_whoami},
        {"create", cmd_create}, {"new", cmd_create},      {"start", cmd_start},
        {"stop", cmd_stop},     {"rm", cmd_rm},           {"delete", cmd_rm},
        {"remove", cmd_rm},     {"inspect", cmd_inspect},
    };

    if (strcmp(argv[0], "ls") == 0 || strcmp(argv[0], "ps") == 0)
        return list(argc, argv, argv[0][0] == 'p');
    for (size_t i = 0; i < PE_ARRAY_LEN(cmds); i++)
        if (strcmp(argv[0], cmds[i].name) == 0)
            return cmds[i].fn(argc, argv);
    return -1;
}
