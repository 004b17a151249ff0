/* Archives of a sandbox's directories: backups (tar + zstd) and copies
 * (tar + gzip), made and unpacked by a helper process that holds only the
 * sandbox root's powers (daemon/sandbox-archive.c explains how).
 *
 * Every function blocks: call them on a worker thread. */
#ifndef PE_DAEMON_ARCHIVE_H
#define PE_DAEMON_ARCHIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "archive-proto.h"
#include "daemon.h"

/* Archive directory dir (absolute, normalized, or "/") of sandbox id into
 * out_fd (a fresh file: written from its offset 0). A running (or paused)
 * sandbox is read as it sees itself, without crossing into other mounts
 * (/proc, /sys, /dev, volumes); a stopped one from its writable layer
 * only (what changed against the image). Regular files, directories and
 * symlinks are kept, with setuid/setgid bits cleared; device nodes,
 * FIFOs, sockets, xattrs and ACLs are left out. More than max_out bytes
 * written is PE_EINVAL; a missing dir PE_ENOENT. */
int pe_daemon_archive_dir(pe_daemon *d, const char *id, const char *dir, int fmt, int out_fd,
                          int64_t max_out, pe_err *err);

/* docker cp's copy out of sandbox id (lib/core/cp-path.h): path itself,
 * its base name the archive's top entry (path "/": its contents, top
 * "."), gzip, into out_fd; a symlink is kept as one unless follow (path's
 * own last link, resolved inside the sandbox). must_dir: path must be a
 * directory (the user wrote "path/"). Missing path: PE_ENOENT. */
int pe_daemon_archive_path(pe_daemon *d, const char *id, const char *path, bool follow,
                           bool must_dir, int out_fd, int64_t max_out, pe_err *err);

/* docker cp's copy into sandbox id: the archive at in_fd (one top entry,
 * checked first with lim) goes where docker cp puts it for dest as the
 * user typed it (a trailing '/': a directory); contents: the source was
 * "SRC/.". Nothing is created above dest (PE_ENOENT); the sandbox root
 * owns what is written; setuid/setgid bits are cleared. */
int pe_daemon_archive_unpack_to(pe_daemon *d, const char *id, const char *dest, bool contents,
                                int in_fd, const pe_archive_limits *lim, pe_err *err);

/* Read the whole archive at in_fd (tar, plain, gzip or zstd) and refuse,
 * with PE_EINVAL and the entry's name, anything that could escape or
 * surprise: absolute paths, ".." components, entries below a symlink of
 * the archive, hard links with such targets, device nodes, FIFOs,
 * sockets, more than the limits, a broken stream. Nothing is written
 * anywhere; the parsing runs in a child process as nobody. */
int pe_daemon_archive_check(pe_daemon *d, int in_fd, const pe_archive_limits *lim, pe_err *err);

/* Unpack the archive at in_fd (checked first with lim) into dir of
 * sandbox id, creating dir if missing; files already there and not in the
 * archive are kept. keep_owner: the entries' ids, as ids inside the
 * sandbox (backups); otherwise everything is the sandbox root's (copies).
 * Setuid/setgid bits are cleared. */
int pe_daemon_archive_unpack(pe_daemon *d, const char *id, const char *dir, int in_fd,
                             const pe_archive_limits *lim, bool keep_owner, pe_err *err);

#endif
