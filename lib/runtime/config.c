/* Sandbox configuration: defaults, freeing, and the JSON form kept in the
 * state file. The JSON is the persistent contract between runtime
 * versions: unknown keys are ignored, missing ones take defaults. */
#include <jansson.h>
#include <string.h>

#include "core/util.h"
#include "runtime/internal.h"

void pe_sandbox_cfg_init(pe_sandbox_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->userns = true;
    cfg->net = PE_NET_NONE;
}

static void free_strv(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

void pe_sandbox_cfg_clear(pe_sandbox_cfg *cfg)
{
    free(cfg->name);
    free(cfg->image);
    free(cfg->hostname);
    free(cfg->workdir);
    free_strv(cfg->env);
    for (size_t i = 0; i < cfg->n_binds; i++) {
        free(cfg->binds[i].host);
        free(cfg->binds[i].dest);
    }
    free(cfg->binds);
    free(cfg->ports);
    pe_sandbox_cfg_init(cfg);
}

/* The runtime's defaults for limits the caller left at 0. */
void pe__cfg_apply_defaults(pe_sandbox_cfg *cfg)
{
    if (cfg->pids_max == 0)
        cfg->pids_max = PE_DEFAULT_PIDS;
    if (cfg->nofile_soft == 0)
        cfg->nofile_soft = cfg->nofile_hard > 0 && cfg->nofile_hard < PE_DEFAULT_NOFILE_SOFT
                               ? cfg->nofile_hard
                               : PE_DEFAULT_NOFILE_SOFT;
    if (cfg->nofile_hard == 0)
        cfg->nofile_hard =
            cfg->nofile_soft > PE_DEFAULT_NOFILE_HARD ? cfg->nofile_soft : PE_DEFAULT_NOFILE_HARD;
}

static json_t *strv_to_json(char **v)
{
    json_t *a = json_array();
    for (; v != NULL && *v != NULL; v++)
        json_array_append_new(a, json_string(*v));
    return a;
}

static char **json_to_strv(json_t *a)
{
    size_t n = json_is_array(a) ? json_array_size(a) : 0, i, k = 0;
    char **v = pe_xcalloc(n + 1, sizeof(char *));

    for (i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (s != NULL)
            v[k++] = pe_xstrdup(s);
    }
    return v;
}

static json_t *ports_to_json(const pe_sandbox_cfg *cfg)
{
    json_t *a = json_array();
    for (size_t i = 0; i < cfg->n_ports; i++)
        json_array_append_new(a, json_pack("{s:i, s:i}", "host", cfg->ports[i].host_port, "port",
                                           cfg->ports[i].port));
    return a;
}

/* Ports out of range read as 0 and are rejected when the sandbox starts. */
static void ports_from_json(json_t *a, pe_sandbox_cfg *cfg)
{
    size_t n = json_is_array(a) ? json_array_size(a) : 0;

    cfg->ports = pe_xcalloc(n + 1, sizeof(pe_port));
    for (size_t i = 0; i < n; i++) {
        json_int_t h = json_integer_value(json_object_get(json_array_get(a, i), "host"));
        json_int_t p = json_integer_value(json_object_get(json_array_get(a, i), "port"));
        cfg->ports[i].host_port = (uint16_t)(h > 0 && h < 65536 ? h : 0);
        cfg->ports[i].port = (uint16_t)(p > 0 && p < 65536 ? p : 0);
    }
    cfg->n_ports = n;
}

json_t *pe__cfg_to_json(const pe_sandbox_cfg *cfg)
{
    json_t *o = json_object();
    json_t *binds = json_array();

    for (size_t i = 0; i < cfg->n_binds; i++)
        json_array_append_new(binds, json_pack("{s:s, s:s, s:b}", "host", cfg->binds[i].host,
                                               "dest", cfg->binds[i].dest, "ro", cfg->binds[i].ro));
    if (cfg->name)
        json_object_set_new(o, "name", json_string(cfg->name));
    json_object_set_new(o, "image", json_string(cfg->image ? cfg->image : PE_DEFAULT_IMAGE));
    json_object_set_new(o, "memory", json_integer(cfg->memory_bytes));
    json_object_set_new(o, "cpuMillis", json_integer(cfg->cpu_millis));
    json_object_set_new(o, "pids", json_integer(cfg->pids_max));
    json_object_set_new(o, "disk", json_integer(cfg->disk_bytes));
    json_object_set_new(o, "nofileSoft", json_integer(cfg->nofile_soft));
    json_object_set_new(o, "nofileHard", json_integer(cfg->nofile_hard));
    json_object_set_new(o, "env", strv_to_json(cfg->env));
    json_object_set_new(o, "volumes", binds);
    if (cfg->hostname)
        json_object_set_new(o, "hostname", json_string(cfg->hostname));
    if (cfg->workdir)
        json_object_set_new(o, "workdir", json_string(cfg->workdir));
    json_object_set_new(o, "uid", json_integer(cfg->uid));
    json_object_set_new(o, "gid", json_integer(cfg->gid));
    json_object_set_new(o, "userns", json_boolean(cfg->userns));
    json_object_set_new(o, "net", json_string(cfg->net == PE_NET_NAT ? "nat" : "none"));
    json_object_set_new(o, "publish", ports_to_json(cfg));
    json_object_set_new(o, "netAllowHost", json_boolean(cfg->net_allow_host));
    return o;
}

static bool str_eq(const char *a, const char *b)
{
    return a != NULL && strcmp(a, b) == 0;
}

static char *dup_opt(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? pe_xstrdup(s) : NULL;
}

int pe__cfg_from_json(json_t *o, pe_sandbox_cfg *cfg, pe_err *err)
{
    json_t *binds;
    size_t i;

    if (!json_is_object(o))
        return pe_err_set(err, PE_ESYS, 0, "sandbox config is not a JSON object");
    pe_sandbox_cfg_init(cfg);
    cfg->name = dup_opt(o, "name");
    cfg->image = dup_opt(o, "image");
    cfg->hostname = dup_opt(o, "hostname");
    cfg->workdir = dup_opt(o, "workdir");
    cfg->memory_bytes = json_integer_value(json_object_get(o, "memory"));
    cfg->cpu_millis = json_integer_value(json_object_get(o, "cpuMillis"));
    cfg->pids_max = json_integer_value(json_object_get(o, "pids"));
    cfg->disk_bytes = json_integer_value(json_object_get(o, "disk"));
    /* Missing (state from before the limit): 0, the default at start. */
    cfg->nofile_soft = json_integer_value(json_object_get(o, "nofileSoft"));
    cfg->nofile_hard = json_integer_value(json_object_get(o, "nofileHard"));
    cfg->env = json_to_strv(json_object_get(o, "env"));
    cfg->uid = (uint32_t)json_integer_value(json_object_get(o, "uid"));
    cfg->gid = (uint32_t)json_integer_value(json_object_get(o, "gid"));
    cfg->userns = !json_is_false(json_object_get(o, "userns"));
    /* Missing (state from before networking): none, what it ran with. */
    cfg->net =
        str_eq(json_string_value(json_object_get(o, "net")), "nat") ? PE_NET_NAT : PE_NET_NONE;
    cfg->net_allow_host = json_is_true(json_object_get(o, "netAllowHost"));
    ports_from_json(json_object_get(o, "publish"), cfg);
    binds = json_object_get(o, "volumes");
    cfg->n_binds = json_is_array(binds) ? json_array_size(binds) : 0;
    cfg->binds = pe_xcalloc(cfg->n_binds + 1, sizeof(pe_bind));
    for (i = 0; i < cfg->n_binds; i++) {
        json_t *b = json_array_get(binds, i);
        cfg->binds[i].host = dup_opt(b, "host");
        cfg->binds[i].dest = dup_opt(b, "dest");
        cfg->binds[i].ro = json_is_true(json_object_get(b, "ro"));
        if (cfg->binds[i].host == NULL || cfg->binds[i].dest == NULL) {
            pe_sandbox_cfg_clear(cfg);
            return pe_err_set(err, PE_ESYS, 0, "sandbox config: volume %zu is incomplete", i);
        }
    }
    return 0;
}
