/* Runtime internals shared by the files of lib/runtime/ (not installed). */
#ifndef PE_RUNTIME_INTERNAL_H
#define PE_RUNTIME_INTERNAL_H

#include <jansson.h>
#include <linux/filter.h>
#include <stdint.h>

#include "pocketenv/runtime.h"
#include "runtime/cgroup.h"
#include "runtime/net.h"
#include "runtime/sync.h"

#define PE_DEFAULT_IMAGE "debian"
#define PE_MAX_BINDS 64
#define PE_MAX_LOWERS 8 /* layers of an image (PE_IMAGE_MAX_LAYERS) */
/* Mounts sent to a sandbox's child with GO: image layers, disk, volumes. */
#define PE_SYNC_MAX_FDS (2 + PE_MAX_BINDS + PE_MAX_LOWERS)
#define PE_MIN_NOFILE 16              /* below that, init and a shell cannot start */
#define PE_MIN_DISK (4 * 1024 * 1024) /* a writable layer smaller is useless */
#define PE_DISK_BYTES_PER_INODE 4096  /* one-shot tmpfs: inodes per byte of --disk */
#define PE_IDMAP_FIRST 0x10000000u    /* first host id given to sandboxes */
#define PE_IDMAP_SIZE 65536u
#define PE_IDMAP_SLOTS 32768u
#define PE_IDMAP_DIR "/var/lib/pocketenv/idmap" /* host-wide claims: idmap.c */

json_t *pe__cfg_to_json(const pe_sandbox_cfg *cfg);
/* Fill the limits left at 0 that have a runtime default (pids, nofile). */
void pe__cfg_apply_defaults(pe_sandbox_cfg *cfg);
int pe__cfg_from_json(json_t *o, pe_sandbox_cfg *cfg, pe_err *err);

/* ---- spawn: parent side of starting a sandbox or a process in one ---- */

typedef struct pe_spawn_req {
    const pe_sandbox_cfg *cfg;
    const char *const *lowers; /* image layers, top first: read-only lower dirs */
    size_t n_lowers;
    const char *disk_dir; /* dir holding upper/ and work/; NULL: tmpfs */
    /* userns: idmap disk_dir like the image, so that what sandbox root
     * writes there is owned by host root (a template build's layer). */
    bool disk_idmap;
    uint32_t id_base;    /* userns: host id of sandbox root */
    pe_cgroup *cg;       /* may be NULL */
    bool persist;        /* no command: init waits for exec/stop */
    char *const *argv;   /* one-shot command */
    char *const *envp;   /* complete environment for init and command */
    const char *workdir; /* one-shot: cwd of the command */
    bool tty;
    long uid, gid;           /* -1: stay sandbox root */
    int stdio[3];            /* fds for 0,1,2 of init; -1 = inherit */
    int init_fd;             /* sealed memfd of pocketenv-init */
    int spawn_fd;            /* persist: listening spawn socket for init (-1: none) */
    const pe_net_lease *net; /* --net nat: attached between clone and GO */
    const json_t *egress;    /* with net: egress policy, in force before GO */
} pe_spawn_req;

typedef struct pe_spawn_res {
    pid_t pid; /* host pid of the sandbox's init */
    int pidfd;
    int signal_pidfd; /* where forwarded signals go; -1: pidfd */
    int sync_fd;      /* one-shot: EXIT arrives here; else -1 */
    int pty_master;   /* -1 unless tty */
    /* Pipes standing in for the caller's terminals (pe__stdio_guard):
     * relay[0] writes to the process's stdin, relay[1] and [2] read its
     * stdout and stderr; -1 where the process has the caller's fd. */
    int relay[3];
    uint64_t start_time;
    int init_conn; /* started by the sandbox's init: where it reports the end; else -1 */
} pe_spawn_res;

int pe__spawn_sandbox(const pe_spawn_req *req, pe_spawn_res *res, pe_err *err);

typedef struct pe_exec_req {
    int target_pidfd; /* init of the sandbox */
    bool userns;
    pe_cgroup *cg;
    char *const *argv;
    char *const *envp;
    const char *workdir;
    bool tty;
    unsigned short tty_cols, tty_rows; /* 0: the caller's terminal's size */
    long uid, gid;
    uint64_t nofile_soft, nofile_hard; /* RLIMIT_NOFILE of the process */
    int stdio[3];                      /* the process's 0,1,2 when not tty; -1 = the caller's */
} pe_exec_req;

/* Start argv inside a running sandbox. On success res->pid/pidfd is the
 * process (a child of the caller, which reaps it), res->sync_fd another
 * pidfd of it, res->pty_master its PTY when tty. */
int pe__spawn_exec(const pe_exec_req *req, pe_spawn_res *res, pe_err *err);

/* sendmsg of len bytes of buf with nfds fds (SCM_RIGHTS); -1 unless whole. */
int pe__send_fds(int fd, const void *buf, size_t len, const int *fds, int nfds);

/* The spawner (spawn-init.c, sync.h). pe__spawn_listen: the listening
 * spawn socket of the sandbox in dir, for its init (-1, err). */
