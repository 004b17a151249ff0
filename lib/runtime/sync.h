/* Messages on the sync socket between the runtime (parent), the clone
 * child before it execs pocketenv-init, and pocketenv-init itself.
 *
 * The socket is AF_UNIX SOCK_SEQPACKET, so each message arrives whole. It
 * is the only channel across the sandbox boundary during start:
 *   parent -> child : GO (maybe with the idmapped lower mount fd)
 *   child  -> parent: ERROR {stage, errnum, text} and _exit, or PTY (fd)
 *   init   -> parent: STARTED once the command exec'd, EXEC_FAILED,
 *                     EXIT {wait status} when the command ends (one-shot).
 * The layout is fixed-size and shared with the static init binary. */
#ifndef PE_RUNTIME_SYNC_H
#define PE_RUNTIME_SYNC_H

#include <stdint.h>

enum pe_sync_type {
    PE_SYNC_GO = 1,
    PE_SYNC_ERROR,
    PE_SYNC_PTY,
    PE_SYNC_STARTED,
    PE_SYNC_EXEC_FAILED,
    PE_SYNC_EXIT,
    PE_SYNC_PID,
    PE_SYNC_DECLINED,
};

typedef struct pe_sync_msg {
    int32_t type;
    int32_t errnum;
    int32_t value; /* wait status for EXIT, pid for PID */
    char text[244];
} pe_sync_msg;

/* The spawner: a persistent sandbox's init starts processes for the
 * runtime (docs/design/runtime.md, "Exec"). It listens on a socket the
 * runtime bound in its run directory (state.c; root's alone, 0600) before
 * the sandbox was cloned; nothing inside the sandbox can name it.
 * On each connection, one request:
 *   runtime -> init: pe_spawn_hdr, then argc + envc + 1 NUL-terminated
 *     strings (argv, envp, the working directory), with SCM_RIGHTS the
 *     process's 0, 1, 2 unless PE_SPAWN_TTY;
 *   process -> runtime: PID with SCM_RIGHTS its pidfd and SCM_CREDENTIALS
 *     (its pid as the runtime sees it), PTY (fd) when tty, ERROR or
 *     EXEC_FAILED if it cannot exec;
 *   init -> runtime: DECLINED (nothing started: use the exec helper), or
 *     STARTED once the process has exec'd or died, then EXIT {wait status}
 *     when init has reaped it. */
#define PE_SPAWN_VERSION 1
#define PE_SPAWN_TTY 1u
#define PE_SPAWN_STRINGS_MAX (60 * 1024) /* larger requests take the exec helper */

typedef struct pe_spawn_hdr {
    uint32_t version;
    uint32_t flags;
    int64_t uid, gid; /* -1: init's own (root of the sandbox) */
    uint64_t nofile_soft, nofile_hard;
    uint16_t tty_cols, tty_rows;
    uint32_t argc, envc;
    uint32_t len; /* bytes of strings after the header */
} pe_spawn_hdr;

#endif
