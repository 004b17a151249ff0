/* pocketenv login HANDLE: sign in with an AT Protocol handle through the
 * daemon (daemon/oauth.c) and keep the API token it gives.
 *
 * POST /oauth/login {"handle"} answers the URL of the user's PDS sign-in
 * page and a pickup secret. The URL is printed, and opened in a browser
 * when there is a graphical session ($BROWSER, or xdg-open with DISPLAY or
 * WAYLAND_DISPLAY); on a server it is only printed, to be opened anywhere.
 * Then POST /oauth/token {"pickup"} is polled until the sign-in is done
 * (the token, saved like `login --token` saves one), refused, or expired.
 * The pickup and the token never reach the command line of a process or
 * the terminal.
 *
 * pocketenv logout asks the daemon (POST /oauth/logout) to revoke the
 * user's PDS session and every API token of theirs, then forgets the
 * token kept here.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "core/util.h"
#include "pocketenv/atproto.h"
#include "pocketenv/auth.h"

#define ANSWER_MAX (64 * 1024)
#define POLL_MS 1000

extern char **environ;

typedef struct answer {
    char data[ANSWER_MAX];
    size_t len;
    bool too_big;
} answer;

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    answer *a = ud;
    size_t add = size * n;

    if (add >= sizeof a->data - a->len) {
        a->too_big = true;
        return 0;
    }
    memcpy(a->data + a->len, p, add);
    a->len += add;
    a->data[a->len] = '\0';
    return add;
}

/* POST body (JSON) to base + path: the status, the parsed answer in *out
 * (NULL when not JSON). -1 when the daemon cannot be reached. */
static long post_as(const char *base, const char *path, const char *token, json_t *body,
                    json_t **out)
{
    cleanup_free char *url = pe_xasprintf("%s%s", base, path);
    cleanup_free char *payload = json_dumps(body, JSON_COMPACT);
    cleanup_free char *auth = token ? pe_xasprintf("Authorization: Bearer %s", token) : NULL;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");

    if (h != NULL && auth != NULL)
        h = curl_slist_append(h, auth);
    answer *a = pe_xcalloc(1, sizeof *a);
    CURL *c = curl_easy_init();
    long status = -1;

    *out = NULL;
    if (c != NULL && h != NULL && payload != NULL) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L); /* the daemon resolves and calls the PDS */
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
        if (curl_easy_perform(c) == CURLE_OK) {
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
            *out = json_loadb(a->data, a->len, 0, NULL);
        }
    }
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(h);
    explicit_bzero(a, sizeof *a);
    free(a);
    if (auth)
        explicit_bzero(auth, strlen(auth));
    return status;
}

static long post(const char *base, const char *path, json_t *body, json_t **out)
{
    return post_as(base, path, NULL, body, out);
}

/* Open url in a browser when there is a graphical session; the URL is an
 * argument, never a shell string. Returns true when a browser started. */
static bool open_browser(const char *url)
{
    const char *browser = getenv("BROWSER");
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int rc;

    if (browser == NULL || browser[0] == '\0') {
        if (getenv("DISPLAY") == NULL && getenv("WAYLAND_DISPLAY") == NULL)
            return false;
        browser = "xdg-open";
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    rc = posix_spawnp(&pid, browser, &fa, NULL, (char *const[]){(char *)browser, (char *)url, NULL},
                      environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Poll until the sign-in ends; 0 with the token saved. */
static int wait_for_token(const char *base, const char *pickup, long expires_in)
{
    time_t deadline = time(NULL) + (expires_in > 0 ? expires_in : 600) + 5;
    json_t *body = json_pack("{s:s}", "pickup", pickup);
    int rc = 1;

    for (;;) {
        json_t *out = NULL;
        long st = post(base, "/oauth/token", body, &out);
        if (st == 200 && json_is_string(json_object_get(out, "token"))) {
            cleanup_free char *path = pe_api_token_path();
            pe_err err = {0};
            if (path == NULL)
                fprintf(stderr, "pocketenv: HOME is not set: nowhere to keep the token\n");
            else if (pe_auth_write_token_file(path, str(out, "token"), &err) < 0)
                fprintf(stderr, "pocketenv: %s\n", err.msg);
            else {
                printf("Login successful! Logged in as @%s (%s). Token saved in %s\n",
                       str(out, "handle"), str(out, "did"), path);
                rc = 0;
            }
            json_decref(out);
            break;
        }
        if (st != 202) {
            fprintf(stderr, "pocketenv: sign-in failed: %s\n",
                    st < 0 ? "the daemon cannot be reached" : str(out, "message"));
            json_decref(out);
            break;
        }
        json_decref(out);
        if (time(NULL) > deadline) {
            fprintf(stderr, "pocketenv: sign-in not finished in time\n");
            break;
        }
        nanosleep(&(struct timespec){.tv_sec = POLL_MS / 1000}, NULL);
    }
    json_decref(body);
    return rc;
}

int pe_cmd_login_handle(const char *handle)
{
    const char *base = getenv("POCKETENV_API_URL");
    json_t *out = NULL, *in = json_pack("{s:s}", "handle", handle);
    cleanup_free char *pickup = NULL;
    long st, expires;
    int rc;

    if (!pe_atproto_handle_valid(handle) && !pe_atproto_did_valid(handle)) {
        json_decref(in);
        fprintf(stderr,
                "pocketenv: '%s' is not a handle (like alice.example.com) nor a DID; to log in "
                "with an API token: pocketenv login --token TOKEN\n",
                handle);
        return 2;
    }
    if (base == NULL || base[0] == '\0')
        base = PE_API_DEFAULT_URL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    st = post(base, "/oauth/login", in, &out);
    json_decref(in);
    if (st != 200 || !json_is_string(json_object_get(out, "url"))) {
        fprintf(stderr, "pocketenv: sign in as %s: %s\n", handle,
                st < 0 ? "cannot reach the Pocketenv daemon" : str(out, "message"));
        json_decref(out);
        return st == 400 ? 2 : 1;
    }
    printf("Open this URL to sign in as %s:\n\n  %s\n\n", handle, str(out, "url"));
    if (open_browser(str(out, "url")))
        printf("(opened in your browser)\n");
    printf("Waiting for the sign-in to finish...\n");
    fflush(stdout);
    pickup = pe_xstrdup(str(out, "pickup"));
    expires = (long)json_integer_value(json_object_get(out, "expiresIn"));
    json_decref(out);
    rc = wait_for_token(base, pickup, expires);
    explicit_bzero(pickup, strlen(pickup));
    return rc;
}

int pe_cmd_logout_remote(const char *base, const char *token)
{
    json_t *in = json_object(), *out = NULL;
    long st;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    st = post_as(base, "/oauth/logout", token, in, &out);
    json_decref(in);
    json_decref(out);
    if (st == 200)
        return 1;
    if (st < 0)
        fprintf(stderr, "pocketenv: cannot reach the Pocketenv daemon: only this machine's "
                        "token is forgotten\n");
    return st < 0 || st >= 500 ? -1 : 0;
}
