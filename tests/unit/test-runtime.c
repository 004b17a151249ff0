/* Unit tests of the runtime library API the daemon uses (exec_start with
 * captured stdio, signals, waiting), against a real sandbox of a busybox
 * image built in a temporary data directory. Needs root. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
    int64_t kills = -2, limit = -2;

    setup(&rt);
    if (pe_runtime_exec_start(&rt, "t1", &po, &p, &e) < 0)
        TEST_FAIL("exec_start: %s", e.msg);
    /* the OOM count as it started, read with the exec's own state load */
    ASSERT_EQ_INT(pe_runtime_oom_kills(&rt, "t1", &kills, &limit, &e), 0);
    ASSERT_EQ_INT(p.oom_kills, kills);
    ASSERT_EQ_INT(p.oom_limit, limit);
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

/* Exec sh -c script in t1 and return its stdout (caller frees). */
static char *sh_out(pe_runtime *rt, const char *script)
{
    char sh[] = "/bin/sh", c[] = "-c";
    char *argv[] = {sh, c, (char *)script, NULL};
    pe_proc_opts po = {.argv = argv, .capture = true};
    pe_proc p;
    pe_err e;
    int code = -1;
    char *out;

    if (pe_runtime_exec_start(rt, "t1", &po, &p, &e) < 0)
        TEST_FAIL("exec_start: %s", e.msg);
    close(p.stdin_fd);
    p.stdin_fd = -1;
    out = read_all(p.stdout_fd);
    ASSERT_EQ_INT(pe_proc_wait(&p, &code, &e), 0);
    pe_proc_close(&p);
    return out;
}

/* A start's extra env and binds reach PID 1 and the mounts, idmapped when
 * asked, and are forgotten by the next plain start (never stored). */
TEST_CASE(start_with_extra_env_and_binds)
{
    char env1[] = "EXTRA_SECRET=s3cret", env2[] = "HOME=/elsewhere";
    char *env[] = {env1, env2, NULL};
    cleanup_free char *vol = NULL, *file = NULL, *json = NULL;
    pe_bind binds[2];
    pe_start_extra x = {.env = env, .binds = binds, .n_binds = 2};
    pe_runtime rt;
    pe_err e;

    setup(&rt);
    vol = pe_xasprintf("%s/vol", data);
    file = pe_xasprintf("%s/vol/f", data);
    ASSERT_EQ_INT(mkdir(vol, 0755), 0);
    ASSERT_EQ_INT(pe_fs_write_atomic(file, "v\n", 2, 0644, &e), 0);
    binds[0] = (pe_bind){.host = vol, .dest = (char *)"/vol", .ro = false, .idmap = true};
    binds[1] = (pe_bind){.host = vol, .dest = (char *)"/ro", .ro = true, .idmap = false};
    if (pe_runtime_stop(&rt, "t1", 5, &e) < 0 || pe_runtime_start_with(&rt, "t1", &x, &e) < 0)
        TEST_FAIL("restart with extra: %s", e.msg);
    cleanup_free char *out = sh_out(&rt, "tr '\\0' '\\n' < /proc/1/environ | grep -E "
                                         "'^(EXTRA_SECRET|HOME)='; stat -c %u /vol/f /ro/f; "
                                         "touch /vol/g && echo rw; touch /ro/h || echo ro");
    ASSERT_EQ_STR(out, "HOME=/elsewhere\nEXTRA_SECRET=s3cret\n0\n65534\nrw\nro\n");
    ASSERT_EQ_INT(pe_runtime_inspect(&rt, "t1", &json, &e), 0);
    ASSERT(strstr(json, "s3cret") == NULL && strstr(json, "/vol") == NULL);

    /* Bad extra binds are refused like stored ones. */
    binds[1].dest = (char *)"relative";
    ASSERT_EQ_INT(pe_runtime_stop(&rt, "t1", 5, &e), 0);
    ASSERT_EQ_INT(pe_runtime_start_with(&rt, "t1", &x, &e), -1);
    ASSERT_EQ_INT(e.code, PE_EINVAL);

    if (pe_runtime_start(&rt, "t1", &e) < 0)
        TEST_FAIL("plain start: %s", e.msg);
    cleanup_free char *out2 =
        sh_out(&rt, "grep -c EXTRA_SECRET /proc/1/environ; ls /vol/f 2>/dev/null "
                    "|| echo novol");
    ASSERT_EQ_STR(out2, "0\nnovol\n");
    teardown(&rt);
}

/* pe_runtime_init_of says running only for the very init that runs: not
 * after a stop, not for an init killed behind the runtime's back (its
 * state still says running), and ENOENT for no such sandbox. */
TEST_CASE(init_of_follows_the_init)
{
    pe_runtime_init init;
    pe_runtime rt;
    pe_err e;

    setup(&rt);
    ASSERT_EQ_INT(pe_runtime_init_of(&rt, "t1", &init, &e), 0);
    ASSERT(init.running);
    ASSERT(init.pid > 0 && init.start_time != 0 && init.id_base != 0);
    ASSERT_EQ_INT(pe_runtime_stop(&rt, "t1", 5, &e), 0);
    ASSERT_EQ_INT(pe_runtime_init_of(&rt, "t1", &init, &e), 0);
    ASSERT(!init.running);
    ASSERT_EQ_INT(init.pid, 0);
    ASSERT(init.id_base != 0);

    ASSERT_EQ_INT(pe_runtime_start(&rt, "t1", &e), 0);
    ASSERT_EQ_INT(pe_runtime_init_of(&rt, "t1", &init, &e), 0);
    ASSERT(init.running);
    ASSERT_EQ_INT(kill(init.pid, SIGKILL), 0);
    ASSERT_EQ_INT(waitpid(init.pid, NULL, 0), init.pid); /* this process cloned it */
    ASSERT_EQ_INT(pe_runtime_init_of(&rt, "t1", &init, &e), 0);
    ASSERT(!init.running);

    ASSERT_EQ_INT(pe_runtime_init_of(&rt, "nosuch", &init, &e), -1);
    ASSERT_EQ_INT(e.code, PE_ENOENT);
    teardown(&rt);
}

int main(void)
{
    return RUN_TESTS(exec_start_captures_stdio, exec_start_signal_and_unknown_command,
                     start_with_extra_env_and_binds, init_of_follows_the_init);
}
