/* What both starters of a sandbox's process run between clone and exec:
 * the runtime's exec helper (child.c, in the daemon's memory) and the
 * sandbox's init when it spawns for the daemon (init/init.c, a static
 * binary built with musl). So: libc only, async-signal-safe, no
 * allocation, nothing of the runtime's headers. */
#ifndef PE_RUNTIME_PROC_COMMON_H
#define PE_RUNTIME_PROC_COMMON_H

int pe__pty_open_master(void);     /* -errno on failure */
int pe__pty_open_peer(int master); /* -errno on failure */

/* execvp with the PATH of envp (not the caller's environment, as glibc's
 * execvpe): the same search, EACCES kept over later misses, a file
 * without #! run by /bin/sh. Returns with errno set. */
void pe__exec_path(char *const *argv, char *const *envp);

#endif
