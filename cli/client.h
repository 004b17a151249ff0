/* What the API commands of pocketenv-client share besides the API client
 * (api.h): help, --json and the way they print. */
#ifndef PE_CLI_CLIENT_H
#define PE_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define PE_CLI_EXIT_API 1   /* the daemon refused or was not there */
#define PE_CLI_EXIT_USAGE 2 /* bad arguments */

/* argv[0] is a command (or "help"). If its arguments ask for help, print
 * it and return 0 (or PE_CLI_EXIT_USAGE for a bad `help X`); else -1. */
int pe_cli_help(int argc, char **argv);

/* Bad arguments, said the same way by every command: first what was
 * wrong, one line ("pocketenv: missing SANDBOX", "pocketenv: unknown
 * option -x", "pocketenv: unexpected argument 'y'"), then the usage.
 *
 * pe_cli_bad_args: do argv[from..argc) fit the positional words `names`
 * ("SANDBOX PORT DESCRIPTION"), of which `required` must be there and at
 * most `max` (-1: any number)? If not, say why on stderr and return true.
 * A word starting with '-' is taken for an unknown option when the count
 * is wrong or it stands first (where an identifier goes); elsewhere it is
 * a value ("-1"). */
bool pe_cli_bad_args(int argc, char **argv, int from, const char *names, int required, int max);
/* "pocketenv: " and fmt on stderr (what was wrong). */
void pe_cli_why(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The usage lines (after "usage: pocketenv ") on stderr; returns
 * PE_CLI_EXIT_USAGE. */
int pe_cli_usage(const char *usage);

/* --json was given; the command prints the API's answer as JSON. */
extern bool pe_cli_json;
/* Take --json out of argv, setting pe_cli_json; -1 (after saying so on
 * stderr) if the command does not take it. */
int pe_cli_take_json(int *argc, char **argv);
/* v on stdout, indented, with a final newline. Returns 0. */
int pe_cli_print_json(json_t *v);

/* One API call with a token (api.h); on failure the error is said on
 * stderr, naming sandbox if the daemon does not know it, and the exit
 * code returned. *out: the answer (NULL on failure). */
int pe_cli_call(const char *nsid, json_t *params, json_t *body, json_t **out, const char *sandbox);

/* "3 minutes ago" (ago) or "3 minutes" since an ISO 8601 UTC time; "-"
 * if there is none. */
void pe_cli_since(const char *iso, bool ago, char *out, size_t size);
/* Wait (up to 10 minutes: a first image may be being built) until the
 * sandbox is no longer INITIALIZING, showing on a terminal (stderr) what
 * the daemon says it is doing. 0 once RUNNING; otherwise its status and
 * reason said on stderr, and PE_CLI_EXIT_API. */
int pe_cli_wait_running(const char *name);

/* A service's status as `service ls` and `logs` say it: STOPPED, RUNNING,
 * or, for one that keeps failing, "CRASHLOOP (exited 1, restarted 3 times,
 * last: <the last line it wrote>)" and likewise FAILED once given up. */
#define PE_SERVICE_STATUS_MAX 256
void pe_cli_service_status(json_t *svc, char *out, size_t size);

/* o's string member k, or "-". */
const char *pe_cli_str(json_t *o, const char *k);

#endif
