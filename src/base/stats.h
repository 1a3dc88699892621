/* stats.h: the statistics the rollout controller decides with. Each
 * function is pure and unit-tested against values worked out apart from it
 * (tests/unit/test_stats.c names its sources). */
#ifndef AV_STATS_H
#define AV_STATS_H

#include <stddef.h>
#include <stdint.h>

/* P(Z > z) for a standard normal Z. */
double av_norm_sf(double z);

/* P(X >= k) for X ~ Binomial(n, p), summed exactly in log space. */
double av_binom_sf(uint64_t k, uint64_t n, double p);

/* The exact conditional test for a rate (errors, 429s, blocks) that is
 * higher in b than in a: given x = xa + xb events over na and nb requests,
 * under equal rates xb ~ Binomial(x, nb / (na + nb)). Returns the one-sided
 * p-value P(X >= xb); 1 when there are no events. */
double av_rate_test_p(uint64_t xa, uint64_t na, uint64_t xb, uint64_t nb);

/* P(X > x) for X ~ chi-square with df degrees of freedom. */
double av_chi2_sf(double x, double df);

/* Sample-ratio mismatch: the chi-square goodness-of-fit p-value of the
 * observed counts against the expected shares (weights, any scale), over k
 * arms; arms of weight 0 are left out. Returns 1 with fewer than two arms. */
double av_srm_p(const uint64_t *counts, const double *weights, size_t k);

/* Sample-ratio mismatch, sequentially: the log of an e-value of the
 * counts (k arms) against the expected shares (weights, any scale; arms of
 * weight 0 left out): the Dirichlet-multinomial mixture over the shares,
 * centred on the expected ones with total concentration c, over the
 * multinomial likelihood at the expected shares (Lindon and Malek,
 * "Anytime-Valid Inference for Multinomial Count Data", 2022). Under a
 * true split it is a test martingale: the chance it ever reaches 1 / alpha
 * is at most alpha, however often it is read. 0 with fewer than two arms. */
double av_srm_log_evalue(const uint64_t *counts, const double *weights, size_t k, double c);

/* Mann-Whitney U on two samples given as counts per ordered bucket (equal
 * buckets are ties; a count may be fractional, as for a histogram spread
 * over another's buckets), with the tie-corrected normal approximation.
 * Writes U for a, and z (positive when b tends higher). Returns the
 * two-sided p-value, or 1 when either sample is empty or all values tie. */
double av_mwu_hist(const double *a, const double *b, size_t nbuckets, double *u_a, double *z);

/* The mixture sequential probability ratio test (normal mixture, Johari,
 * Pekelis and Walsh, "Always Valid Inference", 2017) for the difference of
 * two means: theta = mean_b - mean_a estimated with variance
 * v = var_a / n_a + var_b / n_b; tau2 is the mixing variance (the size of
 * effect the test is tuned to, squared). Returns the likelihood ratio
 * Lambda; rejecting equal means when Lambda >= 1 / alpha keeps the false
 * alarm rate at alpha however often it is looked at. */
double av_msprt_lambda(double mean_a, double var_a, double n_a, double mean_b, double var_b, double n_b,
                       double tau2);
/* The one-sided version: the same normal likelihood mixed over positive
 * differences only (a half-normal of variance tau2), which is the two-sided
 * ratio times twice the posterior chance that the difference is positive.
 * Returns its log, finite however far the means lie apart: large when b's
 * mean is well above a's, below 0 when it is not above. */
double av_msprt_log_onesided(double mean_a, double var_a, double n_a, double mean_b, double var_b, double n_b,
                             double tau2);

#endif
