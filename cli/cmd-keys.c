/* sshkeys, tailscale, service: as upstream's commands (reference §6.2).
 *
 *   sshkeys put SANDBOX (--private-key F --public-key F | -g|--generate)
 *   sshkeys get SANDBOX
 *   tailscale put SANDBOX           key on stdin or a prompt without echo
 *   tailscale get SANDBOX
 *   service create SANDBOX NAME COMMAND... [-d DESC] [-p PORT...]
 *   service list|ls SANDBOX
 *   service start|stop|restart|delete|rm|remove SERVICE_ID
 *   service logs SERVICE_ID        (io.pocketenv.service.getServiceLogs, ours)
 *
 * Private keys and auth keys are sealed here with the daemon's public key;
 * --generate makes an Ed25519 pair locally (lib/auth) and prints its public
 * half to add to a git host. No editor is opened (upstream's fallback):
 * give the files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/fs.h"
#include "core/util.h"
#include "pocketenv/auth.h"

#define EXIT_API 1
#define EXIT_USAGE 2
#define KEY_MAX (64 * 1024)

#define SSHKEYS_USAGE                                                                              \
    "sshkeys put SANDBOX (--private-key F --public-key F | -g|--generate)\n"                       \
    "sshkeys get SANDBOX"
#define TAILSCALE_USAGE                                                                            \
    "tailscale put SANDBOX   (the key on stdin or at the prompt)\n"                                \
    "tailscale get SANDBOX"
#define SERVICE_USAGE                                                                              \
    "service create SANDBOX NAME COMMAND... [-d DESC] [-p PORT...]\n"                              \
    "service list|ls SANDBOX\n"                                                                    \
    "service start|stop|restart|delete|logs SERVICE_ID"

/* What was wrong with a command's verb (argv[1]): missing or unknown, or
 * its words (after the verb) against names; then the usage. */
static int verb_usage(int argc, char **argv, const char *verbs, const char *names, int min, int max,
                      const char *usage)
{
    if (argc < 2)
        pe_cli_why("missing what to do: %s", verbs);
    else if (names == NULL)
        pe_cli_why("unknown %s command '%s' (%s)", argv[0], argv[1], verbs);
    else if (!pe_cli_bad_args(argc, argv, 2, names, min, max))
        pe_cli_why("bad arguments");
    return pe_cli_usage(usage);
}

/* Seal plain with the daemon's key (opens its own API handle). */
static char *seal(const char *plain, size_t len)
{
    pe_api a;
    pe_err err;
    char *s;

    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return NULL;
    }
    s = pe_cli_seal(&a, plain, len, &err);
    pe_api_close(&a);
    if (s == NULL)
        fprintf(stderr, "pocketenv: %s\n", err.msg);
    return s;
}

/* ---- sshkeys ---- */

static int sshkeys(int argc, char **argv)
{
    const char *priv_path = NULL, *pub_path = NULL;
    cleanup_free char *priv = NULL;
    cleanup_free char *pub = NULL;
    cleanup_free char *sealed = NULL;
    bool generate = false;
    json_t *body, *out = NULL;
    size_t plen = 0;
    pe_err err;
    int r;

    if (argc == 3 && strcmp(argv[1], "get") == 0) {
        json_t *params = json_pack("{s:s}", "id", argv[2]);
        r = pe_cli_call("io.pocketenv.sandbox.getSshKeys", params, NULL, &out, argv[2]);
        json_decref(params);
        if (r == 0 && pe_cli_json)
            pe_cli_print_json(out);
        else if (r == 0)
            printf("Private Key: %s\nPublic Key: %s\n", pe_cli_str(out, "privateKey"),
                   pe_cli_str(out, "publicKey"));
        json_decref(out);
        return r;
    }
    if (argc >= 2 && strcmp(argv[1], "get") == 0)
        return verb_usage(argc, argv, "put or get", "SANDBOX", 1, 1, SSHKEYS_USAGE);
    if (argc < 3 || strcmp(argv[1], "put") != 0 || argv[2][0] == '-')
        return verb_usage(argc, argv, "put or get",
                          argc >= 2 && strcmp(argv[1], "put") == 0 ? "SANDBOX" : NULL, 1, -1,
                          SSHKEYS_USAGE);
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--private-key") == 0 && i + 1 < argc)
            priv_path = argv[++i];
        else if (strcmp(argv[i], "--public-key") == 0 && i + 1 < argc)
            pub_path = argv[++i];
        else if (strcmp(argv[i], "-g") == 0 || strcmp(argv[i], "--generate") == 0)
            generate = true;
        else if (strcmp(argv[i], "--private-key") == 0 || strcmp(argv[i], "--public-key") == 0)
            return pe_cli_why("%s needs a FILE", argv[i]), pe_cli_usage(SSHKEYS_USAGE);
        else if (argv[i][0] == '-')
            return pe_cli_why("unknown option %s", argv[i]), pe_cli_usage(SSHKEYS_USAGE);
        else
            return pe_cli_why("unexpected argument '%s'", argv[i]), pe_cli_usage(SSHKEYS_USAGE);
    }
    pe_err_clear(&err);
    if (generate) {
        if (pe_auth_ssh_generate("pocketenv", &priv, &pub) < 0) {
            fprintf(stderr, "pocketenv: could not generate a key pair\n");
            return EXIT_API;
        }
        plen = strlen(priv);
    } else if (priv_path && pub_path) {
        size_t n;
        if (pe_fs_read_file(priv_path, KEY_MAX, &priv, &plen, &err) < 0 ||
            pe_fs_read_file(pub_path, KEY_MAX, &pub, &n, &err) < 0) {
            fprintf(stderr, "pocketenv: %s\n", err.msg);
            return EXIT_USAGE;
        }
        pub[strcspn(pub, "\r\n")] = '\0';
        if (strstr(priv, "-----BEGIN ") == NULL || strstr(priv, "PRIVATE KEY-----") == NULL) {
            fprintf(stderr, "pocketenv: %s is not a PEM private key\n", priv_path);
            return EXIT_USAGE;
        }
    } else {
        pe_cli_why("sshkeys put needs --generate, or both --private-key and --public-key");
        return pe_cli_usage(SSHKEYS_USAGE);
    }
    sealed = seal(priv, plen);
    explicit_bzero(priv, plen);
    if (sealed == NULL)
        return EXIT_API;
    body = json_pack("{s:s, s:s, s:s}", "id", argv[2], "privateKey", sealed, "publicKey", pub);
    r = pe_cli_call("io.pocketenv.sandbox.putSshKeys", NULL, body, &out, argv[2]);
    json_decref(body);
    json_decref(out);
    if (r == 0) {
        printf("SSH keys of %s saved\n", argv[2]);
        if (generate)
            printf("Public key (add it to your git host):\n%s\n", pub);
    }
    return r;
}

