/* Test helper: one AT Protocol identity resolution through lib/auth
 * (include/pocketenv/atproto.h), for tests/integration/test_atproto.py.
 *
 *   atproto-resolve [--plc URL] [--timeout-ms N] [--allow-http]
 *                   [--dns IPV4:PORT|off] [--connect-to H:P:A:P]...
 *                   [--step handle|did|all] HANDLE_OR_DID
 *   atproto-resolve ... --step record AT_URI
 *
 * Prints {"did","handle","pds"} ({"uri","cid","value"} for a record) and exits 0, or
 * {"error","message"} (error is the pe_err code's name) and exits 1; 2 for a bad command line.
 * Hosts on private addresses are allowed (the tests' servers are on
 * loopback) unless --deny-private.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pocketenv/atproto.h"

#define CONNECT_TO_MAX 16

static const char *code_name(int code)
{
    static const char *const names[] = {
        [PE_OK] = "OK",         [PE_EINVAL] = "EINVAL",       [PE_ENOENT] = "ENOENT",
        [PE_EEXIST] = "EEXIST", [PE_ESTATE] = "ESTATE",       [PE_ESYS] = "ESYS",
        [PE_EUNSUP] = "EUNSUP", [PE_ENOEXEC] = "ENOEXEC",     [PE_ENOTCAP] = "ENOTCAP",
        [PE_EAUTH] = "EAUTH",   [PE_ETIMEDOUT] = "ETIMEDOUT", [PE_EREMOTE] = "EREMOTE",
    };
    return code >= 0 && code < (int)(sizeof names / sizeof names[0]) ? names[code] : "?";
}

static int usage(void)
{
    fprintf(stderr,
            "usage: atproto-resolve [--plc URL] [--timeout-ms N] [--allow-http] "
            "[--dns IPV4:PORT|off] [--connect-to H:P:A:P]... [--step handle|did|all|record] "
            "HANDLE_OR_DID\n");
    return 2;
}

static int print(json_t *v, int rc)
{
    char *s = json_dumps(v, JSON_COMPACT);
    puts(s ? s : "{}");
    free(s);
    json_decref(v);
    return rc;
}

int main(int argc, char **argv)
{
    const char *connect_to[CONNECT_TO_MAX + 1] = {0};
    pe_atproto_cfg cfg = {.connect_to = connect_to, .allow_private = true}; /* loopback servers */
    const char *step = "all";
    pe_atproto_identity id = {0};
    pe_err err = {0};
    size_t nconn = 0;
    int i = 1, rc;

    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--allow-http") == 0)
            cfg.allow_http = true;
        else if (strcmp(argv[i], "--deny-private") == 0)
            cfg.allow_private = false;
        else if (strcmp(argv[i], "--plc") == 0)
            cfg.plc_url = argv[++i];
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            cfg.timeout_ms = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--dns") == 0)
            cfg.dns_server = argv[++i];
        else if (strcmp(argv[i], "--step") == 0)
            step = argv[++i];
        else if (strcmp(argv[i], "--connect-to") == 0 && nconn < CONNECT_TO_MAX)
            connect_to[nconn++] = argv[++i];
        else
            return usage();
    }
    if (i + 1 != argc)
        return usage();
    if (strcmp(step, "record") == 0) { /* argv[i]: an at:// URI */
        pe_atproto_record rec;
        if (pe_atproto_get_record(&cfg, argv[i], &rec, &err) < 0)
            return print(json_pack("{s:s, s:s}", "error", code_name(err.code), "message", err.msg),
                         1);
        return print(
            json_pack("{s:s, s:s, s:o}", "uri", rec.uri, "cid", rec.cid, "value", rec.value), 0);
    }
    if (strcmp(step, "handle") == 0)
        rc = pe_atproto_resolve_handle(&cfg, argv[i], id.did, &err);
    else if (strcmp(step, "did") == 0)
        rc = pe_atproto_resolve_did(&cfg, argv[i], id.pds, id.handle, &err);
    else
        rc = pe_atproto_resolve(&cfg, argv[i], &id, &err);
    if (rc < 0)
        return print(json_pack("{s:s, s:s}", "error", code_name(err.code), "message", err.msg), 1);
    return print(json_pack("{s:s, s:s, s:s}", "did", step[0] == 'd' ? argv[i] : id.did, "handle",
                           id.handle, "pds", id.pds),
                 0);
}
