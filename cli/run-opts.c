/* pocketenv run's command line, as docker's `run [OPTIONS] IMAGE [COMMAND]
 * [ARG...]` where it means the same here. Shared by `pocketenv` (one-shot
 * runs, cli/cmd-run.c) and pocketenv-client (run -d, cli/cmd-detach.c), so
 * both read the same words the same way.
 *
 * Options come first and end at the first word that is not one (or at
 * "--"); what that word is (an image or the command) is decided by the
 * caller, who knows which images exist. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/fs.h"
#include "core/util.h"

static const pe_opt run_only[] = {
    {"interactive", 'i', false, OPT_INTERACTIVE, NULL,
     "keep standard input open: it always is (docker's -i)"},
    {"detach", 'd', false, OPT_DETACH, NULL,
     "run in the background, in a sandbox the daemon keeps (below)"},
    {"rm", 0, false, OPT_RM, NULL, "remove the sandbox when CMD ends: one-shot runs always are"},
    {"name", 0, true, OPT_RUN_NAME, "NAME",
     "the sandbox's name (and hostname); with -d, its name in the daemon"},
};

/* run_only, then every sandbox option: one table for pe_opts_parse. */
static const pe_opt *table(void)
{
    static pe_opt *t;
    size_t n = 0, k = 0;

    if (t != NULL)
        return t;
    while (pe_sandbox_opts[n].name)
        n++;
    t = pe_xcalloc(PE_ARRAY_LEN(run_only) + n + 1, sizeof(pe_opt));
    for (size_t i = 0; i < PE_ARRAY_LEN(run_only); i++)
        t[k++] = run_only[i];
    for (size_t i = 0; i < n; i++)
        t[k++] = pe_sandbox_opts[i];
    return t;
}

static void help(void)
{
    printf("usage: pocketenv run [OPTIONS] [IMAGE] [--] CMD [ARGS...]\n"
           "       pocketenv run [OPTIONS] IMAGE\n"
           "       pocketenv run -d [--name NAME] [OPTIONS] [IMAGE] [CMD [ARGS...]]\n\n"
           "Create a sandbox, run CMD in it with this terminal's input and output, and\n"
           "remove the sandbox when CMD ends (--rm is accepted: it always is). No daemon\n"
           "is needed.\n\n"
           "IMAGE is the first word after the options when it names an image: one of\n"
           "`pocketenv image ls`, debian or busybox (built on first use), or a directory.\n"
           "Otherwise that word is CMD, run in --image (default debian). Every word after\n"
           "\"--\" is CMD. Without CMD, the image's shell runs (bash, else sh).\n\n"
           "-d runs CMD in the background in a sandbox kept by the daemon (`pocketenv\n"
           "serve`; the token as for `pocketenv create`): the sandbox is created and\n"
           "started (never stopped for being idle), CMD becomes its service `main`\n"
           "(restarted if it fails, started again with the sandbox), and its name is\n"
           "printed. Then `pocketenv exec NAME ...`, `pocketenv logs [-f] NAME`,\n"
           "`pocketenv stop NAME`, `pocketenv rm NAME`. Without CMD it just keeps\n"
           "running. With -d, IMAGE is one of the daemon's bases, --memory and --cpus\n"
           "are whole GB and CPUs, -e sets the sandbox's variables, -i and -t have\n"
           "nothing to attach to; other sandbox options are refused.\n\nOptions:\n");
    pe_opts_help(table());
    printf("\nExamples:\n  pocketenv run busybox echo hello\n"
           "  pocketenv run --image busybox -- sh -c 'echo hello'\n"
           "  pocketenv run -it --rm debian bash\n"
           "  pocketenv run -t --memory 512m -v $PWD:/work -w /work -- bash\n"
           "  pocketenv run -d --name web busybox httpd -f -p 8000\n");
}

static int on_opt(int id, const char *arg, void *ctx, pe_err *err)
{
    pe_run_args *a = ctx;

    if (id >= OPT_IMAGE && id - OPT_IMAGE < 64)
        a->given |= 1ULL << (id - OPT_IMAGE);
    switch (id) {
    case OPT_HELP:
        help();
        exit(0);
    case OPT_INTERACTIVE:
        a->interactive = true;
        return 0;
    case OPT_DETACH:
        a->detach = true;
        return 0;
    case OPT_RM:
        a->rm = true;
        return 0;
    case OPT_RUN_NAME:
        if (!pe_name_valid(arg))
            return pe_err_set(err, PE_EINVAL, 0,
                              "invalid --name '%s': 1-63 of [A-Za-z0-9_.-], starting with a "
                              "letter or digit",
                              arg);
        a->name = arg;
        return 0;
    default:
        return pe_cli_sandbox_opt(id, arg, &a->s, err);
    }
}

int pe_run_args_parse(int argc, char **argv, pe_run_args *a, pe_err *err)
{
    memset(a, 0, sizeof(*a));
    pe_cli_sandbox_init(&a->s);
    a->idx = 1;
    if (pe_opts_parse(table(), argc, argv, &a->idx, true, on_opt, a, err) < 0)
        return -1;
    a->dashdash = a->idx > 1 && strcmp(argv[a->idx - 1], "--") == 0;
    return 0;
}

int pe_run_args_check_detach(const pe_run_args *a, pe_err *err)
{
    static const struct {
        int id;
        const char *hint;
    } refused[] = {
        {OPT_VOLUME, "; put files in with pocketenv cp, or a volume with pocketenv volume put"},
        {OPT_PUBLISH, "; give a port a URL with pocketenv expose NAME PORT"},
        {OPT_RM, ": a detached sandbox is kept until pocketenv rm NAME"},
        {OPT_PIDS, ""},
        {OPT_NOFILE, ""},
        {OPT_DISK, ""},
        {OPT_HOSTNAME, ""},
        {OPT_WORKDIR, "; cd in CMD instead"},
        {OPT_USER, ""},
        {OPT_TIMEOUT, ""},
        {OPT_NET, ""},
        {OPT_NET_ALLOW_HOST, ""},
        {OPT_USERNS, ""},
    };
    const pe_opt *t = table();

    for (size_t i = 0; i < PE_ARRAY_LEN(refused); i++) {
        if (!pe_run_given(a, refused[i].id))
            continue;
        while (t->name && t->id != refused[i].id)
            t++;
        return pe_err_set(err, PE_EINVAL, 0, "run -d: --%s is not for a sandbox the daemon keeps%s",
                          t->name ? t->name : "?", refused[i].hint);
    }
    if (a->s.cfg.memory_bytes % (1LL << 30) != 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "run -d: --memory must be whole GB (e.g. 2g): the daemon's unit");
    if (a->s.cfg.cpu_millis % 1000 != 0)
        return pe_err_set(err, PE_EINVAL, 0, "run -d: --cpus must be a whole number of CPUs");
    return 0;
}

void pe_run_args_clear(pe_run_args *a)
{
    pe_cli_sandbox_clear(&a->s);
}
