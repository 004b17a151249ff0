/* Unit tests of lib/store, run against every backend.
 *
 * Each scenario runs twice: as sqlite_<name> on a fresh database file and
 * as pg_<name> on a fresh schema of a PostgreSQL server. The server is
 * PE_TEST_PG_URL when set; otherwise main() starts a throwaway cluster from
 * /usr/lib/postgresql/<ver>/bin as the 'postgres' user, listening only on a
 * unix socket in a temporary directory, and removes it after the cases.
 * Without PostgreSQL binaries the pg_ cases skip, saying why; binaries that
 * are present but fail to start a server fail them. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <libpq-fe.h>

#include "core/fs.h"
#include "core/util.h"
#include "pocketenv/store-backups.h"
#include "pocketenv/store-e2b.h"
#include "pocketenv/store-nodes.h"
#include "pocketenv/store-ports.h"
#include "pocketenv/store-records.h"
#include "pocketenv/store-snapshots.h"
#include "pocketenv/store-idle.h"
#include "pocketenv/store-listen.h"
#include "pocketenv/store-usage.h"
#include "pocketenv/store.h"
#include "store/store-internal.h"
#include "task.h"

static char g_tmp[PATH_MAX];     /* per-run scratch, SQLite files */
static char g_pg_dir[PATH_MAX];  /* cluster we started, "" if none */
static char g_pg_bin[PATH_MAX];  /* its bin directory */
static char *g_pg_url;           /* server to test against */
static const char *g_pg_missing; /* why the pg_ cases skip */
static const char *g_pg_broken;  /* why the pg_ cases fail */

/* ---- PostgreSQL server for the run ---- */

