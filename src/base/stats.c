/* stats.c: normal and binomial tails, the incomplete gamma function for
 * chi-square, Mann-Whitney U from histograms, and the mSPRT ratio. */
#include "stats.h"

#include <math.h>

double av_norm_sf(double z)
{
    return 0.5 * erfc(z / sqrt(2.0));
}

double av_binom_sf(uint64_t k, uint64_t n, double p)
{
    if (k == 0)
        return 1.0;
    if (k > n || p <= 0.0)
        return 0.0;
    if (p >= 1.0)
        return 1.0;
    double lp = log(p), lq = log1p(-p), lgn = lgamma((double)n + 1.0);
    if ((double)k <= (double)n * p) { /* below the mode: one minus the few terms under k */
        double cdf = 0.0;
        for (uint64_t i = 0; i < k; i++)
            cdf += exp(lgn - lgamma((double)i + 1.0) - lgamma((double)(n - i) + 1.0) + (double)i * lp +
                       (double)(n - i) * lq);
        return cdf >= 1.0 ? 0.0 : 1.0 - cdf;
    }
    /* past the mode the terms fall off fast: sum from k up until they no longer count */
    double sum = 0.0;
    for (uint64_t i = k; i <= n; i++) {
        double t = exp(lgn - lgamma((double)i + 1.0) - lgamma((double)(n - i) + 1.0) + (double)i * lp +
                       (double)(n - i) * lq);
        sum += t;
        if (t < sum * 1e-17)
            break;
    }
    return sum > 1.0 ? 1.0 : sum;
}

double av_rate_test_p(uint64_t xa, uint64_t na, uint64_t xb, uint64_t nb)
{
    uint64_t x = xa + xb;
    if (x == 0 || na + nb == 0)
        return 1.0;
    return av_binom_sf(xb, x, (double)nb / (double)(na + nb));
}

/* The regularized lower incomplete gamma P(a, x) by its series (x < a + 1). */
static double gamma_p_series(double a, double x)
{
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 1000; n++) {
        term *= x / (a + n);
        sum += term;
        if (fabs(term) < fabs(sum) * 1e-16)
            break;
    }
    return sum * exp(-x + a * log(x) - lgamma(a));
}

/* The regularized upper incomplete gamma Q(a, x) by its continued fraction
 * (x >= a + 1), evaluated with the modified Lentz method. */
static double gamma_q_fraction(double a, double x)
{
    const double tiny = 1e-300;
    double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
    for (int i = 1; i < 1000; i++) {
        double an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if (fabs(d) < tiny)
            d = tiny;
        c = b + an / c;
        if (fabs(c) < tiny)
            c = tiny;
        d = 1.0 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16)
            break;
    }
    return exp(-x + a * log(x) - lgamma(a)) * h;
}

double av_chi2_sf(double x, double df)
{
    if (x <= 0.0)
        return 1.0;
    double a = df / 2.0, y = x / 2.0;
    return y < a + 1.0 ? 1.0 - gamma_p_series(a, y) : gamma_q_fraction(a, y);
}

/* The arms of weight above 0: how many, their weights' sum and their counts'. */
static size_t weighted_arms(const uint64_t *counts, const double *weights, size_t k, double *total_w, double *n)
{
    size_t arms = 0;
    *total_w = *n = 0.0;
    for (size_t i = 0; i < k; i++)
        if (weights[i] > 0.0) {
            *total_w += weights[i];
            *n += (double)counts[i];
            arms++;
        }
    return arms;
}

double av_srm_p(const uint64_t *counts, const double *weights, size_t k)
{
    double total_w, total_n;
    size_t arms = weighted_arms(counts, weights, k, &total_w, &total_n);
    if (arms < 2 || total_n == 0.0)
        return 1.0;
    double chi2 = 0.0;
    for (size_t i = 0; i < k; i++) {
        if (weights[i] <= 0.0)
            continue;
        double e = total_n * weights[i] / total_w, d = (double)counts[i] - e;
        chi2 += d * d / e;
    }
    return av_chi2_sf(chi2, (double)(arms - 1));
}

double av_srm_log_evalue(const uint64_t *counts, const double *weights, size_t k, double c)
{
    double total_w, n;
    size_t arms = weighted_arms(counts, weights, k, &total_w, &n);
    if (arms < 2 || n == 0.0 || c <= 0.0)
        return 0.0;
    /* the mixture's marginal likelihood over the null's, both without the multinomial coefficient */
    double le = lgamma(c) - lgamma(c + n);
    for (size_t i = 0; i < k; i++) {
        if (weights[i] <= 0.0)
            continue;
        double p = weights[i] / total_w, a = c * p, x = (double)counts[i];
        le += lgamma(a + x) - lgamma(a) - x * log(p);
    }
    return le;
}

double av_mwu_hist(const double *a, const double *b, size_t nbuckets, double *u_a, double *z)
{
    double na = 0.0, nb = 0.0;
    for (size_t i = 0; i < nbuckets; i++) {
        na += a[i];
        nb += b[i];
    }
    *u_a = 0.0;
    *z = 0.0;
    if (na == 0.0 || nb == 0.0)
        return 1.0;
    /* U for a: pairs where a is above b, ties half */
    double below_b = 0.0, u = 0.0, ties = 0.0, n = na + nb;
    for (size_t i = 0; i < nbuckets; i++) {
        u += a[i] * (below_b + 0.5 * b[i]);
        below_b += b[i];
        double t = a[i] + b[i];
        ties += t * t * t - t;
    }
    *u_a = u;
    double var = na * nb / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if (var <= 0.0)
        return 1.0;
    /* b tends higher when U for a is low */
    *z = (na * nb / 2.0 - u) / sqrt(var);
    double p = 2.0 * av_norm_sf(fabs(*z));
    return p > 1.0 ? 1.0 : p;
}

double av_msprt_lambda(double mean_a, double var_a, double n_a, double mean_b, double var_b, double n_b,
                       double tau2)
{
    if (n_a <= 0.0 || n_b <= 0.0)
        return 1.0;
    double v = var_a / n_a + var_b / n_b, theta = mean_b - mean_a;
    if (v <= 0.0)
        return 1.0;
    return sqrt(v / (v + tau2)) * exp(tau2 * theta * theta / (2.0 * v * (v + tau2)));
}

/* log P(Z < z) + z^2 / 2 for a standard normal Z: finite for every z (the
 * tail's asymptotic series past -30, where the terms would underflow). */
static double log_cdf_plus_half_sq(double z)
{
    if (z > -30.0)
        return log(av_norm_sf(-z)) + 0.5 * z * z;
    double r = 1.0 / (z * z);
    return -log(-z) - 0.9189385332046727 /* log sqrt(2 pi) */ + log1p(-r + 3.0 * r * r);
}

double av_msprt_log_onesided(double mean_a, double var_a, double n_a, double mean_b, double var_b, double n_b,
                             double tau2)
{
    if (n_a <= 0.0 || n_b <= 0.0 || tau2 <= 0.0)
        return 0.0;
    double v = var_a / n_a + var_b / n_b, theta = mean_b - mean_a;
    if (v <= 0.0)
        return 0.0;
    /* log Lambda = log sqrt(v / (v + tau2)) + z^2 / 2, z the posterior mean over its spread */
    double z = theta * sqrt(tau2 / (v * (v + tau2)));
    return 0.6931471805599453 /* log 2 */ + 0.5 * log(v / (v + tau2)) + log_cdf_plus_half_sq(z);
}
