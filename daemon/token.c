/* `pocketenv token create --did DID --ttl SECONDS`: mint an API token with
 * the daemon's key (DATA/keys), for other users and for tests. Prints the
 * token on stdout and nothing else: it is a credential. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "daemon.h"

enum { T_DID = 1, T_TTL, T_DATA, T_HELP };

static const pe_opt token_opts[] = {
    {"did", 0, true, T_DID, "DID", "the user the token speaks for (required)"},
    {"ttl", 0, true, T_TTL, "S", "lifetime in seconds (default 30 days)"},
    {"data", 0, true, T_DATA, "DIR", "state directory (as the global --data)"},
    {"help", 'h', false, T_HELP, NULL, "show this help"},
    {NULL, 0, false, 0, NULL, NULL},
};

struct token_args {
    const char *did, *data;
    long long ttl;
    int npos;
    bool help;
};

static int on_opt(int id, const char *arg, void *ctx, pe_err *err)
{
    struct token_args *a = ctx;
    char *end;

    switch (id) {
    case 0:
        if (a->npos++ > 0 || strcmp(arg, "create") != 0)
            return pe_err_set(err, PE_EINVAL, 0, "usage: pocketenv token create --did DID");
        return 0;
    case T_DID:
        a->did = arg;
        return 0;
    case T_TTL:
        errno = 0;
        a->ttl = strtoll(arg, &end, 10);
        if (errno || end == arg || *end)
            return pe_err_set(err, PE_EINVAL, 0, "--ttl: want seconds, got '%s'", arg);
        return 0;
    case T_DATA:
        a->data = arg;
        return 0;
    default:
        a->help = true;
        return 0;
    }
}

int pe_daemon_token_main(int argc, char **argv)
{
    struct token_args a = {.ttl = 30LL * 24 * 3600};
    pe_auth *auth = NULL;
    pe_runtime rt;
    char *jwt = NULL;
    pe_err err;
    int idx = 1, r;

    pe_err_clear(&err);
    if (pe_opts_parse(token_opts, argc, argv, &idx, false, on_opt, &a, &err) < 0)
        return pe_cli_fail(&err);
    if (a.help) {
        printf("usage: pocketenv token create --did DID [--ttl S] [--data DIR]\n\n");
        pe_opts_help(token_opts);
        printf("\nExamples:\n"
               "  pocketenv token create --did did:key:zAlice --ttl 86400\n"
               "  pocketenv login --token \"$(pocketenv token create --did did:key:zAlice)\"\n");
        return 0;
    }
    if (a.npos == 0 || a.did == NULL) {
        pe_err_set(&err, PE_EINVAL, 0, "usage: pocketenv token create --did DID [--ttl S]");
        return pe_cli_fail(&err);
    }
    /* The runtime resolves the default data directory as every command does. */
    if (pe_runtime_open(&rt, a.data ? a.data : pe_cli_data_dir, &err) < 0)
        return pe_cli_fail(&err);
    r = pe_auth_open(rt.data_dir, &auth, &err);
    if (r == 0)
        r = pe_auth_token_mint(auth, a.did, a.ttl, PE_AUTH_SCOPE_API, &jwt, &err);
    if (r == 0)
        printf("%s\n", jwt);
    free(jwt);
    pe_auth_close(auth);
    pe_runtime_close(&rt);
    return r < 0 ? pe_cli_fail(&err) : 0;
}
