/* altbench: compare commands by start-to-exit wall time, interleaved.
 *
 * Each variant is one command line split on blanks (no quoting, no shell,
 * no globbing), optionally labelled "[label] command ...". Every round runs
 * every variant once in a freshly shuffled order, so slow drift of the
 * machine (other tenants, page cache, frequency) hits all variants alike.
 * Only ratios within one run are meant to be compared across machines or
 * runs; absolute figures move with the load (see
 * ../shared/reference/isolation-measurements.md §1 for the method).
 *
 * One sample is fork -> execvp -> waitpid of one child, timed in the parent
 * with CLOCK_MONOTONIC. A command that does not exit 0 (or outlives the
 * per-run timeout) aborts the whole benchmark: a fast failure must never pass
 * for a fast start. Only an explicit -F N lets N failed runs through; they
 * are dropped, rerun, counted and reported next to the table. The program
 * measures and prints; it never judges (STYLE.md rule 21).
 *
 * Single-threaded, one child at a time. SIGCHLD stays blocked in the parent
 * (waited for with sigtimedwait, which gives the timeout) and is unblocked in
 * the child before exec. Children get stdin and stdout on /dev/null (stdout
 * kept with -v); stderr is inherited so their errors are visible. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_VARIANTS 64
#define MAX_ARGS 256
#define MAX_LINE 4096
#define MAX_ROUNDS 1000000UL

typedef struct variant {
    char *label;
    char *line; /* the command as given, for the legend */
    char *argv[MAX_ARGS + 1];
    double *ms;          /* one sample per measured round */
    unsigned long fails; /* failed runs dropped under -F */
} variant;

typedef struct options {
    unsigned long rounds;
    unsigned long warmup;
    unsigned long timeout_s;
    unsigned long max_fails; /* failed runs tolerated in total (-F) */
    uint64_t seed;
    bool seed_set;
    bool verbose;
    const char *baseline; /* label or 1-based index; NULL = first variant */
    const char *raw_path;
} options;

