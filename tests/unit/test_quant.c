/* test_quant.c - dequantizers against fixtures from the PyPI gguf package,
 * and every ISA's fused dot products and matmul paths against the scalar
 * dequantizer (which the fixtures pin down). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/k_ops.h"
#include "../../kernels/k_quant.h"

static const char *TYPES[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1",
                              "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"};
static const uint32_t TYPE_IDS[] = {K_F32, K_F16, K_BF16, K_Q8_0, K_Q4_0, K_Q4_1,
                                    K_Q5_0, K_Q5_1, K_Q4_K, K_Q5_K, K_Q6_K};
#define N_TYPES 11

static void *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    void *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) { free(buf); buf = NULL; }
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

typedef struct { uint8_t *raw; float *want; size_t n_raw, n; } fixture_t;

static fixture_t load_fixture(int t) {
    char path[256];
    fixture_t f;
    snprintf(path, sizeof path, "tests/fixtures/dequant/%s.bin", TYPES[t]);
    f.raw = slurp(path, &f.n_raw);
    snprintf(path, sizeof path, "tests/fixtures/dequant/%s.f32", TYPES[t]);
    size_t nb;
    f.want = slurp(path, &nb);
    assert_non_null(f.raw);
    assert_non_null(f.want);
    f.n = nb / 4;
    return f;
}

static void test_dequant_matches_gguf_package(void **state) {
    (void)state;
    for (int t = 0; t < N_TYPES; t++) {
        fixture_t f = load_fixture(t);
        assert_int_equal(k_row_bytes(TYPE_IDS[t], f.n), f.n_raw);
        float *got = malloc(f.n * sizeof(float));
        k_dequant_row(TYPE_IDS[t], f.raw, got, f.n);
        for (size_t i = 0; i < f.n; i++) {
            float w = f.want[i], g = got[i];
            if (fabsf(g - w) > 1e-6f * fmaxf(1.0f, fabsf(w))) {
                print_error("%s element %zu: got %g want %g\n", TYPES[t], i, g, w);
                fail();
            }
        }
        free(got);
        free(f.raw);
        free(f.want);
    }
}

static void test_f16_round_trip(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        assert_int_equal(k_f32_to_f16(k_f16_to_f32((uint16_t)h)), h);
    }
    assert_int_equal(k_f32_to_f16(1e6f), 0x7c00);      /* overflow -> inf */
    assert_int_equal(k_f32_to_f16(65520.0f), 0x7c00);  /* rounds up to inf */
    assert_int_equal(k_f32_to_f16(65519.0f), 0x7bff);
}

static void test_type_table(void **state) {
    (void)state;
    assert_null(k_type_info(4));  /* removed Q4_2 */
    assert_null(k_type_info(999));
    assert_false(k_type_info(K_Q2_K)->dequant);
    assert_int_equal(k_row_bytes(K_Q4_K, 512), 288);
}

/* Builds an n x k weight matrix by rotating through the fixture blocks, so
 * every row is different and every value is a reference-checked one. */
static uint8_t *make_matrix(int t, long n, long k, size_t *row_bytes) {
    fixture_t f = load_fixture(t);
    const k_type_info_t *ti = k_type_info(TYPE_IDS[t]);
    size_t nblk = f.n_raw / ti->block_bytes, per_row = (size_t)k / ti->block_elems;
    *row_bytes = per_row * ti->block_bytes;
    uint8_t *w = malloc((size_t)n * *row_bytes);
    for (long r = 0; r < n; r++)
        for (size_t j = 0; j < per_row; j++)
            memcpy(w + r * *row_bytes + j * ti->block_bytes,
                   f.raw + ((r + j) % nblk) * ti->block_bytes, ti->block_bytes);
    free(f.raw);
    free(f.want);
    return w;
}

static const char *ISAS[] = {"portable", "avx2", "avx512"};

