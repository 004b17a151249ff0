/* pocketenv image ...: build, import, list and remove base images. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/install.h"
#include "core/util.h"
#include "image/image.h"

enum { OPT_NAME = 1, OPT_MIRROR, OPT_PARENT };

static const pe_opt image_opts[] = {
    {"name", 0, true, OPT_NAME, "NAME", "build: name of the image (default: the builder's)"},
    {"mirror", 0, true, OPT_MIRROR, "URL", "build debian: package mirror"},
    {"parent", 0, true, OPT_PARENT, "IMAGE", "import: a layer on IMAGE (overlaid on it)"},
    {"json", 0, false, OPT_JSON, NULL, "ls: print JSON"},
    {"help", 'h', false, OPT_HELP, NULL, "show this help"},
    {NULL, 0, false, 0, NULL, NULL},
};

struct image_args {
    const char *pos[3];
    int npos;
    const char *name, *mirror, *parent;
    bool json, help;
};

static int on_opt(int id, const char *arg, void *ctx, pe_err *err)
{
    struct image_args *a = ctx;
    switch (id) {
    case 0:
        if (a->npos >= 2)
            return pe_err_set(err, PE_EINVAL, 0, "unexpected argument '%s'", arg);
        a->pos[a->npos++] = arg;
        return 0;
    case OPT_NAME:
        a->name = arg;
        return 0;
    case OPT_MIRROR:
        a->mirror = arg;
        return 0;
    case OPT_PARENT:
        a->parent = arg;
        return 0;
    case OPT_JSON:
        a->json = true;
        return 0;
    default:
        a->help = true;
        return 0;
    }
}

static void usage(void)
{
    printf("usage: pocketenv image COMMAND ...\n\n"
           "  build debian|busybox [--name NAME] [--mirror URL]\n"
           "                       build a base image (debian: Debian 12 with mmdebstrap)\n"
           "  build TEMPLATE       build a template and the layers it stands on\n"
           "                       (openclaw claude-code codex gemini opencode vscode python\n"
           "                       amp copilot kilo; see docs/templates.md)\n"
           "  import NAME FILE [--parent IMAGE]\n"
           "                       import a root filesystem tarball (.tar, .tar.gz, .tar.zst),\n"
           "                       or a layer of files on top of IMAGE\n"
           "  ls [--json]          list images\n"
           "  rm NAME              remove an image no sandbox uses\n"
           "\n"
           "Examples:\n"
           "  pocketenv image build debian\n"
           "  pocketenv image build busybox --name tiny\n"
           "  pocketenv image import mine rootfs.tar.zst && pocketenv run --image mine -- sh\n");
}

static int list(pe_runtime *rt, bool json, pe_err *err)
{
    pe_image_info *v = NULL;
    size_t n = 0;

    if (pe_image_list(rt->data_dir, &v, &n, err) < 0)
        return -1;
    if (json)
        printf("[");
    else
        printf("%-20s %-10s %-20s %s\n", "NAME", "SIZE", "CREATED", "SOURCE");
    for (size_t i = 0; i < n; i++) {
        time_t t = (time_t)v[i].created;
        struct tm tm;
        char when[32];

        localtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        if (json)
            printf("%s{\"name\":\"%s\",\"size\":%lld,\"created\":%lld}", i ? "," : "", v[i].name,
                   (long long)v[i].size, (long long)v[i].created);
        else
            printf("%-20s %-10.1fM %-20s %s\n", v[i].name, (double)v[i].size / 1048576.0, when,
                   v[i].source ? v[i].source : "");
    }
    if (json)
        printf("]\n");
    pe_image_info_free(v, n);
    return 0;
}

/* Run helper (found as core/install.h says) with argv[1..]; exits with
 * its status when it fails (it said what went wrong). */
static int run_helper(const char *helper, char *const *argv, pe_err *err)
{
    char *path = pe_install_helper(helper, err);
    int status;
    pid_t pid;

    if (path == NULL)
        return -1;
    pid = fork();
    if (pid < 0) {
        free(path);
        return pe_err_sys(err, "fork");
    }
    if (pid == 0) {
        execv(path, argv);
        fprintf(stderr, "pocketenv: run %s: %s\n", path, strerror(errno));
        _exit(125);
    }
    free(path);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return pe_err_sys(err, "wait for %s", helper);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : PE_EXIT_FAIL);
}

