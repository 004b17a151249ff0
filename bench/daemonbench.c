/* daemonbench: the daemon's XRPC API timed from a client (issue 4).
 *
 *   daemonbench -p PORT -T TOKEN_FILE create [-r N] [-w N] [-i MS] [-B BASE] [-o CSV]
 *   daemonbench -p PORT -T TOKEN_FILE exec -s ID [-r N] [-w N] [-f FILE] [-b VAR] [-o CSV]
 *   daemonbench -p PORT -T TOKEN_FILE rate [-r N] [-c CONNS] [-i MS] [-B BASE]
 *
 * Always 127.0.0.1: one HTTP/1.1 keep-alive connection over a raw socket
 * (TCP_NODELAY), one request at a time, timed with CLOCK_MONOTONIC around
 * the write of the request and the read of the whole answer. The client's
 * own cost shows in the `exec` mode's getPublicKey row (answered on the
 * daemon's loop thread, no worker, no store), the floor of any API call.
 *
 * create: every round makes one sandbox per variant, in a shuffled order,
 * and times createSandbox until the answer of the first exec of `true`
 * that succeeds. "exec-retry" sends exec right after the create answer and
 * again every -i ms until it answers 200 (it answers an error while the
 * sandbox is INITIALIZING); "poll-getSandbox" polls getSandbox every -i ms
 * until RUNNING, then sends exec. Each sandbox is deleted after its sample
 * (not timed).
 *
 * exec: the round trip of exec `true` into one running sandbox, next to
 * getSandbox, getPublicKey and the command lines of -f ("[label] cmd ...",
 * as altbench: fork, exec, wait; exit status 0 required), all interleaved
 * and shuffled every round.
 *
 * rate: the sustained create rate as bench/create-rate.py's "api" mode
 * measures it (CONNS connections, each sending createSandbox and polling
 * getSandbox every -i ms until RUNNING, until N were sent; the clock stops
 * when the last one runs; then all are deleted, timed apart), with a
 * client that costs the 2-CPU host a fraction of what the Python one did.
 * Prints one JSON line.
 *
 * Measures and prints; it never judges (STYLE.md rule 21). Any unexpected
 * answer aborts the run: a fast error must never pass for a fast call. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_VARIANTS 32
#define MAX_ARGS 64
#define MAX_LINE 4096
#define MAX_ANSWER (16u << 20)
#define READY_TIMEOUT_MS 30000.0

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("daemonbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size ? size : 1);
    if (p == NULL)
        die("out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t len)
{
    char *p = strndup(s, len);

    if (p == NULL)
        die("out of memory");
    return p;
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1e3),
                          (long)((ms - (double)(time_t)(ms / 1e3) * 1e3) * 1e6)};

    while (ms > 0 && nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static unsigned long parse_ulong(const char *what, const char *s, unsigned long max)
{
    char *end = NULL;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max)
        die("%s: expected a number from 0 to %lu, got \"%s\"", what, max, s);
    return v;
}

static double parse_ms(const char *what, const char *s)
{
    char *end = NULL;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0 && v <= 10000))
        die("%s: expected milliseconds from 0 to 10000, got \"%s\"", what, s);
    return v;
}

/* ---- HTTP/1.1 client: one keep-alive connection ------------------------- */

typedef struct client {
    int fd;
    unsigned port;
    char auth[4096]; /* "Authorization: Bearer ...\r\n" */
    char *buf;       /* answer bytes read so far */
    size_t len, cap;
    unsigned connects; /* how often (re)connected: keep-alive must hold */
} client;

typedef struct answer {
    int status;
    const char *body; /* into the client's buffer, NUL-terminated */
    size_t body_len;
} answer;

static void client_connect(client *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
    int one = 1;

    if (c->fd >= 0)
        close(c->fd);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s", strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect 127.0.0.1:%u: %s", c->port, strerror(errno));
    c->connects++;
}

static void send_all(client *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("send: %s", w < 0 ? strerror(errno) : "nothing sent");
        p += w;
        n -= (size_t)w;
    }
}

