/* Idle policies (issue 19): what the daemon does with a running sandbox
 * nobody has used for a while: stop it, pause it (cgroup freezer, memory
 * kept) or snapshot it then stop it. One row per sandbox that has one;
 * a sandbox without a row is stopped after the daemon's --idle-timeout,
 * as before. Threading: none; one pe_store per thread. */
#ifndef POCKETENV_STORE_IDLE_H
#define POCKETENV_STORE_IDLE_H

#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

#define PE_IDLE_STOP "stop"
#define PE_IDLE_PAUSE "pause"
#define PE_IDLE_SNAPSHOT_STOP "snapshot-then-stop"

typedef struct pe_store_idle {
    char *sandbox_id;
    char *action;    /* PE_IDLE_* */
    int64_t timeout; /* seconds; 0: the daemon's --idle-timeout */
} pe_store_idle;

/* Is action one of PE_IDLE_*? */
bool pe_store_idle_action_valid(const char *action);

/* Set sandbox_id's policy (replacing one it had). Unknown sandbox:
 * PE_ENOENT. */
int pe_store_idle_put(pe_store *s, const char *sandbox_id, const char *action, int64_t timeout,
                      pe_err *err);
/* sandbox_id's policy; PE_ENOENT when it has none. Free with
 * pe_store_idle_clear. */
int pe_store_idle_get(pe_store *s, const char *sandbox_id, pe_store_idle *out, pe_err *err);
/* Every policy (for the housekeeping pass); free with pe_store_idle_list_free. */
int pe_store_idle_list(pe_store *s, pe_store_idle **out, size_t *n, pe_err *err);
void pe_store_idle_clear(pe_store_idle *p);
void pe_store_idle_list_free(pe_store_idle *list, size_t n);

#endif