static void check_matmul(int t, long n, long k, long m) {
    size_t rb;
    uint8_t *w = make_matrix(t, n, k, &rb);
    k_mat_t mat = {TYPE_IDS[t], w, n, k, rb, 0};
    float *x = malloc((size_t)(m * k) * sizeof(float)), *y = malloc((size_t)(m * n) * sizeof(float));
    float *row = malloc((size_t)k * sizeof(float));
    srand(1234);
    for (long i = 0; i < m * k; i++) x[i] = (float)rand() / RAND_MAX * 2 - 1;
    k_pool_t *pool = k_pool_new(3); /* more threads than cores on purpose */
    assert_int_equal(k_matmul(pool, &mat, x, m, y), 0);
    for (long r = 0; r < n; r++) {
        k_dequant_row(TYPE_IDS[t], w + r * rb, row, (size_t)k);
        for (long i = 0; i < m; i++) {
            double want = 0, mag = 0;
            for (long j = 0; j < k; j++) {
                want += (double)row[j] * x[i * k + j];
                mag += fabs((double)row[j] * x[i * k + j]);
            }
            double got = y[i * n + r];
            if (mag > 1e30) continue; /* the F32/F16 fixtures hold extreme values on purpose */
            if (fabs(got - want) > 1e-5 * mag + 1e-6) {
                print_error("%s isa=%s n=%ld k=%ld m=%ld row %ld x %ld: got %.7g want %.7g\n",
                            TYPES[t], k_isa_name(), n, k, m, r, i, got, want);
                fail();
            }
        }
    }
    k_pool_free(pool);
    free(w); free(x); free(y); free(row);
}

static void test_matmul_all_isas_types_shapes(void **state) {
    (void)state;
    for (int s = 0; s < 3; s++) {
        setenv("SQSERVE_ISA", ISAS[s], 1);
        k_init();
        if (strcmp(k_isa_name(), ISAS[s]) != 0) continue; /* CPU lacks it */
        for (int t = 0; t < N_TYPES; t++) {
            long k = k_type_info(TYPE_IDS[t])->block_elems == 256 ? 512 : 96;
            /* fused types: m = 1 single-row kernel, 2..32 the multi-row
             * kernels (4- and 8-row variants, ragged), 40 the panel path;
             * other types always take the panel path. n = 37 leaves a
             * ragged 32-row panel and uneven thread splits. */
            long ms[] = {1, 2, 4, 5, 9, 40};
            for (int i = 0; i < 6; i++) check_matmul(t, 37, k, ms[i]);
        }
    }
    unsetenv("SQSERVE_ISA");
    k_init();
}

/* Attention (k_attn.inc) on one head: every ISA gives the portable path's
 * bits (a last-bit difference there moves SmolLM2's perplexity by up to
 * 1.2 %), and the portable path is softmax(q.K^T*scale).V to float
 * accuracy, its output exactly sum_t (p_t inv) v_t added in t order from
 * the scores it leaves. Head sizes 64, 128 and 192 take the 64-column
 * passes alone; 96, 72, 80, 40, 24, 56 and 120 end with passes of 32, 16
 * or 8 columns (every combination of them); 20 takes the scalar loop; n crosses block
 * boundaries; t0 > 0 is a sliding window. */
/* n cached positions of K and V (stride floats a row, the head at column
 * 8) in blocks of bt rows, kb/vb the blocks' first rows: a wide range of
 * magnitudes, as after SmolLM2's outlier channels */
static void attn_cache(float *K, float *V, long n, long stride, int bt, const float **kb, const float **vb) {
    for (long i = 0; i < n * stride; i++) {
        K[i] = ((float)rand() / RAND_MAX * 2 - 1) * (i % 37 == 0 ? 40.0f : 2.0f);
        V[i] = ((float)rand() / RAND_MAX * 2 - 1) * (i % 53 == 0 ? 300.0f : 1.0f);
    }
    for (long b = 0; b < (n + bt - 1) / bt; b++) {
        kb[b] = K + (size_t)b * bt * stride + 8;
        vb[b] = V + (size_t)b * bt * stride + 8;
    }
}

static void run_attn(const float *q, const float *const *kb, const float *const *vb, int bt, long stride, int t0,
                     int n, int hd, float *scores, float *out) {
    k_isa()->attn_heads(q, 1, kb, vb, bt, stride, t0, n, hd, 1.0f / sqrtf((float)hd), scores, n, out);
}

