/* Cloning a sandbox's repo: createSandbox's `repo` on its first start,
 * startSandbox's `repo` on that start.
 *
 * The clone runs inside the sandbox as `git clone -- URL DIR` from an argv,
 * never through a shell (upstream pastes the URL into a shell command,
 * reference §9), in the sandbox's working directory, after the sandbox is
 * RUNNING: like upstream, clients do not wait for it. Its outcome shows in
 * statusReason ("cloned ..." or why not), and in the log.
 *
 * Accepted: http(s)://, git://, ssh:// URLs, scp-like user@host:path, and
 * upstream's shorthands github:owner/repo and tangled:owner/repo. Nothing
 * that starts with '-', holds whitespace or control characters, or names a
 * directory that is not a plain name. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "daemon.h"

#define REPO_MAX 2048
#define CLONE_TIMEOUT 600.0
#define CLONE_ERR_MAX 300

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* owner/repo of a shorthand: letters, digits, '-', '_', '.' around one '/'. */
static bool shorthand_path(const char *p)
{
    int slashes = 0;

    if (*p == '\0' || *p == '/' || *p == '.')
        return false;
    for (; *p; p++) {
        if (*p == '/')
            slashes++;
        else if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
            return false;
    }
    return slashes == 1;
}

char *pe_daemon_repo_url(const char *repo, char **dir_out, pe_err *err)
{
    static const char *const schemes[] = {"https://", "http://", "git://", "ssh://"};
    char *url = NULL;
    const char *base, *end;
    size_t n = strlen(repo);
    bool ok = false;

    if (n == 0 || n > REPO_MAX || repo[0] == '-') {
        pe_err_set(err, PE_EINVAL, 0, "repo must be a git URL of at most %d bytes", REPO_MAX);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)repo[i] <= ' ' || repo[i] == 0x7f) {
            pe_err_set(err, PE_EINVAL, 0, "repo must not contain spaces or control characters");
            return NULL;
        }
    }
    if (has_prefix(repo, "github:") && shorthand_path(repo + 7))
        url = pe_xasprintf("https://github.com/%s", repo + 7);
    else if (has_prefix(repo, "tangled:") && shorthand_path(repo + 8))
        url = pe_xasprintf("https://tangled.org/%s", repo + 8);
    for (size_t i = 0; url == NULL && i < PE_ARRAY_LEN(schemes); i++)
        ok |= has_prefix(repo, schemes[i]) && repo[strlen(schemes[i])] != '\0';
    /* scp-like: user@host:path, no scheme */
    if (url == NULL && !ok) {
        const char *at = strchr(repo, '@'), *colon = strchr(repo, ':');
        const char *slash = strchr(repo, '/');
        ok = at && colon && at > repo && colon > at + 1 && colon[1] != '\0' &&
             (slash == NULL || slash > colon);
    }
    if (url == NULL && !ok) {
        pe_err_set(err, PE_EINVAL, 0,
                   "repo must be an https://, http://, git:// or ssh:// URL, user@host:path, "
                   "or github:owner/repo");
        return NULL;
    }
    if (url == NULL)
        url = pe_xstrdup(repo);
    /* The directory git would pick: the last path component, minus .git. */
    end = url + strlen(url);
    while (end > url && end[-1] == '/')
        end--;
    base = end;
    while (base > url && base[-1] != '/' && base[-1] != ':')
        base--;
    if (end - base > 4 && strncmp(end - 4, ".git", 4) == 0)
        end -= 4;
    if (end == base || (end - base == 1 && *base == '.') ||
        (end - base == 2 && strncmp(base, "..", 2) == 0)) {
        free(url);
        pe_err_set(err, PE_EINVAL, 0, "repo URL names no repository");
        return NULL;
    }
    for (const char *p = base; p < end; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("-_.", *p)) {
            free(url);
            pe_err_set(err, PE_EINVAL, 0, "repo name must be letters, digits, '-', '_', '.'");
            return NULL;
        }
    }
    if (dir_out)
        *dir_out = pe_xasprintf("%.*s", (int)(end - base), base);
    return url;
}

/* Last line of what git said, for statusReason. */
static void last_line(char *buf, size_t len, char *out, size_t size)
{
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    const char *line = strrchr(buf, '\n') ? strrchr(buf, '\n') + 1 : buf;
    size_t n = strlen(line) < size ? strlen(line) : size - 1;

    memcpy(out, line, n);
    out[n] = '\0';
}

static bool runs_remote(pe_store *s, const char *id)
{
    pe_store_sandbox sb;
    bool remote;
    pe_err e;

    pe_err_clear(&e);
    if (pe_store_sandbox_get(s, id, &sb, &e) < 0)
        return false;
    remote = pe_sandbox_is_remote(&sb);
    pe_store_sandbox_clear(&sb);
    return remote;
}

/* The clone in a remote sandbox, through its provider: *reason says how
 * it went. */
