/* provider-drive: one step of the provider conformance suite against one
 * adapter (tests/integration/test_provider_conformance.py).
 *
 *   provider-drive PROVIDER STEP [ARGS...]
 *
 * The provider's endpoint and key come from the environment
 * (PE_PROVIDER_URL, PE_PROVIDER_KEY, optional PE_PROVIDER_ORG,
 * PE_PROVIDER_PROJECT, PE_PROVIDER_TIMEOUT_MS / PE_PROVIDER_CREATE_TIMEOUT_MS,
 * PE_PROVIDER_PORTS "3000,8080" and PE_PROVIDER_IMAGE for create; for
 * `local`, PE_PROVIDER_DATA: the runtime's data directory), never from
 * argv (which any user can read in /proc). One JSON object on stdout:
 * the step's result, or {"error": CODE, "message"} with exit status 1.
 * "stream" prints one JSON line per piece of output as it arrives. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "provider/provider.h"

static const char *const code_names[] = {
    [PE_OK] = "OK",         [PE_EINVAL] = "EINVAL",       [PE_ENOENT] = "ENOENT",
    [PE_EEXIST] = "EEXIST", [PE_ESTATE] = "ESTATE",       [PE_ESYS] = "ESYS",
    [PE_EUNSUP] = "EUNSUP", [PE_ENOEXEC] = "ENOEXEC",     [PE_ENOTCAP] = "ENOTCAP",
    [PE_EAUTH] = "EAUTH",   [PE_ETIMEDOUT] = "ETIMEDOUT", [PE_EREMOTE] = "EREMOTE",
};

static int64_t t0;

static int step_forward(pe_provider *p, const char *id, const char *port, const char *data,
                        pe_err *err);

static int print(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);

    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(v);
    return 0;
}

static int fail(const pe_err *err)
{
    const char *name =
        err->code >= 0 && (size_t)err->code < PE_ARRAY_LEN(code_names) && code_names[err->code]
            ? code_names[err->code]
            : "?";
    print(json_pack("{s:s, s:s}", "error", name, "message", err->msg));
    return 1;
}

static int64_t env_ms(const char *name)
{
    const char *v = getenv(name);
    return v ? strtoll(v, NULL, 10) : 0;
}

static json_t *bytes(const char *p, size_t n)
{
    return json_stringn_nocheck(p ? p : "", n);
}

static int step_exec(pe_provider *p, char **args, pe_err *err)
{
    const char *t = getenv("PE_DRIVE_EXEC_TIMEOUT");
    /* the exec's own variables: one "K=V" (PE_DRIVE_EXEC_ENV) */
    char *env[] = {getenv("PE_DRIVE_EXEC_ENV"), NULL};
    pe_provider_exec_opts o = {
        .argv = args + 1, .env = env[0] ? env : NULL, .timeout = t ? strtod(t, NULL) : 0};
    pe_provider_exec_result res;

    if (pe_provider_exec(p, args[0], &o, 1 << 20, &res, err) < 0)
        return fail(err);
    print(json_pack("{s:i, s:o, s:o, s:b, s:b}", "exit_code", res.exit_code, "stdout",
                    bytes(res.out, res.out_len), "stderr", bytes(res.err, res.err_len), "truncated",
                    res.truncated, "timed_out", res.timed_out));
    pe_provider_exec_free(&res);
    return 0;
}

/* Each piece of output as it arrives, then the exit code. stdin (if not
 * NULL) is written and closed first. */
