/* Protobuf text format for any protobuf-c message, driven by its descriptor:
 * one parser and one printer for nets, solvers, jobs and plans. Owns lexing,
 * parsing, error positions and printing; knows nothing of Caffe semantics. */
#ifndef MDL_COMPILER_TEXTFORMAT_H
#define MDL_COMPILER_TEXTFORMAT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "common/error.h"

/* Parses text (len bytes, need not be NUL-terminated) as a message of type
 * desc. filename is used only in error messages ("file:line:col: ...").
 * On success *out is a new message owned by the caller, freed with
 * protobuf_c_message_free_unpacked(*out, NULL). On failure *out is NULL and
 * err says where and what was expected. */
mdl_status mdl_text_parse(const char *text, size_t len, const char *filename,
                          const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                          mdl_error *err);

/* Reads path and parses it as mdl_text_parse does. */
mdl_status mdl_text_parse_file(const char *path, const ProtobufCMessageDescriptor *desc,
                               ProtobufCMessage **out, mdl_error *err);

/* Prints msg in text format (fields in number order, two-space indent,
 * only fields that are set). Returns a malloc'd NUL-terminated string the
 * caller frees. */
char *mdl_text_print(const ProtobufCMessage *msg);

#endif
