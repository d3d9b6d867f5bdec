/* test_unicode.c - the pre-tokenizer's Unicode classes against the Unicode
 * Character Database shipped by Debian's unicode-data package.
 *
 * The tokenizer takes letters (\p{L}), numbers (\p{N}) and marks from
 * PCRE2's tables and whitespace from the class in TOK_WS_CLASS. Here every
 * code point is checked against UnicodeData.txt (general category) and
 * PropList.txt (White_Space). Code points assigned in a Unicode version
 * newer than PCRE2's tables (DerivedAge) are skipped and counted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "../../engine/model/tok.h"

#define UCD "/usr/share/unicode/"
#define NCP 0x110000

static char cat[NCP][3];   /* general category, "" if unassigned */
static uint8_t white[NCP];
static uint8_t too_new[NCP];

static int parse_range(const char *s, unsigned *lo, unsigned *hi) {
    if (sscanf(s, "%x..%x", lo, hi) == 2) return 1;
    if (sscanf(s, "%x", lo) == 1) { *hi = *lo; return 1; }
    return 0;
}

static int load_ucd(void) {
    FILE *fp = fopen(UCD "UnicodeData.txt", "r");
    if (!fp) return -1;
    char line[512];
    unsigned first = 0;
    while (fgets(line, sizeof line, fp)) {
        unsigned cp;
        char name[256], gc[8];
        if (sscanf(line, "%x;%255[^;];%7[^;]", &cp, name, gc) != 3) continue;
        if (strstr(name, ", First>")) { first = cp; continue; }
        unsigned lo = strstr(name, ", Last>") ? first : cp;
        for (unsigned c = lo; c <= cp; c++) memcpy(cat[c], gc, 2);
    }
    fclose(fp);
    fp = fopen(UCD "PropList.txt", "r");
    if (!fp) return -1;
    while (fgets(line, sizeof line, fp)) {
        unsigned lo, hi;
        if (strstr(line, "; White_Space") && parse_range(line, &lo, &hi))
            for (unsigned c = lo; c <= hi; c++) white[c] = 1;
    }
    fclose(fp);
    return 0;
}

/* Marks code points assigned after the Unicode version PCRE2 was built on. */
static void load_ages(const char *pcre_version) {
    FILE *fp = fopen(UCD "DerivedAge.txt", "r");
    if (!fp) return;
    char line[512];
    double pv = atof(pcre_version);
    while (fgets(line, sizeof line, fp)) {
        unsigned lo, hi;
        const char *semi = strchr(line, ';');
        if (line[0] == '#' || !semi || !parse_range(line, &lo, &hi)) continue;
        if (atof(semi + 1) > pv + 1e-9)
            for (unsigned c = lo; c <= hi; c++) too_new[c] = 1;
    }
    fclose(fp);
}

static pcre2_code *compile(const char *pat) {
    int ec;
    PCRE2_SIZE eo;
    char full[256];
    snprintf(full, sizeof full, "^%s$", pat);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)full, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &ec, &eo, NULL);
    assert_non_null(re);
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static size_t utf8(unsigned cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

static void test_classes_match_ucd(void **state) {
    (void)state;
    if (load_ucd() != 0) {
        skip(); /* unicode-data is installed by make deps */
    }
    char ver[64] = "0";
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, ver);
    load_ages(ver);
    pcre2_code *L = compile("\\p{L}"), *N = compile("\\p{N}"), *Mk = compile("\\p{M}");
    pcre2_code *W = compile(TOK_WS_CLASS);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    long checked = 0, skipped = 0, bad = 0;
    for (unsigned cp = 0; cp < NCP; cp++) {
        if (cp >= 0xd800 && cp <= 0xdfff) continue; /* surrogates are not text */
        if (too_new[cp]) { skipped++; continue; }
        char s[4];
        size_t n = utf8(cp, s);
        int isL = pcre2_match(L, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0;
        int isN = pcre2_match(N, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0;
        int isM = pcre2_match(Mk, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0;
        int isW = pcre2_match(W, (PCRE2_SPTR)s, n, 0, 0, md, NULL) >= 0;
        int wantL = cat[cp][0] == 'L', wantN = cat[cp][0] == 'N', wantM = cat[cp][0] == 'M';
        if (isL != wantL || isN != wantN || isM != wantM || isW != white[cp]) {
            if (bad++ < 10)
                print_error("U+%04X (%s): L %d/%d N %d/%d M %d/%d WS %d/%d\n", cp, cat[cp], isL,
                            wantL, isN, wantN, isM, wantM, isW, white[cp]);
        }
        checked++;
    }
    printf("PCRE2 Unicode %s vs UCD: %ld code points checked, %ld newer skipped, %ld mismatches\n",
           ver, checked, skipped, bad);
    pcre2_match_data_free(md);
    pcre2_code_free(L); pcre2_code_free(N); pcre2_code_free(Mk); pcre2_code_free(W);
    assert_int_equal(bad, 0);
    assert_true(checked > 1000000);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_classes_match_ucd)};
    return cmocka_run_group_tests_name("unicode", tests, NULL, NULL);
}
