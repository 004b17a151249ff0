/* pocketenv snapshot create|ls|rm|inspect|restore: a sandbox's filesystem kept
 * as a named, read-only snapshot (io.pocketenv.sandbox.*Snapshot*);
 * pocketenv fork SANDBOX -n N (io.pocketenv.sandbox.forkSandbox); and
 * pocketenv idle SANDBOX [ACTION [SECONDS]], its idle policy (stop, pause
 * or snapshot-then-stop; io.pocketenv.sandbox.get/putIdlePolicy). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"

#define USAGE                                                                                      \
    "snapshot create SANDBOX NAME [-d DESC] [-t TTL]   (TTL: a number with m, h or d)\n"           \
    "snapshot ls|list\n"                                                                           \
    "snapshot inspect SNAPSHOT\n"                                                                  \
    "snapshot rm|delete SNAPSHOT...\n"                                                             \
    "snapshot restore SNAPSHOT [SANDBOX]   (in place; SANDBOX: the one it was taken of)"

#define IDLE_USAGE "idle SANDBOX [stop|pause|snapshot-then-stop [SECONDS]]   (0: the daemon's)"

#define FORK_USAGE "fork SANDBOX [-n N]   (N copies, 1 to 100; default 1)"

static int ttl_seconds(const char *s, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || v <= 0 || end[1] != '\0' || !strchr("mhd", *end))
        return -1;
    *out = v * (*end == 'm' ? 60 : *end == 'h' ? 3600 : 86400);
    return 0;
}

static int create(int argc, char **argv)
{
    json_t *body, *params, *out = NULL, *v;
    int r;

    if (pe_cli_bad_args(argc < 4 ? argc : 4, argv, 2, "SANDBOX NAME", 2, 2))
        return pe_cli_usage(USAGE);
    body = json_pack("{s:s}", "name", argv[3]);
    for (int k = 4; k < argc; k++) {
        long long ttl;
        if ((strcmp(argv[k], "-d") == 0 || strcmp(argv[k], "--description") == 0) && k + 1 < argc) {
            json_object_set_new(body, "description", json_string(argv[++k]));
        } else if ((strcmp(argv[k], "-t") == 0 || strcmp(argv[k], "--ttl") == 0) && k + 1 < argc) {
            if (ttl_seconds(argv[++k], &ttl) < 0) {
                json_decref(body);
                pe_cli_why("--ttl: a number with m, h or d, e.g. 3d");
                return pe_cli_usage(USAGE);
            }
            json_object_set_new(body, "ttl", json_integer(ttl));
        } else {
            json_decref(body);
            pe_cli_why("unexpected argument '%s'", argv[k]);
            return pe_cli_usage(USAGE);
        }
    }
    params = json_pack("{s:s}", "id", argv[2]);
    r = pe_cli_call("io.pocketenv.sandbox.createSnapshot", params, body, &out, argv[2]);
    json_decref(params);
    json_decref(body);
    if (r != 0)
        return r;
    v = json_object_get(out, "snapshot");
    if (pe_cli_json)
        pe_cli_print_json(v);
    else
        printf("Snapshot %s (%s) of %s created; %s was frozen %lld ms\n",
               json_string_value(json_object_get(v, "name")) ?: "",
               json_string_value(json_object_get(v, "id")) ?: "", argv[2], argv[2],
               (long long)json_integer_value(json_object_get(v, "frozenMs")));
    json_decref(out);
    return 0;
}

static void size_text(json_t *v, const char *key, char *out, size_t len)
{
    json_t *n = json_object_get(v, key);

    if (!json_is_integer(n))
        snprintf(out, len, "-");
    else
        snprintf(out, len, "%.1f MiB", (double)json_integer_value(n) / (1 << 20));
}

static int list(void)
{
    json_t *out = NULL, *v;
    size_t i;
    int r = pe_cli_call("io.pocketenv.sandbox.getSnapshots", NULL, NULL, &out, NULL);

    if (r != 0)
        return r;
    if (pe_cli_json) {
        pe_cli_print_json(json_object_get(out, "snapshots"));
        json_decref(out);
        return 0;
    }
    printf("%-24s %-26s %-12s %-12s %-26s %s\n", "NAME", "ID", "SIZE", "OWN", "CREATED AT",
           "EXPIRES AT");
    json_array_foreach(json_object_get(out, "snapshots"), i, v)
    {
        char size[32], own[32];
        size_text(v, "sizeBytes", size, sizeof(size));
        size_text(v, "exclusiveBytes", own, sizeof(own));
        printf("%-24s %-26s %-12s %-12s %-26s %s\n",
               json_string_value(json_object_get(v, "name")) ?: "-",
               json_string_value(json_object_get(v, "id")) ?: "-", size, own,
               json_string_value(json_object_get(v, "createdAt")) ?: "-",
               json_string_value(json_object_get(v, "expiresAt")) ?: "Never");
    }
    /* On stderr: the table stays the table for scripts. */
    v = json_object_get(out, "memoryCheckpoint");
    if (v && !json_is_true(json_object_get(v, "available")))
        fprintf(stderr, "memory checkpoints: unavailable (%s); snapshots hold files only\n",
                json_string_value(json_object_get(v, "reason")) ?: "unknown");
    json_decref(out);
    return 0;
}