/* Templates are built by pocketenv-template (cli/template-main.c). */
static int build(pe_runtime *rt, const struct image_args *a, pe_err *err)
{
    char *const argv[] = {(char *)"pocketenv-template", rt->data_dir, (char *)a->pos[0], NULL};

    if (strcmp(a->pos[0], "debian") == 0 || strcmp(a->pos[0], "busybox") == 0)
        return pe_image_build(rt->data_dir, a->pos[0], a->name ? a->name : a->pos[0], a->mirror,
                              err);
    if (a->name != NULL && strcmp(a->name, a->pos[0]) != 0)
        return pe_err_set(err, PE_EINVAL, 0, "a template is built under its own name");
    return run_helper("pocketenv-template", argv, err);
}

/* Import runs in pocketenv-import: see cli/import-main.c for why. */
static int run_import(pe_runtime *rt, const char *name, const char *file, const char *parent,
                      pe_err *err)
{
    char *const argv[] = {
        (char *)"pocketenv-import", rt->data_dir, (char *)name, (char *)file, (char *)parent, NULL};

    return run_helper("pocketenv-import", argv, err);
}

/* What is wrong with `image SUB` and its words: an unknown SUB, or the
 * first word missing or too many. */
static int bad_words(const char *sub, const struct image_args *a, pe_err *err)
{
    static const struct {
        const char *sub, *words[2];
        int n;
    } want[] = {
        {"build", {"BUILDER (busybox or debian)", NULL}, 1},
        {"import", {"NAME", "FILE"}, 2},
        {"ls", {NULL, NULL}, 0},
        {"rm", {"NAME", NULL}, 1},
    };

    for (size_t i = 0; i < PE_ARRAY_LEN(want); i++) {
        if (strcmp(sub, want[i].sub) != 0)
            continue;
        if (a->npos < want[i].n)
            return pe_err_set(err, PE_EINVAL, 0, "image %s: missing %s (see --help)", sub,
                              want[i].words[a->npos]);
        return pe_err_set(err, PE_EINVAL, 0, "image %s: unexpected argument '%s' (see --help)", sub,
                          a->pos[want[i].n]);
    }
    return pe_err_set(err, PE_EINVAL, 0,
                      "unknown image command '%s' (build, import, ls or rm; see --help)", sub);
}

int pe_cmd_image(int argc, char **argv)
{
    struct image_args a;
    pe_runtime rt;
    pe_err err;
    const char *sub;
    int idx = 2, r;

    pe_err_clear(&err);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc < 2)
            fprintf(stderr, "pocketenv image: missing COMMAND (build, import, ls or rm)\n");
        usage();
        return argc < 2 ? 2 : 0;
    }
    sub = argv[1];
    memset(&a, 0, sizeof(a));
    if (pe_opts_parse(image_opts, argc, argv, &idx, false, on_opt, &a, &err) < 0)
        return pe_cli_fail(&err);
    if (a.help) {
        usage();
        return 0;
    }
    if (pe_cli_open_runtime(&rt, &err) < 0)
        return pe_cli_fail(&err);
    if (strcmp(sub, "build") == 0 && a.npos == 1)
        r = build(&rt, &a, &err);
    else if (strcmp(sub, "import") == 0 && a.npos == 2)
        r = run_import(&rt, a.pos[0], a.pos[1], a.parent, &err);
    else if (strcmp(sub, "ls") == 0 && a.npos == 0)
        r = list(&rt, a.json, &err);
    else if (strcmp(sub, "rm") == 0 && a.npos == 1) {
        r = pe_runtime_image_in_use(&rt, a.pos[0], &err);
        if (r > 0)
            r = pe_err_set(&err, PE_ESTATE, 0, "image %s is used by a sandbox; remove it first",
                           a.pos[0]);
        if (r == 0)
            r = pe_image_remove(rt.data_dir, a.pos[0], &err);
    } else
        r = bad_words(sub, &a, &err);
    pe_runtime_close(&rt);
    return r < 0 ? pe_cli_fail(&err) : 0;
}
