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
};

typedef struct pe_sync_msg {
    int32_t type;
    int32_t errnum;
    int32_t value; /* wait status for EXIT, pid for PID */
    char text[244];
} pe_sync_msg;

#endif
