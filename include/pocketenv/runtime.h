/* The local sandbox runtime: Linux namespaces, an overlay root filesystem,
 * cgroups, seccomp and a reduced capability set around a small PID 1.
 *
 * Two ways to use it:
 *  - one-shot (pe_runtime_run): create, run a command with the caller's
 *    stdio (or a PTY), return its exit status, remove everything;
 *  - persistent (pe_runtime_create/start/exec/stop/pause/resume/remove):
 *    a named sandbox whose state lives in DATA/sandboxes/<name>/ and whose
 *    processes keep running without any daemon after the call returns.
 *
 * All functions return < 0 and fill err on failure. State changes of one
 * sandbox are serialised with a lock file, so concurrent commands on the
 * same sandbox are safe; distinct sandboxes never block each other. */
#ifndef POCKETENV_RUNTIME_H
#define POCKETENV_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pocketenv/err.h"

enum pe_net_mode {
    PE_NET_NONE = 0, /* own network namespace with loopback only */
    PE_NET_NAT = 1,  /* + veth to the host bridge, NAT egress (docs/design/network.md) */
};

/* A published TCP port: connections to host_port on the host's addresses
 * (127.0.0.1 included) reach port inside the sandbox. host_port 0 in a
 * config means "choose one when the sandbox starts". */
typedef struct pe_port {
    uint16_t host_port;
    uint16_t port;
} pe_port;

typedef struct pe_bind {
    char *host; /* absolute host path, must exist */
    char *dest; /* absolute path inside the sandbox */
    bool ro;
    /* Idmapped into the sandbox's user namespace, as the image is: files
     * owned by host ids 0.. appear owned by sandbox ids 0.., whichever
     * sandbox mounts them (the daemon's volumes). Not kept in the state
     * file: only for pe_runtime_start_with's extra binds. */
    bool idmap;
} pe_bind;

/* Limits a sandbox gets when its config leaves them at 0 (see
 * docs/design/runtime.md, "Limits"). Memory and CPU have no runtime
 * default: the caller chooses (the daemon passes its operator's). */
#define PE_DEFAULT_PIDS 1024
#define PE_DEFAULT_NOFILE_SOFT 1024
#define PE_DEFAULT_NOFILE_HARD 4096

typedef struct pe_sandbox_cfg {
    char *name;  /* persistent sandboxes only */
    char *image; /* image name or directory, default "debian" */
    /* Limits; 0 = none (memory, cpu, disk) or the runtime's default (pids,
     * nofile). Every one given is enforced for one-shot runs and
     * persistent sandboxes alike; a persistent sandbox stores them
     * resolved (inspect shows what holds). */
    int64_t memory_bytes; /* cgroup memory limit, swap not above it */
    int64_t cpu_millis;   /* 1000 = one CPU */
    int64_t pids_max;     /* processes and threads; default PE_DEFAULT_PIDS */
    /* Bytes of the writable layer: one-shot, a tmpfs of that size with
     * one inode per 4 KiB; persistent, a btrfs qgroup on the host-wide
     * layers filesystem (docs/design/runtime.md, "Disk limit"). */
    int64_t disk_bytes;
    /* RLIMIT_NOFILE of init and of every process exec'd into the sandbox;
     * 0 = default (soft PE_DEFAULT_NOFILE_SOFT, hard the larger of
     * PE_DEFAULT_NOFILE_HARD and soft; a soft of 0 with a hard given is
     * the smaller of the default soft and hard). */
    int64_t nofile_soft, nofile_hard;
    char **env; /* "K=V", NULL-terminated; later entries win */
    pe_bind *binds;
    size_t n_binds;
    char *hostname; /* default: the name, or "sandbox" */
    char *workdir;  /* default "/" (or the user's home for exec) */
    uint32_t uid, gid;
    bool userns;    /* default true: sandbox root is an unprivileged host id */
    int net;        /* enum pe_net_mode; default PE_NET_NONE */
    pe_port *ports; /* published ports (PE_NET_NAT only) */
    size_t n_ports;
    bool net_allow_host; /* PE_NET_NAT: may open connections to the host */
} pe_sandbox_cfg;

/* Options of one process started in a sandbox (run or exec). */
typedef struct pe_proc_opts {
    char **argv;         /* NULL-terminated, argv[0] looked up in PATH inside */
    char **env;          /* extra "K=V" on top of the sandbox's, may be NULL */
    const char *workdir; /* NULL: the sandbox's */
    bool tty;            /* run on a PTY relayed to the caller's terminal */
    /* exec: the PTY's size when the process starts (0: the caller's
     * terminal's, as with tty); a daemon has no terminal of its own. */
    unsigned short tty_cols, tty_rows;
    bool has_user;
    uint32_t uid, gid;
    double timeout; /* seconds, 0 = none; on expiry the process is killed */
    bool capture;   /* exec_start: pipes for stdin/stdout/stderr (not with tty) */
    /* run: > 2 sends the command's stdout and stderr to this fd (stdin
     * /dev/null) instead of the caller's terminals; 0: the caller's. */
    int out_fd;
} pe_proc_opts;