/* ---- tailscale ---- */

static int tailscale(int argc, char **argv)
{
    cleanup_free char *key = NULL;
    cleanup_free char *sealed = NULL;
    json_t *body, *params, *out = NULL;
    size_t len = 0;
    pe_err err;
    int r;

    if (argc == 3 && strcmp(argv[1], "get") == 0) {
        params = json_pack("{s:s}", "id", argv[2]);
        r = pe_cli_call("io.pocketenv.sandbox.getTailscaleAuthKey", params, NULL, &out, argv[2]);
        json_decref(params);
        if (r == 0 && pe_cli_json)
            pe_cli_print_json(out);
        else if (r == 0)
            printf("Tailscale auth key: %s\n", pe_cli_str(out, "authKey"));
        json_decref(out);
        return r;
    }
    if (argc != 3 || strcmp(argv[1], "put") != 0 || argv[2][0] == '-')
        return verb_usage(argc, argv, "put or get",
                          argc >= 2 && (strcmp(argv[1], "put") == 0 || strcmp(argv[1], "get") == 0)
                              ? "SANDBOX"
                              : NULL,
                          1, 1, TAILSCALE_USAGE);
    pe_err_clear(&err);
    key = pe_cli_read_secret("the Tailscale auth key", &len, &err);
    if (key == NULL) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return EXIT_USAGE;
    }
    if (strncmp(key, "tskey-auth-", 11) != 0) {
        explicit_bzero(key, len);
        fprintf(stderr, "pocketenv: a Tailscale auth key starts with tskey-auth-\n");
        return EXIT_USAGE;
    }
    sealed = seal(key, len);
    explicit_bzero(key, len);
    if (sealed == NULL)
        return EXIT_API;
    body = json_pack("{s:s, s:s}", "id", argv[2], "authKey", sealed);
    r = pe_cli_call("io.pocketenv.sandbox.putTailscaleAuthKey", NULL, body, &out, argv[2]);
    json_decref(body);
    json_decref(out);
    if (r == 0)
        printf("Tailscale auth key of %s saved\n", argv[2]);
    return r;
}

/* ---- service ---- */

