/* Downloading a pinned npm tarball on the host: libcurl into a file,
 * hashed on the way (SHA-512, npm's "integrity"), at most FETCH_MAX
 * bytes. Nothing of the package runs here: build.c unpacks it with
 * lib/image's safe extraction. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "template/template-internal.h"

#define FETCH_MAX (1LL << 30)
#define CONNECT_TIMEOUT_S 30L
#define LOW_SPEED_TIME_S 60L /* below 1 byte/s for this long: give up */

typedef struct fetch {
    int fd;
    int64_t got;
    bool too_big;
    bool write_failed;
    crypto_hash_sha512_state sha;
    const pe__tpl_report *rep;
    int64_t last_ms;
} fetch;

static size_t on_data(char *data, size_t size, size_t n, void *ud)
{
    fetch *f = ud;
    size_t len = size * n;

    if (f->got + (int64_t)len > FETCH_MAX) {
        f->too_big = true;
        return 0;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(f->fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            f->write_failed = true;
            return 0;
        }
        off += (size_t)w;
    }
    crypto_hash_sha512_update(&f->sha, (const unsigned char *)data, len);
    f->got += (int64_t)len;
    return len;
}

static int on_progress(void *ud, curl_off_t total, curl_off_t now, curl_off_t ut, curl_off_t un)
{
    fetch *f = ud;
    int64_t t = pe_monotonic_ms();

    if (t - f->last_ms >= 250) {
        f->last_ms = t;
        pe__tpl_progress(f->rep, (int64_t)now, total > 0 ? (int64_t)total : -1);
    }
    return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sodium_init() < 0)
        abort(); /* no entropy source at all: nothing else would work either */
}

/* "sha512-<base64>" against the digest of what was fetched. */
static int check_integrity(const char *integrity, const unsigned char *digest, pe_err *err)
{
    unsigned char want[crypto_hash_sha512_BYTES];
    size_t n = 0;

    if (strncmp(integrity, "sha512-", 7) != 0 ||
        sodium_base642bin(want, sizeof(want), integrity + 7, strlen(integrity + 7), NULL, &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        n != sizeof(want))
        return pe_err_set(err, PE_EINVAL, 0, "pinned integrity %s is not sha512-<base64>",
                          integrity);
    if (sodium_memcmp(want, digest, sizeof(want)) != 0)
        return pe_err_set(err, PE_EINVAL, 0,
                          "integrity mismatch: the registry sent another file than the pinned "
                          "one");
    return 0;
}

int pe__tpl_fetch(const char *url, const char *cafile, const char *integrity, int fd,
                  const pe__tpl_report *rep, pe_err *err)
{
    unsigned char digest[crypto_hash_sha512_BYTES];
    char cerr[CURL_ERROR_SIZE] = "";
    fetch f = {.fd = fd, .rep = rep};
    long status = 0;
    CURLcode rc;
    CURL *c;

    pthread_once(&curl_once, curl_init);
    crypto_hash_sha512_init(&f.sha);
    c = curl_easy_init();
    if (c == NULL)
        return pe_err_set(err, PE_ESYS, ENOMEM, "curl");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_S);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &f);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &f);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "pocketenv-template-build");
    if (cafile != NULL)
        curl_easy_setopt(c, CURLOPT_CAINFO, cafile);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (f.too_big)
        return pe_err_set(err, PE_EINVAL, E2BIG, "%s is larger than %lld MiB", url,
                          FETCH_MAX >> 20);
    if (f.write_failed)
        return pe_err_sys(err, "write %s", url);
    if (rc != CURLE_OK)
        return pe_err_set(err, PE_ESYS, 0, "download %s: %s", url,
                          cerr[0] ? cerr : curl_easy_strerror(rc));
    if (status != 200)
        return pe_err_set(err, PE_ESYS, 0, "download %s: HTTP status %ld", url, status);
    pe__tpl_progress(rep, f.got, f.got);
    crypto_hash_sha512_final(&f.sha, digest);
    if (check_integrity(integrity, digest, err) < 0)
        return pe_err_prefix(err, "%s", url);
    return 0;
}
