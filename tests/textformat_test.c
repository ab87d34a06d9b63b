/* Tests for compiler/textformat (parser and printer) and common/suggest,
 * against tests/tf_test.proto. Error tests assert the whole message,
 * file:line:col included. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caffe.pb-c.h"
#include "common/suggest.h"
#include "compiler/textformat.h"
#include "tf_test.pb-c.h"

typedef Mdltest__TestAll TestAll;

/* Criterion passes a test whose process reports leaks at exit, and ignores
 * assertions in .fini, so under LeakSanitizer every test ends by checking
 * for leaks itself. */
int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static void check_leaks(void) {
  if (__lsan_do_recoverable_leak_check)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)");
}

static mdl_status parse_n(const char *text, size_t len, TestAll **out, mdl_error *err) {
  ProtobufCMessage *m = (ProtobufCMessage *)0x1; /* must be reset to NULL on failure */
  mdl_status st = mdl_text_parse(text, len, "t.txt", &mdltest__test_all__descriptor, &m, err);
  if (st != MDL_OK) cr_assert_null(m, "*out must be NULL on failure");
  *out = (TestAll *)m;
  return st;
}

static TestAll *parse_ok(const char *text) {
  mdl_error err = {0};
  TestAll *m = NULL;
  mdl_status st = parse_n(text, strlen(text), &m, &err);
  cr_assert_eq(st, MDL_OK, "parse of <<%s>> failed: %s", text, err.msg);
  cr_assert_not_null(m);
  return m;
}

static void free_msg(TestAll *m) {
  protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void expect_error_n(const char *text, size_t len, const char *expected) {
  mdl_error err = {0};
  TestAll *m = NULL;
  mdl_status st = parse_n(text, len, &m, &err);
  cr_assert_eq(st, MDL_ERR_INVALID, "expected failure for <<%.200s>>", text);
  cr_assert_str_eq(err.msg, expected);
}

static void expect_error(const char *text, const char *expected) {
  expect_error_n(text, strlen(text), expected);
}

static uint8_t *pack(const TestAll *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(&m->base);
  uint8_t *buf = malloc(*len ? *len : 1);
  cr_assert_eq(protobuf_c_message_pack(&m->base, buf), *len);
  return buf;
}

static char *print(const TestAll *m) {
  char *s = mdl_text_print(&m->base);
  cr_assert_not_null(s);
  return s;
}

/* text -> message -> binary, message -> text -> message -> binary: the two
 * binaries and the two printed texts must be identical. Returns the first
 * printed text (caller frees). */
static char *roundtrip(const char *text) {
  TestAll *a = parse_ok(text);
  char *printed = print(a);
  TestAll *b = parse_ok(printed);
  size_t la, lb;
  uint8_t *pa = pack(a, &la), *pb = pack(b, &lb);
  cr_assert_eq(la, lb, "packed sizes differ; printed:\n%s", printed);
  cr_assert(memcmp(pa, pb, la) == 0, "packed bytes differ; printed:\n%s", printed);
  char *again = print(b);
  cr_assert_str_eq(again, printed);
  /* and through protobuf-c's own binary reader */
  TestAll *c = mdltest__test_all__unpack(NULL, la, pa);
  cr_assert_not_null(c);
  char *from_binary = print(c);
  cr_assert_str_eq(from_binary, printed);
  free(from_binary);
  free_msg(c);
  free(again);
  free(pa);
  free(pb);
  free_msg(a);
  free_msg(b);
  return printed;
}

/* ------------------------------------------------------------ syntax -- */

Test(syntax, empty_input_is_empty_message) {
  TestAll *m = parse_ok("");
  cr_assert_eq(m->has_i32, 0);
  cr_assert_str_eq(m->str_def, "hello");
  cr_assert_eq(m->i32_def, 42);
  free_msg(m);
  m = parse_ok("  # only a comment\n\n\t\r\n# another");
  cr_assert_eq(m->n_r_i32, 0);
  free_msg(m);
  mdl_error err = {0};
  ProtobufCMessage *out = NULL;
  cr_assert_eq(mdl_text_parse(NULL, 0, "t", &mdltest__test_all__descriptor, &out, &err), MDL_OK);
  protobuf_c_message_free_unpacked(out, NULL);
  check_leaks();
}

Test(syntax, every_scalar_type) {
  TestAll *m = parse_ok(
      "i32: -5 i64: -9000000000 u32: 4000000000 u64: 18000000000000000000\n"
      "s32: -7 s64: -8 f32: 9 f64: 10 sf32: -11 sf64: -12\n"
      "fl: 1.5 db: -2.25 b: true str: \"hi\" by: 'b\\001' color: BLUE mode: EXACT\n");
  cr_assert(m->has_i32 && m->i32 == -5);
  cr_assert(m->has_i64 && m->i64 == -9000000000LL);
  cr_assert(m->has_u32 && m->u32 == 4000000000u);
  cr_assert(m->has_u64 && m->u64 == 18000000000000000000ull);
  cr_assert(m->has_s32 && m->s32 == -7);
  cr_assert(m->has_s64 && m->s64 == -8);
  cr_assert(m->has_f32 && m->f32 == 9);
  cr_assert(m->has_f64 && m->f64 == 10);
  cr_assert(m->has_sf32 && m->sf32 == -11);
  cr_assert(m->has_sf64 && m->sf64 == -12);
  cr_assert(m->has_fl && m->fl == 1.5f);
  cr_assert(m->has_db && m->db == -2.25);
  cr_assert(m->has_b && m->b == 1);
  cr_assert_str_eq(m->str, "hi");
  cr_assert(m->has_by && m->by.len == 2 && m->by.data[0] == 'b' && m->by.data[1] == 1);
  cr_assert(m->has_color && m->color == MDLTEST__COLOR__BLUE);
  cr_assert(m->has_mode && m->mode == MDLTEST__TEST_ALL__MODE__EXACT);
  free_msg(m);
  check_leaks();
}

Test(syntax, message_delimiters) {
  TestAll *m = parse_ok(
      "inner { a: 1 }\n"
      "child: { i32: 2 child < i32: 3 > }\n"
      "r_inner < a: 4 >\n"
      "r_inner: < a: 5 >\n"
      "r_inner: { }\n"
      "r_inner {}\n");
  cr_assert(m->inner && m->inner->has_a && m->inner->a == 1);
  cr_assert(m->child && m->child->i32 == 2);
  cr_assert(m->child->child && m->child->child->i32 == 3);
  cr_assert_eq(m->n_r_inner, 4);
  cr_assert_eq(m->r_inner[0]->a, 4);
  cr_assert_eq(m->r_inner[1]->a, 5);
  cr_assert_eq(m->r_inner[2]->has_a, 0);
  free_msg(m);
  check_leaks();
}

Test(syntax, repeated_by_repetition_and_lists) {
  TestAll *m = parse_ok(
      "r_i32: 1 r_i32: 2\n"
      "r_i32: [3, 4, 5]\n"
      "r_i32: []\n"
      "r_i32_packed: [-1, 0x10, 010]\n"
      "r_str: [\"a\", 'b' \"c\"]\n"
      "r_b: [true, f, 1]\n"
      "r_color: [RED, 2, INFRARED, -1]\n"
      "r_fl: [1, 2.5, inf]\n"
      "r_inner [ { a: 1 }, < a: 2 > ]\n"
      "r_inner: [ { a: 3 } ]\n"
      "r_inner: []\n");
  cr_assert_eq(m->n_r_i32, 5);
  for (int i = 0; i < 5; i++) cr_assert_eq(m->r_i32[i], i + 1);
  cr_assert_eq(m->n_r_i32_packed, 3);
  cr_assert_eq(m->r_i32_packed[0], -1);
  cr_assert_eq(m->r_i32_packed[1], 16);
  cr_assert_eq(m->r_i32_packed[2], 8);
  cr_assert_eq(m->n_r_str, 2);
  cr_assert_str_eq(m->r_str[0], "a");
  cr_assert_str_eq(m->r_str[1], "bc");
  cr_assert_eq(m->n_r_b, 3);
  cr_assert(m->r_b[0] == 1 && m->r_b[1] == 0 && m->r_b[2] == 1);
  cr_assert_eq(m->n_r_color, 4);
  cr_assert_eq(m->r_color[0], MDLTEST__COLOR__RED);
  cr_assert_eq(m->r_color[1], MDLTEST__COLOR__BLUE);
  cr_assert_eq(m->r_color[2], MDLTEST__COLOR__INFRARED);
  cr_assert_eq(m->r_color[3], MDLTEST__COLOR__INFRARED);
  cr_assert_eq(m->n_r_fl, 3);
  cr_assert(isinf(m->r_fl[2]));
  cr_assert_eq(m->n_r_inner, 3);
  cr_assert_eq(m->r_inner[2]->a, 3);
  free_msg(m);
  check_leaks();
}

Test(syntax, many_repeated_elements_grow_correctly) {
  size_t n = 100000;
  char *text = malloc(n * 16 + 1);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) o += (size_t)sprintf(text + o, "r_i64: %zu\n", i);
  TestAll *m = parse_ok(text);
  cr_assert_eq(m->n_r_i64, n);
  for (size_t i = 0; i < n; i++) cr_assert_eq(m->r_i64[i], (int64_t)i);
  free_msg(m);
  free(text);
  check_leaks();
}

