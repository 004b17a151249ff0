/* A sandbox's services as supervised units (sandbox-services.c). */
#ifndef PE_DAEMON_SANDBOX_SERVICES_H
#define PE_DAEMON_SANDBOX_SERVICES_H

#include "daemon.h"

/* Run service v (`/bin/sh -c COMMAND`) in its running sandbox, supervised,
 * restarted on failure, unless it runs already. */
int pe_daemon_service_unit_start(pe_daemon *d, const pe_store_service *v, pe_err *err);
/* Start every service of sb that its owner wants running. */
void pe_daemon_services_start(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb);
/* After a remote sandbox's resume: its services whose units ended while it
 * was paused (a provider whose pause keeps no processes) start again; the
 * ones still running are left as they are. */
void pe_daemon_services_revive(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb);

#endif
