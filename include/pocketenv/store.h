/* The daemon's store: users, sandboxes and what hangs off a sandbox.
 *
 * Two backends behind one interface: embedded SQLite (the default,
 * "sqlite:PATH" or a plain path) and PostgreSQL ("postgres://..." or
 * "postgresql://..."). Both apply the same versioned migrations at open.
 *
 * Threading: a pe_store is a single connection and is NOT thread-safe.
 * Use one pe_store per thread (the daemon opens one per worker); handles on
 * the same database see each other's committed writes.
 *
 * Conventions:
 * - Functions return 0 (or a count) on success and < 0 with err filled on
 *   failure. An unknown row is PE_ENOENT, a taken unique name PE_EEXIST, a
 *   rejected value PE_EINVAL, anything else (I/O, connection) PE_ESYS.
 * - Timestamps are int64 unix milliseconds (UTC); 0 means "not set" for
 *   optional ones (started_at) and "now" for created_at on insert.
 * - Strings in structs the store fills are malloc'd and owned by the
 *   struct (const only so that input structs can point at literals and
 *   parsed JSON): free them with the matching *_clear function. Structs
 *   passed as input are only read. NULL string = SQL NULL.
 * - Error messages never contain values (sealed secrets travel through
 *   here), only table and constraint names. */
#ifndef POCKETENV_STORE_H
#define POCKETENV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"

typedef struct pe_store pe_store;

/* Open (creating if needed) the store at url and bring its schema to the
 * latest version. Concurrent opens of one database are safe: migrations
 * run under the database's write lock (SQLite) or an advisory lock (PG). */
pe_store *pe_store_open(const char *url, pe_err *err);
void pe_store_close(pe_store *s);

/* Rises after every statement of this process that may have written, on
 * any store and thread (atomic). Equal before and after a read: no write
 * of this process finished in between. Writes of other processes (a
 * shared PostgreSQL) do not count. */
uint64_t pe_store_write_gen(void);
/* Raise it for a change that is kept outside the store but shows in what
 * reads answer (a sandbox paused or resumed), so cached answers go. */
void pe_store_write_gen_bump(void);

/* "sqlite" or "postgres". */
const char *pe_store_backend(const pe_store *s);

/* Latest migration applied to the database, or < 0 on error. */
int pe_store_schema_version(pe_store *s, pe_err *err);

/* Latest migration this build knows. */
int pe_store_schema_latest(void);

/* A fresh id: prefix + base62 of 16 random bytes (22 chars), like
 * upstream's "sbx_..." ids. Caller frees. */
char *pe_store_new_id(const char *prefix);

/* Current time in unix milliseconds, as stored. */
int64_t pe_store_now_ms(void);

/* ---- users ---- */

typedef struct pe_store_user {
    const char *did; /* primary key */
    const char *handle;
    const char *display_name;
    const char *avatar;
    int64_t created_at;
    int64_t updated_at;
    /* Tokens issued (iat, ms) before this are refused: revocation of all
     * of a user's tokens without keeping a list. 0 = none revoked. */
    int64_t tokens_valid_after;
} pe_store_user;

void pe_store_user_clear(pe_store_user *u);

/* Insert the user or update handle, display_name and avatar of an existing
 * one (created_at and tokens_valid_after are kept). */
int pe_store_user_upsert(pe_store *s, const pe_store_user *u, pe_err *err);
int pe_store_user_get(pe_store *s, const char *did, pe_store_user *out, pe_err *err);
int pe_store_user_revoke_tokens(pe_store *s, const char *did, int64_t before_ms, pe_err *err);
/* fn(did, tokens_valid_after, ud) for every user with revoked tokens. */
int pe_store_user_revocations(pe_store *s,
                              void (*fn)(const char *did, int64_t valid_after, void *ud), void *ud,
                              pe_err *err);

/* ---- sandboxes ---- */

enum pe_store_status {
    PE_STORE_INITIALIZING = 0,
    PE_STORE_RUNNING,
    PE_STORE_STOPPED,
    PE_STORE_FAILED,
};