Test(syntax, separators) {
  TestAll *m = parse_ok("i32: 1; i64: 2, u32: 3 inner { a: 1; name: 'x', }; r_i32: 4;");
  cr_assert(m->i32 == 1 && m->i64 == 2 && m->u32 == 3 && m->inner->a == 1);
  cr_assert_str_eq(m->inner->name, "x");
  cr_assert_eq(m->r_i32[0], 4);
  free_msg(m);
  check_leaks();
}

Test(syntax, comments_everywhere) {
  TestAll *m = parse_ok(
      "# header\n"
      "i32: # value on next line\n"
      "  7 # trailing\n"
      "inner { # open\n"
      "  a: 1 # in\n"
      "} # close\n"
      "str: \"#not a comment\" # but this is");
  cr_assert_eq(m->i32, 7);
  cr_assert_str_eq(m->str, "#not a comment");
  free_msg(m);
  check_leaks();
}

Test(syntax, enums_by_name_and_number) {
  TestAll *m = parse_ok("color: GREEN mode: 5 mode_def: FAST");
  cr_assert_eq(m->color, MDLTEST__COLOR__GREEN);
  cr_assert(m->has_mode && m->mode == MDLTEST__TEST_ALL__MODE__EXACT);
  cr_assert(m->has_mode_def && m->mode_def == MDLTEST__TEST_ALL__MODE__FAST);
  free_msg(m);
  m = parse_ok("color: -1");
  cr_assert_eq(m->color, MDLTEST__COLOR__INFRARED);
  free_msg(m);
  m = parse_ok("color: 0x2");
  cr_assert_eq(m->color, MDLTEST__COLOR__BLUE);
  free_msg(m);
  check_leaks();
}

Test(syntax, string_escapes_and_quotes) {
  TestAll *m = parse_ok(
      "str: \"a\\n\\t\\r\\\\\\'\\\"\\a\\b\\f\\v\\?z\"\n"
      "r_str: 'it\"s'\n"
      "r_str: \"it's\"\n"
      "r_str: \"\\x41\\x4a\\x4Bq\\xfg\"\n"
      "r_str: \"\\101\\60\\0601\\1x\"\n"
      "r_str: \"\\u00e9\\u20AC\\U0001F600\\ud83d\\ude00\"\n"
      "r_str: \"\"\n"
      "r_str: 'a' \"b\" 'c'\n"
      "r_str: \"raw \xc3\xa9 utf8\"\n");
  cr_assert_str_eq(m->str, "a\n\t\r\\'\"\a\b\f\v?z");
  cr_assert_eq(m->n_r_str, 8);
  cr_assert_str_eq(m->r_str[0], "it\"s");
  cr_assert_str_eq(m->r_str[1], "it's");
  cr_assert_str_eq(m->r_str[2], "AJKq\x0fg");
  cr_assert_str_eq(m->r_str[3],
                   "A00"
                   "1\001x");
  cr_assert_str_eq(m->r_str[4], "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf0\x9f\x98\x80");
  cr_assert_str_eq(m->r_str[5], "");
  cr_assert_str_eq(m->r_str[6], "abc");
  cr_assert_str_eq(m->r_str[7], "raw \xc3\xa9 utf8");
  free_msg(m);
  check_leaks();
}

Test(syntax, bytes_hold_any_byte) {
  static const char text[] = "by: \"\\000\\377\\x80a\" r_by: 'x\0y' r_by: \"\"";
  mdl_error err = {0};
  TestAll *m = NULL;
  cr_assert_eq(parse_n(text, sizeof text - 1, &m, &err), MDL_OK, "%s", err.msg);
  cr_assert(m->has_by);
  cr_assert_eq(m->by.len, 4);
  cr_assert(memcmp(m->by.data, "\0\377\200a", 4) == 0);
  cr_assert_eq(m->n_r_by, 2);
  cr_assert_eq(m->r_by[0].len, 3);
  cr_assert(memcmp(m->r_by[0].data, "x\0y", 3) == 0);
  cr_assert_eq(m->r_by[1].len, 0);
  free_msg(m);
  check_leaks();
}

Test(syntax, integer_forms_and_limits) {
  TestAll *m = parse_ok(
      "i32: -2147483648 i64: -9223372036854775808 u32: 0xFFFFFFFF u64: 18446744073709551615\n"
      "s32: 2147483647 s64: 9223372036854775807 f32: 037777777777 f64: 0xffffffffffffffff\n"
      "sf32: -0x80000000 sf64: - 0x7fffffffffffffff\n");
  cr_assert_eq(m->i32, INT32_MIN);
  cr_assert_eq(m->i64, INT64_MIN);
  cr_assert_eq(m->u32, UINT32_MAX);
  cr_assert_eq(m->u64, UINT64_MAX);
  cr_assert_eq(m->s32, INT32_MAX);
  cr_assert_eq(m->s64, INT64_MAX);
  cr_assert_eq(m->f32, UINT32_MAX);
  cr_assert_eq(m->f64, UINT64_MAX);
  cr_assert_eq(m->sf32, INT32_MIN);
  cr_assert_eq(m->sf64, -INT64_MAX);
  free_msg(m);
  m = parse_ok("u32: -0 i32: 00 u64: 0X1f");
  cr_assert(m->has_u32 && m->u32 == 0 && m->has_i32 && m->i32 == 0 && m->u64 == 31);
  free_msg(m);
  check_leaks();
}

Test(syntax, float_forms) {
  TestAll *m = parse_ok(
      "r_fl: [1e3, 1.5E-2, .5, 5., 2f, 2.5F, 1e+2f, -0, 010, 0x10, 3]\n"
      "r_fl: [inf, -inf, infinity, -Infinity, INF, nan, -nan, NaN]\n"
      "r_db: [1e300, -1e-300, 0.1, 123456789012345678901234567890, 4.9e-324]\n");
  float want[] = {1e3f, 1.5e-2f, 0.5f, 5.f, 2.f, 2.5f, 100.f, -0.f, 8.f, 16.f, 3.f};
  cr_assert_eq(m->n_r_fl, 19);
  for (int i = 0; i < 11; i++) cr_assert_eq(m->r_fl[i], want[i], "element %d", i);
  cr_assert(signbit(m->r_fl[7]), "-0 keeps its sign");
  cr_assert(isinf(m->r_fl[11]) && m->r_fl[11] > 0);
  cr_assert(isinf(m->r_fl[12]) && m->r_fl[12] < 0);
  cr_assert(isinf(m->r_fl[13]) && m->r_fl[13] > 0);
  cr_assert(isinf(m->r_fl[14]) && m->r_fl[14] < 0);
  cr_assert(isinf(m->r_fl[15]));
  for (int i = 16; i < 19; i++) cr_assert(isnan(m->r_fl[i]));
  cr_assert_eq(m->r_db[0], 1e300);
  cr_assert_eq(m->r_db[1], -1e-300);
  cr_assert_eq(m->r_db[2], 0.1);
  cr_assert_eq(m->r_db[3], 123456789012345678901234567890.0);
  cr_assert_eq(m->r_db[4], 4.9e-324);
  free_msg(m);
  /* the float conversion rounds once, straight from the decimal text */
  m = parse_ok("fl: 0.1 db: 0.1 fl_def: 16777217");
  cr_assert_eq(m->fl, 0.1f);
  cr_assert_eq(m->db, 0.1);
  cr_assert_eq(m->fl_def, 16777216.0f);
  free_msg(m);
  check_leaks();
}

