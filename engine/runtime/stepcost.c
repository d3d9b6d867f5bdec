/* stepcost.c - the step cost model (see stepcost.h). */
#include "stepcost.h"

void stepcost_observe(stepcost_t *c, int rows, double seconds) {
    const double keep = 0.9; /* about the last 10 steps */
    c->w = keep * c->w + 1;
    c->x = keep * c->x + rows;
    c->y = keep * c->y + seconds;
    c->xx = keep * c->xx + (double)rows * rows;
    c->xy = keep * c->xy + rows * seconds;
}

int stepcost_prefill_cap(const stepcost_t *c, double budget_s, int n_decode, int min_rows, int max_rows) {
    if (c->w < 1 || c->x <= 0) return min_rows; /* nothing measured yet */
    double det = c->w * c->xx - c->x * c->x, a = 0, b = c->y / c->x;
    if (det > 1e-9 * c->w * c->xx) {
        double bb = (c->w * c->xy - c->x * c->y) / det;
        if (bb > 0) {
            b = bb;
            a = (c->y - b * c->x) / c->w;
            if (a < 0) a = 0;
        }
    }
    double rows = (budget_s - a) / b - n_decode;
    int cap = rows > max_rows ? max_rows : (int)rows;
    return cap > min_rows ? cap : min_rows;
}
