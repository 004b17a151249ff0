/* Idle policies as a sandbox's create and putIdlePolicy take them
 * (idle.h): checked and normalised, and createSandbox's stored with the
 * new row. The methods are handlers/idle.c's; the pass is housekeeping.c's. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "daemon.h"
#include "idle.h"
#include "pocketenv/store-idle.h"

#define TIMEOUT_MAX (30LL * 24 * 3600)

/* {action, timeout} checked and normalised; NULL with err set. */
json_t *pe_daemon_idle_parse(const json_t *v, pe_err *err)
{
    const char *action = json_string_value(json_object_get(v, "action"));
    const json_t *t = json_object_get(v, "timeout");

    if (!json_is_object(v))
        return pe_err_set(err, PE_EINVAL, 0, "an idle policy is an object {action, timeout}"), NULL;
    if (!pe_store_idle_action_valid(action))
        return pe_err_set(err, PE_EINVAL, 0,
                          "action must be \"stop\", \"pause\" or \"snapshot-then-stop\""),
               NULL;
    if (t && !json_is_null(t) &&
        (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > TIMEOUT_MAX))
        return pe_err_set(err, PE_EINVAL, 0, "timeout must be 0 (the daemon's) to %lld seconds",
                          TIMEOUT_MAX),
               NULL;
    return json_pack("{s:s, s:I}", "action", action, "timeout",
                     t && json_is_integer(t) ? json_integer_value(t) : (json_int_t)0);
}

int pe_daemon_idle_create_check(json_t *in, pe_err *err)
{
    json_t *v = json_object_get(in, "idlePolicy"), *p;

    if (v == NULL || json_is_null(v))
        return 0;
    p = pe_daemon_idle_parse(v, err);
    if (p == NULL)
        return pe_err_prefix(err, "idlePolicy");
    json_object_set_new(in, "idlePolicy", p);
    return 0;
}

int pe_daemon_idle_create_store(pe_store *s, const char *id, const json_t *in, pe_err *err)
{
    const json_t *p = json_object_get(in, "idlePolicy");

    if (p == NULL || json_is_null(p))
        return 0;
    return pe_store_idle_put(s, id, json_string_value(json_object_get(p, "action")),
                             json_integer_value(json_object_get(p, "timeout")), err);
}