/* "INITIALIZING", ... ; NULL for an out-of-range value. */
const char *pe_store_status_name(int status);
/* Status from its name, or -1. */
int pe_store_status_parse(const char *name);

typedef struct pe_store_sandbox {
    const char *id;        /* "sbx_...", from pe_store_new_id("sbx_") */
    const char *owner_did; /* users.did, required */
    const char *name;      /* unique per owner */
    const char *display_name;
    const char *description;
    const char *base; /* template / image name */
    /* The provider name its client asked for (upstream's: "cloudflare",
     * "daytona", ...), reported to clients; NULL on insert = "cloudflare". */
    const char *provider;
    const char *provider_id; /* the backend's instance id (local: the node) */
    const char *backend;     /* what runs it: "local" (NULL on insert = "local") */
    int status;              /* enum pe_store_status */
    const char *status_reason;
    const char *repo;
    const char *topics; /* JSON array text, as given */
    const char *logo;
    const char *readme;
    const char *uri;
    const char *public_key; /* the sealing key clients used at creation */
    int64_t vcpus;          /* 0 = unset (NULL in the store) */
    int64_t memory;         /* GB, as the lexicon; 0 = unset */
    int64_t disk;           /* GB; 0 = unset */
    int keep_alive;
    int64_t idle_timeout; /* seconds; 0 = daemon default */
    int64_t installs;
    int64_t created_at;
    int64_t updated_at;
    int64_t started_at; /* last move to RUNNING; 0 = never */
    /* What its node knows of a pause (daemon/pause.c keeps the fast copy;
     * other nodes of a cluster read these): frozen now, and what last
     * resumed it (NULL: nothing yet), when (unix ms). Not written by
     * insert: pe_store_sandbox_set_paused. */
    int paused;
    const char *resumed_by;
    int64_t resumed_at;
    /* The node that supervises a remote sandbox (its services, idle policy
     * and reconciliation at start; docs/cluster.md); NULL: any (rows from
     * before clusters, or a local sandbox, whose node is provider_id). */
    const char *node;
} pe_store_sandbox;

void pe_store_sandbox_clear(pe_store_sandbox *sb);

/* Record that sandbox id is (not) paused; resumed_by non-NULL also records
 * what resumed it and when (resumed_at, unix ms), NULL keeps the last.
 * PE_ENOENT if there is no such row. */
/* Make node the supervisor of sandbox id if it has none: 1 if id's is
 * node now (this call's or an earlier one's), 0 if another node's, -1
 * (PE_ENOENT: no such row). One statement: two nodes claiming at once get
 * one winner. */
int pe_store_sandbox_claim_node(pe_store *s, const char *id, const char *node, pe_err *err);
int pe_store_sandbox_set_paused(pe_store *s, const char *id, bool paused, const char *resumed_by,
                                int64_t resumed_at, pe_err *err);
void pe_store_sandbox_list_free(pe_store_sandbox *list, size_t n);

/* Insert sb (id and owner_did required, owner must exist: PE_ENOENT if not).
 * A name the owner already uses is PE_EEXIST. */
int pe_store_sandbox_insert(pe_store *s, const pe_store_sandbox *sb, pe_err *err);
int pe_store_sandbox_get(pe_store *s, const char *id, pe_store_sandbox *out, pe_err *err);
int pe_store_sandbox_get_by_name(pe_store *s, const char *owner_did, const char *name,
                                 pe_store_sandbox *out, pe_err *err);

/* Page of sandboxes, newest first. owner_did NULL lists every owner's (for
 * reconciliation at start). *out is an array of *n entries (free with
 * pe_store_sandbox_list_free); *total, if not NULL, counts all matches. */
int pe_store_sandbox_list(pe_store *s, const char *owner_did, int64_t limit, int64_t offset,
                          pe_store_sandbox **out, size_t *n, int64_t *total, pe_err *err);

/* Set status and reason (NULL clears it). A move to RUNNING sets started_at.
 * expect >= 0 makes it a compare-and-set: PE_ESTATE if the current status
 * differs. Unknown id: PE_ENOENT. */
int pe_store_sandbox_set_status(pe_store *s, const char *id, int status, const char *reason,
                                int expect, pe_err *err);
