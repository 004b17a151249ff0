/* Where the programs of one build or installation find each other and
 * their data files.
 *
 * `pocketenv` execs helper programs (pocketenv-client, pocketenv-serve,
 * pocketenv-import), the daemon execs pocketenv-archive and reads its web
 * page, and the runtime copies pocketenv-init into every sandbox. All of
 * them are found from where the running program is (/proc/self/exe),
 * never from the cwd or PATH, in this order:
 *
 *   1. next to the program: the build tree (BUILD/pocketenv, BUILD/web,
 *      ...), and one helper looking for another in the helpers' folder;
 *   2. the same prefix, wherever it was moved: a program in PREFIX/bin or
 *      PREFIX/libexec/pocketenv looks in PREFIX/libexec/pocketenv
 *      (helpers) and PREFIX/share/pocketenv (data), with the directories
 *      meson was configured with;
 *   3. the prefix configured at build time (/usr/local by default), so a
 *      copy of the installed `pocketenv` elsewhere still finds the rest.
 *
 * What is found nowhere is an error naming it and every place looked at. */
#ifndef PE_CORE_INSTALL_H
#define PE_CORE_INSTALL_H

#include "pocketenv/err.h"

/* Path of helper program name (executable), or NULL with err set. */
char *pe_install_helper(const char *name, pe_err *err);

/* Path of name in the data directory (a file or folder, e.g. "web"), or
 * NULL with err set. */
char *pe_install_data(const char *name, pe_err *err);

#endif