static void test_attention_same_bits_every_isa(void **state) {
    (void)state;
    enum { BT = 16, NMAX = 300, BLOCKS = (NMAX + BT - 1) / BT };
    const int hds[] = {64, 128, 192, 96, 72, 80, 40, 24, 56, 120, 20};
    const int ns[][2] = {{0, 1}, {0, 2}, {0, 17}, {0, 64}, {0, 299}, {5, 40}, {100, 300}};
    long stride = 3 * 128 + 8; /* several heads per row, as in the KV cache */
    float *K = malloc((size_t)NMAX * stride * sizeof(float)), *V = malloc((size_t)NMAX * stride * sizeof(float));
    float q[192], sc[NMAX], want[192], got[192], dw[NMAX];
    assert_non_null(K);
    assert_non_null(V);
    srand(77);
    const float *kb[BLOCKS], *vb[BLOCKS];
    attn_cache(K, V, NMAX, stride, BT, kb, vb);
    int tried = 0;
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
        for (int c = 0; c < 7; c++) {
            int hd = hds[h], t0 = ns[c][0], n = ns[c][1];
            for (int e = 0; e < hd; e++) q[e] = (float)rand() / RAND_MAX * 4 - 2;
            setenv("SQSERVE_ISA", "portable", 1);
            k_init();
            run_attn(q, kb, vb, BT, stride, t0, n, hd, sc, want);
            /* the output from the exps the call left in sc, exactly (order included) */
            float ssum = 0;
            for (int t = t0; t < n; t++) ssum += sc[t];
            const float inv = 1.0f / ssum;
            for (int e = 0; e < hd; e++) {
                float o = 0;
                for (int t = t0; t < n; t++) o += (sc[t] * inv) * vb[t / BT][(t % BT) * stride + e];
                if (memcmp(&o, &want[e], sizeof o) != 0) {
                    print_error("hd %d t0 %d n %d: out[%d] %a, the sum in order %a\n", hd, t0, n, e, want[e], o);
                    fail();
                }
            }
            /* the definition in double precision */
            double mx = -INFINITY, sum = 0;
            for (int t = t0; t < n; t++) {
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)q[e] * kb[t / BT][(t % BT) * stride + e];
                dw[t] = d / sqrt((double)hd);
                mx = dw[t] > mx ? dw[t] : mx;
            }
            for (int t = t0; t < n; t++) sum += exp(dw[t] - mx);
            for (int e = 0; e < hd; e++) {
                double o = 0, mag = 0;
                for (int t = t0; t < n; t++) {
                    double v = vb[t / BT][(t % BT) * stride + e], p = exp(dw[t] - mx) / sum;
                    o += p * v;
                    mag += fabs(p * v);
                }
                if (fabs(want[e] - o) > 1e-5 * mag + 1e-30) {
                    print_error("hd %d t0 %d n %d: out[%d] %.9g, want %.9g\n", hd, t0, n, e, want[e], o);
                    fail();
                }
            }
            for (int s = 1; s < 3; s++) {
                setenv("SQSERVE_ISA", ISAS[s], 1);
                k_init();
                if (strcmp(k_isa_name(), ISAS[s]) != 0) continue; /* CPU lacks it */
                memset(got, 0xff, sizeof got); /* NaN: an unwritten output fails memcmp */
                run_attn(q, kb, vb, BT, stride, t0, n, hd, sc, got);
                if (memcmp(got, want, (size_t)hd * sizeof(float)) != 0) {
                    for (int e = 0; e < hd; e++)
                        if (memcmp(&got[e], &want[e], sizeof(float)) != 0)
                            print_error("%s hd %d t0 %d n %d: out[%d] %.9g, portable %.9g\n", ISAS[s], hd, t0, n,
                                        e, got[e], want[e]);
                    fail();
                }
                tried++;
            }
        }
    unsetenv("SQSERVE_ISA");
    k_init();
    free(K);
    free(V);
    if (!tried) skip(); /* a CPU without AVX2 has only the portable path */
}

/* Grouped-query attention: G query heads over one K/V head in one call
 * (each K and V row read once between them) give every head the bits of
 * its own one-head call, on every ISA, for groups of 1-8 heads (four at a
 * time inside, so 5 and 8 take two rounds) and head sizes whose V passes
 * end differently. */
