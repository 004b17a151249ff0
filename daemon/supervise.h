/* Supervised processes inside sandboxes (supervise.c): services and the
 * daemon's own helpers. Every function is thread-safe. */
#ifndef PE_DAEMON_SUPERVISE_H
#define PE_DAEMON_SUPERVISE_H

#include <stdbool.h>
#include <sys/types.h>

#include "daemon.h"

#define PE_UNIT_LOG_MAX (64 * 1024) /* bytes of output kept per unit */
#define PE_UNIT_RESTART_MAX 5       /* restarts in a row before FAILED */
#define PE_UNIT_STABLE_S 30.0       /* a run this long resets the count */
#define PE_UNIT_STOP_TIMEOUT 5.0    /* SIGTERM, then SIGKILL after this */

#define PE_UNIT_TAIL_MAX 256 /* bytes of a run's last words kept (lastError) */

typedef struct pe_unit_state {
    int state;     /* PE_STORE_RUNNING, PE_STORE_STOPPED or PE_STORE_FAILED */
    int exit_code; /* of the last run that ended */
    int restarts;  /* restarts in a row so far */
    bool live;     /* a thread supervises it (running or waiting to restart) */
    bool ended;    /* a run has ended since it was started: exit_code holds */
    /* Live, but failing: it was restarted after a failure and has not run
     * PE_UNIT_STABLE_S seconds since (it may be waiting out its backoff). */
    bool crashloop;
    /* The end of what the last run that ended wrote to stderr (or to
     * stdout if it wrote nothing there), NUL-terminated; "" if none. */
    char last_words[PE_UNIT_TAIL_MAX + 1];
} pe_unit_state;

/* Run argv in running sandbox sandbox_id as unit key (unique, e.g. the
 * service id), supervised, unless it runs already. argv is copied. */
int pe_daemon_unit_start(pe_daemon *d, const char *key, const char *sandbox_id, char *const *argv,
                         bool restart_on_failure, pe_err *err);
/* pe_sandboxes' unit_start (d: the pe_daemon): as pe_daemon_unit_start,
 * restarted on failure, for a sandbox its caller has just seen run while
 * its start is not done (its record does not say RUNNING yet): the first
 * run does not wait for the record, the restarts do. */
int pe_daemon_unit_start_starting(void *d, const char *key, const char *sandbox_id,
                                  char *const *argv, pe_err *err);
/* Stop unit key: SIGTERM to its process group, SIGKILL after timeout;
 * returns when its thread has ended. -1 if there is no such unit. */
int pe_daemon_unit_stop(const char *key, double timeout);
/* Stop every unit of a sandbox (its stop, deletion). */
void pe_daemon_unit_stop_sandbox(const char *sandbox_id);
/* Stop unit key and drop its state and logs. */
void pe_daemon_unit_forget(const char *key);
/* Forget every unit of a sandbox (its deletion). */
void pe_daemon_unit_forget_sandbox(const char *sandbox_id);
/* The unit's state; false if the daemon has never run it. */
bool pe_daemon_unit_state(const char *key, pe_unit_state *out);
/* A copy of its output ring (malloc'd, NUL-terminated after *len), NULL
 * if unknown. *cut: older output was dropped. *written: bytes the ring has
 * taken since the daemon first ran the unit, counted with the same copy
 * (a follower prints the last *written - before of them). */
char *pe_daemon_unit_logs(const char *key, size_t *len, bool *cut, unsigned long long *written);
/* SIGKILL every process of the sandbox whose init is init_pid (host pid)
 * that carries a unit's marker: what an earlier daemon supervised. */
int pe_daemon_unit_kill_leftovers(pid_t init_pid);
/* The daemon exits: units keep running in their sandboxes (as the
 * sandboxes do), but nothing is started or restarted any more. */
void pe_daemon_units_detach(void);

#endif
