/* pocketenv-import: `pocketenv image import` in a process of its own.
 *
 * libarchive brings libxml2, ICU and libstdc++ with it; linked into the
 * main binary they would add ~3 ms of dynamic loading to every command,
 * including every sandbox start. Only import needs them, so it lives here
 * and the CLI execs it.
 *
 *   pocketenv-import DATA_DIR NAME FILE [PARENT] */
#include <stdio.h>

#include "core/log.h"
#include "image/image.h"

int main(int argc, char **argv)
{
    pe_err err;

    pe_log_init();
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: pocketenv-import DATA_DIR NAME FILE [PARENT]\n");
        return 2;
    }
    pe_err_clear(&err);
    if (pe_image_import_layer(argv[1], argv[2], argc == 5 ? argv[4] : NULL, argv[3], &err) < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return 125;
    }
    return 0;
}