/* A process started in a sandbox by pe_runtime_exec_start, for callers
 * with an event loop of their own (the daemon). */
typedef struct pe_proc {
    pid_t pid;        /* the process: pe_proc_wait reaps it, or has init's report of it */
    int pidfd;        /* of pid: readable once the process has ended */
    int signal_pidfd; /* where signals go when >= 0, else pidfd */
    int stdin_fd;     /* our ends of its pipes when capture, else -1 */
    int stdout_fd;
    int stderr_fd;
    int pty_fd;      /* PTY master when tty, else -1 */
    int status_fd;   /* readable once the process has ended: a second pidfd */
    bool init_reaps; /* the sandbox's init started it, reaps it and reports */
    int init_fd;     /* its end on this fd (only when init_reaps) */
    /* pe_runtime_oom_kills as the process started (kills -1: unknown), for
     * telling later whether a SIGKILL was the OOM killer's */
    int64_t oom_kills, oom_limit;
} pe_proc;

/* Result of a process: exit code as a shell reports it (code, or 128+signal),
 * and whether the timeout killed it. */
typedef struct pe_proc_result {
    int exit_code;
    bool timed_out;
} pe_proc_result;

typedef struct pe_runtime {
    char *data_dir;
    char *init_path;
} pe_runtime;

void pe_sandbox_cfg_init(pe_sandbox_cfg *cfg);
void pe_sandbox_cfg_clear(pe_sandbox_cfg *cfg);

/* data_dir NULL = default (/var/lib/pocketenv as root, else
 * $XDG_DATA_HOME/pocketenv); POCKETENV_DATA overrides the default. Creates the
 * directory layout and collects leftovers of crashed one-shot runs. */
int pe_runtime_open(pe_runtime *rt, const char *data_dir, pe_err *err);
void pe_runtime_close(pe_runtime *rt);

/* Remove what crashed commands left behind (one-shot state, cgroups,
 * id ranges of vanished sandboxes). Called by pe_runtime_open. */
int pe_runtime_gc(pe_runtime *rt, pe_err *err);

int pe_runtime_run(pe_runtime *rt, const pe_sandbox_cfg *cfg, const pe_proc_opts *proc,
                   pe_proc_result *res, pe_err *err);

/* pe_runtime_run whose writable layer is layer_dir/upper (overlayfs's
 * work dir layer_dir/work), kept after the run: what the command changed
 * in the image, with whiteouts for what it removed, a new layer on top of
 * cfg->image (lib/template builds templates so). Needs cfg->userns: the
 * directory is idmapped like the image, so what the sandbox's root writes
 * is owned by host root, and nothing in it is owned by a sandbox's id. */
int pe_runtime_run_capture(pe_runtime *rt, const pe_sandbox_cfg *cfg, const pe_proc_opts *proc,
                           const char *layer_dir, pe_proc_result *res, pe_err *err);

int pe_runtime_create(pe_runtime *rt, const pe_sandbox_cfg *cfg, pe_err *err);
int pe_runtime_start(pe_runtime *rt, const char *name, pe_err *err);

/* What one start adds to a persistent sandbox's stored config, for this
 * run only: nothing of it is written to the sandbox's state file (the
 * daemon passes decrypted secrets here, which must not rest on disk).
 * env entries ("K=V") go into PID 1's environment after the stored ones
 * (later entries win); binds are mounted after the stored volumes. Every
 * pointer is borrowed for the call. */
typedef struct pe_start_extra {
    char **env; /* NULL-terminated, or NULL */
    const pe_bind *binds;
    size_t n_binds;
} pe_start_extra;

/* pe_runtime_start with extra (NULL: the same as pe_runtime_start). */
int pe_runtime_start_with(pe_runtime *rt, const char *name, const pe_start_extra *extra,
                          pe_err *err);
int pe_runtime_exec(pe_runtime *rt, const char *name, const pe_proc_opts *proc, pe_proc_result *res,
                    pe_err *err);
/* Start proc in sandbox `name` and return at once (no terminal relay, no
 * signal forwarding, no timeout: the caller owns all of that). */
int pe_runtime_exec_start(pe_runtime *rt, const char *name, const pe_proc_opts *proc, pe_proc *out,
                          pe_err *err);
/* Wait (blocking) for p to end and reap it; *exit_code as a shell reports
 * it. Once per p. */
int pe_proc_wait(pe_proc *p, int *exit_code, pe_err *err);
int pe_proc_signal(pe_proc *p, int sig);
/* The host pid of p's process (0 if it cannot be told): started in its own
 * session, it is also the id of its process group. */
pid_t pe_proc_host_pid(const pe_proc *p);
/* sig to p's whole process group (a shell's children too), falling back to
 * the process alone. */
