/* Edit-distance suggestions for unknown names. Deliberately small: no
 * phonetic matching, no dictionary, just the nearest candidate. */
#include "common/suggest.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

static size_t min3(size_t a, size_t b, size_t c) {
  size_t m = a < b ? a : b;
  return m < c ? m : c;
}

size_t mdl_suggest_distance(const char *a, const char *b, size_t limit) {
  size_t la = strlen(a), lb = strlen(b);
  size_t diff = la > lb ? la - lb : lb - la;
  if (diff > limit) return limit + 1;
  if (limit >= SIZE_MAX / 2) limit = SIZE_MAX / 2;
  /* Three rolling rows: two back for transpositions, one back, current. */
  size_t *rows = mdl_xmalloc(3 * (lb + 1) * sizeof *rows);
  size_t *prev2 = rows, *prev = rows + (lb + 1), *cur = rows + 2 * (lb + 1);
  for (size_t j = 0; j <= lb; j++) prev[j] = j;
  size_t result = limit + 1;
  int gave_up = 0;
  for (size_t i = 1; i <= la && !gave_up; i++) {
    cur[0] = i;
    size_t row_min = cur[0];
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      size_t d = min3(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < d)
        d = prev2[j - 2] + 1;
      cur[j] = d;
      if (d < row_min) row_min = d;
    }
    if (row_min > limit) gave_up = 1;
    size_t *t = prev2;
    prev2 = prev;
    prev = cur;
    cur = t;
  }
  if (!gave_up && prev[lb] <= limit) result = prev[lb];
  free(rows);
  return result;
}

static int equal_ignoring_case(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
  }
  return *a == *b;
}

const char *mdl_suggest_nearest(const char *word, const char *const *candidates, size_t n) {
  if (!word || !candidates) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (candidates[i] && equal_ignoring_case(word, candidates[i])) return candidates[i];
  }
  size_t lw = strlen(word);
  const char *best = NULL;
  size_t best_d = SIZE_MAX;
  for (size_t i = 0; i < n; i++) {
    const char *c = candidates[i];
    if (!c) continue;
    size_t lc = strlen(c);
    size_t longer = lw > lc ? lw : lc;
    size_t limit = longer / 3 > 2 ? longer / 3 : 2;
    if (best && best_d - 1 < limit) limit = best_d - 1; /* only strictly better from now on */
    size_t d = mdl_suggest_distance(word, c, limit);
    if (d <= limit && d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return best;
}
