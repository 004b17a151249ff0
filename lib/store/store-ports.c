/* The store's typed operations for exposed ports (pocketenv/store-ports.h).
 *
 * Rows of sandbox_ports: the unique (sandbox_id, port) constraint makes a
 * second exposure of one port PE_EEXIST, which the API answers 409 (where
 * upstream lets the database error through as a 500). Every value is a
 * bound parameter. Threading: none; one pe_store per thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/util.h"
#include "pocketenv/store-ports.h"
#include "store-internal.h"

#define PORT_COLS "id, sandbox_id, port, description, preview_url, public, secret, created_at"

void pe_store_port_clear(pe_store_port *p)
{
    if (p == NULL)
        return;
    free((char *)p->id);
    free((char *)p->sandbox_id);
    free((char *)p->description);
    free((char *)p->preview_url);
    free((char *)p->secret);
    free((char *)p->owner_did);
    free((char *)p->sandbox_name);
    memset(p, 0, sizeof(*p));
}

void pe_store_port_list_free(pe_store_port *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_port_clear(&list[i]);
    free(list);
}

static void row_to_port(const pe__sql_res *r, size_t row, pe_store_port *p)
{
    p->id = pe__sql_dup(r, row, 0);
    p->sandbox_id = pe__sql_dup(r, row, 1);
    p->port = (int)pe__sql_int(r, row, 2);
    p->description = pe__sql_dup(r, row, 3);
    p->preview_url = pe__sql_dup(r, row, 4);
    p->public_access = pe__sql_int(r, row, 5) != 0;
    p->secret = pe__sql_dup(r, row, 6);
    p->created_at = pe__sql_int(r, row, 7);
    if (r->ncols > 9) {
        p->owner_did = pe__sql_dup(r, row, 8);
        p->sandbox_name = pe__sql_dup(r, row, 9);
    }
}

int pe_store_port_add(pe_store *s, const pe_store_port *p, pe_err *err)
{
    int64_t now = p->created_at ? p->created_at : pe_store_now_ms();

    if (p->id == NULL || p->sandbox_id == NULL || p->port < 1 || p->port > 65535)
        return pe_err_set(err, PE_EINVAL, 0, "add port: id, sandbox and a port 1-65535 needed");
    if (pe__store_query(s,
                        "INSERT INTO sandbox_ports (id, sandbox_id, port, description, "
                        "preview_url, public, secret, created_at, updated_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                        (pe__sql_arg[]){SQL_TEXT(p->id), SQL_TEXT(p->sandbox_id), SQL_INT(p->port),
                                        SQL_TEXT(p->description), SQL_TEXT(p->preview_url),
                                        SQL_INT(p->public_access ? 1 : 0), SQL_TEXT(p->secret),
                                        SQL_INT(now)},
                        8, NULL, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "port %d is already exposed", p->port);
        if (err && err->code == PE_ENOENT)
            return pe_err_set(err, PE_ENOENT, 0, "add port: sandbox %s not found", p->sandbox_id);
        return pe_err_prefix(err, "add port %d", p->port);
    }
    return 0;
}

static int select_rows(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                       pe_store_port **out, size_t *n, pe_err *err)
{
    pe__sql_res r = {0};

    *out = NULL;
    *n = 0;
    if (pe__store_query(s, sql, args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "list ports");
    if (r.nrows > 0)
        *out = pe_xcalloc(r.nrows, sizeof(**out));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_port(&r, i, &(*out)[i]);
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_port_get(pe_store *s, const char *sandbox_id, int port, pe_store_port *out,
                      pe_err *err)
{
    pe_store_port *list = NULL;
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    if (select_rows(s,
                    "SELECT " PORT_COLS " FROM sandbox_ports WHERE sandbox_id = $1 AND port = $2",
                    (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_INT(port)}, 2, &list, &n, err) < 0)
        return -1;
    if (n == 0)
        return pe_err_set(err, PE_ENOENT, 0, "port %d is not exposed", port);
    *out = list[0];
    memset(&list[0], 0, sizeof(list[0]));
    pe_store_port_list_free(list, n);
    return 0;
}

int pe_store_port_list(pe_store *s, const char *sandbox_id, pe_store_port **out, size_t *n,
                       pe_err *err)
{
    return select_rows(s,
                       "SELECT " PORT_COLS " FROM sandbox_ports WHERE sandbox_id = $1 "
                       "ORDER BY port",
                       (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, out, n, err);
}

int pe_store_port_find(pe_store *s, const char *ident, int port, pe_store_port *out, pe_err *err)
{
    pe_store_port *list = NULL;
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    /* Ids start with "sbx_", tags are [a-z2-7]: one can never be read as
     * the other, and each is unique across owners. */
    if (select_rows(s,
                    "SELECT p.id, p.sandbox_id, p.port, p.description, p.preview_url, "
                    "p.public, p.secret, p.created_at, x.owner_did, x.name "
                    "FROM sandbox_ports p JOIN sandboxes x ON x.id = p.sandbox_id "
                    "LEFT JOIN preview_hosts h ON h.sandbox_id = x.id "
                    "WHERE (x.id = $1 OR h.tag = $1) AND p.port = $2",
                    (pe__sql_arg[]){SQL_TEXT(ident), SQL_INT(port)}, 2, &list, &n, err) < 0)
        return -1;
    if (n != 1) {
        pe_store_port_list_free(list, n);
        return pe_err_set(err, PE_ENOENT, 0, "no such exposed port");
    }
    *out = list[0];
    memset(&list[0], 0, sizeof(list[0]));
    pe_store_port_list_free(list, n);
    return 0;
}