static void clone_remote(pe_daemon_job *job, pe_store *s, char **argv, char *reason, size_t size)
{
    pe_provider_exec_opts o = {.argv = argv, .timeout = CLONE_TIMEOUT};
    pe_provider_exec_result res = {0};
    pe_store_sandbox sb;
    char said[CLONE_ERR_MAX];

    if (pe_store_sandbox_get(s, job->id, &sb, &job->err) < 0) {
        snprintf(reason, size, "repo not cloned: %.250s", job->err.msg);
        return;
    }
    if (pe_sandbox_exec(&job->d->sx, s, &sb, &o, sizeof(said) * 8, &res, &job->err) < 0) {
        snprintf(reason, size, "repo not cloned: %.250s", job->err.msg);
    } else {
        char tail[4096];
        size_t n = res.err_len < sizeof(tail) - 1 ? res.err_len : sizeof(tail) - 1;
        /* the error is at the end: keep the tail, NUL-terminated for last_line */
        if (n)
            memcpy(tail, res.err + res.err_len - n, n);
        last_line(tail, n, said, sizeof(said));
        if (res.timed_out)
            snprintf(reason, size, "repo not cloned: no answer in %g s", CLONE_TIMEOUT);
        else if (res.exit_code == 0)
            snprintf(reason, size, "cloned %s into %s", argv[3], argv[4]);
        else if (res.exit_code == 127)
            snprintf(reason, size, "repo not cloned: the image has no git");
        else
            snprintf(reason, size, "repo not cloned (git exit %d): %s", res.exit_code, said);
    }
    pe_provider_exec_free(&res);
    pe_store_sandbox_clear(&sb);
}

static void clone_work(pe_daemon_job *job, pe_store *s)
{
    const char *repo = json_string_value(json_object_get(job->in, "repo"));
    cleanup_free char *dir = NULL;
    cleanup_free char *url = pe_daemon_repo_url(repo, &dir, &job->err);
    char *argv[] = {(char *)"git", (char *)"clone", (char *)"--", url, dir, NULL};
    pe_proc_opts opts = {.argv = argv, .capture = true};
    double deadline = pe_monotonic_s() + CLONE_TIMEOUT;
    bool timed_out = false;
    char errbuf[4096], reason[CLONE_ERR_MAX + 64], said[CLONE_ERR_MAX];
    size_t elen = 0;
    pe_proc p;
    int code = -1;

    if (url == NULL) {
        pe_daemon_job_fail(job, &job->err, NULL);
        return;
    }
    if (runs_remote(s, job->id)) {
        clone_remote(job, s, argv, reason, sizeof(reason));
        goto out;
    }
    pe_daemon_hold(job->d, job->id);
    if (pe_runtime_exec_start(&job->d->rt, job->id, &opts, &p, &job->err) < 0) {
        pe_daemon_release(job->d, job->id);
        if (job->err.errnum == ENOENT)
            snprintf(reason, sizeof(reason), "repo not cloned: the image has no git");
        else
            snprintf(reason, sizeof(reason), "repo not cloned: %.250s", job->err.msg);
        goto out;
    }
    close(p.stdin_fd);
    p.stdin_fd = -1;
    close(p.stdout_fd); /* git clone reports on stderr */
    p.stdout_fd = -1;
    for (;;) {
        struct pollfd pfd = {p.stderr_fd, POLLIN, 0};
        double left = deadline - pe_monotonic_s();
        ssize_t n;

        if (left <= 0) {
            pe_proc_signal(&p, SIGKILL);
            timed_out = true;
            break;
        }
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        if (elen > sizeof(errbuf) / 2) { /* keep the tail: the error is at the end */
            memmove(errbuf, errbuf + elen - sizeof(errbuf) / 4, sizeof(errbuf) / 4);
            elen = sizeof(errbuf) / 4;
        }
        n = read(p.stderr_fd, errbuf + elen, sizeof(errbuf) - 1 - elen);
        if (n > 0)
            elen += (size_t)n;
        else if (n == 0 || errno != EINTR)
            break;
    }
    if (pe_proc_wait(&p, &code, &job->err) < 0)
        code = -1;
    pe_proc_close(&p);
    pe_daemon_release(job->d, job->id);
    last_line(errbuf, elen, said, sizeof(said));
    if (timed_out)
        snprintf(reason, sizeof(reason), "repo not cloned: no answer in %g s", CLONE_TIMEOUT);
    else if (code == 0)
        snprintf(reason, sizeof(reason), "cloned %s into %s", url, dir);
    else if (code == 127)
        snprintf(reason, sizeof(reason), "repo not cloned: the image has no git");
    else
        snprintf(reason, sizeof(reason), "repo not cloned (git exit %d): %s", code, said);
out:
    pe_log_info("event=clone sandbox=%s %s", job->id, reason);
    pe_err_clear(&job->err);
    if (pe_store_sandbox_set_status(s, job->id, PE_STORE_RUNNING, reason, PE_STORE_RUNNING,
                                    &job->err) < 0)
        pe_err_clear(&job->err); /* stopped or deleted meanwhile: nothing to say */
}

void pe_daemon_repo_clone_later(pe_daemon *d, const char *owner, const char *sandbox_id,
                                const char *repo)
{
    pe_daemon_job *job = pe_daemon_job_new(d, NULL, owner, clone_work);

    job->id = pe_xstrdup(sandbox_id);
    job->in = json_pack("{s:s}", "repo", repo);
    job->kind = PE_JOB_LONG;
    job->background = true; /* owed to the start that asked for it */
    pe_daemon_job_submit(job);
}
