/* pocketenv node ls|drain|undrain: the daemons sharing one PostgreSQL store
 * (io.pocketenv.node.listNodes, drainNode; docs/cluster.md). The daemon
 * owner's token only. */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "cli.h"
#include "client.h"
#include "core/util.h"

#define USAGE                                                                                      \
    "node ls|list\n"                                                                               \
    "node drain NAME | node undrain NAME"

static const char *str(json_t *v, const char *key)
{
    return json_string_value(json_object_get(v, key)) ?: "-";
}

static int list(void)
{
    json_t *out = NULL, *v;
    size_t i;
    int r = pe_cli_call("io.pocketenv.node.listNodes", NULL, NULL, &out, NULL);

    if (r != 0)
        return r;
    if (pe_cli_json) {
        pe_cli_print_json(json_object_get(out, "nodes"));
        json_decref(out);
        return 0;
    }
    printf("%-20s %-6s %-9s %-32s %-6s %-9s %-10s %s\n", "NAME", "STATUS", "DRAINING", "ADDRESS",
           "CPUS", "MEM FREE", "SANDBOXES", "SLOTS FREE");
    json_array_foreach(json_object_get(out, "nodes"), i, v)
    {
        char name[40];

        snprintf(name, sizeof(name), "%s%s", str(v, "name"),
                 json_is_true(json_object_get(v, "self")) ? " *" : "");
        printf("%-20s %-6s %-9s %-32s %-6lld %-9lld %-10lld %lld\n", name, str(v, "status"),
               json_is_true(json_object_get(v, "draining")) ? "yes" : "no", str(v, "address"),
               (long long)json_integer_value(json_object_get(v, "cpus")),
               (long long)(json_integer_value(json_object_get(v, "memFree")) >> 20),
               (long long)json_integer_value(json_object_get(v, "sandboxes")),
               (long long)json_integer_value(json_object_get(v, "slotsFree")));
    }
    json_decref(out);
    return 0;
}

static int drain(const char *name, bool draining)
{
    json_t *body = json_pack("{s:s,s:b}", "name", name, "draining", draining), *out = NULL;
    int r = pe_cli_call("io.pocketenv.node.drainNode", NULL, body, &out, NULL);

    json_decref(body);
    if (r != 0)
        return r;
    if (pe_cli_json)
        pe_cli_print_json(out);
    else if (draining)
        printf("Node %s drains: no new sandboxes go there; its sandboxes stay until stopped\n",
               name);
    else
        printf("Node %s takes new sandboxes again\n", name);
    json_decref(out);
    return 0;
}

int pe_cmd_node(int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";

    if (strcmp(argv[0], "node") != 0)
        return -1;
    if (strcmp(verb, "ls") == 0 || strcmp(verb, "list") == 0) {
        if (pe_cli_bad_args(argc, argv, 2, "", 0, 0))
            return pe_cli_usage(USAGE);
        return list();
    }
    if (strcmp(verb, "drain") == 0 || strcmp(verb, "undrain") == 0) {
        if (pe_cli_bad_args(argc, argv, 2, "NAME", 1, 1))
            return pe_cli_usage(USAGE);
        return drain(argv[2], strcmp(verb, "drain") == 0);
    }
    if (argc < 2)
        pe_cli_why("missing COMMAND (ls, drain or undrain)");
    else
        pe_cli_why("unknown node command '%s' (ls, drain or undrain)", verb);
    return pe_cli_usage(USAGE);
}
