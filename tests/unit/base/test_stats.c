/* test_stats.c: the rollout statistics against values worked out apart
 * from this code. Sources of each fixture:
 * - binomial tails: the sums of C(n,k) p^k (1-p)^(n-k) written out (Python's
 *   math.comb, exact rationals turned to floats); sf(7;10,1/2) = 176/1024.
 * - chi-square tails: the closed forms for 1, 2 and 3 degrees of freedom,
 *   erfc(sqrt(x/2)), exp(-x/2), erfc(sqrt(x/2)) + sqrt(2x/pi) exp(-x/2);
 *   and the textbook 5 % critical value 3.841 for 1 degree.
 * - Mann-Whitney U: the tortoise-and-hare example of the Wikipedia article
 *   "Mann-Whitney U test" (finishing order THHHHHTTTTTH: U = 25 and 11),
 *   and a small tied sample worked with the tie-corrected variance
 *   n1 n2 / 12 ((n + 1) - sum(t^3 - t) / (n (n - 1))).
 * - mSPRT: Lambda = sqrt(V / (V + tau2)) exp(tau2 theta^2 / (2 V (V + tau2)))
 *   (Johari, Pekelis, Walsh 2017, normal mixture), evaluated by hand; the
 *   one-sided (half-normal) mixture 2 Lambda Phi(z), z = theta sqrt(tau2 /
 *   (V (V + tau2))), with Python's math.erfc for Phi.
 * - the split's e-value: with a uniform prior (Dirichlet(1, 1), c = 2) and
 *   counts (3, 1) against halves, the mixture's chance of the sequence is
 *   the beta integral B(4, 2) = 3! 1! / 5! = 0.05 and the null's 0.5^4, so
 *   E = 0.8. The simulations below are seeded. */
#include <math.h>

#include "stats.h"
#include "../test.h"