Test(syntax, booleans) {
  TestAll *m = parse_ok("r_b: [true, True, t, 1, false, False, f, 0, 0x1]");
  int want[] = {1, 1, 1, 1, 0, 0, 0, 0, 1};
  cr_assert_eq(m->n_r_b, 9);
  for (int i = 0; i < 9; i++) cr_assert_eq(m->r_b[i], want[i]);
  free_msg(m);
  check_leaks();
}

Test(syntax, last_value_wins_for_singular_fields) {
  TestAll *m =
      parse_ok("i32: 1 i32: 2 str: 'a' str: 'b' by: 'x' by: 'yz' str_def: 'p' str_def: 'q'");
  cr_assert_eq(m->i32, 2);
  cr_assert_str_eq(m->str, "b");
  cr_assert(m->by.len == 2 && memcmp(m->by.data, "yz", 2) == 0);
  cr_assert_str_eq(m->str_def, "q");
  free_msg(m);
  check_leaks();
}

Test(syntax, message_set_twice_merges) {
  TestAll *m = parse_ok(
      "inner { a: 1 kids { a: 10 } }\n"
      "inner { name: 'n' kids { a: 11 } }\n"
      "inner { a: 2 }\n");
  cr_assert(m->inner->has_a && m->inner->a == 2);
  cr_assert_str_eq(m->inner->name, "n");
  cr_assert_eq(m->inner->n_kids, 2);
  cr_assert_eq(m->inner->kids[1]->a, 11);
  free_msg(m);
  check_leaks();
}

Test(syntax, defaults_stay_until_set) {
  TestAll *m = parse_ok("i32: 0");
  cr_assert_str_eq(m->str_def, "hello");
  cr_assert_eq(m->str_def, mdltest__test_all__str_def__default_value, "default pointer kept");
  cr_assert_eq(m->has_i32_def, 0);
  cr_assert_eq(m->i32_def, 42);
  cr_assert_eq(m->fl_def, 0.5f);
  cr_assert_eq(m->mode_def, MDLTEST__TEST_ALL__MODE__SLOW);
  cr_assert_eq(m->by_def.len, 3);
  cr_assert_eq(m->b_def, 1);
  cr_assert_eq(m->db_def, -1e300);
  free_msg(m);
  m = parse_ok("str_def: 'hello' by_def: 'q' i32_def: 42");
  cr_assert_neq(m->str_def, mdltest__test_all__str_def__default_value);
  cr_assert(m->has_by_def && m->by_def.len == 1);
  cr_assert(m->has_i32_def);
  free_msg(m);
  check_leaks();
}

Test(syntax, oneof_last_member_wins_and_frees) {
  TestAll *m = parse_ok("o_str: 'abc' o_int: 5");
  cr_assert_eq(m->choice_case, MDLTEST__TEST_ALL__CHOICE_O_INT);
  cr_assert_eq(m->o_int, 5);
  free_msg(m);
  m = parse_ok("o_msg { a: 1 } o_bytes: 'zz' o_str: 'abc' o_str: 'def' o_msg { name: 'x' }");
  cr_assert_eq(m->choice_case, MDLTEST__TEST_ALL__CHOICE_O_MSG);
  cr_assert_eq(m->o_msg->has_a, 0, "a new message, not the one freed earlier");
  cr_assert_str_eq(m->o_msg->name, "x");
  free_msg(m);
  m = parse_ok("o_msg { a: 1 } o_msg { name: 'x' }");
  cr_assert_eq(m->o_msg->a, 1, "same member twice merges");
  cr_assert_str_eq(m->o_msg->name, "x");
  free_msg(m);
  m = parse_ok("o_int: 1 o_bytes: '\\001\\002'");
  cr_assert_eq(m->choice_case, MDLTEST__TEST_ALL__CHOICE_O_BYTES);
  cr_assert_eq(m->o_bytes.len, 2);
  free_msg(m);
  check_leaks();
}

Test(syntax, whitespace_around_everything) {
  TestAll *m = parse_ok("\n\n   inner\n{\n a\n :\n -\n 3\n }\n r_i32\n:\n[\n1\n,\n2\n]\n");
  cr_assert_eq(m->inner->a, -3);
  cr_assert_eq(m->n_r_i32, 2);
  free_msg(m);
  check_leaks();
}

/* ------------------------------------------------------------ errors -- */

Test(errors, unknown_field_with_suggestion) {
  expect_error(
      "i32: 1\n  r_inerr { }",
      "t.txt:2:3: unknown field \"r_inerr\" in mdltest.TestAll; did you mean \"r_inner\"?");
  expect_error("inner {\n\tnmae: 'x'\n}",
               "t.txt:2:2: unknown field \"nmae\" in mdltest.Inner; did you mean \"name\"?");
  expect_error("I32: 4",
               "t.txt:1:1: unknown field \"I32\" in mdltest.TestAll; did you mean \"i32\"?");
  check_leaks();
}

Test(errors, unknown_field_without_suggestion) {
  expect_error("i32: 1 completely_unrelated: 2",
               "t.txt:1:8: unknown field \"completely_unrelated\" in mdltest.TestAll");
  check_leaks();
}

Test(errors, unknown_enum_value) {
  expect_error(
      "mode: SLWO",
      "t.txt:1:7: unknown enum value \"SLWO\" for mdltest.TestAll.Mode; did you mean \"SLOW\"?");
  expect_error(
      "mode: slow",
      "t.txt:1:7: unknown enum value \"slow\" for mdltest.TestAll.Mode; did you mean \"SLOW\"?");
  expect_error(
      "color: PURPLE",
      "t.txt:1:8: unknown enum value \"PURPLE\" for mdltest.Color; valid values: INFRARED, "
      "RED, GREEN, BLUE");
  expect_error("r_mode: [FAST, TURBO]",
               "t.txt:1:16: unknown enum value \"TURBO\" for mdltest.TestAll.Mode; valid values: "
               "FAST, SLOW, EXACT");
  check_leaks();
}

Test(errors, unknown_enum_number) {
  expect_error("mode: 3",
               "t.txt:1:7: unknown enum number 3 for mdltest.TestAll.Mode; valid values: FAST (0), "
               "SLOW (1), EXACT (5)");
  expect_error(
      "mode: -1",
      "t.txt:1:7: unknown enum number -1 for mdltest.TestAll.Mode; valid values: FAST (0), "
      "SLOW (1), EXACT (5)");
  expect_error("color: 99999999999",
               "t.txt:1:8: unknown enum number 99999999999 for mdltest.Color; valid values: "
               "INFRARED (-1), RED (0), GREEN (1), BLUE (2)");
  expect_error("mode: 1.5",
               "t.txt:1:7: expected enum value name or number for field \"mode\", found \"1.5\"");
  expect_error("mode: 'FAST'",
               "t.txt:1:7: expected enum value name or number for field \"mode\", found a string "
               "literal");
  check_leaks();
}

