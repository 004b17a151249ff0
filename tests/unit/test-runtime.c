/* Unit tests of the runtime library API the daemon uses (exec_start with
 * captured stdio, signals, waiting), against a real sandbox of a busybox
 * image built in a temporary data directory. Needs root. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "image/image.h"
#include "pocketenv/runtime.h"
#include "task.h"

static char data[64];

static void setup(pe_runtime *rt)
{
    pe_sandbox_cfg cfg;
    pe_err e;

    if (geteuid() != 0)
        TEST_SKIP("needs root");
    snprintf(data, sizeof(data), "/tmp/pe-rt-XXXXXX");
    ASSERT(mkdtemp(data) != NULL);
    if (pe_runtime_open(rt, data, &e) < 0)
        TEST_FAIL("open: %s", e.msg);
    if (pe_image_build(data, "busybox", "busybox", NULL, &e) < 0)
        TEST_FAIL("image: %s", e.msg);
    pe_sandbox_cfg_init(&cfg);
    cfg.name = pe_xstrdup("t1");
    cfg.image = pe_xstrdup("busybox");
    cfg.net = PE_NET_NONE;
    if (pe_runtime_create(rt, &cfg, &e) < 0 || pe_runtime_start(rt, "t1", &e) < 0)
        TEST_FAIL("create/start: %s", e.msg);
    pe_sandbox_cfg_clear(&cfg);
}

static void teardown(pe_runtime *rt)
{
    pe_err e;
    if (pe_runtime_remove(rt, "t1", &e) < 0)
        TEST_FAIL("rm: %s", e.msg);
    pe_runtime_close(rt);
    pe_fs_rm_rf(data, NULL);
}

static char *read_all(int fd)
{
    char *buf = pe_xcalloc(1, 65536);
    size_t n = 0;
    ssize_t r;
    while (n < 65535 && (r = read(fd, buf + n, 65535 - n)) > 0)
        n += (size_t)r;
    return buf;
}

TEST_CASE(exec_start_captures_stdio)
{
    char sh[] = "/bin/sh", c[] = "-c", script[] = "cat; echo err >&2; exit 3";
    char *argv[] = {sh, c, script, NULL};
    pe_proc_opts po = {.argv = argv, .capture = true};
    pe_runtime rt;
    pe_proc p;
    pe_err e;
    int code = -1;

    setup(&rt);
    if (pe_runtime_exec_start(&rt, "t1", &po, &p, &e) < 0)
        TEST_FAIL("exec_start: %s", e.msg);
    ASSERT_EQ_INT(write(p.stdin_fd, "hello\n", 6), 6);
    close(p.stdin_fd); /* EOF must reach cat: nobody else holds the pipe */
    p.stdin_fd = -1;
    cleanup_free char *out = read_all(p.stdout_fd);
    cleanup_free char *errs = read_all(p.stderr_fd);
    ASSERT_EQ_INT(pe_proc_wait(&p, &code, &e), 0);
    ASSERT_EQ_STR(out, "hello\n");
    ASSERT_EQ_STR(errs, "err\n");
    ASSERT_EQ_INT(code, 3);
    pe_proc_close(&p);
    teardown(&rt);
}

TEST_CASE(exec_start_signal_and_unknown_command)
{
    char sleep_[] = "sleep", hundred[] = "100", nosuch[] = "/no/such";
    char *argv[] = {sleep_, hundred, NULL};
    char *bad[] = {nosuch, NULL};
    pe_proc_opts po = {.argv = argv, .capture = true};
    pe_runtime rt;
    pe_proc p;
    pe_err e;
    int code = -1;

    setup(&rt);
    if (pe_runtime_exec_start(&rt, "t1", &po, &p, &e) < 0)
        TEST_FAIL("exec_start: %s", e.msg);
    ASSERT_EQ_INT(pe_proc_signal(&p, SIGTERM), 0);
    ASSERT_EQ_INT(pe_proc_wait(&p, &code, &e), 0);
    ASSERT_EQ_INT(code, 128 + SIGTERM);
    pe_proc_close(&p);
    po.argv = bad;
    ASSERT_EQ_INT(pe_runtime_exec_start(&rt, "t1", &po, &p, &e), -1);
    ASSERT_EQ_INT(e.code, PE_ENOEXEC);
    ASSERT_EQ_INT(e.errnum, ENOENT);
    ASSERT_EQ_INT(pe_runtime_exec_start(&rt, "nope", &po, &p, &e), -1);
    ASSERT_EQ_INT(e.code, PE_ENOENT);
    teardown(&rt);
}

int main(void)
{
    return RUN_TESTS(exec_start_captures_stdio, exec_start_signal_and_unknown_command);
}
