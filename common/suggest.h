/* "Did you mean" suggestions: the candidate nearest to a misspelt word by
 * edit distance. Owns only the distance and the choice; callers word the
 * message. */
#ifndef MDL_COMMON_SUGGEST_H
#define MDL_COMMON_SUGGEST_H

#include <stddef.h>

/* Optimal-string-alignment (restricted Damerau-Levenshtein) distance between
 * a and b, or limit + 1 when it exceeds limit (the search stops early then).
 * Allocates a little scratch internally; a and b are not retained. */
size_t mdl_suggest_distance(const char *a, const char *b, size_t limit);

/* Returns the candidate closest to word, or NULL when none is close enough
 * to be a plausible typo: distance at most max(2, longer length / 3), a
 * case-only difference always counting as close. Ties go to the earlier
 * candidate. The result points into candidates (NULL entries are skipped);
 * nothing is allocated for the caller. */
const char *mdl_suggest_nearest(const char *word, const char *const *candidates, size_t n);

#endif
