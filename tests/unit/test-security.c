/* Tests for the privilege fence (lib/runtime/seccomp.c, caps.c).
 *
 * Security is tested by attack: each case loads the real profile or applies
 * the real capability set in its own process (the harness forks per case)
 * and then tries what the fence must stop. Every attempt uses arguments the
 * kernel rejects anyway, so a broken filter fails the test instead of
 * changing the host. The pe-try-syscall helper, built next to this test, is
 * run once without the filter (every probe must be let through, so an EPERM
 * under the filter means the filter) and once under it.
 *
 * Capability cases need root and skip otherwise; seccomp cases run as any
 * user (no_new_privs makes loading a filter unprivileged). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>

#include <linux/capability.h>

#include "runtime/security.h"
#include "task.h"

extern char **environ;

#define BAD ((void *)1)
#define DEFAULT_CAPS 0xa80425fbULL /* Docker's default set, as /proc shows it */

static const struct sock_fprog *default_prog(void)
{
    const struct sock_fprog *prog = NULL;
    pe_err err = {0};

    if (pe_seccomp_default_prog(&prog, &err) < 0)
        TEST_FAIL("pe_seccomp_default_prog: %s", err.msg);
    return prog;
}

/* Lock the calling process (a forked test case) behind the profile. */
static void load_default_filter(void)
{
    const struct sock_fprog *prog = default_prog();

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        TEST_FAIL("no_new_privs: %s", strerror(errno));
    ASSERT_EQ_INT(pe_seccomp_load(prog), 0);
}

/* End a case that loaded the filter into its own process. exit() would run
 * LeakSanitizer in sanitizer builds, and it ptrace-attaches to the process,
 * which the filter refuses: leave through _exit instead. */
static _Noreturn void filtered_case_done(void)
{
    fflush(stdout);
    fflush(stderr);
    _exit(0);
}

/* errno of a raw syscall that must fail, or 0 if it succeeded. */
#define SYSCALL_ERRNO(...) (errno = 0, syscall(__VA_ARGS__) < 0 ? errno : 0)

/* Run fn in a child with core dumps off; return its wait status. */
static int wait_child(void (*fn)(void))
{
    struct rlimit no_core = {0, 0};
    int status = 0;
    pid_t pid = fork();

    if (pid < 0)
        TEST_FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        setrlimit(RLIMIT_CORE, &no_core);
        fn();
        _exit(0);
    }
    if (waitpid(pid, &status, 0) < 0)
        TEST_FAIL("waitpid: %s", strerror(errno));
    return status;
}

TEST_CASE(seccomp_prog_is_cached)
{
    const struct sock_fprog *a = default_prog(), *b = default_prog();

    ASSERT(a == b);
    ASSERT(a->filter != NULL);
    /* ~70 syscalls plus argument rules: more than a trivial program, well
     * under the kernel's limit. */
    ASSERT(a->len > 80);
    ASSERT(a->len < 1024);
    ASSERT_EQ_INT(pe_seccomp_load(NULL), -EINVAL);
}

TEST_CASE(seccomp_denies_with_eperm)
{
    load_default_filter();
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_keyctl, 9999, 0, 0, 0, 0), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_add_key, BAD, BAD, BAD, 0, 0), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_bpf, 9999, NULL, 0), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_perf_event_open, BAD, 0, -1, -1, 0x40000000UL), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_mount, BAD, BAD, BAD, 0, BAD), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_umount2, BAD, 0x40000000), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_ptrace, 0xdead, -1, 0, 0), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_setns, -1, 0), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_io_uring_setup, 0, BAD), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_userfaultfd, 1 | 0x40000000), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_open_by_handle_at, -1, BAD, 0), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_settimeofday, BAD, BAD), EPERM);
    /* A real unshare: if the filter let it through, only this forked test
     * process would be in a new user namespace. */
    ASSERT_EQ_INT(unshare(CLONE_NEWUSER) < 0 ? errno : 0, EPERM);
    ASSERT_EQ_INT(unshare(CLONE_NEWNS | CLONE_NEWNET) < 0 ? errno : 0, EPERM);
    /* clone with a namespace flag, in a combination the kernel rejects. */
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_clone, CLONE_NEWPID | CLONE_SIGHAND, 0, 0, 0, 0), EPERM);
    filtered_case_done();
}