typedef struct bench {
    options opt;
    variant v[MAX_VARIANTS];
    size_t n;
    int devnull;
    sigset_t chld;
    unsigned long fails_total;
} bench;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("altbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

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

/* ---- parsing ---------------------------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
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

/* Split the slice {s, len} into v->argv. An optional leading "[label]" names
 * the variant; otherwise the label is the command itself. */
static void parse_variant(variant *v, const char *s, size_t len)
{
    size_t i = 0, argc = 0;

    while (len > 0 && is_blank(s[len - 1]))
        len--;
    while (i < len && is_blank(s[i]))
        i++;
    if (i < len && s[i] == '[') {
        const char *close = memchr(s + i, ']', len - i);
        if (close == NULL || close == s + i + 1)
            die("bad label in \"%.*s\": use \"[label] command\"", (int)len, s);
        v->label = xstrndup(s + i + 1, (size_t)(close - s - i - 1));
        i = (size_t)(close - s) + 1;
    }
    while (i < len && is_blank(s[i]))
        i++;
    v->line = xstrndup(s + i, len - i);
    for (;;) {
        size_t start;
        while (i < len && is_blank(s[i]))
            i++;
        if (i == len)
            break;
        start = i;
        while (i < len && !is_blank(s[i]))
            i++;
        if (argc == MAX_ARGS)
            die("more than %d arguments in \"%.*s\"", MAX_ARGS, (int)len, s);
        v->argv[argc++] = xstrndup(s + start, i - start);
    }
    if (argc == 0)
        die("empty command in \"%.*s\"", (int)len, s);
    if (v->label == NULL)
        v->label = xstrndup(v->line, strlen(v->line));
}

static void add_variant(bench *b, const char *s, size_t len)
{
    if (b->n == MAX_VARIANTS)
        die("more than %d variants", MAX_VARIANTS);
    parse_variant(&b->v[b->n++], s, len);
}

/* One variant per line; blank lines and lines starting with '#' are skipped. */
static void read_variant_file(bench *b, const char *path)
{
    char line[MAX_LINE + 2];
    unsigned long lineno = 0;
    FILE *f = fopen(path, "re");

    if (f == NULL)
        die("open %s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line), i = 0;
        lineno++;
        if (len > MAX_LINE)
            die("%s:%lu: line longer than %d bytes", path, lineno, MAX_LINE);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        while (i < len && is_blank(line[i]))
            i++;
        if (i == len || line[i] == '#')
            continue;
        add_variant(b, line, len);
    }
    if (ferror(f))
        die("read %s: %s", path, strerror(errno));
    fclose(f);
}

/* ---- command line ----------------------------------------------------- */

typedef enum opt_id {
    O_ROUNDS,
    O_WARMUP,
    O_BASE,
    O_FILE,
    O_SEED,
    O_RAW,
    O_TIMEOUT,
    O_VERB,
    O_FAILS,
    O_HELP
} opt_id;

static const struct opt_desc {
    const char *flag;
    opt_id id;
    bool has_arg;
    const char *help;
} OPTS[] = {
    {"-r", O_ROUNDS, true, "N      measured rounds (default 200)"},
    {"-w", O_WARMUP, true, "N      warm-up rounds, not recorded (default 10)"},
    {"-b", O_BASE, true, "VAR    baseline: a label or 1-based index (default 1)"},
    {"-f", O_FILE, true, "FILE   read variants from FILE, one per line ('#' comments)"},
    {"-s", O_SEED, true, "SEED   shuffle seed (default: from the clock; printed)"},
    {"-o", O_RAW, true, "FILE   write every sample as CSV (variant,label,round,ms)"},
    {"-t", O_TIMEOUT, true, "SEC    abort if one run takes longer (default 60)"},
    {"-F", O_FAILS, true, "N      tolerate N failed runs in total: drop, count, rerun (default 0)"},
    {"-v", O_VERB, false, "       keep the children's stdout (default /dev/null)"},
    {"-h", O_HELP, false, "       this help"},
};

static void usage(FILE *f)
{
    fputs("usage: altbench [OPTIONS] 'CMD [ARGS...]' ... (or -f FILE)\n"
          "Runs each command once per round, rounds interleaved and shuffled;\n"
          "prints median, p10, p90 (ms) per command and each median's ratio to\n"
          "the baseline's. A command is one argument, split on blanks (no\n"
          "quoting); '[label] CMD ...' names it in the table. Any exit status\n"
          "other than 0 aborts the benchmark (unless -F allows it).\n\n",
          f);
    for (size_t i = 0; i < sizeof(OPTS) / sizeof(OPTS[0]); i++)
        fprintf(f, "  %s %s\n", OPTS[i].flag, OPTS[i].help);
}

static void apply_opt(bench *b, opt_id id, const char *arg)
{
    switch (id) {
    case O_ROUNDS:
        b->opt.rounds = parse_ulong("-r", arg, MAX_ROUNDS);
        break;
    case O_WARMUP:
        b->opt.warmup = parse_ulong("-w", arg, MAX_ROUNDS);
        break;
    case O_BASE:
        b->opt.baseline = arg;
        break;
    case O_FILE:
        read_variant_file(b, arg);
        break;
    case O_SEED:
        b->opt.seed = parse_ulong("-s", arg, ULONG_MAX);
        b->opt.seed_set = true;
        break;
    case O_RAW:
        b->opt.raw_path = arg;
        break;
    case O_TIMEOUT:
        b->opt.timeout_s = parse_ulong("-t", arg, 86400);
        break;
    case O_FAILS:
        b->opt.max_fails = parse_ulong("-F", arg, MAX_ROUNDS);
        break;
    case O_VERB:
        b->opt.verbose = true;
        break;
    case O_HELP:
        usage(stdout);
        exit(0);
    }
}

static void parse_args(bench *b, int argc, char **argv)
{
    bool opts_done = false;

    for (int i = 1; i < argc; i++) {
        const struct opt_desc *d = NULL;
        if (!opts_done && strcmp(argv[i], "--") == 0) {
            opts_done = true;
            continue;
        }
        for (size_t k = 0; !opts_done && k < sizeof(OPTS) / sizeof(OPTS[0]); k++)
            if (strcmp(argv[i], OPTS[k].flag) == 0)
                d = &OPTS[k];
        if (d == NULL && !opts_done && argv[i][0] == '-')
            die("unknown option %s (see -h)", argv[i]);
        if (d == NULL) {
            add_variant(b, argv[i], strlen(argv[i]));
            continue;
        }
        if (d->has_arg && i + 1 >= argc)
            die("%s needs an argument", d->flag);
        apply_opt(b, d->id, d->has_arg ? argv[++i] : NULL);
    }
    if (b->n == 0) {
        usage(stderr);
        exit(2);
    }
    if (b->opt.rounds == 0)
        die("-r must be at least 1");
}

/* ---- running ---------------------------------------------------------- */

static void child_exec(const bench *b, const variant *v)
{
    sigprocmask(SIG_UNBLOCK, &b->chld, NULL);
    if (dup2(b->devnull, 0) < 0 || (!b->opt.verbose && dup2(b->devnull, 1) < 0))
        _exit(126);
    execvp(v->argv[0], v->argv);
    dprintf(2, "altbench: exec %s: %s\n", v->argv[0], strerror(errno));
    _exit(127);
}

/* Wait for pid, at most timeout_s; -1 on timeout (the child is killed). */
static int wait_child(const bench *b, pid_t pid, int *status)
{
    double deadline = now_ms() + (double)b->opt.timeout_s * 1e3;

    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        double left = deadline - now_ms();
        struct timespec ts;
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            die("waitpid: %s", strerror(errno));
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return -1;
        }
        ts.tv_sec = (time_t)(left / 1e3);
        ts.tv_nsec = (long)fmod(left * 1e6, 1e9);
        sigtimedwait(&b->chld, NULL, &ts);
    }
}