int pe_store_sandbox_set_provider(pe_store *s, const char *id, const char *provider,
                                  const char *provider_id, pe_err *err);
/* Set keep_alive (startSandbox's keepAlive). Unknown id: PE_ENOENT. */
int pe_store_sandbox_set_keep_alive(pe_store *s, const char *id, bool keep_alive, pe_err *err);

/* Rewrite the user-editable fields of sb->id: name, display_name,
 * description, base, repo, topics, logo, readme, uri, vcpus, memory, disk,
 * keep_alive, idle_timeout. Owner, status and timestamps are untouched. */
int pe_store_sandbox_update(pe_store *s, const pe_store_sandbox *sb, pe_err *err);

/* Delete the sandbox and, through ON DELETE CASCADE, every row that
 * belongs to it (variables, secrets, files, volume mounts, ports,
 * services, keys, backups, provider credentials). */
int pe_store_sandbox_delete(pe_store *s, const char *id, pe_err *err);

/* ---- per-sandbox named values: variables, secrets, files ----
 *
 * Key is the variable or secret name, or the file path; value is the plain
 * variable value, or the sealed (crypto_box_seal, base64url) secret value or
 * file content. Typed helpers for the other child tables come with their
 * endpoints. */

enum pe_store_kv_kind {
    PE_STORE_VARIABLE = 0,
    PE_STORE_SECRET,
    PE_STORE_FILE,
};

typedef struct pe_store_kv {
    const char *id;
    const char *sandbox_id;
    const char *key;
    const char *value;
    int64_t created_at;
    int64_t updated_at;
} pe_store_kv;

void pe_store_kv_clear(pe_store_kv *kv);
void pe_store_kv_list_free(pe_store_kv *list, size_t n);

/* Insert or replace the value of key. Unknown sandbox: PE_ENOENT. */
int pe_store_kv_put(pe_store *s, int kind, const char *sandbox_id, const char *key,
                    const char *value, pe_err *err);
int pe_store_kv_get(pe_store *s, int kind, const char *sandbox_id, const char *key,
                    pe_store_kv *out, pe_err *err);
/* Every entry of the sandbox, ordered by key. */
int pe_store_kv_list(pe_store *s, int kind, const char *sandbox_id, pe_store_kv **out, size_t *n,
                     pe_err *err);
int pe_store_kv_delete(pe_store *s, int kind, const char *sandbox_id, const char *key, pe_err *err);

/* ---- resources by id, as the API addresses them (store-resources.c) ----
 *
 * Variables, secrets and files of pe_store_kv_* again, addressed by their
 * row id and scoped to the sandbox owner: get and list answer PE_ENOENT /
 * nothing for another user's rows, as for missing ones. */

/* Insert key = value for the sandbox. A taken key is PE_EEXIST (never a
 * replace), an unknown sandbox PE_ENOENT. *id_out (may be NULL) is the new
 * row's malloc'd id. */
int pe_store_res_add(pe_store *s, int kind, const char *sandbox_id, const char *key,
                     const char *value, char **id_out, pe_err *err);
/* The row id if its sandbox belongs to owner_did, else PE_ENOENT. */
int pe_store_res_get(pe_store *s, int kind, const char *owner_did, const char *id, pe_store_kv *out,
                     pe_err *err);
/* A page (limit 1..1000, offset >= 0) of owner_did's rows, of one sandbox
 * or (sandbox_id NULL) of all their sandboxes, ordered by key. *total (if
 * not NULL) counts every match. Free *out with pe_store_kv_list_free. */
int pe_store_res_list(pe_store *s, int kind, const char *owner_did, const char *sandbox_id,
                      int64_t limit, int64_t offset, pe_store_kv **out, size_t *n, int64_t *total,
                      pe_err *err);
/* Rows of a sandbox. */
int pe_store_res_count(pe_store *s, int kind, const char *sandbox_id, int64_t *count, pe_err *err);
/* Set key and/or value (NULL keeps it) of row id. PE_EEXIST if the new key
 * is taken in its sandbox, PE_ENOENT if the row is gone. No owner check:
 * fetch the row with pe_store_res_get first. */
