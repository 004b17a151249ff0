/* Unit tests for lib/runtime/cgroup*.c, against the host's real cgroups.
 *
 * Needs root (skips otherwise). Every case runs its body in a forked
 * process and then, whatever the body did, destroys the keys it may have
 * used ("test-<case pid>-<n>") and checks that no pocketenv-test-<case
 * pid>-* directory is left in any hierarchy. Children call
 * PR_SET_PDEATHSIG so a failing body never leaves a busy loop behind.
 * Waits are "until condition or deadline"; the only fixed pause is the
 * window in which a frozen counter must not move. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/cgroup.h"
#include "task.h"

#define NKEYS 4
#define MIB (INT64_C(1) << 20)

static pid_t case_pid;

static const char *key(int n)
{
    static char keys[NKEYS][48];

    snprintf(keys[n], sizeof(keys[n]), "test-%d-%d", (int)case_pid, n);
    return keys[n];
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Poll cond every millisecond or so until it holds or timeout_ms passed. */
static bool wait_until(bool (*cond)(void *arg), void *arg, int64_t timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;

    while (!cond(arg)) {
        if (now_ms() >= deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

/* Contents of dir/file without the trailing newline; "" if unreadable. */
static char *read_knob(const char *dir, const char *file)
{
    cleanup_free char *path = pe_xasprintf("%s/%s", dir, file);
    char *s = NULL;
    size_t n = 0;
    pe_err err;

    if (pe_fs_read_file(path, 1 << 20, &s, &n, &err) < 0)
        return pe_xstrdup("");
    while (n > 0 && s[n - 1] == '\n')
        s[--n] = '\0';
    return s;
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)) != NULL; p += n) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    }
    return false;
}

static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n) {
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0' || p[n] == '\n'))
            return true;
    }
    return false;
}

/* ---- children ------------------------------------------------------------ */

/* Fork a child that runs fn only after it is attached to cg (or right away
 * with cg NULL). The child dies with the test process. */
static pid_t spawn_in(pe_cgroup *cg, void (*fn)(void *arg), void *arg)
{
    pid_t parent = getpid(), pid;
    int go[2];
    char c = 1;
    pe_err err;

    if (pipe2(go, O_CLOEXEC) < 0)
        TEST_FAIL("pipe: %s", strerror(errno));
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        TEST_FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(go[1]);
        if (getppid() != parent || read(go[0], &c, 1) != 1)
            _exit(99);
        close(go[0]);
        fn(arg);
        _exit(0);
    }
    close(go[0]);
    if (cg != NULL && pe_cgroup_attach(cg, pid, &err) < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        TEST_FAIL("attach %d: %s", (int)pid, err.msg);
    }
    if (write(go[1], &c, 1) != 1)
        TEST_FAIL("start child: %s", strerror(errno));
    close(go[1]);
    return pid;
}

static void idle(void *arg)
{
    for (;;)
        pause();
}

static void busy(void *arg)
{
    volatile uint64_t *counter = arg;

    for (;;) {
        if (counter != NULL)
            (*counter)++;
    }
}

static void hog(void *arg)
{
    size_t n = 200 * (size_t)MIB;
    volatile char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        _exit(2);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = 1;
    _exit(3); /* survived: the limit did not hold */
}

/* Fork until it fails; report {children made, errno} on the pipe in arg. */
static void forker(void *arg)
{
    int fd = *(int *)arg, rep[2] = {0, 0};

    for (rep[0] = 0; rep[0] < 100; rep[0]++) {
        pid_t p = fork();
        if (p < 0) {
            rep[1] = errno;
            break;
        }
        if (p == 0)
            idle(NULL);
    }
    if (write(fd, rep, sizeof(rep)) != (ssize_t)sizeof(rep))
        _exit(4);
    idle(NULL);
}

static int reap(pid_t pid)
{
    int status = 0;

    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            TEST_FAIL("waitpid %d: %s", (int)pid, strerror(errno));
    }
    return status;
}

#define ASSERT_KILLED(status)                                                                      \
    do {                                                                                           \
        int s_ = (status);                                                                         \
        if (!WIFSIGNALED(s_))                                                                      \
            TEST_FAIL("child exited with %d instead of being killed", WEXITSTATUS(s_));            \
        ASSERT_EQ_INT(WTERMSIG(s_), SIGKILL);                                                      \
    } while (0)

/* ---- the guard around every case --------------------------------------- */

