/* Commands that live in helper programs (found as core/install.h says),
 * which carry libraries `pocketenv` must not load:
 *   serve, token      -> pocketenv-serve (the daemon's, see daemon/main.c)
 *   the API commands  -> pocketenv-client (libcurl & co, cli/client-main.c) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "core/install.h"
#include "core/util.h"

bool pe_cli_is_client(const char *cmd)
{
    static const char *const names[] = {
        "login",  "logout",   "whoami",   "create",    "new",     "start",       "stop",
        "rm",     "delete",   "remove",   "ls",        "ps",      "exec",        "console",
        "shell",  "ssh",      "s",        "env",       "secret",  "file",        "volume",
        "expose", "unexpose", "ports",    "vscode",    "code",    "code-server", "cp",
        "copy",   "backup",   "sshkeys",  "tailscale", "service", "inspect",     "logs",
        "mcp",    "net",      "snapshot", "fork",      "node",    "idle",
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(names); i++)
        if (strcmp(cmd, names[i]) == 0)
            return true;
    return false;
}

/* The process becomes the helper, so signals (SIGTERM to the daemon,
 * SIGWINCH to a console) reach it directly. */
static int exec_helper(const char *name, int argc, char **argv, bool pass_data)
{
    char **args = NULL;
    pe_err err = {0};
    char *path = pe_install_helper(name, &err);
    int n = 0;

    if (path == NULL) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return PE_EXIT_FAIL;
    }
    args = pe_xcalloc((size_t)argc + 4, sizeof(char *));
    args[n++] = (char *)name;
    if (pass_data && pe_cli_data_dir) {
        args[n++] = (char *)"--data";
        args[n++] = (char *)pe_cli_data_dir;
    }
    for (int i = 0; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(path, args);
    fprintf(stderr, "pocketenv: run %s: %s\n", path, strerror(errno));
    free(path);
    free(args);
    return PE_EXIT_FAIL;
}

/* argv[0] is the command ("serve" or "token"). */
int pe_cmd_serve(int argc, char **argv)
{
    return exec_helper("pocketenv-serve", argc, argv, true);
}

/* argv[0] is one of pe_cli_is_client's commands. */
int pe_cmd_client(int argc, char **argv)
{
    return exec_helper("pocketenv-client", argc, argv, false);
}
