/* The pocketenv command line: shared declarations of the front end.
 * Each command lives in its own cmd-*.c file; options are parsed from
 * tables (opts.c). Errors print one line to stderr and give exit code
 * 125 (our failure), 126/127 (command not executable / not found) or the
 * sandboxed command's own code. */
#ifndef PE_CLI_H
#define PE_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/runtime.h"

#define PE_EXIT_FAIL 125

typedef struct pe_opt {
    const char *name; /* long name without "--" */
    char short_name;  /* 0 if none */
    bool has_arg;
    int id;
    const char *arg_name;
    const char *help;
} pe_opt;

/* Parse options of `table` from argv[*idx...]. Stops at "--" (consumed), at
 * the first positional argument when stop_at_positional, or at the end.
 * Positional arguments before that are passed to on() with id 0. */
typedef int (*pe_opt_fn)(int id, const char *arg, void *ctx, pe_err *err);
int pe_opts_parse(const pe_opt *table, int argc, char **argv, int *idx, bool stop_at_positional,
                  pe_opt_fn on, void *ctx, pe_err *err);
void pe_opts_help(const pe_opt *table);

/* Sandbox options shared by `run` and `runtime create`. */
enum {
    OPT_IMAGE = 100,
    OPT_MEMORY,
    OPT_CPUS,
    OPT_PIDS,
    OPT_NOFILE,
    OPT_DISK,
    OPT_ENV,
    OPT_VOLUME,
    OPT_HOSTNAME,
    OPT_WORKDIR,
    OPT_TTY,
    OPT_USER,
    OPT_TIMEOUT,
    OPT_NET,
    OPT_PUBLISH,
    OPT_NET_ALLOW_HOST,
    OPT_USERNS,
    OPT_JSON,
    OPT_HELP,
    /* run's own */
    OPT_INTERACTIVE,
    OPT_DETACH,
    OPT_RM,
    OPT_RUN_NAME,
};
extern const pe_opt pe_sandbox_opts[];

typedef struct pe_cli_sandbox {
    pe_sandbox_cfg cfg;
    pe_proc_opts proc;
    char **envs; /* collected -e values */
    int n_env;
} pe_cli_sandbox;

void pe_cli_sandbox_init(pe_cli_sandbox *s);
void pe_cli_sandbox_clear(pe_cli_sandbox *s);
/* Handle one option of pe_sandbox_opts (and -t/--user/--timeout/-w). */
int pe_cli_sandbox_opt(int id, const char *arg, pe_cli_sandbox *s, pe_err *err);
int pe_cli_parse_user(const char *s, uint32_t *uid, uint32_t *gid, pe_err *err);
int pe_cli_parse_seconds(const char *s, double *out, pe_err *err);

/* pocketenv run's command line (cli/run-opts.c), shared by `pocketenv`
 * (one-shot runs) and pocketenv-client (run -d: a sandbox the daemon
 * keeps). */
typedef struct pe_run_args {
    pe_cli_sandbox s;
    bool detach, interactive, rm;
    const char *name; /* --name */
    uint64_t given;   /* bit (id - OPT_IMAGE) of every option given */
    int idx;          /* argv index of the first word after the options */
    bool dashdash;    /* the options ended with "--": argv[idx...] is CMD */
} pe_run_args;

/* Parse run's options from argv[1...] (argv[0] is "run"); --help prints
 * run's help and exits 0. -1 with err for a bad option. */
int pe_run_args_parse(int argc, char **argv, pe_run_args *a, pe_err *err);
/* Was option id (OPT_IMAGE...) given? */
static inline bool pe_run_given(const pe_run_args *a, int id)
{
    return (a->given >> (id - OPT_IMAGE)) & 1;
}
/* -d's sandbox is the daemon's: options it cannot honour are refused
 * here, naming each (-1 with err). */
int pe_run_args_check_detach(const pe_run_args *a, pe_err *err);
void pe_run_args_clear(pe_run_args *a);
/* run -d: the sandbox made through the daemon (cli/cmd-detach.c). */
int pe_cmd_run_detached(int argc, char **argv);

/* Report err on stderr; returns the exit code to use for it. */
int pe_cli_fail(const pe_err *err);
int pe_cli_open_runtime(pe_runtime *rt, pe_err *err);

extern const char *pe_cli_data_dir;

int pe_cmd_run(int argc, char **argv);
int pe_cmd_runtime(int argc, char **argv);
int pe_cmd_image(int argc, char **argv);
/* The API commands (cli/cmd-api.c): argv[0] is the command's name.
 * Returns -1 if it is not one of them. */
int pe_cmd_api(int argc, char **argv);
/* env, secret, file, volume (cli/cmd-res.c); -1 if argv[0] is none. */
int pe_cmd_res(int argc, char **argv);
/* expose, unexpose, ports, vscode (cli/cmd-ports.c); -1 if none. */
int pe_cmd_ports(int argc, char **argv);
int pe_cmd_net(int argc, char **argv); /* cmd-net.c: net policy */
/* cp|copy, backup (cli/cmd-cp.c); -1 if argv[0] is neither. */
int pe_cmd_cp(int argc, char **argv);
/* sshkeys, tailscale, service (cli/cmd-keys.c); -1 if none. */
int pe_cmd_keys(int argc, char **argv);
/* snapshot create|ls|inspect|rm, fork (cli/cmd-snapshot.c); -1 if neither. */
int pe_cmd_snapshot(int argc, char **argv);
int pe_cmd_node(int argc, char **argv);
/* pocketenv login HANDLE: AT Protocol sign-in through the daemon (cmd-login.c). */
int pe_cmd_login_handle(const char *handle);
/* POST /oauth/logout on base with token: 1 when the daemon revoked the
 * user's PDS session and API tokens, 0 when it had none for them (a token
 * of a local user), -1 when it could not be asked or failed. */
int pe_cmd_logout_remote(const char *base, const char *token);
/* exec (cli/cmd-exec.c) */
int pe_cmd_exec(int argc, char **argv);
/* logs [-f] SANDBOX|SERVICE_ID (cli/cmd-logs.c) */
int pe_cmd_logs(int argc, char **argv);
/* pocketenv mcp: the daemon's MCP server relayed over stdio (cmd-mcp.c). */
int pe_cmd_mcp(int argc, char **argv);
/* console|shell|ssh|s (cli/cmd-console.c) */
int pe_cmd_console(int argc, char **argv);
/* serve and token: exec pocketenv-serve (cli/cmd-serve.c) */
/* The API commands: exec pocketenv-client (cli/cmd-serve.c). */
bool pe_cli_is_client(const char *cmd);
int pe_cmd_client(int argc, char **argv);
int pe_cmd_serve(int argc, char **argv);

#endif