Test(errors, integers_out_of_range_per_type) {
  expect_error("i32: 2147483648",
               "t.txt:1:6: value 2147483648 out of range for int32 field \"i32\"");
  expect_error("i32: -2147483649",
               "t.txt:1:6: value -2147483649 out of range for int32 field \"i32\"");
  expect_error("s32: 0x80000000",
               "t.txt:1:6: value 0x80000000 out of range for sint32 field \"s32\"");
  expect_error("sf32: -0x80000001",
               "t.txt:1:7: value -0x80000001 out of range for sfixed32 field \"sf32\"");
  expect_error("u32: 4294967296",
               "t.txt:1:6: value 4294967296 out of range for uint32 field \"u32\"");
  expect_error("u32: -1", "t.txt:1:6: value -1 out of range for uint32 field \"u32\"");
  expect_error("f32: - 1", "t.txt:1:6: value -1 out of range for fixed32 field \"f32\"");
  expect_error("u64: -1", "t.txt:1:6: value -1 out of range for uint64 field \"u64\"");
  expect_error("f64: 18446744073709551616",
               "t.txt:1:6: value 18446744073709551616 out of range for fixed64 field \"f64\"");
  expect_error("i64: 9223372036854775808",
               "t.txt:1:6: value 9223372036854775808 out of range for int64 field \"i64\"");
  expect_error("s64: -9223372036854775809",
               "t.txt:1:6: value -9223372036854775809 out of range for sint64 field \"s64\"");
  expect_error("sf64: 0x10000000000000000",
               "t.txt:1:7: value 0x10000000000000000 out of range for sfixed64 field \"sf64\"");
  expect_error("r_u32: [1, 2, 037777777777, 040000000000]",
               "t.txt:1:29: value 040000000000 out of range for uint32 field \"r_u32\"");
  check_leaks();
}

Test(errors, not_an_integer) {
  expect_error("i32: 1.5", "t.txt:1:6: expected integer for int32 field \"i32\", found \"1.5\"");
  expect_error("i32: 1e3", "t.txt:1:6: expected integer for int32 field \"i32\", found \"1e3\"");
  expect_error("i32: abc", "t.txt:1:6: expected integer for int32 field \"i32\", found \"abc\"");
  expect_error("i32: 12abc",
               "t.txt:1:6: expected integer for int32 field \"i32\", found \"12abc\"");
  expect_error("i32: 0x", "t.txt:1:6: expected integer for int32 field \"i32\", found \"0x\"");
  expect_error("i32: 09", "t.txt:1:6: expected integer for int32 field \"i32\", found \"09\"");
  expect_error("i32: - abc", "t.txt:1:8: expected integer for int32 field \"i32\", found \"abc\"");
  expect_error("u64: \"5\"",
               "t.txt:1:6: expected integer for uint64 field \"u64\", found a string literal");
  expect_error("i32:", "t.txt:1:5: expected integer for int32 field \"i32\", found end of file");
  check_leaks();
}

Test(errors, floats) {
  expect_error("fl: 1e40", "t.txt:1:5: value 1e40 out of range for float field \"fl\"");
  expect_error("fl: -3.5e38", "t.txt:1:5: value -3.5e38 out of range for float field \"fl\"");
  expect_error("db: 1e400", "t.txt:1:5: value 1e400 out of range for double field \"db\"");
  expect_error("r_db: [1, -1e999]",
               "t.txt:1:11: value -1e999 out of range for double field \"r_db\"");
  expect_error("fl: abc", "t.txt:1:5: expected number for float field \"fl\", found \"abc\"");
  expect_error("fl: 1.2.3", "t.txt:1:5: expected number for float field \"fl\", found \"1.2.3\"");
  expect_error("fl: 1e", "t.txt:1:5: expected number for float field \"fl\", found \"1e\"");
  expect_error("db: 1ff", "t.txt:1:5: expected number for double field \"db\", found \"1ff\"");
  expect_error("db: 0x", "t.txt:1:5: expected number for double field \"db\", found \"0x\"");
  expect_error("db: 0x1p3", "t.txt:1:5: expected number for double field \"db\", found \"0x1p3\"");
  expect_error("fl: 0x10000000000000000",
               "t.txt:1:5: value 0x10000000000000000 out of range for float field \"fl\"");
  /* underflow is not an error: it rounds to zero or a subnormal */
  TestAll *m = parse_ok("fl: 1e-50 db: 1e-400");
  cr_assert_eq(m->fl, 0.0f);
  cr_assert_eq(m->db, 0.0);
  free_msg(m);
  check_leaks();
}

Test(errors, booleans) {
  expect_error("b: 2", "t.txt:1:4: expected true or false for bool field \"b\", found \"2\"");
  expect_error("b: yes", "t.txt:1:4: expected true or false for bool field \"b\", found \"yes\"");
  expect_error("b: TRUE", "t.txt:1:4: expected true or false for bool field \"b\", found \"TRUE\"");
  expect_error("b: -1", "t.txt:1:4: expected true or false for bool field \"b\", found \"-\"");
  check_leaks();
}

Test(errors, strings) {
  expect_error("str: 5", "t.txt:1:6: expected string for string field \"str\", found \"5\"");
  expect_error("by: x", "t.txt:1:5: expected string for bytes field \"by\", found \"x\"");
  expect_error("i32: 1\nstr: \"abc", "t.txt:2:6: unterminated string");
  expect_error("str: 'abc\ndef'", "t.txt:1:6: unterminated string");
  expect_error("str: 'abc\\", "t.txt:1:6: unterminated string");
  expect_error("str: 'abc\\\n'", "t.txt:1:6: unterminated string");
  expect_error("str: \"a\\qb\"", "t.txt:1:8: unknown escape sequence \\q");
  expect_error("str: 'ab\\xg'", "t.txt:1:9: \\x escape needs one or two hex digits");
  expect_error("str: 'a\\400'", "t.txt:1:8: octal escape out of range (above \\377)");
  expect_error("str: 'a\\u12'", "t.txt:1:8: \\u escape needs 4 hex digits");
  expect_error("str: 'a\\U0000004'", "t.txt:1:8: \\U escape needs 8 hex digits");
  expect_error("str: 'a\\ud800x'", "t.txt:1:8: unpaired UTF-16 surrogate in \\u escape");
  expect_error("str: 'a\\udc00'", "t.txt:1:8: invalid Unicode code point in \\u escape");
  expect_error("str: 'a\\U00110000'", "t.txt:1:8: invalid Unicode code point in \\U escape");
  expect_error("str: 'a\\000b'",
               "t.txt:1:6: string field \"str\" cannot hold a NUL byte (use a bytes field)");
  expect_error("r_str: ['ok', 'a' 'b\\0']",
               "t.txt:1:15: string field \"r_str\" cannot hold a NUL byte (use a bytes field)");
  check_leaks();
}

Test(errors, unclosed_and_mismatched_messages) {
  expect_error("i32: 1\n\nchild {\n  inner {\n    a: 1\n  }\n",
               "t.txt:7:1: expected \"}\" to close \"child\" opened at 3:1, found end of file");
  expect_error("inner < a: 1 }",
               "t.txt:1:14: expected \">\" to close \"inner\" opened at 1:1, found \"}\"");
  expect_error("inner { a: 1 >",
               "t.txt:1:14: expected \"}\" to close \"inner\" opened at 1:1, found \">\"");
  expect_error("inner { a: 1 5 }", "t.txt:1:14: expected field name or \"}\", found \"5\"");
  expect_error("i32: 1 }", "t.txt:1:8: expected field name, found \"}\"");
  expect_error("{ i32: 1 }", "t.txt:1:1: expected field name, found \"{\"");
  expect_error("'str'", "t.txt:1:1: expected field name, found a string literal");
  check_leaks();
}

