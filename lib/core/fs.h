/* File helpers: atomic state writes, bounded reads, directory trees.
 * All fds are O_CLOEXEC. Functions return < 0 and fill err on failure. */
#ifndef PE_CORE_FS_H
#define PE_CORE_FS_H

#include <stddef.h>
#include <sys/types.h>

#include "pocketenv/err.h"

/* Write data to path atomically: tmp file in the same directory, fsync,
 * rename, fsync of the directory. mode applies to the new file. */
int pe_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, pe_err *err);
/* The same without the directory's fsync: the new file's data is on disk
 * before the rename, so after a crash path holds the old complete file or
 * the new one (the rename may be lost), never an empty or partial one. For
 * state whose last version matters only while this boot lasts, where the
 * previous version is a fine thing to find after a crash. */
int pe_fs_write_whole(const char *path, const void *data, size_t len, mode_t mode, pe_err *err);
/* The same without the fsyncs: readers still see the old file or the new
 * one, never a part, but a crash may lose it. For files made again at
 * every use (a sandbox's resolv.conf), where two fsyncs are most of the
 * cost. */
int pe_fs_write_replace(const char *path, const void *data, size_t len, mode_t mode, pe_err *err);

/* Create path (which must not exist) with data, without fsync: for
 * bookkeeping that only matters while this boot lasts. */
int pe_fs_write_new(const char *path, const void *data, size_t len, mode_t mode, pe_err *err);
/* The same, fsynced: the data and the new file's entry in its directory are
 * on disk when it returns, on Linux's journaling filesystems (whose fsync
 * commits the create with the data) and on ext4 without a journal (which
 * syncs the parent of a new inode); the directory itself is not fsynced.
 * For a file in a directory nobody else sees until it is renamed in. */
int pe_fs_write_new_synced(const char *path, const void *data, size_t len, mode_t mode,
                           pe_err *err);

/* Read a whole file of at most max bytes into a NUL-terminated malloc'd
 * buffer. A larger file is an error (E2BIG), never truncated silently. */
/* All of data to fd, through short writes and EINTR; -1 with errno on a
 * failed write (EAGAIN on a non-blocking fd included). */
int pe_fs_write_all(int fd, const void *data, size_t len);
int pe_fs_read_file(const char *path, size_t max, char **out, size_t *out_len, pe_err *err);

/* mkdir -p with mode for the directories it creates. */
int pe_fs_mkdir_p(const char *path, mode_t mode, pe_err *err);

/* Remove a directory tree without following symlinks and without crossing
 * into other mounts (a mount point inside is an error, not a traversal).
 * Any depth, with at most 17 fds and no recursion; safe on a tree a
 * hostile process made (fs.c). */
int pe_fs_rm_rf(const char *path, pe_err *err);

/* Write a short string to a file that already exists (cgroup, proc knobs). */
int pe_fs_write_str(const char *path, const char *s, pe_err *err);

/* Parse "512", "64k", "512m", "1.5g", "2G" into bytes. Returns -1 on junk,
 * negative or overflowing values. */
int pe_parse_size(const char *s, long long *out);

/* Sandbox and image names: 1..63 chars of [A-Za-z0-9_.-], starting with an
 * alphanumeric; so never "/", "..", or an empty string. */
int pe_name_valid(const char *s);

#endif
