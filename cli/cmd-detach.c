/* pocketenv run -d [--name NAME] [OPTIONS] [IMAGE] [CMD [ARGS...]]: docker's
 * detached run, for a runtime whose one-shot sandboxes die with the command
 * that made them. What keeps a sandbox alive in the background here is the
 * daemon, so -d is made of its API (run's arguments were checked by
 * `pocketenv` before it exec'd this program, cli/cmd-run.c):
 *   - createSandbox {base: IMAGE, name, keepAlive, envs, vcpus, memory}:
 *     never stopped for being idle, as a docker container is not;
 *   - wait until it runs (or say why not, as `create` does);
 *   - CMD becomes its service "main" (addService): the daemon supervises
 *     it, keeps its output (`pocketenv logs NAME`), restarts it when it
 *     fails and starts it again with the sandbox;
 *   - print the sandbox's name (docker prints the container's id).
 * So `exec`, `logs`, `stop` and `rm` take the name as docker's do. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"

#define EXIT_API 1
#define SERVICE_NAME "main"

/* Is word one of the daemon's bases (getSandboxes lists them)? 1 or 0;
 * -1 if the daemon could not say (said on stderr). */
static int is_base(const char *word)
{
    json_t *params = json_pack("{s:i}", "limit", 100), *out = NULL, *t;
    int found = 0;
    size_t i;

    if (pe_cli_call("io.pocketenv.sandbox.getSandboxes", params, NULL, &out, NULL) != 0)
        found = -1;
    json_array_foreach(json_object_get(out, "sandboxes"), i, t)
    {
        const char *n = json_string_value(json_object_get(t, "name"));
        found = found || (n && strcmp(n, word) == 0);
    }
    json_decref(params);
    json_decref(out);
    return found;
}

/* word as one word of a POSIX shell command line. */
static void append_quoted(char **line, const char *word)
{
    bool plain = *word != '\0';
    char *q, *next;
    size_t n = 0;

    for (const char *c = word; *c; c++)
        plain = plain && (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "0123456789_-./=:,+@%",
                                 *c) != NULL);
    q = pe_xmalloc(strlen(word) * 4 + 3);
    if (plain) {
        memcpy(q, word, strlen(word) + 1);
    } else {
        q[n++] = '\'';
        for (const char *c = word; *c; c++) {
            if (*c == '\'') {
                memcpy(q + n, "'\\''", 4);
                n += 4;
            } else {
                q[n++] = *c;
            }
        }
        q[n++] = '\'';
        q[n] = '\0';
    }
    next = pe_xasprintf("%s%s%s", *line, **line ? " " : "", q);
    free(q);
    free(*line);
    *line = next;
}

/* The service's command: one word is a shell command line (as exec takes
 * it), several are argv, quoted for the shell that runs services. */
static char *command_line(int argc, char **argv)
{
    char *line = pe_xstrdup("");

    if (argc == 1) {
        free(line);
        return pe_xstrdup(argv[0]);
    }
    for (int i = 0; i < argc; i++)
        append_quoted(&line, argv[i]);
    return line;
}

static json_t *create_body(const pe_run_args *a, const char *base)
{
    json_t *body = json_pack("{s:s, s:b}", "base", base, "keepAlive", 1);

    if (a->name)
        json_object_set_new(body, "name", json_string(a->name));
    if (a->s.cfg.memory_bytes)
        json_object_set_new(body, "memory", json_integer(a->s.cfg.memory_bytes >> 30));
    if (a->s.cfg.cpu_millis)
        json_object_set_new(body, "vcpus", json_integer(a->s.cfg.cpu_millis / 1000));
    if (a->s.n_env) {
        json_t *envs = json_array();
        for (int i = 0; i < a->s.n_env; i++) {
            const char *kv = a->s.cfg.env[i], *eq = strchr(kv, '=');
            json_array_append_new(
                envs, json_pack("{s:s%, s:s}", "name", kv, (size_t)(eq - kv), "value", eq + 1));
        }
        json_object_set_new(body, "envs", envs);
    }
    return body;
}

static int add_main_service(const char *sandbox, int argc, char **argv)
{
    cleanup_free char *line = command_line(argc, argv);
    json_t *params = json_pack("{s:s}", "sandboxId", sandbox), *out = NULL;
    json_t *body = json_pack("{s:{s:s, s:s, s:s}}", "service", "name", SERVICE_NAME, "command",
                             line, "description", "pocketenv run -d");
    int r = pe_cli_call("io.pocketenv.service.addService", params, body, &out, sandbox);

    json_decref(params);
    json_decref(body);
    json_decref(out);
    return r;
}

int pe_cmd_run_detached(int argc, char **argv)
{
    cleanup_free char *name = NULL;
    const char *base = "debian";
    json_t *body, *out = NULL;
    pe_run_args a;
    pe_err err;
    int idx, r;

    pe_err_clear(&err);
    if (pe_run_args_parse(argc, argv, &a, &err) < 0 || pe_run_args_check_detach(&a, &err) < 0) {
        pe_run_args_clear(&a);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return PE_EXIT_FAIL;
    }
    idx = a.idx;
    r = pe_run_given(&a, OPT_IMAGE) || a.dashdash || idx >= argc ? 0 : is_base(argv[idx]);
    if (r < 0) {
        pe_run_args_clear(&a);
        return EXIT_API;
    }
    if (pe_run_given(&a, OPT_IMAGE)) {
        base = a.s.cfg.image;
    } else if (r == 1) {
        base = argv[idx++];
        if (idx < argc && strcmp(argv[idx], "--") == 0)
            idx++;
    }
    body = create_body(&a, base);
    r = pe_cli_call("io.pocketenv.sandbox.createSandbox", NULL, body, &out, NULL);
    json_decref(body);
    if (r == 0) {
        name = pe_xstrdup(pe_cli_str(out, "name"));
        r = pe_cli_wait_running(name);
    }
    json_decref(out);
    if (r == 0 && idx < argc)
        r = add_main_service(name, argc - idx, argv + idx);
    if (r == 0)
        printf("%s\n", name);
    pe_run_args_clear(&a);
    return r == 0 ? 0 : EXIT_API;
}
