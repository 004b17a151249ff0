/* The E2B API's pieces (docs/e2b.md): e2b.c owns the routes, the key,
 * the control plane, the filesystem service and /files; e2b-process.c the
 * process service. Loop thread, but for the jobs' work. */
#ifndef PE_DAEMON_E2B_H
#define PE_DAEMON_E2B_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon.h"

/* What envd reports as its version: the SDK turns features on by it
 * (0.5.2 closeStdin, 0.5.7 octet-stream uploads). */
#define PE_E2B_ENVD_VERSION "0.5.7"

/* A Connect error answer to a unary call: status and {"code", "message"}. */
void pe__e2b_connect_error(pe_http_request *req, const char *code, const char *message);
/* The Connect code for a pe_err code. */
const char *pe__e2b_connect_code(int err_code);

/* The process service: req is a POST to /process.Process/<method> of
 * running sandbox sandbox_id, the caller's (checked). Answers req. */
void pe__e2b_process(pe_daemon *d, pe_http_request *req, const char *did, const char *sandbox_id,
                     const char *method);
/* Kill every process (shutdown). */
void pe__e2b_process_shutdown(pe_daemon *d);

#endif