/* Read more into c->buf; false at EOF. */
static bool read_more(client *c)
{
    ssize_t r;

    if (c->len + 4096 + 1 > c->cap) {
        if (c->cap >= MAX_ANSWER)
            die("answer larger than %u bytes", MAX_ANSWER);
        c->cap = c->cap ? c->cap * 2 : 65536;
        c->buf = xrealloc(c->buf, c->cap);
    }
    do
        r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        die("recv: %s", strerror(errno));
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    return r > 0;
}

/* Case-insensitive search for a header line "Name: value" in the header
 * block [buf, end); the value or NULL. */
static const char *find_header(const char *buf, const char *end, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = buf; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p += *p == '\n';
        if ((size_t)(end - p) > n + 1 && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            p += n + 1;
            while (*p == ' ')
                p++;
            return p;
        }
    }
    return NULL;
}

/* Read until the end of the answer's header block; its length, or 0 if
 * the connection was closed before any byte came. */
static size_t read_head(client *c, const char *what)
{
    const char *hend;

    while ((hend = c->buf ? strstr(c->buf, "\r\n\r\n") : NULL) == NULL)
        if (!read_more(c)) {
            if (c->len == 0)
                return 0;
            die("%s: connection closed mid-answer", what);
        }
    return (size_t)(hend - c->buf) + 4;
}

/* One request and its whole answer. The answer must carry Content-Length
 * (libmicrohttpd sends it for the daemon's buffered answers). A connection
 * the server closed before answering (idle keep-alive, "Connection: close"
 * on the previous answer) is reopened once. */
