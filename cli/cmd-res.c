/* env, secret, file, volume: a sandbox's resources over the API, as
 * upstream's commands (reference §6.2):
 *
 *   env put SANDBOX KEY VALUE        secret put SANDBOX KEY
 *   file put SANDBOX PATH [LOCAL]    volume put SANDBOX NAME PATH
 *   X list|ls SANDBOX                X delete|rm|remove ID
 *
 * put adds, or updates the row of that name (path) if there is one.
 * Secret values and file contents are sealed here, with the daemon's public
 * key (POCKETENV_PUBLIC_KEY, else io.pocketenv.server.getPublicKey), so
 * they cross the wire sealed. A secret comes from piped standard input
 * (trailing whitespace trimmed, as upstream) or a prompt that does not echo;
 * never from the command line, where other users' `ps` would see it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/fs.h"
#include "core/util.h"
#include "pocketenv/auth.h"

#define EXIT_API 1
#define EXIT_USAGE 2
#define VALUE_MAX (1u << 20)

typedef struct kind {
    const char *cmd;    /* "env" */
    const char *ns;     /* "variable": io.pocketenv.<ns>.* and the body's key */
    const char *Ns;     /* "Variable": addVariable, ... */
    const char *plural; /* "variables" */
    const char *key;    /* "name" or "path" */
    const char *put_usage;
    bool sealed;           /* secret, file */
    const char *put_words; /* put's positional words, after "put" */
    int put_min, put_max;
} kind;

static const kind kinds[] = {
    {"env", "variable", "Variable", "variables", "name", "env put SANDBOX KEY VALUE", false,
     "SANDBOX KEY VALUE", 3, 3},
    {"secret", "secret", "Secret", "secrets", "name", "secret put SANDBOX KEY  (value on stdin)",
     true, "SANDBOX KEY", 2, 2},
    {"file", "file", "File", "files", "path", "file put SANDBOX PATH [LOCAL_FILE]", true,
     "SANDBOX PATH LOCAL_FILE", 2, 3},
    {"volume", "volume", "Volume", "volumes", "name", "volume put SANDBOX NAME PATH", false,
     "SANDBOX NAME PATH", 3, 3},
};

static int fail(const pe_err *err)
{
    fprintf(stderr, "pocketenv: %s\n", err->msg[0] ? err->msg : "failed");
    return err->code == PE_EINVAL ? EXIT_USAGE : EXIT_API;
}

/* After pe_cli_bad_args or pe_cli_why said what was wrong. */
static int usage(const kind *k)
{
    fprintf(stderr,
            "usage: pocketenv %s put ...   (%s)\n"
            "       pocketenv %s list|ls SANDBOX\n"
            "       pocketenv %s delete|rm|remove ID\n",
            k->cmd, k->put_usage, k->cmd, k->cmd);
    return EXIT_USAGE;
}

static char *nsid(const kind *k, const char *verb)
{
    return pe_xasprintf("io.pocketenv.%s.%s%s", k->ns, verb, k->Ns);
}

/* ---- values ---- */

static void trim_right(char *s, size_t *len)
{
    while (*len > 0 && strchr(" \t\r\n", s[*len - 1]))
        s[--*len] = '\0';
}

static char *read_all(FILE *f, size_t *len, pe_err *err)
{
    size_t cap = 4096, n = 0;
    char *buf = pe_xmalloc(cap);

    for (;;) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > VALUE_MAX) {
            free(buf);
            pe_err_set(err, PE_EINVAL, 0, "value larger than %u bytes", VALUE_MAX);
            return NULL;
        }
        if (got == 0)
            break;
        if (cap - n - 1 == 0)
            buf = pe_xrealloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* A secret from a terminal, without echo. */
