/* A sandbox's services as supervised units (supervise.c), below the
 * handlers: what a start of the sandbox and handlers/service.c start. */
#include "core/log.h"
#include "core/util.h"
#include "daemon.h"
#include "sandbox-services.h"
#include "supervise.h"

int pe_daemon_service_unit_start(pe_daemon *d, const pe_store_service *v, pe_err *err)
{
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)v->command, NULL};

    return pe_daemon_unit_start(d, v->id, v->sandbox_id, argv, true, err);
}

void pe_daemon_services_start(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    pe_store_service *list = NULL;
    size_t n = 0;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_service_list(s, sb->id, 1000, 0, &list, &n, NULL, &err) < 0) {
        pe_log_warn("sandbox %s: services not started: %s", sb->id, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (list[i].status != PE_STORE_RUNNING)
            continue;
        /* A unit left from the sandbox's last run is stopped: it starts
         * again with this run's environment. */
        pe_daemon_unit_stop(list[i].id, PE_UNIT_STOP_TIMEOUT);
        /* The sandbox has just started, but its record says RUNNING only
         * once its start is done: a remote sandbox's unit must not take
         * the record's word at its first run (supervise.c), or a unit
         * thread quicker than the start would find it not running. */
        char *argv[] = {(char *)"/bin/sh", (char *)"-c", (char *)list[i].command, NULL};
        if (pe_daemon_unit_start_starting(d, list[i].id, sb->id, argv, &err) < 0) {
            pe_log_warn("sandbox %s: service %s not started: %s", sb->id, list[i].name, err.msg);
            pe_err_clear(&err);
        }
    }
    pe_store_service_list_free(list, n);
}

void pe_daemon_services_revive(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb)
{
    pe_store_service *list = NULL;
    size_t n = 0;
    pe_err err;

    pe_err_clear(&err);
    if (pe_store_service_list(s, sb->id, 1000, 0, &list, &n, NULL, &err) < 0) {
        pe_log_warn("sandbox %s: services not started again: %s", sb->id, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* a live unit (its process kept through the pause) is left alone:
         * pe_daemon_unit_start does nothing to it */
        if (list[i].status == PE_STORE_RUNNING &&
            pe_daemon_service_unit_start(d, &list[i], &err) < 0) {
            pe_log_warn("sandbox %s: service %s not started again: %s", sb->id, list[i].name,
                        err.msg);
            pe_err_clear(&err);
        }
    }
    pe_store_service_list_free(list, n);
}
