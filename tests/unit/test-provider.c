/* lib/provider: what needs no provider: the registry, the standard
 * "not supported" error, credential scrubbing, transport errors, and
 * Daytona's output demultiplexer on every split of its input. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "task.h"
#include "provider/provider-internal.h"

#define KEY "secret-key-0123456789"

static pe_provider *open_or_die(const char *name, const char *url)
{
    pe_provider_config cfg = {.creds = {.base_url = url, .key = KEY, .project = "prj"},
                              .timeout_ms = 3000};
    pe_provider *p = NULL;
    pe_err err = {0};

    if (pe_provider_open(&p, name, &cfg, &err) < 0)
        TEST_FAIL("open %s: %s", name, err.msg);
    return p;
}

TEST_CASE(unknown_provider_and_missing_key)
{
    pe_provider_config cfg = {.creds = {.key = KEY}};
    pe_provider *p = NULL;
    pe_err err = {0};

    ASSERT_EQ_INT(pe_provider_open(&p, "nope", &cfg, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_CONTAINS(err.msg, "unknown provider 'nope'");
    ASSERT_CONTAINS(err.msg, "daytona");
    cfg.creds.key = "";
    ASSERT_EQ_INT(pe_provider_open(&p, "daytona", &cfg, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_EQ_STR(err.msg, "daytona: no API key given");
    ASSERT_EQ_INT(pe_provider_open(&p, "nope", &(pe_provider_config){.creds = {.key = KEY}}, &err),
                  -1);
    for (const char *const *n = pe_provider_adapters; *n; n++) {
        ASSERT(pe_provider_lookup(*n) != NULL);
        ASSERT_CONTAINS(err.msg, *n); /* the error names every adapter */
    }
    /* Blaxel's calls all name the account's workspace: none, no provider */
    ASSERT_EQ_INT(
        pe_provider_open(&p, "blaxel", &(pe_provider_config){.creds = {.key = KEY}}, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EINVAL);
    ASSERT_EQ_STR(err.msg, "blaxel: no workspace given (the account's org)");
}