static void test_attention_groups_same_bits(void **state) {
    (void)state;
    enum { BT = 16, NMAX = 140, BLOCKS = (NMAX + BT - 1) / BT, GMAX = 8, HMAX = 128 };
    const int gs[] = {1, 2, 3, 4, 5, 8}, hds[] = {64, 128, 96, 40, 24, 20};
    const int ns[][2] = {{0, 1}, {0, 33}, {7, 140}};
    long stride = 2 * 128 + 8;
    float *K = malloc((size_t)NMAX * stride * sizeof(float)), *V = malloc((size_t)NMAX * stride * sizeof(float));
    float *q = malloc(GMAX * HMAX * sizeof(float)), *sc = malloc(GMAX * NMAX * sizeof(float));
    float *want = malloc(GMAX * HMAX * sizeof(float)), *got = malloc(GMAX * HMAX * sizeof(float));
    assert_true(K && V && q && sc && want && got);
    srand(91);
    const float *kb[BLOCKS], *vb[BLOCKS];
    attn_cache(K, V, NMAX, stride, BT, kb, vb);
    for (int s = 0; s < 3; s++) {
        setenv("SQSERVE_ISA", ISAS[s], 1);
        k_init();
        if (strcmp(k_isa_name(), ISAS[s]) != 0) continue; /* CPU lacks it */
        for (size_t gi = 0; gi < sizeof gs / sizeof gs[0]; gi++)
            for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
                for (int c = 0; c < 3; c++) {
                    int G = gs[gi], hd = hds[h], t0 = ns[c][0], n = ns[c][1];
                    float scale = 1.0f / sqrtf((float)hd);
                    for (int e = 0; e < G * hd; e++) q[e] = (float)rand() / RAND_MAX * 4 - 2;
                    for (int g = 0; g < G; g++)
                        k_isa()->attn_heads(q + g * hd, 1, kb, vb, BT, stride, t0, n, hd, scale, sc, NMAX,
                                            want + g * hd);
                    memset(got, 0xff, GMAX * HMAX * sizeof(float)); /* NaN: an unwritten output fails */
                    k_isa()->attn_heads(q, G, kb, vb, BT, stride, t0, n, hd, scale, sc, NMAX, got);
                    if (memcmp(got, want, (size_t)G * hd * sizeof(float)) != 0) {
                        print_error("%s G %d hd %d t0 %d n %d: a head differs from its one-head call\n", ISAS[s], G,
                                    hd, t0, n);
                        fail();
                    }
                }
    }
    unsetenv("SQSERVE_ISA");
    k_init();
    free(K); free(V); free(q); free(sc); free(want); free(got);
}

/* The softmax's exp (k_attn.inc) is the C library's expf bit for bit on
 * every ISA path: ~1.2 M inputs spread over every bit pattern (every sign,
 * exponent and the specials: +-0, +-inf, NaNs, subnormals, the overflow
 * and underflow edges), through the subtraction of a max as attention
 * does it; and two inputs whose result depends on whether glibc's steps
 * are fused (r and y), against the FMA form's bits, hard-coded (glibc's
 * expf without FMA gives the other float there). (The whole 2^32 inputs
 * were checked once, on glibc 2.36; the replica follows glibc's x86-64 FMA
 * expf, so on another C library this test says where they part.) */
