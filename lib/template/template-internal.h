/* Internals of lib/template shared by its files (not installed). */
#ifndef PE_TEMPLATE_INTERNAL_H
#define PE_TEMPLATE_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "template/template.h"

/* Who to tell about one step's progress. */
typedef struct pe__tpl_report {
    const pe_template_opts *opts;
    const char *step; /* the layer being built */
    const char *what; /* what it does now */
} pe__tpl_report;

void pe__tpl_progress(const pe__tpl_report *rep, int64_t bytes, int64_t total);

/* Download url into fd (checking the TLS peer against cafile, NULL: the
 * system's), and check its SHA-512 against integrity ("sha512-<b64>"). */
int pe__tpl_fetch(const char *url, const char *cafile, const char *integrity, int fd,
                  const pe__tpl_report *rep, pe_err *err);

/* The pins (pins.json as built in), parsed once; borrowed. */
const json_t *pe__tpl_pins(pe_err *err);

/* The embedded text of templates/pins.json (pins-data.c, generated). */
extern const char pe__template_pins_text[];

#endif