static int inspect(const char *key)
{
    json_t *params = json_pack("{s:s}", "id", key), *out = NULL;
    int r = pe_cli_call("io.pocketenv.sandbox.getSnapshot", params, NULL, &out, NULL);

    json_decref(params);
    if (r != 0)
        return r;
    /* the daemon's word on memory checkpoints, beside the snapshot's own */
    if (json_object_get(out, "memoryCheckpoint"))
        json_object_set(json_object_get(out, "snapshot"), "memoryCheckpoint",
                        json_object_get(out, "memoryCheckpoint"));
    pe_cli_print_json(json_object_get(out, "snapshot"));
    json_decref(out);
    return 0;
}

static int remove_all(int argc, char **argv)
{
    int worst = 0;

    for (int i = 2; i < argc; i++) {
        json_t *params = json_pack("{s:s}", "id", argv[i]), *body = json_object(), *out = NULL;
        /* A body makes it a POST, as a procedure is called. */
        int r = pe_cli_call("io.pocketenv.sandbox.deleteSnapshot", params, body, &out, NULL);
        json_decref(params);
        json_decref(body);
        json_decref(out);
        if (r != 0)
            worst = r;
        else
            printf("%s\n", argv[i]);
    }
    return worst;
}

/* pocketenv snapshot restore SNAPSHOT [SANDBOX]: the sandbox it was taken
 * of (asked of getSnapshot when not given) back to it, in place, where its
 * provider can; the daemon says what to do elsewhere. */
static int restore(int argc, char **argv)
{
    json_t *params, *body, *out = NULL;
    char *sb = NULL;
    int r;

    if (pe_cli_bad_args(argc, argv, 2, "SNAPSHOT [SANDBOX]", 1, 2))
        return pe_cli_usage(USAGE);
    if (argc > 3) {
        sb = pe_xstrdup(argv[3]);
    } else {
        params = json_pack("{s:s}", "id", argv[2]);
        r = pe_cli_call("io.pocketenv.sandbox.getSnapshot", params, NULL, &out, NULL);
        json_decref(params);
        if (r != 0)
            return r;
        sb = pe_xstrdup(
            json_string_value(json_object_get(json_object_get(out, "snapshot"), "sandboxId"))
                ?: "");
        json_decref(out);
        out = NULL;
    }
    params = json_pack("{s:s}", "id", sb);
    body = json_pack("{s:s}", "snapshot", argv[2]);
    r = pe_cli_call("io.pocketenv.sandbox.restoreSnapshot", params, body, &out, sb);
    json_decref(params);
    json_decref(body);
    if (r == 0 && pe_cli_json)
        pe_cli_print_json(out);
    else if (r == 0)
        printf("%s restored to snapshot %s\n", sb, argv[2]);
    json_decref(out);
    free(sb);
    return r;
}

/* pocketenv fork SANDBOX [-n N]: N copies, their names one a line (ids
 * with --json), at once; they start in the background. */
