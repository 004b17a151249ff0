/* A sandbox's keys inside it, and what follows its start (sandbox-keys.c). */
#ifndef PE_DAEMON_SANDBOX_KEYS_H
#define PE_DAEMON_SANDBOX_KEYS_H

#include "daemon.h"

#define PE_OPENSSH_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----"
#define PE_OPENSSH_END "-----END OPENSSH PRIVATE KEY-----"

/* Upstream's redacted form of an OpenSSH private key (reference §5). */
char *pe_daemon_ssh_redact(const char *priv);

/* Write the pair (private key priv, len bytes; public key line pub) into
 * running local sandbox id: /root/.ssh/id_ed25519 (0600) and .pub. */
int pe_daemon_ssh_install(pe_daemon *d, const char *id, const char *priv, size_t len,
                          const char *pub, pe_err *err);

/* A default SSH pair made ahead of its sandbox's row (the warm pool's
 * filler): the parts as the store keeps them. */
typedef struct pe_daemon_ssh_ahead {
    char *pub, *sealed, *redacted;
} pe_daemon_ssh_ahead;

/* Generate a default pair with comment root@name, install it into running
 * local sandbox id, and keep its public line, sealed private key and
 * redacted text in *out (nothing kept on failure). The plain private key
 * is zeroed before this returns. */
int pe_daemon_ssh_ahead_make(pe_daemon *d, const char *id, const char *name,
                             pe_daemon_ssh_ahead *out, pe_err *err);
void pe_daemon_ssh_ahead_clear(pe_daemon_ssh_ahead *a);

/* Bring Tailscale up in local sb with the sealed key, on a thread of its
 * own (opened there); the outcome is logged. */
void pe_daemon_tailscale_up_later(pe_daemon *d, const pe_store_sandbox *sb, const char *sealed);

/* The daemon exits: wait for a Tailscale bring-up in progress, start no
 * other (teardown, before the runtime and keys are freed). */
void pe_daemon_tailscale_quiesce(void);

/* What follows a sandbox's start, after its files are placed: its egress
 * policy's resolver (pe_daemon_netpolicy_started), its SSH key pair (a
 * default one generated if it has none), Tailscale if it has an auth key
 * and the image has tailscale, and its services. Failures are logged,
 * never fatal to the start. */
void pe_daemon_sandbox_started(pe_daemon *d, const pe_store_sandbox *sb);
/* The same but the resolver, for a pooled sb (the filler started that
 * ahead), whose default pair ssh (NULL: none) is installed in it already:
 * when sb has no stored pair, ssh is stored as its pair and not written
 * again; a stored pair is installed as always. ssh must have been made for
 * sb's id and name (its comment). */
void pe_daemon_sandbox_started_with(pe_daemon *d, const pe_store_sandbox *sb,
                                    const pe_daemon_ssh_ahead *ssh);

#endif
