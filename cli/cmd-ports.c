/* expose, unexpose, ports, vscode: a sandbox's published ports, as
 * upstream's commands (reference §6.2):
 *
 *   expose SANDBOX PORT [DESCRIPTION]   -> exposePort, prints the preview URL
 *   unexpose SANDBOX PORT               -> unexposePort
 *   ports SANDBOX                       -> getExposedPorts (PORT, DESCRIPTION, PREVIEW URL)
 *   vscode|code|code-server SANDBOX     -> exposeVscode, prints the URL
 *
 * Unlike upstream's vscode, it does not open a browser: it prints the URL
 * (a terminal session may have no browser to open). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"

#define EXIT_USAGE 2

static int parse_port(const char *s, long *port)
{
    char *end;

    errno = 0;
    *port = strtol(s, &end, 10);
    if (errno || end == s || *end || *port < 1 || *port > 65535) {
        fprintf(stderr, "pocketenv: port must be an integer from 1 to 65535, not '%s'\n", s);
        return -1;
    }
    return 0;
}

/* One call on sandbox: its id in the query. */
static int call(const char *nsid, const char *sandbox, json_t *body, json_t **out)
{
    json_t *params = json_pack("{s:s}", "id", sandbox);
    int r = pe_cli_call(nsid, params, body, out, sandbox);

    json_decref(params);
    return r;
}

static int expose(int argc, char **argv)
{
    json_t *body, *out = NULL;
    long port;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX PORT DESCRIPTION", 2, 3))
        return pe_cli_usage("expose SANDBOX PORT [DESCRIPTION]");
    if (parse_port(argv[2], &port) < 0)
        return EXIT_USAGE;
    body = json_pack("{s:I}", "port", (json_int_t)port);
    if (argc == 4)
        json_object_set_new(body, "description", json_string(argv[3]));
    r = call("io.pocketenv.sandbox.exposePort", argv[1], body, &out);
    json_decref(body);
    if (r == 0) {
        const char *url = json_string_value(json_object_get(out, "previewUrl"));
        printf("Port %ld of %s exposed\n", port, argv[1]);
        if (url)
            printf("Preview URL: %s\n", url);
    }
    json_decref(out);
    return r;
}

static int unexpose(int argc, char **argv)
{
    json_t *body, *out = NULL;
    long port;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX PORT", 2, 2))
        return pe_cli_usage("unexpose SANDBOX PORT");
    if (parse_port(argv[2], &port) < 0)
        return EXIT_USAGE;
    body = json_pack("{s:I}", "port", (json_int_t)port);
    r = call("io.pocketenv.sandbox.unexposePort", argv[1], body, &out);
    json_decref(body);
    json_decref(out);
    if (r == 0)
        printf("Port %ld of %s unexposed\n", port, argv[1]);
    return r;
}

static int ports(int argc, char **argv)
{
    json_t *out = NULL, *p;
    size_t i;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX", 1, 1))
        return pe_cli_usage("ports SANDBOX");
    r = call("io.pocketenv.sandbox.getExposedPorts", argv[1], NULL, &out);
    if (r != 0)
        return r;
    if (pe_cli_json) {
        pe_cli_print_json(json_object_get(out, "ports"));
        json_decref(out);
        return 0;
    }
    printf("%-7s %-30s %s\n", "PORT", "DESCRIPTION", "PREVIEW URL");
    json_array_foreach(json_object_get(out, "ports"), i, p)
    {
        const char *d = json_string_value(json_object_get(p, "description"));
        const char *u = json_string_value(json_object_get(p, "previewUrl"));
        printf("%-7lld %-30s %s\n", (long long)json_integer_value(json_object_get(p, "port")),
               d && *d ? d : "-", u && *u ? u : "-");
    }
    json_decref(out);
    return 0;
}

static int vscode(int argc, char **argv)
{
    json_t *out = NULL, *body;
    int r;

    if (pe_cli_bad_args(argc, argv, 1, "SANDBOX", 1, 1))
        return pe_cli_usage("vscode|code|code-server SANDBOX");
    body = json_object();
    r = call("io.pocketenv.sandbox.exposeVscode", argv[1], body, &out);
    json_decref(body);
    if (r == 0) {
        const char *url = json_string_value(json_object_get(out, "previewUrl"));
        printf("VS Code Server: %s\n", url && *url ? url : "(no URL)");
    }
    json_decref(out);
    return r;
}

int pe_cmd_ports(int argc, char **argv)
{
    const char *c = argv[0];

    if (strcmp(c, "expose") == 0)
        return expose(argc, argv);
    if (strcmp(c, "unexpose") == 0)
        return unexpose(argc, argv);
    if (strcmp(c, "ports") == 0)
        return ports(argc, argv);
    if (strcmp(c, "vscode") == 0 || strcmp(c, "code") == 0 || strcmp(c, "code-server") == 0)
        return vscode(argc, argv);
    return -1;
}