static int step_stream(pe_provider *p, const char *id, char **argv, const char *stdin_data,
                       pe_err *err)
{
    pe_provider_exec_opts o = {.argv = argv, .stdin_pipe = stdin_data != NULL};
    pe_provider_proc proc;
    int code = 0;

    if (pe_provider_exec_start(p, id, &o, &proc, err) < 0)
        return fail(err);
    if (stdin_data) {
        ssize_t w = write(proc.stdin_fd, stdin_data, strlen(stdin_data));
        (void)w;
        close(proc.stdin_fd);
        proc.stdin_fd = -1;
    }
    while (proc.stdout_fd >= 0 || proc.stderr_fd >= 0) {
        struct pollfd pfd[2] = {{.fd = proc.stdout_fd, .events = POLLIN},
                                {.fd = proc.stderr_fd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            int *fd = i == 0 ? &proc.stdout_fd : &proc.stderr_fd;
            char buf[4096];
            ssize_t n;
            if (!pfd[i].revents)
                continue;
            n = read(*fd, buf, sizeof(buf));
            if (n <= 0) {
                close(*fd);
                *fd = -1;
                continue;
            }
            print(json_pack("{s:i, s:o, s:I}", "fd", i + 1, "data", bytes(buf, (size_t)n), "t",
                            (json_int_t)(pe_monotonic_ms() - t0)));
        }
    }
    if (pe_provider_proc_wait(&proc, &code, err) < 0) {
        pe_provider_proc_close(&proc);
        return fail(err);
    }
    pe_provider_proc_close(&proc);
    return print(json_pack("{s:i}", "exit_code", code));
}

/* A terminal: resize, type the lines of input, read to the end. */
static int step_pty(pe_provider *p, const char *id, const char *input, pe_err *err)
{
    /* PE_DRIVE_SHELL: the image's shell when it has no bash (busybox) */
    char *argv[] = {getenv("PE_DRIVE_SHELL") ? getenv("PE_DRIVE_SHELL") : (char *)"bash",
                    (char *)"-i", NULL};
    pe_provider_exec_opts o = {.argv = argv, .tty = true, .cols = 80, .rows = 24};
    pe_provider_proc proc;
    char *out = NULL;
    size_t len = 0;
    int code = -1;

    if (pe_provider_exec_start(p, id, &o, &proc, err) < 0)
        return fail(err);
    if (pe_provider_proc_resize(&proc, 100, 30, err) < 0)
        return fail(err);
    for (const char *c = input; *c; c++) {
        /* one keystroke at a time, as a terminal sends them */
        ssize_t w = write(proc.pty_fd, c, 1);
        (void)w;
    }
    for (;;) {
        char buf[4096];
        ssize_t n = read(proc.pty_fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        out = pe_xrealloc(out, len + (size_t)n + 1);
        memcpy(out + len, buf, (size_t)n);
        len += (size_t)n;
    }
    if (pe_provider_proc_wait(&proc, &code, err) < 0) {
        pe_provider_proc_close(&proc);
        free(out);
        return fail(err);
    }
    pe_provider_proc_close(&proc);
    print(json_pack("{s:o, s:i}", "output", bytes(out, len), "exit_code", code));
    free(out);
    return 0;
}

static int step_files(pe_provider *p, const char *step, char **a, int n, pe_err *err)
{
    if (strcmp(step, "write") == 0 && n >= 3) {
        if (pe_provider_file_write(p, a[0], a[1], a[2], strlen(a[2]), 0644, err) < 0)
            return fail(err);
        return print(json_object());
    }
    if (strcmp(step, "read") == 0 && n >= 2) {
        char *data = NULL;
        size_t len = 0;
        if (pe_provider_file_read(p, a[0], a[1], 1 << 20, &data, &len, err) < 0)
            return fail(err);
        print(json_pack("{s:o}", "data", bytes(data, len)));
        free(data);
        return 0;
    }
    if (strcmp(step, "list") == 0 && n >= 2) {
        pe_provider_dirent *ents = NULL;
        size_t count = 0;
        json_t *arr = json_array();
        if (pe_provider_file_list(p, a[0], a[1], &ents, &count, err) < 0) {
            json_decref(arr);
            return fail(err);
        }
        for (size_t i = 0; i < count; i++)
            json_array_append_new(arr, json_pack("{s:s, s:b, s:I}", "name", ents[i].name, "dir",
                                                 ents[i].is_dir, "size", (json_int_t)ents[i].size));
        free(ents);
        return print(json_pack("{s:o}", "entries", arr));
    }
    if (strcmp(step, "rm") == 0 && n >= 2) {
        if (pe_provider_file_remove(p, a[0], a[1], n > 2 && strcmp(a[2], "-r") == 0, err) < 0)
            return fail(err);
        return print(json_object());
    }
    if (strcmp(step, "tar-out") == 0 && n >= 2) {
        char *tar = NULL;
        size_t len = 0;
        FILE *f;
        if (pe_provider_tar_out(p, a[0], a[1], 64 << 20, &tar, &len, err) < 0)
            return fail(err);
        /* the archive to a file the test reads with its own tar reader */
        f = n > 2 ? fopen(a[2], "we") : NULL;
        if (f) {
            fwrite(tar, 1, len, f);
            fclose(f);
        }
        free(tar);
        return print(json_pack("{s:I}", "size", (json_int_t)len));
    }
    if (strcmp(step, "tar-in") == 0 && n >= 3) {
        FILE *f = fopen(a[2], "re");
        char *tar = pe_xmalloc(64 << 20);
        size_t len = f ? fread(tar, 1, 64 << 20, f) : 0;
        int r;
        if (f)
            fclose(f);
        r = pe_provider_tar_in(p, a[0], a[1], tar, len, err);
        free(tar);
        return r < 0 ? fail(err) : print(json_object());
    }
    return -2;
}

static int step(pe_provider *p, const char *name, char **a, int n, pe_err *err)
{
    pe_provider_status st;
    char *id = NULL;
    int r;

    if (strcmp(name, "caps") == 0) {
        json_t *arr = json_array();
        for (unsigned bit = 1; bit <= PE_CAP_LAST; bit <<= 1)
            if (pe_provider_caps(p) & bit)
                json_array_append_new(arr, json_string(pe_provider_cap_name(bit)));
        return print(json_pack("{s:o}", "caps", arr));
    }
    if (strcmp(name, "create") == 0 || (strcmp(name, "create-from") == 0 && n >= 1)) {
        bool from = name[6] == '-'; /* create-from SNAP [NAME]: a sandbox from a snapshot */
        uint16_t ports[8];
        const char *pl = getenv("PE_PROVIDER_PORTS");
        pe_provider_spec spec = {.name = n > from ? a[from] : "conformance",
                                 .image = from ? NULL : getenv("PE_PROVIDER_IMAGE"),
                                 .snapshot = from ? a[0] : NULL,
                                 .env = n > 1 + from ? a + 1 + from : NULL,
                                 .ports = ports};
        while (pl && *pl && spec.n_ports < PE_ARRAY_LEN(ports)) {
            char *end;
            ports[spec.n_ports++] = (uint16_t)strtoul(pl, &end, 10);
            pl = *end == ',' ? end + 1 : "";
        }
        if (pe_provider_create(p, &spec, &id, err) < 0)
            return fail(err);
        print(json_pack("{s:s}", "id", id));
        free(id);
        return 0;
    }
    if (n < 1)
        return -2;
    if (strcmp(name, "status") == 0) {
        static const char *const states[] = {"unknown", "creating", "running",
                                             "stopped", "paused",   "error"};
        if (pe_provider_status_get(p, a[0], &st, err) < 0)
            return fail(err);
        return print(json_pack("{s:s, s:s}", "state", states[st.state], "raw", st.raw));
    }
    if (strcmp(name, "start") == 0 || strcmp(name, "stop") == 0 || strcmp(name, "remove") == 0 ||
        strcmp(name, "pause") == 0 || strcmp(name, "resume") == 0) {
        r = name[0] == 'r' && name[2] == 'm' ? pe_provider_remove(p, a[0], err)
            : name[0] == 'r'                 ? pe_provider_resume(p, a[0], err)
            : name[0] == 'p'                 ? pe_provider_pause(p, a[0], err)
            : strcmp(name, "start") == 0     ? pe_provider_start(p, a[0], err)
                                             : pe_provider_stop(p, a[0], err);
        return r < 0 ? fail(err) : print(json_object());
    }
    if (strcmp(name, "snapshot") == 0 && n >= 2) { /* snapshot SID NAME */
        if (pe_provider_snapshot_create(p, a[0], a[1], &id, err) < 0)
            return fail(err);
        print(json_pack("{s:s}", "snapshot", id));
        free(id);
        return 0;
    }
    if (strcmp(name, "snapshot-rm") == 0) /* snapshot-rm SNAP */
        return pe_provider_snapshot_delete(p, a[0], err) < 0 ? fail(err) : print(json_object());
    if (strcmp(name, "snapshot-restore") == 0 && n >= 2) /* snapshot-restore SID SNAP */
        return pe_provider_snapshot_restore(p, a[0], a[1], err) < 0 ? fail(err)
                                                                    : print(json_object());
    if (strcmp(name, "exec") == 0 && n >= 2)
        return step_exec(p, a, err);
    if (strcmp(name, "stream") == 0 && n >= 2)
        return step_stream(p, a[0], a + 1, NULL, err);
    if (strcmp(name, "stdin") == 0 && n >= 3)
        return step_stream(p, a[0], a + 2, a[1], err);
    if (strcmp(name, "pty") == 0 && n >= 2)
        return step_pty(p, a[0], a[1], err);
    if (strcmp(name, "preview") == 0 && n >= 2) {
        pe_provider_preview_link pv;
        if (pe_provider_preview(p, a[0], (uint16_t)strtoul(a[1], NULL, 10), &pv, err) < 0)
            return fail(err);
        return print(json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b}", "url", pv.url, "header_name",
                               pv.header_name, "header_value", pv.header_value, "header2_name",
                               pv.header2_name, "header2_value", pv.header2_value,
                               "needs_credential", pv.needs_credential, "proxy", pv.proxy));
    }
    if (strcmp(name, "forward") == 0 && n >= 3)
        return step_forward(p, a[0], a[1], a[2], err);
    return step_files(p, name, a, n, err);
}

