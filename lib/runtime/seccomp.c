/* Seccomp: the sandbox's default syscall profile.
 *
 * The profile is a deny list (default ALLOW) modelled on the syscalls
 * Docker's default profile refuses, plus a few it allows that we do not
 * (ptrace and its relatives, io_uring). It is compiled with libseccomp once
 * per process under pthread_once and exported as classic BPF into static
 * storage that lives until the process exits, so the supervisor compiles it
 * before clone and the child only hands the pointer to seccomp(2): no
 * allocation and no libseccomp between clone and exec.
 *
 * Threading: pe_seccomp_default_prog is thread-safe; pe_seccomp_load only
 * touches the calling thread and is async-signal-safe.
 *
 * Architectures: the filter covers the native ABI only. Every other ABI the
 * kernel accepts from this process (i386 through int 0x80 on x86_64, x32
 * through the 0x40000000 syscall-number bit) takes the bad-arch action and
 * kills the process. A deny list keyed on syscall numbers means nothing for
 * an ABI whose numbers differ, so letting those through would void it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/seccomp.h>
#include <seccomp.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/security.h"

/* Syscalls refused with EPERM whatever their arguments. Names, not numbers:
 * libseccomp maps them for the native ABI; names this ABI does not have
 * (vm86 on x86_64, stime on 64-bit ABIs) are skipped. */
static const char *const deny_always[] = {
    /* The kernel keyring is not namespaced: keys would be shared with the
     * host and every other sandbox. */
    "add_key",
    "keyctl",
    "request_key",
    /* eBPF and perf reach deep into the kernel and keep producing
     * privilege-escalation bugs; perf also observes other processes. */
    "bpf",
    "perf_event_open",
    /* Loading or replacing kernel code. */
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "query_module",
    /* Time is not namespaced: setting the clock sets it for the host.
     * adjtimex and clock_adjtime are refused whole: whether a call changes
     * anything is decided by the `modes` field of a struct behind a
     * pointer, which a seccomp filter cannot read. */
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_settime",
    "clock_settime64",
    "settimeofday",
    "stime",
    /* Host-wide administration: process accounting, disk quotas, swap,
     * reboot, the kernel log. */
    "acct",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "swapoff",
    "swapon",
    "syslog",
    /* Mounts. The sandbox's mount table is final at exec; the sandbox has
     * no CAP_SYS_ADMIN either, this is the second fence. The new mount API
     * (fsopen ... mount_setattr, open_tree_attr) is listed too: refusing
     * mount(2) alone would leave the same power one door over. */
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "pivot_root",
    "umount",
    "umount2",
    /* Entering an existing namespace. Creating one is refused by flag in
     * add_namespace_rules. */
    "setns",
    /* File handles bypass path lookup: open_by_handle_at opens any inode of
     * a mounted filesystem from a guessable handle, which is how the 2014
     * "shocker" exploit read the host's /etc/shadow from a container. */
    "name_to_handle_at",
    "open_by_handle_at",
    /* Reaching into another process. Docker allows ptrace on kernels >= 4.8;
     * we do not: a sandbox shares its kernel with its neighbours and
     * ptrace has a long record of escape bugs. kcmp, process_vm_* and
     * pidfd_getfd are the same power (read/compare another process's
     * memory or fds) through another door. */
    "kcmp",
    "pidfd_getfd",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    /* NUMA placement: pins memory on nodes the host chose for others, and
     * migrate_pages/move_pages act on other processes' pages. */
    "mbind",
    "migrate_pages",
    "move_pages",
    "set_mempolicy",
    "set_mempolicy_home_node",
    /* userfaultfd lets a process stall the kernel in the middle of a
     * copy_from_user for as long as it likes: the standard tool for winning
     * kernel races in exploits. */
    "userfaultfd",
    /* io_uring runs syscall-like operations from kernel workers that this
     * filter never sees, and has been the source of a large share of
     * recent kernel escape bugs. */
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    /* fanotify watches whole mounts and, with permission events, can hold
     * up other processes' opens. */
    "fanotify_init",
    /* Direct I/O port access and the legacy vm86 mode. */
    "ioperm",
    "iopl",
    "vm86",
    "vm86old",
    /* Obsolete interfaces with old bugs and no current users. */
    "_sysctl",
    "lookup_dcookie",
    "nfsservctl",
    "sysfs",
    "uselib",
    "ustat",
};

/* Numbers of syscalls newer than the libseccomp we build against, so a
 * name it does not know is still refused on the ABI we run. Only entries
 * for the native ABI are needed (see the file comment). */