int pe__spawn_listen(const char *dir, pe_err *err);
void pe__spawn_unlink(const char *dir);
/* pe__spawn_exec's work done by the init of the running sandbox in dir:
 * 0 with res as pe__spawn_exec's except that init reaps the process
 * (res->init_conn is where it reports its status); 1 if init
 * cannot (no spawn socket, or declined: nothing was started, take
 * pe__spawn_exec); -1 with err if the process could not be started. */
int pe__spawn_via_init(const char *dir, const pe_exec_req *req, pe_spawn_res *res, pe_err *err);
/* The wait status of a process pe__spawn_exec started (init_status_fd -1:
 * our child, reaped here) or the sandbox's init did (read from its status
 * fd, waiting at most 5 s once pidfd says it has ended; an init that does
 * not say gives 255). -1 with errno on a failed wait. */
int pe__spawn_reap(pid_t pid, int pidfd, int init_status_fd, int *status);

/* A sandbox never gets a terminal of the host: with one, it can make it
 * its controlling terminal (TIOCSCTTY) when nobody's session has it, and
 * then read, change the modes of, or (kernels with legacy TIOCSTI) type
 * into it. For each of the caller's fds 0, 1, 2 that is a terminal and
 * that stdio[i] (-1: the caller's) leaves to the process, make a pipe:
 * stdio[i] becomes the process's end, relay[i] ours (pe__wait_process
 * copies between it and the caller's fd). Without relay (NULL: no one
 * will copy), such fds become /dev/null instead. *own[i] = 1 where
 * stdio[i] was made here and must be closed once the process has it. */
int pe__stdio_guard(int stdio[3], int relay[3], bool own[3], pe_err *err);
void pe__stdio_guard_close(int stdio[3], int relay[3], bool own[3]);

/* Wait for a started process: relays the PTY with the caller's terminal,
 * forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT, resizes on SIGWINCH, kills on
 * timeout; copies sp->relay pipes to and from the caller's 0, 1, 2 (stdin
 * only while the caller is not a background job of that terminal).
 * Closes the fds in sp. */
int pe__wait_process(pe_spawn_res *sp, double timeout, pe_proc_result *res, pe_err *err);

/* Sealed memfd holding a copy of pocketenv-init (so a sandbox can never
 * write to the host's binary through /proc/1/exe). Cached per process. */
int pe__init_memfd(const char *init_path, pe_err *err);

/* The child's side, in child.c. Never returns. */
struct pe_child_ctx;
_Noreturn void pe__child_main(const struct pe_child_ctx *ctx);

/* Kernel start time of pid (field 22 of /proc/pid/stat), 0 if gone. */
uint64_t pe__proc_start_time(pid_t pid);

/* ---- sync socket helpers (sync.c-like, in spawn.c) ---- */
int pe__sync_send(int fd, int type, int errnum, int value, const char *text, const int *fds,
                  int nfds);
/* Receive one message; *fds gets up to max_fds passed fds (count in
 * *nfds). Returns 1 on a message, 0 on EOF, -1 on error. */
int pe__sync_recv(int fd, struct pe_sync_msg *m, int *fds, int max_fds, int *nfds);
/* An exec's ERROR or EXEC_FAILED message as err; false for any other. */
bool pe__exec_failure(const struct pe_sync_msg *m, pe_err *err);
/* The same, and the sender's pid as we see it if it sent SCM_CREDENTIALS. */
int pe__sync_recv_from(int fd, struct pe_sync_msg *m, int *fds, int max_fds, int *nfds, pid_t *pid);

/* ---- id ranges for user namespaces ---- */
int pe__idmap_alloc(const char *data_dir, const char *owner, uint32_t *base, pe_err *err);
/* Where claims live (malloc'd). */
char *pe__idmap_dir(void);
void pe__idmap_release(const char *data_dir, uint32_t base);
void pe__idmap_release_owner(const char *data_dir, const char *prefix, const char *suffix);
/* Remove claims left empty by a maker killed mid-claim (older builds). */
void pe__idmap_gc_empty(void);
/* A user namespace (fd) mapping only disk_uid -> kuid and disk_gid -> kgid,
 * for MOUNT_ATTR_IDMAP: -1 with err on failure. */
int pe__idmap_userns_single(uint32_t disk_uid, uint32_t disk_gid, uint32_t kuid, uint32_t kgid,
                            pe_err *err);

/* ---- writable layers with a disk limit (layers.c) ---- */
/* Mount point of the host-wide layers filesystem (malloc'd):
 * $POCKETENV_LAYERS_DIR or /var/lib/pocketenv/layers. */
char *pe__layers_dir(void);
/* Mount it, making it first if it does not exist and may_create (one-time;
 * serialised host-wide by a lock); without may_create a missing image is
 * an ENOENT error. A fast check when it is mounted already. */
int pe__layers_ready(bool may_create, pe_err *err);
bool pe__layers_mounted(void);
/* Layer `name`: a subvolume limited to bytes holding upper/ and work/
 * (owned by base when base != 0) and an owner record. */
int pe__layer_create(const char *name, int64_t bytes, uint32_t base, const char *owner,
                     pe_err *err);
