/* Makes a leak inside a Criterion test fail that test under ASan. Criterion
 * runs each test in a forked child and has reported it passed before the
 * child's exit-time leak report, so LeakSanitizer alone never fails a test.
 * The asan config links tests with --wrap=criterion_internal_test_main; the
 * wrapper runs the test body, then a recoverable leak check, still inside
 * the test where an assertion counts. Fixture data kept in statics is
 * reachable, hence not a leak. Without ASan nothing here is used. */
#include <criterion/criterion.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>

void __real_criterion_internal_test_main(void (*fn)(void));

/* The test body of this child process: one test per fork. */
static void (*current_test)(void);

static void test_then_check_leaks(void) {
  current_test();
  cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
               "memory leaked in this test (LeakSanitizer's report is above)");
}

void __wrap_criterion_internal_test_main(void (*fn)(void)) {
  current_test = fn;
  __real_criterion_internal_test_main(test_then_check_leaks);
}
#endif
