/* Table-driven option parsing for every command, and the sandbox options
 * shared by `run` and `runtime create`. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/fs.h"
#include "core/util.h"

const pe_opt pe_sandbox_opts[] = {
    {"image", 0, true, OPT_IMAGE, "NAME|DIR", "base image or root directory (default debian)"},
    {"memory", 'm', true, OPT_MEMORY, "SIZE", "memory limit, e.g. 512m, 2g"},
    {"cpus", 0, true, OPT_CPUS, "N", "CPU limit, fractional, e.g. 0.5"},
    {"pids", 0, true, OPT_PIDS, "N", "maximum number of processes (default 1024)"},
    {"nofile", 0, true, OPT_NOFILE, "N[:M]",
     "open files per process: soft N, hard M (default N);\n"
     "                                 default 1024:4096"},
    {"disk", 0, true, OPT_DISK, "SIZE", "size limit of the writable layer"},
    {"env", 'e', true, OPT_ENV, "K=V", "set an environment variable (repeatable)"},
    {"volume", 'v', true, OPT_VOLUME, "HOST:PATH[:ro]", "bind a host path (repeatable)"},
    {"hostname", 0, true, OPT_HOSTNAME, "NAME", "hostname inside the sandbox"},
    {"workdir", 'w', true, OPT_WORKDIR, "DIR", "working directory (created if missing)"},
    {"tty", 't', false, OPT_TTY, NULL, "run the command on a terminal"},
    {"user", 'u', true, OPT_USER, "UID[:GID]", "run as this user"},
    {"timeout", 0, true, OPT_TIMEOUT, "S", "kill the command after S seconds (exit 124)"},
    {"net", 0, true, OPT_NET, "none|nat",
     "network: none (loopback only) or nat (own address, egress through the host);\n"
     "                                 default: nat for `runtime create`, none for `run`"},
    {"publish", 'p', true, OPT_PUBLISH, "[HOSTPORT:]PORT",
     "publish tcp PORT on the host (any free HOSTPORT if omitted; nat only)"},
    {"net-allow-host", 0, false, OPT_NET_ALLOW_HOST, NULL,
     "let the sandbox open connections to the host (nat only)"},
    {"userns", 0, true, OPT_USERNS, "private|host", "user namespace (default private)"},
    {"help", 'h', false, OPT_HELP, NULL, "show this help"},
    {NULL, 0, false, 0, NULL, NULL},
};

static const pe_opt *find_long(const pe_opt *t, const char *name, size_t len)
{
    for (; t->name; t++)
        if (strlen(t->name) == len && strncmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

static const pe_opt *find_short(const pe_opt *t, char c)
{
    for (; t->name; t++)
        if (t->short_name == c)
            return t;
    return NULL;
}

/* -it: several short flags in one word, as getopt takes them. Only flags
 * without a value: "-m512m" is refused rather than guessed at. */
static int short_group(const pe_opt *table, const char *a, pe_opt_fn on, void *ctx, pe_err *err)
{
    for (const char *c = a + 1; *c; c++) {
        const pe_opt *o = find_short(table, *c);
        if (o == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "unknown option -%c in %s (see --help)", *c, a);
        if (o->has_arg)
            return pe_err_set(err, PE_EINVAL, 0,
                              "option -%c (--%s) needs a value: give it apart, not in %s", *c,
                              o->name, a);
        if (on(o->id, NULL, ctx, err) < 0)
            return -1;
    }
    return 0;
}

int pe_opts_parse(const pe_opt *table, int argc, char **argv, int *idx, bool stop_at_positional,
                  pe_opt_fn on, void *ctx, pe_err *err)
{
    while (*idx < argc) {
        const char *a = argv[*idx];
        const pe_opt *o = NULL;
        const char *val = NULL;

        if (strcmp(a, "--") == 0) {
            (*idx)++;
            return 0;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (stop_at_positional)
                return 0;
            if (on(0, a, ctx, err) < 0)
                return -1;
            (*idx)++;
            continue;
        }
        if (a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            o = find_long(table, a + 2, len);
            if (o && eq)
                val = eq + 1;
        } else if (a[2] == '\0') {
            o = find_short(table, a[1]);
        } else {
            if (short_group(table, a, on, ctx, err) < 0)
                return -1;
            (*idx)++;
            continue;
        }
        if (o == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "unknown option %s (see --help)", a);
        (*idx)++;
        if (o->has_arg && val == NULL) {
            if (*idx >= argc)
                return pe_err_set(err, PE_EINVAL, 0, "option --%s needs a value", o->name);
            val = argv[(*idx)++];
        } else if (!o->has_arg && val != NULL) {
            return pe_err_set(err, PE_EINVAL, 0, "option --%s takes no value", o->name);
        }
        if (on(o->id, val, ctx, err) < 0)
            return -1;
    }
    return 0;
}

