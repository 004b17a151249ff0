/* pe-try-syscall: report which syscalls the sandbox's seccomp filter lets
 * through, without doing anything.
 *
 *   pe-try-syscall NAME...      one line per probe: "NAME errno=ERRNAME"
 *   pe-try-syscall --all        every probe in the table, in table order
 *   pe-try-syscall --list       the probe names, one per line
 *   pe-try-syscall int80-getpid (alone) getpid through the i386 ABI
 *   pe-try-syscall x32-getpid   (alone) getpid through the x32 ABI
 *
 * Each probe calls its syscall with arguments the kernel rejects before
 * doing anything: a bad pointer ((void *)1), fd -1, an unknown command, an
 * invalid flag combination. Let through, the call fails with EFAULT, EBADF,
 * EINVAL, ESRCH, ENOSYS (not built into this kernel) ... and has no effect;
 * refused by the filter it fails with EPERM (clone3: ENOSYS). "errno=0"
 * means the call succeeded (controls such as getpid).
 *
 * Caveat: some syscalls check a capability before their arguments
 * (pivot_root, fsopen, fsmount, fspick, move_mount, swapoff, acct, reboot,
 * syslog, kexec_*, *_module).
 * Without that capability the kernel itself answers EPERM, so for those
 * probes EPERM only proves the filter when the caller holds the capability.
 * The table notes which argument makes each call fail.
 *
 * The ABI probes are run alone because the filter kills the whole process
 * (SIGSYS) when they are refused; let through, they print their result.
 *
 * Static, plain libc only: it is copied into sandboxes that have nothing
 * else. Exit status: 0 after printing, 2 on a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Numbers newer than some kernel headers; the numbers are ABI. */
#if defined(__x86_64__) || defined(__aarch64__)
#ifndef SYS_open_tree_attr
#define SYS_open_tree_attr 467
#endif
#endif

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

#define BAD 1L              /* an address nothing is mapped at */
#define HI32 0x100000000L   /* set in a 32-bit argument: the kernel drops it */
#define BADFLAG 0x40000000L /* a flag bit no syscall probed here defines */

struct probe {
    const char *name;
    long nr;
    long a[6];
};