Test(errors, field_shape_mismatches) {
  expect_error("inner 5",
               "t.txt:1:7: expected \":\" or \"{\" after field name \"inner\", found \"5\"");
  expect_error("inner",
               "t.txt:1:6: expected \":\" or \"{\" after field name \"inner\", found end of file");
  expect_error("inner: 5",
               "t.txt:1:8: expected \"{\" or \"<\" for message field \"inner\", found \"5\"");
  expect_error("i32 5", "t.txt:1:5: expected \":\" after field name \"i32\", found \"5\"");
  expect_error("i32 { }",
               "t.txt:1:5: field \"i32\" is not a message (it is int32); expected \":\"");
  expect_error("str: < >", "t.txt:1:6: field \"str\" is not a message (it is string)");
  expect_error("i32: [1, 2]",
               "t.txt:1:6: field \"i32\" is not repeated; a [...] list needs a repeated field");
  expect_error("inner [ { } ]",
               "t.txt:1:7: field \"inner\" is not repeated; a [...] list needs a repeated field");
  expect_error(
      "r_i32: [1 2]",
      "t.txt:1:11: expected \",\" or \"]\" in list for field \"r_i32\" opened at 1:8, found "
      "\"2\"");
  expect_error("r_i32: [1, 2,]",
               "t.txt:1:14: expected integer for int32 field \"r_i32\", found \"]\"");
  expect_error(
      "r_i32: [1,\n 2",
      "t.txt:2:3: expected \",\" or \"]\" in list for field \"r_i32\" opened at 1:8, found "
      "end of file");
  expect_error(
      "r_inner: [ {}, 5 ]",
      "t.txt:1:16: expected \"{\" or \"<\" in list for message field \"r_inner\", found \"5\"");
  check_leaks();
}

Test(errors, unexpected_characters) {
  expect_error("i32: 1 $", "t.txt:1:8: unexpected character '$'");
  expect_error("i32: 1\n  @x", "t.txt:2:3: unexpected character '@'");
  expect_error_n("i32: 1\0", 7, "t.txt:1:7: unexpected byte 0x00");
  expect_error("i32: 1 \x80", "t.txt:1:8: unexpected byte 0x80");
  expect_error("[ext.field]: 1", "t.txt:1:1: expected field name, found \"[\"");
  expect_error("i32: 1 .x", "t.txt:1:8: unexpected character '.'");
  check_leaks();
}

Test(errors, nesting_depth_limit) {
  /* exactly the limit parses */
  size_t depth = MDL_TEXT_MAX_DEPTH;
  char *text = malloc(depth * 9 + 1);
  size_t o = 0;
  for (size_t i = 0; i < depth; i++) o += (size_t)sprintf(text + o, "child{");
  for (size_t i = 0; i < depth; i++) text[o++] = '}';
  text[o] = '\0';
  TestAll *m = parse_ok(text);
  free_msg(m);
  free(text);
  /* one more level is refused at the opening brace of level 101 */
  text = malloc((depth + 1) * 9 + 1);
  o = 0;
  for (size_t i = 0; i <= depth; i++) o += (size_t)sprintf(text + o, "child{");
  text[o] = '\0';
  char want[200];
  snprintf(want, sizeof want,
           "t.txt:1:%zu: message nesting deeper than 100 levels at field \"child\"", depth * 6 + 6);
  expect_error(text, want);
  free(text);
  expect_error("inner { kids { kids < name: 'x' > kids { } } ",
               "t.txt:1:46: expected \"}\" to close \"inner\" opened at 1:1, found end of file");
  check_leaks();
}

Test(errors, error_positions_count_bytes_and_lines) {
  expect_error("# comment with a { brace\n\n\t\ti32: 1 i32: x",
               "t.txt:3:15: expected integer for int32 field \"i32\", found \"x\"");
  expect_error("i32: 1\r\nu32: -2", "t.txt:2:6: value -2 out of range for uint32 field \"u32\"");
  expect_error("str: '\xc3\xa9' i32: z",
               "t.txt:1:16: expected integer for int32 field \"i32\", found \"z\"");
  check_leaks();
}

Test(errors, filename_and_null_error_record) {
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  cr_assert_eq(
      mdl_text_parse("i32: x", 6, "net.prototxt", &mdltest__test_all__descriptor, &m, &err),
      MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg,
                   "net.prototxt:1:6: expected integer for int32 field \"i32\", found \"x\"");
  cr_assert_eq(err.code, MDL_ERR_INVALID);
  cr_assert_eq(mdl_text_parse("i32: x", 6, NULL, &mdltest__test_all__descriptor, &m, NULL),
               MDL_ERR_INVALID);
  cr_assert_null(m);
  cr_assert_eq(mdl_text_parse("i32: 1", 6, NULL, NULL, &m, &err), MDL_ERR_INTERNAL);
  cr_assert_eq(mdl_text_parse("i32: 1", 6, NULL, &mdltest__test_all__descriptor, NULL, &err),
               MDL_ERR_INTERNAL);
  check_leaks();
}

Test(errors, long_tokens_are_truncated_in_messages) {
  size_t n = 100000;
  char *text = malloc(n + 16);
  memcpy(text, "i32: ", 5);
  memset(text + 5, '7', n);
  text[5 + n] = '\0';
  expect_error(
      text,
      "t.txt:1:6: value 7777777777777777777777777777777777777777... out of range for int32 "
      "field \"i32\"");
  memset(text, 'q', n);
  text[n] = '\0';
  expect_error(text,
               "t.txt:1:1: unknown field \"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq...\" in "
               "mdltest.TestAll");
  free(text);
  check_leaks();
}

/* ----------------------------------------------------------- hostile -- */

static void parse_anything(const char *text, size_t len) {
  mdl_error err = {0};
  TestAll *m = NULL;
  mdl_status st = parse_n(text, len, &m, &err);
  if (st == MDL_OK) {
    char *printed = print(m);
    TestAll *again = parse_ok(printed);
    free_msg(again);
    free(printed);
    free_msg(m);
  } else {
    cr_assert_eq(st, MDL_ERR_INVALID);
    cr_assert(strncmp(err.msg, "t.txt:", 6) == 0, "%s", err.msg);
  }
}

Test(hostile, binary_garbage) {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  size_t n = 1 << 16;
  char *buf = malloc(n);
  for (int round = 0; round < 64; round++) {
    for (size_t i = 0; i < n; i++) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      buf[i] = (char)(state >> 24);
    }
    parse_anything(buf, n);
    /* garbage drawn from the grammar's own alphabet gets further */
    static const char alphabet[] = "{}<>[]:;,-# \n'\"\\0x1e.5abinf_r";
    for (size_t i = 0; i < n; i++) buf[i] = alphabet[(unsigned char)buf[i] % (sizeof alphabet - 1)];
    parse_anything(buf, n);
  }
  free(buf);
  check_leaks();
}

Test(hostile, ten_megabytes_of_open_braces) {
  size_t n = 10u << 20;
  char *buf = malloc(n);
  memset(buf, '{', n);
  expect_error_n(buf, n, "t.txt:1:1: expected field name, found \"{\"");
  for (size_t i = 0; i + 6 <= n; i += 6) memcpy(buf + i, "child{", 6);
  expect_error_n(buf, n, "t.txt:1:606: message nesting deeper than 100 levels at field \"child\"");
  for (size_t i = 0; i + 7 <= n; i += 7) memcpy(buf + i, "inner {", 7);
  expect_error_n(buf, n, "t.txt:1:8: unknown field \"inner\" in mdltest.Inner");
  free(buf);
  check_leaks();
}