static int fork_sandbox(int argc, char **argv)
{
    const char *sb = NULL;
    long long n = 1;
    json_t *params, *body, *out = NULL, *v;
    size_t i;
    int r;

    for (int k = 1; k < argc; k++) {
        char *end;
        if ((strcmp(argv[k], "-n") == 0 || strcmp(argv[k], "--count") == 0) && k + 1 < argc) {
            errno = 0;
            n = strtoll(argv[++k], &end, 10);
            if (errno || *end || n < 1 || n > 100) {
                pe_cli_why("-n: a count from 1 to 100");
                return pe_cli_usage(FORK_USAGE);
            }
        } else if (argv[k][0] == '-' || sb != NULL) {
            pe_cli_why(argv[k][0] == '-' ? "unknown option %s" : "unexpected argument '%s'",
                       argv[k]);
            return pe_cli_usage(FORK_USAGE);
        } else {
            sb = argv[k];
        }
    }
    if (sb == NULL) {
        pe_cli_why("missing SANDBOX");
        return pe_cli_usage(FORK_USAGE);
    }
    params = json_pack("{s:s}", "id", sb);
    body = json_pack("{s:I}", "count", (json_int_t)n);
    r = pe_cli_call("io.pocketenv.sandbox.forkSandbox", params, body, &out, sb);
    json_decref(params);
    json_decref(body);
    if (r != 0)
        return r;
    if (pe_cli_json) {
        pe_cli_print_json(out);
    } else {
        json_array_foreach(json_object_get(out, "sandboxes"), i, v)
        {
            printf("%s\n", json_string_value(json_object_get(v, "name")) ?: "");
        }
        fprintf(stderr, "%zu forks of %s from snapshot %s (%s was frozen %lld ms); starting\n",
                json_array_size(json_object_get(out, "sandboxes")), sb,
                json_string_value(json_object_get(out, "snapshot")) ?: "", sb,
                (long long)json_integer_value(json_object_get(out, "frozenMs")));
    }
    json_decref(out);
    return 0;
}

/* pocketenv idle SANDBOX: show the policy; with ACTION [SECONDS], set it. */
static int idle(int argc, char **argv)
{
    json_t *params, *body = NULL, *out = NULL;
    long long secs = 0;
    char *end;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX [ACTION [SECONDS]]", 1, 3))
        return pe_cli_usage(IDLE_USAGE);
    if (argc > 3) {
        errno = 0;
        secs = strtoll(argv[3], &end, 10);
        if (errno || end == argv[3] || *end || secs < 0) {
            pe_cli_why("SECONDS: a whole number, 0 for the daemon's --idle-timeout");
            return pe_cli_usage(IDLE_USAGE);
        }
    }
    params = json_pack("{s:s}", "id", argv[1]);
    if (argc > 2)
        body = json_pack("{s:s, s:I}", "action", argv[2], "timeout", (json_int_t)secs);
    r = pe_cli_call(body ? "io.pocketenv.sandbox.putIdlePolicy"
                         : "io.pocketenv.sandbox.getIdlePolicy",
                    params, body, &out, argv[1]);
    json_decref(params);
    json_decref(body);
    if (r != 0)
        return r;
    if (pe_cli_json)
        pe_cli_print_json(out);
    else if (json_integer_value(json_object_get(out, "effectiveTimeout")) <= 0)
        printf("%s: %s when idle, but the daemon never counts it idle (no timeout)\n", argv[1],
               json_string_value(json_object_get(out, "action")) ?: "");
    else
        printf("%s: %s after %llds without exec, terminal or preview traffic%s\n", argv[1],
               json_string_value(json_object_get(out, "action")) ?: "",
               (long long)json_integer_value(json_object_get(out, "effectiveTimeout")),
               json_is_true(json_object_get(out, "isDefault")) ? " (the daemon's default)" : "");
    json_decref(out);
    return 0;
}

int pe_cmd_snapshot(int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";

    if (strcmp(argv[0], "fork") == 0)
        return fork_sandbox(argc, argv);
    if (strcmp(argv[0], "idle") == 0)
        return idle(argc, argv);
    if (strcmp(argv[0], "snapshot") != 0)
        return -1;
    if (strcmp(verb, "create") == 0)
        return create(argc, argv);
    if ((strcmp(verb, "ls") == 0 || strcmp(verb, "list") == 0)) {
        if (pe_cli_bad_args(argc, argv, 2, "", 0, 0))
            return pe_cli_usage(USAGE);
        return list();
    }
    if (strcmp(verb, "inspect") == 0) {
        if (pe_cli_bad_args(argc, argv, 2, "SNAPSHOT", 1, 1))
            return pe_cli_usage(USAGE);
        return inspect(argv[2]);
    }
    if (strcmp(verb, "restore") == 0)
        return restore(argc, argv);
    if (strcmp(verb, "rm") == 0 || strcmp(verb, "delete") == 0) {
        if (pe_cli_bad_args(argc, argv, 2, "SNAPSHOT", 1, -1))
            return pe_cli_usage(USAGE);
        return remove_all(argc, argv);
    }
    if (argc < 2)
        pe_cli_why("missing COMMAND (create, ls, inspect, restore or rm)");
    else
        pe_cli_why("unknown snapshot command '%s' (create, ls, inspect, restore or rm)", verb);
    return pe_cli_usage(USAGE);
}
