/* Upstream's provider names, and which backend serves each here
 * (daemon/providers.c, docs/compat.md).
 *
 * Upstream's clients name a provider at create (reference §1.4) and pick
 * their terminal transport, backups and other paths from the provider a
 * sandbox reports, so a sandbox keeps and reports the name its client
 * asked for. Which backend runs it is this daemon's decision, taken once
 * at create by pe_daemon_provider_route and kept on the row (backend):
 * out of the box every name is served by the local runtime; the operator
 * can turn a name off (serve --provider NAME=off) or send it to the
 * provider itself (--provider NAME=remote, --provider-config FILE): then
 * the backend is the adapter's name (lib/sandbox, lib/provider). */
#ifndef PE_DAEMON_PROVIDERS_H
#define PE_DAEMON_PROVIDERS_H

#include "daemon.h"

/* What a create without a provider gets: upstream's default (its CLI
 * sends it when told nothing, its API fills it in when absent). */
#define PE_PROVIDER_DEFAULT "cloudflare"
/* Our provider name beyond upstream's: sandboxes in the operator's
 * Kubernetes cluster. Off unless --provider-config names it. */
#define PE_PROVIDER_OURS_K8S "kubernetes"
/* The backend of sandboxes this daemon runs itself, with its runtime. */
#define PE_BACKEND_LOCAL "local"

/* The names of createSandbox's provider enum, in the lexicon's order,
 * then ours (the enum extended by tools/lexicon-table.py); PE_PROVIDER_COUNT
 * of them. */
extern const char *const pe_provider_names[PE_PROVIDER_COUNT];

/* ---- flags (serve.c) ---- */

/* Every provider name served by the local runtime. */
void pe_daemon_providers_defaults(pe_daemon_providers *p);
/* --provider NAME=local|remote|off. PE_EINVAL naming the valid names or
 * values. */
int pe_daemon_providers_flag(pe_daemon_providers *p, const char *arg, pe_err *err);
/* Serve provider `name` remotely, through its adapter (--provider
 * NAME=remote, or a name in --provider-config). PE_EINVAL if this build
 * has no adapter for it (modal). */
int pe_daemon_providers_remote(pe_daemon_providers *p, const char *name, pe_err *err);
/* One log line of which name goes where (at start). */
void pe_daemon_providers_log(const pe_daemon_providers *p);

/* ---- the decision ---- */

/* The backend (a static string: PE_BACKEND_LOCAL, or the adapter's name
 * for a provider served remotely) that serves a new
 * sandbox of provider `name` (NULL: PE_PROVIDER_DEFAULT) into *backend,
 * and the provider name it keeps into *provider (static). An unknown name
 * is PE_EINVAL listing the valid ones; a name the operator turned off is
 * PE_EUNSUP saying so (PE_PROVIDER_OFF_ERROR). Pure: any thread. */
int pe_daemon_provider_route(const pe_daemon_providers *p, const char *name, const char **provider,
                             const char **backend, pe_err *err);

/* The XRPC error name of a provider that is turned off (400). */
#define PE_PROVIDER_OFF_ERROR "ProviderNotAvailable"

#endif
