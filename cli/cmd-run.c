/* pocketenv run: one-shot sandbox. Exit code is the command's (128+signal
 * when it was killed, 124 on --timeout); 125 when pocketenv itself fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int on_opt(int id, const char *arg, void *ctx, pe_err *err)
{
    pe_cli_sandbox *s = ctx;
    if (id == OPT_HELP) {
        printf("usage: pocketenv run [OPTIONS] [--] CMD [ARGS...]\n\n"
               "Create a sandbox, run CMD in it with this terminal's input and output,\n"
               "and remove the sandbox when CMD ends.\n\nOptions:\n");
        pe_opts_help(pe_sandbox_opts);
        printf("\nExamples:\n  pocketenv run --image busybox -- sh -c 'echo hello'\n"
               "  pocketenv run -t --memory 512m -v $PWD:/work -w /work -- bash\n");
        exit(0);
    }
    return pe_cli_sandbox_opt(id, arg, s, err);
}

int pe_cmd_run(int argc, char **argv)
{
    pe_cli_sandbox s;
    pe_runtime rt;
    pe_proc_result res;
    pe_err err;
    int idx = 1, r, code;

    pe_err_clear(&err);
    pe_cli_sandbox_init(&s);
    r = pe_opts_parse(pe_sandbox_opts, argc, argv, &idx, true, on_opt, &s, &err);
    if (r != 0) {
        pe_cli_sandbox_clear(&s);
        return r > 0 ? 0 : pe_cli_fail(&err);
    }
    if (idx >= argc) {
        pe_cli_sandbox_clear(&s);
        fprintf(stderr,
                "pocketenv: run: no command given (usage: pocketenv run [OPTIONS] -- CMD)\n");
        return PE_EXIT_FAIL;
    }
    s.proc.argv = argv + idx;
    if (pe_cli_open_runtime(&rt, &err) < 0) {
        pe_cli_sandbox_clear(&s);
        return pe_cli_fail(&err);
    }
    if (pe_runtime_run(&rt, &s.cfg, &s.proc, &res, &err) < 0) {
        if (err.code == PE_ENOEXEC)
            pe_err_prefix(&err, "%s", argv[idx]);
        code = pe_cli_fail(&err);
    } else if (res.timed_out) {
        fprintf(stderr, "pocketenv: run: timed out after %gs\n", s.proc.timeout);
        code = 124;
    } else {
        code = res.exit_code;
    }
    pe_runtime_close(&rt);
    pe_cli_sandbox_clear(&s);
    return code;
}