/* forward SID PORT DATA: DATA to the port through port_open, and what
 * comes back until the port closes (10 s at most). */
static int step_forward(pe_provider *p, const char *id, const char *port, const char *data,
                        pe_err *err)
{
    char *got = NULL;
    size_t len = 0;
    int fd, r;

    if (pe_provider_port_open(p, id, (uint16_t)strtoul(port, NULL, 10), &fd, err) < 0)
        return fail(err);
    if (write(fd, data, strlen(data)) != (ssize_t)strlen(data)) {
        close(fd);
        pe_err_set(err, PE_ESYS, errno, "write to the forwarded port");
        return fail(err);
    }
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char buf[4096];
        ssize_t got_n;
        if (poll(&pfd, 1, 10000) <= 0)
            break;
        got_n = read(fd, buf, sizeof(buf));
        if (got_n <= 0)
            break;
        got = pe_xrealloc(got, len + (size_t)got_n + 1);
        memcpy(got + len, buf, (size_t)got_n);
        len += (size_t)got_n;
        got[len] = '\0';
    }
    close(fd);
    r = print(json_pack("{s:s%}", "data", got ? got : "", len));
    free(got);
    return r;
}

int main(int argc, char **argv)
{
    pe_provider_config cfg = {
        .creds = {.base_url = getenv("PE_PROVIDER_URL"),
                  .key = getenv("PE_PROVIDER_KEY"),
                  .org = getenv("PE_PROVIDER_ORG"),
                  .project = getenv("PE_PROVIDER_PROJECT")},
        .timeout_ms = env_ms("PE_PROVIDER_TIMEOUT_MS"),
        .create_timeout_ms = env_ms("PE_PROVIDER_CREATE_TIMEOUT_MS"),
        .data_dir = getenv("PE_PROVIDER_DATA"),
        .preview_url = getenv("PE_PROVIDER_PREVIEW_URL"),
    };
    pe_provider *p = NULL;
    pe_err err = {0};
    int r;

    t0 = pe_monotonic_ms();
    if (argc < 3) {
        fprintf(stderr, "usage: provider-drive PROVIDER STEP [ARGS...]\n");
        return 2;
    }
    if (pe_provider_open(&p, argv[1], &cfg, &err) < 0)
        return fail(&err);
    r = step(p, argv[2], argv + 3, argc - 3, &err);
    pe_provider_close(p);
    if (r == -2) {
        fprintf(stderr, "provider-drive: bad arguments for step %s\n", argv[2]);
        return 2;
    }
    return r;
}
