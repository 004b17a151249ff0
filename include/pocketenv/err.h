/* Error objects for control-plane code.
 *
 * Control-plane functions return < 0 on failure and fill a pe_err with the
 * errno that caused it and a message that grows context on the way up:
 * "start sandbox box1: mount overlay on /x: Operation not permitted".
 * pe_err is a plain struct with a fixed buffer, so filling one never
 * allocates and a caller may keep it on the stack. */
#ifndef POCKETENV_ERR_H
#define POCKETENV_ERR_H

#include <stddef.h>

#define PE_ERR_MSG_MAX 1024

/* Error codes are coarse categories that front ends map to exit codes and,
 * later, to XRPC error names. errnum keeps the precise cause. */
enum pe_err_code {
    PE_OK = 0,
    PE_EINVAL,  /* bad input from the user: name, size, option */
    PE_ENOENT,  /* unknown sandbox, image, path */
    PE_EEXIST,  /* name already taken */
    PE_ESTATE,  /* operation not valid in the sandbox's current state */
    PE_ESYS,    /* a system call failed */
    PE_EUNSUP,  /* not supported on this host */
    PE_ENOEXEC, /* the command to run was not found or not executable */
    /* Remote providers (lib/provider/provider.h): */
    PE_ENOTCAP,   /* the provider lacks the capability (501) */
    PE_EAUTH,     /* the provider rejected the credential */
    PE_ETIMEDOUT, /* the provider did not answer in time */
    PE_EREMOTE,   /* the provider failed (5xx) or answered something not its API */
};

typedef struct pe_err {
    int code;   /* enum pe_err_code */
    int errnum; /* errno of the underlying failure, 0 if none */
    char msg[PE_ERR_MSG_MAX];
} pe_err;

/* Set err (code, errnum, formatted message). errnum != 0 appends ": strerror".
 * Always returns -1 so callers can `return pe_err_set(...)`. err may be NULL. */
int pe_err_set(pe_err *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Shorthand for a failed system call: PE_ESYS with errno. Returns -1. */
int pe_err_sys(pe_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the existing message with "context: ". Returns -1. */
int pe_err_prefix(pe_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void pe_err_clear(pe_err *err);

#endif
