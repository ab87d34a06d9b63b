/* libFuzzer target for compiler/textformat: any input either fails with a
 * positioned error or parses; what parses must print, re-parse, pack to the
 * same bytes and print the same text again. Built by run_textformat_fuzz.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/textformat.h"
#include "tf_test.pb-c.h"

static void die(const char *what, const char *detail, const char *text) {
  fprintf(stderr, "textformat_fuzz: %s: %s\n--- text ---\n%s\n", what, detail, text ? text : "");
  abort();
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (!buf || protobuf_c_message_pack(m, buf) != *len) die("pack", "size mismatch", NULL);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const ProtobufCMessageDescriptor *desc = &mdltest__test_all__descriptor;
  mdl_error err = {0};
  ProtobufCMessage *first = NULL;
  mdl_status st = mdl_text_parse((const char *)data, size, "fuzz", desc, &first, &err);
  if (st != MDL_OK) {
    if (first) die("failed parse left a message", err.msg, NULL);
    if (st == MDL_ERR_INVALID && strncmp(err.msg, "fuzz:", 5) != 0)
      die("error without a position", err.msg, NULL);
    return 0;
  }
  char *printed = mdl_text_print(first);
  ProtobufCMessage *second = NULL;
  if (mdl_text_parse(printed, strlen(printed), "printed", desc, &second, &err) != MDL_OK)
    die("printed text does not parse", err.msg, printed);
  size_t len1, len2;
  uint8_t *bin1 = pack(first, &len1), *bin2 = pack(second, &len2);
  if (len1 != len2 || memcmp(bin1, bin2, len1) != 0)
    die("re-parsed message packs differently", "", printed);
  char *again = mdl_text_print(second);
  if (strcmp(printed, again) != 0) die("second print differs", again, printed);
  free(again);
  free(bin1);
  free(bin2);
  free(printed);
  protobuf_c_message_free_unpacked(first, NULL);
  protobuf_c_message_free_unpacked(second, NULL);
  return 0;
}
