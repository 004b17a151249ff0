/* net policy: a sandbox's egress policy (getNetworkPolicy /
 * putNetworkPolicy, docs/design/network.md "Egress policy"):
 *
 *   net policy SANDBOX                      show it (--json: the policy object)
 *   net policy SANDBOX MODE [--allow X]... [--deny X]... [--port P]...
 *              [--max-connections N] [--max-rate KBPS] [--secret NAME=HOST[,HOST]...]...
 *                                           replace it; X is a name, *.name
 *                                           or an IPv4 CIDR (a.b.c.d[/len]);
 *                                           --secret makes secret NAME
 *                                           egress-only, bound to HOSTs
 *   net policy SANDBOX --reset              remove it: the open network again
 *
 * A set replaces the whole policy: what the command line says is what
 * holds, nothing merged from before. The daemon checks every entry. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"

#define USAGE                                                                                      \
    "net policy SANDBOX [MODE [--allow X]... [--deny X]... [--port P]... [--max-connections N] "   \
    "[--max-rate KBPS] [--secret NAME=HOST[,HOST]...]...] | --reset"

/* An address or CIDR goes to the *Cidrs lists, anything else is a name. */
static bool is_cidr(const char *s)
{
    return s[0] != '\0' && strspn(s, "0123456789./") == strlen(s);
}

static void print_list(const char *label, json_t *a, json_t *b)
{
    json_t *v;
    size_t i;
    bool any = false;

    printf("%-7s", label);
    json_array_foreach(a, i, v)
    {
        printf(" %s", json_string_value(v));
        any = true;
    }
    json_array_foreach(b, i, v)
    {
        printf(" %s", json_string_value(v));
        any = true;
    }
    printf("%s\n", any ? "" : " -");
}

static void show(json_t *out)
{
    json_t *p = json_object_get(out, "policy"), *v;
    size_t i;

    if (pe_cli_json) {
        pe_cli_print_json(p);
        return;
    }
    printf("mode:   %s%s\n", json_string_value(json_object_get(p, "mode")),
           json_is_true(json_object_get(out, "isDefault")) ? " (no policy set)" : "");
    print_list("allow:", json_object_get(p, "allowDomains"), json_object_get(p, "allowCidrs"));
    print_list("deny:", json_object_get(p, "denyDomains"), json_object_get(p, "denyCidrs"));
    printf("ports: ");
    json_array_foreach(json_object_get(p, "ports"), i, v)
        printf(" %lld", (long long)json_integer_value(v));
    printf("%s\n", json_array_size(json_object_get(p, "ports")) ? "" : " all");
    /* limits and secrets only when set: the common case stays four lines */
    if (json_object_get(p, "maxConnections") || json_object_get(p, "maxRateKBps")) {
        printf("limits:");
        if (json_object_get(p, "maxConnections"))
            printf(" %lld connections",
                   (long long)json_integer_value(json_object_get(p, "maxConnections")));
        if (json_object_get(p, "maxRateKBps"))
            printf(" %lld KB/s", (long long)json_integer_value(json_object_get(p, "maxRateKBps")));
        printf("\n");
    }
    json_array_foreach(json_object_get(p, "secrets"), i, v)
    {
        json_t *h;
        size_t j;
        printf("secret: %s ->", json_string_value(json_object_get(v, "name")));
        json_array_foreach(json_object_get(v, "hosts"), j, h) printf(" %s", json_string_value(h));
        printf("\n");
    }
}

/* An integer option from 1 to max; false (said on stderr) otherwise. */
static bool int_opt(const char *o, const char *v, long max, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(v, &end, 10);
    if (errno || end == v || *end || *out < 1 || *out > max) {
        fprintf(stderr, "pocketenv: %s must be an integer from 1 to %ld, not '%s'\n", o, max, v);
        return false;
    }
    return true;
}