static char *prompt_secret(const char *name, size_t *len, pe_err *err)
{
    struct termios old, quiet;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    fprintf(stderr, "Value of %s: ", name);
    fflush(stderr);
    if (tcgetattr(0, &old) < 0) {
        pe_err_sys(err, "terminal");
        return NULL;
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(0, TCSAFLUSH, &quiet);
    n = getline(&line, &cap, stdin);
    tcsetattr(0, TCSAFLUSH, &old);
    fputc('\n', stderr);
    if (n < 0) {
        free(line);
        pe_err_set(err, PE_EINVAL, 0, "no value given");
        return NULL;
    }
    *len = (size_t)n;
    return line;
}

char *pe_cli_read_secret(const char *name, size_t *len, pe_err *err)
{
    char *v = isatty(0) ? prompt_secret(name, len, err) : read_all(stdin, len, err);

    if (v)
        trim_right(v, len);
    return v;
}

static char *daemon_key(pe_api *a, pe_err *err)
{
    json_t *out = NULL;
    char *key;

    if (pe_api_call(a, "io.pocketenv.server.getPublicKey", NULL, NULL, &out, err) < 0)
        return NULL;
    key = pe_xstrdup(json_string_value(json_object_get(out, "publicKey")) ?: "");
    json_decref(out);
    return key;
}

/* The key to seal to: the daemon's. POCKETENV_PUBLIC_KEY (upstream's
 * variable) must be a key (else PE_EINVAL, a usage error) and that same
 * key: the daemon takes a value it cannot open as plain text (upstream's
 * SDK sends plain text), so a value sealed to another key would be kept
 * as garbage rather than refused. The check costs one call and says
 * what is wrong before anything is sent. */
static char *public_key(pe_api *a, pe_err *err)
{
    const char *env = getenv("POCKETENV_PUBLIC_KEY");
    cleanup_free char *b64 = NULL;
    char *key;

    if (env && *env && pe_auth_seal(env, "", 0, &b64, err) < 0) {
        pe_err_prefix(err, "POCKETENV_PUBLIC_KEY");
        return NULL;
    }
    key = daemon_key(a, err);
    if (key && env && *env && strcasecmp(env, key) != 0) {
        pe_err_set(err, PE_ESTATE, 0,
                   "POCKETENV_PUBLIC_KEY is not this daemon's key (see io.pocketenv.server."
                   "getPublicKey): unset it, or set it to %s",
                   key);
        free(key);
        return NULL;
    }
    return key;
}

char *pe_cli_seal(pe_api *a, const char *plain, size_t len, pe_err *err)
{
    cleanup_free char *key = public_key(a, err);
    char *b64 = NULL;

    if (key == NULL)
        return NULL;
    if (pe_auth_seal(key, plain, len, &b64, err) < 0) {
        pe_err_prefix(err, "seal with the daemon's public key");
        return NULL;
    }
    return b64;
}

/* ---- put ---- */

/* The row of sandbox sb whose key field is value, or NULL. */
static json_t *find_row(pe_api *a, const kind *k, const char *sb, const char *value, pe_err *err)
{
    cleanup_free char *m = pe_xasprintf("io.pocketenv.%s.get%ss", k->ns, k->Ns);
    json_t *params, *out = NULL, *row, *found = NULL;
    size_t i;

    params = json_pack("{s:s, s:i}", "sandboxId", sb, "limit", 100);
    if (pe_api_call(a, m, params, NULL, &out, err) == 0) {
        json_array_foreach(json_object_get(out, k->plural), i, row)
        {
            const char *v = json_string_value(json_object_get(row, k->key));
            if (v && strcmp(v, value) == 0)
                found = json_incref(row);
        }
    }
    json_decref(params);
    json_decref(out);
    return found;
}

static int put(const kind *k, int argc, char **argv)
{
    const char *sb, *key, *value = NULL;
    cleanup_free char *owned = NULL;
    cleanup_free char *sealed = NULL;
    cleanup_free char *add = nsid(k, "add");
    json_t *item, *body, *out = NULL;
    size_t len = 0;
    pe_api a;
    pe_err err;
    int r;

    pe_err_clear(&err);
    if (pe_cli_bad_args(argc, argv, 2, k->put_words, k->put_min, k->put_max))
        return usage(k);
    if (strcmp(k->cmd, "env") == 0 || strcmp(k->cmd, "volume") == 0)
        value = argv[4];
    sb = argv[2];
    key = argv[3];
    if (strcmp(k->cmd, "file") == 0 && argc == 5) {
        if (pe_fs_read_file(argv[4], VALUE_MAX, &owned, &len, &err) < 0)
            return fail(&err);
    } else if (value == NULL && !isatty(0)) {
        owned = read_all(stdin, &len, &err);
        if (owned == NULL)
            return fail(&err);
        trim_right(owned, &len);
    } else if (value == NULL && strcmp(k->cmd, "secret") == 0) {
        owned = prompt_secret(key, &len, &err);
        if (owned == NULL)
            return fail(&err);
        trim_right(owned, &len);
    } else if (value == NULL) {
        fprintf(stderr, "pocketenv: give the file's content on standard input or as a file\n");
        return EXIT_USAGE;
    }
    if (pe_api_open(&a, true, &err) < 0)
        return fail(&err);
    if (k->sealed) {
        sealed = pe_cli_seal(&a, owned, len, &err);
        if (owned)
            explicit_bzero(owned, len);
        if (sealed == NULL) {
            pe_api_close(&a);
            return fail(&err);
        }
    }
    item = json_pack("{s:s, s:s}", "sandboxId", sb, k->key, key);
    if (strcmp(k->cmd, "env") == 0)
        json_object_set_new(item, "value", json_string(value));
    else if (strcmp(k->cmd, "secret") == 0)
        json_object_set_new(item, "value", json_string(sealed));
    else if (strcmp(k->cmd, "file") == 0)
        json_object_set_new(item, "content", json_string(sealed));
    else
        json_object_set_new(item, "path", json_string(value));
    body = json_pack("{s:O}", k->ns, item);
    r = pe_api_call(&a, add, NULL, body, &out, &err);
    json_decref(body);
    if (r < 0 && a.status == 409) {
        /* put = add or replace: update the row that has this name */
        json_t *row = find_row(&a, k, sb, key, &err);
        if (row != NULL) {
            cleanup_free char *upd = nsid(k, "update");
            body = json_pack("{s:O, s:O}", "id", json_object_get(row, "id"), k->ns, item);
            pe_err_clear(&err);
            r = pe_api_call(&a, upd, NULL, body, &out, &err);
            json_decref(body);
            json_decref(row);
        }
    }
    json_decref(item);
    if (r < 0 && strcmp(a.error_name, "SandboxNotFound") == 0)
        pe_err_set(&err, PE_API_EHTTP, 0, "sandbox %s not found", sb);
    pe_api_close(&a);
    json_decref(out);
    if (r < 0)
        return fail(&err);
    if (strcmp(k->cmd, "volume") == 0)
        printf("Volume %s mounted in %s at %s\n", key, sb, value);
    else
        printf("%s updated successfully\n", k->Ns);
    return 0;
}

/* ---- list, delete ---- */

static int list(const kind *k, int argc, char **argv)
{
    cleanup_free char *m = pe_xasprintf("io.pocketenv.%s.get%ss", k->ns, k->Ns);
    json_t *params, *out = NULL, *row;
    pe_api a;
    pe_err err;
    size_t i;
    int r;

    if (pe_cli_bad_args(argc, argv, 2, "SANDBOX", 1, 1))
        return usage(k);
    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0)
        return fail(&err);
    params = json_pack("{s:s, s:i}", "sandboxId", argv[2], "limit", 100);
    r = pe_api_call(&a, m, params, NULL, &out, &err);
    json_decref(params);
    if (r < 0 && strcmp(a.error_name, "SandboxNotFound") == 0)
        pe_err_set(&err, PE_API_EHTTP, 0, "sandbox %s not found", argv[2]);
    pe_api_close(&a);
    if (r < 0)
        return fail(&err);
    if (pe_cli_json) {
        pe_cli_print_json(json_object_get(out, k->plural));
        json_decref(out);
        return 0;
    }
    if (strcmp(k->cmd, "env") == 0)
        printf("%-26s %-24s %-30s %s\n", "ID", "NAME", "VALUE", "CREATED AT");
    else if (strcmp(k->cmd, "volume") == 0)
        printf("%-26s %-24s %-30s %s\n", "ID", "NAME", "PATH", "CREATED AT");
    else
        printf("%-26s %-40s %s\n", "ID", strcmp(k->key, "path") ? "NAME" : "PATH", "CREATED AT");
    json_array_foreach(json_object_get(out, k->plural), i, row)
    {
        char w[48];

        pe_cli_since(json_string_value(json_object_get(row, "createdAt")), true, w, sizeof(w));
        if (strcmp(k->cmd, "env") == 0)
            printf("%-26s %-24s %-30s %s\n", pe_cli_str(row, "id"), pe_cli_str(row, "name"),
                   pe_cli_str(row, "value"), w);
        else if (strcmp(k->cmd, "volume") == 0)
            printf("%-26s %-24s %-30s %s\n", pe_cli_str(row, "id"), pe_cli_str(row, "name"),
                   pe_cli_str(row, "path"), w);
        else
            printf("%-26s %-40s %s\n", pe_cli_str(row, "id"), pe_cli_str(row, k->key), w);
    }
    json_decref(out);
    return 0;
}