static const struct {
    const char *name;
    int nr;
} newer_syscalls[] = {
#if defined(__x86_64__) || defined(__aarch64__)
    /* Same number on both: allocated from the unified table (>= 403). */
    {"open_tree_attr", 467},
#endif
    {NULL, 0},
};

/* personality values a sandbox may set (Docker's list): PER_LINUX,
 * PER_LINUX32, PER_LINUX|UNAME26, PER_LINUX32|UNAME26 and 0xffffffff, which
 * only queries. Everything else, in particular ADDR_NO_RANDOMIZE and
 * READ_IMPLIES_EXEC, weakens the memory layout of what the sandbox execs. */
static const uint32_t personality_allowed[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};

/* The namespace-creating clone flags. CLONE_NEWTIME only exists for unshare
 * and clone3: in clone's flags that bit is part of the exit signal. */
static const uint64_t clone_ns_flags[] = {
    CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

/* On s390 clone takes the stack first and the flags second. */
#if defined(__s390__) || defined(__s390x__)
#define CLONE_FLAGS_ARG 1
#else
#define CLONE_FLAGS_ARG 0
#endif

/* The program: a hand-written prefix for personality, then libseccomp's
 * output. Sized for the kernel's maximum, so nothing is allocated. */
#define STMT(code, k) ((struct sock_filter)BPF_STMT((code), (k)))
#define JEQ(k, jt, jf) ((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (k), (jt), (jf)))
static struct sock_filter prog_insns[BPF_MAXINSNS];
static struct sock_fprog prog;
static pthread_once_t prog_once = PTHREAD_ONCE_INIT;
static int prog_rc;
static pe_err prog_err;

static int syscall_number(const char *name)
{
    int nr = seccomp_syscall_resolve_name(name);

    if (nr != __NR_SCMP_ERROR)
        return nr;
    for (size_t i = 0; newer_syscalls[i].name != NULL; i++)
        if (strcmp(newer_syscalls[i].name, name) == 0)
            return newer_syscalls[i].nr;
    return __NR_SCMP_ERROR;
}

static int add_deny_always(scmp_filter_ctx ctx, pe_err *err)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(deny_always); i++) {
        int nr = syscall_number(deny_always[i]);
        int rc;

        /* Negative: unknown, or a pseudo-number for a syscall this ABI
         * does not have. Neither can be called natively. */
        if (nr < 0)
            continue;
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc < 0)
            return pe_err_set(err, PE_ESYS, -rc, "seccomp rule for %s", deny_always[i]);
    }
    return 0;
}

/* Refuse creating namespaces. One rule per flag because libseccomp can only
 * test "(arg & mask) == value", and rules for one syscall are OR'ed.
 * clone3 passes its flags in a struct the filter cannot read, so it fails
 * with ENOSYS: glibc then falls back to clone, whose flags we can check
 * (Docker does the same). */
static int add_namespace_rules(scmp_filter_ctx ctx, pe_err *err)
{
    int rc;

    for (size_t i = 0; i < PE_ARRAY_LEN(clone_ns_flags); i++) {
        uint64_t f = clone_ns_flags[i];

        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_CMP(CLONE_FLAGS_ARG, SCMP_CMP_MASKED_EQ, f, f));
        if (rc < 0)
            return pe_err_set(err, PE_ESYS, -rc, "seccomp rule for clone");
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, f, f));
        if (rc < 0)
            return pe_err_set(err, PE_ESYS, -rc, "seccomp rule for unshare");
    }
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWTIME, CLONE_NEWTIME));
    if (rc < 0)
        return pe_err_set(err, PE_ESYS, -rc, "seccomp rule for unshare");
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc < 0)
        return pe_err_set(err, PE_ESYS, -rc, "seccomp rule for clone3");
    return 0;
}

/* ioctl commands refused whatever the fd:
 *  - TIOCSTI pushes bytes into a terminal's input queue, as if typed. A
 *    sandbox holding a terminal of the host (or its own PTY, whose master
 *    the caller relays to a host terminal) could type commands into the
 *    shell that reads it once the sandbox is gone (CVE-2017-5226 for
 *    bubblewrap, CVE-2016-9016 for firejail). Kernels since 6.2 can turn
 *    it off host-wide (dev.tty.legacy_tiocsti=0); we cannot count on it.
 *  - TIOCLINUX's subcommands paste the selection buffer of a virtual
 *    console into its input (TIOCL_PASTESEL), the same injection.
 * The kernel reads the command as an unsigned int, so only the low 32 bits
 * are compared: a caller setting the upper half must not slip past. */
static const unsigned long deny_ioctls[] = {TIOCSTI, TIOCLINUX};