/* Describe a failed run in buf; false if the run succeeded (exit 0). */
static bool describe_failure(int status, bool timed_out, unsigned long timeout_s, char *buf,
                             size_t size)
{
    if (timed_out)
        snprintf(buf, size, "still running after %lu s (killed)", timeout_s);
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return false;
    else if (WIFEXITED(status))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    return true;
}

/* One fork -> exec -> wait; returns the elapsed ms, *failed set from the
 * exit status. */
static double spawn_timed(const bench *b, const variant *v, char *why, size_t size, bool *failed)
{
    int status = 0;
    double t0 = now_ms(), t1;
    pid_t pid = fork();
    bool timed_out;

    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0)
        child_exec(b, v);
    timed_out = wait_child(b, pid, &status) < 0;
    t1 = now_ms();
    *failed = describe_failure(status, timed_out, b->opt.timeout_s, why, size);
    return t1 - t0;
}

/* Run v until it succeeds once; returns that run's start-to-exit time in ms.
 * A failure aborts the benchmark unless the -F budget allows rerunning it
 * (the failed sample is dropped and counted). r is the 0-based round,
 * warm-up rounds included (only used in messages). */
static double run_once(bench *b, variant *v, unsigned long r)
{
    char when[64], why[128];
    bool failed = true;
    double ms = 0;

    if (r < b->opt.warmup)
        snprintf(when, sizeof(when), "warm-up round %lu", r + 1);
    else
        snprintf(when, sizeof(when), "round %lu", r - b->opt.warmup + 1);
    while (failed) {
        ms = spawn_timed(b, v, why, sizeof(why), &failed);
        if (!failed)
            break;
        if (b->fails_total >= b->opt.max_fails)
            die("variant \"%s\" (%s), %s: %s; benchmark aborted", v->label, v->line, when, why);
        b->fails_total++;
        v->fails++;
        fprintf(stderr,
                "altbench: variant \"%s\", %s: %s; sample dropped, rerun (failure %lu of -F %lu)\n",
                v->label, when, why, b->fails_total, b->opt.max_fails);
    }
    return ms;
}

/* splitmix64: small, seedable, good enough to shuffle a few dozen items. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void shuffle(size_t *order, size_t n, uint64_t *state)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(next_rand(state) % i);
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
}

static void run_all(bench *b)
{
    size_t order[MAX_VARIANTS];
    uint64_t state = b->opt.seed;
    unsigned long total = b->opt.warmup + b->opt.rounds;

    for (size_t i = 0; i < b->n; i++) {
        order[i] = i;
        b->v[i].ms = xcalloc(b->opt.rounds, sizeof(double));
    }
    for (unsigned long r = 0; r < total; r++) {
        bool warm = r < b->opt.warmup;
        shuffle(order, b->n, &state);
        for (size_t k = 0; k < b->n; k++) {
            variant *v = &b->v[order[k]];
            double ms = run_once(b, v, r);
            if (!warm)
                v->ms[r - b->opt.warmup] = ms;
        }
    }
}

/* ---- statistics and output -------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Linear interpolation between closest ranks (numpy's default), p in [0,1]. */
static double quantile(const double *sorted, size_t n, double p)
{
    double pos = p * (double)(n - 1);
    size_t lo = (size_t)pos;
    double frac = pos - (double)lo;

    if (lo + 1 >= n)
        return sorted[n - 1];
    return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

typedef struct summary {
    double median, p10, p90, mean;
} summary;

static summary summarize(const double *ms, size_t n)
{
    double *s = xcalloc(n, sizeof(double));
    double sum = 0;
    summary out;

    memcpy(s, ms, n * sizeof(double));
    qsort(s, n, sizeof(double), cmp_double);
    for (size_t i = 0; i < n; i++)
        sum += s[i];
    out.median = quantile(s, n, 0.5);
    out.p10 = quantile(s, n, 0.1);
    out.p90 = quantile(s, n, 0.9);
    out.mean = sum / (double)n;
    free(s);
    return out;
}

static size_t find_baseline(const bench *b)
{
    const char *want = b->opt.baseline;
    char *end = NULL;
    unsigned long idx;

    if (want == NULL)
        return 0;
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->v[i].label, want) == 0)
            return i;
    idx = strtoul(want, &end, 10);
    if (end != want && *end == '\0' && idx >= 1 && idx <= b->n)
        return idx - 1;
    die("-b %s: no variant with that label or index (1..%zu)", want, b->n);
}

