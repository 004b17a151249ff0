/* The warm pool (issue 21): per base, N runtime sandboxes started ahead of
 * time, each claimed by one matching createSandbox and replaced in the
 * background (daemon/pool.c, docs/design/daemon.md "Warm pool").
 *
 * A pooled sandbox is a runtime sandbox named by a fresh store id with no
 * row: no user's list, quota or count sees it until a create claims it,
 * inserts the row under that very id and adopts the running sandbox. It
 * is handed out once: a claimed sandbox never comes back to the pool, and
 * what the claim does not use is removed. */
#ifndef PE_DAEMON_POOL_H
#define PE_DAEMON_POOL_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "daemon.h"
#include "sandbox-keys.h"

#define PE_POOL_BASES_MAX 16
#define PE_POOL_SIZE_MAX 1024 /* sandboxes of one base */

typedef struct pe_daemon_pool pe_daemon_pool;

/* One pooled sandbox, and the per-user work done for it ahead of a claim
 * (pool.c ahead_of_claim): a name drawn as a create without one draws it,
 * and a default SSH pair whose comment names it, already installed. */
typedef struct pe_daemon_pooled {
    char *id;
    char *name;
    pe_daemon_ssh_ahead ssh; /* pub NULL: none placed */
    int pidfd;               /* its init's (-1: none) */
} pe_daemon_pooled;

void pe_daemon_pooled_free(pe_daemon_pooled *p);

typedef struct pe_daemon_pool_cfg {
    size_t n;
    char *base[PE_POOL_BASES_MAX]; /* base names, as createSandbox's base */
    unsigned size[PE_POOL_BASES_MAX];
    int64_t min_available_mib; /* fill only above, shrink below (MemAvailable) */
} pe_daemon_pool_cfg;

/* --pool BASE=N[,BASE=N...] (repeatable; N 0 drops BASE). PE_EINVAL with
 * the form in the message. */
int pe_daemon_pool_parse(pe_daemon_pool_cfg *c, const char *arg, pe_err *err);
/* --pool-min-available MIB. */
int pe_daemon_pool_parse_min(pe_daemon_pool_cfg *c, const char *arg, pe_err *err);
void pe_daemon_pool_cfg_clear(pe_daemon_pool_cfg *c);

/* After reconcile (which removes a previous daemon's pooled sandboxes as
 * orphans): start the filler thread. Nothing happens for an empty cfg. */
int pe_daemon_pool_start(pe_daemon *d, const pe_daemon_pool_cfg *c, pe_err *err);
/* Stop the filler and remove every sandbox still pooled. */
void pe_daemon_pool_stop(pe_daemon *d);

/* Worker: a pooled sandbox for a create of in (already checked) whose
 * row would get sizes, or NULL when none fits (no pool for that base,
 * none ready, sizes other than the pool's, a network policy). The caller
 * owns it: it must end in pe_daemon_pool_claim or _discard. A create
 * without a name of its own tries its drawn name first. */
pe_daemon_pooled *pe_daemon_pool_take(pe_daemon *d, const json_t *in,
                                      const pe_store_sandbox *sizes);
/* Worker: the row of sb (id = pd's id) exists: make the running sandbox
 * its own (network policy, files, keys, services), as a start would, and
 * keep a pidfd of its init in *init_pidfd. The pair placed ahead becomes
 * sb's default pair only if sb got pd's drawn name and no stored file;
 * otherwise a new one is made and written over it. On failure the caller
 * removes it, as any failed start. */
int pe_daemon_pool_adopt(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                         pe_daemon_pooled *pd, int *init_pidfd, pe_err *err);
/* Worker: the claim of taken pd, whose row (INITIALIZING) was just
 * inserted under its id: adopt it and move the row to RUNNING. -1 if it
 * could not be (logged): the sandbox is removed and the row is left
 * INITIALIZING for the normal start, which makes a fresh one under the
 * same id. pd is freed either way. */
int pe_daemon_pool_claim(pe_daemon *d, pe_store *s, pe_daemon_pooled *pd, int *init_pidfd);
/* Worker: remove a taken sandbox that no row will own, and free pd. */
void pe_daemon_pool_discard(pe_daemon *d, pe_daemon_pooled *pd);

/* /metrics lines. */
void pe_daemon_pool_metrics(pe_daemon *d, FILE *out);

#endif
