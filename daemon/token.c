/* `pocketenv token create --did DID --ttl SECONDS`: mint an API token with
 * the daemon's key (DATA/keys), for other users and for tests. Prints the
 * token on stdout and nothing else: it is a credential.
 *
 * `pocketenv token revoke --did DID`: every token of DID issued until now
 * stops working. It is recorded in the store (users.tokens_valid_after),
 * which every daemon on that store reads on its next tick (at once on a
 * PostgreSQL store, whose nodes hear it: daemon/cluster-listen.c); tokens
 * minted afterwards are valid. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/util.h"
#include "daemon.h"

enum { T_DID = 1, T_TTL, T_DATA, T_STORE, T_E2B, T_HELP };

static const pe_opt token_opts[] = {
    {"did", 0, true, T_DID, "DID",
     "the user the token speaks for (create: the daemon's owner if left out)"},
    {"ttl", 0, true, T_TTL, "S", "lifetime in seconds (default 30 days)"},
    {"data", 0, true, T_DATA, "DIR", "state directory (as the global --data)"},
    {"store", 0, true, T_STORE, "URL", "the daemon's store, as serve --store (DATA/pocketenv.db)"},
    {"e2b", 0, false, T_E2B, NULL,
     "create: print it as an E2B API key (e2b_ and hex), for E2B's SDKs (docs/e2b.md)"},
    {"help", 'h', false, T_HELP, NULL, "show this help"},
    {NULL, 0, false, 0, NULL, NULL},
};

#define USAGE                                                                                      \
    "usage: pocketenv token create [--did DID] [--ttl S] [--e2b] [--data DIR] [--store URL]\n"     \
    "       pocketenv token revoke --did DID [--data DIR] [--store URL]"

struct token_args {
    const char *did, *data, *store;
    long long ttl;
    int npos;
    bool help, revoke, e2b;
};

static int on_opt(int id, const char *arg, void *ctx, pe_err *err)
{
    struct token_args *a = ctx;
    char *end;

    switch (id) {
    case 0:
        if (a->npos++ > 0)
            return pe_err_set(err, PE_EINVAL, 0, "token: unexpected argument '%s'\n" USAGE, arg);
        if (strcmp(arg, "create") != 0 && strcmp(arg, "revoke") != 0)
            return pe_err_set(err, PE_EINVAL, 0,
                              "token: unknown command '%s' (create or revoke)\n" USAGE, arg);
        a->revoke = strcmp(arg, "revoke") == 0;
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
    case T_STORE:
        a->store = arg;
        return 0;
    case T_E2B:
        a->e2b = true;
        return 0;
    default:
        a->help = true;
        return 0;
    }
}

/* Record the revocation: tokens of did issued up to this second are
 * refused, those of the next second on are valid. */
static int revoke_tokens(pe_store *s, const char *did, pe_err *err)
{
    pe_store_user u = {.did = did, .handle = "handle.invalid"}; /* atproto: unknown */
    pe_store_user old;
    int64_t after = (time(NULL) + 1) * 1000LL;

    if (pe_store_user_get(s, did, &old, err) < 0) {
        if (err->code != PE_ENOENT || pe_store_user_upsert(s, &u, err) < 0)
            return -1;
    } else {
        pe_store_user_clear(&old);
    }
    if (pe_store_user_revoke_tokens(s, did, after, err) < 0)
        return -1;
    fprintf(stderr,
            "revoked every token of %s issued until now; running daemons refuse them "
            "from their next tick (serve --tick), at once on a PostgreSQL store\n",
            did);
    return 0;
}

int pe_daemon_token_main(int argc, char **argv)
{
    struct token_args a = {.ttl = 30LL * 24 * 3600};
    pe_auth *auth = NULL;
    pe_store *s = NULL;
    cleanup_free char *url = NULL;
    pe_runtime rt;
    char *jwt = NULL;
    pe_err err;
    int idx = 1, r;

    pe_err_clear(&err);
    if (pe_opts_parse(token_opts, argc, argv, &idx, false, on_opt, &a, &err) < 0)
        return pe_cli_fail(&err);
    if (a.help) {
        printf(USAGE "\n\n"
                     "create prints a new API token for DID (without --did, for the daemon's "
                     "owner: after\n`pocketenv logout`, `pocketenv login --token \"$(pocketenv "
                     "token create)\"` logs the owner in\nagain); revoke makes every token of DID "
                     "issued until now invalid (tokens created\nafterwards work).\n\n");
        pe_opts_help(token_opts);
        printf("\nExamples:\n"
               "  pocketenv token create --did did:key:zAlice --ttl 86400\n"
               "  pocketenv login --token \"$(pocketenv token create)\"      # the owner\n"
               "  pocketenv login --token \"$(pocketenv token create --did did:key:zAlice)\"\n"
               "  pocketenv token revoke --did did:key:zAlice\n"
               "  E2B_API_KEY=$(pocketenv token create --e2b)                # E2B's SDKs\n");
        return 0;
    }
    if (a.npos == 0 || (a.did == NULL && a.revoke)) {
        pe_err_set(&err, PE_EINVAL, 0, "%s\n" USAGE,
                   a.npos == 0 ? "token: missing create or revoke"
                               : "token revoke: missing --did DID");
        return pe_cli_fail(&err);
    }
    /* The runtime resolves the default data directory as every command does. */
    if (pe_runtime_open(&rt, a.data ? a.data : pe_cli_data_dir, &err) < 0)
        return pe_cli_fail(&err);
    url = a.store ? pe_xstrdup(a.store) : pe_xasprintf("sqlite:%s/pocketenv.db", rt.data_dir);
    r = pe_auth_open(rt.data_dir, &auth, &err);
    if (r == 0 && a.did == NULL)
        a.did = pe_auth_owner_did(auth); /* create without --did: the owner */
    if (r == 0 && (s = pe_store_open(url, &err)) == NULL)
        r = pe_err_prefix(&err, "open store");
    if (r == 0 && a.revoke)
        r = revoke_tokens(s, a.did, &err);
    else if (r == 0 && (r = pe_daemon_auth_refresh(auth, s, &err)) == 0)
        r = pe_auth_token_mint(auth, a.did, a.ttl, PE_AUTH_SCOPE_API, &jwt, &err);
    if (r == 0 && jwt && a.e2b) { /* E2B's SDKs take only keys shaped e2b_<hex> */
        fputs("e2b_", stdout);
        for (const char *c = jwt; *c; c++)
            printf("%02x", (unsigned char)*c);
        putchar('\n');
    } else if (r == 0 && jwt) {
        printf("%s\n", jwt);
    }
    free(jwt);
    pe_store_close(s);
    pe_auth_close(auth);
    pe_runtime_close(&rt);
    return r < 0 ? pe_cli_fail(&err) : 0;
}