/* clang-format off */
static const struct probe probes[] = {
    /* Controls: allowed by the profile. */
    {"getpid", SYS_getpid, {0}},                          /* succeeds */
    {"read", SYS_read, {-1, BAD, 1}},                     /* EBADF */
    {"openat", SYS_openat, {AT_FDCWD, BAD, O_RDONLY}},    /* EFAULT */
    {"clone-nons", SYS_clone, {CLONE_SIGHAND}},           /* EINVAL: SIGHAND needs VM */
    {"unshare-nons", SYS_unshare, {CLONE_VFORK}},         /* EINVAL: not an unshare flag */
    /* clone3 is refused with ENOSYS, so glibc falls back to clone. */
    {"clone3", SYS_clone3, {BAD, 0}},                     /* EINVAL: size 0 */
    {"ioctl-tcgets", SYS_ioctl, {-1, TCGETS, BAD}},       /* EBADF */
    {"socket-unix", SYS_socket, {AF_UNIX, 9999, 0}},      /* EINVAL: type */
    /* Terminal input injection, on fd -1; "-hi" repeats the command with
     * bits above the 32 the kernel reads. */
    {"ioctl-tiocsti", SYS_ioctl, {-1, TIOCSTI, BAD}},     /* EBADF */
    {"ioctl-tiocsti-hi", SYS_ioctl, {-1, HI32 | TIOCSTI, BAD}},
    {"ioctl-tioclinux", SYS_ioctl, {-1, TIOCLINUX, BAD}}, /* EBADF */
    /* vsock: refused with EAFNOSUPPORT, not EPERM. */
    {"socket-vsock", SYS_socket, {AF_VSOCK, 9999, 0}},    /* EINVAL: type */
    {"socket-vsock-hi", SYS_socket, {HI32 | AF_VSOCK, 9999, 0}},
    {"socketpair-vsock", SYS_socketpair, {AF_VSOCK, 9999, 0, BAD}}, /* EINVAL */
    /* Namespace creation: each flag alone, in an invalid combination. */
    {"clone-newns", SYS_clone, {CLONE_NEWNS | CLONE_SIGHAND}},
    {"clone-newuts", SYS_clone, {CLONE_NEWUTS | CLONE_SIGHAND}},
    {"clone-newipc", SYS_clone, {CLONE_NEWIPC | CLONE_SIGHAND}},
    {"clone-newuser", SYS_clone, {CLONE_NEWUSER | CLONE_SIGHAND}},
    {"clone-newpid", SYS_clone, {CLONE_NEWPID | CLONE_SIGHAND}},
    {"clone-newnet", SYS_clone, {CLONE_NEWNET | CLONE_SIGHAND}},
    {"clone-newcgroup", SYS_clone, {CLONE_NEWCGROUP | CLONE_SIGHAND}},
    {"unshare", SYS_unshare, {CLONE_NEWUSER | CLONE_VFORK}},
    {"unshare-newns", SYS_unshare, {CLONE_NEWNS | CLONE_VFORK}},
    {"unshare-newtime", SYS_unshare, {CLONE_NEWTIME | CLONE_VFORK}},
    {"setns", SYS_setns, {-1, 0}},                        /* EBADF */
    /* Keyring. */
    {"add_key", SYS_add_key, {BAD, BAD, BAD, 0, 0}},      /* EFAULT */
    {"keyctl", SYS_keyctl, {9999}},                       /* EOPNOTSUPP */
    {"request_key", SYS_request_key, {BAD, BAD, BAD, 0}}, /* EFAULT */
    /* bpf, perf. */
    {"bpf", SYS_bpf, {9999, 0, 0}},                       /* EINVAL: unknown command */
    {"perf_event_open", SYS_perf_event_open, {BAD, 0, -1, -1, BADFLAG}}, /* EINVAL */
    /* Kernel code. Never nr_segments 0 or KEXEC_FILE_UNLOAD: that unloads. */
    {"kexec_load", SYS_kexec_load, {0, 0xffff, BAD, 0x100}},            /* EINVAL */
    {"kexec_file_load", SYS_kexec_file_load, {-1, -1, 0, BAD, BADFLAG}}, /* EINVAL */
    {"init_module", SYS_init_module, {BAD, 0, BAD}},      /* ENOEXEC: len 0 */
    {"finit_module", SYS_finit_module, {-1, BAD, BADFLAG}}, /* EINVAL */
    {"delete_module", SYS_delete_module, {BAD, 0}},       /* EFAULT */
#ifdef SYS_create_module
    {"create_module", SYS_create_module, {BAD, 0}},       /* ENOSYS */
#endif
#ifdef SYS_get_kernel_syms
    {"get_kernel_syms", SYS_get_kernel_syms, {BAD}},      /* ENOSYS */
#endif
#ifdef SYS_query_module
    {"query_module", SYS_query_module, {BAD, 0, BAD, 0, BAD}}, /* ENOSYS */
#endif
    /* Time. Never a valid pointer: that would set the host's clock. */
    {"clock_settime", SYS_clock_settime, {9999, BAD}},    /* EINVAL: clock id */
    {"clock_adjtime", SYS_clock_adjtime, {9999, BAD}},    /* EINVAL: clock id */
    {"settimeofday", SYS_settimeofday, {BAD, BAD}},       /* EFAULT */
    {"adjtimex", SYS_adjtimex, {BAD}},                    /* EFAULT */
    /* Host administration. Never acct(NULL) (turns accounting off) nor the
     * reboot magic. */
    {"acct", SYS_acct, {BAD}},                            /* EFAULT */
    {"quotactl", SYS_quotactl, {0xff, BAD, 0, 0}},        /* EINVAL: quota type */
#ifdef SYS_quotactl_fd
    {"quotactl_fd", SYS_quotactl_fd, {-1, 0xff, 0, 0}},   /* EBADF */
#endif
    {"reboot", SYS_reboot, {0, 0, 0, 0}},                 /* EINVAL: magic */
    {"swapon", SYS_swapon, {BAD, BADFLAG}},               /* EINVAL: flags */
    {"swapoff", SYS_swapoff, {BAD}},                      /* EFAULT */
    {"syslog", SYS_syslog, {9999, 0, 0}},                 /* EINVAL: action */
    /* Mounts. */
    {"mount", SYS_mount, {BAD, BAD, BAD, 0, BAD}},        /* EFAULT */
    {"umount2", SYS_umount2, {BAD, BADFLAG}},             /* EINVAL: flags */
    {"pivot_root", SYS_pivot_root, {BAD, BAD}},           /* EFAULT */
    {"fsopen", SYS_fsopen, {BAD, BADFLAG}},               /* EINVAL: flags */
    {"fsconfig", SYS_fsconfig, {-1, 9999, 0, 0, 0}},      /* EINVAL */
    {"fsmount", SYS_fsmount, {-1, BADFLAG, 0}},           /* EINVAL: flags */
    {"fspick", SYS_fspick, {-1, BAD, BADFLAG}},           /* EINVAL: flags */
    {"move_mount", SYS_move_mount, {-1, BAD, -1, BAD, BADFLAG}}, /* EINVAL */
    {"open_tree", SYS_open_tree, {-1, BAD, BADFLAG}},     /* EINVAL: flags */
#ifdef SYS_open_tree_attr
    {"open_tree_attr", SYS_open_tree_attr, {-1, BAD, BADFLAG, 0, 0}}, /* EINVAL */
#endif
    {"mount_setattr", SYS_mount_setattr, {-1, BAD, BADFLAG, BAD, 0}}, /* EINVAL */
    /* File handles. */
    {"name_to_handle_at", SYS_name_to_handle_at, {-1, BAD, BAD, BAD, BADFLAG}}, /* EINVAL */
    {"open_by_handle_at", SYS_open_by_handle_at, {-1, BAD, 0}}, /* EBADF */
    /* Other processes. pid -1 is never a process. */
    {"ptrace", SYS_ptrace, {0xdead, -1, 0, 0}},           /* ESRCH */
    {"process_vm_readv", SYS_process_vm_readv, {0, BAD, 1, BAD, 1, 1}},  /* EINVAL: flags */
    {"process_vm_writev", SYS_process_vm_writev, {0, BAD, 1, BAD, 1, 1}}, /* EINVAL: flags */
    {"kcmp", SYS_kcmp, {-1, -1, 0, 0, 0}},                /* ESRCH */
    {"pidfd_getfd", SYS_pidfd_getfd, {-1, -1, 0}},        /* EBADF */
    /* NUMA. */
    {"mbind", SYS_mbind, {BAD, 0, 9999, 0, 0, 0}},        /* EINVAL: unaligned */
    {"set_mempolicy", SYS_set_mempolicy, {9999, 0, 0}},   /* EINVAL: mode */
    {"move_pages", SYS_move_pages, {0, 0, 0, 0, 0, BADFLAG}}, /* EINVAL: flags */
    {"migrate_pages", SYS_migrate_pages, {-1, 0, 0, 0}},  /* ESRCH */
#ifdef SYS_set_mempolicy_home_node
    {"set_mempolicy_home_node", SYS_set_mempolicy_home_node, {0, 0, 0, 1}}, /* EINVAL */
#endif
    /* UFFD_USER_MODE_ONLY (1) keeps unprivileged callers past the sysctl
     * gate so the flag check answers. */
    {"userfaultfd", SYS_userfaultfd, {1 | BADFLAG}},      /* EINVAL: flags */
    {"io_uring_setup", SYS_io_uring_setup, {0, BAD}},     /* EFAULT */
    {"io_uring_enter", SYS_io_uring_enter, {-1, 0, 0, 0, 0, 0}}, /* EBADF */
    {"io_uring_register", SYS_io_uring_register, {-1, 9999, 0, 0}}, /* EBADF/EINVAL */
    {"fanotify_init", SYS_fanotify_init, {0x200 | BADFLAG, 0}}, /* EINVAL: flags */
    /* Obsolete or x86-only. */
#ifdef SYS_iopl
    {"iopl", SYS_iopl, {99}},                             /* EINVAL: level */
#endif
#ifdef SYS_ioperm
    {"ioperm", SYS_ioperm, {0x10000, 1, 0}},              /* EINVAL: range */
#endif
#ifdef SYS__sysctl
    {"_sysctl", SYS__sysctl, {BAD}},                      /* ENOSYS since 5.5 */
#endif
#ifdef SYS_lookup_dcookie
    {"lookup_dcookie", SYS_lookup_dcookie, {0, BAD, 0}},  /* ENOSYS since 6.10 */
#endif
#ifdef SYS_nfsservctl
    {"nfsservctl", SYS_nfsservctl, {0, BAD, BAD}},        /* ENOSYS */
#endif
#ifdef SYS_sysfs
    {"sysfs", SYS_sysfs, {9999, 0, 0}},                   /* EINVAL: option */
#endif
#ifdef SYS_uselib
    {"uselib", SYS_uselib, {BAD}},                        /* EFAULT or ENOSYS */
#endif
#ifdef SYS_ustat
    {"ustat", SYS_ustat, {0, BAD}},                       /* EINVAL: no device 0 */
#endif
};
/* clang-format on */

