/* What every sandbox the daemon makes may use, and what each user may hold
 * (docs/design/resources.md): the operator's defaults and maximums for a
 * sandbox's vCPUs, memory, disk and pids, and per-user quotas on
 * sandboxes, memory of running sandboxes and disk (daemon/resource-limits.c). */
#ifndef PE_DAEMON_RESOURCE_LIMITS_H
#define PE_DAEMON_RESOURCE_LIMITS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"

/* The XRPC error name of a quota refusal (403, PE_XRPC_EFORBIDDEN). */
#define PE_DAEMON_QUOTA_ERROR "QuotaExceeded"

/* ---- flags (serve.c) ---- */

/* Built-in defaults: 2 vCPUs (at most the host's CPUs), 4 GB memory of at
 * most 16, 10 GB disk of at most 100, 1024 pids; per user 10 sandboxes,
 * 32 GiB of running memory, 200 GiB of disk, 4 long jobs at once and 8
 * waiting (per kind), 64 long jobs at once in all. */
void pe_daemon_limits_defaults(pe_daemon_limits *l);
/* Set the limit of serve flag `name` ("default-memory", "user-disk", ...)
 * from arg. PE_EINVAL with the flag's form in the message. */
int pe_daemon_limits_flag(pe_daemon_limits *l, const char *name, const char *arg, pe_err *err);
/* Once every flag is read: each default within its maximum. */
int pe_daemon_limits_check(const pe_daemon_limits *l, pe_err *err);
/* One log line of the limits in force (at start). */
void pe_daemon_limits_log(const pe_daemon *d);

/* ---- a sandbox's sizes ---- */

/* createSandbox's vcpus, memory and disk from in (absent or null: the
 * defaults), checked against the maximums (PE_EINVAL naming the field and
 * the allowed range), into sb. Any thread. */
int pe_daemon_limits_request(const pe_daemon_limits *l, const json_t *in, pe_store_sandbox *sb,
                             pe_err *err);
/* The runtime limits of sb into cfg: its recorded sizes (rows from before
 * sizes were recorded get the defaults; sizes above today's maximums are
 * cut to them), the pids limit, and the disk limit where the runtime
 * enforces one. Never overflows: every size is bounded first. */
int pe_daemon_limits_cfg(const pe_daemon *d, const pe_store_sandbox *sb, pe_sandbox_cfg *cfg,
                         pe_err *err);

/* What an exec's client reads on stderr when the OOM killer ended its
 * command (the caller compared pe_runtime_oom_kills before and after):
 * one line naming the sandbox's memory limit (limit 0: none known). */
void pe_daemon_oom_note(int64_t limit, char *out, size_t len);

/* ---- per-user quotas (worker threads) ----
 *
 * The check and what it allows (the insert of a row, the start of a
 * sandbox, a backup's row) happen under one lock, so two requests of a
 * user cannot both take the last of a quota on this daemon. Refusals are
 * PE_XRPC_EFORBIDDEN (403, PE_DAEMON_QUOTA_ERROR) naming the quota and
 * the current use. The daemon's owner is exempt. */

/* Does any quota apply to did? */
bool pe_daemon_quota_applies(const pe_daemon *d, const char *did);
void pe_daemon_quota_lock(void);
void pe_daemon_quota_unlock(void);
/* Under the lock: may sb (sizes filled, owner_did set) be made and run? */
int pe_daemon_quota_new_sandbox(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err);
/* Under the lock: may stopped sb start? On success sb's memory counts as
 * running until pe_daemon_quota_started (a start in progress has no
 * RUNNING row yet). */
int pe_daemon_quota_start(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err);
void pe_daemon_quota_started(const pe_store_sandbox *sb);
/* Under the lock: may did keep `more` more bytes on disk (a backup's
 * archive, a /cp object)? */
int pe_daemon_quota_disk(pe_daemon *d, pe_store *s, const char *did, int64_t more, pe_err *err);

#endif