static int delete (const kind *k, int argc, char **argv)
{
    cleanup_free char *m = nsid(k, "delete");
    json_t *params, *out = NULL, *empty = json_object();
    pe_api a;
    pe_err err;
    int r;

    if (pe_cli_bad_args(argc, argv, 2, "ID", 1, 1)) {
        json_decref(empty);
        return usage(k);
    }
    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0) {
        json_decref(empty);
        return fail(&err);
    }
    params = json_pack("{s:s}", "id", argv[2]);
    r = pe_api_call(&a, m, params, empty, &out, &err);
    json_decref(params);
    json_decref(empty);
    json_decref(out);
    if (r < 0 && a.status == 404)
        pe_err_set(&err, PE_API_EHTTP, 0, "%s %s not found", k->ns, argv[2]);
    pe_api_close(&a);
    if (r < 0)
        return fail(&err);
    printf("%s %s deleted\n", k->Ns, argv[2]);
    return 0;
}

int pe_cmd_res(int argc, char **argv)
{
    const kind *k = NULL;
    const char *verb;

    for (size_t i = 0; i < PE_ARRAY_LEN(kinds); i++)
        if (strcmp(argv[0], kinds[i].cmd) == 0)
            k = &kinds[i];
    if (k == NULL)
        return -1;
    if (argc < 2) {
        pe_cli_why("missing what to do: put, list or delete");
        return usage(k);
    }
    verb = argv[1];
    if (strcmp(verb, "put") == 0)
        return put(k, argc, argv);
    if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0)
        return list(k, argc, argv);
    if (strcmp(verb, "delete") == 0 || strcmp(verb, "rm") == 0 || strcmp(verb, "remove") == 0)
        return delete (k, argc, argv);
    pe_cli_why("unknown %s command '%s' (put, list or delete)", k->cmd, verb);
    return usage(k);
}
