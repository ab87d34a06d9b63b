/* Protobuf text format for any protobuf-c message, driven by its descriptor:
 * one parser and one printer for nets, solvers, jobs and plans. Owns lexing,
 * parsing, error positions and printing; knows nothing of Caffe semantics. */
#ifndef MDL_COMPILER_TEXTFORMAT_H
#define MDL_COMPILER_TEXTFORMAT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "common/error.h"

/* Deepest nesting of message values the parser accepts; deeper input is an
 * error, so hostile files cannot exhaust the stack. */
#define MDL_TEXT_MAX_DEPTH 100

/* Largest file mdl_text_parse_file reads. */
#define MDL_TEXT_MAX_FILE_BYTES ((size_t)256 << 20)

/* Accepted syntax (protobuf text format as Caffe files use it): "#" comments;
 * "name: value"; "name { ... }", "name: { ... }", "name < ... >"; repeated
 * fields by repetition or "name: [a, b]" lists (messages too); optional ";"
 * or "," after a field; enums by name or number; strings in ' or " with C
 * escapes (\n, \xHH, \ooo, \uXXXX, ...), adjacent literals concatenated;
 * decimal, 0x hex and 0 octal integers range-checked per field type; floats
 * with exponents, an f suffix, inf, infinity and nan; booleans true/false,
 * True/False, t/f, 1/0. A singular scalar given twice keeps the last value, a
 * singular message given twice is merged, a oneof keeps its last member.
 * Field names match exactly; extensions and Any are not supported. Messages
 * nest at most MDL_TEXT_MAX_DEPTH deep. Columns count bytes from 1.
 *
 * Parses text (len bytes, need not be NUL-terminated) as a message of type
 * desc. filename is used only in error messages ("file:line:col: ...").
 * On success *out is a new message owned by the caller, freed with
 * protobuf_c_message_free_unpacked(*out, NULL). On failure *out is NULL and
 * err says where and what was expected. */
mdl_status mdl_text_parse(const char *text, size_t len, const char *filename,
                          const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                          mdl_error *err);

/* Reads path and parses it as mdl_text_parse does. A missing, unreadable or
 * too large (over MDL_TEXT_MAX_FILE_BYTES) file is an error naming path. */
mdl_status mdl_text_parse_file(const char *path, const ProtobufCMessageDescriptor *desc,
                               ProtobufCMessage **out, mdl_error *err);

/* Prints msg in text format (fields in number order, two-space indent,
 * only fields that are set). Returns a malloc'd NUL-terminated string the
 * caller frees, or NULL when msg is NULL. Floats are printed with the fewest
 * digits that read back to the same bits, so parsing the output yields a
 * message that packs to the same bytes. Aborts on out-of-memory. */
char *mdl_text_print(const ProtobufCMessage *msg);

#endif