/* Refused before anything is sent: the URL goes nowhere. */
TEST_CASE(undeclared_capability_is_refused_with_the_standard_error)
{
    pe_provider *p = open_or_die("vercel", "http://127.0.0.1:1");
    pe_err err = {0};
    char *argv[] = {(char *)"bash", NULL};
    pe_provider_exec_opts tty = {.argv = argv, .tty = true};
    pe_provider_proc proc;

    ASSERT_EQ_INT(pe_provider_pause(p, "sbx", &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOTCAP);
    ASSERT_EQ_STR(err.msg, "not supported by vercel: pause");
    ASSERT_EQ_INT(pe_provider_exec_start(p, "sbx", &tty, &proc, &err), -1);
    ASSERT_EQ_STR(err.msg, "not supported by vercel: pty");
    ASSERT_EQ_INT(pe_provider_start(p, "sbx", &err), -1);
    ASSERT_EQ_STR(err.msg, "not supported by vercel: start");
    pe_provider_close(p);
}

/* What a start would apply (variables, secrets, volumes) is refused on a
 * provider that cannot take it, never dropped: a sandbox must not run
 * without its secrets while the caller believes they are there. Nothing
 * is sent: the URL goes nowhere. local needs no key. */
TEST_CASE(start_extras_are_refused_where_they_cannot_go)
{
    pe_provider *p = open_or_die("daytona", "http://127.0.0.1:1/api");
    pe_provider_config local_cfg = {.data_dir = "/nonexistent-dir-of-pocketenv-tests"};
    char *env[] = {(char *)"SECRET=x", NULL};
    pe_provider_mount m = {.host_dir = "/srv/vol", .path = "/data"};
    pe_provider_start_opts with_env = {.env = env}, with_mount = {.mounts = &m, .n_mounts = 1};
    pe_err err = {0};

    ASSERT_EQ_INT(pe_provider_start_with(p, "sbx", &with_env, &err), -1);
    ASSERT_EQ_INT(err.code, PE_ENOTCAP);
    ASSERT_EQ_STR(err.msg, "not supported by daytona: start with environment");
    ASSERT_EQ_INT(pe_provider_start_with(p, "sbx", &with_mount, &err), -1);
    ASSERT_EQ_STR(err.msg, "not supported by daytona: volumes");
    pe_provider_close(p);
    ASSERT(pe_provider_lookup("local") != NULL);
    ASSERT(pe_provider_lookup("local")->caps & PE_CAP_VOLUMES);
    /* no key asked of local: what fails is its runtime's directory */
    p = NULL;
    if (pe_provider_open(&p, "local", &local_cfg, &err) < 0)
        ASSERT(strstr(err.msg, "no API key") == NULL);
    pe_provider_close(p);
}

TEST_CASE(errors_are_scrubbed_of_the_key)
{
    pe_provider *p = open_or_die("sprites", NULL);
    pe_err err = {0};

    pe__provider_fail(p, &err, PE_EINVAL, "sprites said: bad token " KEY " (and " KEY ")");
    ASSERT_EQ_STR(err.msg, "sprites said: bad token [redacted] (and [redacted])");
    pe_provider_close(p);
}

/* Nothing listens on port 1: a clear error naming the provider. */
TEST_CASE(refused_connection_names_the_provider)
{
    pe_provider *p = open_or_die("daytona", "http://127.0.0.1:1/api");
    pe_provider_status st;
    pe_err err = {0};

    ASSERT_EQ_INT(pe_provider_status_get(p, "sbx", &st, &err), -1);
    ASSERT_EQ_INT(err.code, PE_EREMOTE);
    ASSERT_CONTAINS(err.msg, "daytona: get a sandbox: ");
    ASSERT(strstr(err.msg, KEY) == NULL);
    pe_provider_close(p);
}

static void *status_call(void *arg)
{
    pe_provider *p = arg;
    pe_provider_status st;
    pe_err err = {0};

    pe_provider_status_get(p, "sbx", &st, &err);
    return NULL;
}

/* While a call is connected, every network socket of the process but the
 * test's own is close-on-exec (the daemon execs helpers from other
 * threads: none may inherit a provider's connection). */
TEST_CASE(provider_sockets_are_close_on_exec)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c, checked = 0;
    char url[64];
    pe_provider *p;
    pthread_t t;
    DIR *d;
    struct dirent *e;

    ASSERT(l >= 0 && bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 1) == 0);
    ASSERT(getsockname(l, (struct sockaddr *)&a, &alen) == 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/api", ntohs(a.sin_port));
    p = open_or_die("daytona", url);
    ASSERT_EQ_INT(pthread_create(&t, NULL, status_call, p), 0);
    c = accept4(l, NULL, NULL, SOCK_CLOEXEC); /* curl's socket exists now */
    ASSERT(c >= 0);
    d = opendir("/proc/self/fd");
    while ((e = readdir(d)) != NULL) {
        int fd = (int)strtol(e->d_name, NULL, 10);
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        struct stat st;
        if (e->d_name[0] == '.' || fd == l || fd == c || fd == dirfd(d) || fstat(fd, &st) < 0 ||
            !S_ISSOCK(st.st_mode))
            continue;
        /* network sockets: libcurl 7.88's own wakeup socketpair (AF_UNIX,
         * no data of ours) is made without CLOEXEC, and has no hook */
        if (getsockname(fd, (struct sockaddr *)&sa, &salen) < 0 || sa.ss_family != AF_INET)
            continue;
        ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        checked++;
    }
    closedir(d);
    ASSERT(checked >= 1);
    close(c); /* the call fails now: the peer went away */
    pthread_join(t, NULL);
    close(l);
    pe_provider_close(p);
}

typedef struct collected {
    char out[2][256];
    size_t len[2];
} collected;

static void collect(void *ud, int fd, const unsigned char *data, size_t len)
{
    collected *c = ud;

    if (fd != 1 && fd != 2)
        TEST_FAIL("fd %d", fd);
    memcpy(c->out[fd - 1] + c->len[fd - 1], data, len);
    c->len[fd - 1] += len;
}

static collected demux_in_pieces(const char *in, size_t len, size_t step)
{
    collected c = {0};
    pe__demux d = {.fd = 1};

    for (size_t i = 0; i < len; i += step)
        pe__daytona_demux(&d, (const unsigned char *)in + i, i + step <= len ? step : len - i,
                          collect, &c);
    pe__daytona_demux_end(&d, collect, &c);
    return c;
}

TEST_CASE(daytona_demux_on_every_split)
{
    static const char in[] = "\x01\x01\x01out\n\x02\x02\x02"
                             "err\n\x01\x01\x01"
                             "a\x01"
                             "b\x02\x02"
                             "c\x01\x01";
    size_t len = sizeof(in) - 1;

    for (size_t step = 1; step <= len; step++) {
        collected c = demux_in_pieces(in, len, step);
        ASSERT_EQ_INT(c.len[0], 12);
        ASSERT(memcmp(c.out[0],
                      "out\na\x01"
                      "b\x02\x02"
                      "c\x01\x01",
                      12) == 0);
        ASSERT_EQ_INT(c.len[1], 4);
        ASSERT(memcmp(c.out[1], "err\n", 4) == 0);
    }
}

int main(void)
{
    return RUN_TESTS(unknown_provider_and_missing_key,
                     undeclared_capability_is_refused_with_the_standard_error,
                     start_extras_are_refused_where_they_cannot_go, errors_are_scrubbed_of_the_key,
                     refused_connection_names_the_provider, daytona_demux_on_every_split,
                     provider_sockets_are_close_on_exec);
}
