/* handlers/sandbox.c's work for another front end (the E2B API,
 * daemon/e2b.c), which runs a method's own work rather than a copy of
 * it. No other handler file includes this (tests/lint/check-layers.py). */
#ifndef PE_DAEMON_HANDLERS_SANDBOX_H
#define PE_DAEMON_HANDLERS_SANDBOX_H

#include "daemon.h"

/* createSandbox's, getSandbox's, startSandbox's, stopSandbox's and
 * deleteSandbox's work (handlers/sandbox.c) for other front ends: job->id
 * names the sandbox (the caller's: another's is SandboxNotFound), job->in
 * as the XRPC body. create_now's in is createSandbox's input already
 * checked (base a base name); it answers once the sandbox runs, with its
 * view (a failed start fails the job and removes the sandbox). */
void pe_daemon_sandbox_get_work(pe_daemon_job *job, pe_store *s);
void pe_daemon_sandbox_start_work(pe_daemon_job *job, pe_store *s);
void pe_daemon_sandbox_stop_work(pe_daemon_job *job, pe_store *s);
void pe_daemon_sandbox_delete_work(pe_daemon_job *job, pe_store *s);
void pe_daemon_sandbox_create_now_work(pe_daemon_job *job, pe_store *s);

#endif