/* personality has no invalid argument: any value but 0xffffffff is set.
 * A let-through call is undone at once; nothing runs in between that the
 * persona affects (it matters at exec and mmap). */
#define PER_QUERY 0xffffffffL
#define PER_LINUX32 0x0008L
#define ADDR_NO_RANDOMIZE 0x0040000L

static const struct {
    const char *name;
    long value;
} personality_probes[] = {
    {"personality-query", PER_QUERY},     /* allowed */
    {"personality-linux32", PER_LINUX32}, /* allowed */
    {"personality", ADDR_NO_RANDOMIZE},   /* refused */
};

static const struct {
    int num;
    const char *name;
} errno_names[] = {
    {EPERM, "EPERM"},       {ENOENT, "ENOENT"},
    {ESRCH, "ESRCH"},       {EINTR, "EINTR"},
    {EIO, "EIO"},           {ENXIO, "ENXIO"},
    {E2BIG, "E2BIG"},       {ENOEXEC, "ENOEXEC"},
    {EBADF, "EBADF"},       {ECHILD, "ECHILD"},
    {EAGAIN, "EAGAIN"},     {ENOMEM, "ENOMEM"},
    {EACCES, "EACCES"},     {EFAULT, "EFAULT"},
    {EBUSY, "EBUSY"},       {EEXIST, "EEXIST"},
    {ENODEV, "ENODEV"},     {ENOTDIR, "ENOTDIR"},
    {EISDIR, "EISDIR"},     {EINVAL, "EINVAL"},
    {EMFILE, "EMFILE"},     {ENOTTY, "ENOTTY"},
    {ENOSPC, "ENOSPC"},     {ESPIPE, "ESPIPE"},
    {EROFS, "EROFS"},       {ERANGE, "ERANGE"},
    {ENOSYS, "ENOSYS"},     {EOPNOTSUPP, "EOPNOTSUPP"},
    {ENOKEY, "ENOKEY"},     {EBADFD, "EBADFD"},
    {ENOTSOCK, "ENOTSOCK"}, {EAFNOSUPPORT, "EAFNOSUPPORT"},
};