int pe_store_res_update(pe_store *s, int kind, const char *id, const char *key, const char *value,
                        pe_err *err);
int pe_store_res_delete(pe_store *s, int kind, const char *id, pe_err *err);

/* ---- volumes (store-volumes.c) ----
 *
 * A volume belongs to a user (name unique per user) and is mounted into
 * sandboxes at a path (unique per sandbox; one mount per volume and
 * sandbox). Deleting a sandbox drops its mounts, never the volume. */

typedef struct pe_store_volume {
    const char *id; /* "vol_..." */
    const char *owner_did;
    const char *name;
    int64_t created_at;
    int64_t updated_at;
    const char *node; /* nodes.id whose data directory has it; NULL: not recorded */
} pe_store_volume;

typedef struct pe_store_mount {
    const char *volume_id;
    const char *volume_name;
    const char *sandbox_id;
    const char *path;
    int read_only;
    int sandbox_status; /* enum pe_store_status of the sandbox */
    int64_t created_at;
    int64_t updated_at;
} pe_store_mount;

void pe_store_volume_clear(pe_store_volume *v);
void pe_store_volume_list_free(pe_store_volume *list, size_t n);
void pe_store_mount_clear(pe_store_mount *m);
void pe_store_mount_list_free(pe_store_mount *list, size_t n);

/* New volume; a name the owner uses is PE_EEXIST. *id_out may be NULL. */
int pe_store_volume_add(pe_store *s, const char *owner_did, const char *name, char **id_out,
                        pe_err *err);
/* The owner's volume by id or name; another user's is PE_ENOENT. */
int pe_store_volume_get(pe_store *s, const char *owner_did, const char *id, pe_store_volume *out,
                        pe_err *err);
int pe_store_volume_get_by_name(pe_store *s, const char *owner_did, const char *name,
                                pe_store_volume *out, pe_err *err);
/* A page of the owner's volumes by name; *total (may be NULL) counts all. */
int pe_store_volume_list(pe_store *s, const char *owner_did, int64_t limit, int64_t offset,
                         pe_store_volume **out, size_t *n, int64_t *total, pe_err *err);
int pe_store_volume_rename(pe_store *s, const char *id, const char *name, pe_err *err);
/* Delete the volume and (cascade) its mounts. */
int pe_store_volume_delete(pe_store *s, const char *id, pe_err *err);
/* Record the node whose data directory has volume id (a cluster's). */
int pe_store_volume_set_node(pe_store *s, const char *id, const char *node, pe_err *err);

/* Mount volume_id in sandbox_id at path, replacing its earlier mount in
 * that sandbox. A path another volume holds there is PE_EEXIST. */
int pe_store_mount_put(pe_store *s, const char *sandbox_id, const char *volume_id, const char *path,
                       int read_only, pe_err *err);
int pe_store_mount_delete(pe_store *s, const char *sandbox_id, const char *volume_id, pe_err *err);
/* Mounts of a sandbox (a page, by path) or of a volume (all). */
int pe_store_mount_list_sandbox(pe_store *s, const char *sandbox_id, int64_t limit, int64_t offset,
                                pe_store_mount **out, size_t *n, int64_t *total, pe_err *err);
int pe_store_mount_list_volume(pe_store *s, const char *volume_id, pe_store_mount **out, size_t *n,
                               pe_err *err);

/* ---- keys and credentials (store-keys.c) ----
 *
 * A sandbox has at most one SSH key pair and one Tailscale auth key; the
 * secret part is stored sealed (crypto_box_seal, base64url) with a redacted
 * copy for listings. Provider credentials (sandboxProviderPref) are one
 * row per (sandbox, owner, provider): a sealed JSON document and its
 * redacted JSON. No owner check: pass a sandbox the caller owns. */

enum pe_store_key_kind {
    PE_STORE_SSH_KEY = 0,
    PE_STORE_TAILSCALE_KEY,
};

