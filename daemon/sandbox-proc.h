/* A process in a sandbox that the daemon's loop watches
 * (daemon/sandbox-proc.c): started on a worker (it enters the sandbox and
 * reads the store for the sandbox's variables), then its pipes or PTY and
 * its pidfd are non-blocking and watched by the loop, which hands its
 * output to the owner, writes the stdin the owner queued, and reports the
 * exit after the last output. The streaming exec (exec-stream.c) and
 * envd's process service (e2b-process.c) are its owners.
 *
 * Loop thread only. While it starts, the daemon holds one inflight (a
 * draining daemon waits for the start to end). */
#ifndef PE_DAEMON_SANDBOX_PROC_H
#define PE_DAEMON_SANDBOX_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon.h"

typedef struct pe_sbproc pe_sbproc;

typedef struct pe_sbproc_spec {
    const char *sandbox_id;
    char **argv; /* taken */
    /* taken, NULL: argv. What a sandbox on a remote provider runs instead
     * (argv may wrap the command in a probe of this daemon's images). */
    char **remote_argv;
    char **env;    /* taken, NULL: none; after the sandbox's variables, so they win */
    char *workdir; /* taken, NULL: the sandbox's default */
    bool tty;
    unsigned cols, rows; /* the PTY's size */
    /* stdin must reach the process: a remote provider without stdin
     * (PE_CAP_STDIN) refuses the start (PE_ENOTCAP) rather than give EOF */
    bool stdin_required;
} pe_sbproc_spec;

/* Every callback runs on the loop thread with the owner's ud. */
typedef struct pe_sbproc_callbacks {
    /* Started (err NULL) or could not start (err says why; the process
     * is done: the owner frees it). */
    void (*started)(pe_sbproc *p, const pe_err *err, void *ud);
    /* Output: which is 1 for stdout (or the PTY), 2 for stderr. */
    void (*output)(pe_sbproc *p, int which, const unsigned char *buf, size_t n, void *ud);
    /* n bytes of queued stdin were written (optional). */
    void (*wrote)(pe_sbproc *p, size_t n, void *ud);
    /* It exited (code: its status, 128+N for signal N), after its last
     * output; reaped. */
    void (*exited)(pe_sbproc *p, int code, void *ud);
} pe_sbproc_callbacks;

/* Start spec (its strings taken, also on failure) in a worker. NULL and
 * err when the worker pool refuses it (no callback then). */
pe_sbproc *pe_sbproc_start(pe_daemon *d, pe_sbproc_spec *spec, const pe_sbproc_callbacks *cb,
                           void *ud, pe_err *err);

/* Running: started and not reaped. */
bool pe_sbproc_running(const pe_sbproc *p);
/* Read its output or not (backpressure: unread, it blocks on its pipe). */
void pe_sbproc_read(pe_sbproc *p, bool on);
/* Queue stdin (written as the process reads; before the start too). */
void pe_sbproc_write(pe_sbproc *p, const void *buf, size_t n);
size_t pe_sbproc_queued(const pe_sbproc *p);
/* Close its stdin once what is queued is written (no PTY only). */
void pe_sbproc_close_stdin(pe_sbproc *p);
/* false once stdin is closed or was asked to close, or the process is gone. */
bool pe_sbproc_stdin_open(const pe_sbproc *p);
/* A signal to its process group (nothing once reaped). */
void pe_sbproc_signal(pe_sbproc *p, int sig);
/* The PTY's new size (SIGWINCH to its foreground); nothing without one. */
void pe_sbproc_resize(pe_sbproc *p, unsigned cols, unsigned rows);
/* The sandbox's OOM kills before the start (-1: unknown) and its memory
 * limit then. */
void pe_sbproc_oom_before(const pe_sbproc *p, int64_t *kills, int64_t *limit);

/* Free p: at once once it could not start or was reaped; a running
 * process is killed (SIGKILL) and reaped first (shutdown); one still
 * starting is freed (and killed if it started) when its start ends, with
 * no more callbacks. */
void pe_sbproc_free(pe_sbproc *p);

#endif