static int add_ioctl_rules(scmp_filter_ctx ctx, pe_err *err)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(deny_ioctls); i++) {
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, deny_ioctls[i]));
        if (rc < 0)
            return pe_err_set(err, PE_ESYS, -rc, "seccomp rule for ioctl %#lx", deny_ioctls[i]);
    }
    return 0;
}

/* AF_VSOCK reaches the hypervisor and the other guests' vsock services
 * when the host is a VM with a vsock device (as ours is): a network that
 * no network namespace covers. socket and socketpair with that family fail
 * with EAFNOSUPPORT, what a kernel without vsock answers, so programs that
 * probe for it (systemd's notify and credential code does) fall back as
 * they would there; EPERM reads as "try again as root". The family is an
 * int: low 32 bits only, as for ioctl. */
static int add_socket_rules(scmp_filter_ctx ctx, pe_err *err)
{
    static const char *const calls[] = {"socket", "socketpair"};

    for (size_t i = 0; i < PE_ARRAY_LEN(calls); i++) {
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), syscall_number(calls[i]), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, AF_VSOCK));
        if (rc < 0)
            return pe_err_set(err, PE_ESYS, -rc, "seccomp rule for %s", calls[i]);
    }
    return 0;
}

static void release_ctx(scmp_filter_ctx *ctx)
{
    if (*ctx != NULL)
        seccomp_release(*ctx);
}

static int add_rules(scmp_filter_ctx ctx, pe_err *err)
{
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);

    if (rc < 0)
        return pe_err_set(err, PE_ESYS, -rc, "seccomp bad-arch action");
    /* A binary tree on the syscall number rather than a list of rules in
     * a row: the kernel, when it loads the filter, runs it once for every
     * syscall number of each ABI to build its cache of always-allowed
     * calls, under the sighand lock (~0.1 ms per start with the list), and
     * every syscall in the sandbox then takes a few comparisons instead of
     * up to one per rule. Same rules, same verdicts. */
    rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (rc < 0)
        return pe_err_set(err, PE_ESYS, -rc, "seccomp filter optimization");
    if (add_deny_always(ctx, err) < 0 || add_namespace_rules(ctx, err) < 0 ||
        add_ioctl_rules(ctx, err) < 0 || add_socket_rules(ctx, err) < 0)
        return -1;
    return 0;
}

/* The personality rule, written by hand: it needs "arg0 not in a set",
 * which libseccomp cannot express with a default ALLOW (one comparison per
 * argument and rule, and no rule may carry the default action). The prefix
 * only decides personality on the native ABI; everything else jumps to
 * libseccomp's program, which starts with its own architecture check.
 * BPF jumps are relative and only go forward, so prepending code leaves
 * libseccomp's jumps intact. Returns the number of instructions. */
static size_t emit_personality_prefix(struct sock_filter *f, uint32_t native_arch)
{
    const uint32_t arg0 = offsetof(struct seccomp_data, args[0]);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint32_t arg0_lo = arg0, arg0_hi = arg0 + 4;
#else
    const uint32_t arg0_lo = arg0 + 4, arg0_hi = arg0;
#endif
    const size_t nvals = PE_ARRAY_LEN(personality_allowed);
    /* Layout: 0 ld arch, 1 jeq, 2 ld nr, 3 jeq, 4 ld hi, 5 jeq 0, 6 ld lo,
     * 7.. one jeq per allowed value, then deny, allow, and libseccomp. */
    const size_t deny = 7 + nvals, allow = deny + 1, lib = allow + 1;
    size_t n = 0;

    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n] = JEQ(native_arch, 0, lib - n - 1);
    n++;
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    f[n] = JEQ(__NR_personality, 0, lib - n - 1);
    n++;
    /* The kernel reads an unsigned int; junk in the upper half is refused
     * rather than ignored, so it cannot be used to slip past the check. */
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, arg0_hi);
    f[n] = JEQ(0, 0, deny - n - 1);
    n++;
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, arg0_lo);
    for (size_t i = 0; i < nvals; i++, n++)
        f[n] = JEQ(personality_allowed[i], allow - n - 1, 0);
    f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    return n;
}

/* Export ctx as BPF into prog_insns after the prefix. libseccomp 2.5 can
 * only export to an fd, so the program takes a detour through a memfd. */
