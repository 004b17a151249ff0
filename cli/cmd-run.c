/* pocketenv run: one-shot sandbox. Exit code is the command's (128+signal
 * when it was killed, 124 on --timeout); 125 when pocketenv itself fails
 * or the arguments are wrong (as docker run). run -d is the daemon's
 * (pocketenv-client, cli/cmd-detach.c); its arguments are checked here
 * first, so both fail alike. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/util.h"
#include "image/image.h"

/* No CMD: the image's shell, chosen inside the sandbox (never by looking
 * at its files from the host). */
static char *shell_argv[] = {
    (char *)"/bin/sh", (char *)"-c",
    (char *)"if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi", NULL};

int pe_cmd_run(int argc, char **argv)
{
    pe_run_args a;
    pe_runtime rt;
    pe_proc_result res;
    pe_err err;
    bool image_word = false;
    int idx, code;

    pe_err_clear(&err);
    if (pe_run_args_parse(argc, argv, &a, &err) < 0 ||
        (a.detach && pe_run_args_check_detach(&a, &err) < 0)) {
        pe_run_args_clear(&a);
        return pe_cli_fail(&err);
    }
    if (a.detach) {
        pe_run_args_clear(&a);
        return pe_cmd_client(argc, argv);
    }
    if (pe_cli_open_runtime(&rt, &err) < 0) {
        pe_run_args_clear(&a);
        return pe_cli_fail(&err);
    }
    idx = a.idx;
    /* docker's `run IMAGE CMD`: the first word is the image when it names
     * one; `run CMD` (the default image) and `run -- CMD` stay as they were. */
    if (!a.dashdash && !pe_run_given(&a, OPT_IMAGE) && idx < argc &&
        pe_image_known(rt.data_dir, argv[idx])) {
        pe_cli_sandbox_opt(OPT_IMAGE, argv[idx++], &a.s, &err);
        image_word = true;
        if (idx < argc && strcmp(argv[idx], "--") == 0)
            idx++;
    }
    if (idx >= argc && !image_word && !pe_run_given(&a, OPT_IMAGE)) {
        pe_runtime_close(&rt);
        pe_run_args_clear(&a);
        fprintf(stderr, "pocketenv: run: missing IMAGE or CMD (usage: pocketenv run [OPTIONS] "
                        "[IMAGE] [--] CMD [ARGS...])\n");
        return PE_EXIT_FAIL;
    }
    a.s.proc.argv = idx < argc ? argv + idx : shell_argv;
    if (a.name && a.s.cfg.hostname == NULL)
        a.s.cfg.hostname = pe_xstrdup(a.name);
    if (pe_runtime_run(&rt, &a.s.cfg, &a.s.proc, &res, &err) < 0) {
        if (err.code == PE_ENOEXEC)
            pe_err_prefix(&err, "%s", a.s.proc.argv[0]);
        code = pe_cli_fail(&err);
    } else if (res.timed_out) {
        fprintf(stderr, "pocketenv: run: timed out after %gs\n", a.s.proc.timeout);
        code = 124;
    } else {
        code = res.exit_code;
    }
    pe_runtime_close(&rt);
    pe_run_args_clear(&a);
    return code;
}