Test(hostile, one_megabyte_string) {
  size_t n = 1u << 20;
  char *text = malloc(n + 32);
  size_t o = (size_t)sprintf(text, "str: \"");
  for (size_t i = 0; i < n; i++) text[o++] = (char)('a' + i % 26);
  o += (size_t)sprintf(text + o, "\" i32: 1");
  TestAll *m = parse_ok(text);
  cr_assert_eq(strlen(m->str), n);
  cr_assert_eq(m->str[n - 1], (char)('a' + (n - 1) % 26));
  char *printed = print(m);
  cr_assert_eq(strlen(printed), n + strlen("i32: 1\nstr: \"\"\n"));
  free(printed);
  free_msg(m);
  /* the same as escapes, decoded to a quarter of the size */
  char *esc = malloc(n * 4 + 32);
  o = (size_t)sprintf(esc, "by: '");
  for (size_t i = 0; i < n; i++) o += (size_t)sprintf(esc + o, "\\%03o", (unsigned)(i & 0xff));
  sprintf(esc + o, "'");
  m = parse_ok(esc);
  cr_assert_eq(m->by.len, n);
  cr_assert_eq(m->by.data[300], 300 & 0xff);
  free_msg(m);
  free(esc);
  free(text);
  check_leaks();
}

Test(hostile, extremely_long_line) {
  size_t fields = 200000;
  char *text = malloc(fields * 7 + 32);
  size_t o = 0;
  for (size_t i = 0; i < fields; i++) o += (size_t)sprintf(text + o, "i32: 1 ");
  sprintf(text + o, "bogus");
  char want[200];
  snprintf(want, sizeof want, "t.txt:1:%zu: unknown field \"bogus\" in mdltest.TestAll", o + 1);
  expect_error(text, want);
  free(text);
  check_leaks();
}