static void report(const char *name, long ret, int err)
{
    if (ret >= 0) {
        printf("%s errno=0\n", name);
        return;
    }
    for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
        if (errno_names[i].num == err) {
            printf("%s errno=%s\n", name, errno_names[i].name);
            return;
        }
    }
    printf("%s errno=%d\n", name, err);
}

static void run_table_probe(const struct probe *p)
{
    long ret;

    errno = 0;
    ret = syscall(p->nr, p->a[0], p->a[1], p->a[2], p->a[3], p->a[4], p->a[5]);
    report(p->name, ret, errno);
}

static void run_personality_probe(size_t i)
{
    long ret;
    int err;

    errno = 0;
    ret = syscall(SYS_personality, personality_probes[i].value);
    err = errno;
    if (ret >= 0 && personality_probes[i].value != PER_QUERY)
        syscall(SYS_personality, ret);
    report(personality_probes[i].name, ret, err);
}

/* The foreign-ABI probes. Core dumps are switched off first: a SIGSYS kill
 * would otherwise leave a core file in whatever directory we run in. */
static void run_abi_probe(const char *name)
{
    struct rlimit no_core = {0, 0};
    long ret = -ENOSYS;

    setrlimit(RLIMIT_CORE, &no_core);
#if defined(__x86_64__)
    if (strcmp(name, "int80-getpid") == 0) {
        /* i386 getpid is 20. int 0x80 from 64-bit code may clobber r8-r11. */
        __asm__ volatile("int $0x80" : "=a"(ret) : "0"(20L) : "memory", "r8", "r9", "r10", "r11");
        report(name, ret, ret < 0 ? (int)-ret : 0);
    } else {
        /* x32 numbers carry bit 30; getpid is 39 as on x86_64. */
        errno = 0;
        ret = syscall(0x40000000L | 39L);
        report(name, ret, errno);
    }
#else
    (void)ret;
    printf("%s unsupported\n", name);
#endif
}

