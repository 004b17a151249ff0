/* pocketenv: entry point and command dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#include "cli.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/security.h"

const char *pe_cli_data_dir;

static void usage(FILE *f)
{
    fprintf(
        f, "usage: pocketenv [--data DIR] COMMAND [ARGS...]\n"
           "\n"
           "Disposable, isolated Linux sandboxes.\n"
           "\n"
           "Commands:\n"
           "  run [OPTIONS] [IMAGE] [--] CMD [ARGS...]\n"
           "                                   run CMD in a fresh sandbox, then remove it\n"
           "                                   (-d: in the background, kept by the daemon)\n"
           "  runtime create|start|exec|stop|pause|resume|rm|ls|inspect|gc\n"
           "                                   manage persistent local sandboxes\n"
           "  image build|import|ls|rm          manage base images\n"
           "  serve [--listen HOST:PORT] [--store URL]\n"
           "                                   serve the XRPC API (the daemon)\n"
           "  token create [--did DID] [--ttl S]  an API token (without --did: the owner's)\n"
           "\n"
           "Commands that talk to the daemon ($POCKETENV_API_URL, default\n"
           "http://127.0.0.1:8789; token from $POCKETENV_TOKEN or ~/.pocketenv/token.json):\n"
           "  login [--token T] | logout | whoami\n"
           "  create|new [NAME] [-b BASE] [-p PROVIDER] [-r REPO] [-k] [-s]\n"
           "  start SANDBOX [-r REPO] [-k] [-s] | stop SANDBOX | rm|delete|remove [-f] SANDBOX...\n"
           "  ls | ps [-a] | inspect SANDBOX   your sandboxes, the running ones, one in full\n"
           "  exec [-it] SANDBOX COMMAND...  run COMMAND, exit with its exit code\n"
           "  logs [-f] SANDBOX|SERVICE_ID   what its services print\n"
           "  mcp                            MCP server on stdio for agents (docs/mcp.md)\n"
           "  console|shell|ssh|s [SANDBOX]  a terminal in it (Ctrl-] detaches)\n"
           "  cp|copy SOURCE DESTINATION     files in and out (SANDBOX:/path)\n"
           "  env|secret|file|volume put|list|delete ...   a sandbox's resources\n"
           "  expose SANDBOX PORT [DESC] | unexpose SANDBOX PORT | ports SANDBOX | vscode SANDBOX\n"
           "  backup create|list|restore ...   sshkeys put|get ...   tailscale put|get ...\n"
           "  service create|list|start|stop|restart|delete|logs ...\n"
           "  snapshot create SANDBOX NAME | snapshot ls|inspect|rm ...   saved sandbox states\n"
           "  fork SANDBOX [-n N]            N copies of a sandbox, from a snapshot of it\n"
           "  node ls | node drain|undrain NAME   daemons sharing a store (docs/cluster.md)\n"
           "  Listings take --json, for scripts and agents.\n"
           "\n"
           "Global options:\n"
           "  --data DIR   state directory (default /var/lib/pocketenv as root,\n"
           "               $XDG_DATA_HOME/pocketenv otherwise; env POCKETENV_DATA)\n"
           "\n"
           "Run 'pocketenv COMMAND --help' (or 'pocketenv help COMMAND') for a command's\n"
           "options and examples.\n");
}

int pe_cli_fail(const pe_err *err)
{
    fprintf(stderr, "pocketenv: %s\n", err->msg[0] ? err->msg : "failed");
    if (err->code == PE_ENOEXEC)
        return err->errnum == 2 /* ENOENT */ ? 127 : 126;
    return PE_EXIT_FAIL;
}

int pe_cli_open_runtime(pe_runtime *rt, pe_err *err)
{
    char *cache;

    if (pe_runtime_open(rt, pe_cli_data_dir, err) < 0)
        return -1;
    /* DATA/cache is root's: the compiled seccomp program lives there. */
    cache = pe_xasprintf("%s/cache", rt->data_dir);
    if (mkdir(cache, 0700) == 0 || errno == EEXIST)
        pe_seccomp_set_cache_dir(cache);
    free(cache);
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;

    pe_log_init();
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
            pe_cli_data_dir = argv[i + 1];
            i += 2;
        } else if (strncmp(argv[i], "--data=", 7) == 0) {
            pe_cli_data_dir = argv[i] + 7;
            i++;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("pocketenv 0.1.0\n");
            return 0;
        } else {
            fprintf(stderr, "pocketenv: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "pocketenv: missing COMMAND\n");
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[i], "help") == 0 && i + 1 == argc) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[i], "help") == 0 && !pe_cli_is_client(argv[i + 1])) {
        /* help X, for the commands that are not the client's: X --help */
        argv[i] = argv[i + 1];
        argv[i + 1] = (char *)"--help";
    }
    if (strcmp(argv[i], "run") == 0)
        return pe_cmd_run(argc - i, argv + i);
    if (strcmp(argv[i], "runtime") == 0)
        return pe_cmd_runtime(argc - i, argv + i);
    if (strcmp(argv[i], "image") == 0)
        return pe_cmd_image(argc - i, argv + i);
    if (strcmp(argv[i], "serve") == 0 || strcmp(argv[i], "token") == 0)
        return pe_cmd_serve(argc - i, argv + i);
    if (pe_cli_is_client(argv[i]) || strcmp(argv[i], "help") == 0)
        return pe_cmd_client(argc - i, argv + i);
    fprintf(stderr, "pocketenv: unknown command '%s' (see pocketenv --help)\n", argv[i]);
    return 2;
}
