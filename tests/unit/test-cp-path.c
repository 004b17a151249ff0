/* lib/core/cp-path.c: docker cp's path rules. */
#include <stdbool.h>

#include "task.h"
#include "core/cp-path.h"
#include "core/util.h"

/* "dir|name" of a plan, "dir|-" for contents, or "error: message". */
static const char *plan(const char *top, bool src_dir, bool contents, const char *dest,
                        enum pe_cp_dest kind)
{
    static char out[PE_ERR_MSG_MAX + 600];
    pe_cp_plan p;
    pe_err err;

    pe_err_clear(&err);
    if (pe_cp_plan_make(top, src_dir, contents, dest, kind, &p, &err) < 0) {
        snprintf(out, sizeof(out), "error: %s", err.msg);
        return out;
    }
    snprintf(out, sizeof(out), "%s|%s", p.dir, p.name ? p.name : "-");
    pe_cp_plan_free(&p);
    return out;
}

TEST_CASE(a_file)
{
    ASSERT_EQ_STR(plan("f", false, false, "/d", PE_CP_DEST_DIR), "/d|f");
    ASSERT_EQ_STR(plan("f", false, false, "/d/", PE_CP_DEST_DIR), "/d|f");
    ASSERT_EQ_STR(plan("f", false, false, "/d/new", PE_CP_DEST_MISSING), "/d|new");
    ASSERT_EQ_STR(plan("f", false, false, "new", PE_CP_DEST_MISSING), ".|new");
    ASSERT_EQ_STR(plan("f", false, false, "/new", PE_CP_DEST_MISSING), "/|new");
    ASSERT_EQ_STR(plan("f", false, false, "/d/old", PE_CP_DEST_OTHER), "/d|old");
    ASSERT_EQ_STR(plan("f", false, false, "/d/new/", PE_CP_DEST_MISSING),
                  "error: the destination directory /d/new/ does not exist");
    ASSERT_EQ_STR(plan("f", false, false, "/d/old/", PE_CP_DEST_OTHER),
                  "error: /d/old/: not a directory");
    ASSERT_EQ_STR(plan("f", false, true, "/d", PE_CP_DEST_DIR),
                  "error: the source is not a directory");
}

TEST_CASE(a_directory)
{
    ASSERT_EQ_STR(plan("s", true, false, "/d", PE_CP_DEST_DIR), "/d|s");
    ASSERT_EQ_STR(plan("s", true, true, "/d", PE_CP_DEST_DIR), "/d|-");
    ASSERT_EQ_STR(plan("s", true, false, "/d/new", PE_CP_DEST_MISSING), "/d|new");
    ASSERT_EQ_STR(plan("s", true, false, "/d/new/", PE_CP_DEST_MISSING), "/d|new");
    ASSERT_EQ_STR(plan("s", true, true, "/d/new", PE_CP_DEST_MISSING), "/d|new");
    ASSERT_EQ_STR(plan("s", true, false, "/d/f", PE_CP_DEST_OTHER),
                  "error: cannot copy a directory onto a file: /d/f");
    /* "." (a copy of / or of the working directory) is its contents */
    ASSERT_EQ_STR(plan(".", true, false, "/d", PE_CP_DEST_DIR), "/d|-");
    ASSERT_EQ_STR(plan(".", true, false, "out", PE_CP_DEST_MISSING), ".|out");
    ASSERT_EQ_STR(plan("s", true, false, "/", PE_CP_DEST_DIR), "/|s");
}

static const char *rebase(const char *entry, const char *top, const char *dir, const char *name)
{
    static char out[64];
    pe_cp_plan p = {(char *)dir, (char *)name};

    if (pe_cp_rebase(entry, top, &p, out, sizeof(out)) < 0)
        return "(refused)";
    return out;
}

TEST_CASE(names_are_rebased)
{
    ASSERT_EQ_STR(rebase("s", "s", "/d", "new"), "new");
    ASSERT_EQ_STR(rebase("s/", "s", "/d", "new"), "new");
    ASSERT_EQ_STR(rebase("s/a/b", "s", "/d", "new"), "new/a/b");
    ASSERT_EQ_STR(rebase("s/a", "s", "/d", NULL), "a");
    ASSERT_EQ_STR(rebase("s", "s", "/d", NULL), "");
    ASSERT_EQ_STR(rebase("./etc", ".", "/d", NULL), "etc");
    ASSERT_EQ_STR(rebase("./etc", ".", "/d", "out"), "out/etc");
    ASSERT_EQ_STR(rebase("sx/a", "s", "/d", "new"), "(refused)");
    ASSERT_EQ_STR(rebase("other", "s", "/d", "new"), "(refused)");
    ASSERT_EQ_STR(rebase("s/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                         "s", "/d", "n"),
                  "(refused)");
}

TEST_CASE(top_names)
{
    char out[16];

    ASSERT_EQ_INT(pe_cp_top("dir/", out, sizeof(out)), 0);
    ASSERT_EQ_STR(out, "dir");
    ASSERT_EQ_INT(pe_cp_top(".", out, sizeof(out)), 0);
    ASSERT_EQ_STR(out, ".");
    ASSERT_EQ_INT(pe_cp_top("caf\xc3\xa9", out, sizeof(out)), 0);
    ASSERT_EQ_STR(out, "caf\xc3\xa9");
    ASSERT_EQ_INT(pe_cp_top("a/b", out, sizeof(out)), -1);
    ASSERT_EQ_INT(pe_cp_top("..", out, sizeof(out)), -1);
    ASSERT_EQ_INT(pe_cp_top("", out, sizeof(out)), -1);
    ASSERT_EQ_INT(pe_cp_top("0123456789abcdef", out, sizeof(out)), -1);
}

int main(void)
{
    return RUN_TESTS(a_file, a_directory, names_are_rebased, top_names);
}