static int export_ctx(scmp_filter_ctx ctx, size_t prefix_len, pe_err *err)
{
    cleanup_fd int fd = memfd_create("pe-seccomp", MFD_CLOEXEC);
    size_t room = (PE_ARRAY_LEN(prog_insns) - prefix_len) * sizeof(struct sock_filter);
    size_t got = 0;
    off_t size;
    int rc;

    if (fd < 0)
        return pe_err_sys(err, "memfd_create");
    rc = seccomp_export_bpf(ctx, fd);
    if (rc < 0)
        return pe_err_set(err, PE_ESYS, -rc, "seccomp_export_bpf");
    size = lseek(fd, 0, SEEK_END);
    if (size < 0)
        return pe_err_sys(err, "seek seccomp program");
    if (size == 0 || (size_t)size > room || size % (off_t)sizeof(struct sock_filter) != 0)
        return pe_err_set(err, PE_ESYS, EINVAL, "seccomp program has %lld bytes", (long long)size);
    while (got < (size_t)size) {
        ssize_t r =
            pread(fd, (char *)(prog_insns + prefix_len) + got, (size_t)size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return pe_err_sys(err, "read seccomp program");
        got += (size_t)r;
    }
    prog.len = (unsigned short)(prefix_len + got / sizeof(struct sock_filter));
    prog.filter = prog_insns;
    return 0;
}

/* ---- on-disk cache of the compiled program ----
 * Compiling costs ~0.35 ms, a twentieth of a whole sandbox start from the
 * CLI. The program depends only on this binary and on libseccomp, so it is
 * cached in a file named after both (identity of /proc/self/exe and
 * libseccomp's version); a rebuilt binary or an upgraded library simply
 * gets a new file. The cache directory belongs to root (the data dir). */

static char cache_path[4096];

void pe_seccomp_set_cache_dir(const char *dir)
{
    const struct scmp_version *v = seccomp_version();
    struct stat st;

    cache_path[0] = '\0';
    if (dir == NULL || stat("/proc/self/exe", &st) < 0)
        return;
    snprintf(cache_path, sizeof(cache_path), "%s/seccomp-%llx-%llx-%llx-%lld.%ld-%u.%u.%u.bpf", dir,
             (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
             (unsigned long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
             v ? v->major : 0, v ? v->minor : 0, v ? v->micro : 0);
}

static int load_cached(void)
{
    cleanup_fd int fd = -1;
    struct stat st;
    ssize_t r;

    if (cache_path[0] == '\0')
        return -1;
    fd = open(cache_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 022) != 0)
        return -1;
    if (st.st_size <= 0 || st.st_size > (off_t)sizeof(prog_insns) ||
        st.st_size % (off_t)sizeof(struct sock_filter) != 0)
        return -1;
    r = read(fd, prog_insns, (size_t)st.st_size);
    if (r != st.st_size)
        return -1;
    prog.len = (unsigned short)(st.st_size / (off_t)sizeof(struct sock_filter));
    prog.filter = prog_insns;
    return 0;
}

static void save_cached(void)
{
    if (cache_path[0] == '\0')
        return;
    /* Best effort: a failed write only costs the next run a compile. */
    pe_fs_write_atomic(cache_path, prog_insns, prog.len * sizeof(struct sock_filter), 0600, NULL);
}

static void build_prog(void)
{
    __attribute__((cleanup(release_ctx))) scmp_filter_ctx ctx = NULL;
    size_t prefix_len;

    if (load_cached() == 0)
        return;
    ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == NULL)
        prog_rc = pe_err_set(&prog_err, PE_ESYS, ENOMEM, "seccomp_init");
    else
        prog_rc = add_rules(ctx, &prog_err);
    if (prog_rc == 0) {
        /* libseccomp's architecture tokens are the kernel's AUDIT_ARCH
         * values. */
        prefix_len = emit_personality_prefix(prog_insns, seccomp_arch_native());
        prog_rc = export_ctx(ctx, prefix_len, &prog_err);
    }
    if (prog_rc < 0)
        pe_err_prefix(&prog_err, "build seccomp profile");
    else
        save_cached();
}

int pe_seccomp_default_prog(const struct sock_fprog **out, pe_err *err)
{
    int rc = pthread_once(&prog_once, build_prog);

    if (rc != 0)
        return pe_err_set(err, PE_ESYS, rc, "build seccomp profile");
    if (prog_rc < 0) {
        if (err != NULL)
            *err = prog_err;
        return -1;
    }
    *out = &prog;
    return 0;
}

int pe_seccomp_load(const struct sock_fprog *p)
{
    if (p == NULL || p->len == 0)
        return -EINVAL;
    /* Flags 0: no TSYNC (the child is single-threaded between clone and
     * exec), no SPEC_ALLOW (keep the kernel's speculation mitigations). */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p) < 0)
        return -errno;
    return 0;
}