typedef struct pe_store_key {
    const char *id;
    const char *sandbox_id;
    const char *public_key; /* SSH: the public key line; Tailscale: NULL */
    const char *sealed;     /* the private key / auth key, sealed */
    const char *redacted;
    int64_t created_at;
    int64_t updated_at;
} pe_store_key;

void pe_store_key_clear(pe_store_key *k);
/* Set the sandbox's key (replacing the one it had; the row keeps its id
 * and created_at). public_key is required for PE_STORE_SSH_KEY and ignored
 * otherwise. Unknown sandbox: PE_ENOENT. */
int pe_store_key_put(pe_store *s, int kind, const char *sandbox_id, const char *public_key,
                     const char *sealed, const char *redacted, pe_err *err);
/* The sandbox's key, PE_ENOENT if it has none. */
int pe_store_key_get(pe_store *s, int kind, const char *sandbox_id, pe_store_key *out, pe_err *err);

typedef struct pe_store_cred {
    const char *id;
    const char *sandbox_id;
    const char *owner_did;
    const char *provider;
    const char *sealed;   /* sealed JSON of the credential fields */
    const char *redacted; /* JSON: redacted copies and public ids */
    int64_t created_at;
    int64_t updated_at;
} pe_store_cred;

void pe_store_cred_clear(pe_store_cred *c);
void pe_store_cred_list_free(pe_store_cred *list, size_t n);
/* Insert or replace owner_did's credentials for provider in the sandbox. */
int pe_store_cred_put(pe_store *s, const char *sandbox_id, const char *owner_did,
                      const char *provider, const char *sealed, const char *redacted, pe_err *err);
/* Every provider's credentials of owner_did in the sandbox, newest first. */
int pe_store_cred_list(pe_store *s, const char *sandbox_id, const char *owner_did,
                       pe_store_cred **out, size_t *n, pe_err *err);
int pe_store_cred_delete_all(pe_store *s, const char *sandbox_id, const char *owner_did,
                             pe_err *err);

/* ---- services (store-services.c) ----
 *
 * A named command of a sandbox (name unique per sandbox). status is what
 * the owner asked for: PE_STORE_RUNNING (run it with the sandbox) or
 * PE_STORE_STOPPED; what the process does is the daemon's to know. The
 * ports a service declares are sandbox_ports rows with its service_id. */

typedef struct pe_store_service {
    const char *id; /* "svc_..." */
    const char *sandbox_id;
    const char *name;
    const char *command;
    const char *description;
    int status; /* enum pe_store_status: RUNNING or STOPPED */
    int64_t created_at;
    int64_t updated_at;
} pe_store_service;

void pe_store_service_clear(pe_store_service *v);
void pe_store_service_list_free(pe_store_service *list, size_t n);
/* A taken name is PE_EEXIST, an unknown sandbox PE_ENOENT. */
int pe_store_service_add(pe_store *s, const char *sandbox_id, const char *name, const char *command,
                         const char *description, int status, char **id_out, pe_err *err);
/* The service if its sandbox belongs to owner_did (NULL: any owner). */
int pe_store_service_get(pe_store *s, const char *owner_did, const char *id, pe_store_service *out,
                         pe_err *err);
/* A page of the sandbox's services by name; *total (may be NULL) counts all. */
int pe_store_service_list(pe_store *s, const char *sandbox_id, int64_t limit, int64_t offset,
                          pe_store_service **out, size_t *n, int64_t *total, pe_err *err);
int pe_store_service_update(pe_store *s, const char *id, const char *name, const char *command,
                            const char *description, pe_err *err);
int pe_store_service_set_status(pe_store *s, const char *id, int status, pe_err *err);
int pe_store_service_delete(pe_store *s, const char *id, pe_err *err);
/* Replace the service's port rows with ports[0..n). A port another row of
 * the sandbox holds is PE_EEXIST. */
int pe_store_service_set_ports(pe_store *s, const char *sandbox_id, const char *service_id,
                               const char *service_name, const int64_t *ports, size_t n,
                               pe_err *err);
/* The service's ports, ascending; *ports is malloc'd. */
int pe_store_service_ports(pe_store *s, const char *service_id, int64_t **ports, size_t *n,
                           pe_err *err);

#endif