static const char *cg_root(void)
{
    const char *r = getenv("PE_CGROUP_ROOT");

    return r != NULL && r[0] != '\0' ? r : "/sys/fs/cgroup";
}

static int count_leftovers_in(const char *parent, const char *prefix)
{
    DIR *d = opendir(parent);
    struct dirent *de;
    int n = 0;

    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            fprintf(stderr, "  leftover: %s/%s\n", parent, de->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

/* pocketenv-test-<pid>-* in <root>/pocketenv (v2) or <root>/<h>/pocketenv. */
static int count_leftovers(void)
{
    cleanup_free char *prefix = pe_xasprintf("pocketenv-test-%d-", (int)case_pid);
    cleanup_free char *v2 = pe_xasprintf("%s/pocketenv", cg_root());
    DIR *d = opendir(cg_root());
    struct dirent *de;
    int n = count_leftovers_in(v2, prefix);

    while (d != NULL && (de = readdir(d)) != NULL) {
        cleanup_free char *v1 = NULL;
        if (de->d_name[0] == '.')
            continue;
        v1 = pe_xasprintf("%s/%s/pocketenv", cg_root(), de->d_name);
        n += count_leftovers_in(v1, prefix);
    }
    if (d != NULL)
        closedir(d);
    return n;
}

static void guarded(void (*body)(void))
{
    int status;
    pid_t pid;
    pe_err err;

    if (geteuid() != 0)
        TEST_SKIP("needs root");
    if (pe_cgroup_backend_name(&err) == NULL)
        TEST_SKIP("no usable cgroups: %s", err.msg);
    case_pid = getpid();
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        TEST_FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        body();
        exit(0);
    }
    status = reap(pid);
    for (int i = 0; i < NKEYS; i++) {
        if (pe_cgroup_destroy_key(key(i), &err) < 0)
            TEST_FAIL("cleanup %s: %s", key(i), err.msg);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        exit(77);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL("body failed (status 0x%x)", status);
    ASSERT_EQ_INT(count_leftovers(), 0);
}

static pe_cgroup *must_create(int n, int64_t mem, int64_t cpu, int64_t pids)
{
    pe_cgroup_limits lim = {mem, cpu, pids};
    pe_cgroup *cg = NULL;
    pe_err err;

    if (pe_cgroup_create(key(n), &lim, &cg, &err) < 0 && err.code == PE_EUNSUP)
        TEST_SKIP("%s", err.msg); /* e.g. PE_CGROUP_ROOT on a controller-less cgroup2 */
    if (cg == NULL)
        TEST_FAIL("create %s: %s", key(n), err.msg);
    return cg;
}

static void must_destroy(pe_cgroup *cg)
{
    pe_err err;

    if (pe_cgroup_destroy(cg, &err) < 0)
        TEST_FAIL("destroy: %s", err.msg);
    pe_cgroup_free(cg);
}

static bool is_v1(void)
{
    const char *b = pe_cgroup_backend_name(NULL);

    return b != NULL && strcmp(b, "v1") == 0;
}

/* ---- cases --------------------------------------------------------------- */

TEST_CASE(invalid_key)
{
    static const char *const bad[] = {"", ".", "..", ".hidden", "a/b", "../x", "a b", "x\n", "é"};
    char longkey[102];
    pe_cgroup_limits lim = {0, 0, 0};
    pe_cgroup *cg = NULL;
    pe_err err;

    for (size_t i = 0; i < PE_ARRAY_LEN(bad); i++) {
        ASSERT_EQ_INT(pe_cgroup_create(bad[i], &lim, &cg, &err), -1);
        ASSERT_EQ_INT(err.code, PE_EINVAL);
        ASSERT_EQ_INT(pe_cgroup_open(bad[i], &cg, &err), -1);
        ASSERT_EQ_INT(err.code, PE_EINVAL);
        ASSERT_EQ_INT(pe_cgroup_destroy_key(bad[i], &err), -1);
        ASSERT_EQ_INT(err.code, PE_EINVAL);
    }
    ASSERT_EQ_INT(pe_cgroup_create(NULL, &lim, &cg, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    memset(longkey, 'k', 101);
    longkey[101] = '\0';
    ASSERT_EQ_INT(pe_cgroup_open(longkey, &cg, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_CONTAINS(err.msg, "invalid cgroup key");
    longkey[100] = '\0'; /* 100 is allowed: not found, not invalid */
    if (pe_cgroup_open(longkey, &cg, &err) < 0)
        ASSERT_NE_INT(err.code, PE_EINVAL);
    else
        pe_cgroup_free(cg);
}

static void check_limits(pe_cgroup *cg, const char *mem, const char *quota, const char *pids)
{
    const char *m = pe_cgroup_controller_path(cg, "memory");
    const char *c = pe_cgroup_controller_path(cg, "cpu");
    const char *p = pe_cgroup_controller_path(cg, "pids");
    cleanup_free char *mv = NULL, *cv = NULL, *pv = NULL;

    ASSERT(m != NULL && c != NULL && p != NULL);
    if (is_v1()) {
        cleanup_free char *period = read_knob(c, "cpu.cfs_period_us");
        mv = read_knob(m, "memory.limit_in_bytes");
        cv = read_knob(c, "cpu.cfs_quota_us");
        ASSERT_EQ_STR(period, "100000");
    } else {
        cleanup_free char *want = pe_xasprintf("%s 100000", quota);
        mv = read_knob(m, "memory.max");
        cv = read_knob(c, "cpu.max");
        ASSERT_EQ_STR(cv, want);
        free(cv);
        cv = pe_xstrdup(quota);
    }
    pv = read_knob(p, "pids.max");
    ASSERT_EQ_STR(mv, mem);
    ASSERT_EQ_STR(cv, quota);
    ASSERT_EQ_STR(pv, pids);
}

static void body_limits(void)
{
    pe_cgroup *cg = must_create(0, 256 * MIB, 1500, 100);
    pe_cgroup_limits lim = {0, 250, 0};
    pe_cgroup_stats st;
    pe_err err;

    check_limits(cg, "268435456", "150000", "100");
    ASSERT_EQ_INT(pe_cgroup_stats_read(cg, &st, &err), 0);
    ASSERT_EQ_INT(st.memory_max, 256 * MIB);

    /* 0 = unlimited; 250 millicpus = a quarter CPU. */
    ASSERT_EQ_INT(pe_cgroup_set_limits(cg, &lim, &err), 0);
    check_limits(cg, is_v1() ? "9223372036854771712" : "max", "25000", "max");
    ASSERT_EQ_INT(pe_cgroup_stats_read(cg, &st, &err), 0);
    ASSERT_EQ_INT(st.memory_max, -1);
    ASSERT_EQ_INT(st.pids_current, 0);

    lim = (pe_cgroup_limits){-1, 0, 0};
    ASSERT_EQ_INT(pe_cgroup_set_limits(cg, &lim, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    lim = (pe_cgroup_limits){0, 5, 0};
    ASSERT_EQ_INT(pe_cgroup_set_limits(cg, &lim, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    must_destroy(cg);
}

TEST_CASE(create_limits_readback)
{
    guarded(body_limits);
}

static void body_attach(void)
{
    static const char *const ctls[] = {"memory", "pids", "cpu", "freezer"};
    pe_cgroup *cg = must_create(0, 0, 0, 0), *again = NULL;
    pid_t pid = spawn_in(cg, idle, NULL);
    cleanup_free char *line = pe_xasprintf("%d", (int)pid);
    pe_err err;

    for (size_t i = 0; i < PE_ARRAY_LEN(ctls); i++) {
        const char *dir = pe_cgroup_controller_path(cg, ctls[i]);
        cleanup_free char *procs = NULL;
        if (dir == NULL)
            continue;
        procs = read_knob(dir, "cgroup.procs");
        if (!has_line(procs, line))
            TEST_FAIL("pid %s not in %s/cgroup.procs: \"%s\"", line, dir, procs);
    }
    ASSERT_EQ_INT(pe_cgroup_count_procs(cg, &err), 1);

    ASSERT_EQ_INT(pe_cgroup_open(key(0), &again, &err), 0);
    ASSERT_EQ_STR(pe_cgroup_path(again), pe_cgroup_path(cg));
    ASSERT_EQ_INT(pe_cgroup_count_procs(again, &err), 1);
    pe_cgroup_free(again);

    ASSERT_EQ_INT(pe_cgroup_open(key(1), &again, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_cgroup_kill_all(cg, &err), 0);
    ASSERT_EQ_INT(pe_cgroup_count_procs(cg, &err), 0);
    ASSERT_KILLED(reap(pid));
    must_destroy(cg);
}

TEST_CASE(attach_child)
{
    guarded(body_attach);
}

static void body_oom(void)
{
    pe_cgroup *cg = must_create(0, 64 * MIB, 0, 0);
    pe_cgroup_stats st;
    volatile char *mine;
    pe_err err;

    ASSERT_KILLED(reap(spawn_in(cg, hog, NULL)));
    ASSERT_EQ_INT(pe_cgroup_stats_read(cg, &st, &err), 0);
    if (st.oom_kills < 1)
        TEST_FAIL("oom_kills %lld, want >= 1", (long long)st.oom_kills);

    /* We are outside the cgroup: 100 MiB here is fine. */
    mine = mmap(NULL, 100 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(mine != MAP_FAILED);
    for (int64_t i = 0; i < 100 * MIB; i += 4096)
        mine[i] = 1;
    munmap((void *)mine, 100 * MIB);
    must_destroy(cg);
}

TEST_CASE(oom_kill)
{
    guarded(body_oom);
}

/* A forker in cg (pids.max 20) stops at EAGAIN after 1 to 19 children;
 * destroying cg kills it and them. */
static void fork_until_bounded(pe_cgroup *cg)
{
    int rep[2] = {-1, -1}, p[2];
    pid_t pid;

    ASSERT_EQ_INT(pipe2(p, O_CLOEXEC), 0);
    pid = spawn_in(cg, forker, &p[1]);
    close(p[1]);
    ASSERT_EQ_INT(read(p[0], rep, sizeof(rep)), sizeof(rep));
    close(p[0]);
    ASSERT_EQ_INT(rep[1], EAGAIN);
    if (rep[0] < 1 || rep[0] >= 20)
        TEST_FAIL("forked %d children under pids.max 20", rep[0]);
    must_destroy(cg); /* kills the forker and its children */
    ASSERT_KILLED(reap(pid));
}

static void body_pids(void)
{
    fork_until_bounded(must_create(0, 0, 0, 20));
}

TEST_CASE(pids_limit)
{
    guarded(body_pids);
}

static bool throttled(void *arg)
{
    pe_cgroup_stats st;
    pe_err err;

    return pe_cgroup_stats_read(arg, &st, &err) == 0 && st.nr_throttled > 0;
}

static void body_cpu(void)
{
    pe_cgroup *cg = must_create(0, 0, 200, 0);
    pe_cgroup_stats st;
    pid_t pid = spawn_in(cg, busy, NULL);
    pe_err err;

    if (!wait_until(throttled, cg, 5000))
        TEST_FAIL("busy child under 0.2 CPU never throttled");
    ASSERT_EQ_INT(pe_cgroup_stats_read(cg, &st, &err), 0);
    if (st.cpu_usage_usec == 0)
        TEST_FAIL("cpu_usage_usec 0 for a busy child");
    must_destroy(cg);
    ASSERT_KILLED(reap(pid));
}

TEST_CASE(cpu_quota_throttles)
{
    guarded(body_cpu);
}

/* A one-shot's lean cgroup: the pids bound and the memory hierarchy (its
 * OOM count) are there; on v1 no freezer or cpuacct directory is made,
 * and cpu only with a CPU limit; destroy leaves nothing. */
static void body_lean(void)
{
    pe_cgroup_limits lim = {0, 0, 20};
    pe_cgroup *cg = NULL, *cpu = NULL;
    int64_t kills, limit;
    pe_err err;

    if (pe_cgroup_create_lean(key(0), &lim, &cg, &err) < 0)
        TEST_FAIL("create lean %s: %s", key(0), err.msg);
    ASSERT(pe_cgroup_controller_path(cg, "pids") != NULL);
    if (is_v1()) {
        cleanup_free char *freezer = NULL, *cpuacct = NULL, *pids = NULL;
        ASSERT(pe_cgroup_controller_path(cg, "memory") != NULL);
        ASSERT(pe_cgroup_controller_path(cg, "freezer") == NULL);
        ASSERT(pe_cgroup_controller_path(cg, "cpuacct") == NULL);
        ASSERT(pe_cgroup_controller_path(cg, "cpu") == NULL);
        /* not made at all, not merely left out of cg */
        freezer = pe_xasprintf("%s/../../../freezer/pocketenv/pocketenv-%s",
                               pe_cgroup_controller_path(cg, "memory"), key(0));
        cpuacct = pe_xasprintf("%s/../../../cpuacct/pocketenv/pocketenv-%s",
                               pe_cgroup_controller_path(cg, "memory"), key(0));
        pids = pe_xasprintf("%s/../../../pids/pocketenv/pocketenv-%s",
                            pe_cgroup_controller_path(cg, "memory"), key(0));
        ASSERT_EQ_INT(access(pids, F_OK), 0); /* the paths are right */
        ASSERT(access(freezer, F_OK) < 0 && errno == ENOENT);
        ASSERT(access(cpuacct, F_OK) < 0 && errno == ENOENT);
        pe_cgroup_oom_read(cg, &kills, &limit);
        ASSERT_EQ_INT(kills, 0);
        ASSERT_EQ_INT(limit, -1);
    }

    fork_until_bounded(cg);
    ASSERT_EQ_INT(pe_cgroup_open(key(0), &cg, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    lim = (pe_cgroup_limits){0, 500, 0};
    if (pe_cgroup_create_lean(key(1), &lim, &cpu, &err) < 0)
        TEST_FAIL("create lean %s with a cpu limit: %s", key(1), err.msg);
    ASSERT(pe_cgroup_controller_path(cpu, "cpu") != NULL);
    must_destroy(cpu);
}

TEST_CASE(create_lean)
{
    guarded(body_lean);
}

static bool advanced(void *arg)
{
    volatile uint64_t *c = arg;

    return c[0] > c[1];
}

static char proc_state(pid_t pid)
{
    cleanup_free char *dir = pe_xasprintf("/proc/%d", (int)pid);
    cleanup_free char *s = read_knob(dir, "status");
    const char *p = strstr(s, "\nState:\t");

    return p != NULL ? p[8] : '?';
}

/* Whether the backend reports cg frozen, read straight from its files. */
static bool reports_frozen(pe_cgroup *cg)
{
    const char *dir = pe_cgroup_controller_path(cg, "freezer");
    cleanup_free char *s = NULL;

    ASSERT(dir != NULL);
    if (is_v1()) {
        s = read_knob(dir, "freezer.state");
        return strcmp(s, "FROZEN") == 0;
    }
    s = read_knob(dir, "cgroup.events");
    return has_line(s, "frozen 1");
}

/* Freeze a busy child: its counter stops; thaw: it moves again. */
static void freeze_cycle(pe_cgroup *cg)
{
    volatile uint64_t *c =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid;
    pe_err err;

    ASSERT(c != MAP_FAILED);
    pid = spawn_in(cg, busy, (void *)c);
    c[1] = 0;
    if (!wait_until(advanced, (void *)c, 5000))
        TEST_FAIL("child never ran");

    if (pe_cgroup_freeze(cg, true, &err) < 0)
        TEST_FAIL("freeze: %s", err.msg);
    ASSERT(reports_frozen(cg));
    fprintf(stderr, "  frozen child state: %c\n", proc_state(pid));
    c[1] = c[0];
    sleep_ms(100); /* the window in which nothing may move */
    ASSERT_EQ_INT(c[0], c[1]);

    if (pe_cgroup_freeze(cg, false, &err) < 0)
        TEST_FAIL("thaw: %s", err.msg);
    ASSERT(!reports_frozen(cg));
    if (!wait_until(advanced, (void *)c, 5000))
        TEST_FAIL("child did not resume after thaw");

    ASSERT_EQ_INT(pe_cgroup_kill_all(cg, &err), 0);
    ASSERT_KILLED(reap(pid));
}

static void body_freeze(void)
{
    pe_cgroup *cg = must_create(0, 0, 0, 0);

    freeze_cycle(cg);
    must_destroy(cg);
}

TEST_CASE(freeze_thaw)
{
    guarded(body_freeze);
}

static void body_kill_frozen(void)
{
    pe_cgroup *cg = must_create(0, 0, 0, 0);
    pid_t pids[3];
    pe_err err;

    for (int i = 0; i < 3; i++)
        pids[i] = spawn_in(cg, i == 0 ? busy : idle, NULL);
    ASSERT_EQ_INT(pe_cgroup_count_procs(cg, &err), 3);
    ASSERT_EQ_INT(pe_cgroup_freeze(cg, true, &err), 0);
    if (pe_cgroup_kill_all(cg, &err) < 0)
        TEST_FAIL("kill_all: %s", err.msg);
    ASSERT_EQ_INT(pe_cgroup_count_procs(cg, &err), 0);
    for (int i = 0; i < 3; i++)
        ASSERT_KILLED(reap(pids[i]));
    ASSERT(!reports_frozen(cg)); /* left thawed, ready for reuse */
    must_destroy(cg);
}

TEST_CASE(kill_all_frozen)
{
    guarded(body_kill_frozen);
}

static void body_destroy(void)
{
    static const char *const ctls[] = {"memory", "pids", "cpu", "cpuacct", "freezer"};
    pe_cgroup *cg = must_create(0, 64 * MIB, 500, 10);
    const char *paths[PE_ARRAY_LEN(ctls)];
    pid_t pid = spawn_in(cg, idle, NULL);
    pe_cgroup *gone = NULL;
    struct stat st;
    pe_err err;

    for (size_t i = 0; i < PE_ARRAY_LEN(ctls); i++) {
        paths[i] = pe_cgroup_controller_path(cg, ctls[i]);
        ASSERT(paths[i] == NULL || stat(paths[i], &st) == 0);
    }
    if (pe_cgroup_destroy(cg, &err) < 0)
        TEST_FAIL("destroy: %s", err.msg);
    ASSERT_KILLED(reap(pid));
    for (size_t i = 0; i < PE_ARRAY_LEN(ctls); i++) {
        if (paths[i] == NULL)
            continue;
        ASSERT_EQ_INT(stat(paths[i], &st), -1);
        ASSERT_EQ_INT(errno, ENOENT);
    }
    ASSERT_EQ_INT(pe_cgroup_destroy(cg, &err), 0); /* idempotent */
    ASSERT_EQ_INT(pe_cgroup_destroy_key(key(0), &err), 0);
    ASSERT_EQ_INT(pe_cgroup_open(key(0), &gone, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_cgroup_kill_all(cg, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    pe_cgroup_free(cg);
}

TEST_CASE(destroy_removes_and_is_idempotent)
{
    guarded(body_destroy);
}

struct seen {
    bool k[NKEYS];
};

static void note_key(const char *k, void *arg)
{
    struct seen *s = arg;

    for (int i = 0; i < NKEYS; i++) {
        if (strcmp(k, key(i)) == 0)
            s->k[i] = true;
    }
}

static void body_list(void)
{
    pe_cgroup *a = must_create(0, 0, 0, 0), *b = must_create(1, 0, 0, 0);
    struct seen s = {{false}};
    pe_err err;

    ASSERT_EQ_INT(pe_cgroup_list_keys(note_key, &s, &err), 0);
    ASSERT(s.k[0] && s.k[1] && !s.k[2]);
    must_destroy(a);
    s = (struct seen){{false}};
    ASSERT_EQ_INT(pe_cgroup_list_keys(note_key, &s, &err), 0);
    ASSERT(!s.k[0] && s.k[1]);
    must_destroy(b);
}

TEST_CASE(list_keys)
{
    guarded(body_list);
}

/* A crash leaves a cgroup with a process and old limits; create with the
 * same key empties it and rewrites the limits. */
static void body_leftover(void)
{
    pe_cgroup *old = must_create(0, 0, 0, 10), *cg;
    pid_t pid = spawn_in(old, idle, NULL);
    cleanup_free char *pids = NULL;
    pe_err err;

    ASSERT_EQ_INT(pe_cgroup_freeze(old, true, &err), 0);
    pe_cgroup_free(old); /* "crash": nothing destroyed */
    cg = must_create(0, 0, 0, 50);
    ASSERT_EQ_INT(pe_cgroup_count_procs(cg, &err), 0);
    ASSERT_KILLED(reap(pid));
    ASSERT(!reports_frozen(cg));
    pids = read_knob(pe_cgroup_controller_path(cg, "pids"), "pids.max");
    ASSERT_EQ_STR(pids, "50");
    must_destroy(cg);
}

TEST_CASE(create_reuses_leftover)
{
    guarded(body_leftover);
}

/* A new cgroup gets only the limits asked for written (the kernel's
 * defaults are unlimited), but a leftover, even one that a crash in the
 * middle of a destroy left in one hierarchy only, gets every knob written:
 * its old memory and CPU limits must not reach the next sandbox of that
 * name. */
static void body_leftover_limits(void)
{
    pe_cgroup *old, *cg;
    cleanup_free char *mem = NULL, *quota = NULL, *quota2 = NULL;

    if (!is_v1())
        TEST_SKIP("v1 only: a v2 cgroup has one directory");
    old = must_create(0, 64 << 20, 500, 10);
    pe_cgroup_free(old); /* "crash": nothing destroyed */
    cg = must_create(0, 0, 0, 50);
    mem = read_knob(pe_cgroup_controller_path(cg, "memory"), "memory.limit_in_bytes");
    ASSERT(strtoll(mem, NULL, 10) > (INT64_C(1) << 62));
    quota = read_knob(pe_cgroup_controller_path(cg, "cpu"), "cpu.cfs_quota_us");
    ASSERT_EQ_STR(quota, "-1");

    /* the memory dir gone, the cpu dir with its quota still there */
    old = cg;
    cg = NULL;
    {
        pe_err err;
        pe_cgroup_limits lim = {0, 500, 50};
        ASSERT_EQ_INT(pe_cgroup_set_limits(old, &lim, &err), 0);
    }
    ASSERT_EQ_INT(rmdir(pe_cgroup_controller_path(old, "memory")), 0);
    pe_cgroup_free(old);
    cg = must_create(0, 0, 0, 50);
    quota2 = read_knob(pe_cgroup_controller_path(cg, "cpu"), "cpu.cfs_quota_us");
    ASSERT_EQ_STR(quota2, "-1");
    must_destroy(cg);
}

TEST_CASE(create_rewrites_leftover_limits)
{
    guarded(body_leftover_limits);
}

/* ---- v2 on a private cgroup2 mount --------------------------------------- */

/* A cgroup2 mount of our own, in a private mount namespace, on a tmpfs over
 * /tmp, so nothing of it shows on the host. On a hybrid host it is the same
 * hierarchy as /sys/fs/cgroup/unified, with no controllers: what the v2
 * backend must degrade on. */
static void use_private_cgroup2(void)
{
    if (geteuid() != 0)
        TEST_SKIP("needs root");
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        TEST_SKIP("no private mount namespace: %s", strerror(errno));
    if (mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m,mode=0755") < 0 ||
        mkdir("/tmp/cg2", 0755) < 0 || mount("cgroup2", "/tmp/cg2", "cgroup2", 0, NULL) < 0)
        TEST_SKIP("cannot mount cgroup2: %s", strerror(errno));
    setenv("PE_CGROUP_ROOT", "/tmp/cg2", 1);
}

static void body_v2(void)
{
    cleanup_free char *avail = read_knob("/tmp/cg2", "cgroup.controllers");
    cleanup_free char *gone0 = pe_xasprintf("/tmp/cg2/pocketenv/pocketenv-%s", key(0));
    cleanup_free char *gone1 = pe_xasprintf("/tmp/cg2/pocketenv/pocketenv-%s", key(1));
    pe_cgroup_limits mem = {64 * MIB, 0, 0};
    pe_cgroup *cg = NULL;
    struct stat st;
    pid_t pid;
    pe_err err;

    ASSERT_EQ_STR(pe_cgroup_backend_name(&err), "v2");
    if (!has_word(avail, "memory")) {
        /* A limit on a missing controller is refused, clearly. */
        ASSERT_EQ_INT(pe_cgroup_create(key(1), &mem, &cg, &err), -1);
        ASSERT_EQ_INT(err.code, PE_EUNSUP);
        ASSERT_CONTAINS(err.msg, "memory controller");
        ASSERT_EQ_INT(stat(gone1, &st), -1); /* rolled back */
    }
    cg = must_create(0, 0, 0, 0);
    ASSERT_CONTAINS(pe_cgroup_path(cg), "/tmp/cg2/pocketenv/pocketenv-test-");
    pid = spawn_in(cg, idle, NULL);
    ASSERT_EQ_INT(pe_cgroup_count_procs(cg, &err), 1);
    ASSERT_EQ_INT(pe_cgroup_kill_all(cg, &err), 0);
    ASSERT_KILLED(reap(pid));
    freeze_cycle(cg);
    must_destroy(cg);
    ASSERT_EQ_INT(stat(gone0, &st), -1);
}

TEST_CASE(v2_degrades_without_controllers)
{
    use_private_cgroup2();
    guarded(body_v2);
}

int main(void)
{
    return RUN_TESTS(invalid_key, create_limits_readback, attach_child, oom_kill, pids_limit,
                     create_lean, cpu_quota_throttles, freeze_thaw, kill_all_frozen,
                     destroy_removes_and_is_idempotent, list_keys, create_reuses_leftover,
                     create_rewrites_leftover_limits, v2_degrades_without_controllers);
}