/* fork + exec argv (no shell) as pw (NULL: as ourselves), output to log. */
static int run_as(const struct passwd *pw, const char *const argv[], const char *log)
{
    int status = 0;
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

        if (fd < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        if (pw && (setgroups(0, NULL) < 0 || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
                   setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0))
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void dump_file(const char *path)
{
    cleanup_free char *text = NULL;
    size_t len = 0;

    if (pe_fs_read_file(path, 1 << 16, &text, &len, NULL) == 0)
        fprintf(stderr, "---- %s\n%s----\n", path, text);
}

static const struct passwd *pg_user(void)
{
    return geteuid() == 0 ? getpwnam("postgres") : NULL;
}

static void pg_stop(void)
{
    char data[PATH_MAX + 8], log[PATH_MAX + 16], pg_ctl[PATH_MAX + 8];

    if (g_pg_dir[0] == '\0')
        return;
    snprintf(data, sizeof(data), "%s/data", g_pg_dir);
    snprintf(log, sizeof(log), "%s/setup.log", g_pg_dir);
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", g_pg_bin);
    run_as(pg_user(),
           (const char *const[]){pg_ctl, "-D", data, "-m", "immediate", "-w", "stop", NULL}, log);
    pe_fs_rm_rf(g_pg_dir, NULL);
    g_pg_dir[0] = '\0';
}

static int pg_configure(const char *data)
{
    cleanup_free char *conf = pe_xasprintf("%s/postgresql.conf", data);
    /* Loopback is not even needed: a unix socket in our own directory.
     * Durability is off: the cluster lives for one test run. */
    cleanup_free char *extra = pe_xasprintf("\nlisten_addresses = ''\n"
                                            "unix_socket_directories = '%s'\n"
                                            "fsync = off\nsynchronous_commit = off\n"
                                            "full_page_writes = off\nmax_connections = 40\n",
                                            g_pg_dir);
    int fd = open(conf, O_WRONLY | O_APPEND | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -1;
    n = write(fd, extra, strlen(extra));
    close(fd);
    return n == (ssize_t)strlen(extra) ? 0 : -1;
}

static void pg_start(void)
{
    const struct passwd *pw = pg_user();
    char data[PATH_MAX + 8], log[PATH_MAX + 16], slog[PATH_MAX + 16];
    char initdb[PATH_MAX + 8], pg_ctl[PATH_MAX + 8];
    glob_t g = {0};

    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        g_pg_missing = "PostgreSQL not found under /usr/lib/postgresql/*/bin and PE_TEST_PG_URL "
                       "unset: install postgresql to run the pg_ cases";
        globfree(&g);
        return;
    }
    snprintf(g_pg_bin, sizeof(g_pg_bin), "%.*s", (int)(strlen(g.gl_pathv[g.gl_pathc - 1]) - 7),
             g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    if (geteuid() == 0 && pw == NULL) {
        g_pg_broken = "running as root and there is no 'postgres' user to run initdb as";
        return;
    }
    snprintf(g_pg_dir, sizeof(g_pg_dir), "/tmp/pe-test-pg-XXXXXX");
    if (mkdtemp(g_pg_dir) == NULL) {
        g_pg_dir[0] = '\0';
        g_pg_broken = "mkdtemp for the PostgreSQL cluster failed";
        return;
    }
    if (pw && chown(g_pg_dir, pw->pw_uid, pw->pw_gid) < 0) {
        g_pg_broken = "chown of the cluster directory to postgres failed";
        return;
    }
    snprintf(data, sizeof(data), "%s/data", g_pg_dir);
    snprintf(log, sizeof(log), "%s/setup.log", g_pg_dir);
    snprintf(slog, sizeof(slog), "%s/server.log", g_pg_dir);
    snprintf(initdb, sizeof(initdb), "%s/initdb", g_pg_bin);
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", g_pg_bin);
    if (run_as(pw,
               (const char *const[]){initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E",
                                     "UTF8", "--locale=C", "--no-sync", "--no-instructions", NULL},
               log) != 0) {
        g_pg_broken = "initdb failed (log above)";
        dump_file(log);
        return;
    }
    if (pg_configure(data) < 0 || run_as(pw,
                                         (const char *const[]){pg_ctl, "-D", data, "-l", slog, "-w",
                                                               "-t", "30", "start", NULL},
                                         log) != 0) {
        g_pg_broken = "pg_ctl start failed (logs above)";
        dump_file(log);
        dump_file(slog);
        return;
    }
    g_pg_url = pe_xasprintf("postgresql:///postgres?host=%s&user=postgres", g_pg_dir);
    printf("# PostgreSQL from %s, socket in %s\n", g_pg_bin, g_pg_dir);
}

/* ---- per-case databases ---- */

/* A fresh SQLite file, or a fresh PostgreSQL schema reached through
 * search_path; caller frees. Skips or fails the case when PG is absent. */
static char *case_url(int pg)
{
    static int counter;
    counter++;
    if (!pg) {
        cleanup_free char *dir = pe_xasprintf("%s/case-XXXXXX", g_tmp);
        if (mkdtemp(dir) == NULL)
            TEST_FAIL("mkdtemp: %s", strerror(errno));
        return pe_xasprintf("sqlite:%s/pocketenv.db", dir);
    }
    if (g_pg_broken)
        TEST_FAIL("PostgreSQL: %s", g_pg_broken);
    if (g_pg_url == NULL)
        TEST_SKIP("%s", g_pg_missing);

    /* Straight libpq: opening a pe_store here would migrate the admin
     * database's own schema. */
    cleanup_free char *schema = pe_xasprintf("t_%d_%d", (int)getpid(), counter);
    cleanup_free char *sql = pe_xasprintf("CREATE SCHEMA %s", schema);
    PGconn *conn = PQconnectdb(g_pg_url);
    PGresult *res;
    if (PQstatus(conn) != CONNECTION_OK)
        TEST_FAIL("connect to %s: %s", g_pg_url, PQerrorMessage(conn));
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        TEST_FAIL("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
    return pe_xasprintf("%s%soptions=-csearch_path%%3D%s", g_pg_url,
                        strchr(g_pg_url, '?') ? "&" : "?", schema);
}

static pe_store *open_ok(const char *url)
{
    pe_err err = {0};
    pe_store *s = pe_store_open(url, &err);

    if (s == NULL)
        TEST_FAIL("open %s: %s", url, err.msg);
    return s;
}

static int64_t count_rows(pe_store *s, const char *table)
{
    cleanup_free char *sql = pe_xasprintf("SELECT COUNT(*) FROM %s", table);
    pe__sql_res r = {0};
    pe_err err = {0};
    int64_t n;

    if (pe__store_query(s, sql, NULL, 0, &r, &err) < 0)
        TEST_FAIL("%s: %s", sql, err.msg);
    n = pe__sql_int(&r, 0, 0);
    pe__sql_res_clear(&r);
    return n;
}

static void exec_ok(pe_store *s, const char *sql, const pe__sql_arg *args, size_t n)
{
    pe_err err = {0};

    if (pe__store_query(s, sql, args, n, NULL, &err) < 0)
        TEST_FAIL("%s: %s", sql, err.msg);
}

static void add_user(pe_store *s, const char *did, const char *handle)
{
    pe_err err = {0};
    pe_store_user u = {.did = did, .handle = handle};

    if (pe_store_user_upsert(s, &u, &err) < 0)
        TEST_FAIL("upsert %s: %s", did, err.msg);
}

/* Insert a sandbox named name for owner; returns its id (caller frees). */
static char *add_sandbox(pe_store *s, const char *owner, const char *name, int64_t created)
{
    pe_err err = {0};
    char *id = pe_store_new_id("sbx_");
    pe_store_sandbox sb = {
        .id = id, .owner_did = owner, .name = name, .base = "openclaw", .created_at = created};

    if (pe_store_sandbox_insert(s, &sb, &err) < 0)
        TEST_FAIL("insert %s: %s", name, err.msg);
    return id;
}

#define BOTH(name)                                                                                 \
    static void scenario_##name(const char *url);                                                  \
    TEST_CASE(sqlite_##name)                                                                       \
    {                                                                                              \
        cleanup_free char *url = case_url(0);                                                      \
        scenario_##name(url);                                                                      \
    }                                                                                              \
    TEST_CASE(pg_##name)                                                                           \
    {                                                                                              \
        cleanup_free char *url = case_url(1);                                                      \
        scenario_##name(url);                                                                      \
    }                                                                                              \
    static void scenario_##name(const char *url)

/* ---- scenarios ---- */

BOTH(migrations)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    int latest = pe_store_schema_latest();

    ASSERT(latest >= 1);
    ASSERT_EQ_INT(pe_store_schema_version(s, &err), latest);
    ASSERT_EQ_INT(count_rows(s, "schema_migrations"), latest);
    ASSERT_EQ_STR(pe_store_backend(s), strncmp(url, "sqlite:", 7) == 0 ? "sqlite" : "postgres");
    add_user(s, "did:key:z1", "one");
    pe_store_close(s);

    /* Re-open: nothing applied again, data kept. */
    s = open_ok(url);
    ASSERT_EQ_INT(pe_store_schema_version(s, &err), latest);
    ASSERT_EQ_INT(count_rows(s, "schema_migrations"), latest);
    ASSERT_EQ_INT(count_rows(s, "users"), 1);
    pe_store_close(s);
}

/* Migration 4 on a store of version 3: rows made under the placeholder
 * provider "local" report upstream's default name and run locally. */
BOTH(migration_provider_names)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_sandbox sb = {0};
    cleanup_free char *old = NULL, *asked = NULL;

    add_user(s, "did:key:zA", "a");
    old = add_sandbox(s, "did:key:zA", "old", 0);
    asked = add_sandbox(s, "did:key:zA", "asked", 0);
    /* Back to version 3, as a daemon before it left them. */
    exec_ok(s, "UPDATE sandboxes SET provider = 'local' WHERE id = $1",
            (pe__sql_arg[]){SQL_TEXT(old)}, 1);
    exec_ok(s, "UPDATE sandboxes SET provider = 'e2b' WHERE id = $1",
            (pe__sql_arg[]){SQL_TEXT(asked)}, 1);
    exec_ok(s, "ALTER TABLE sandboxes DROP COLUMN backend", NULL, 0);
    exec_ok(s, "DROP TABLE snapshots", NULL, 0);                 /* migration 5's */
    exec_ok(s, "DROP TABLE atproto_records", NULL, 0);           /* migration 6's */
    exec_ok(s, "DROP TABLE nodes", NULL, 0);                     /* migration 7's */
    exec_ok(s, "DROP TABLE idle_policies", NULL, 0);             /* migration 8's */
    exec_ok(s, "DROP TABLE snapshot_deletions", NULL, 0);        /* migration 9's */
    exec_ok(s, "ALTER TABLE volumes DROP COLUMN node", NULL, 0); /* migration 11's */
    exec_ok(s, "DROP TABLE e2b_sandboxes", NULL, 0);             /* migration 13's */
    /* migration 14's */
    exec_ok(s, "ALTER TABLE sandboxes DROP COLUMN paused", NULL, 0);
    exec_ok(s, "ALTER TABLE sandboxes DROP COLUMN resumed_by", NULL, 0);
    exec_ok(s, "ALTER TABLE sandboxes DROP COLUMN resumed_at", NULL, 0);
    exec_ok(s, "ALTER TABLE sandboxes DROP COLUMN node", NULL, 0);
    exec_ok(s, "DELETE FROM schema_migrations WHERE version >= 4", NULL, 0);
    pe_store_close(s);

    s = open_ok(url);
    ASSERT_EQ_INT(pe_store_schema_version(s, &err), pe_store_schema_latest());
    ASSERT_EQ_INT(pe_store_sandbox_get(s, old, &sb, &err), 0);
    ASSERT_EQ_STR(sb.provider, "cloudflare");
    ASSERT_EQ_STR(sb.backend, "local");
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, asked, &sb, &err), 0);
    ASSERT_EQ_STR(sb.provider, "e2b");
    ASSERT_EQ_STR(sb.backend, "local");
    pe_store_sandbox_clear(&sb);
    pe_store_close(s);
}

BOTH(concurrent_open)
{
    enum { N = 6 };
    pid_t pids[N];
    int go[2];
    pe_store *s;

    ASSERT_EQ_INT(pipe2(go, O_CLOEXEC), 0);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        ASSERT(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            pe_err err = {0};
            close(go[1]);
            if (read(go[0], &c, 1) < 0) /* returns 0 when the parent closes: all start */
                _exit(3);
            pe_store *cs = pe_store_open(url, &err);
            if (cs == NULL) {
                fprintf(stderr, "  child %d: %s\n", i, err.msg);
                _exit(1);
            }
            pe_store_close(cs);
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < N; i++) {
        int status = 0;
        ASSERT_EQ_INT(waitpid(pids[i], &status, 0), pids[i]);
        ASSERT(WIFEXITED(status));
        ASSERT_EQ_INT(WEXITSTATUS(status), 0);
    }
    s = open_ok(url);
    ASSERT_EQ_INT(count_rows(s, "schema_migrations"), pe_store_schema_latest());
    pe_store_close(s);
}

/* pe_store_user_revocations' callback: "did=ms;" appended to ud. */
static void note_revocation(const char *did, int64_t valid_after, void *ud)
{
    char *out = ud;

    snprintf(out + strlen(out), 256 - strlen(out), "%s=%lld;", did, (long long)valid_after);
}

BOTH(users)
{
    char revoked[256];
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_user u = {0};
    pe_store_user in = {
        .did = "did:key:zAlice", .handle = "alice.test", .avatar = "https://a/x.png"};

    ASSERT_EQ_INT(pe_store_user_upsert(s, &in, &err), 0);
    ASSERT_EQ_INT(pe_store_user_get(s, "did:key:zAlice", &u, &err), 0);
    ASSERT_EQ_STR(u.handle, "alice.test");
    ASSERT(u.display_name == NULL);
    ASSERT_EQ_STR(u.avatar, "https://a/x.png");
    ASSERT(u.created_at > 1600000000000LL);
    ASSERT_EQ_INT(u.tokens_valid_after, 0);
    int64_t created = u.created_at;
    pe_store_user_clear(&u);

    in.handle = "alice2.test";
    in.display_name = "Alice";
    in.created_at = 5; /* ignored on update */
    ASSERT_EQ_INT(pe_store_user_upsert(s, &in, &err), 0);
    ASSERT_EQ_INT(pe_store_user_get(s, "did:key:zAlice", &u, &err), 0);
    ASSERT_EQ_STR(u.handle, "alice2.test");
    ASSERT_EQ_STR(u.display_name, "Alice");
    ASSERT_EQ_INT(u.created_at, created);
    pe_store_user_clear(&u);

    ASSERT_EQ_INT(pe_store_user_revoke_tokens(s, "did:key:zAlice", 12345, &err), 0);
    ASSERT_EQ_INT(pe_store_user_get(s, "did:key:zAlice", &u, &err), 0);
    ASSERT_EQ_INT(u.tokens_valid_after, 12345);
    pe_store_user_clear(&u);
    revoked[0] = '\0';
    ASSERT_EQ_INT(pe_store_user_revocations(s, note_revocation, revoked, &err), 0);
    ASSERT_EQ_STR(revoked, "did:key:zAlice=12345;");

    ASSERT_EQ_INT(pe_store_user_get(s, "did:key:zNobody", &u, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_user_revoke_tokens(s, "did:key:zNobody", 1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(count_rows(s, "users"), 1);
    pe_store_close(s);
}

BOTH(sandbox_crud)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_sandbox sb = {0}, *list = NULL;
    size_t n = 0;
    int64_t total = -1;
    char *ids[5];

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof(name), "box-%d", i);
        ids[i] = add_sandbox(s, "did:key:zA", name, 1000 + i);
    }
    free(add_sandbox(s, "did:key:zB", "other", 2000));

    ASSERT_EQ_INT(pe_store_sandbox_get(s, ids[2], &sb, &err), 0);
    ASSERT_EQ_STR(sb.id, ids[2]);
    ASSERT_EQ_STR(sb.name, "box-2");
    ASSERT_EQ_STR(sb.owner_did, "did:key:zA");
    ASSERT_EQ_STR(sb.base, "openclaw");
    ASSERT_EQ_STR(sb.provider, "cloudflare"); /* upstream's default name */
    ASSERT_EQ_STR(sb.backend, "local");
    ASSERT_EQ_INT(sb.status, PE_STORE_INITIALIZING);
    ASSERT_EQ_INT(sb.created_at, 1002);
    ASSERT_EQ_INT(sb.started_at, 0);
    ASSERT_EQ_INT(sb.vcpus, 0);
    ASSERT(sb.description == NULL);
    pe_store_sandbox_clear(&sb);

    ASSERT_EQ_INT(pe_store_sandbox_get_by_name(s, "did:key:zA", "box-4", &sb, &err), 0);
    ASSERT_EQ_STR(sb.id, ids[4]);
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_get_by_name(s, "did:key:zB", "box-4", &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    /* Newest first, pages of 2: 4 3 | 2 1 | 0. */
    ASSERT_EQ_INT(pe_store_sandbox_list(s, "did:key:zA", 2, 0, &list, &n, &total, &err), 0);
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_INT(total, 5);
    ASSERT_EQ_STR(list[0].id, ids[4]);
    ASSERT_EQ_STR(list[1].id, ids[3]);
    pe_store_sandbox_list_free(list, n);
    ASSERT_EQ_INT(pe_store_sandbox_list(s, "did:key:zA", 2, 4, &list, &n, &total, &err), 0);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_INT(total, 5);
    ASSERT_EQ_STR(list[0].id, ids[0]);
    pe_store_sandbox_list_free(list, n);
    ASSERT_EQ_INT(pe_store_sandbox_list(s, "did:key:zA", 2, 10, &list, &n, &total, &err), 0);
    ASSERT_EQ_INT(n, 0);
    ASSERT_EQ_INT(total, 5);
    pe_store_sandbox_list_free(list, n);
    /* Every owner, for reconciliation. */
    ASSERT_EQ_INT(pe_store_sandbox_list(s, NULL, 100, 0, &list, &n, &total, &err), 0);
    ASSERT_EQ_INT(n, 6);
    ASSERT_EQ_INT(total, 6);
    ASSERT_EQ_STR(list[0].name, "other");
    pe_store_sandbox_list_free(list, n);
    ASSERT_EQ_INT(pe_store_sandbox_list(s, "did:key:zA", 0, 0, &list, &n, &total, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);

    /* Editable fields. */
    ASSERT_EQ_INT(pe_store_sandbox_get(s, ids[0], &sb, &err), 0);
    pe_store_sandbox upd = sb;
    upd.description = "described";
    upd.name = "renamed";
    upd.vcpus = 2;
    upd.memory = 4;
    upd.disk = 10;
    upd.keep_alive = 1;
    upd.idle_timeout = 600;
    ASSERT_EQ_INT(pe_store_sandbox_update(s, &upd, &err), 0);
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_get_by_name(s, "did:key:zA", "renamed", &sb, &err), 0);
    ASSERT_EQ_STR(sb.description, "described");
    ASSERT_EQ_INT(sb.vcpus, 2);
    ASSERT_EQ_INT(sb.memory, 4);
    ASSERT_EQ_INT(sb.disk, 10);
    ASSERT_EQ_INT(sb.keep_alive, 1);
    ASSERT_EQ_INT(sb.idle_timeout, 600);
    ASSERT_EQ_INT(sb.created_at, 1000);
    pe_store_sandbox_clear(&sb);

    ASSERT_EQ_INT(pe_store_sandbox_delete(s, ids[1], &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, ids[1], &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(count_rows(s, "sandboxes"), 5);
    for (int i = 0; i < 5; i++)
        free(ids[i]);
    pe_store_close(s);
}

BOTH(duplicate_name)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_sandbox sb = {.id = "sbx_dup", .owner_did = "did:key:zA", .name = "same"};

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    free(add_sandbox(s, "did:key:zA", "same", 0));
    ASSERT_EQ_INT(pe_store_sandbox_insert(s, &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_CONTAINS(err.msg, "already taken");
    /* Another owner may use the name. */
    free(add_sandbox(s, "did:key:zB", "same", 0));
    /* Duplicate id is EEXIST too. */
    sb.owner_did = "did:key:zB";
    sb.name = "fresh";
    ASSERT_EQ_INT(pe_store_sandbox_insert(s, &sb, &err), 0);
    sb.name = "fresher";
    ASSERT_EQ_INT(pe_store_sandbox_insert(s, &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    /* Renaming onto a taken name. */
    sb.name = "same";
    ASSERT_EQ_INT(pe_store_sandbox_update(s, &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    /* Unknown owner. */
    sb.id = "sbx_orphan";
    sb.owner_did = "did:key:zNobody";
    ASSERT_EQ_INT(pe_store_sandbox_insert(s, &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(count_rows(s, "sandboxes"), 3);
    pe_store_close(s);
}

/* One notification within 5 s (they come at a change's commit). */
struct heard {
    char channel[64];
    char payload[64];
    int n;
};

static void on_heard(const char *channel, const char *payload, void *ud)
{
    struct heard *h = ud;

    if (h->n++ == 0) { /* the first of what one read brought */
        snprintf(h->channel, sizeof(h->channel), "%s", channel);
        snprintf(h->payload, sizeof(h->payload), "%s", payload);
    }
}

/* Read until something arrives; returns pe_store_listen_read's last. */
static int hear(pe_store_listener *l, struct heard *h)
{
    struct pollfd p = {.fd = pe_store_listen_fd(l), .events = POLLIN};
    uint64_t until = pe_monotonic_ns() + 5000000000ull;
    pe_err err = {0};
    int r = 0;

    memset(h, 0, sizeof(*h));
    while (h->n == 0 && pe_monotonic_ns() < until) {
        if (poll(&p, 1, 100) < 0)
            TEST_FAIL("poll: %s", strerror(errno));
        if ((r = pe_store_listen_read(l, on_heard, h, &err)) < 0)
            return r;
    }
    return r;
}

static void expect_heard(pe_store_listener *l, const char *channel, const char *payload)
{
    struct heard h;

    ASSERT(hear(l, &h) > 0);
    ASSERT_EQ_INT(h.n, 1);
    ASSERT_EQ_STR(h.channel, channel);
    ASSERT_EQ_STR(h.payload, payload);
}

/* Notifications (migration 12's triggers): what one node changes that
 * another must hear at once (a sandbox, a node, a user's revoked tokens),
 * ids only; none for a lease renewal. A
 * listener whose backend is ended says so. SQLite: none to hear. */
BOTH(listen)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_listener *l = pe_store_listen_open(url, "pocketenv-listen/unit", &err);
    pe_store_node n = {.id = "nd_one",
                       .name = "one",
                       .address = "http://10.0.0.1:8789",
                       .slots_free = 4,
                       .lease_until = pe_store_now_ms() + 60000};
    cleanup_free char *id = NULL;
    struct heard h;

    if (strncmp(url, "sqlite:", 7) == 0) {
        ASSERT(l == NULL);
        ASSERT_EQ_INT(err.code, PE_EUNSUP);
        pe_store_close(s);
        return;
    }
    ASSERT(l != NULL);
    add_user(s, "did:key:zA", "a");
    id = add_sandbox(s, "did:key:zA", "heard", 0);
    expect_heard(l, PE_STORE_SANDBOXES_CHANNEL, id);
    ASSERT_EQ_INT(pe_store_node_put(s, &n, true, &err), 0); /* a start */
    expect_heard(l, PE_STORE_NODES_CHANNEL, "nd_one");
    /* A renewal is not heard: what comes next is the status change. */
    ASSERT_EQ_INT(pe_store_node_put(s, &n, false, &err), 0);
    ASSERT_EQ_INT(
        pe_store_sandbox_set_status(s, id, PE_STORE_RUNNING, NULL, PE_STORE_INITIALIZING, &err), 0);
    expect_heard(l, PE_STORE_SANDBOXES_CHANNEL, id);
    ASSERT_EQ_INT(pe_store_node_set_draining(s, "one", true, NULL, &err), 0);
    expect_heard(l, PE_STORE_NODES_CHANNEL, "nd_one");
    ASSERT_EQ_INT(pe_store_node_leave(s, "nd_one", &err), 0);
    expect_heard(l, PE_STORE_NODES_CHANNEL, "nd_one");
    ASSERT_EQ_INT(pe_store_sandbox_delete(s, id, &err), 0);
    expect_heard(l, PE_STORE_SANDBOXES_CHANNEL, id);
    ASSERT_EQ_INT(pe_store_user_revoke_tokens(s, "did:key:zA", pe_store_now_ms(), &err), 0);
    expect_heard(l, PE_STORE_USERS_CHANNEL, "did:key:zA");
    /* Its backend ended (a server restart, an admin): a clear error. */
    exec_ok(s,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "datname = current_database() AND application_name = 'pocketenv-listen/unit'",
            NULL, 0);
    ASSERT_EQ_INT(hear(l, &h), -1);
    pe_store_listen_close(l);
    pe_store_close(s);
}

/* Nodes (issue 22): a renewal keeps draining and started_at, a name is
 * one node's, the list comes back by name, placement takes slots. */
BOTH(nodes)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_node n = {.id = "n1",
                       .name = "zeta",
                       .address = "http://10.0.0.1:8789",
                       .version = "0.1.0",
                       .labels = "{\"zone\":\"a\"}",
                       .slots_free = 5,
                       .lease_until = 1000},
                  got = {0}, *list = NULL;
    size_t count = 0;
    char *id = NULL;

    ASSERT_EQ_INT(pe_store_node_put(s, &n, true, &err), 0);
    ASSERT_EQ_INT(pe_store_node_set_draining(s, "zeta", true, &id, &err), 0);
    ASSERT_EQ_STR(id, "n1");
    free(id);
    n.lease_until = 2000;
    n.address = "http://10.0.0.9:8789";
    ASSERT_EQ_INT(pe_store_node_put(s, &n, false, &err), 0);
    ASSERT_EQ_INT(pe_store_node_get(s, "n1", &got, &err), 0);
    ASSERT_EQ_INT(got.draining, 1);
    ASSERT_EQ_INT(got.lease_until, 2000);
    ASSERT_EQ_INT(got.slots_free, 5);
    ASSERT_EQ_STR(got.address, "http://10.0.0.9:8789");
    ASSERT_EQ_STR(got.labels, "{\"zone\":\"a\"}");
    pe_store_node_clear(&got);
    /* Another node may not take the name. */
    n.id = "n2";
    ASSERT_EQ_INT(pe_store_node_put(s, &n, true, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    n.name = "alpha";
    ASSERT_EQ_INT(pe_store_node_put(s, &n, true, &err), 0);
    ASSERT_EQ_INT(pe_store_node_list(s, &list, &count, &err), 0);
    ASSERT_EQ_INT(count, 2);
    ASSERT_EQ_STR(list[0].name, "alpha");
    ASSERT_EQ_INT(list[0].draining, 0);
    pe_store_node_list_free(list, count);
    /* Placement: zeta drains and both it and alpha are down (their lease
     * ended at 2000 ms): only a live node with a free slot is chosen. */
    {
        pe_store_node live = {.id = "n3",
                              .name = "live",
                              .address = "http://10.0.0.3:8789",
                              .labels = "{\"zone\":\"b\"}",
                              .slots_free = 2,
                              .lease_until = pe_store_now_ms() + 60000};
        char *chosen = NULL;

        ASSERT_EQ_INT(pe_store_node_put(s, &live, true, &err), 0);
        ASSERT_EQ_INT(pe_store_node_place(s, NULL, &chosen, &err), 0);
        ASSERT_EQ_STR(chosen, "n3");
        free(chosen);
        ASSERT_EQ_INT(pe_store_node_place(s, "zone=b", &chosen, &err), 0);
        free(chosen);
        /* Its two slots are taken: none is left, with or without label. */
        ASSERT_EQ_INT(pe_store_node_place(s, NULL, &chosen, &err), -1);
        ASSERT_EQ_INT(err.code, PE_ESTATE);
        ASSERT_EQ_INT(pe_store_node_place(s, "zone=a", &chosen, &err), -1);
        ASSERT_EQ_INT(err.code, PE_ESTATE);
        /* A renewal gives the slots back (it runs no sandbox). */
        ASSERT_EQ_INT(pe_store_node_put(s, &live, false, &err), 0);
        ASSERT_EQ_INT(pe_store_node_place(s, "zone=a", &chosen, &err), -1);
        ASSERT_EQ_INT(pe_store_node_place(s, "zone=b", &chosen, &err), 0);
        ASSERT_EQ_STR(chosen, "n3");
        free(chosen);
    }
    /* A name held by a node that is up stays; one of a node that is down
     * can be taken over. */
    ASSERT_EQ_INT(pe_store_node_free_name(s, "live", 5000, &err), 0);
    ASSERT_EQ_INT(pe_store_node_free_name(s, "alpha", 5000, &err), 1);
    ASSERT_EQ_INT(pe_store_node_get(s, "n2", &got, &err), 0);
    ASSERT_EQ_STR(got.name, "alpha~n2");
    pe_store_node_clear(&got);
    ASSERT_EQ_INT(pe_store_node_free_name(s, "alpha", 5000, &err), 0);
    ASSERT_EQ_INT(pe_store_node_set_draining(s, "nosuch", true, NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_node_get(s, "nosuch", &got, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    pe_store_close(s);
}

BOTH(status)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_sandbox sb = {0};
    cleanup_free char *id = NULL;

    add_user(s, "did:key:zA", "a");
    id = add_sandbox(s, "did:key:zA", "box", 0);
    ASSERT_EQ_INT(
        pe_store_sandbox_set_status(s, id, PE_STORE_RUNNING, NULL, PE_STORE_INITIALIZING, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, id, &sb, &err), 0);
    ASSERT_EQ_INT(sb.status, PE_STORE_RUNNING);
    ASSERT(sb.started_at > 0);
    int64_t started = sb.started_at;
    pe_store_sandbox_clear(&sb);

    /* Compare-and-set that loses. */
    ASSERT_EQ_INT(
        pe_store_sandbox_set_status(s, id, PE_STORE_RUNNING, NULL, PE_STORE_STOPPED, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ESTATE);
    ASSERT_CONTAINS(err.msg, "RUNNING");

    ASSERT_EQ_INT(
        pe_store_sandbox_set_status(s, id, PE_STORE_FAILED, "mount overlay: EPERM", -1, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, id, &sb, &err), 0);
    ASSERT_EQ_INT(sb.status, PE_STORE_FAILED);
    ASSERT_EQ_STR(sb.status_reason, "mount overlay: EPERM");
    ASSERT_EQ_INT(sb.started_at, started);
    pe_store_sandbox_clear(&sb);

    ASSERT_EQ_INT(pe_store_sandbox_set_status(s, id, PE_STORE_STOPPED, NULL, -1, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_set_provider(s, id, "daytona", "dt-123", &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, id, &sb, &err), 0);
    ASSERT_EQ_INT(sb.status, PE_STORE_STOPPED);
    ASSERT(sb.status_reason == NULL);
    ASSERT_EQ_STR(sb.provider, "daytona");
    ASSERT_EQ_STR(sb.provider_id, "dt-123");
    ASSERT_EQ_INT(sb.keep_alive, 0);
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_set_keep_alive(s, id, true, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, id, &sb, &err), 0);
    ASSERT_EQ_INT(sb.keep_alive, 1);
    ASSERT_EQ_INT(sb.status, PE_STORE_STOPPED);
    ASSERT_EQ_INT(sb.paused, 0);
    ASSERT(sb.resumed_by == NULL);
    pe_store_sandbox_clear(&sb);

    /* A pause, then a resume saying by what: another node's view of it. */
    ASSERT_EQ_INT(pe_store_sandbox_set_paused(s, id, true, NULL, 0, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, id, &sb, &err), 0);
    ASSERT_EQ_INT(sb.paused, 1);
    ASSERT(sb.resumed_by == NULL);
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_set_paused(s, id, false, "exec", 1234, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_set_paused(s, id, true, NULL, 0, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, id, &sb, &err), 0);
    ASSERT_EQ_INT(sb.paused, 1);
    ASSERT_EQ_STR(sb.resumed_by, "exec"); /* kept by a pause */
    ASSERT_EQ_INT(sb.resumed_at, 1234);
    ASSERT_EQ_INT(sb.status, PE_STORE_STOPPED);
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_set_paused(s, "sbx_none", true, NULL, 0, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    /* A remote sandbox's supervisor: the first node to claim it, once. */
    ASSERT_EQ_INT(pe_store_sandbox_claim_node(s, id, "node-a", &err), 1);
    ASSERT_EQ_INT(pe_store_sandbox_claim_node(s, id, "node-b", &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_claim_node(s, id, "node-a", &err), 1);
    ASSERT_EQ_INT(pe_store_sandbox_get(s, id, &sb, &err), 0);
    ASSERT_EQ_STR(sb.node, "node-a");
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_claim_node(s, "sbx_none", "node-a", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_store_sandbox_set_status(s, id, 42, NULL, -1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    pe_store_close(s);
}

BOTH(not_found)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_sandbox sb = {0};
    pe_store_kv kv = {0};

    ASSERT_EQ_INT(pe_store_sandbox_get(s, "sbx_nope", &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_CONTAINS(err.msg, "sbx_nope");
    ASSERT_EQ_INT(pe_store_sandbox_delete(s, "sbx_nope", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_sandbox_set_status(s, "sbx_nope", PE_STORE_RUNNING, NULL, -1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(
        pe_store_sandbox_set_status(s, "sbx_nope", PE_STORE_RUNNING, NULL, PE_STORE_STOPPED, &err),
        -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_sandbox_set_provider(s, "sbx_nope", "local", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_sandbox_set_keep_alive(s, "sbx_nope", true, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_kv_put(s, PE_STORE_SECRET, "sbx_nope", "K", "v", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_kv_get(s, PE_STORE_SECRET, "sbx_nope", "K", &kv, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_kv_delete(s, PE_STORE_FILE, "sbx_nope", "/x", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(count_rows(s, "secrets"), 0);
    pe_store_close(s);
}

BOTH(kv)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL, *b = NULL;
    pe_store_kv kv = {0}, *list = NULL;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    a = add_sandbox(s, "did:key:zA", "a", 0);
    b = add_sandbox(s, "did:key:zA", "b", 0);
    for (int kind = PE_STORE_VARIABLE; kind <= PE_STORE_FILE; kind++) {
        ASSERT_EQ_INT(pe_store_kv_put(s, kind, a, "ZED", "1", &err), 0);
        ASSERT_EQ_INT(pe_store_kv_put(s, kind, a, "ALPHA", "2", &err), 0);
        ASSERT_EQ_INT(pe_store_kv_put(s, kind, b, "ALPHA", "other", &err), 0);
        ASSERT_EQ_INT(pe_store_kv_get(s, kind, a, "ALPHA", &kv, &err), 0);
        ASSERT_EQ_STR(kv.value, "2");
        ASSERT_EQ_STR(kv.sandbox_id, a);
        cleanup_free char *first_id = pe_xstrdup(kv.id);
        pe_store_kv_clear(&kv);

        /* Overwrite keeps the row (and its id). */
        ASSERT_EQ_INT(pe_store_kv_put(s, kind, a, "ALPHA", "3", &err), 0);
        ASSERT_EQ_INT(pe_store_kv_get(s, kind, a, "ALPHA", &kv, &err), 0);
        ASSERT_EQ_STR(kv.value, "3");
        ASSERT_EQ_STR(kv.id, first_id);
        pe_store_kv_clear(&kv);

        ASSERT_EQ_INT(pe_store_kv_list(s, kind, a, &list, &n, &err), 0);
        ASSERT_EQ_INT(n, 2);
        ASSERT_EQ_STR(list[0].key, "ALPHA");
        ASSERT_EQ_STR(list[1].key, "ZED");
        pe_store_kv_list_free(list, n);

        ASSERT_EQ_INT(pe_store_kv_delete(s, kind, a, "ZED", &err), 0);
        ASSERT_EQ_INT(pe_store_kv_delete(s, kind, a, "ZED", &err), -1);
        ASSERT_EQ_INT(err.code, PE_ENOENT);
        ASSERT_EQ_INT(pe_store_kv_get(s, kind, b, "ALPHA", &kv, &err), 0);
        ASSERT_EQ_STR(kv.value, "other");
        pe_store_kv_clear(&kv);
    }
    ASSERT_EQ_INT(pe_store_kv_put(s, 99, a, "K", "v", &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    pe_store_close(s);
}

/* The API's view of variables, secrets and files: by id, owner-scoped,
 * paged with a total; add never replaces, rename respects uniqueness. */
BOTH(resources)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL, *b = NULL, *c = NULL;
    pe_store_kv kv = {0}, *list = NULL;
    int64_t total = -1;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    a = add_sandbox(s, "did:key:zA", "a", 0);
    b = add_sandbox(s, "did:key:zA", "b", 0);
    c = add_sandbox(s, "did:key:zB", "c", 0);
    for (int kind = PE_STORE_VARIABLE; kind <= PE_STORE_FILE; kind++) {
        cleanup_free char *id1 = NULL, *id2 = NULL, *id3 = NULL, *theirs = NULL;

        ASSERT_EQ_INT(pe_store_res_add(s, kind, a, "K1", "v1", &id1, &err), 0);
        ASSERT_EQ_INT(pe_store_res_add(s, kind, a, "K2", "v2", &id2, &err), 0);
        ASSERT_EQ_INT(pe_store_res_add(s, kind, b, "K1", "b1", &id3, &err), 0);
        ASSERT_EQ_INT(pe_store_res_add(s, kind, c, "K1", "c1", &theirs, &err), 0);
        ASSERT_EQ_INT(pe_store_res_add(s, kind, a, "K1", "again", NULL, &err), -1);
        ASSERT_EQ_INT(err.code, PE_EEXIST);
        ASSERT_EQ_INT(pe_store_res_add(s, kind, "sbx_missing", "K", "v", NULL, &err), -1);
        ASSERT_EQ_INT(err.code, PE_ENOENT);

        ASSERT_EQ_INT(pe_store_res_get(s, kind, "did:key:zA", id1, &kv, &err), 0);
        ASSERT_EQ_STR(kv.key, "K1");
        ASSERT_EQ_STR(kv.value, "v1");
        ASSERT_EQ_STR(kv.sandbox_id, a);
        pe_store_kv_clear(&kv);
        /* Another owner's row is not found, like a missing one. */
        ASSERT_EQ_INT(pe_store_res_get(s, kind, "did:key:zA", theirs, &kv, &err), -1);
        ASSERT_EQ_INT(err.code, PE_ENOENT);
        ASSERT_EQ_INT(pe_store_res_get(s, kind, "did:key:zA", "nope", &kv, &err), -1);
        ASSERT_EQ_INT(err.code, PE_ENOENT);

        if (pe_store_res_list(s, kind, "did:key:zA", a, 1, 1, &list, &n, &total, &err) < 0)
            TEST_FAIL("%s", err.msg);
        ASSERT_EQ_INT(0, 0);
        ASSERT_EQ_INT(total, 2);
        ASSERT_EQ_INT(n, 1);
        ASSERT_EQ_STR(list[0].key, "K2");
        pe_store_kv_list_free(list, n);
        ASSERT_EQ_INT(
            pe_store_res_list(s, kind, "did:key:zA", NULL, 10, 0, &list, &n, &total, &err), 0);
        ASSERT_EQ_INT(total, 3);
        ASSERT_EQ_INT(n, 3);
        pe_store_kv_list_free(list, n);
        ASSERT_EQ_INT(pe_store_res_list(s, kind, "did:key:zB", a, 10, 0, &list, &n, &total, &err),
                      0);
        ASSERT_EQ_INT(total, 0);
        ASSERT_EQ_INT(n, 0);
        pe_store_kv_list_free(list, n);
        ASSERT_EQ_INT(pe_store_res_list(s, kind, "did:key:zA", a, 0, 0, &list, &n, NULL, &err), -1);
        ASSERT_EQ_INT(err.code, PE_EINVAL);

        /* Rename onto a taken key fails and changes nothing. */
        ASSERT_EQ_INT(pe_store_res_update(s, kind, id2, "K1", "x", &err), -1);
        ASSERT_EQ_INT(err.code, PE_EEXIST);
        ASSERT_EQ_INT(pe_store_res_update(s, kind, id2, NULL, "v2b", &err), 0);
        ASSERT_EQ_INT(pe_store_res_update(s, kind, id1, "K0", NULL, &err), 0);
        ASSERT_EQ_INT(pe_store_kv_get(s, kind, a, "K0", &kv, &err), 0);
        ASSERT_EQ_STR(kv.value, "v1");
        pe_store_kv_clear(&kv);
        ASSERT_EQ_INT(pe_store_kv_get(s, kind, a, "K2", &kv, &err), 0);
        ASSERT_EQ_STR(kv.value, "v2b");
        pe_store_kv_clear(&kv);

        int64_t cnt = 0;
        ASSERT_EQ_INT(pe_store_res_count(s, kind, a, &cnt, &err), 0);
        ASSERT_EQ_INT(cnt, 2);
        ASSERT_EQ_INT(pe_store_res_delete(s, kind, id1, &err), 0);
        ASSERT_EQ_INT(pe_store_res_delete(s, kind, id1, &err), -1);
        ASSERT_EQ_INT(err.code, PE_ENOENT);
        ASSERT_EQ_INT(pe_store_res_update(s, kind, id1, "K9", "v", &err), -1);
        ASSERT_EQ_INT(err.code, PE_ENOENT);
        ASSERT_EQ_INT(pe_store_res_count(s, kind, a, &cnt, &err), 0);
        ASSERT_EQ_INT(cnt, 1);
    }
    pe_store_close(s);
}

/* Keys: one per sandbox, a second put replaces it and keeps the row. */
BOTH(keys)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL;
    cleanup_free char *first = NULL;
    pe_store_key k = {0};

    add_user(s, "did:key:zA", "a");
    a = add_sandbox(s, "did:key:zA", "a", 0);
    ASSERT_EQ_INT(pe_store_key_get(s, PE_STORE_SSH_KEY, a, &k, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(
        pe_store_key_put(s, PE_STORE_SSH_KEY, a, "ssh-ed25519 AAA1", "sealed1", "r1", &err), 0);
    ASSERT_EQ_INT(pe_store_key_get(s, PE_STORE_SSH_KEY, a, &k, &err), 0);
    ASSERT_EQ_STR(k.public_key, "ssh-ed25519 AAA1");
    ASSERT_EQ_STR(k.sealed, "sealed1");
    first = pe_xstrdup(k.id);
    pe_store_key_clear(&k);
    ASSERT_EQ_INT(
        pe_store_key_put(s, PE_STORE_SSH_KEY, a, "ssh-ed25519 AAA2", "sealed2", "r2", &err), 0);
    ASSERT_EQ_INT(pe_store_key_get(s, PE_STORE_SSH_KEY, a, &k, &err), 0);
    ASSERT_EQ_STR(k.id, first);
    ASSERT_EQ_STR(k.public_key, "ssh-ed25519 AAA2");
    ASSERT_EQ_STR(k.redacted, "r2");
    pe_store_key_clear(&k);
    ASSERT_EQ_INT(
        pe_store_key_put(s, PE_STORE_TAILSCALE_KEY, a, NULL, "ts", "tskey-auth-***", &err), 0);
    ASSERT_EQ_INT(pe_store_key_get(s, PE_STORE_TAILSCALE_KEY, a, &k, &err), 0);
    ASSERT(k.public_key == NULL);
    ASSERT_EQ_STR(k.sealed, "ts");
    pe_store_key_clear(&k);
    ASSERT_EQ_INT(pe_store_key_put(s, PE_STORE_TAILSCALE_KEY, "sbx_missing", NULL, "x", "y", &err),
                  -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    pe_store_close(s);
}

/* Services: unique names, owner-scoped get, ports that collide. */
BOTH(services)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL, *b = NULL, *id1 = NULL, *id2 = NULL;
    pe_store_service v = {0}, *list = NULL;
    int64_t ports[] = {8080, 9090}, *got = NULL, total = 0;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    a = add_sandbox(s, "did:key:zA", "a", 0);
    b = add_sandbox(s, "did:key:zB", "b", 0);
    ASSERT_EQ_INT(pe_store_service_add(s, a, "web", "serve", NULL, PE_STORE_RUNNING, &id1, &err),
                  0);
    ASSERT_EQ_INT(pe_store_service_add(s, a, "web", "x", NULL, PE_STORE_RUNNING, NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_EQ_INT(pe_store_service_add(s, a, "db", "x", "d", PE_STORE_STOPPED, &id2, &err), 0);
    ASSERT_EQ_INT(pe_store_service_get(s, "did:key:zB", id1, &v, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_service_get(s, "did:key:zA", id1, &v, &err), 0);
    ASSERT_EQ_STR(v.command, "serve");
    ASSERT_EQ_INT(v.status, PE_STORE_RUNNING);
    pe_store_service_clear(&v);
    ASSERT_EQ_INT(pe_store_service_list(s, a, 10, 0, &list, &n, &total, &err), 0);
    ASSERT_EQ_INT(total, 2);
    ASSERT_EQ_STR(list[0].name, "db");
    pe_store_service_list_free(list, n);
    ASSERT_EQ_INT(pe_store_service_set_ports(s, a, id1, "web", ports, 2, &err), 0);
    ASSERT_EQ_INT(pe_store_service_set_ports(s, a, id2, "db", ports + 1, 1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_EQ_INT(pe_store_service_ports(s, id1, &got, &n, &err), 0);
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_INT(got[1], 9090);
    free(got);
    ASSERT_EQ_INT(pe_store_service_update(s, id1, "db", "x", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_EQ_INT(pe_store_service_set_status(s, id1, PE_STORE_STOPPED, &err), 0);
    ASSERT_EQ_INT(pe_store_service_delete(s, id1, &err), 0);
    ASSERT_EQ_INT(pe_store_service_ports(s, id1, &got, &n, &err), 0);
    ASSERT_EQ_INT(n, 0); /* its ports went with it */
    free(got);
    ASSERT_EQ_INT(pe_store_service_add(s, b, "web", "x", NULL, PE_STORE_RUNNING, NULL, &err), 0);
    pe_store_close(s);
}

/* Provider credentials: per (sandbox, owner, provider), replaced on put. */
BOTH(credentials)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL;
    pe_store_cred *list = NULL;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    a = add_sandbox(s, "did:key:zA", "a", 0);
    ASSERT_EQ_INT(pe_store_cred_put(s, a, "did:key:zA", "daytona", "{}", "{\"a\":1}", &err), 0);
    ASSERT_EQ_INT(pe_store_cred_put(s, a, "did:key:zA", "daytona", "{}", "{\"a\":2}", &err), 0);
    ASSERT_EQ_INT(pe_store_cred_put(s, a, "did:key:zA", "e2b", "{}", "{}", &err), 0);
    ASSERT_EQ_INT(pe_store_cred_list(s, a, "did:key:zA", &list, &n, &err), 0);
    ASSERT_EQ_INT(n, 2);
    pe_store_cred_list_free(list, n);
    ASSERT_EQ_INT(pe_store_cred_list(s, a, "did:key:zB", &list, &n, &err), 0);
    ASSERT_EQ_INT(n, 0);
    pe_store_cred_list_free(list, n);
    ASSERT_EQ_INT(pe_store_cred_delete_all(s, a, "did:key:zA", &err), 0);
    ASSERT_EQ_INT(pe_store_cred_list(s, a, "did:key:zA", &list, &n, &err), 0);
    ASSERT_EQ_INT(n, 0);
    pe_store_cred_list_free(list, n);
    pe_store_close(s);
}

/* Volumes belong to users; mounts to sandboxes. Deleting a sandbox drops
 * its mounts and keeps the volume. */
BOTH(volumes)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL, *b = NULL, *v1 = NULL, *v2 = NULL, *theirs = NULL;
    pe_store_volume v = {0}, *vl = NULL;
    pe_store_mount *ml = NULL;
    int64_t total = -1;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    a = add_sandbox(s, "did:key:zA", "a", 0);
    b = add_sandbox(s, "did:key:zA", "b", 0);
    ASSERT_EQ_INT(pe_store_volume_add(s, "did:key:zA", "data", &v1, &err), 0);
    ASSERT_EQ_INT(pe_store_volume_add(s, "did:key:zA", "cache", &v2, &err), 0);
    ASSERT_EQ_INT(pe_store_volume_add(s, "did:key:zB", "data", &theirs, &err), 0);
    ASSERT_EQ_INT(pe_store_volume_add(s, "did:key:zA", "data", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_EQ_INT(pe_store_volume_add(s, "did:key:zNobody", "x", NULL, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_store_volume_get(s, "did:key:zA", v1, &v, &err), 0);
    ASSERT_EQ_STR(v.name, "data");
    ASSERT_EQ_INT(v.node == NULL, 1); /* none recorded: a single daemon's */
    pe_store_volume_clear(&v);
    ASSERT_EQ_INT(pe_store_volume_set_node(s, v1, "n1", &err), 0);
    ASSERT_EQ_INT(pe_store_volume_get(s, "did:key:zA", v1, &v, &err), 0);
    ASSERT_EQ_STR(v.node, "n1");
    pe_store_volume_clear(&v);
    ASSERT_EQ_INT(pe_store_volume_get(s, "did:key:zA", theirs, &v, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_volume_get_by_name(s, "did:key:zB", "data", &v, &err), 0);
    ASSERT_EQ_STR(v.id, theirs);
    pe_store_volume_clear(&v);
    ASSERT_EQ_INT(pe_store_volume_list(s, "did:key:zA", 1, 1, &vl, &n, &total, &err), 0);
    ASSERT_EQ_INT(total, 2);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_STR(vl[0].name, "data");
    pe_store_volume_list_free(vl, n);

    ASSERT_EQ_INT(pe_store_mount_put(s, a, v1, "/data", 0, &err), 0);
    ASSERT_EQ_INT(pe_store_mount_put(s, a, v2, "/data", 0, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_EQ_INT(pe_store_mount_put(s, a, v2, "/cache", 1, &err), 0);
    ASSERT_EQ_INT(pe_store_mount_put(s, a, v1, "/moved", 0, &err), 0); /* replaces /data */
    ASSERT_EQ_INT(pe_store_mount_put(s, b, v1, "/data", 1, &err), 0);
    ASSERT_EQ_INT(pe_store_mount_list_sandbox(s, a, 10, 0, &ml, &n, &total, &err), 0);
    ASSERT_EQ_INT(total, 2);
    ASSERT_EQ_STR(ml[0].path, "/cache");
    ASSERT_EQ_INT(ml[0].read_only, 1);
    ASSERT_EQ_STR(ml[0].volume_name, "cache");
    ASSERT_EQ_STR(ml[1].path, "/moved");
    ASSERT_EQ_INT(ml[1].sandbox_status, PE_STORE_INITIALIZING);
    pe_store_mount_list_free(ml, n);
    ASSERT_EQ_INT(pe_store_mount_list_volume(s, v1, &ml, &n, &err), 0);
    ASSERT_EQ_INT(n, 2);
    pe_store_mount_list_free(ml, n);

    /* A sandbox's deletion drops its mounts, not the volume. */
    ASSERT_EQ_INT(pe_store_sandbox_delete(s, b, &err), 0);
    ASSERT_EQ_INT(pe_store_mount_list_volume(s, v1, &ml, &n, &err), 0);
    ASSERT_EQ_INT(n, 1);
    pe_store_mount_list_free(ml, n);
    ASSERT_EQ_INT(pe_store_volume_get(s, "did:key:zA", v1, &v, &err), 0);
    pe_store_volume_clear(&v);

    ASSERT_EQ_INT(pe_store_volume_rename(s, v2, "data", &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    ASSERT_EQ_INT(pe_store_volume_rename(s, v2, "cache2", &err), 0);
    ASSERT_EQ_INT(pe_store_mount_delete(s, a, v2, &err), 0);
    ASSERT_EQ_INT(pe_store_mount_delete(s, a, v2, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_volume_delete(s, v1, &err), 0);
    ASSERT_EQ_INT(pe_store_mount_list_sandbox(s, a, 10, 0, &ml, &n, &total, &err), 0);
    ASSERT_EQ_INT(total, 0);
    pe_store_mount_list_free(ml, n);
    ASSERT_EQ_INT(pe_store_volume_delete(s, v1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    pe_store_close(s);
}

/* Every table with a sandbox_id column must be in pe__store_sandbox_children
 * (so the cascade test below covers it). */
static void check_children_listed(pe_store *s)
{
    pe__sql_res r = {0};
    pe_err err = {0};
    const char *sql = strcmp(pe_store_backend(s), "sqlite") == 0
                          ? "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p "
                            "WHERE m.type = 'table' AND p.name = 'sandbox_id'"
                          : "SELECT table_name FROM information_schema.columns "
                            "WHERE table_schema = current_schema() AND column_name = 'sandbox_id'";
    size_t listed = 0;

    if (pe__store_query(s, sql, NULL, 0, &r, &err) < 0)
        TEST_FAIL("%s", err.msg);
    for (const char *const *t = pe__store_sandbox_children; *t; t++)
        listed++;
    for (size_t i = 0; i < r.nrows; i++) {
        int found = 0;
        for (const char *const *t = pe__store_sandbox_children; *t; t++)
            found |= strcmp(*t, pe__sql_cell(&r, i, 0)) == 0;
        if (!found)
            TEST_FAIL("table %s has sandbox_id but is not in pe__store_sandbox_children",
                      pe__sql_cell(&r, i, 0));
    }
    ASSERT_EQ_INT(r.nrows, listed);
    pe__sql_res_clear(&r);
}

BOTH(delete_cascades)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *id = NULL, *keep = NULL;
    int64_t now = pe_store_now_ms();

    check_children_listed(s);
    add_user(s, "did:key:zA", "a");
    id = add_sandbox(s, "did:key:zA", "doomed", 0);
    keep = add_sandbox(s, "did:key:zA", "kept", 0);
    for (int pass = 0; pass < 2; pass++) {
        const char *sbx = pass ? keep : id;
        pe__sql_arg a[] = {SQL_TEXT(sbx), SQL_INT(now), SQL_INT(pass)};

        ASSERT_EQ_INT(pe_store_kv_put(s, PE_STORE_VARIABLE, sbx, "V", "v", &err), 0);
        ASSERT_EQ_INT(pe_store_kv_put(s, PE_STORE_SECRET, sbx, "S", "sealed", &err), 0);
        ASSERT_EQ_INT(pe_store_kv_put(s, PE_STORE_FILE, sbx, "/f", "sealed", &err), 0);
        exec_ok(s,
                "INSERT INTO volumes (id, owner_did, name, created_at, updated_at) "
                "VALUES ('vol_' || $1, 'did:key:zA', 'data' || $1, $2, $2)",
                a, 2);
        exec_ok(s,
                "INSERT INTO sandbox_volumes (id, sandbox_id, volume_id, path, created_at, "
                "updated_at) VALUES ('sv_' || $1, $1, 'vol_' || $1, '/data', $2, $2)",
                a, 2);
        exec_ok(s,
                "INSERT INTO services (id, sandbox_id, name, command, created_at, updated_at) "
                "VALUES ('svc_' || $1, $1, 'web', 'python -m http.server', $2, $2)",
                a, 2);
        exec_ok(s,
                "INSERT INTO sandbox_ports (id, sandbox_id, port, service_id, created_at, "
                "updated_at) VALUES ('port_' || $1, $1, 8000, 'svc_' || $1, $2, $2)",
                a, 2);
        exec_ok(s,
                "INSERT INTO ssh_keys (id, sandbox_id, public_key, private_key, created_at, "
                "updated_at) VALUES ('ssh_' || $1, $1, 'ssh-ed25519 AAAA', 'sealed', $2, $2)",
                a, 2);
        exec_ok(s,
                "INSERT INTO tailscale_keys (id, sandbox_id, auth_key, redacted, created_at, "
                "updated_at) VALUES ('ts_' || $1, $1, 'sealed', 'tskey-****', $2, $2)",
                a, 2);
        exec_ok(s,
                "INSERT INTO backups (id, sandbox_id, backup_id, directory, created_at) "
                "VALUES ('bak_' || $1, $1, 'b1', '/root', $2)",
                a, 2);
        exec_ok(s,
                "INSERT INTO provider_credentials (id, sandbox_id, owner_did, provider, sealed, "
                "redacted, created_at, updated_at) VALUES ('pc_' || $1, $1, 'did:key:zA', "
                "'daytona', 'sealed', '{}', $2, $2)",
                a, 2);
        cleanup_free char *tag = NULL;
        ASSERT_EQ_INT(pe_store_preview_tag(s, sbx, &tag, &err), 0);
        ASSERT_EQ_INT(pe_store_idle_put(s, sbx, PE_IDLE_PAUSE, 60, &err), 0);
        ASSERT_EQ_INT(pe_store_e2b_put(s, sbx, "{}", 60, &err), 0);
    }
    for (const char *const *t = pe__store_sandbox_children; *t; t++)
        if (count_rows(s, *t) != 2)
            TEST_FAIL("%s: expected one row per sandbox before delete, got %lld", *t,
                      (long long)count_rows(s, *t));

    ASSERT_EQ_INT(pe_store_sandbox_delete(s, id, &err), 0);
    for (const char *const *t = pe__store_sandbox_children; *t; t++) {
        cleanup_free char *sql = pe_xasprintf("SELECT COUNT(*) FROM %s WHERE sandbox_id = $1", *t);
        pe__sql_res r = {0};

        ASSERT_EQ_INT(pe__store_query(s, sql, (pe__sql_arg[]){SQL_TEXT(id)}, 1, &r, &err), 0);
        if (pe__sql_int(&r, 0, 0) != 0)
            TEST_FAIL("%s keeps %lld rows of the deleted sandbox", *t,
                      (long long)pe__sql_int(&r, 0, 0));
        pe__sql_res_clear(&r);
        /* The other sandbox's rows are untouched. */
        ASSERT_EQ_INT(count_rows(s, *t), 1);
    }
    /* Volumes belong to the user, not the sandbox. */
    ASSERT_EQ_INT(count_rows(s, "volumes"), 2);
    ASSERT_EQ_INT(pe_store_sandbox_delete(s, id, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    pe_store_close(s);
}

static char *big_value(void)
{
    enum { LEN = 10 * 1024 };
    char *v = pe_xmalloc(LEN + 8);
    size_t i = 0;

    /* Printable ASCII, quotes, and a 3-byte UTF-8 character, repeated. */
    while (i + 3 < LEN) {
        if (i % 97 == 0) {
            memcpy(v + i, "\xe2\x9c\x93", 3); /* U+2713 */
            i += 3;
        } else {
            v[i] = (char)(' ' + (i % 95));
            i++;
        }
    }
    v[i] = '\0';
    return v;
}

BOTH(hostile_strings)
{
    static const char *const hostile[] = {
        "'; DROP TABLE sandboxes; --",
        "\"double\" 'single' `back` ''''",
        "$1 ?1 ?2 :name @x %s %n \\ \\\\ \\x00 E'\\n'",
        "tab\tnewline\ncr\r bell\a esc\x1b del\x7f",
        "\xc3\xbcnic\xc3\xb8"
        "de \xe2\x9c\x93 \xf0\x9f\x98\x80 \xf0\x9d\x84\x9e \xe4\xb8\xad",
        "\x01\x02\x03\x1f",
        " leading and trailing spaces ",
    };
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *big = big_value();
    pe_store_sandbox sb = {0};
    pe_store_user u = {0};
    pe_store_kv kv = {0};

    ASSERT(strlen(big) >= 10000);
    for (size_t i = 0; i < PE_ARRAY_LEN(hostile) + 1; i++) {
        const char *h = i < PE_ARRAY_LEN(hostile) ? hostile[i] : big;
        cleanup_free char *did = pe_xasprintf("did:key:z%zu", i);
        cleanup_free char *sid = pe_store_new_id("sbx_");
        pe_store_user in = {.did = did, .handle = h, .display_name = h};
        pe_store_sandbox sin = {.id = sid,
                                .owner_did = did,
                                .name = h,
                                .description = h,
                                .topics = h,
                                .status_reason = h};

        ASSERT_EQ_INT(pe_store_user_upsert(s, &in, &err), 0);
        ASSERT_EQ_INT(pe_store_user_get(s, did, &u, &err), 0);
        ASSERT_EQ_STR(u.handle, h);
        ASSERT_EQ_STR(u.display_name, h);
        pe_store_user_clear(&u);

        ASSERT_EQ_INT(pe_store_sandbox_insert(s, &sin, &err), 0);
        ASSERT_EQ_INT(pe_store_sandbox_get_by_name(s, did, h, &sb, &err), 0);
        ASSERT_EQ_STR(sb.id, sin.id);
        ASSERT_EQ_STR(sb.name, h);
        ASSERT_EQ_STR(sb.description, h);
        ASSERT_EQ_STR(sb.topics, h);
        ASSERT_EQ_STR(sb.status_reason, h);
        pe_store_sandbox_clear(&sb);

        ASSERT_EQ_INT(pe_store_kv_put(s, PE_STORE_SECRET, sin.id, h, h, &err), 0);
        ASSERT_EQ_INT(pe_store_kv_get(s, PE_STORE_SECRET, sin.id, h, &kv, &err), 0);
        ASSERT_EQ_STR(kv.key, h);
        ASSERT_EQ_STR(kv.value, h);
        pe_store_kv_clear(&kv);
    }
    /* The injection attempts did nothing. */
    ASSERT_EQ_INT(count_rows(s, "sandboxes"), PE_ARRAY_LEN(hostile) + 1);
    ASSERT_EQ_INT(count_rows(s, "secrets"), PE_ARRAY_LEN(hostile) + 1);
    pe_store_close(s);
}

BOTH(two_handles)
{
    pe_err err = {0};
    pe_store *a = open_ok(url), *b = open_ok(url);
    pe_store_sandbox sb = {0};
    pe_store_kv kv = {0};
    cleanup_free char *id = NULL;

    if (strcmp(pe_store_backend(a), "sqlite") == 0) {
        pe__sql_res r = {0};
        ASSERT_EQ_INT(pe__store_query(a, "PRAGMA journal_mode", NULL, 0, &r, &err), 0);
        ASSERT_EQ_STR(pe__sql_cell(&r, 0, 0), "wal");
        pe__sql_res_clear(&r);
        ASSERT_EQ_INT(pe__store_query(a, "PRAGMA foreign_keys", NULL, 0, &r, &err), 0);
        ASSERT_EQ_STR(pe__sql_cell(&r, 0, 0), "1");
        pe__sql_res_clear(&r);
    }
    add_user(a, "did:key:zA", "a");
    id = add_sandbox(a, "did:key:zA", "shared", 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(b, id, &sb, &err), 0);
    ASSERT_EQ_STR(sb.name, "shared");
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_sandbox_set_status(b, id, PE_STORE_RUNNING, NULL, -1, &err), 0);
    ASSERT_EQ_INT(pe_store_kv_put(b, PE_STORE_VARIABLE, id, "K", "from b", &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(a, id, &sb, &err), 0);
    ASSERT_EQ_INT(sb.status, PE_STORE_RUNNING);
    pe_store_sandbox_clear(&sb);
    ASSERT_EQ_INT(pe_store_kv_get(a, PE_STORE_VARIABLE, id, "K", &kv, &err), 0);
    ASSERT_EQ_STR(kv.value, "from b");
    pe_store_kv_clear(&kv);
    ASSERT_EQ_INT(pe_store_sandbox_delete(a, id, &err), 0);
    ASSERT_EQ_INT(pe_store_sandbox_get(b, id, &sb, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    pe_store_close(a);
    pe_store_close(b);
}

/* ---- backend-independent ---- */

TEST_CASE(new_id)
{
    char *prev = NULL;

    for (int i = 0; i < 200; i++) {
        char *id = pe_store_new_id("sbx_");
        ASSERT_EQ_INT(strlen(id), 4 + 22);
        ASSERT(strncmp(id, "sbx_", 4) == 0);
        for (const char *p = id + 4; *p; p++)
            ASSERT((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= 'a' && *p <= 'z'));
        if (prev)
            ASSERT(strcmp(prev, id) != 0);
        free(prev);
        prev = id;
    }
    free(prev);
}

TEST_CASE(open_errors)
{
    pe_err err = {0};
    cleanup_free char *missing = pe_xasprintf("sqlite:%s/no/such/dir/db", g_tmp);
    cleanup_free char *dir = pe_xasprintf("%s/plain-XXXXXX", g_tmp);
    cleanup_free char *plain = NULL;
    struct stat st;
    pe_store *s;

    ASSERT(pe_store_open("mysql://x/y", &err) == NULL);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT(pe_store_open("", &err) == NULL);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT(pe_store_open(missing, &err) == NULL);
    ASSERT_EQ_INT(err.code, PE_ESYS);
    /* Nothing listens there: a clean error, not a hang or a crash. */
    ASSERT(pe_store_open("postgresql:///x?host=/nonexistent-pe-dir&connect_timeout=2", &err) ==
           NULL);
    ASSERT_EQ_INT(err.code, PE_ESYS);

    /* A plain path is SQLite, created private. */
    ASSERT(mkdtemp(dir) != NULL);
    plain = pe_xasprintf("%s/pocketenv.db", dir);
    s = open_ok(plain);
    ASSERT_EQ_STR(pe_store_backend(s), "sqlite");
    pe_store_close(s);
    ASSERT_EQ_INT(stat(plain, &st), 0);
    ASSERT_EQ_INT(st.st_mode & 0777, 0600);
}

/* Backups belong to a sandbox and, through it, to its owner: another
 * user's backup reads as missing; expiry lists only rows past their time;
 * deleting the sandbox drops its backups. */
/* Quotas read a user's usage: their sandboxes, the memory of those that
 * run (rows without a size count as the default), disk of all, and their
 * backups' archives; another user's rows never count. */
/* Idle policies: set, replaced, listed, checked, gone with the sandbox. */
/* A deleted snapshot leaves get, list and expiry at once, frees its name,
 * and stays a deletion (its layer to remove) until done; a stop between
 * the two steps of the move still hides it. */
BOTH(snapshot_deletions)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_snapshot v = {.id = "snp_1",
                           .owner_did = "did:key:zA",
                           .name = "keep",
                           .sandbox_id = "sbx_gone",
                           .layer = "layer1",
                           .image = "busybox",
                           .expires_at = 1,
                           .provider = "daytona",
                           .credential = "{\"apiKey\":\"sealed\"}",
                           .credential_shown = "{\"name\":\"daytona\"}"},
                      got = {0}, *list = NULL;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    ASSERT_EQ_INT(pe_store_snapshot_add(s, &v, &err), 0);
    /* a remote one keeps where it is and the credential that made it */
    ASSERT_EQ_INT(pe_store_snapshot_get(s, "did:key:zA", "keep", &got, &err), 0);
    ASSERT_EQ_STR(got.provider, "daytona");
    ASSERT_EQ_STR(got.credential, v.credential);
    ASSERT_EQ_STR(got.credential_shown, v.credential_shown);
    pe_store_snapshot_clear(&got);
    ASSERT_EQ_INT(pe_store_snapshot_delete_later(s, &v, &err), 0);
    ASSERT_EQ_INT(pe_store_snapshot_get(s, "did:key:zA", "keep", &got, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_snapshot_expired(s, 10, 10, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 0);
    ASSERT_EQ_INT(pe_store_snapshot_delete_later(s, &v, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_snapshot_deletion_get(s, "did:key:zA", "keep", &got, &err), 0);
    ASSERT_EQ_STR(got.layer, "layer1");
    ASSERT_EQ_STR(got.id, "snp_1");
    ASSERT_EQ_STR(got.provider, "daytona"); /* deleted there with its own credential */
    ASSERT_EQ_STR(got.credential, v.credential);
    ASSERT_EQ_STR(got.credential_shown, v.credential_shown);
    pe_store_snapshot_clear(&got);
    v.provider = v.credential = v.credential_shown = NULL;
    ASSERT_EQ_INT(pe_store_snapshot_deletion_get(s, "did:key:zB", "snp_1", &got, &err), -1);
    /* the name is free again */
    v.id = "snp_2";
    v.layer = "layer2";
    ASSERT_EQ_INT(pe_store_snapshot_add(s, &v, &err), 0);
    ASSERT_EQ_INT(pe_store_snapshot_get(s, "did:key:zA", "keep", &got, &err), 0);
    ASSERT_EQ_STR(got.id, "snp_2");
    pe_store_snapshot_clear(&got);
    /* a stop between the steps: both rows; the deletion hides the snapshot */
    exec_ok(s,
            "INSERT INTO snapshot_deletions (layer, snapshot_id, owner_did, name, requested_at) "
            "VALUES ('layer2', 'snp_2', 'did:key:zA', 'keep', 5)",
            NULL, 0);
    ASSERT_EQ_INT(pe_store_snapshot_get(s, "did:key:zA", "snp_2", &got, &err), -1);
    ASSERT_EQ_INT(pe_store_snapshot_list(s, "did:key:zA", &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 0);
    ASSERT_EQ_INT(pe_store_snapshot_deletions(s, NULL, 10, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 2);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ_INT(pe_store_snapshot_deletion_done(s, &list[i], &err), 0);
    pe_store_snapshot_list_free(list, n);
    ASSERT_EQ_INT(pe_store_snapshot_deletions(s, NULL, 10, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 0);
    ASSERT_EQ_INT(pe_store_snapshot_delete(s, "snp_2", &err), -1); /* the row went too */
    /* a node purges only the layers it has (or no recorded node's) */
    v.id = "snp_3", v.layer = "layer3", v.name = "on-n1", v.node = "n1";
    ASSERT_EQ_INT(pe_store_snapshot_add(s, &v, &err), 0);
    ASSERT_EQ_INT(pe_store_snapshot_get(s, "did:key:zA", "on-n1", &got, &err), 0);
    ASSERT_EQ_STR(got.node, "n1");
    ASSERT_EQ_INT(pe_store_snapshot_delete_later(s, &got, &err), 0);
    pe_store_snapshot_clear(&got);
    ASSERT_EQ_INT(pe_store_snapshot_deletions(s, "n2", 10, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 0);
    ASSERT_EQ_INT(pe_store_snapshot_deletions(s, "n1", 10, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 1);
    ASSERT_EQ_STR(list[0].node, "n1");
    pe_store_snapshot_list_free(list, n);
    pe_store_close(s);
}

BOTH(idle_policies)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL, *b = NULL;
    pe_store_idle p = {0}, *list = NULL;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    a = add_sandbox(s, "did:key:zA", "one", 0);
    b = add_sandbox(s, "did:key:zA", "two", 0);
    ASSERT_EQ_INT(pe_store_idle_get(s, a, &p, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_idle_put(s, a, PE_IDLE_PAUSE, 30, &err), 0);
    ASSERT_EQ_INT(pe_store_idle_put(s, a, PE_IDLE_SNAPSHOT_STOP, 60, &err), 0); /* replaced */
    ASSERT_EQ_INT(pe_store_idle_put(s, b, PE_IDLE_STOP, 0, &err), 0);
    ASSERT_EQ_INT(pe_store_idle_get(s, a, &p, &err), 0);
    ASSERT_EQ_STR(p.action, "snapshot-then-stop");
    ASSERT_EQ_INT(p.timeout, 60);
    pe_store_idle_clear(&p);
    ASSERT_EQ_INT(pe_store_idle_put(s, a, "hibernate", 1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_EQ_INT(pe_store_idle_put(s, a, PE_IDLE_STOP, -1, &err), -1);
    ASSERT_EQ_INT(pe_store_idle_put(s, "sbx_nosuch", PE_IDLE_STOP, 1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_idle_list(s, &list, &n, &err), 0);
    ASSERT_EQ_INT(n, 2);
    pe_store_idle_list_free(list, n);
    ASSERT_EQ_INT(pe_store_sandbox_delete(s, a, &err), 0);
    ASSERT_EQ_INT(pe_store_idle_list(s, &list, &n, &err), 0);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_STR(list[0].sandbox_id, b);
    pe_store_idle_list_free(list, n);
    pe_store_close(s);
}

/* The E2B API's metadata and timeouts: set by the node that runs the
 * sandbox, listed by owner on any node, gone with the sandbox. */
BOTH(e2b_rows)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL, *b = NULL, *c = NULL;
    pe_store_e2b *list = NULL;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    a = add_sandbox(s, "did:key:zA", "one", 0);
    b = add_sandbox(s, "did:key:zA", "two", 0);
    c = add_sandbox(s, "did:key:zB", "three", 0);
    ASSERT_EQ_INT(pe_store_e2b_put(s, a, "{\"k\":\"v\"}", 1000, &err), 0);
    ASSERT_EQ_INT(pe_store_e2b_set_end(s, a, 2000, &err), 0); /* the metadata stays */
    ASSERT_EQ_INT(pe_store_e2b_set_end(s, b, 3000, &err), 0); /* a row without metadata */
    ASSERT_EQ_INT(pe_store_e2b_put(s, c, NULL, 0, &err), 0);
    ASSERT_EQ_INT(pe_store_e2b_put(s, "sbx_nosuch", NULL, 1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_e2b_list(s, "did:key:zA", &list, &n, &err), 0);
    ASSERT_EQ_INT(n, 2);
    for (size_t i = 0; i < n; i++) {
        bool is_a = strcmp(list[i].sandbox_id, a) == 0;
        ASSERT_EQ_INT(list[i].end_ms, is_a ? 2000 : 3000);
        if (is_a)
            ASSERT_EQ_STR(list[i].metadata, "{\"k\":\"v\"}");
        else
            ASSERT(list[i].metadata == NULL);
    }
    pe_store_e2b_list_free(list, n);
    ASSERT_EQ_INT(pe_store_sandbox_delete(s, a, &err), 0);
    ASSERT_EQ_INT(pe_store_e2b_list(s, "did:key:zA", &list, &n, &err), 0);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_STR(list[0].sandbox_id, b);
    pe_store_e2b_list_free(list, n);
    pe_store_close(s);
}

BOTH(usage)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a1 = NULL, *a2 = NULL, *a3 = NULL, *b1 = NULL;
    pe_store_usage u;
    pe_store_sandbox sb = {.owner_did = "did:key:zA", .base = "busybox"};
    pe_store_backup bk = {.archive = "bak_u1.tar.zst", .directory = "/w"};
    char **names = NULL;
    size_t n = 0;

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    ASSERT_EQ_INT(pe_store_user_usage(s, "did:key:zA", 4, 10, NULL, &u, &err), 0);
    ASSERT(u.sandboxes == 0 && u.memory == 0 && u.disk == 0);
    a1 = pe_store_new_id("sbx_");
    a2 = pe_store_new_id("sbx_");
    sb.id = a1, sb.name = "one", sb.memory = 16, sb.disk = 3, sb.status = PE_STORE_RUNNING;
    ASSERT_EQ_INT(pe_store_sandbox_insert(s, &sb, &err), 0);
    sb.id = a2, sb.name = "two", sb.memory = 8, sb.disk = 50, sb.status = PE_STORE_STOPPED;
    ASSERT_EQ_INT(pe_store_sandbox_insert(s, &sb, &err), 0);
    a3 = add_sandbox(s, "did:key:zA", "old", 0); /* no sizes, INITIALIZING */
    b1 = add_sandbox(s, "did:key:zB", "theirs", 0);
    ASSERT_EQ_INT(pe_store_user_usage(s, "did:key:zA", 4, 10, NULL, &u, &err), 0);
    ASSERT_EQ_INT(u.sandboxes, 3);
    ASSERT_EQ_INT(u.memory, 16 + 4);
    ASSERT_EQ_INT(u.disk, 3 + 50 + 10);
    ASSERT_EQ_INT(pe_store_user_usage(s, "did:key:zA", 4, 10, a1, &u, &err), 0);
    ASSERT_EQ_INT(u.memory, 4);
    ASSERT_EQ_INT(pe_store_user_usage(s, "did:key:zB", 1, 1, NULL, &u, &err), 0);
    ASSERT(u.sandboxes == 1 && u.memory == 1 && u.disk == 1);

    bk.id = "bak_u1", bk.sandbox_id = a2;
    ASSERT_EQ_INT(pe_store_backup_add(s, &bk, &err), 0);
    bk.id = "bak_u2", bk.archive = "bak_u2.tar.zst", bk.sandbox_id = b1;
    ASSERT_EQ_INT(pe_store_backup_add(s, &bk, &err), 0);
    ASSERT_EQ_INT(pe_store_user_backup_archives(s, "did:key:zA", &names, &n, &err), 0);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_STR(names[0], "bak_u1.tar.zst");
    pe_store_names_free(names, n);
    ASSERT_EQ_INT(pe_store_user_backup_archives(s, "did:key:zC", &names, &n, &err), 0);
    ASSERT_EQ_INT(n, 0);
    pe_store_names_free(names, n);
    pe_store_close(s);
}

/* The record outbox: a change while a write is in flight is not lost, a
 * delete outlives the sandbox row and goes once written. */
BOTH(records)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    pe_store_record r = {0}, *due = NULL;
    size_t n = 0;

    ASSERT_EQ_INT(pe_store_record_want(s, "sbx_1", "did:plc:a", "3kabc", "{\"v\":1}", &err), 0);
    ASSERT_EQ_INT(pe_store_record_due(s, pe_store_now_ms(), 10, &due, &n, &err), 0);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_INT(due[0].gen, 1);
    ASSERT_EQ_STR(due[0].rkey, "3kabc");
    /* Changed again while generation 1 is being written. */
    ASSERT_EQ_INT(pe_store_record_want(s, "sbx_1", "did:plc:other", "other", "{\"v\":2}", &err), 0);
    ASSERT_EQ_INT(pe_store_record_written(s, "sbx_1", 1, "cid1", &err), 0);
    ASSERT_EQ_INT(pe_store_record_get(s, "sbx_1", &r, &err), 0);
    ASSERT_EQ_STR(r.did, "did:plc:a"); /* a row keeps its repository and key */
    ASSERT_EQ_STR(r.rkey, "3kabc");
    ASSERT_EQ_STR(r.cid, "cid1");
    ASSERT_EQ_STR(r.want, "{\"v\":2}");
    ASSERT_EQ_INT(r.gen, 2);
    ASSERT_EQ_INT(r.done_gen, 1);
    pe_store_record_clear(&r);
    pe_store_record_list_free(due, n);
    /* A failure waits for its time. */
    ASSERT_EQ_INT(pe_store_record_failed(s, "sbx_1", "down", pe_store_now_ms() + 60000, &err), 0);
    ASSERT_EQ_INT(pe_store_record_due(s, pe_store_now_ms(), 10, &due, &n, &err), 0);
    ASSERT_EQ_INT(n, 0);
    ASSERT_EQ_INT(pe_store_record_written(s, "sbx_1", 2, "cid2", &err), 0);
    /* Deleted: due at once; the row goes when the delete is written. */
    ASSERT_EQ_INT(pe_store_record_want(s, "sbx_1", NULL, NULL, NULL, &err), 0);
    ASSERT_EQ_INT(pe_store_record_want(s, "sbx_none", NULL, NULL, NULL, &err), 0);
    ASSERT_EQ_INT(pe_store_record_due(s, pe_store_now_ms(), 10, &due, &n, &err), 0);
    ASSERT_EQ_INT(n, 1);
    ASSERT_EQ_INT(due[0].want == NULL, 1);
    ASSERT_EQ_INT(pe_store_record_written(s, "sbx_1", due[0].gen, NULL, &err), 0);
    pe_store_record_list_free(due, n);
    ASSERT_EQ_INT(pe_store_record_get(s, "sbx_1", &r, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    pe_store_close(s);
}

BOTH(backups)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL, *b = NULL;
    pe_store_backup got = {0}, *list = NULL;
    size_t n = 0;
    int64_t now = pe_store_now_ms(), cnt = -1;
    pe_store_backup b1 = {.id = "bak_1",
                          .sandbox_id = NULL,
                          .archive = "bak_1.tar.zst",
                          .directory = "/work",
                          .description = "first",
                          .expires_at = now - 1,
                          .created_at = now - 10};
    pe_store_backup b2 = {.id = "bak_2",
                          .archive = "bak_2.tar.zst",
                          .directory = "/",
                          .expires_at = now + 60000,
                          .created_at = now - 5};
    pe_store_backup b3 = {.id = "bak_3", .archive = "bak_3.tar.zst", .directory = "/x'); --"};

    add_user(s, "did:key:zA", "a");
    add_user(s, "did:key:zB", "b");
    a = add_sandbox(s, "did:key:zA", "mine", 0);
    b = add_sandbox(s, "did:key:zB", "theirs", 0);
    b1.sandbox_id = a;
    b2.sandbox_id = a;
    b3.sandbox_id = b;
    ASSERT_EQ_INT(pe_store_backup_add(s, &b1, &err), 0);
    ASSERT_EQ_INT(pe_store_backup_add(s, &b2, &err), 0);
    ASSERT_EQ_INT(pe_store_backup_add(s, &b3, &err), 0);
    ASSERT_EQ_INT(pe_store_backup_add(s, &b3, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    b3.id = "bak_4";
    b3.sandbox_id = "sbx_nope";
    ASSERT_EQ_INT(pe_store_backup_add(s, &b3, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_store_backup_get(s, "did:key:zA", "bak_1", &got, &err), 0);
    ASSERT_EQ_STR(got.sandbox_id, a);
    ASSERT_EQ_STR(got.archive, "bak_1.tar.zst");
    ASSERT_EQ_STR(got.directory, "/work");
    ASSERT_EQ_STR(got.description, "first");
    ASSERT(got.expires_at == now - 1 && got.created_at == now - 10);
    pe_store_backup_clear(&got);
    ASSERT_EQ_INT(pe_store_backup_get(s, "did:key:zB", "bak_1", &got, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_backup_get(s, NULL, "bak_3", &got, &err), 0);
    ASSERT_EQ_STR(got.directory, "/x'); --");
    ASSERT(got.description == NULL && got.expires_at == 0);
    pe_store_backup_clear(&got);

    ASSERT_EQ_INT(pe_store_backup_list(s, a, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 2);
    ASSERT_EQ_STR(list[0].id, "bak_2"); /* newest first */
    ASSERT_EQ_STR(list[1].id, "bak_1");
    pe_store_backup_list_free(list, n);
    ASSERT_EQ_INT(pe_store_backup_count(s, a, &cnt, &err), 0);
    ASSERT(cnt == 2);

    ASSERT_EQ_INT(pe_store_backup_expired(s, now, 10, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 1);
    ASSERT_EQ_STR(list[0].id, "bak_1");
    pe_store_backup_list_free(list, n);
    ASSERT_EQ_INT(pe_store_backup_delete(s, "bak_1", &err), 0);
    ASSERT_EQ_INT(pe_store_backup_delete(s, "bak_1", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_store_sandbox_delete(s, a, &err), 0);
    ASSERT_EQ_INT(pe_store_backup_get(s, NULL, "bak_2", &got, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_backup_count(s, b, &cnt, &err), 0);
    ASSERT(cnt == 1);
    pe_store_close(s);
}

/* Ports: one row per (sandbox, port), a second exposure is PE_EEXIST, the
 * access columns round-trip, and deleting the sandbox drops its ports. */
BOTH(ports)
{
    pe_err err = {0};
    pe_store *s = open_ok(url);
    cleanup_free char *a = NULL;
    pe_store_port got = {0}, *list = NULL;
    size_t n = 0;
    pe_store_port p1 = {.id = "port_1",
                        .port = 8080,
                        .description = "web",
                        .preview_url = "http://x/",
                        .secret = "s3cr3t"};
    pe_store_port p2 = {.id = "port_2", .port = 1025, .public_access = true};

    add_user(s, "did:key:zA", "a");
    a = add_sandbox(s, "did:key:zA", "mine", 0);
    p1.sandbox_id = a;
    p2.sandbox_id = a;
    ASSERT_EQ_INT(pe_store_port_add(s, &p1, &err), 0);
    ASSERT_EQ_INT(pe_store_port_add(s, &p2, &err), 0);
    p1.id = "port_3";
    ASSERT_EQ_INT(pe_store_port_add(s, &p1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EEXIST);
    p1.sandbox_id = "sbx_nope";
    ASSERT_EQ_INT(pe_store_port_add(s, &p1, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_store_port_get(s, a, 8080, &got, &err), 0);
    ASSERT_EQ_STR(got.id, "port_1");
    ASSERT_EQ_STR(got.description, "web");
    ASSERT_EQ_STR(got.preview_url, "http://x/");
    ASSERT_EQ_STR(got.secret, "s3cr3t");
    ASSERT(!got.public_access && got.created_at > 0);
    pe_store_port_clear(&got);
    ASSERT_EQ_INT(pe_store_port_get(s, a, 9, &got, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_store_port_list(s, a, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 2);
    ASSERT_EQ_INT(list[0].port, 1025);
    ASSERT(list[0].public_access && list[0].secret == NULL && list[0].description == NULL);
    ASSERT_EQ_INT(list[1].port, 8080);
    pe_store_port_list_free(list, n);

    /* By id or preview tag, never by name: names are per owner only. */
    cleanup_free char *tag = NULL, *tag2 = NULL, *btag = NULL, *b = NULL;
    ASSERT_EQ_INT(pe_store_port_find(s, "mine", 8080, &got, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_port_find(s, a, 1025, &got, &err), 0);
    ASSERT_EQ_STR(got.owner_did, "did:key:zA");
    ASSERT_EQ_STR(got.sandbox_id, a);
    ASSERT_EQ_STR(got.sandbox_name, "mine");
    pe_store_port_clear(&got);
    ASSERT_EQ_INT(pe_store_preview_tag(s, a, &tag, &err), 0);
    ASSERT_EQ_INT((int)strlen(tag), PE_STORE_PREVIEW_TAG_LEN);
    ASSERT_EQ_INT((int)strspn(tag, "abcdefghijklmnopqrstuvwxyz234567"), PE_STORE_PREVIEW_TAG_LEN);
    ASSERT_EQ_INT(pe_store_preview_tag(s, a, &tag2, &err), 0); /* made once, then kept */
    ASSERT_EQ_STR(tag2, tag);
    ASSERT_EQ_INT(pe_store_port_find(s, tag, 8080, &got, &err), 0);
    ASSERT_EQ_STR(got.sandbox_id, a);
    pe_store_port_clear(&got);
    ASSERT_EQ_INT(pe_store_port_find(s, tag, 9999, &got, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    /* Another owner's sandbox of the same name has a tag of its own. */
    add_user(s, "did:key:zB", "b");
    b = add_sandbox(s, "did:key:zB", "mine", 0);
    ASSERT_EQ_INT(pe_store_preview_tag(s, b, &btag, &err), 0);
    ASSERT(strcmp(btag, tag) != 0);
    free(tag2);
    ASSERT_EQ_INT(pe_store_preview_tag(s, "sbx_nope", &tag2, &err), -1);
    ASSERT(tag2 == NULL);
    ASSERT_EQ_INT(err.code, PE_ENOENT);

    ASSERT_EQ_INT(pe_store_port_delete(s, a, 8080, &err), 0);
    ASSERT_EQ_INT(pe_store_port_delete(s, a, 8080, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOENT);
    ASSERT_EQ_INT(pe_store_sandbox_delete(s, a, &err), 0);
    ASSERT_EQ_INT(pe_store_port_list(s, a, &list, &n, &err), 0);
    ASSERT_EQ_INT((int)n, 0);
    ASSERT_EQ_INT(pe_store_port_find(s, tag, 1025, &got, &err), -1); /* its tag went with it */
    pe_store_close(s);
}

int main(void)
{
    int failed = 0;
    const char *url = getenv("PE_TEST_PG_URL");

    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/pe-test-store-XXXXXX");
    if (mkdtemp(g_tmp) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if (url && *url) {
        g_pg_url = pe_xstrdup(url);
        printf("# PostgreSQL from PE_TEST_PG_URL\n");
    } else {
        pg_start();
    }
    if (g_pg_missing)
        printf("# pg_ cases skip: %s\n", g_pg_missing);

    failed |=
        RUN_TESTS(new_id, open_errors, sqlite_migrations, sqlite_migration_provider_names,
                  sqlite_concurrent_open, sqlite_users, sqlite_sandbox_crud, sqlite_duplicate_name,
                  sqlite_status, sqlite_not_found, sqlite_kv, sqlite_resources, sqlite_volumes,
                  sqlite_delete_cascades, sqlite_hostile_strings, sqlite_two_handles);
    failed |=
        RUN_TESTS(sqlite_keys, sqlite_services, sqlite_credentials, sqlite_backups, sqlite_usage,
                  sqlite_records, sqlite_idle_policies, sqlite_e2b_rows, sqlite_snapshot_deletions);
    failed |= RUN_TESTS(sqlite_nodes, pg_nodes, sqlite_listen, pg_listen);
    failed |= RUN_TESTS(sqlite_ports, pg_ports);
    failed |=
        RUN_TESTS(pg_migrations, pg_migration_provider_names, pg_concurrent_open, pg_users,
                  pg_sandbox_crud, pg_duplicate_name, pg_status, pg_not_found, pg_kv, pg_resources,
                  pg_volumes, pg_delete_cascades, pg_hostile_strings, pg_two_handles);
    failed |= RUN_TESTS(pg_keys, pg_services, pg_credentials, pg_backups, pg_usage, pg_records,
                        pg_idle_policies, pg_e2b_rows, pg_snapshot_deletions);

    pg_stop();
    free(g_pg_url);
    pe_fs_rm_rf(g_tmp, NULL);
    return failed;
}