void pe_opts_help(const pe_opt *t)
{
    for (; t->name; t++) {
        char left[64];
        if (t->short_name)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", t->short_name, t->name,
                     t->arg_name ? " " : "", t->arg_name ? t->arg_name : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", t->name, t->arg_name ? " " : "",
                     t->arg_name ? t->arg_name : "");
        printf("  %-30s %s\n", left, t->help);
    }
}

void pe_cli_sandbox_init(pe_cli_sandbox *s)
{
    memset(s, 0, sizeof(*s));
    pe_sandbox_cfg_init(&s->cfg);
}

void pe_cli_sandbox_clear(pe_cli_sandbox *s)
{
    pe_sandbox_cfg_clear(&s->cfg);
    free(s->proc.env);
    memset(s, 0, sizeof(*s));
}

int pe_cli_parse_user(const char *s, uint32_t *uid, uint32_t *gid, pe_err *err)
{
    char *end = NULL;
    unsigned long u, g;

    errno = 0;
    u = strtoul(s, &end, 10);
    if (errno || end == s || (*end != '\0' && *end != ':') || u >= 65536 || *s == '-')
        return pe_err_set(err, PE_EINVAL, 0, "invalid user '%s': want UID[:GID], 0-65535", s);
    g = u;
    if (*end == ':') {
        const char *gs = end + 1;
        g = strtoul(gs, &end, 10);
        if (errno || end == gs || *end != '\0' || g >= 65536 || *gs == '-')
            return pe_err_set(err, PE_EINVAL, 0, "invalid group in '%s'", s);
    }
    *uid = (uint32_t)u;
    *gid = (uint32_t)g;
    return 0;
}

int pe_cli_parse_seconds(const char *s, double *out, pe_err *err)
{
    char *end = NULL;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > 1e7)
        return pe_err_set(err, PE_EINVAL, 0, "invalid number of seconds '%s'", s);
    *out = v;
    return 0;
}

static int parse_volume(const char *arg, pe_sandbox_cfg *cfg, pe_err *err)
{
    cleanup_free char *copy = pe_xstrdup(arg);
    char *host = copy, *dest, *mode;
    pe_bind *b;

    dest = strchr(copy, ':');
    if (dest == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "volume must be HOST:PATH[:ro]: %s", arg);
    *dest++ = '\0';
    mode = strchr(dest, ':');
    if (mode != NULL) {
        *mode++ = '\0';
        if (strcmp(mode, "ro") != 0 && strcmp(mode, "rw") != 0)
            return pe_err_set(err, PE_EINVAL, 0, "volume mode must be ro or rw: %s", arg);
    }
    if (host[0] != '/' || dest[0] != '/')
        return pe_err_set(err, PE_EINVAL, 0, "volume paths must be absolute: %s", arg);
    cfg->binds = pe_xrealloc(cfg->binds, (cfg->n_binds + 1) * sizeof(pe_bind));
    b = &cfg->binds[cfg->n_binds++];
    memset(b, 0, sizeof(*b)); /* every field, including ones added later */
    b->host = pe_xstrdup(host);
    b->dest = pe_xstrdup(dest);
    b->ro = mode != NULL && strcmp(mode, "ro") == 0;
    return 0;
}

static int parse_port(const char *s, size_t len, uint16_t *out)
{
    unsigned long v = 0;

    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* -p PORT or -p HOSTPORT:PORT (tcp). */
static int parse_publish(const char *arg, pe_sandbox_cfg *cfg, pe_err *err)
{
    const char *colon = strchr(arg, ':');
    pe_port p = {0, 0};

    if (colon != NULL ? parse_port(arg, (size_t)(colon - arg), &p.host_port) < 0 ||
                            parse_port(colon + 1, strlen(colon + 1), &p.port) < 0
                      : parse_port(arg, strlen(arg), &p.port) < 0)
        return pe_err_set(err, PE_EINVAL, 0, "publish wants [HOSTPORT:]PORT, 1-65535: %s", arg);
    cfg->ports = pe_xrealloc(cfg->ports, (cfg->n_ports + 1) * sizeof(pe_port));
    cfg->ports[cfg->n_ports++] = p;
    return 0;
}

static int parse_count(const char *what, const char *arg, int64_t *out, pe_err *err)
{
    char *end = NULL;
    long long v;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end != '\0' || v <= 0 || v > 4194304)
        return pe_err_set(err, PE_EINVAL, 0, "invalid %s '%s'", what, arg);
    *out = v;
    return 0;
}

