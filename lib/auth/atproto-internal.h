/* Shared by lib/auth/atproto-*.c: the DNS step of handle resolution. */
#ifndef PE_ATPROTO_INTERNAL_H
#define PE_ATPROTO_INTERNAL_H

#include "pocketenv/atproto.h"

/* Look up the TXT records of "_atproto.HANDLE" and copy the DID of its one
 * "did=" record into did. Returns 1 when found, 0 when the name has no
 * such record (NXDOMAIN, no TXT, no "did=", DNS step "off" or the server
 * unreachable: the caller then tries HTTPS), -1 with err set when the
 * answer is unusable (two different DIDs, a DID that is not one). */
int pe__atproto_dns_did(const pe_atproto_cfg *cfg, const char *handle, char did[PE_AUTH_DID_MAX],
                        pe_err *err);

#endif
