/* stderr logger. Single writer per line (one write(2) call), so lines from
 * concurrent processes do not interleave mid-line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int log_level = PE_LOG_WARN;

void pe_log_init(void)
{
    const char *v = getenv("POCKETENV_LOG");
    if (v == NULL)
        return;
    if (strcmp(v, "error") == 0)
        log_level = PE_LOG_ERROR;
    else if (strcmp(v, "warn") == 0)
        log_level = PE_LOG_WARN;
    else if (strcmp(v, "info") == 0)
        log_level = PE_LOG_INFO;
    else if (strcmp(v, "debug") == 0)
        log_level = PE_LOG_DEBUG;
}

void pe_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[2048];
    va_list ap;
    int n;

    if (level > log_level)
        return;
    n = snprintf(line, sizeof(line), "pocketenv[%d] %s: ", (int)getpid(), names[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (write(2, line, (size_t)n) < 0)
        return;
}
