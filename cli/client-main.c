/* pocketenv-client: the commands that talk to the daemon's API.
 *
 * They need libcurl, libwslay, nettle and libsodium; loaded by `pocketenv`
 * itself those cost about 9 ms at every start, runtime commands and
 * sandbox starts included (bench/README.md). So `pocketenv` execs this
 * program for them (cli/cmd-serve.c), as it does pocketenv-serve for the
 * daemon.
 *
 *   pocketenv-client COMMAND ARGS...   (the commands of pe_cli_is_client) */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "core/log.h"

const char *pe_cli_data_dir;

int pe_cli_fail(const pe_err *err)
{
    fprintf(stderr, "pocketenv: %s\n", err->msg[0] ? err->msg : "failed");
    return PE_EXIT_FAIL;
}

int main(int argc, char **argv)
{
    int r;

    pe_log_init();
    if (argc < 2) {
        fprintf(stderr, "usage: pocketenv-client COMMAND ARGS...\n");
        return 2;
    }
    argc--, argv++;
    /* run -d: its words are run's (and CMD's), checked by pocketenv */
    if (strcmp(argv[0], "run") == 0)
        return pe_cmd_run_detached(argc, argv);
    /* stdout is the protocol's: no help or --json handling of ours */
    if (strcmp(argv[0], "mcp") == 0)
        return pe_cmd_mcp(argc, argv);
    r = pe_cli_help(argc, argv);
    if (r >= 0)
        return r;
    if (pe_cli_take_json(&argc, argv) < 0)
        return PE_CLI_EXIT_USAGE;
    if (strcmp(argv[0], "console") == 0 || strcmp(argv[0], "shell") == 0 ||
        strcmp(argv[0], "ssh") == 0 || strcmp(argv[0], "s") == 0)
        return pe_cmd_console(argc, argv);
    if (strcmp(argv[0], "exec") == 0)
        return pe_cmd_exec(argc, argv);
    if (strcmp(argv[0], "logs") == 0)
        return pe_cmd_logs(argc, argv);
    r = pe_cmd_api(argc, argv);
    if (r < 0)
        r = pe_cmd_res(argc, argv);
    if (r < 0)
        r = pe_cmd_ports(argc, argv);
    if (r < 0)
        r = pe_cmd_cp(argc, argv);
    if (r < 0)
        r = pe_cmd_keys(argc, argv);
    if (r < 0)
        r = pe_cmd_net(argc, argv);
    if (r < 0)
        r = pe_cmd_snapshot(argc, argv);
    if (r < 0)
        r = pe_cmd_node(argc, argv);
    if (r < 0) {
        fprintf(stderr, "pocketenv: unknown command '%s' (see pocketenv --help)\n", argv[0]);
        return 2;
    }
    return r;
}
