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
 *   (Johari, Pekelis, Walsh 2017, normal mixture), evaluated by hand. */
#include <math.h>

#include "stats.h"
#include "test.h"

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
    uint64_t t[13] = {0}, h[13] = {0};
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
    uint64_t a[6] = {0, 1, 2, 3, 0, 0}, b[6] = {0, 0, 1, 2, 2, 1};
    p = av_mwu_hist(a, b, 6, &u, &z);
    NEAR(u, 7, 0);
    NEAR(z, 1.843839627559394, 1e-9);
    NEAR(p, 0.06520651565396934, 1e-9);
    uint64_t none[6] = {0};
    NEAR(av_mwu_hist(a, none, 6, &u, &z), 1.0, 0);
    uint64_t same[2] = {0, 4}, same2[2] = {0, 9};
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

int main(void)
{
    RUN(test_binomial);
    RUN(test_chi2);
    RUN(test_mann_whitney);
    RUN(test_msprt);
    TEST_DONE();
}