Test(hostile, nul_bytes_inside_and_outside_strings) {
  static const char in_bytes[] = "by: '\0\0'";
  mdl_error err = {0};
  TestAll *m = NULL;
  cr_assert_eq(parse_n(in_bytes, sizeof in_bytes - 1, &m, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(m->by.len, 2);
  free_msg(m);
  static const char in_string[] = "str: 'a\0b'";
  expect_error_n(in_string, sizeof in_string - 1,
                 "t.txt:1:6: string field \"str\" cannot hold a NUL byte (use a bytes field)");
  static const char leading[] = "\0i32: 1";
  expect_error_n(leading, sizeof leading - 1, "t.txt:1:1: unexpected byte 0x00");
  static const char in_comment[] = "# \0 ok\ni32: 1";
  cr_assert_eq(parse_n(in_comment, sizeof in_comment - 1, &m, &err), MDL_OK, "%s", err.msg);
  free_msg(m);
  check_leaks();
}

Test(hostile, many_repeated_and_merged_messages) {
  size_t n = 200000;
  char *text = malloc(n * 16 + 1);
  size_t o = 0;
  for (size_t i = 0; i < n; i++)
    o += (size_t)sprintf(text + o, i % 2 ? "r_inner{a:1}" : "inner{kids{}}");
  TestAll *m = parse_ok(text);
  cr_assert_eq(m->n_r_inner, n / 2);
  cr_assert_eq(m->inner->n_kids, n / 2);
  free_msg(m);
  free(text);
  check_leaks();
}

/* --------------------------------------------------------- roundtrip -- */

static const char everything[] =
    "i32: -5 i64: -9000000000 u32: 4000000000 u64: 18446744073709551615\n"
    "s32: -7 s64: -9223372036854775808 f32: 9 f64: 10 sf32: -11 sf64: -12\n"
    "fl: 0.1 db: 0.1 b: false str: \"tab\\there \\\"q\\\" 'single' \\\\ \\001 \xc3\xa9\"\n"
    "by: '\\000\\377\\x80\\n\"' color: INFRARED mode: EXACT\n"
    "inner { a: 1 name: 'n' kids { a: 2 kids { name: 'deep' } } values: [1.5, -0, nan] }\n"
    "child { i32: 1 child { str: '' } r_inner { } }\n"
    "r_i32: [1, -2, 2147483647] r_i32_packed: [0, -2147483648]\n"
    "r_fl: [3.40282347e38, 1e-45, 1.17549435e-38, -inf, inf, nan, 16777216, 0.3]\n"
    "r_db: [1.7976931348623157e308, 4.9e-324, 0.1, -0.0, 3.141592653589793]\n"
    "r_str: ['', 'a', \"\\u00e9\"] r_by: ['', '\\000'] r_b: [true, false]\n"
    "r_color: [RED, BLUE] r_mode: [FAST, EXACT, SLOW] r_inner [{a: 1}, {}, {kids {}}]\n"
    "r_u64: [0, 18446744073709551615] r_s64: [-1, 1] r_f32: [4294967295]\n"
    "r_sf64: [-9223372036854775808] r_i64: [9223372036854775807] r_u32: [0]\n"
    "str_def: 'hello' i32_def: 42 fl_def: 0.5 mode_def: SLOW by_def: 'ab\\001' b_def: true\n"
    "db_def: -1e300 o_msg { a: 7 }\n";

Test(roundtrip, everything_through_text_and_binary) {
  char *printed = roundtrip(everything);
  free(printed);
  check_leaks();
}

Test(roundtrip, each_oneof_member) {
  const char *cases[] = {"o_int: 0", "o_int: -3",   "o_str: ''",       "o_str: 'x'",
                         "o_msg {}", "o_bytes: ''", "o_bytes: '\\000'"};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) free(roundtrip(cases[i]));
  check_leaks();
}

Test(roundtrip, printed_form) {
  TestAll *m = parse_ok(
      "o_str: \"o\" r_inner { a: 1 } r_inner { } db: 1e300 inner { kids { a: -1 } name: \"x\\ny\" }"
      "mode: SLOW color: RED b: true fl: 0.1 by: '\\000A\\377' r_i32: [1, 2] str: \"it's "
      "\\\"q\\\"\"");
  char *s = print(m);
  cr_assert_str_eq(s,
                   "fl: 0.1\n"
                   "db: 1e+300\n"
                   "b: true\n"
                   "str: \"it\\'s \\\"q\\\"\"\n"
                   "by: \"\\000A\\377\"\n"
                   "color: RED\n"
                   "mode: SLOW\n"
                   "inner {\n"
                   "  name: \"x\\ny\"\n"
                   "  kids {\n"
                   "    a: -1\n"
                   "  }\n"
                   "}\n"
                   "r_i32: 1\n"
                   "r_i32: 2\n"
                   "r_inner {\n"
                   "  a: 1\n"
                   "}\n"
                   "r_inner {\n"
                   "}\n"
                   "o_str: \"o\"\n");
  free(s);
  free_msg(m);
  check_leaks();
}

Test(roundtrip, empty_message_prints_empty_string) {
  TestAll *m = parse_ok("");
  char *s = print(m);
  cr_assert_str_eq(s, "");
  free(s);
  free_msg(m);
  cr_assert_null(mdl_text_print(NULL));
  check_leaks();
}

Test(roundtrip, floats_print_shortest_exact_form) {
  struct {
    const char *in, *out;
  } cases[] = {
      {"fl: 0.1", "fl: 0.1\n"},
      {"fl: 3.40282347e38", "fl: 3.4028235e+38\n"},
      {"fl: 1e-45", "fl: 1e-45\n"},
      {"fl: -0", "fl: -0\n"},
      {"fl: 16777216", "fl: 16777216\n"},
      {"fl: 0.333333343", "fl: 0.33333334\n"},
      {"fl: -inf", "fl: -inf\n"},
      {"fl: -nan", "fl: nan\n"},
      {"db: 0.1", "db: 0.1\n"},
      {"db: 0.30000000000000004", "db: 0.30000000000000004\n"},
      {"db: 4.9e-324", "db: 5e-324\n"},
      {"db: 1e22", "db: 1e+22\n"},
      {"db: inf", "db: inf\n"},
      {"fl: 100", "fl: 100\n"},
      {"fl: -2e8", "fl: -200000000\n"},
      {"fl: 1e9", "fl: 1e+09\n"},
      {"fl: 123456789", "fl: 123456792\n"},
      {"fl: 0.0001", "fl: 0.0001\n"},
      {"fl: 0.00001", "fl: 1e-05\n"},
      {"db: 1234567", "db: 1234567\n"},
      {"db: 1e15", "db: 1000000000000000\n"},
      {"db: 1e16", "db: 1e+16\n"},
      {"db: 9007199254740993", "db: 9007199254740992\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char *s = roundtrip(cases[i].in);
    cr_assert_str_eq(s, cases[i].out);
    free(s);
  }
  check_leaks();
}

Test(roundtrip, defaults_are_not_printed_unless_set) {
  TestAll *m = malloc(sizeof *m);
  mdltest__test_all__init(m);
  char *s = print(m);
  cr_assert_str_eq(s, "", "the default string pointer and unset has_ fields print nothing");
  free(s);
  m->str_def = strdup("set");
  m->has_i32_def = 1;
  s = print(m);
  cr_assert_str_eq(s, "str_def: \"set\"\ni32_def: 42\n");
  free(s);
  free_msg(m);
  check_leaks();
}

Test(roundtrip, message_built_in_code) {
  Mdltest__Inner kid = MDLTEST__INNER__INIT;
  kid.has_a = 1;
  kid.a = 3;
  Mdltest__Inner *kids[] = {&kid};
  Mdltest__Inner inner = MDLTEST__INNER__INIT;
  inner.n_kids = 1;
  inner.kids = kids;
  float values[] = {0.25f, -1.0f};
  inner.n_values = 2;
  inner.values = values;
  inner.name = "nm";
  char *s = mdl_text_print(&inner.base);
  cr_assert_str_eq(s, "name: \"nm\"\nkids {\n  a: 3\n}\nvalues: 0.25\nvalues: -1\n");
  free(s);
  check_leaks();
}

/* -------------------------------------------------------------- files -- */

/* A new empty file under Bazel's per-test directory (or /tmp). */
static int make_temp(char *path, size_t cap) {
  const char *dir = getenv("TEST_TMPDIR");
  snprintf(path, cap, "%s/tf_testXXXXXX", dir && *dir ? dir : "/tmp");
  return mkstemp(path);
}

Test(files, parse_file_reads_and_names_the_path) {
  char path[512];
  int fd = make_temp(path, sizeof path);
  cr_assert(fd >= 0);
  const char *text = "i32: 3\nmode: FASTT\n";
  cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  cr_assert_eq(mdl_text_parse_file(path, &mdltest__test_all__descriptor, &m, &err),
               MDL_ERR_INVALID);
  char want[300];
  snprintf(want, sizeof want,
           "%s:2:7: unknown enum value \"FASTT\" for mdltest.TestAll.Mode; did you mean \"FAST\"?",
           path);
  cr_assert_str_eq(err.msg, want);
  cr_assert_null(m);
  FILE *f = fopen(path, "w");
  fputs("i32: 3 inner { a: 4 }", f);
  fclose(f);
  cr_assert_eq(mdl_text_parse_file(path, &mdltest__test_all__descriptor, &m, &err), MDL_OK, "%s",
               err.msg);
  cr_assert_eq(((TestAll *)m)->inner->a, 4);
  protobuf_c_message_free_unpacked(m, NULL);
  unlink(path);
  check_leaks();
}

Test(files, missing_file_and_directory) {
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  cr_assert_eq(
      mdl_text_parse_file("/nonexistent/net.prototxt", &mdltest__test_all__descriptor, &m, &err),
      MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg, "/nonexistent/net.prototxt: cannot open: No such file or directory");
  cr_assert_eq(mdl_text_parse_file("/tmp", &mdltest__test_all__descriptor, &m, &err),
               MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg, "/tmp: cannot read: Is a directory");
  cr_assert_null(m);
  check_leaks();
}

Test(files, refuses_files_over_the_limit) {
  char path[512];
  int fd = make_temp(path, sizeof path);
  cr_assert(fd >= 0);
  /* sparse: takes no disk */
  cr_assert_eq(ftruncate(fd, (off_t)MDL_TEXT_MAX_FILE_BYTES + 1), 0);
  close(fd);
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  cr_assert_eq(mdl_text_parse_file(path, &mdltest__test_all__descriptor, &m, &err),
               MDL_ERR_INVALID);
  char want[300];
  snprintf(want, sizeof want, "%s: file is 268435457 bytes, over the 256 MiB limit for text files",
           path);
  cr_assert_str_eq(err.msg, want);
  unlink(path);
  check_leaks();
}

/* ------------------------------------------------------------ suggest -- */

Test(suggest, distance) {
  cr_assert_eq(mdl_suggest_distance("kitten", "sitting", 10), 3);
  cr_assert_eq(mdl_suggest_distance("", "abc", 10), 3);
  cr_assert_eq(mdl_suggest_distance("same", "same", 0), 0);
  cr_assert_eq(mdl_suggest_distance("nmae", "name", 5), 1, "a transposition costs one");
  cr_assert_eq(mdl_suggest_distance("abcdef", "ghijkl", 2), 3, "over the limit reads limit+1");
  cr_assert_eq(mdl_suggest_distance("a", "abcdefgh", 2), 3, "length gap alone exceeds limit");
  check_leaks();
}

Test(suggest, nearest) {
  const char *fields[] = {"num_output", "bias_term", "pad", "kernel_size", NULL, "stride"};
  size_t n = sizeof fields / sizeof *fields;
  cr_assert_str_eq(mdl_suggest_nearest("num_ouput", fields, n), "num_output");
  cr_assert_str_eq(mdl_suggest_nearest("kernelsize", fields, n), "kernel_size");
  cr_assert_str_eq(mdl_suggest_nearest("strdie", fields, n), "stride");
  cr_assert_str_eq(mdl_suggest_nearest("PAD", fields, n), "pad");
  cr_assert_null(mdl_suggest_nearest("weight_filler", fields, n));
  cr_assert_null(mdl_suggest_nearest("x", fields, 0));
  cr_assert_null(mdl_suggest_nearest(NULL, fields, n));
  const char *enums[] = {"MAX", "AVE", "STOCHASTIC"};
  cr_assert_str_eq(mdl_suggest_nearest("MAXX", enums, 3), "MAX");
  cr_assert_str_eq(mdl_suggest_nearest("AVG", enums, 3), "AVE");
  cr_assert_str_eq(mdl_suggest_nearest("STOCHASTC", enums, 3), "STOCHASTIC");
  cr_assert_null(mdl_suggest_nearest("MEDIAN", enums, 3));
  check_leaks();
}

/* -------------------------------------------------------------- caffe -- */

/* Caffe's own example files through the real caffe.proto. */

static ProtobufCMessage *parse_caffe(const char *text, const ProtobufCMessageDescriptor *desc) {
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  cr_assert_eq(mdl_text_parse(text, strlen(text), "net.prototxt", desc, &m, &err), MDL_OK, "%s",
               err.msg);
  return m;
}

static void expect_caffe_error(const char *text, const ProtobufCMessageDescriptor *desc,
                               const char *expected) {
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  cr_assert_eq(mdl_text_parse(text, strlen(text), "net.prototxt", desc, &m, &err), MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg, expected);
}

static void caffe_roundtrip(const ProtobufCMessage *m) {
  char *printed = mdl_text_print(m);
  ProtobufCMessage *again = parse_caffe(printed, m->descriptor);
  size_t la = protobuf_c_message_get_packed_size(m), lb = protobuf_c_message_get_packed_size(again);
  uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
  protobuf_c_message_pack(m, pa);
  protobuf_c_message_pack(again, pb);
  cr_assert(la == lb && memcmp(pa, pb, la) == 0, "round trip changed the message:\n%s", printed);
  free(pa);
  free(pb);
  free(printed);
  protobuf_c_message_free_unpacked(again, NULL);
}

static const char lenet[] =
    "name: \"LeNet\"\n"
    "layer {\n"
    "  name: \"mnist\"\n"
    "  type: \"Data\"\n"
    "  top: \"data\"\n"
    "  top: \"label\"\n"
    "  include {\n"
    "    phase: TRAIN\n"
    "  }\n"
    "  transform_param {\n"
    "    scale: 0.00390625\n"
    "  }\n"
    "  data_param {\n"
    "    source: \"examples/mnist/mnist_train_lmdb\"\n"
    "    batch_size: 64\n"
    "    backend: LMDB\n"
    "  }\n"
    "}\n"
    "layer {\n"
    "  name: \"conv1\"\n"
    "  type: \"Convolution\"\n"
    "  bottom: \"data\"\n"
    "  top: \"conv1\"\n"
    "  param {\n"
    "    lr_mult: 1\n"
    "  }\n"
    "  param {\n"
    "    lr_mult: 2\n"
    "  }\n"
    "  convolution_param {\n"
    "    num_output: 20\n"
    "    kernel_size: 5\n"
    "    stride: 1\n"
    "    weight_filler {\n"
    "      type: \"xavier\"\n"
    "    }\n"
    "    bias_filler {\n"
    "      type: \"constant\"\n"
    "    }\n"
    "  }\n"
    "}\n"
    "layer {\n"
    "  name: \"pool1\"\n"
    "  type: \"Pooling\"\n"
    "  bottom: \"conv1\"\n"
    "  top: \"pool1\"\n"
    "  pooling_param {\n"
    "    pool: MAX\n"
    "    kernel_size: 2\n"
    "    stride: 2\n"
    "  }\n"
    "}\n"
    "layer {\n"
    "  name: \"loss\"\n"
    "  type: \"SoftmaxWithLoss\"\n"
    "  bottom: \"pool1\"\n"
    "  bottom: \"label\"\n"
    "  top: \"loss\"\n"
    "}\n";

Test(caffe, lenet_net) {
  Caffe__NetParameter *net =
      (Caffe__NetParameter *)parse_caffe(lenet, &caffe__net_parameter__descriptor);
  cr_assert_str_eq(net->name, "LeNet");
  cr_assert_eq(net->n_layer, 4);
  Caffe__LayerParameter *data = net->layer[0], *conv = net->layer[1], *pool = net->layer[2];
  cr_assert_eq(data->n_top, 2);
  cr_assert_eq(data->n_include, 1);
  cr_assert_eq(data->include[0]->phase, CAFFE__PHASE__TRAIN);
  cr_assert_eq(data->transform_param->scale, 0.00390625f);
  cr_assert_eq(data->data_param->batch_size, 64);
  cr_assert_eq(data->data_param->backend, CAFFE__DATA_PARAMETER__DB__LMDB);
  cr_assert_eq(conv->n_param, 2);
  cr_assert_eq(conv->param[1]->lr_mult, 2.0f);
  cr_assert_eq(conv->convolution_param->num_output, 20);
  cr_assert_eq(conv->convolution_param->n_kernel_size, 1);
  cr_assert_eq(conv->convolution_param->kernel_size[0], 5);
  cr_assert_str_eq(conv->convolution_param->weight_filler->type, "xavier");
  cr_assert(pool->pooling_param->has_pool);
  cr_assert_eq(pool->pooling_param->pool, CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX);
  caffe_roundtrip(&net->base);
  protobuf_c_message_free_unpacked(&net->base, NULL);
  check_leaks();
}

Test(caffe, v1_layers_and_solver_with_embedded_net) {
  Caffe__NetParameter *net = (Caffe__NetParameter *)parse_caffe(
      "name: 'old'\n"
      "layers { name: 'c' type: CONVOLUTION bottom: 'data' top: 'c' blobs_lr: 1 blobs_lr: 2\n"
      "  convolution_param { num_output: 4 kernel_size: 3 } }\n"
      "layers { name: 'r' type: RELU bottom: 'c' top: 'c' }\n",
      &caffe__net_parameter__descriptor);
  cr_assert_eq(net->n_layers, 2);
  cr_assert_eq(net->layers[0]->type, CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__CONVOLUTION);
  cr_assert_eq(net->layers[0]->n_blobs_lr, 2);
  caffe_roundtrip(&net->base);
  protobuf_c_message_free_unpacked(&net->base, NULL);

  Caffe__SolverParameter *solver = (Caffe__SolverParameter *)parse_caffe(
      "net_param { name: 'inline' layer { name: 'ip' type: 'InnerProduct'\n"
      "  inner_product_param { num_output: 10 } } }\n"
      "test_iter: 100\ntest_interval: 500\nbase_lr: 0.01\nmomentum: 0.9\n"
      "weight_decay: 0.0005\nlr_policy: \"inv\"\ngamma: 0.0001\npower: 0.75\n"
      "max_iter: 10000\nsnapshot_prefix: \"examples/mnist/lenet\"\nsolver_mode: CPU\n",
      &caffe__solver_parameter__descriptor);
  cr_assert_str_eq(solver->net_param->name, "inline");
  cr_assert_eq(solver->net_param->layer[0]->inner_product_param->num_output, 10);
  cr_assert_eq(solver->base_lr, 0.01f);
  cr_assert_eq(solver->n_test_iter, 1);
  cr_assert_eq(solver->solver_mode, CAFFE__SOLVER_PARAMETER__SOLVER_MODE__CPU);
  caffe_roundtrip(&solver->base);
  protobuf_c_message_free_unpacked(&solver->base, NULL);
  check_leaks();
}

Test(caffe, errors_name_caffe_messages) {
  expect_caffe_error(
      "name: 'n'\n"
      "layer {\n"
      "  name: 'conv1'\n"
      "  type: 'Convolution'\n"
      "  convolution_param {\n"
      "    kernel_size: 5\n"
      "\n"
      "\n"
      "\n"
      "\n"
      "\n"
      "    num_ouput: 20\n"
      "  }\n"
      "}\n",
      &caffe__net_parameter__descriptor,
      "net.prototxt:12:5: unknown field \"num_ouput\" in caffe.ConvolutionParameter; did you mean "
      "\"num_output\"?");
  expect_caffe_error("layer { pooling_param { pool: MAXX } }", &caffe__net_parameter__descriptor,
                     "net.prototxt:1:31: unknown enum value \"MAXX\" for "
                     "caffe.PoolingParameter.PoolMethod; did you mean \"MAX\"?");
  expect_caffe_error("layer { pooling_param { pool: MEDIAN } }", &caffe__net_parameter__descriptor,
                     "net.prototxt:1:31: unknown enum value \"MEDIAN\" for "
                     "caffe.PoolingParameter.PoolMethod; valid values: MAX, AVE, STOCHASTIC");
  expect_caffe_error("\n\nlayer {\n  name: 'x'\n", &caffe__net_parameter__descriptor,
                     "net.prototxt:5:1: expected \"}\" to close \"layer\" opened at 3:1, found end "
                     "of file");
  expect_caffe_error("layer { convolution_param { num_output: -1 } }",
                     &caffe__net_parameter__descriptor,
                     "net.prototxt:1:41: value -1 out of range for uint32 field \"num_output\"");
  check_leaks();
}

/* caffe.proto spells Exp/Log's `base` as `base_` (protoc-c's struct member
 * `base` is taken); the text format still reads and writes Caffe's name. */
Test(caffe, trailing_underscore_fields_keep_caffe_names) {
  Caffe__NetParameter *net = (Caffe__NetParameter *)parse_caffe(
      "layer { name: 'e' type: 'Exp' exp_param { base: 2 scale: 3 } }\n"
      "layer { name: 'l' type: 'Log' log_param { base_: 10 } }\n",
      &caffe__net_parameter__descriptor);
  cr_assert_eq(net->layer[0]->exp_param->base_, 2.0f);
  cr_assert_eq(net->layer[0]->exp_param->scale, 3.0f);
  cr_assert_eq(net->layer[1]->log_param->base_, 10.0f, "the schema's own spelling works too");
  char *text = mdl_text_print(&net->base);
  cr_assert(strstr(text, "base: 2\n"), "printed with Caffe's name: %s", text);
  cr_assert_null(strstr(text, "base_"), "%s", text);
  free(text);
  caffe_roundtrip(&net->base);
  protobuf_c_message_free_unpacked(&net->base, NULL);
  check_leaks();
}
