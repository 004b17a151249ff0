/* What the clone child needs to build the sandbox. Prepared by the parent
 * before clone, so the child allocates nothing (it may be the child of a
 * multi-threaded daemon, where only async-signal-safe calls are allowed). */
#ifndef PE_RUNTIME_CHILD_H
#define PE_RUNTIME_CHILD_H

#include <linux/filter.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>

/* Order of the fds the parent sends with GO: the image's top layer, the
 * disk, the n_binds volumes, then the image's other layers (n_lowers - 1
 * of them, top to bottom). */
enum { PE_FD_LOWER = 0, PE_FD_DISK = 1, PE_FD_BINDS = 2 };

struct pe_child_ctx {
    int sync_fd;
    int close_fd; /* the parent's end of the sync socket, closed first */
    bool userns;
    bool persist;
    bool tty;
    bool has_disk;   /* upper/ and work/ arrive as a mount (persistent) */
    size_t n_lowers; /* layers of the image, >= 1 */
    const char *hostname;
    uint32_t net_addr, net_gateway; /* network order; 0: no eth0 (--net none) */
    int net_prefix;
    const char *workdir;
    int64_t disk_bytes;                /* staging tmpfs size, 0 = default */
    uint64_t nofile_soft, nofile_hard; /* RLIMIT_NOFILE set just before exec */
    size_t n_binds;
    char *const *bind_dests;
    const bool *bind_is_dir;
    const struct sock_fprog *seccomp;
    uint64_t caps;
    int stdio[3];
    struct winsize winsize; /* of the PTY when tty; 0x0: leave unset */
    int init_fd;
    int spawn_fd; /* persistent: the spawn socket, init's fd 4 (-1: none) */
    char *const *init_argv;
    char *const *envp;
    const int *cgroup_fds; /* the sandbox's cgroups, to join by writing "0" */
    int n_cgroup_fds;
};

/* For `exec`: the first child enters the sandbox and clones the process. */
struct pe_exec_ctx {
    int sync_fd;
    int target_pidfd;
    bool userns;
    bool tty;
    const char *workdir;
    struct winsize winsize;
    int stdio[3]; /* -1: keep the caller's */
    long uid, gid;
    uint64_t nofile_soft, nofile_hard; /* set before entering the sandbox */
    const struct sock_fprog *seccomp;
    uint64_t caps;
    char *const *argv;
    char *const *envp;
    const int *cgroup_fds; /* the sandbox's cgroups, to join by writing "0" */
    int n_cgroup_fds;
    void *process_stack; /* top of the process's stack until it execs */
};

/* The helper of an exec (clone fn, CLONE_VM|CLONE_VFORK from spawn.c):
 * joins the sandbox's cgroup and namespaces, starts the process as its
 * caller's child (CLONE_PARENT), sends its pid and exits. */
int pe__exec_helper_main(void *arg);

#endif
