/* stepcost.h - the scheduler's model of what an engine step costs.
 *
 * t = a + b * rows, fitted by exponentially weighted least squares over
 * the steps run (about the last ten count), so it follows a machine whose
 * speed changes (other load, a GPU clocking up). The scheduler asks it how
 * many prompt rows fit into a step that also carries decodes without the
 * step exceeding --step-budget-ms.
 */
#ifndef STEPCOST_H
#define STEPCOST_H

typedef struct {
    double w, x, y, xx, xy; /* weights, rows, seconds, rows^2, rows*seconds */
} stepcost_t;

/* Folds in one measured step. */
void stepcost_observe(stepcost_t *c, int rows, double seconds);

/* Prompt rows a step holding n_decode decode rows may add within budget_s:
 * (budget - a) / b - n_decode, clamped to [min_rows, max_rows]; min_rows
 * before anything was measured. With too little spread in the steps seen,
 * the mean cost per row stands in for b (a = 0), which overestimates large
 * steps: the safe side for latency. */
int stepcost_prefill_cap(const stepcost_t *c, double budget_s, int n_decode, int min_rows, int max_rows);

#endif