static void read_loadavg(char *buf, size_t size)
{
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    ssize_t r = fd >= 0 ? read(fd, buf, size - 1) : -1;
    char *p = buf;

    buf[r > 0 ? r : 0] = '\0';
    if (fd >= 0)
        close(fd);
    /* keep the three load averages, drop "runnable/total lastpid" */
    for (int k = 0; k < 3 && p != NULL; k++)
        p = strchr(p + (k > 0), ' ');
    if (p != NULL)
        *p = '\0';
}

static void print_table(const bench *b, size_t base, const char *load0, const char *load1)
{
    summary sb = summarize(b->v[base].ms, b->opt.rounds);

    printf("altbench: %zu variants, %lu rounds (+%lu warm-up), interleaved and shuffled, "
           "seed %llu; load avg %s at start, %s at end\n\n",
           b->n, b->opt.rounds, b->opt.warmup, (unsigned long long)b->opt.seed, load0, load1);
    printf("| variant | median ms | p10 | p90 | mean | × %s |\n", b->v[base].label);
    printf("|---|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < b->n; i++) {
        summary s = summarize(b->v[i].ms, b->opt.rounds);
        printf("| %s | %.3f | %.3f | %.3f | %.3f | %.2f |\n", b->v[i].label, s.median, s.p10, s.p90,
               s.mean, s.median / sb.median);
    }
}

/* The commands behind the labels, and the failed runs -F let through. */
static void print_legend(const bench *b)
{
    bool fails = b->fails_total > 0;

    printf("\n| variant | command |%s\n|---|---|%s\n", fails ? " failed runs (dropped) |" : "",
           fails ? "---:|" : "");
    for (size_t i = 0; i < b->n; i++) {
        printf("| %s | `%s` |", b->v[i].label, b->v[i].line);
        if (fails)
            printf(" %lu |", b->v[i].fails);
        putchar('\n');
    }
    if (fails)
        printf("\n%lu failed run(s) were dropped and rerun (-F %lu); the figures above cover "
               "successful runs only.\n",
               b->fails_total, b->opt.max_fails);
}

static void write_raw(const bench *b)
{
    FILE *f = fopen(b->opt.raw_path, "we");

    if (f == NULL)
        die("open %s: %s", b->opt.raw_path, strerror(errno));
    fprintf(f, "variant,label,round,ms\n");
    for (size_t i = 0; i < b->n; i++)
        for (unsigned long r = 0; r < b->opt.rounds; r++)
            fprintf(f, "%zu,\"%s\",%lu,%.6f\n", i + 1, b->v[i].label, r + 1, b->v[i].ms[r]);
    if (fclose(f) != 0)
        die("write %s: %s", b->opt.raw_path, strerror(errno));
}

int main(int argc, char **argv)
{
    static bench b = {.opt = {.rounds = 200, .warmup = 10, .timeout_s = 60}};
    char load0[64], load1[64];
    size_t base;

    parse_args(&b, argc, argv);
    base = find_baseline(&b);
    if (!b.opt.seed_set) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        b.opt.seed = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec;
    }
    b.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (b.devnull < 0)
        die("open /dev/null: %s", strerror(errno));
    sigemptyset(&b.chld);
    sigaddset(&b.chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &b.chld, NULL);
    read_loadavg(load0, sizeof(load0));
    run_all(&b);
    read_loadavg(load1, sizeof(load1));
    print_table(&b, base, load0, load1);
    print_legend(&b);
    if (b.opt.raw_path != NULL)
        write_raw(&b);
    return 0;
}