static void request(client *c, const char *method, const char *path, const char *body, answer *a)
{
    char head[8192];
    size_t blen = body ? strlen(body) : 0, hlen = 0, want;
    const char *cl, *conn;
    char *end = NULL;
    int n;

    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n%s%sContent-Length: %zu\r\n\r\n%s",
                 method, path, c->port, c->auth, body ? "Content-Type: application/json\r\n" : "",
                 blen, body ? body : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        die("request too long");
    for (int attempt = 0; hlen == 0; attempt++) {
        if (attempt == 2)
            die("%s %s: connection closed without an answer, twice", method, path);
        if (c->fd < 0)
            client_connect(c);
        c->len = 0;
        if (c->buf)
            c->buf[0] = '\0';
        send_all(c, head, (size_t)n);
        hlen = read_head(c, path);
        if (hlen == 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
    if (strncmp(c->buf, "HTTP/1.", 7) != 0 || c->len < 12)
        die("%s %s: not an HTTP answer: %.60s", method, path, c->buf);
    a->status = (int)strtol(c->buf + 9, NULL, 10);
    cl = find_header(c->buf, c->buf + hlen, "Content-Length");
    if (cl == NULL)
        die("%s %s: answer without Content-Length", method, path);
    want = (size_t)strtoull(cl, &end, 10);
    if (end == cl || want > MAX_ANSWER)
        die("%s %s: bad Content-Length", method, path);
    while (c->len < hlen + want)
        if (!read_more(c))
            die("%s %s: connection closed mid-body", method, path);
    conn = find_header(c->buf, c->buf + hlen, "Connection");
    a->body = c->buf + hlen;
    a->body_len = want;
    c->buf[hlen + want] = '\0';
    if (conn && strncasecmp(conn, "close", 5) == 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* The string value of "key" in a flat JSON answer, copied; NULL if absent. */
static char *json_str(const char *body, const char *key)
{
    char pat[64];
    const char *p, *q;

    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    p = strstr(body, pat);
    if (p == NULL)
        return NULL;
    p += strlen(pat);
    q = strchr(p, '"');
    return q ? xstrndup(p, (size_t)(q - p)) : NULL;
}

static void read_token(client *c, const char *path)
{
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    char *tok;

    if (n <= 0)
        die("read %s: %s", path, n < 0 ? strerror(errno) : "empty");
    close(fd);
    buf[n] = '\0';
    /* {"token": "..."} as the daemon writes it, with or without blanks */
    for (char *s = buf, *d = buf;; s++) {
        if (*s != ' ')
            *d++ = *s;
        if (*s == '\0')
            break;
    }
    tok = json_str(buf, "token");
    if (tok == NULL || strlen(tok) > sizeof(c->auth) - 64)
        die("%s: no token in it", path);
    snprintf(c->auth, sizeof(c->auth), "Authorization: Bearer %s\r\n", tok);
    free(tok);
}

/* ---- statistics --------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Linear interpolation between closest ranks (numpy's default), as altbench. */
static double quantile(const double *sorted, size_t n, double p)
{
    double pos = p * (double)(n - 1);
    size_t lo = (size_t)pos;

    if (lo + 1 >= n)
        return sorted[n - 1];
    return sorted[lo] + (pos - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

typedef struct summary {
    double p10, p50, p90, p99, mean;
} summary;

static summary summarize(const double *v, size_t n)
{
    double *s = xrealloc(NULL, n * sizeof(double)), sum = 0;
    summary out;

    memcpy(s, v, n * sizeof(double));
    qsort(s, n, sizeof(double), cmp_double);
    for (size_t i = 0; i < n; i++)
        sum += s[i];
    out.p10 = quantile(s, n, 0.1);
    out.p50 = quantile(s, n, 0.5);
    out.p90 = quantile(s, n, 0.9);
    out.p99 = quantile(s, n, 0.99);
    out.mean = sum / (double)n;
    free(s);
    return out;
}

/* splitmix64, seeded from the clock (printed), as altbench. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void shuffle(size_t *order, size_t n, uint64_t *state)
{
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(next_rand(state) % i), t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
}

static void loadavg(char *buf, size_t size)
{
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    ssize_t r = fd >= 0 ? read(fd, buf, size - 1) : -1;
    char *p = buf;

    buf[r > 0 ? r : 0] = '\0';
    if (fd >= 0)
        close(fd);
    for (int k = 0; k < 3 && p != NULL; k++)
        p = strchr(p + (k > 0), ' ');
    if (p != NULL)
        *p = '\0';
}

/* ---- options ------------------------------------------------------------ */

typedef struct options {
    unsigned long rounds, warmup, conns;
    double poll_ms, gap_ms;
    const char *base, *sandbox, *baseline, *raw, *file;
    uint64_t seed;
} options;

static void usage(FILE *f)
{
    fputs(
        "usage: daemonbench -p PORT -T TOKEN_FILE create [-r N] [-w N] [-i MS] [-g MS] [-B BASE]"
        " [-f FILE] [-o CSV]\n"
        "       daemonbench -p PORT -T TOKEN_FILE exec -s ID [-r N] [-w N] [-f FILE] [-b VAR]"
        " [-o CSV]\n"
        "       daemonbench -p PORT -T TOKEN_FILE rate [-r N] [-c CONNS] [-i MS] [-B BASE]\n"
        "  -r N     measured rounds (create: 50, exec: 400; rate: creates, 1000); -w N warm-up\n"
        "           rounds (5, 20)\n"
        "  -c N     rate: connections, each with one create at a time (8)\n"
        "  -i MS    create: wait between exec/getSandbox retries (0.5; rate: 2)\n"
        "  -g MS    create: wait after each sample's delete, untimed, so that its teardown and\n"
        "           the pool's refill are over before the next create (0)\n"
        "  -B BASE  create: the image to create from (busybox)\n"
        "  -s ID    exec: the running sandbox (id or name)\n"
        "  -f FILE  more variants, one per line: \"[label] CMD ARGS [&& CMD ARGS]... [;; "
        "CLEANUP]\"\n"
        "           (split on blanks, no shell; the commands before ';;' are timed, in sequence,\n"
        "           each must exit 0; those after it run untimed after every sample)\n"
        "  -b VAR   the baseline's label (default: the first variant)\n"
        "  -o CSV   every sample as CSV\n",
        f);
}

/* ---- variants: API calls and command lines ------------------------------ */

enum { API_EXEC, API_GET, API_PUBKEY, API_CREATE_RETRY, API_CREATE_POLL, CMD };

typedef struct sample {
    double total, created, ready, exec, requests; /* the parts: create variants only */
} sample;

typedef struct variant {
    int kind;
    char *label, *line;
    /* CMD: the tokens, each command ended by a NULL ("&&"); from
     * argv[cleanup] on (if > 0) the untimed cleanup */
    char *argv[MAX_ARGS + 1];
    size_t nargs, cleanup;
    char *path; /* API_EXEC, API_GET */
    sample *s;
} variant;

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static void add_token(variant *v, const char *s, size_t len, const char *line)
{
    if (v->nargs == MAX_ARGS)
        die("more than %d words in \"%s\"", MAX_ARGS, line);
    if (len == 2 && memcmp(s, "&&", 2) == 0) {
        v->argv[v->nargs++] = NULL;
    } else if (len == 2 && memcmp(s, ";;", 2) == 0) {
        if (v->cleanup)
            die("two ';;' in \"%s\"", line);
        v->argv[v->nargs++] = NULL;
        v->cleanup = v->nargs;
    } else {
        v->argv[v->nargs++] = xstrndup(s, len);
    }
}

/* "[label] cmd args [&& cmd args]... [;; cleanup]" split on blanks. */
static void parse_command(variant *v, const char *s, size_t len)
{
    size_t i = 0;

    v->kind = CMD;
    while (i < len && is_blank(s[i]))
        i++;
    if (i < len && s[i] == '[') {
        const char *close = memchr(s + i, ']', len - i);
        if (close == NULL || close == s + i + 1)
            die("bad label in \"%.*s\"", (int)len, s);
        v->label = xstrndup(s + i + 1, (size_t)(close - s - i - 1));
        i = (size_t)(close - s) + 1;
    }
    while (i < len && is_blank(s[i]))
        i++;
    v->line = xstrndup(s + i, len - i);
    while (i < len) {
        size_t start = i;
        while (i < len && !is_blank(s[i]))
            i++;
        add_token(v, s + start, i - start, v->line);
        while (i < len && is_blank(s[i]))
            i++;
    }
    v->argv[v->nargs] = NULL;
    if (v->nargs == 0 || v->argv[0] == NULL || v->argv[v->nargs - 1] == NULL)
        die("empty command in \"%.*s\"", (int)len, s);
    for (size_t k = 1; k < v->nargs; k++)
        if (v->argv[k] == NULL && v->argv[k - 1] == NULL)
            die("empty command in \"%.*s\"", (int)len, s);
    if (v->label == NULL)
        v->label = xstrndup(v->line, strlen(v->line));
}

static size_t read_commands(variant *v, size_t n, const char *path)
{
    char line[MAX_LINE + 2];
    FILE *f = fopen(path, "re");

    if (f == NULL)
        die("open %s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line), i = 0;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        while (i < len && is_blank(line[i]))
            i++;
        if (i == len || line[i] == '#')
            continue;
        if (n == MAX_VARIANTS)
            die("more than %d variants", MAX_VARIANTS);
        parse_command(&v[n++], line, len);
    }
    fclose(f);
    return n;
}

/* fork -> execvp -> waitpid of argv (up to its NULL); must exit 0. */
static void run_one(const variant *v, char **argv, int devnull)
{
    int status = 0;
    pid_t pid = fork();

    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0)
            _exit(126);
        execvp(argv[0], argv);
        dprintf(2, "daemonbench: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("\"%s\" (%s) failed with status 0x%x", v->label, argv[0], (unsigned)status);
}

/* The commands in argv[from, to), one after the other. */
static void run_seq(const variant *v, size_t from, size_t to, int devnull)
{
    for (size_t k = from; k < to; k++) {
        run_one(v, (char **)&v->argv[k], devnull);
        while (k < to && v->argv[k] != NULL)
            k++;
    }
}

static sample run_command(const variant *v, int devnull)
{
    double t0 = now_ms();
    sample s = {0};

    run_seq(v, 0, v->cleanup ? v->cleanup - 1 : v->nargs, devnull);
    s.total = now_ms() - t0;
    if (v->cleanup)
        run_seq(v, v->cleanup, v->nargs, devnull);
    return s;
}

/* ---- create -> first exec ----------------------------------------------- */

static bool is_running(const answer *a)
{
    if (a->status != 200)
        die("getSandbox: HTTP %d: %s", a->status, a->body);
    if (strstr(a->body, "\"status\":\"FAILED\""))
        die("the sandbox failed to start: %s", a->body);
    return strstr(a->body, "\"status\":\"RUNNING\"") != NULL;
}

/* One create -> first successful exec of `true`; the sandbox is deleted
 * afterwards, outside the timed part. */
static sample create_once(client *c, const options *o, int kind)
{
    char body[256], path[512];
    sample s = {0};
    double t0, t_send;
    answer a;
    char *id;

    snprintf(body, sizeof(body), "{\"base\":\"%s\"}", o->base);
    t0 = now_ms();
    request(c, "POST", "/xrpc/io.pocketenv.sandbox.createSandbox", body, &a);
    s.created = now_ms() - t0;
    s.requests = 1;
    if (a.status != 200 || (id = json_str(a.body, "id")) == NULL)
        die("createSandbox: HTTP %d: %s", a.status, a.body);
    snprintf(path, sizeof(path), "/xrpc/io.pocketenv.sandbox.getSandbox?id=%s", id);
    while (kind == API_CREATE_POLL) {
        request(c, "GET", path, NULL, &a);
        s.requests++;
        if (is_running(&a))
            break;
        if (now_ms() - t0 > READY_TIMEOUT_MS)
            die("sandbox %s not RUNNING after %.0f ms", id, READY_TIMEOUT_MS);
        sleep_ms(o->poll_ms);
    }
    snprintf(path, sizeof(path), "/xrpc/io.pocketenv.sandbox.exec?id=%s", id);
    for (;;) {
        t_send = now_ms();
        request(c, "POST", path, "{\"command\":\"true\"}", &a);
        s.requests++;
        if (a.status == 200)
            break;
        /* 400 "not running" is the only answer that means "not yet" */
        if (kind == API_CREATE_POLL || a.status != 400)
            die("exec into %s: HTTP %d: %s", id, a.status, a.body);
        if (now_ms() - t0 > READY_TIMEOUT_MS)
            die("exec into %s still failing after %.0f ms: HTTP %d: %s", id, READY_TIMEOUT_MS,
                a.status, a.body);
        sleep_ms(o->poll_ms);
    }
    s.total = now_ms() - t0;
    s.exec = s.total - (t_send - t0);
    s.ready = t_send - t0;
    if (!strstr(a.body, "\"exitCode\":0"))
        die("exec of true into %s: %s", id, a.body);
    snprintf(path, sizeof(path), "/xrpc/io.pocketenv.sandbox.deleteSandbox?id=%s", id);
    request(c, "POST", path, "{}", &a);
    if (a.status != 200)
        die("deleteSandbox %s: HTTP %d: %s", id, a.status, a.body);
    free(id);
    if (o->gap_ms > 0)
        sleep_ms(o->gap_ms);
    return s;
}

/* ---- exec round trip ---------------------------------------------------- */

static sample run_api(client *c, const variant *v)
{
    const char *method = v->kind == API_EXEC ? "POST" : "GET";
    const char *body = v->kind == API_EXEC ? "{\"command\":\"true\"}" : NULL;
    double t0 = now_ms();
    sample s = {0};
    answer a;

    request(c, method, v->path, body, &a);
    s.total = now_ms() - t0;
    if (a.status != 200)
        die("%s: HTTP %d: %s", v->label, a.status, a.body);
    if (body && !strstr(a.body, "\"exitCode\":0"))
        die("%s: %s", v->label, a.body);
    return s;
}

static void api_variant(variant *v, int kind, const char *label, const char *id)
{
    char buf[512];

    v->kind = kind;
    v->label = xstrndup(label, strlen(label));
    switch (kind) {
    case API_EXEC:
        snprintf(buf, sizeof(buf), "/xrpc/io.pocketenv.sandbox.exec?id=%s", id);
        v->path = xstrndup(buf, strlen(buf));
        snprintf(buf, sizeof(buf), "POST %s {\"command\":\"true\"}", v->path);
        break;
    case API_GET:
        snprintf(buf, sizeof(buf), "/xrpc/io.pocketenv.sandbox.getSandbox?id=%s", id);
        v->path = xstrndup(buf, strlen(buf));
        snprintf(buf, sizeof(buf), "GET %s", v->path);
        break;
    case API_PUBKEY:
        v->path = xstrndup("/xrpc/io.pocketenv.server.getPublicKey", 38);
        snprintf(buf, sizeof(buf), "GET %s", v->path);
        break;
    case API_CREATE_RETRY:
        snprintf(buf, sizeof(buf),
                 "POST createSandbox {\"base\":\"%s\"}, then POST exec "
                 "{\"command\":\"true\"} until 200",
                 id);
        break;
    default:
        snprintf(buf, sizeof(buf),
                 "POST createSandbox {\"base\":\"%s\"}, GET getSandbox until "
                 "RUNNING, POST exec {\"command\":\"true\"}",
                 id);
        break;
    }
    v->line = xstrndup(buf, strlen(buf));
}

/* ---- the run ------------------------------------------------------------ */

static void print_table(const options *o, variant *v, size_t n, bool parts)
{
    double *x = xrealloc(NULL, o->rounds * sizeof(double));
    size_t base = 0;
    summary sb, t, p[4];

    for (size_t i = 0; o->baseline && i < n; i++)
        if (strcmp(v[i].label, o->baseline) == 0)
            base = i;
    for (unsigned long r = 0; r < o->rounds; r++)
        x[r] = v[base].s[r].total;
    sb = summarize(x, o->rounds);
    printf("| variant | p50 ms | p10 | p90 | p99 | mean | × %s |%s\n", v[base].label,
           parts ? " create answered (p50) | last request sent (p50) | its answer took (p50) | "
                   "requests (p50) |"
                 : "");
    printf("|---|---:|---:|---:|---:|---:|---:|%s\n", parts ? "---:|---:|---:|---:|" : "");
    for (size_t i = 0; i < n; i++) {
        for (int f = 0; f < 5; f++) {
            for (unsigned long r = 0; r < o->rounds; r++) {
                const sample *s = &v[i].s[r];
                x[r] = f == 0   ? s->total
                       : f == 1 ? s->created
                       : f == 2 ? s->ready
                       : f == 3 ? s->exec
                                : s->requests;
            }
            if (f == 0)
                t = summarize(x, o->rounds);
            else
                p[f - 1] = summarize(x, o->rounds);
        }
        printf("| %s | **%.3f** | %.3f | %.3f | %.3f | %.3f | %.2f |", v[i].label, t.p50, t.p10,
               t.p90, t.p99, t.mean, t.p50 / sb.p50);
        if (parts && v[i].kind == CMD)
            printf(" — | — | — | — |");
        else if (parts)
            printf(" %.3f | %.3f | %.3f | %.0f |", p[0].p50, p[1].p50, p[2].p50, p[3].p50);
        putchar('\n');
    }
    printf("\n| variant | requests or commands |\n|---|---|\n");
    for (size_t i = 0; i < n; i++)
        printf("| %s | `%s` |\n", v[i].label, v[i].line);
    free(x);
}

static void write_raw(const options *o, const variant *v, size_t n)
{
    FILE *f = fopen(o->raw, "we");

    if (f == NULL)
        die("open %s: %s", o->raw, strerror(errno));
    fprintf(f, "variant,label,round,total_ms,created_ms,ready_ms,exec_ms,requests\n");
    for (size_t i = 0; i < n; i++)
        for (unsigned long r = 0; r < o->rounds; r++) {
            const sample *s = &v[i].s[r];
            fprintf(f, "%zu,\"%s\",%lu,%.6f,%.6f,%.6f,%.6f,%.0f\n", i + 1, v[i].label, r + 1,
                    s->total, s->created, s->ready, s->exec, s->requests);
        }
    if (fclose(f) != 0)
        die("write %s: %s", o->raw, strerror(errno));
}

/* Every round runs every variant once, in a fresh shuffled order. */
static void run(client *c, options *o, bool create)
{
    static variant v[MAX_VARIANTS];
    size_t n = 0, order[MAX_VARIANTS];
    uint64_t st = o->seed;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    char l0[64], l1[64];

    if (devnull < 0)
        die("open /dev/null: %s", strerror(errno));
    if (create) {
        api_variant(&v[n++], API_CREATE_RETRY, "API create -> exec (exec-retry)", o->base);
        api_variant(&v[n++], API_CREATE_POLL, "API create -> exec (poll-getSandbox)", o->base);
    } else {
        api_variant(&v[n++], API_EXEC, "API exec `true`", o->sandbox);
        api_variant(&v[n++], API_GET, "API getSandbox", o->sandbox);
        api_variant(&v[n++], API_PUBKEY, "API getPublicKey (loop thread only)", o->sandbox);
    }
    if (o->file)
        n = read_commands(v, n, o->file);
    for (size_t i = 0; i < n; i++)
        v[i].s = xrealloc(NULL, o->rounds * sizeof(sample));
    loadavg(l0, sizeof(l0));
    for (unsigned long r = 0; r < o->warmup + o->rounds; r++) {
        shuffle(order, n, &st);
        for (size_t k = 0; k < n; k++) {
            variant *x = &v[order[k]];
            sample s = x->kind == CMD ? run_command(x, devnull)
                       : x->kind == API_CREATE_RETRY || x->kind == API_CREATE_POLL
                           ? create_once(c, o, x->kind)
                           : run_api(c, x);
            if (r >= o->warmup)
                x->s[r - o->warmup] = s;
        }
    }
    loadavg(l1, sizeof(l1));
    printf("daemonbench %s: %zu variants, %lu rounds (+%lu warm-up), interleaved and shuffled, "
           "seed %llu; load avg %s at start, %s at end; %u TCP connection(s) for the API rows",
           create ? "create" : "exec", n, o->rounds, o->warmup, (unsigned long long)o->seed, l0, l1,
           c->connects);
    if (create)
        printf("; retry interval %.2f ms; %.0f ms after each delete", o->poll_ms, o->gap_ms);
    printf("\n\n");
    print_table(o, v, n, create);
    if (o->raw)
        write_raw(o, v, n);
}

/* ---- rate: sustained creates over several connections ------------------ */

typedef struct rate_run {
    const options *o;
    const char *auth;
    unsigned port;
    pthread_mutex_t mu;
    unsigned long next; /* creates sent, or deletes taken */
    char **ids;
    unsigned long running_at_once; /* answered RUNNING (from a pool) */
    bool deleting;
} rate_run;

static void *rate_worker(void *arg)
{
    rate_run *r = arg;
    client c = {.fd = -1, .port = r->port};
    char path[512], body[256];
    unsigned long i;
    answer a;

    snprintf(c.auth, sizeof(c.auth), "%s", r->auth);
    client_connect(&c);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        i = r->next < r->o->rounds ? r->next++ : r->o->rounds;
        pthread_mutex_unlock(&r->mu);
        if (i == r->o->rounds)
            break;
        if (r->deleting) {
            snprintf(path, sizeof(path), "/xrpc/io.pocketenv.sandbox.deleteSandbox?id=%s",
                     r->ids[i]);
            request(&c, "POST", path, "{}", &a);
            if (a.status != 200)
                die("deleteSandbox %s: HTTP %d: %s", r->ids[i], a.status, a.body);
            continue;
        }
        snprintf(body, sizeof(body), "{\"base\":\"%s\"}", r->o->base);
        request(&c, "POST", "/xrpc/io.pocketenv.sandbox.createSandbox", body, &a);
        if (a.status != 200 || (r->ids[i] = json_str(a.body, "id")) == NULL)
            die("createSandbox: HTTP %d: %s", a.status, a.body);
        if (strstr(a.body, "\"status\":\"RUNNING\"")) {
            pthread_mutex_lock(&r->mu);
            r->running_at_once++;
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        snprintf(path, sizeof(path), "/xrpc/io.pocketenv.sandbox.getSandbox?id=%s", r->ids[i]);
        for (double t0 = now_ms();;) {
            sleep_ms(r->o->poll_ms);
            request(&c, "GET", path, NULL, &a);
            if (is_running(&a))
                break;
            if (now_ms() - t0 > READY_TIMEOUT_MS)
                die("sandbox %s not RUNNING after %.0f ms", r->ids[i], READY_TIMEOUT_MS);
        }
    }
    close(c.fd);
    free(c.buf);
    return NULL;
}

static double rate_phase(rate_run *r, bool deleting)
{
    pthread_t *t = xrealloc(NULL, r->o->conns * sizeof(*t));
    double t0 = now_ms();

    r->next = 0;
    r->deleting = deleting;
    for (unsigned long k = 0; k < r->o->conns; k++)
        if (pthread_create(&t[k], NULL, rate_worker, r) != 0)
            die("pthread_create: %s", strerror(errno));
    for (unsigned long k = 0; k < r->o->conns; k++)
        pthread_join(t[k], NULL);
    free(t);
    return (now_ms() - t0) / 1000.0;
}

static void run_rate(const client *c, const options *o)
{
    rate_run r = {.o = o, .auth = c->auth, .port = c->port};
    double wall, del;

    pthread_mutex_init(&r.mu, NULL);
    r.ids = xrealloc(NULL, o->rounds * sizeof(char *));
    wall = rate_phase(&r, false);
    del = rate_phase(&r, true);
    printf("{\"n\": %lu, \"conns\": %lu, \"poll_ms\": %.2f, \"failures\": 0, "
           "\"answered_running\": %lu, \"wall_s\": %.3f, \"per_s\": %.1f, "
           "\"delete_per_s\": %.1f}\n",
           o->rounds, o->conns, o->poll_ms, r.running_at_once, wall, (double)o->rounds / wall,
           (double)o->rounds / del);
    for (unsigned long i = 0; i < o->rounds; i++)
        free(r.ids[i]);
    free(r.ids);
    pthread_mutex_destroy(&r.mu);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static client c = {.fd = -1};
    options o = {.poll_ms = -1, .base = "busybox", .conns = 8};
    const char *mode = NULL, *token_file = NULL;
    bool rounds_set = false, warmup_set = false;
    struct timespec ts;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-') {
            if (mode)
                die("unexpected argument %s (see -h)", a);
            mode = a;
            continue;
        }
        if (strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (a[1] == '\0' || a[2] != '\0' || strchr("pTrwigcBsfbo", a[1]) == NULL)
            die("unknown option %s (see -h)", a);
        if (v == NULL)
            die("%s needs an argument", a);
        i++;
        switch (a[1]) {
        case 'p':
            c.port = (unsigned)parse_ulong("-p", v, 65535);
            break;
        case 'T':
            token_file = v;
            break;
        case 'r':
            o.rounds = parse_ulong("-r", v, 1000000);
            rounds_set = true;
            break;
        case 'w':
            o.warmup = parse_ulong("-w", v, 1000000);
            warmup_set = true;
            break;
        case 'i':
            o.poll_ms = parse_ms("-i", v);
            break;
        case 'g':
            o.gap_ms = parse_ms("-g", v);
            break;
        case 'c':
            o.conns = parse_ulong("-c", v, 1024);
            break;
        case 'B':
            o.base = v;
            break;
        case 's':
            o.sandbox = v;
            break;
        case 'f':
            o.file = v;
            break;
        case 'b':
            o.baseline = v;
            break;
        case 'o':
            o.raw = v;
            break;
        }
    }
    if (mode == NULL || c.port == 0 || token_file == NULL) {
        usage(stderr);
        return 2;
    }
    read_token(&c, token_file);
    clock_gettime(CLOCK_REALTIME, &ts);
    o.seed = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec;
    if (o.poll_ms < 0)
        o.poll_ms = strcmp(mode, "rate") == 0 ? 2 : 0.5;
    if (strcmp(mode, "rate") == 0) {
        o.rounds = rounds_set ? o.rounds : 1000;
        if (o.rounds == 0 || o.conns == 0)
            die("rate needs at least one create and one connection");
        run_rate(&c, &o);
    } else if (strcmp(mode, "create") == 0) {
        o.rounds = rounds_set ? o.rounds : 50;
        o.warmup = warmup_set ? o.warmup : 5;
        if (o.rounds == 0)
            die("-r must be at least 1");
        run(&c, &o, true);
    } else if (strcmp(mode, "exec") == 0) {
        o.rounds = rounds_set ? o.rounds : 400;
        o.warmup = warmup_set ? o.warmup : 20;
        if (o.sandbox == NULL || o.rounds == 0)
            die("exec needs -s ID and at least one round");
        run(&c, &o, false);
    } else {
        die("unknown mode %s: create, exec or rate", mode);
    }
    return 0;
}