/* Delete layer `name` (gone already is fine). Needs the fs mounted. */
int pe__layer_remove(const char *name, pe_err *err);
/* Bytes used (as of the last commit) and the limit; -1 when unknown. */
int pe__layer_usage(const char *name, int64_t *used, int64_t *limit, pe_err *err);
/* fn(name) for every layer whose name starts with prefix (none when the
 * filesystem is not mounted: it is never mounted for this). */
int pe__layers_each(const char *prefix, void (*fn)(const char *name, void *arg), void *arg);
/* The owner record of a layer (malloc'd), NULL if unreadable. */
char *pe__layer_owner(const char *name);

/* Snapshots (snapshot.c). An fd of layer `name`'s top directory. */
int pe__layer_open(const char *name, pe_err *err);
/* Layer dst: a writable btrfs snapshot of layer src, sharing every extent
 * with it (nothing is copied). */
int pe__layer_snapshot(const char *src, const char *dst, pe_err *err);
/* No write to layer `name` succeeds after this, root's included. */
int pe__layer_set_readonly(const char *name, pe_err *err);
/* Set layer `name`'s disk limit. */
int pe__layer_limit(const char *name, int64_t bytes, pe_err *err);

/* ---- PTY ---- */
#include "runtime/proc-common.h" /* pe__pty_open_master, pe__pty_open_peer */

#endif

/* ---- persistent state of a sandbox (state.c) ---- */

typedef struct pe_state {
    char *id;         /* unique key: cgroup name, id range owner */
    char *status;     /* "created", "running", "paused", "stopped" */
    char *rootfs;     /* resolved image directory (its top layer) */
    char **layers;    /* every layer of the image, top first, NULL-terminated;
                         NULL: rootfs alone (a state from before layers) */
    char *error;      /* last failure, or NULL */
    char *layer;      /* writable layer on the layers filesystem (disk
                         limit), or NULL: DATA/sandboxes/<name>/disk */
    uint32_t id_base; /* 0 without a user namespace */
    pid_t pid;        /* init's host pid while running */
    uint64_t start_time;
    int64_t created, started;
    pe_net_lease net; /* while running with --net nat */
    pe_sandbox_cfg cfg;
} pe_state;

int pe__state_load(const char *dir, pe_state *st, pe_err *err);
/* Replace state.json durably (state.c says which change goes where). */
int pe__state_save(const char *dir, const pe_state *st, pe_err *err);
/* The first state.json, in a staging directory nobody else reads until it
 * is renamed in: written in place and fsynced, the directory not (a crash
 * may lose the create, whose staging directory gc then removes, as the
 * store may lose its row; never leave a sandbox without its state). */
int pe__state_save_new(const char *dir, const pe_state *st, pe_err *err);
/* The state a start leaves (running, its pid, start time and lease), and
 * nothing else changed since the last durable save: run.json, no fsync. A
 * crash of the host loses it, with the init it names. */
int pe__state_save_started(const char *dir, const pe_state *st, pe_err *err);
void pe__state_clear(pe_state *st);
json_t *pe__state_to_json(const pe_state *st);

/* Where a sandbox's files that last only this boot go (state.c). */
#define PE_RUN_DIR "/run/pocketenv/sandboxes"
/* PE_RUN_DIR/<dev>-<ino>.<ext> for the sandbox directory dir, made and
 * mounted at the first call; NULL when dir is gone or PE_RUN_DIR cannot
 * be had (the caller then keeps the file in dir, as builds before did). */
char *pe__run_file(const char *dir, const char *ext);
/* Remove dir's run.json, spawn socket, resolv.conf and hosts from the run
 * directory, and run.json and the socket from dir (builds before). */
void pe__run_files_remove(const char *dir);

/* True if the state's init process is the one alive now (pid + start time). */
bool pe__state_alive(const pe_state *st);

/* Open (creating) path and flock it; returns the fd or -1 with err. */
int pe__lock_file(const char *path, int op, pe_err *err);

/* Held (take = true) around cloning a sandbox's init, released after:
 * no clone may inherit the network lock of another thread (net.c). */
void pe__fork_guard(bool take);

/* Random lowercase hex id of 2*nbytes characters. */
void pe__random_hex(char *out, size_t nbytes);

/* sandbox.c, for snapshot.c: lock and load sandbox `name` (its state
 * reconciled with what runs); the lock fd, dir in *dir_out. */
int pe__sandbox_lock(pe_runtime *rt, const char *name, pe_state *st, char **dir_out, pe_err *err);
/* The prefix of this data directory's layer names (17 characters). */
void pe__layer_prefix(const pe_runtime *rt, char out[18]);
/* pe_runtime_create whose writable layer starts as a copy of layer
 * `from` (a snapshot; NULL: empty). */
int pe__sandbox_create(pe_runtime *rt, const pe_sandbox_cfg *cfg, const char *from, pe_err *err);
/* snapshot.c, for create: make layer `name` from snapshot layer `from`,
 * its files owned by the id range at base, limited to bytes. */
int pe__layer_create_from(const char *name, const char *from, int64_t bytes, uint32_t base,
                          const char *owner, pe_err *err);