TEST_CASE(seccomp_personality_allow_list)
{
    load_default_filter();
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_personality, 0xffffffffUL), 0);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_personality, 0x0008UL), 0);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_personality, 0x0UL), 0);
    /* ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, and junk in the upper half of
     * an allowed value. */
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_personality, 0x0040000UL), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_personality, 0x0400000UL), EPERM);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_personality, 0x100000000UL), EPERM);
    ASSERT_EQ_INT(syscall(SYS_personality, 0xffffffffUL), 0);
    filtered_case_done();
}

static void *thread_fn(void *arg)
{
    return arg;
}

TEST_CASE(seccomp_allows_ordinary_work)
{
    char *const true_argv[] = {(char *)"/bin/true", NULL};
    pid_t self = getpid(), pid;
    int fds[2], status = -1;
    pthread_t th;
    void *ret = NULL;
    char c = 0;

    load_default_filter();
    ASSERT_EQ_INT(getpid(), self);
    ASSERT_EQ_INT(read(-1, &c, 1) < 0 ? errno : 0, EBADF);
    ASSERT_EQ_INT(pipe2(fds, O_CLOEXEC), 0);
    ASSERT_EQ_INT(write(fds[1], "x", 1), 1);
    ASSERT_EQ_INT(read(fds[0], &c, 1), 1);
    /* clone3 answers ENOSYS so that glibc falls back to clone. */
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_clone3, BAD, 0), ENOSYS);
    /* fork (clone), then posix_spawn and threads (clone3, falling back). */
    pid = fork();
    if (pid == 0) {
        execv("/bin/true", true_argv);
        _exit(127);
    }
    ASSERT(pid > 0);
    ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
    ASSERT_EQ_INT(status, 0);
    ASSERT_EQ_INT(posix_spawn(&pid, "/bin/true", NULL, NULL, true_argv, environ), 0);
    ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
    ASSERT_EQ_INT(status, 0);
    ASSERT_EQ_INT(pthread_create(&th, NULL, thread_fn, &c), 0);
    ASSERT_EQ_INT(pthread_join(th, &ret), 0);
    ASSERT(ret == &c);
    filtered_case_done();
}

/* Bytes waiting in the input queue of pty peer p (raw mode). */
static int queued(int p)
{
    int n = -1;

    if (ioctl(p, FIONREAD, &n) < 0)
        TEST_FAIL("FIONREAD: %s", strerror(errno));
    return n;
}

/* Terminal injection on a real pty and a real vsock socket. Root may
 * TIOCSTI into any terminal, so as root the control shows the byte
 * arriving without the filter; under it, nothing is queued. */
TEST_CASE(seccomp_refuses_tiocsti_tioclinux_vsock)
{
    struct termios t;
    char c = 'x', sub = 3; /* TIOCL_PASTESEL */
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), p, sv[2];

    ASSERT(m >= 0);
    ASSERT_EQ_INT(grantpt(m), 0);
    ASSERT_EQ_INT(unlockpt(m), 0);
    p = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT(p >= 0);
    ASSERT_EQ_INT(tcgetattr(p, &t), 0);
    cfmakeraw(&t);
    ASSERT_EQ_INT(tcsetattr(p, TCSANOW, &t), 0);
    if (geteuid() == 0) {
        ASSERT_EQ_INT(ioctl(p, TIOCSTI, &c), 0);
        ASSERT_EQ_INT(queued(p), 1);
        ASSERT_EQ_INT(read(p, &c, 1), 1);
    }
    load_default_filter();
    ASSERT_EQ_INT(ioctl(p, TIOCSTI, &c) < 0 ? errno : 0, EPERM);
    /* The kernel reads 32 bits of the command: so must the filter. */
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_ioctl, p, 0x100000000UL | TIOCSTI, &c), EPERM);
    ASSERT_EQ_INT(queued(p), 0);
    ASSERT_EQ_INT(ioctl(p, TIOCLINUX, &sub) < 0 ? errno : 0, EPERM);
    ASSERT_EQ_INT(ioctl(p, TCGETS, &t), 0);
    ASSERT_EQ_INT(socket(AF_VSOCK, SOCK_STREAM, 0) < 0 ? errno : 0, EAFNOSUPPORT);
    ASSERT_EQ_INT(SYSCALL_ERRNO(SYS_socket, 0x100000000UL | AF_VSOCK, SOCK_STREAM, 0),
                  EAFNOSUPPORT);
    ASSERT_EQ_INT(socketpair(AF_VSOCK, SOCK_STREAM, 0, sv) < 0 ? errno : 0, EAFNOSUPPORT);
    ASSERT_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    filtered_case_done();
}

