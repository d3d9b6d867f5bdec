/* finite.h - refusing weights that hold NaN or Inf.
 *
 * A non-finite weight poisons every activation it touches, and the INT8
 * activation quantizer's float-to-int conversion of NaN is undefined
 * behaviour (a libFuzzer run on the loader found exactly that). So every
 * tensor the model computes with is scanned once at load (model.c's
 * want_tensor, which the GGUF and the .sqm's embedded GGUF both go
 * through); the .sqm's own arrays are checked where sqm.c reads them, and
 * convert writes only what it loaded or validated.
 */
#ifndef FINITE_H
#define FINITE_H

#include <stddef.h>
#include <stdint.h>

/* Index of the first NaN/Inf among the n elements (a multiple of the block
 * size) of a GGML-typed array, or -1 when every value is finite. Types
 * without a dequantizer are not scanned (-1): they cannot be computed with. */
long finite_first_bad(uint32_t type, const void *data, size_t n);

/* The same for plain floats. */
long finite_first_bad_f32(const float *x, size_t n);

#endif