static void test_attention_exp_is_expf(void **state) {
    (void)state;
    enum { N = 4096 };
    static float s[N], x[N];
    const float mxs[] = {0.0f, 3.5f, -20.0f};
    int tried = 0;
    for (int p = 0; p < 3; p++) {
        setenv("SQSERVE_ISA", ISAS[p], 1);
        k_init();
        if (strcmp(k_isa_name(), ISAS[p]) != 0) continue; /* CPU lacks it */
        tried++;
        /* the edges: glibc's special cases and their neighbours */
        const float edge[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 0x1p-149f, -0x1p-149f, 0x1p-126f,
                              0x1.62e42ep6f, nextafterf(0x1.62e42ep6f, 0), nextafterf(0x1.62e42ep6f, 100), 88.0f,
                              nextafterf(88.0f, 0), -88.0f, nextafterf(-88.0f, 0), -0x1.9fe368p6f,
                              nextafterf(-0x1.9fe368p6f, 0), nextafterf(-0x1.9fe368p6f, -200), -0x1.9d1d9ep6f,
                              nextafterf(-0x1.9d1d9ep6f, 0), nextafterf(-0x1.9d1d9ep6f, -200), -200.0f, 1e30f};
        const int ne = (int)(sizeof edge / sizeof edge[0]);
        /* (seven: four lanes of the vector loop, three of its scalar tail) */
        const float fused_x[2] = {0x1.04845ep+5f, -0x1.f8cbb2p+5f}, fused_y[2] = {0x1.f93e38p+46f, 0x1.f45326p-92f};
        for (int i = 0; i < 7; i++) s[i] = fused_x[i % 2];
        k_isa()->attn_exp(s, 7, 0.0f);
        for (int i = 0; i < 7; i++)
            if (memcmp(&fused_y[i % 2], &s[i], 4) != 0) {
                print_error("%s: exp(%a) = %a, the FMA form gives %a\n", ISAS[p], fused_x[i % 2], s[i], fused_y[i % 2]);
                fail();
            }
        for (int i = 0; i < ne; i++) s[i] = edge[i];
        k_isa()->attn_exp(s, ne, 0.0f);
        for (int i = 0; i < ne; i++) {
            const float want = expf(edge[i]);
            if (memcmp(&want, &s[i], 4) != 0 && !(isnan(want) && isnan(s[i]))) {
                print_error("%s: exp(%a) = %a, expf says %a\n", ISAS[p], edge[i], s[i], want);
                fail();
            }
        }
        for (uint64_t u0 = 0; u0 < (1ull << 32); u0 += (uint64_t)N * 3583) { /* an odd stride: every low bit varies */
            const float mx = mxs[(u0 / N) % 3];
            for (int i = 0; i < N; i++) {
                uint32_t u = (uint32_t)(u0 + (uint64_t)i * 3583);
                memcpy(&x[i], &u, 4);
                s[i] = x[i];
            }
            k_isa()->attn_exp(s, N - (int)(u0 % 7), mx); /* every tail length */
            for (int i = 0; i < N - (int)(u0 % 7); i++) {
                const float want = expf(x[i] - mx);
                if (memcmp(&want, &s[i], 4) != 0 && !(isnan(want) && isnan(s[i]))) {
                    print_error("%s: exp(%a - %a) = %a, expf says %a\n", ISAS[p], x[i], mx, s[i], want);
                    fail();
                }
            }
        }
    }
    unsetenv("SQSERVE_ISA");
    k_init();
    assert_true(tried > 0);
}

/* SwiGLU's silu(g) u (k_silu_mul, through the ISA's table) is the scalar
 * expression with the C library's expf, bit for bit, on every ISA path:
 * lengths around the vector width and the 256-value blocks, values from
 * subnormal to beyond exp's overflow in both signs. */
static void test_silu_mul_every_isa(void **state) {
    (void)state;
    enum { N = 700 };
    static float g0[N], u[N], g[N];
    uint32_t r = 99;
    for (int i = 0; i < N; i++) {
        r = r * 1664525u + 1013904223u;
        const float mag = i % 50 == 0 ? 1e-40f : i % 17 == 0 ? 150.0f : i % 5 == 0 ? 30.0f : 4.0f;
        g0[i] = ((float)(r >> 8) / 16777216.0f * 2 - 1) * mag;
        u[i] = (float)((r * 7u) >> 8) / 16777216.0f * 6 - 3;
    }
    const long ns[] = {1, 7, 8, 9, 255, 256, 257, N};
    for (int p = 0; p < 3; p++) {
        setenv("SQSERVE_ISA", ISAS[p], 1);
        k_init();
        if (strcmp(k_isa_name(), ISAS[p]) != 0) continue; /* CPU lacks it */
        for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
            memcpy(g, g0, sizeof g);
            k_silu_mul(g, u, ns[c]);
            for (long i = 0; i < N; i++) {
                const float want = i < ns[c] ? g0[i] / (1.0f + expf(-g0[i])) * u[i] : g0[i];
                if (memcmp(&want, &g[i], 4) != 0) {
                    print_error("%s n %ld: silu(%a) * %a = %a, want %a\n", ISAS[p], ns[c], g0[i], u[i], g[i], want);
                    fail();
                }
            }
        }
    }
    unsetenv("SQSERVE_ISA");
    k_init();
}

static void test_split_covers_range(void **state) {
    (void)state;
    for (long n = 0; n < 50; n++)
        for (int nth = 1; nth < 6; nth++) {
            long next = 0;
            for (int i = 0; i < nth; i++) {
                long b, e;
                k_split(n, i, nth, 4, &b, &e);
                assert_int_equal(b, next);
                assert_true(e >= b);
                assert_true(b % 4 == 0 || b == n);
                next = e;
            }
            assert_int_equal(next, n);
        }
}

