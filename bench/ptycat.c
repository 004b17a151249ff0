/* The floor for terminal throughput: start a command on a PTY in a running
 * sandbox exactly as the daemon's terminal sessions do
 * (pe_runtime_exec_start with tty) and read the PTY master directly, with
 * no HTTP or WebSocket in between. Prints "BYTES SECONDS" (from the start
 * of the command to EOF on the PTY).
 *
 *   ptycat DATA_DIR SANDBOX CMD [ARG...] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pocketenv/runtime.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static char buf[64 * 1024];
    pe_runtime rt;
    pe_proc p;
    pe_err err;
    pe_proc_opts opts = {.tty = true, .tty_cols = 80, .tty_rows = 24};
    unsigned long long total = 0;
    double t0;
    int code = 0;

    if (argc < 4) {
        fprintf(stderr, "usage: ptycat DATA_DIR SANDBOX CMD [ARG...]\n");
        return 2;
    }
    opts.argv = argv + 3;
    if (pe_runtime_open(&rt, argv[1], &err) < 0) {
        fprintf(stderr, "ptycat: %s\n", err.msg);
        return 1;
    }
    t0 = now_s();
    if (pe_runtime_exec_start(&rt, argv[2], &opts, &p, &err) < 0) {
        fprintf(stderr, "ptycat: %s\n", err.msg);
        return 1;
    }
    for (;;) {
        ssize_t n = read(p.pty_fd, buf, sizeof(buf));
        if (n > 0)
            total += (unsigned long long)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break; /* EIO: the command and every holder of the PTY are gone */
    }
    printf("%llu %.6f\n", total, now_s() - t0);
    pe_proc_wait(&p, &code, &err);
    pe_proc_close(&p);
    pe_runtime_close(&rt);
    return code;
}