#if defined(__x86_64__)
static long int80_getpid(void)
{
    long ret;

    __asm__ volatile("int $0x80" : "=a"(ret) : "0"(20L) : "memory", "r8", "r9", "r10", "r11");
    return ret;
}

/* Unfiltered: exits 0 when an i386 getpid answers like getpid. Without
 * IA32 emulation int $0x80 faults (SIGSEGV), so probe in a child. */
static void int80_probe_child(void)
{
    _exit(int80_getpid() == getpid() ? 0 : 1);
}

static void int80_child(void)
{
    load_default_filter();
    int80_getpid();
}

static void x32_child(void)
{
    load_default_filter();
    syscall(0x40000000L | SYS_getpid);
}

TEST_CASE(seccomp_kills_foreign_abi)
{
    int status;

    /* Without a filter an i386 getpid works here (IA32 emulation on), so
     * a SIGSYS below is the filter's doing. */
    status = wait_child(int80_probe_child);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_SKIP("no i386 syscall emulation on this kernel");
    status = wait_child(int80_child);
    ASSERT(WIFSIGNALED(status));
    ASSERT_EQ_INT(WTERMSIG(status), SIGSYS);
    status = wait_child(x32_child);
    ASSERT(WIFSIGNALED(status));
    ASSERT_EQ_INT(WTERMSIG(status), SIGSYS);
}
#else
TEST_CASE(seccomp_kills_foreign_abi)
{
    TEST_SKIP("foreign-ABI probes are x86_64 only");
}
#endif

/* pe-try-syscall sits next to this test in the build tree. */
static void helper_path(char *buf, size_t len)
{
    char self[PATH_MAX];
    const char *env = getenv("PE_TRY_SYSCALL");
    ssize_t n;

    if (env != NULL) {
        snprintf(buf, len, "%s", env);
    } else {
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0)
            TEST_FAIL("readlink /proc/self/exe: %s", strerror(errno));
        self[n] = '\0';
        snprintf(buf, len, "%s/pe-try-syscall", dirname(self));
    }
    if (access(buf, X_OK) < 0)
        TEST_SKIP("%s not built", buf);
}

/* Run the helper with one argument, optionally under the filter; capture
 * stdout into out (NUL-terminated). Returns the wait status. */
