/* The bases a sandbox can be made from: the template catalog that
 * getSandboxes lists, and what createSandbox's base may name
 * (daemon/templates.c, docs/compat.md).
 *
 * A base is an image: busybox and debian (built on first use) or one
 * built or imported into DATA/images. Upstream's clients name templates
 * of upstream's catalog (openclaw by default, as an at-uri); those this
 * daemon cannot build yet are refused by name at create, never accepted
 * and then failed. */
#ifndef PE_DAEMON_TEMPLATES_H
#define PE_DAEMON_TEMPLATES_H

#include <jansson.h>

#include "daemon.h"

/* The XRPC error name of a template of upstream's catalog that is not
 * available here (400, PE_EUNSUP). */
#define PE_TEMPLATE_MISSING_ERROR "TemplateNotAvailable"

/* createSandbox's base as clients send it, into the name of the base
 * (malloc'd in *name): an image name, or a template's at-uri
 * at://AUTHORITY/io.pocketenv.sandbox/NAME (whose record key is the
 * template's name, as upstream's CLI sends by default). Another shape (a
 * path, another collection) is PE_EINVAL. Pure: any thread. */
int pe_daemon_base_name(const char *base, char **name, pe_err *err);

/* name is one of this daemon's plain bases (busybox, debian): no tool of
 * a template in it, so a remote provider's own default image stands for
 * it. */
bool pe_daemon_base_plain(const char *name);

/* 0 if this daemon can run (or build) base `name`. Otherwise an error:
 * PE_EUNSUP for a template of upstream's catalog whose tool installs only
 * from a vendor's download site (PE_TEMPLATE_MISSING_ERROR), PE_EINVAL
 * with the list of the bases it has for any other name. Reads
 * DATA/images: worker threads. */
int pe_daemon_base_check(pe_daemon *d, const char *name, pe_err *err);

/* Background job of a create, before the sandbox starts: build template
 * sb->base if it is one and not built yet (the row's statusReason says
 * what is being built, step by step), and give the sandbox the
 * template's service. 0 for a base that is no template. */
int pe_daemon_template_prepare(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err);

/* After the sandbox started: wait until the template's service accepts
 * connections on its port; an error (with its last line of output) if it
 * fails or stays silent for minutes. 0 at once for other bases. */
int pe_daemon_template_ready(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err);

/* Every base as a template view (id = name = the base to create from):
 * the built-in images first, then the others by name, in a new array in
 * *out. Reads DATA/images: worker threads. */
int pe_daemon_catalog(pe_daemon *d, json_t **out, pe_err *err);

#endif
