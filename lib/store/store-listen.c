/* LISTEN on a PostgreSQL store (pocketenv/store-listen.h): one libpq
 * connection per listener, set non-blocking once it listens, and read with
 * PQconsumeInput/PQnotifies as libpq documents for asynchronous
 * notification (no query is ever sent on it after the LISTENs).
 * Threading: none; see the header. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>

#include "core/util.h"
#include "pocketenv/store-listen.h"
#include "pocketenv/store-nodes.h"

struct pe_store_listener {
    PGconn *conn;
};

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* libpq's message on one line (it names the host or socket, never the
 * password). */
static int conn_fail(PGconn *conn, const char *what, pe_err *err)
{
    char line[512];
    size_t n;

    snprintf(line, sizeof(line), "%s", conn ? PQerrorMessage(conn) : "out of memory");
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return pe_err_set(err, PE_ESYS, 0, "listen: %s: %s", what, line);
}

static int listen_on(PGconn *conn, const char *channel, pe_err *err)
{
    char sql[128];
    PGresult *res;
    int ok;

    /* The channel names are our constants, never input. */
    snprintf(sql, sizeof(sql), "LISTEN %s", channel);
    res = PQexec(conn, sql);
    ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return ok ? 0 : conn_fail(conn, sql, err);
}

pe_store_listener *pe_store_listen_open(const char *url, const char *name, pe_err *err)
{
    pe_store_listener *l;
    PGconn *conn;

    if (url == NULL ||
        (strncmp(url, "postgres://", 11) != 0 && strncmp(url, "postgresql://", 13) != 0)) {
        pe_err_set(err, PE_EUNSUP, 0, "listen: only a PostgreSQL store has notifications");
        return NULL;
    }
    /* The URL first, expanded; the name after it wins over one in it. */
    conn = PQconnectdbParams((const char *const[]){"dbname", "application_name", NULL},
                             (const char *const[]){url, name ? name : "pocketenv-listen", NULL}, 1);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        conn_fail(conn, "connect", err);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, quiet_notices, NULL);
    if (listen_on(conn, PE_STORE_SANDBOXES_CHANNEL, err) < 0 ||
        listen_on(conn, PE_STORE_NODES_CHANNEL, err) < 0 ||
        listen_on(conn, PE_STORE_USERS_CHANNEL, err) < 0) {
        PQfinish(conn);
        return NULL;
    }
    /* From here on only input is read: nothing may wait for the server. */
    if (PQsetnonblocking(conn, 1) != 0) {
        conn_fail(conn, "non-blocking", err);
        PQfinish(conn);
        return NULL;
    }
    l = pe_xcalloc(1, sizeof(*l));
    l->conn = conn;
    return l;
}

int pe_store_listen_fd(const pe_store_listener *l)
{
    return PQsocket(l->conn);
}

int pe_store_listen_read(pe_store_listener *l, pe_store_notify_fn fn, void *ud, pe_err *err)
{
    PGnotify *n;
    PGresult *res;
    int count = 0;

    if (PQconsumeInput(l->conn) == 0 || PQstatus(l->conn) != CONNECTION_OK)
        return conn_fail(l->conn, "connection lost", err);
    /* An error the server sends on its own (a terminated backend) is a
     * result nobody asked for: read it so the status above sees the end. */
    while (!PQisBusy(l->conn) && (res = PQgetResult(l->conn)) != NULL)
        PQclear(res);
    while ((n = PQnotifies(l->conn)) != NULL) {
        fn(n->relname, n->extra ? n->extra : "", ud);
        PQfreemem(n);
        count++;
    }
    if (PQstatus(l->conn) != CONNECTION_OK)
        return conn_fail(l->conn, "connection lost", err);
    return count;
}

void pe_store_listen_close(pe_store_listener *l)
{
    if (l == NULL)
        return;
    PQfinish(l->conn);
    free(l);
}
