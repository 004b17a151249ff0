/* pocketenv-serve: the daemon and the commands that need its libraries.
 *
 * libmicrohttpd, libpq, libjwt and libsodium cost several milliseconds of
 * dynamic loading; linked into `pocketenv` they would slow every command
 * (and every sandbox start) down. So `pocketenv serve` and `pocketenv
 * token` exec this program instead (cli/cmd-serve.c), like image import.
 *
 *   pocketenv-serve [--data DIR] serve|token ARGS... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/log.h"
#include "daemon.h"

const char *pe_cli_data_dir;

int pe_cli_fail(const pe_err *err)
{
    fprintf(stderr, "pocketenv: %s\n", err->msg[0] ? err->msg : "failed");
    return PE_EXIT_FAIL;
}

int main(int argc, char **argv)
{
    int i = 1;

    /* A daemon says what it does: info level unless told otherwise. */
    setenv("POCKETENV_LOG", "info", 0);
    pe_log_init();
    if (i + 1 < argc && strcmp(argv[i], "--data") == 0) {
        pe_cli_data_dir = argv[i + 1];
        i += 2;
    }
    if (i < argc && strcmp(argv[i], "serve") == 0)
        return pe_daemon_serve_main(argc - i, argv + i);
    if (i < argc && strcmp(argv[i], "token") == 0)
        return pe_daemon_token_main(argc - i, argv + i);
    fprintf(stderr, "usage: pocketenv-serve [--data DIR] serve|token ARGS...\n");
    return 2;
}