static int service_create(int argc, char **argv)
{
    json_t *svc, *ports = json_array(), *params, *body, *out = NULL;
    cleanup_free char *command = pe_xstrdup("");
    const char *desc = NULL;
    int r;

    if (pe_cli_bad_args(argc, argv, 2, "SANDBOX NAME COMMAND", 3, -1)) {
        json_decref(ports);
        return pe_cli_usage(SERVICE_USAGE);
    }
    for (int i = 4; i < argc; i++) {
        if ((strcmp(argv[i], "-d") == 0 || strcmp(argv[i], "--description") == 0) && i + 1 < argc) {
            desc = argv[++i];
        } else if (strcmp(argv[i], "-p") == 0 || strcmp(argv[i], "--ports") == 0) {
            char *end;
            long p;
            while (i + 1 < argc && (errno = 0, p = strtol(argv[i + 1], &end, 10), !errno) &&
                   *end == '\0' && end != argv[i + 1]) {
                if (p < 1 || p > 65535) {
                    json_decref(ports);
                    fprintf(stderr, "pocketenv: port %ld out of range\n", p);
                    return EXIT_USAGE;
                }
                json_array_append_new(ports, json_integer(p));
                i++;
            }
        } else {
            char *next = pe_xasprintf("%s%s%s", command, *command ? " " : "", argv[i]);
            free(command);
            command = next;
        }
    }
    if (*command == '\0') {
        json_decref(ports);
        pe_cli_why("missing COMMAND");
        return pe_cli_usage(SERVICE_USAGE);
    }
    svc = json_pack("{s:s, s:s}", "name", argv[3], "command", command);
    if (desc)
        json_object_set_new(svc, "description", json_string(desc));
    if (json_array_size(ports))
        json_object_set(svc, "ports", ports);
    json_decref(ports);
    params = json_pack("{s:s}", "sandboxId", argv[2]);
    body = json_pack("{s:o}", "service", svc);
    r = pe_cli_call("io.pocketenv.service.addService", params, body, &out, argv[2]);
    json_decref(params);
    json_decref(body);
    if (r == 0) {
        json_t *v = json_object_get(out, "service");
        printf("Service %s created in %s", argv[3], argv[2]);
        if (json_is_string(json_object_get(v ? v : out, "id")))
            printf(": %s", pe_cli_str(v ? v : out, "id"));
        printf("\n");
    }
    json_decref(out);
    return r;
}

static int service(int argc, char **argv)
{
    static const struct {
        const char *verb, *nsid, *done;
    } by_id[] = {
        {"start", "io.pocketenv.service.startService", "started"},
        {"stop", "io.pocketenv.service.stopService", "stopped"},
        {"restart", "io.pocketenv.service.restartService", "restarted"},
        {"delete", "io.pocketenv.service.deleteService", "deleted"},
        {"rm", "io.pocketenv.service.deleteService", "deleted"},
        {"remove", "io.pocketenv.service.deleteService", "deleted"},
    };
    const char *verb = argc > 1 ? argv[1] : "";
    json_t *params, *out = NULL, *s;
    size_t i;
    int r;

    if (strcmp(verb, "create") == 0)
        return service_create(argc, argv);
    if ((strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0) && argc == 3) {
        params = json_pack("{s:s}", "sandboxId", argv[2]);
        r = pe_cli_call("io.pocketenv.service.getServices", params, NULL, &out, argv[2]);
        json_decref(params);
        if (r != 0)
            return r;
        if (pe_cli_json) {
            pe_cli_print_json(json_object_get(out, "services"));
            json_decref(out);
            return 0;
        }
        printf("%-28s %-16s %-30s %-20s %s\n", "ID", "NAME", "COMMAND", "CREATED AT", "STATUS");
        json_array_foreach(json_object_get(out, "services"), i, s)
        {
            char status[PE_SERVICE_STATUS_MAX];
            pe_cli_service_status(s, status, sizeof(status));
            printf("%-28s %-16s %-30s %-20s %s\n", pe_cli_str(s, "id"), pe_cli_str(s, "name"),
                   pe_cli_str(s, "command"), pe_cli_str(s, "createdAt"), status);
        }
        json_decref(out);
        return 0;
    }
    if (strcmp(verb, "logs") == 0 && argc == 3) {
        params = json_pack("{s:s}", "serviceId", argv[2]);
        r = pe_cli_call("io.pocketenv.service.getServiceLogs", params, NULL, &out, NULL);
        json_decref(params);
        if (r == 0)
            fputs(json_string_value(json_object_get(out, "logs")) ?: "", stdout);
        json_decref(out);
        return r;
    }
    for (size_t k = 0; k < PE_ARRAY_LEN(by_id); k++) {
        if (strcmp(verb, by_id[k].verb) == 0 && argc == 3) {
            json_t *empty = json_object();
            params = json_pack("{s:s}", "serviceId", argv[2]);
            r = pe_cli_call(by_id[k].nsid, params, empty, &out, NULL);
            json_decref(params);
            json_decref(empty);
            json_decref(out);
            if (r == 0)
                printf("Service %s %s\n", argv[2], by_id[k].done);
            return r;
        }
    }
    {
        static const char verbs[] = "create, list, start, stop, restart, delete or logs";
        bool by_service = strcmp(verb, "logs") == 0;
        for (size_t k = 0; k < PE_ARRAY_LEN(by_id); k++)
            by_service = by_service || strcmp(verb, by_id[k].verb) == 0;
        if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0)
            return verb_usage(argc, argv, verbs, "SANDBOX", 1, 1, SERVICE_USAGE);
        return verb_usage(argc, argv, verbs, by_service ? "SERVICE_ID" : NULL, 1, 1, SERVICE_USAGE);
    }
}

int pe_cmd_keys(int argc, char **argv)
{
    if (strcmp(argv[0], "sshkeys") == 0)
        return sshkeys(argc, argv);
    if (strcmp(argv[0], "tailscale") == 0)
        return tailscale(argc, argv);
    if (strcmp(argv[0], "service") == 0)
        return service(argc, argv);
    return -1;
}
