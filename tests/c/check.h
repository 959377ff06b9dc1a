/* Check macros shared by the C test programs: count checks and failures,
 * print the library's error detail when a status is not the expected one.
 * Each program's exit status is its number of failed checks. */
#ifndef DFLOCKD_TEST_CHECK_H
#define DFLOCKD_TEST_CHECK_H

#include <dflockd.h>
#include <stdio.h>
#include <string.h>

static int failures = 0, checks = 0;

#define CHECK(cond)                                                       \
    do {                                                                  \
        checks++;                                                         \
        if (!(cond)) {                                                    \
            failures++;                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                 \
    } while (0)

/* Expect `call` to return `want`; on failure print the error detail. */
#define EXPECT(want, call)                                                          \
    do {                                                                            \
        dflockd_error *e_ = NULL;                                                   \
        dflockd_status s_ = (call);                                                 \
        checks++;                                                                   \
        if (s_ != (want)) {                                                         \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: %s returned %s, want %s: %s\n", __FILE__, __LINE__, \
                    #call, dflockd_status_str((int)s_), dflockd_status_str((int)(want)), \
                    e_ ? dflockd_error_message(e_) : "(no error object)");          \
        } else if (s_ != DFLOCKD_STATUS_OK && (e_ == NULL || dflockd_error_status(e_) != s_ || \
                                              dflockd_error_message(e_)[0] == '\0')) { \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: %s: error object missing or empty\n", __FILE__, __LINE__, #call); \
        }                                                                           \
        dflockd_error_free(e_);                                                     \
    } while (0)
#define E (&e_)

/* For the few calls without an err argument: the status alone. */
#define EXPECT_ST(want, call) CHECK((call) == (want))

#define S(str) str, strlen(str)

#endif