#define NEAR(got, want, rel)                                                                     \
    do {                                                                                         \
        double g_ = (got), w_ = (want);                                                          \
        if (!(fabs(g_ - w_) <= (rel) * fabs(w_) + 1e-300)) {                                     \
            printf("# %s:%d: %s = %.17g, want %.17g\n", __FILE__, __LINE__, #got, g_, w_);       \
            t_case_failed = 1;                                                                   \
        }                                                                                        \
    } while (0)

static void test_binomial(void)
{
    NEAR(av_binom_sf(7, 10, 0.5), 176.0 / 1024.0, 1e-12);
    NEAR(av_binom_sf(30, 40, 0.5), 0.0011107168866146822, 1e-10);
    NEAR(av_binom_sf(3, 20, 0.05), 0.0754836737884963, 1e-10);
    NEAR(av_binom_sf(0, 20, 0.05), 1.0, 0);
    NEAR(av_binom_sf(21, 20, 0.05), 0.0, 0);
    NEAR(av_binom_sf(1, 1000000, 0.5), 1.0, 1e-12); /* below the mode: the complement, quickly */
    /* the conditional rate test: 10 errors in 1000 against 25 in 1000 */
    NEAR(av_rate_test_p(10, 1000, 25, 1000), 0.008336923900060356, 1e-10);
    /* a candidate at 5 % of traffic: 50 errors in 9500 against 12 in 500 */
    NEAR(av_rate_test_p(50, 9500, 12, 500), 5.0607658308658445e-05, 1e-9);
    NEAR(av_rate_test_p(0, 100, 0, 100), 1.0, 0);
}

static void test_chi2(void)
{
    NEAR(av_chi2_sf(3.841458820694124, 1), 0.05, 1e-9);
    NEAR(av_chi2_sf(10.0, 1), 0.0015654022580025488, 1e-9);
    NEAR(av_chi2_sf(0.5, 1), 0.4795001221869535, 1e-9);
    NEAR(av_chi2_sf(3.841458820694124, 2), 0.14650006448608432, 1e-9);
    NEAR(av_chi2_sf(10.0, 2), 0.006737946999085467, 1e-9);
    NEAR(av_chi2_sf(0.5, 3), 0.9188914116546758, 1e-9);
    NEAR(av_chi2_sf(10.0, 3), 0.018566135463043237, 1e-9);
    /* a 95/5 split seen as 9400/600: chi2 = 600^2... worked: e = 9500, 500; (100^2/9500 + 100^2/500) = 21.05 */
    uint64_t counts[3] = {9400, 600, 0};
    double weights[3] = {95, 5, 0};
    NEAR(av_srm_p(counts, weights, 3), erfc(sqrt((10000.0 / 9500 + 10000.0 / 500) / 2)), 1e-9);
    uint64_t fair[2] = {5000, 5000};
    double half[2] = {1, 1};
    NEAR(av_srm_p(fair, half, 2), 1.0, 1e-12);
}

static void test_mann_whitney(void)
{
    /* finishing places 1..12: tortoises at 1, 7-11; hares at 2-6, 12 */
    double t[13] = {0}, h[13] = {0};
    int tp[] = {1, 7, 8, 9, 10, 11}, hp[] = {2, 3, 4, 5, 6, 12};
    for (int i = 0; i < 6; i++) {
        t[tp[i]]++;
        h[hp[i]]++;
    }
    double u, z;
    double p = av_mwu_hist(t, h, 13, &u, &z);
    NEAR(u, 25, 0);
    NEAR(z, -1.12089707663561, 1e-9);
    NEAR(p, 0.2623316754083573, 1e-9);
    p = av_mwu_hist(h, t, 13, &u, &z);
    NEAR(u, 11, 0);
    /* ties: a = 1,2,2,3,3,3 and b = 2,3,3,4,4,5 */
    double a[6] = {0, 1, 2, 3, 0, 0}, b[6] = {0, 0, 1, 2, 2, 1};
    p = av_mwu_hist(a, b, 6, &u, &z);
    NEAR(u, 7, 0);
    NEAR(z, 1.843839627559394, 1e-9);
    NEAR(p, 0.06520651565396934, 1e-9);
    double none[6] = {0};
    NEAR(av_mwu_hist(a, none, 6, &u, &z), 1.0, 0);
    double same[2] = {0, 4}, same2[2] = {0, 9};
    NEAR(av_mwu_hist(same, same2, 2, &u, &z), 1.0, 0); /* all tied */
}

static void test_msprt(void)
{
    /* theta 0.1, V = 0.001 (var 0.5 over 1000 each), tau2 0.01 */
    NEAR(av_msprt_lambda(1.0, 0.5, 1000, 1.1, 0.5, 1000, 0.01), 28.40334469136295, 1e-9);
    NEAR(av_msprt_lambda(1.0, 0.5, 1000, 1.0, 0.5, 1000, 0.01), 0.30151134457776363, 1e-9);
    NEAR(av_msprt_lambda(0.0, 0.2, 1000, 0.05, 0.2, 1000, 0.0025), 5.492946325124932, 1e-9);
    NEAR(av_msprt_lambda(0.0, 1, 0, 5, 1, 10, 1), 1.0, 0);
}

static void test_msprt_onesided(void)
{
    NEAR(av_msprt_log_onesided(1.0, 0.5, 1000, 1.1, 0.5, 1000, 0.01), 4.038368848282876, 1e-9);
    NEAR(av_msprt_log_onesided(1.0, 0.5, 1000, 0.9, 0.5, 1000, 0.01), -2.6177972331542994, 1e-9);
    /* past z = -30 the series takes over: no jump there, and finite however far */
    double at = sqrt(0.001 * 0.011 / 0.01); /* theta for z = 1 */
    double x = av_msprt_log_onesided(0, 0.5, 1000, -29.999 * at, 0.5, 1000, 0.01);
    double y = av_msprt_log_onesided(0, 0.5, 1000, -30.001 * at, 0.5, 1000, 0.01);
    NEAR(x, y, 1e-4);
    CHECK(isfinite(av_msprt_log_onesided(0, 0.5, 1000, -1e6, 0.5, 1000, 0.01)));
    CHECK(isfinite(av_msprt_log_onesided(0, 0.5, 1000, 1e3, 0.5, 1000, 0.01)));
}

static uint64_t rng;

static double uniform(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* A draw of Binomial(n, p) by inverting its distribution (cdf: n + 1 values). */
static uint64_t binomial(const double *cdf, uint64_t n)
{
    double u = uniform();
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void binomial_cdf(uint64_t n, double p, double *cdf)
{
    double sum = 0;
    for (uint64_t k = 0; k <= n; k++) {
        sum += exp(lgamma((double)n + 1) - lgamma((double)k + 1) - lgamma((double)(n - k) + 1) + (double)k * log(p) +
                   (double)(n - k) * log1p(-p));
        cdf[k] = sum;
    }
    cdf[n] = 1.0;
}

/* The split check as the controller runs it: a step's counts read once a
 * second (1,250 requests a second), paused at e-value 1000 (alpha 0.001).
 * 1000 healthy steps of 10 s and of 300 s at shares of 5, 25 and 50 %:
 * pauses at most alpha of them. The chi-square test read the same way (its
 * p below 0.001 after 1000 requests) is counted beside it: the old check,
 * which paused far more often than its nominal rate on long steps. Then a
 * broken split (6 % for a step of 5, 52 % for 50) is found, and when. */
static void test_srm_sequential(void)
{
    enum { RUNS = 1000, RATE = 1250 };
    static const double shares[] = {0.05, 0.25, 0.5};
    static const int lengths[] = {10, 300};
    static double cdf[RATE + 1];
    const double threshold = log(1000.0);
    for (size_t si = 0; si < 3; si++) {
        binomial_cdf(RATE, shares[si], cdf);
        double w[2] = {1 - shares[si], shares[si]};
        for (size_t li = 0; li < 2; li++) {
            int paused = 0, chi_paused = 0;
            for (int run = 0; run < RUNS; run++) {
                rng = (uint64_t)(run + 1) * 0x9e3779b97f4a7c15ull + si * 7 + li;
                uint64_t c[2] = {0, 0};
                int p1 = 0, p2 = 0;
                for (int t = 0; t < lengths[li]; t++) {
                    uint64_t b = binomial(cdf, RATE);
                    c[1] += b;
                    c[0] += RATE - b;
                    if (!p1 && av_srm_log_evalue(c, w, 2, 1000.0) >= threshold)
                        p1 = 1;
                    if (!p2 && c[0] + c[1] >= 1000 && av_srm_p(c, w, 2) < 0.001)
                        p2 = 1;
                }
                paused += p1;
                chi_paused += p2;
            }
            printf("# split %.0f%%, healthy steps of %d s read every second: the e-value paused %d of %d, the "
                   "chi-square %d\n", shares[si] * 100, lengths[li], paused, RUNS, chi_paused);
            CHECK(paused <= RUNS / 1000);
        }
    }
    /* broken: found, and within a step of 300 s */
    static const double want[] = {0.05, 0.5}, got[] = {0.06, 0.52};
    for (int k = 0; k < 2; k++) {
        binomial_cdf(RATE, got[k], cdf);
        double w[2] = {1 - want[k], want[k]};
        int found = 0;
        int secs[100];
        for (int run = 0; run < 100; run++) {
            rng = (uint64_t)(run + 1) * 0x2545f4914f6cdd1dull + (uint64_t)k;
            uint64_t c[2] = {0, 0};
            secs[run] = 0;
            for (int t = 1; t <= 300 && !secs[run]; t++) {
                uint64_t b = binomial(cdf, RATE);
                c[1] += b;
                c[0] += RATE - b;
                if (av_srm_log_evalue(c, w, 2, 1000.0) >= threshold)
                    secs[run] = t;
            }
            found += secs[run] > 0;
        }
        int sorted[100], n = 0;
        for (int run = 0; run < 100; run++)
            if (secs[run])
                sorted[n++] = secs[run];
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
                int tmp = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = tmp;
            }
        printf("# a %.0f%% split that gives %.0f%%: paused in %d of 100 steps of 300 s, median after %d s\n",
               want[k] * 100, got[k] * 100, found, n ? sorted[n / 2] : -1);
        CHECK(found >= 95);
    }
    /* the closed form */
    uint64_t c[2] = {3, 1};
    double half[2] = {1, 1};
    NEAR(av_srm_log_evalue(c, half, 2, 2.0), log(0.8), 1e-12);
}

int main(void)
{
    RUN(test_binomial);
    RUN(test_chi2);
    RUN(test_mann_whitney);
    RUN(test_msprt);
    RUN(test_msprt_onesided);
    RUN(test_srm_sequential);
    TEST_DONE();
}