int pe_proc_signal_group(pe_proc *p, int sig);
/* Close every fd of p (does not wait or kill). */
void pe_proc_close(pe_proc *p);
int pe_runtime_stop(pe_runtime *rt, const char *name, double timeout, pe_err *err);
int pe_runtime_pause(pe_runtime *rt, const char *name, pe_err *err);
int pe_runtime_resume(pe_runtime *rt, const char *name, pe_err *err);
int pe_runtime_remove(pe_runtime *rt, const char *name, pe_err *err);

/* OOM kills the kernel counted in sandbox `name`'s memory cgroup since it
 * started (-1 when unknown: not running) and its memory limit in bytes (0:
 * none). A caller compares counts before and after a process to tell that
 * a SIGKILL was the OOM killer's. */
int pe_runtime_oom_kills(pe_runtime *rt, const char *name, int64_t *kills, int64_t *limit,
                         pe_err *err);
/* bytes as "512 MiB", "1 GiB" (the largest whole unit), else "N bytes". */
void pe_runtime_size_text(int64_t bytes, char *out, size_t len);

/* What reaching a sandbox's init takes, read from its state alone: no
 * JSON text and no disk usage, unlike pe_runtime_inspect (the daemon's
 * hot paths ask this several times per create). running: its state says
 * running and that very init (pid + start time) is alive; pid and
 * start_time are then set. id_base: the first host id of its user
 * namespace (0 without one). PE_ENOENT if there is no such sandbox. */
typedef struct pe_runtime_init {
    bool running;
    pid_t pid;
    uint64_t start_time;
    uint32_t id_base;
} pe_runtime_init;
int pe_runtime_init_of(pe_runtime *rt, const char *name, pe_runtime_init *out, pe_err *err);

/* JSON text (malloc'd) describing one sandbox / all sandboxes:
 * {"name","status","image","pid","created","started","config":{...}} */
int pe_runtime_inspect(pe_runtime *rt, const char *name, char **json_out, pe_err *err);
int pe_runtime_list(pe_runtime *rt, char **json_out, pe_err *err);

/* The directory holding sandbox `name`'s writable layer: its upper/ (the
 * sandbox's changes to the image) and work/ (overlayfs's). malloc'd in
 * *out. For a sandbox with a disk limit it is on the host-wide layers
 * filesystem, which this mounts if it is not (after a reboot). Read it
 * only while the sandbox's lock is held or the sandbox is stopped. */
int pe_runtime_layer_dir(pe_runtime *rt, const char *name, char **out, pe_err *err);

/* Can persistent sandboxes be held to a disk limit here? Makes (or mounts)
 * the host-wide layers filesystem if need be: 0, or -1 with err saying why
 * not (no loop devices, no btrfs). */
int pe_runtime_disk_limits(pe_runtime *rt, pe_err *err);

/* Snapshots (docs/design/runtime.md, "Snapshots"): a read-only btrfs
 * snapshot of a sandbox's writable layer on the layers filesystem, so
 * only sandboxes with a disk limit have them. It shares every extent with
 * the sandbox it came from and with the sandboxes made from it, and
 * outlives them all; its files are kept owned by ids 0-65535 (as an
 * image's) and shifted to a new sandbox's id range when one is made from
 * it. */
typedef struct pe_runtime_snapshot_info {
    char id[17];             /* 16 hex digits */
    char *image;             /* the image it is a layer over (malloc'd) */
    double frozen_ms;        /* how long the sandbox's processes were frozen; 0 if none ran */
    int64_t size_bytes;      /* disk its files take (their blocks), shared or not */
    int64_t exclusive_bytes; /* what btrfs charges to it alone; -1 unknown */
} pe_runtime_snapshot_info;

/* Snapshot sandbox `name`, running or not. A running sandbox is frozen
 * (cgroup freezer) while its layer is captured and thawed at once, so the
 * snapshot holds one instant of every process's writes; one already paused
 * stays paused. Free out->image. */
int pe_runtime_snapshot(pe_runtime *rt, const char *name, pe_runtime_snapshot_info *out,
                        pe_err *err);
/* Remove snapshot id (PE_ENOENT if there is none); its space returns
 * once no sandbox shares it. */
int pe_runtime_snapshot_remove(pe_runtime *rt, const char *id, pe_err *err);
/* What btrfs charges to snapshot id alone (as of its last commit). */
int pe_runtime_snapshot_usage(pe_runtime *rt, const char *id, int64_t *exclusive, pe_err *err);
/* Could this host checkpoint a sandbox's processes and memory (CRIU,
 * docs/design/checkpoint.md)? Runs `criu check`, bounded (10 s): 1 if it
 * passes, else 0 with *reason (malloc'd, also on 1) saying why not: not
 * installed, or the check's own error. Slow: call it once and keep it. */
int pe_runtime_checkpoint_probe(char **reason);
/* pe_runtime_create on snapshot id's state: cfg->image is ignored (the
 * snapshot's image is used), cfg->disk_bytes must be set. */
int pe_runtime_create_from(pe_runtime *rt, const pe_sandbox_cfg *cfg, const char *id, pe_err *err);

/* True if some sandbox (running or not) uses image name. */
int pe_runtime_image_in_use(pe_runtime *rt, const char *image, pe_err *err);

#endif
