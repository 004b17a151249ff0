/* Idle policies per sandbox (the methods: handlers/idle.c; checked and
 * stored: sandbox-idle.c; the pass: housekeeping.c). */
#ifndef PE_DAEMON_IDLE_H
#define PE_DAEMON_IDLE_H

#include <jansson.h>

#include "daemon.h"

/* getIdlePolicy, putIdlePolicy. Loop thread, at start. */
int pe_daemon_register_idle(pe_daemon *d, pe_err *err);

/* createSandbox's idlePolicy: checked (loop thread; a bad one is the
 * create's 400) and normalised in in, then stored with the new row id
 * (worker). Absent or null: nothing. */
int pe_daemon_idle_create_check(json_t *in, pe_err *err);
int pe_daemon_idle_create_store(pe_store *s, const char *id, const json_t *in, pe_err *err);
/* {action, timeout} checked and normalised (a timeout of null or none:
 * 0, the daemon's); NULL with err set. putIdlePolicy's body and
 * createSandbox's idlePolicy alike. */
json_t *pe_daemon_idle_parse(const json_t *v, pe_err *err);

#endif
