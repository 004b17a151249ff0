/* The hot-read cache (read-cache.h): a fixed table of slots, a slot chosen
 * by a keyed hash of (did, id), a newer answer replacing whatever held its
 * slot. Fixed size: memory stays bounded whatever callers ask, and the
 * random key keeps a caller from choosing ids that evict another's. */
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store.h"
#include "read-cache.h"

#define SLOTS 1024
#define MAX_AGE_NS 1000000000u /* bound for writes this process does not see */

struct slot {
    char *did;
    char *id;
    uint64_t gen;
    uint64_t at_ns;
    json_t *out;
    char *text; /* out as sent: dumped once at put, not once per hit */
    size_t len;
};

static struct slot slots[SLOTS];
static unsigned char key[crypto_shorthash_KEYBYTES];
static bool keyed;
static uint64_t hits, misses;
static size_t used;

static struct slot *slot_of(const char *did, const char *id)
{
    size_t nd = strlen(did), ni = strlen(id);
    unsigned char small[512];
    cleanup_free unsigned char *big = nd + 1 + ni > sizeof(small) ? pe_xmalloc(nd + 1 + ni) : NULL;
    unsigned char *buf = big ? big : small;
    unsigned char h[crypto_shorthash_BYTES];
    uint64_t v;

    if (!keyed) {
        crypto_shorthash_keygen(key);
        keyed = true;
    }
    /* did never holds a NUL: the separator keeps ("ab","c") from ("a","bc") */
    memcpy(buf, did, nd);
    buf[nd] = '\0';
    memcpy(buf + nd + 1, id, ni);
    crypto_shorthash(h, buf, nd + 1 + ni, key);
    memcpy(&v, h, sizeof(v));
    return &slots[v % SLOTS];
}

static void slot_clear(struct slot *s)
{
    if (s->out)
        used--;
    free(s->did);
    free(s->id);
    json_decref(s->out);
    free(s->text);
    memset(s, 0, sizeof(*s));
}

json_t *pe_daemon_read_cache_get(const char *did, const char *id, const char **text, size_t *len)
{
    struct slot *s;

    if (did == NULL || id == NULL)
        return NULL;
    s = slot_of(did, id);
    if (s->out == NULL || strcmp(s->did, did) != 0 || strcmp(s->id, id) != 0) {
        misses++;
        return NULL;
    }
    if (s->gen != pe_store_write_gen() || pe_monotonic_ns() - s->at_ns > MAX_AGE_NS) {
        slot_clear(s);
        misses++;
        return NULL;
    }
    hits++;
    *text = s->text;
    *len = s->len;
    return json_incref(s->out);
}

void pe_daemon_read_cache_put(const char *did, const char *id, uint64_t gen, json_t *out)
{
    struct slot *s;

    if (did == NULL || id == NULL || out == NULL || gen != pe_store_write_gen())
        return; /* already stale */
    s = slot_of(did, id);
    slot_clear(s);
    s->did = pe_xstrdup(did);
    s->id = pe_xstrdup(id);
    s->gen = gen;
    s->at_ns = pe_monotonic_ns();
    s->text = json_dumps(out, JSON_COMPACT);
    if (s->text == NULL)
        abort(); /* jansson fails only on allocation failure for valid values */
    s->len = strlen(s->text);
    s->out = json_incref(out);
    used++;
}

void pe_daemon_read_cache_metrics(FILE *out)
{
    fprintf(out,
            "# HELP pocketenv_read_cache_hits_total Reads (getSandbox) answered on the loop thread "
            "from the read cache.\n"
            "# TYPE pocketenv_read_cache_hits_total counter\n"
            "pocketenv_read_cache_hits_total %llu\n"
            "# HELP pocketenv_read_cache_misses_total Reads the read cache could not answer.\n"
            "# TYPE pocketenv_read_cache_misses_total counter\n"
            "pocketenv_read_cache_misses_total %llu\n"
            "# HELP pocketenv_read_cache_entries Answers held by the read cache (at most %d).\n"
            "# TYPE pocketenv_read_cache_entries gauge\n"
            "pocketenv_read_cache_entries %zu\n",
            (unsigned long long)hits, (unsigned long long)misses, SLOTS, used);
}

void pe_daemon_read_cache_clear(void)
{
    for (size_t i = 0; i < SLOTS; i++)
        slot_clear(&slots[i]);
}