static void new_tag(char tag[PE_STORE_PREVIEW_TAG_LEN + 1])
{
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char raw[PE_STORE_PREVIEW_TAG_LEN];

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        abort(); /* the kernel's CSPRNG does not fail for 10 bytes */
    for (size_t i = 0; i < sizeof(raw); i++)
        tag[i] = b32[raw[i] & 31];
    tag[PE_STORE_PREVIEW_TAG_LEN] = '\0';
}

int pe_store_preview_tag(pe_store *s, const char *sandbox_id, char **tag, pe_err *err)
{
    char fresh[PE_STORE_PREVIEW_TAG_LEN + 1];
    const char *try = fresh;
    pe__sql_res r = {0};

    *tag = NULL;
    /* A taken tag (2^-50 per pair) is a unique violation: try another. */
    for (int attempt = 0; attempt < 4; attempt++) {
        if (pe__store_query(s, "SELECT tag FROM preview_hosts WHERE sandbox_id = $1",
                            (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
            return pe_err_prefix(err, "preview tag");
        if (r.nrows == 1) {
            *tag = pe__sql_dup(&r, 0, 0);
            pe__sql_res_clear(&r);
            return 0;
        }
        pe__sql_res_clear(&r);
        new_tag(fresh);
        /* INSERT ... SELECT: an unknown sandbox inserts nothing; a racing
         * first call of another thread makes ours a no-op. */
        if (pe__store_query(
                s,
                "INSERT INTO preview_hosts (sandbox_id, tag, created_at) "
                "SELECT id, $2, $3 FROM sandboxes WHERE id = $1 "
                "ON CONFLICT (sandbox_id) DO NOTHING",
                (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(try), SQL_INT(pe_store_now_ms())}, 3,
                &r, err) < 0 &&
            err->code != PE_EEXIST)
            return pe_err_prefix(err, "preview tag");
        if (r.changes == 0 &&
            pe__store_query(s, "SELECT 1 FROM sandboxes WHERE id = $1",
                            (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) == 0 &&
            r.nrows == 0) {
            pe__sql_res_clear(&r);
            return pe_err_set(err, PE_ENOENT, 0, "sandbox %s not found", sandbox_id);
        }
        pe__sql_res_clear(&r);
    }
    return pe_err_set(err, PE_ESYS, EAGAIN, "preview tag: no free tag after 4 tries");
}

int pe_store_port_delete(pe_store *s, const char *sandbox_id, int port, pe_err *err)
{
    pe__sql_res r = {0};

    if (pe__store_query(s, "DELETE FROM sandbox_ports WHERE sandbox_id = $1 AND port = $2",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_INT(port)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "delete port %d", port);
    if (r.changes == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "port %d is not exposed", port);
    }
    pe__sql_res_clear(&r);
    return 0;
}
