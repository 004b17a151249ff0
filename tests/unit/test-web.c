/* daemon/web.c: the web page's file table. Loading skips what must not be
 * served (hidden files, symlinks, subfolders, unknown types); lookups
 * match names and never resolve paths; conditional GETs and the banner. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "task.h"
#include "web.h"

static char dir[64];

static void put(const char *name, const char *text)
{
    char p[256];

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    if (pe_fs_write_atomic(p, text, strlen(text), 0644, NULL) < 0)
        TEST_FAIL("write %s", p);
}

/* A web folder with servable files and everything that must not be. */
static void make_dir(void)
{
    char p[256];

    snprintf(dir, sizeof(dir), "/tmp/pe-test-web.XXXXXX");
    if (mkdtemp(dir) == NULL)
        TEST_FAIL("mkdtemp");
    put("index.html", "<pre><!--pocketenv:banner--></pre>");
    put("app.js", "console.log(1)");
    put("xterm.mjs", "export {}");
    put("app.css", "body{}");
    put(".secret.js", "hidden");
    put("notes.sh", "#!/bin/sh");
    snprintf(p, sizeof(p), "%s/sub", dir);
    mkdir(p, 0755);
    put("sub/inner.js", "inner");
    snprintf(p, sizeof(p), "%s/passwd.txt", dir);
    if (symlink("/etc/passwd", p) < 0)
        TEST_FAIL("symlink");
}

static void cleanup(void)
{
    pe_fs_rm_rf(dir, NULL);
}

static pe_web *load(void)
{
    pe_err err;
    pe_web *w;

    make_dir();
    pe_err_clear(&err);
    w = pe_web_load(dir, "owner: did:key:z6Mk<&>\"x\"", &err);
    if (w == NULL)
        TEST_FAIL("load: %s", err.msg);
    return w;
}

TEST_CASE(serves_files_with_types)
{
    pe_web *w = load();
    const pe_web_file *f;

    f = pe_web_lookup(w, "/");
    ASSERT(f != NULL);
    ASSERT_EQ_STR(f->name, "index.html");
    ASSERT_EQ_STR(f->type, "text/html; charset=utf-8");
    ASSERT_EQ_STR(pe_web_lookup(w, "/index.html")->name, "index.html");
    ASSERT_EQ_STR(pe_web_lookup(w, "/app.js")->type, "text/javascript; charset=utf-8");
    ASSERT_EQ_STR(pe_web_lookup(w, "/xterm.mjs")->type, "text/javascript; charset=utf-8");
    ASSERT_EQ_STR(pe_web_lookup(w, "/app.css")->type, "text/css; charset=utf-8");
    f = pe_web_lookup(w, "/app.js");
    ASSERT_EQ_INT(f->len, strlen("console.log(1)"));
    ASSERT(memcmp(f->body, "console.log(1)", f->len) == 0);
    pe_web_free(w);
    cleanup();
}

TEST_CASE(banner_is_escaped_into_index)
{
    pe_web *w = load();
    const pe_web_file *f = pe_web_lookup(w, "/");

    ASSERT_EQ_STR(f->body, "<pre>owner: did:key:z6Mk&lt;&amp;&gt;&quot;x&quot;</pre>");
    ASSERT_EQ_INT(f->len, strlen(f->body));
    ASSERT_EQ_STR(pe_web_banner(w), "owner: did:key:z6Mk<&>\"x\"");
    pe_web_free(w);
    cleanup();
}

TEST_CASE(nothing_outside_the_table)
{
    static const char *const bad[] = {
        "/.secret.js",
        "/notes.sh",
        "/sub/inner.js",
        "/sub",
        "/passwd.txt",
        "/../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/..%2fetc%2fpasswd",
        "//etc/passwd",
        "/./app.js",
        "/app.js/",
        "/app.js/..",
        "/APP.JS",
        "/index.html%00.js",
        "app.js",
        "",
        "/..",
        "/.",
    };
    pe_web *w = load();

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (pe_web_lookup(w, bad[i]) != NULL)
            TEST_FAIL("lookup(\"%s\") found a file", bad[i]);
    pe_web_free(w);
    cleanup();
}

TEST_CASE(etags_and_conditional_get)
{
    pe_web *w = load();
    const pe_web_file *a = pe_web_lookup(w, "/app.js"), *c = pe_web_lookup(w, "/app.css");
    char list[128];

    ASSERT_EQ_INT(strlen(a->etag), 34);
    ASSERT(a->etag[0] == '"' && a->etag[33] == '"');
    ASSERT(strcmp(a->etag, c->etag) != 0);
    ASSERT(!pe_web_not_modified(a, NULL));
    ASSERT(!pe_web_not_modified(a, c->etag));
    ASSERT(pe_web_not_modified(a, a->etag));
    ASSERT(pe_web_not_modified(a, "*"));
    snprintf(list, sizeof(list), "%s, W/%s", c->etag, a->etag);
    ASSERT(pe_web_not_modified(a, list));
    ASSERT(!pe_web_not_modified(a, "\"\""));
    pe_web_free(w);
    cleanup();
}

TEST_CASE(missing_or_bad_folder)
{
    char p[256];
    pe_err err;

    pe_err_clear(&err);
    ASSERT(pe_web_load("/nonexistent/pocketenv-web", NULL, &err) == NULL);
    ASSERT_CONTAINS(err.msg, "/nonexistent/pocketenv-web");
    make_dir();
    snprintf(p, sizeof(p), "%s/index.html", dir);
    unlink(p);
    pe_err_clear(&err);
    ASSERT(pe_web_load(dir, NULL, &err) == NULL);
    ASSERT_CONTAINS(err.msg, "no index.html");
    cleanup();
}

TEST_CASE(wants_html)
{
    ASSERT(pe_web_wants_html("text/html,application/xhtml+xml,*/*;q=0.8"));
    ASSERT(!pe_web_wants_html("*/*"));
    ASSERT(!pe_web_wants_html(NULL));
}

int main(void)
{
    return RUN_TESTS(serves_files_with_types, banner_is_escaped_into_index,
                     nothing_outside_the_table, etags_and_conditional_get, missing_or_bad_folder,
                     wants_html);
}