static int is_abi_probe(const char *name)
{
    return strcmp(name, "int80-getpid") == 0 || strcmp(name, "x32-getpid") == 0;
}

#define N_PROBES (sizeof(probes) / sizeof(probes[0]))
#define N_PERSONALITY (sizeof(personality_probes) / sizeof(personality_probes[0]))

/* Index of the probe called name: 0..N_PROBES-1 in the table, then the
 * personality probes; -1 if there is none. */
static long find_probe(const char *name)
{
    for (size_t i = 0; i < N_PROBES; i++)
        if (strcmp(probes[i].name, name) == 0)
            return (long)i;
    for (size_t i = 0; i < N_PERSONALITY; i++)
        if (strcmp(personality_probes[i].name, name) == 0)
            return (long)(N_PROBES + i);
    return -1;
}

static void run_probe(size_t idx)
{
    if (idx < N_PROBES)
        run_table_probe(&probes[idx]);
    else
        run_personality_probe(idx - N_PROBES);
}

static int usage(void)
{
    fprintf(stderr, "usage: pe-try-syscall NAME... | --all | --list\n"
                    "       pe-try-syscall int80-getpid | x32-getpid   (alone)\n");
    return 2;
}

int main(int argc, char **argv)
{
    int list;

    if (argc < 2)
        return usage();
    list = strcmp(argv[1], "--list") == 0;
    if (argc == 2 && (list || strcmp(argv[1], "--all") == 0)) {
        for (size_t i = 0; i < N_PROBES + N_PERSONALITY; i++) {
            if (list)
                printf("%s\n",
                       i < N_PROBES ? probes[i].name : personality_probes[i - N_PROBES].name);
            else
                run_probe(i);
        }
        if (list)
            printf("int80-getpid\nx32-getpid\n");
        return 0;
    }
    if (argc == 2 && is_abi_probe(argv[1])) {
        run_abi_probe(argv[1]);
        return 0;
    }
    /* Check every name before running any, so a typo never leaves half a
     * report that looks complete. */
    for (int i = 1; i < argc; i++) {
        if (find_probe(argv[i]) < 0) {
            fprintf(stderr, "pe-try-syscall: unknown probe%s: %s\n",
                    is_abi_probe(argv[i]) ? " (ABI probes run alone)" : "", argv[i]);
            return usage();
        }
    }
    for (int i = 1; i < argc; i++)
        run_probe((size_t)find_probe(argv[i]));
    return 0;
}