/* --nofile N (soft and hard) or N:M. Range checks are the runtime's. */
static int parse_nofile(const char *arg, pe_sandbox_cfg *cfg, pe_err *err)
{
    cleanup_free char *copy = pe_xstrdup(arg);
    char *colon = strchr(copy, ':');

    if (colon != NULL)
        *colon = '\0';
    if (parse_count("open-files limit", copy, &cfg->nofile_soft, NULL) < 0 ||
        (colon != NULL && parse_count("open-files limit", colon + 1, &cfg->nofile_hard, NULL) < 0))
        return pe_err_set(err, PE_EINVAL, 0, "invalid open-files limit '%s' (N or SOFT:HARD)", arg);
    if (colon == NULL)
        cfg->nofile_hard = cfg->nofile_soft;
    return 0;
}

int pe_cli_sandbox_opt(int id, const char *arg, pe_cli_sandbox *s, pe_err *err)
{
    pe_sandbox_cfg *cfg = &s->cfg;
    long long size;
    double d;

    switch (id) {
    case OPT_IMAGE:
        free(cfg->image);
        cfg->image = pe_xstrdup(arg);
        return 0;
    case OPT_MEMORY:
    case OPT_DISK:
        if (pe_parse_size(arg, &size) < 0 || size <= 0)
            return pe_err_set(err, PE_EINVAL, 0, "invalid size '%s' (e.g. 512m, 2g)", arg);
        *(id == OPT_MEMORY ? &cfg->memory_bytes : &cfg->disk_bytes) = size;
        return 0;
    case OPT_CPUS:
        if (pe_cli_parse_seconds(arg, &d, NULL) < 0 || d < 0.01 || d > 1024)
            return pe_err_set(err, PE_EINVAL, 0, "invalid CPU count '%s' (e.g. 0.5, 2)", arg);
        cfg->cpu_millis = (int64_t)llround(d * 1000);
        return 0;
    case OPT_PIDS:
        return parse_count("process limit", arg, &cfg->pids_max, err);
    case OPT_NOFILE:
        return parse_nofile(arg, cfg, err);
    case OPT_ENV:
        if (strchr(arg, '=') == NULL || arg[0] == '=')
            return pe_err_set(err, PE_EINVAL, 0, "environment must be KEY=VALUE: %s", arg);
        cfg->env = pe_xrealloc(cfg->env, (size_t)(s->n_env + 2) * sizeof(char *));
        cfg->env[s->n_env++] = pe_xstrdup(arg);
        cfg->env[s->n_env] = NULL;
        return 0;
    case OPT_VOLUME:
        return parse_volume(arg, cfg, err);
    case OPT_HOSTNAME:
        free(cfg->hostname);
        cfg->hostname = pe_xstrdup(arg);
        return 0;
    case OPT_WORKDIR:
        if (arg[0] != '/')
            return pe_err_set(err, PE_EINVAL, 0, "working directory must be absolute: %s", arg);
        free(cfg->workdir);
        cfg->workdir = pe_xstrdup(arg);
        return 0;
    case OPT_TTY:
        s->proc.tty = true;
        return 0;
    case OPT_USER:
        if (pe_cli_parse_user(arg, &s->proc.uid, &s->proc.gid, err) < 0)
            return -1;
        s->proc.has_user = true;
        cfg->uid = s->proc.uid;
        cfg->gid = s->proc.gid;
        return 0;
    case OPT_TIMEOUT:
        return pe_cli_parse_seconds(arg, &s->proc.timeout, err);
    case OPT_NET:
        if (strcmp(arg, "none") == 0)
            cfg->net = PE_NET_NONE;
        else if (strcmp(arg, "nat") == 0)
            cfg->net = PE_NET_NAT;
        else
            return pe_err_set(err, PE_EINVAL, 0, "unknown network mode '%s' (none or nat)", arg);
        return 0;
    case OPT_PUBLISH:
        return parse_publish(arg, cfg, err);
    case OPT_NET_ALLOW_HOST:
        cfg->net_allow_host = true;
        return 0;
    case OPT_USERNS:
        if (strcmp(arg, "host") == 0)
            cfg->userns = false;
        else if (strcmp(arg, "private") == 0)
            cfg->userns = true;
        else
            return pe_err_set(err, PE_EINVAL, 0, "--userns must be private or host");
        return 0;
    default:
        return pe_err_set(err, PE_EINVAL, 0, "unexpected option");
    }
}
