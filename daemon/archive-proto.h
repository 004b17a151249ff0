/* What the daemon (daemon/sandbox-archive.c) and its archive helper
 * (daemon/archive-helper.c) both know: archive formats and limits. */
#ifndef PE_DAEMON_ARCHIVE_PROTO_H
#define PE_DAEMON_ARCHIVE_PROTO_H

#include <stdint.h>

enum pe_archive_fmt {
    PE_ARCHIVE_ZSTD = 1, /* backups */
    PE_ARCHIVE_GZIP = 2, /* /cp objects, as upstream's tar.gz */
};

/* What an unpacked archive may hold. */
typedef struct pe_archive_limits {
    int64_t max_bytes;   /* sum of the regular files' sizes */
    int64_t max_entries; /* entries of any kind */
} pe_archive_limits;

#endif