static void test_small_ops(void **state) {
    (void)state;
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 2}, out[4];
    k_rmsnorm(out, x, w, 4, 0.0f);
    float inv = 1.0f / sqrtf(7.5f);
    assert_float_equal(out[0], 1 * inv, 1e-6);
    assert_float_equal(out[3], 8 * inv, 1e-6);
    float s[3] = {1, 2, 3};
    k_softmax(s, 3);
    assert_float_equal(s[0] + s[1] + s[2], 1.0f, 1e-6);
    assert_true(s[2] > s[1] && s[1] > s[0]);
    /* RoPE at position 0 is the identity; at any position it keeps norms */
    float q[4] = {1, 2, 3, 4}, inv_freq[2] = {1.0f, 0.01f};
    k_rope(q, 4, 0.0f, inv_freq);
    assert_float_equal(q[1], 2.0f, 0);
    k_rope(q, 4, 7.0f, inv_freq);
    assert_float_equal(q[0] * q[0] + q[1] * q[1], 5.0f, 1e-5);
    assert_float_equal(q[0], cosf(7.0f) - 2 * sinf(7.0f), 1e-5);
}

/* RoPE as it was computed per head before the table (the definition the
 * results are held to: libm's double cos and sin, every float product and
 * sum rounded on its own; this file is built without FMA contraction) */
static void rope_before(float *x, long rot_dim, float pos, const float *inv_freq, int neox) {
    const long half = rot_dim / 2;
    for (long i = 0; i < half; i++) {
        double theta = (double)pos * inv_freq[i];
        float c = (float)cos(theta), s = (float)sin(theta);
        float *pa = neox ? &x[i] : &x[2 * i], *pb = neox ? &x[i + half] : &x[2 * i + 1];
        float a = *pa, b = *pb;
        *pa = a * c - b * s;
        *pb = a * s + b * c;
    }
}

/* A row's RoPE table (k_rope_cs, made once a forward pass) rotates every
 * head to exactly the per-head floats, both pairings, at positions up to
 * 2^20, with llama-3-like frequencies (base 500000), the whole head (128)
 * or its first part (rot_dim 32 of 128: the rest left as it was) */
static void test_rope_table_same_bits(void **state) {
    (void)state;
    enum { HD = 128 };
    float inv_freq[HD / 2], cs[HD], a[HD], b[HD], c[HD];
    uint32_t r = 12345;
    for (int rd = 32; rd <= HD; rd += HD - 32) {
        for (int i = 0; i < rd / 2; i++) inv_freq[i] = (float)pow(500000.0, -2.0 * i / rd);
        for (int trial = 0; trial < 200; trial++) {
            float pos = trial < 100 ? (float)trial : (float)((r = r * 1664525u + 1013904223u) >> 12);
            for (int neox = 0; neox < 2; neox++) {
                for (int i = 0; i < HD; i++)
                    a[i] = b[i] = c[i] = (float)((r = r * 1664525u + 1013904223u) >> 8) / 65536.0f - 128.0f;
                k_rope_cs(cs, rd, pos, inv_freq);
                rope_before(a, rd, pos, inv_freq, neox);
                (neox ? k_rope_neox_cs_apply : k_rope_cs_apply)(b, rd, cs);
                (neox ? k_rope_neox : k_rope)(c, rd, pos, inv_freq);
                assert_memory_equal(a, b, sizeof a);
                assert_memory_equal(a, c, sizeof a);
            }
        }
    }
}

int main(void) {
    k_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequant_matches_gguf_package),
        cmocka_unit_test(test_f16_round_trip),
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_matmul_all_isas_types_shapes),
        cmocka_unit_test(test_attention_same_bits_every_isa),
        cmocka_unit_test(test_attention_groups_same_bits),
        cmocka_unit_test(test_attention_exp_is_expf),
        cmocka_unit_test(test_silu_mul_every_isa),
        cmocka_unit_test(test_split_covers_range),
        cmocka_unit_test(test_small_ops),
        cmocka_unit_test(test_rope_table_same_bits),
    };
    return cmocka_run_group_tests_name("quant", tests, NULL, NULL);
}
