/* Error objects: formatting only, no allocation (see pocketenv/err.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pocketenv/err.h"

static void vset(pe_err *err, int code, int errnum, const char *fmt, va_list ap)
{
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(err->msg))
        n = sizeof(err->msg) - 1;
    if (errnum != 0)
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(errnum));
    err->code = code;
    err->errnum = errnum;
}

int pe_err_set(pe_err *err, int code, int errnum, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return -1;
    va_start(ap, fmt);
    vset(err, code, errnum, fmt, ap);
    va_end(ap);
    return -1;
}

int pe_err_sys(pe_err *err, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    if (err == NULL)
        return -1;
    va_start(ap, fmt);
    vset(err, PE_ESYS, saved, fmt, ap);
    va_end(ap);
    errno = saved;
    return -1;
}

int pe_err_prefix(pe_err *err, const char *fmt, ...)
{
    char old[PE_ERR_MSG_MAX];
    va_list ap;
    int n;

    if (err == NULL)
        return -1;
    memcpy(old, err->msg, sizeof(old));
    va_start(ap, fmt);
    n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof(err->msg))
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", old);
    return -1;
}

void pe_err_clear(pe_err *err)
{
    if (err == NULL)
        return;
    err->code = PE_OK;
    err->errnum = 0;
    err->msg[0] = '\0';
}
