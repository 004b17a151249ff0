/* Minimal unit-test harness.
 *
 * Each TEST_CASE runs in its own forked process so a crash or leaked state
 * in one case cannot hide or cause a failure in another. Assertions print
 * both values. The runner prints one line per case and a closing
 * "N passed, N failed" line.
 *
 *   TEST_CASE(parse_size) { ASSERT_EQ_INT(pe_parse_size("1k", &v), 0); }
 *   int main(void) { return RUN_TESTS(parse_size, other_case); }
 */
#ifndef PE_TEST_TASK_H
#define PE_TEST_TASK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} pe_test_case;

#define TEST_CASE(name)                                                                            \
    static void test_##name(void);                                                                 \
    static const pe_test_case tc_##name = {#name, test_##name};                                    \
    static void test_##name(void)

#define TEST_FAIL(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TEST_FAIL("assertion failed: %s", #cond);                                              \
    } while (0)

#define ASSERT_EQ_INT(a, b)                                                                        \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            TEST_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                                   \
    } while (0)

#define ASSERT_NE_INT(a, b)                                                                        \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ == b_)                                                                              \
            TEST_FAIL("%s != %s: both %lld", #a, #b, a_);                                          \
    } while (0)

#define ASSERT_EQ_STR(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",                    \
                      b_ ? b_ : "(null)");                                                         \
    } while (0)

#define ASSERT_CONTAINS(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                  \
            TEST_FAIL("%s contains \"%s\": got \"%s\"", #hay, n_, h_ ? h_ : "(null)");             \
    } while (0)

/* Skip the current case (counted as skipped, not passed). */
#define TEST_SKIP(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "  skip: ");                                                               \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(77);                                                                                  \
    } while (0)

static inline int pe_test_run(const pe_test_case *const *cases, size_t n)
{
    size_t passed = 0, failed = 0, skipped = 0;

    for (size_t i = 0; i < n; i++) {
        int status = 0;
        pid_t pid;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid == 0) {
            cases[i]->fn();
            exit(0);
        }
        if (pid < 0 || waitpid(pid, &status, 0) < 0) {
            perror("fork/wait");
            return 1;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            printf("ok   %s\n", cases[i]->name);
            passed++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
            printf("skip %s\n", cases[i]->name);
            skipped++;
        } else {
            if (WIFSIGNALED(status))
                printf("FAIL %s (signal %d)\n", cases[i]->name, WTERMSIG(status));
            else
                printf("FAIL %s\n", cases[i]->name);
            failed++;
        }
    }
    printf("%zu passed, %zu failed, %zu skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}

#define PE_TC_PTR(x) &tc_##x,
#define PE_FOREACH_1(m, x) m(x)
#define PE_FOREACH_2(m, x, ...) m(x) PE_FOREACH_1(m, __VA_ARGS__)
#define PE_FOREACH_3(m, x, ...) m(x) PE_FOREACH_2(m, __VA_ARGS__)
#define PE_FOREACH_4(m, x, ...) m(x) PE_FOREACH_3(m, __VA_ARGS__)
#define PE_FOREACH_5(m, x, ...) m(x) PE_FOREACH_4(m, __VA_ARGS__)
#define PE_FOREACH_6(m, x, ...) m(x) PE_FOREACH_5(m, __VA_ARGS__)
#define PE_FOREACH_7(m, x, ...) m(x) PE_FOREACH_6(m, __VA_ARGS__)
#define PE_FOREACH_8(m, x, ...) m(x) PE_FOREACH_7(m, __VA_ARGS__)
#define PE_FOREACH_9(m, x, ...) m(x) PE_FOREACH_8(m, __VA_ARGS__)
#define PE_FOREACH_10(m, x, ...) m(x) PE_FOREACH_9(m, __VA_ARGS__)
#define PE_FOREACH_11(m, x, ...) m(x) PE_FOREACH_10(m, __VA_ARGS__)
#define PE_FOREACH_12(m, x, ...) m(x) PE_FOREACH_11(m, __VA_ARGS__)
#define PE_FOREACH_13(m, x, ...) m(x) PE_FOREACH_12(m, __VA_ARGS__)
#define PE_FOREACH_14(m, x, ...) m(x) PE_FOREACH_13(m, __VA_ARGS__)
#define PE_FOREACH_15(m, x, ...) m(x) PE_FOREACH_14(m, __VA_ARGS__)
#define PE_FOREACH_16(m, x, ...) m(x) PE_FOREACH_15(m, __VA_ARGS__)
#define PE_GET_FE(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, NAME,     \
                  ...)                                                                             \
    NAME
#define PE_FOREACH(m, ...)                                                                         \
    PE_GET_FE(__VA_ARGS__, PE_FOREACH_16, PE_FOREACH_15, PE_FOREACH_14, PE_FOREACH_13,             \
              PE_FOREACH_12, PE_FOREACH_11, PE_FOREACH_10, PE_FOREACH_9, PE_FOREACH_8,             \
              PE_FOREACH_7, PE_FOREACH_6, PE_FOREACH_5, PE_FOREACH_4, PE_FOREACH_3, PE_FOREACH_2,  \
              PE_FOREACH_1)                                                                        \
    (m, __VA_ARGS__)

/* Up to 16 cases per RUN_TESTS call. */
#define RUN_TESTS(...)                                                                             \
    ({                                                                                             \
        static const pe_test_case *const all_[] = {PE_FOREACH(PE_TC_PTR, __VA_ARGS__)};            \
        pe_test_run(all_, sizeof(all_) / sizeof(all_[0]));                                         \
    })

#endif