static int run_helper(const char *arg, int filtered, char *out, size_t cap)
{
    char path[PATH_MAX];
    int fds[2], status = 0;
    size_t got = 0;
    ssize_t n;
    pid_t pid;

    helper_path(path, sizeof(path));
    if (pipe2(fds, O_CLOEXEC) < 0)
        TEST_FAIL("pipe: %s", strerror(errno));
    pid = fork();
    if (pid == 0) {
        char *const argv[] = {path, (char *)arg, NULL};

        dup2(fds[1], 1);
        if (filtered)
            load_default_filter();
        execv(path, argv);
        _exit(127);
    }
    close(fds[1]);
    while (got + 1 < cap && (n = read(fds[0], out + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    close(fds[0]);
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        TEST_FAIL("run %s: %s", path, strerror(errno));
    return status;
}

/* Probes the profile lets through, and what the kernel answers them. */
static const struct {
    const char *name;
    const char *result;
} allowed_probes[] = {
    {"getpid", "errno=0"},
    {"read", "errno=EBADF"},
    {"openat", "errno=EFAULT"},
    {"clone-nons", "errno=EINVAL"},
    {"unshare-nons", "errno=EINVAL"},
    {"clone3", "errno=ENOSYS"},
    {"ioctl-tcgets", "errno=EBADF"},
    {"socket-unix", "errno=EINVAL"},
    {"socket-vsock", "errno=EAFNOSUPPORT"},
    {"socket-vsock-hi", "errno=EAFNOSUPPORT"},
    {"socketpair-vsock", "errno=EAFNOSUPPORT"},
    {"personality-query", "errno=0"},
    {"personality-linux32", "errno=0"},
};

static const char *expected_under_filter(const char *name, size_t name_len)
{
    for (size_t i = 0; i < sizeof(allowed_probes) / sizeof(allowed_probes[0]); i++)
        if (strlen(allowed_probes[i].name) == name_len &&
            strncmp(allowed_probes[i].name, name, name_len) == 0)
            return allowed_probes[i].result;
    return "errno=EPERM";
}

/* Check every "NAME errno=X" line of out; filtered selects the
 * expectation. Returns the number of lines. */
static int check_probe_lines(char *out, int filtered)
{
    int lines = 0;

    for (char *line = out, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1, lines++) {
        char *sp = memchr(line, ' ', (size_t)(nl - line));

        *nl = '\0';
        if (sp == NULL || strncmp(sp + 1, "errno=", 6) != 0)
            TEST_FAIL("malformed line: \"%s\"", line);
        if (!filtered && strcmp(sp + 1, "errno=EPERM") == 0)
            TEST_FAIL("without the filter, %s; the probe does not tell the filter apart", line);
        if (filtered && strcmp(sp + 1, expected_under_filter(line, (size_t)(sp - line))) != 0)
            TEST_FAIL("under the filter \"%s\", expected %s", line,
                      expected_under_filter(line, (size_t)(sp - line)));
    }
    return lines;
}

static int count_lines(const char *s)
{
    int n = 0;

    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

TEST_CASE(probes_pass_without_filter)
{
    static char out[16384], list[16384];
    int status;

    /* Some syscalls check a capability before their arguments; with all
     * capabilities every probe must reach the argument check. */
    if (geteuid() != 0)
        TEST_SKIP("needs root: several probes hit a capability check first");
    status = run_helper("--list", 0, list, sizeof(list));
    ASSERT_EQ_INT(status, 0);
    status = run_helper("--all", 0, out, sizeof(out));
    ASSERT_EQ_INT(status, 0);
    /* --list also names the two ABI probes, which --all leaves out. */
    ASSERT_EQ_INT(check_probe_lines(out, 0), count_lines(list) - 2);
    ASSERT(count_lines(list) > 60);
}

TEST_CASE(probes_refused_under_filter)
{
    static char out[16384];
    int status = run_helper("--all", 1, out, sizeof(out));

    ASSERT_EQ_INT(status, 0);
    ASSERT(check_probe_lines(out, 1) > 60);
}

TEST_CASE(probes_foreign_abi_killed)
{
    char out[256];
    int status;

#if !defined(__x86_64__)
    TEST_SKIP("foreign-ABI probes are x86_64 only");
#endif
    status = run_helper("int80-getpid", 0, out, sizeof(out));
    if (!WIFEXITED(status) || strcmp(out, "int80-getpid errno=0\n") != 0)
        TEST_SKIP("no i386 syscall emulation on this kernel");
    status = run_helper("int80-getpid", 1, out, sizeof(out));
    ASSERT(WIFSIGNALED(status));
    ASSERT_EQ_INT(WTERMSIG(status), SIGSYS);
    ASSERT_EQ_STR(out, "");
    status = run_helper("x32-getpid", 1, out, sizeof(out));
    ASSERT(WIFSIGNALED(status));
    ASSERT_EQ_INT(WTERMSIG(status), SIGSYS);
}

/* Capability sets of this process as /proc shows them. */
struct capsets {
    uint64_t inh, prm, eff, bnd, amb;
};

static uint64_t status_field(const char *status, const char *key)
{
    const char *p = strstr(status, key);

    if (p == NULL)
        TEST_FAIL("no %s in /proc/self/status", key);
    return strtoull(p + strlen(key), NULL, 16);
}

static struct capsets parse_capsets(const char *status)
{
    struct capsets c = {
        .inh = status_field(status, "\nCapInh:\t"),
        .prm = status_field(status, "\nCapPrm:\t"),
        .eff = status_field(status, "\nCapEff:\t"),
        .bnd = status_field(status, "\nCapBnd:\t"),
        .amb = status_field(status, "\nCapAmb:\t"),
    };
    return c;
}

static struct capsets read_capsets(void)
{
    static char buf[8192];
    ssize_t n;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        TEST_FAIL("open /proc/self/status: %s", strerror(errno));
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        TEST_FAIL("read /proc/self/status");
    buf[n] = '\0';
    return parse_capsets(buf);
}

static void require_root_with_default_caps(void)
{
    struct capsets c;

    if (geteuid() != 0)
        TEST_SKIP("needs root");
    c = read_capsets();
    if ((c.prm & DEFAULT_CAPS) != DEFAULT_CAPS || (c.bnd & DEFAULT_CAPS) != DEFAULT_CAPS)
        TEST_SKIP("this process lacks some of the default capabilities");
}

TEST_CASE(caps_default_mask)
{
    ASSERT_EQ_INT(pe_caps_default_mask(), DEFAULT_CAPS);
    ASSERT(!(pe_caps_default_mask() & (1ULL << CAP_SYS_ADMIN)));
}

TEST_CASE(caps_apply_with_ambient)
{
    struct capsets c;

    require_root_with_default_caps();
    ASSERT_EQ_INT(pe_caps_apply(pe_caps_default_mask(), 1), 0);
    c = read_capsets();
    ASSERT_EQ_INT(c.eff, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.prm, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.inh, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.bnd, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.amb, DEFAULT_CAPS);
}

/* After an apply of the default mask: exactly the default capabilities in
 * the effective, permitted and bounding sets, none ambient. */
static void assert_default_caps_dropped(void)
{
    struct capsets c = read_capsets();

    ASSERT_EQ_INT(c.eff, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.prm, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.bnd, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.amb, 0);
}

TEST_CASE(caps_apply_without_ambient)
{
    require_root_with_default_caps();
    /* Start with a full ambient set, to see it cleared. */
    ASSERT_EQ_INT(pe_caps_apply(pe_caps_default_mask(), 1), 0);
    ASSERT_EQ_INT(read_capsets().amb, DEFAULT_CAPS);
    /* Bits the kernel does not know are ignored. */
    ASSERT_EQ_INT(pe_caps_apply(pe_caps_default_mask() | (1ULL << 63), 0), 0);
    assert_default_caps_dropped();
    /* Dropped capabilities cannot come back. */
    ASSERT_EQ_INT(pe_caps_apply(DEFAULT_CAPS | (1ULL << CAP_SYS_ADMIN), 0), -EPERM);
}

/* With the kernel's capabilities learnt first (as the runtime does in the
 * parent before it clones), the child drops without asking about each:
 * the same sets result. */
TEST_CASE(caps_apply_prepared)
{
    require_root_with_default_caps();
    pe_caps_prepare();
    ASSERT_EQ_INT(pe_caps_apply(pe_caps_default_mask() | (1ULL << 63), 0), 0);
    assert_default_caps_dropped();
    /* a second drop of what is gone is no error; nothing comes back */
    ASSERT_EQ_INT(pe_caps_apply(pe_caps_default_mask(), 0), 0);
    ASSERT_EQ_INT(read_capsets().bnd, DEFAULT_CAPS);
    ASSERT_EQ_INT(pe_caps_apply(DEFAULT_CAPS | (1ULL << CAP_SYS_ADMIN), 0), -EPERM);
}

TEST_CASE(caps_sys_admin_gone)
{
    int fd;

    require_root_with_default_caps();
    /* A private UTS namespace first (needs CAP_SYS_ADMIN, so before the
     * drop), so that sethostname cannot touch the host's name. */
    ASSERT_EQ_INT(unshare(CLONE_NEWUTS), 0);
    ASSERT_EQ_INT(sethostname("pe-before", 9), 0);
    ASSERT_EQ_INT(pe_caps_apply(pe_caps_default_mask(), 0), 0);
    ASSERT_EQ_INT(sethostname("pe-after", 8) < 0 ? errno : 0, EPERM);
    ASSERT_EQ_INT(unshare(CLONE_NEWNS) < 0 ? errno : 0, EPERM);
    /* Kept capabilities still work: CAP_CHOWN, on a file only we see. */
    fd = memfd_create("pe-test", MFD_CLOEXEC);
    ASSERT(fd >= 0);
    ASSERT_EQ_INT(fchown(fd, 65534, 65534) < 0 ? errno : 0, 0);
    close(fd);
}

/* The ambient set is what lets a non-root program exec'd by the sandbox
 * keep the capabilities. Exec cat as uid 65534 and read its sets. */
TEST_CASE(caps_ambient_survives_exec_as_nonroot)
{
    static char out[8192];
    char *const argv[] = {(char *)"/bin/cat", (char *)"/proc/self/status", NULL};
    int fds[2], status = -1;
    size_t got = 0;
    ssize_t n;
    pid_t pid;
    struct capsets c;

    require_root_with_default_caps();
    ASSERT_EQ_INT(pipe2(fds, O_CLOEXEC), 0);
    pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 || setresgid(65534, 65534, 65534) < 0 ||
            setresuid(65534, 65534, 65534) < 0 || pe_caps_apply(pe_caps_default_mask(), 1) < 0)
            _exit(3);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    while (got + 1 < sizeof(out) && (n = read(fds[0], out + got, sizeof(out) - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
    ASSERT_EQ_INT(status, 0);
    c = parse_capsets(out);
    ASSERT_EQ_INT(c.eff, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.prm, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.amb, DEFAULT_CAPS);
    ASSERT_EQ_INT(c.bnd, DEFAULT_CAPS);
}

TEST_CASE(cap_from_name)
{
    static const char *const names[] = {
        "chown",
        "dac_override",
        "dac_read_search",
        "fowner",
        "fsetid",
        "kill",
        "setgid",
        "setuid",
        "setpcap",
        "linux_immutable",
        "net_bind_service",
        "net_broadcast",
        "net_admin",
        "net_raw",
        "ipc_lock",
        "ipc_owner",
        "sys_module",
        "sys_rawio",
        "sys_chroot",
        "sys_ptrace",
        "sys_pacct",
        "sys_admin",
        "sys_boot",
        "sys_nice",
        "sys_resource",
        "sys_time",
        "sys_tty_config",
        "mknod",
        "lease",
        "audit_write",
        "audit_control",
        "setfcap",
        "mac_override",
        "mac_admin",
        "syslog",
        "wake_alarm",
        "block_suspend",
        "audit_read",
        "perfmon",
        "bpf",
        "checkpoint_restore",
    };
    char buf[64];

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ASSERT_EQ_INT(pe_cap_from_name(names[i]), i);
        snprintf(buf, sizeof(buf), "CAP_%s", names[i]);
        for (char *p = buf; *p != '\0'; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
        ASSERT_EQ_INT(pe_cap_from_name(buf), i);
        ASSERT_EQ_INT(pe_cap_from_name(buf + 4), i);
    }
    ASSERT_EQ_INT(pe_cap_from_name("cap_net_admin"), CAP_NET_ADMIN);
    ASSERT_EQ_INT(pe_cap_from_name("NET_ADMIN"), CAP_NET_ADMIN);
    ASSERT_EQ_INT(pe_cap_from_name("Cap_Sys_Admin"), CAP_SYS_ADMIN);
    ASSERT_EQ_INT(pe_cap_from_name(NULL), -1);
    ASSERT_EQ_INT(pe_cap_from_name(""), -1);
    ASSERT_EQ_INT(pe_cap_from_name("cap_"), -1);
    ASSERT_EQ_INT(pe_cap_from_name("net_admin2"), -1);
    ASSERT_EQ_INT(pe_cap_from_name("cap_cap_chown"), -1);
    ASSERT_EQ_INT(pe_cap_from_name("all"), -1);
}

int main(void)
{
    int failed = RUN_TESTS(
        seccomp_prog_is_cached, seccomp_denies_with_eperm, seccomp_refuses_tiocsti_tioclinux_vsock,
        seccomp_personality_allow_list, seccomp_allows_ordinary_work, seccomp_kills_foreign_abi,
        probes_pass_without_filter, probes_refused_under_filter, probes_foreign_abi_killed);

    failed |= RUN_TESTS(caps_default_mask, caps_apply_with_ambient, caps_apply_without_ambient,
                        caps_apply_prepared, caps_sys_admin_gone,
                        caps_ambient_survives_exec_as_nonroot, cap_from_name);
    return failed;
}
