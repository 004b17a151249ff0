/* Between the files of lib/sandbox only. */
#ifndef PE_SANDBOX_INTERNAL_H
#define PE_SANDBOX_INTERNAL_H

#include "sandbox/sandbox.h"

/* sandbox-remote.c: the adapter of remote sb, opened with its credential. */
int pe__sandbox_remote_open(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                            pe_provider **out, pe_err *err);
/* sandbox-remote.c: adapter backend opened with a stored credential
 * (sealed and redacted JSON texts as pe_store_cred keeps them; sealed
 * NULL: the operator's). label names its holder in errors. */
int pe__sandbox_remote_open_creds(pe_sandboxes *sx, const char *backend, const char *label,
                                  const char *sealed, const char *redacted, pe_provider **out,
                                  pe_err *err);
/* Forget (and wipe) the operator's remote settings. */
void pe__sandboxes_remotes_clear(pe_sandboxes *sx);

/* sandbox-remote.c: the file resources of sb written through p. */
int pe__sandbox_place_files(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                            pe_provider *p, const char *remote_id, pe_err *err);

/* sandbox-remote.c: the stored SSH key pair of sb written through p. */
int pe__sandbox_place_ssh(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_provider *p,
                          const char *remote_id, pe_err *err);

#endif