/* NAME=HOST[,HOST]... into {name, hosts}; the daemon checks both. */
static json_t *secret_binding(const char *v)
{
    const char *eq = strchr(v, '='), *h;
    json_t *hosts;

    if (eq == NULL || eq == v) {
        fprintf(stderr, "pocketenv: --secret wants NAME=HOST[,HOST]..., not '%s'\n", v);
        return NULL;
    }
    hosts = json_array();
    for (h = eq + 1; *h;) {
        size_t n = strcspn(h, ",");
        if (n > 0)
            json_array_append_new(hosts, json_stringn(h, n));
        h += n + (h[n] == ',');
    }
    return json_pack("{s:s%, s:o}", "name", v, (size_t)(eq - v), "hosts", hosts);
}

/* argv[3..]: MODE and its options, into a policy object; NULL on a bad
 * command line (said on stderr). */
static json_t *parse_policy(int argc, char **argv)
{
    json_t *p = json_pack("{s:s, s:[], s:[], s:[], s:[], s:[]}", "mode", argv[3], "allowDomains",
                          "denyDomains", "allowCidrs", "denyCidrs", "ports");

    for (int i = 4; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--allow") != 0 && strcmp(o, "--deny") != 0 && strcmp(o, "--port") != 0 &&
            strcmp(o, "--max-connections") != 0 && strcmp(o, "--max-rate") != 0 &&
            strcmp(o, "--secret") != 0) {
            fprintf(stderr, "pocketenv: net policy: unknown option '%s'\n", o);
            goto bad;
        }
        if (v == NULL) {
            fprintf(stderr, "pocketenv: net policy: %s needs a value\n", o);
            goto bad;
        }
        i++;
        if (strcmp(o, "--max-connections") == 0 || strcmp(o, "--max-rate") == 0) {
            bool conns = strcmp(o, "--max-connections") == 0;
            long n;
            if (!int_opt(o, v, conns ? 65535 : 10000000, &n))
                goto bad;
            json_object_set_new(p, conns ? "maxConnections" : "maxRateKBps", json_integer(n));
        } else if (strcmp(o, "--secret") == 0) {
            json_t *b = secret_binding(v), *list = json_object_get(p, "secrets");
            if (b == NULL)
                goto bad;
            if (list == NULL)
                json_object_set_new(p, "secrets", list = json_array());
            json_array_append_new(list, b);
        } else if (strcmp(o, "--port") == 0) {
            char *end;
            long port;
            errno = 0;
            port = strtol(v, &end, 10);
            if (errno || end == v || *end || port < 1 || port > 65535) {
                fprintf(stderr, "pocketenv: port must be an integer from 1 to 65535, not '%s'\n",
                        v);
                goto bad;
            }
            json_array_append_new(json_object_get(p, "ports"), json_integer(port));
        } else {
            bool allow = strcmp(o, "--allow") == 0;
            const char *key = is_cidr(v) ? (allow ? "allowCidrs" : "denyCidrs")
                                         : (allow ? "allowDomains" : "denyDomains");
            json_array_append_new(json_object_get(p, key), json_string(v));
        }
    }
    return p;
bad:
    json_decref(p);
    return NULL;
}

static int policy(int argc, char **argv)
{
    json_t *params, *body = NULL, *out = NULL;
    const char *nsid = "io.pocketenv.sandbox.getNetworkPolicy";
    int r;

    if (argc < 3 || argv[2][0] == '-')
        return pe_cli_usage(USAGE);
    if (argc == 4 && strcmp(argv[3], "--reset") == 0) {
        body = json_pack("{s:n}", "policy");
    } else if (argc >= 4) {
        json_t *p = parse_policy(argc, argv);
        if (p == NULL)
            return pe_cli_usage(USAGE);
        body = json_pack("{s:o}", "policy", p);
    }
    if (body != NULL)
        nsid = "io.pocketenv.sandbox.putNetworkPolicy";
    params = json_pack("{s:s}", "id", argv[2]);
    r = pe_cli_call(nsid, params, body, &out, argv[2]);
    json_decref(params);
    json_decref(body);
    if (r == 0)
        show(out);
    json_decref(out);
    return r;
}

int pe_cmd_net(int argc, char **argv)
{
    if (strcmp(argv[0], "net") != 0)
        return -1;
    if (argc >= 2 && strcmp(argv[1], "policy") == 0)
        return policy(argc, argv);
    return pe_cli_usage(USAGE);
}
