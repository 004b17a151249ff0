/* Paused sandboxes: freeze, thaw, and thaw on the next request (pause.c). */
#ifndef PE_DAEMON_PAUSE_H
#define PE_DAEMON_PAUSE_H

#include <jansson.h>
#include <stdbool.h>

#include "daemon.h"

/* The header of an HTTP answer whose request resumed a paused sandbox
 * (a preview's); its value says what resumed it. */
#define PE_RESUMED_HEADER "Pocketenv-Resumed"

/* Freeze every process of local sandbox id (memory kept), or pause a
 * remote one through its provider (PE_ENOTCAP naming it when it has no
 * pause); why goes to the log. PE_ESTATE if it is not running (or paused
 * already). Worker thread (this and resume read the store). */
int pe_daemon_pause(pe_daemon *d, const char *id, const char *why, pe_err *err);

/* Thaw sandbox id, because of by ("exec", "terminal", "preview", "e2b"):
 * 1 if it was paused and runs again (logged, and shown by getSandbox's
 * resumedBy/resumedAt), 0 if it was not paused, -1 on error. */
int pe_daemon_resume(pe_daemon *d, const char *id, const char *by, pe_err *err);

/* pe_daemon_resume when the daemon knows id to be paused, else 0 at once:
 * for request paths, before they run anything in the sandbox. */
int pe_daemon_wake(pe_daemon *d, const char *id, const char *by, pe_err *err);
/* pe_daemon_wake for sb, a row just read: also wakes a remote sandbox
 * whose row says another node paused it. Worker thread. */
int pe_daemon_wake_row(pe_daemon *d, const pe_store_sandbox *sb, const char *by, pe_err *err);

/* Is id paused, as far as the daemon knows? Any thread. */
bool pe_daemon_paused(const char *id);
/* The runtime's word (housekeeping, a stop): sb is or is not paused;
 * sb's row in s is set to match when it says otherwise. Worker thread. */
void pe_daemon_paused_note(pe_store *s, const pe_store_sandbox *sb, bool paused);
/* Sandbox id is gone. */
void pe_daemon_paused_forget(const char *id);
/* Our extension of a sandbox's view: "paused", "resumedBy", "resumedAt",
 * from this daemon's copy if it has one for sb, else from sb's row (a
 * sandbox of another node of the cluster). */
void pe_daemon_paused_view(const pe_store_sandbox *sb, json_t *view);
void pe_daemon_paused_free(void);

#endif
