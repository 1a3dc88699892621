/* judge.c: beta-mixture e-values for rates, the one-sided mSPRT for means,
 * minimum samples, SLOs. */
#include "judge.h"

#include <math.h>

#include "hist.h"
#include "stats.h"

void av_arm_add(av_arm_t *arm, int error, int r429, int blocked, double latency_ms, double ttft_ms, double cost)
{
    arm->n++;
    arm->errors += error != 0;
    arm->r429 += r429 != 0;
    arm->blocks += blocked != 0;
    if (latency_ms > 0) {
        double l = log(latency_ms);
        arm->lat_n++;
        arm->lat_sum += l;
        arm->lat_sq += l * l;
    }
    if (ttft_ms > 0) {
        double l = log(ttft_ms);
        arm->ttft_n++;
        arm->ttft_sum += l;
        arm->ttft_sq += l * l;
    }
    if (cost >= 0) {
        arm->cost_n++;
        arm->cost_sum += cost;
        arm->cost_sq += cost * cost;
    }
}

void av_arm_add_stream(av_arm_t *arm, double itl_ms, double output_tokens)
{
    if (itl_ms > 0) {
        double l = log(itl_ms);
        arm->itl_n++;
        arm->itl_sum += l;
        arm->itl_sq += l * l;
    }
    if (output_tokens >= 0) {
        arm->tok_n++;
        arm->tok_sum += output_tokens;
        arm->tok_sq += output_tokens * output_tokens;
    }
}

int av_arm_behind(const av_arm_t *now, const av_arm_t *then)
{
    return now->n < then->n || now->errors < then->errors || now->r429 < then->r429 || now->blocks < then->blocks ||
           now->lat_n < then->lat_n || now->ttft_n < then->ttft_n || now->cost_n < then->cost_n ||
           now->fb_n < then->fb_n || now->itl_n < then->itl_n || now->tok_n < then->tok_n;
}

void av_arm_diff(const av_arm_t *now, const av_arm_t *then, av_arm_t *out)
{
    if (av_arm_behind(now, then)) { /* not the counters then was read from: nothing is known since;
                                    * past this every count of now is at least then's */
        *out = (av_arm_t){0};
        return;
    }
    out->n = now->n - then->n;
    out->errors = now->errors - then->errors;
    out->r429 = now->r429 - then->r429;
    out->blocks = now->blocks - then->blocks;
    out->lat_n = now->lat_n - then->lat_n;
    out->ttft_n = now->ttft_n - then->ttft_n;
    out->cost_n = now->cost_n - then->cost_n;
    out->lat_sum = now->lat_sum - then->lat_sum;
    out->lat_sq = now->lat_sq - then->lat_sq;
    out->ttft_sum = now->ttft_sum - then->ttft_sum;
    out->ttft_sq = now->ttft_sq - then->ttft_sq;
    out->cost_sum = now->cost_sum - then->cost_sum;
    out->cost_sq = now->cost_sq - then->cost_sq;
    out->fb_n = now->fb_n - then->fb_n;
    out->fb_sum = now->fb_sum - then->fb_sum;
    out->fb_sq = now->fb_sq - then->fb_sq;
    out->itl_n = now->itl_n - then->itl_n;
    out->itl_sum = now->itl_sum - then->itl_sum;
    out->itl_sq = now->itl_sq - then->itl_sq;
    out->tok_n = now->tok_n - then->tok_n;
    out->tok_sum = now->tok_sum - then->tok_sum;
    out->tok_sq = now->tok_sq - then->tok_sq;
}

/* The log e-value of xb candidate events out of x = xa + xb, against p0,
 * with a uniform mixture over p in (p0, 1): the mixture's likelihood over
 * the null's. The integral is taken by Simpson's rule over where the
 * integrand is not negligible (twelve standard errors around its peak). */
static double log_evalue(uint64_t xb, uint64_t xa, double p0)
{
    enum { STEPS = 400 }; /* even */
    double x = (double)(xa + xb), ph = (double)xb / x;
    double peak = ph > p0 ? ph : p0, sd = sqrt((peak * (1.0 - peak) + 1e-9) / x);
    double lo = peak - 12.0 * sd, hi = peak + 12.0 * sd;
    if (lo < p0)
        lo = p0;
    if (hi > 1.0 - 1e-12)
        hi = 1.0 - 1e-12;
    if (hi <= lo)
        return 0.0;
    double v[STEPS + 1], lmax = -INFINITY;
    for (int i = 0; i <= STEPS; i++) {
        double p = lo + (hi - lo) * i / STEPS;
        v[i] = (double)xb * log(p) + (double)xa * log1p(-p);
        if (v[i] > lmax)
            lmax = v[i];
    }
    double sum = 0.0;
    for (int i = 0; i <= STEPS; i++)
        sum += (i == 0 || i == STEPS ? 1.0 : (i % 2 ? 4.0 : 2.0)) * exp(v[i] - lmax);
    double integral = sum * (hi - lo) / (3.0 * STEPS);
    double log_mix = lmax + log(integral) - log(1.0 - p0);
    double log_null = (double)xb * log(p0) + (double)xa * log1p(-p0);
    return log_mix - log_null;
}

/* z such that P(Z > z) = p, by bisection (p in (0, 0.5]). */
static double z_of(double p)
{
    double lo = 0, hi = 40;
    for (int i = 0; i < 100; i++) {
        double mid = (lo + hi) / 2;
        if (av_norm_sf(mid) > p)
            lo = mid;
        else
            hi = mid;
    }
    return (lo + hi) / 2;
}

static void rate(const av_judge_cfg_t *cfg, const av_kpi_t *k, double alpha, uint64_t ea, uint64_t eb,
                 const av_arm_t *a, const av_arm_t *b, av_kpi_result_t *out)
{
    double ra = a->n ? (double)ea / (double)a->n : 0.0, rb = b->n ? (double)eb / (double)b->n : 0.0;
    out->baseline = a->n ? ra : NAN; /* no requests: no rate (null in the JSON views) */
    out->candidate = b->n ? rb : NAN;
    out->n_baseline = a->n;
    out->n_candidate = b->n;
    if (a->n > 0 && b->n > 0) { /* the difference, with a Bonferroni-style normal interval at this KPI's alpha */
        double se = sqrt(ra * (1 - ra) / (double)a->n + rb * (1 - rb) / (double)b->n), z = z_of(alpha / 2);
        out->lo = rb - ra - z * se;
        out->hi = rb - ra + z * se;
    }
    if (k->slo > 0 && b->n >= cfg->min_requests && rb > k->slo) {
        out->verdict = AV_VERDICT_SLO;
        out->why = "over its absolute limit";
        return;
    }
    /* events each arm is expected to see at the allowed rate */
    double allowed = ra + k->margin;
    if (a->n < cfg->min_requests || b->n < cfg->min_requests || (double)b->n * allowed < cfg->min_events) {
        out->verdict = AV_VERDICT_WAIT;
        out->why = "not enough data";
        return;
    }
    double le;
    if (ea == 0) {
        /* a baseline without events says nothing to condition on: the
         * candidate's events are tested against the allowed rate itself */
        le = log_evalue(eb, b->n - eb, allowed > 1e-6 ? allowed : 1e-6);
    } else {
        double p0 = (double)b->n * allowed / ((double)a->n * ra + (double)b->n * allowed);
        le = log_evalue(eb, ea, p0);
    }
    out->evidence = exp(le > 700 ? 700 : le);
    if (le >= log(1.0 / alpha)) {
        out->verdict = AV_VERDICT_FAIL;
        out->why = "regression: the candidate's rate is higher than allowed";
    } else {
        out->verdict = AV_VERDICT_OK;
        out->why = "no regression found";
    }
}

static void mean(const av_judge_cfg_t *cfg, const av_kpi_t *k, double alpha, int logged, double na, double sa,
                 double qa, double nb, double sb, double qb, av_kpi_result_t *out)
{
    double ma = na > 0 ? sa / na : 0, mb = nb > 0 ? sb / nb : 0;
    out->n_baseline = (uint64_t)na;
    out->n_candidate = (uint64_t)nb;
    out->baseline = na > 0 ? (logged ? exp(ma) : ma) : NAN;
    out->candidate = nb > 0 ? (logged ? exp(mb) : mb) : NAN;
    if (k->slo > 0 && nb >= (double)cfg->min_requests && out->candidate > k->slo) {
        out->verdict = AV_VERDICT_SLO;
        out->why = "over its absolute limit";
        return;
    }
    if (na < (double)cfg->min_requests || nb < (double)cfg->min_requests) {
        out->verdict = AV_VERDICT_WAIT;
        out->why = "not enough data";
        return;
    }
    double va = qa / na - ma * ma, vb = qb / nb - mb * mb;
    if (va < 1e-12)
        va = 1e-12;
    if (vb < 1e-12)
        vb = 1e-12;
    /* the allowed shift: a ratio in the log domain, or a ratio of the mean */
    double shift = logged ? log(k->margin > 0 ? k->margin : 1.0) : ma * ((k->margin > 0 ? k->margin : 1.0) - 1.0);
    /* tau2: tuned to effects of the size of the allowed shift, or of a tenth of a spread */
    double tau2 = shift > 0 ? shift * shift : 0.01 * (va + vb) / 2;
    /* one-sided: the evidence that the candidate is worse than allowed, and
     * only that (a candidate far better has evidence near 0, not a huge one) */
    double le = av_msprt_log_onesided(ma + shift, va, na, mb, vb, nb, tau2);
    out->evidence = exp(le > 700 ? 700 : le);
    /* the two-sided mixture's confidence sequence: the differences it would not reject */
    double v = va / na + vb / nb, half = sqrt(2.0 * v * (v + tau2) / tau2 * (log(1.0 / alpha) + 0.5 * log((v + tau2) / v)));
    if (logged) {
        out->lo = exp(mb - ma - half);
        out->hi = exp(mb - ma + half);
    } else if (ma != 0) {
        out->lo = (mb - half) / ma;
        out->hi = (mb + half) / ma;
    }
    if (mb > ma + shift && le >= log(1.0 / alpha)) {
        out->verdict = AV_VERDICT_FAIL;
        out->why = "regression: the candidate is slower or costlier than allowed";
    } else {
        out->verdict = AV_VERDICT_OK;
        out->why = "no regression found";
    }
}

/* A mean with an absolute allowed shift (feedback, negated so higher is worse). */
static void mean_abs(const av_judge_cfg_t *cfg, const av_kpi_t *k, double alpha, double shift, double na, double sa,
                     double qa, double nb, double sb, double qb, av_kpi_result_t *out)
{
    (void)k;
    double ma = na > 0 ? sa / na : 0, mb = nb > 0 ? sb / nb : 0;
    out->baseline = na > 0 ? ma : NAN;
    out->candidate = nb > 0 ? mb : NAN;
    out->n_baseline = (uint64_t)na;
    out->n_candidate = (uint64_t)nb;
    if (na < (double)cfg->min_requests || nb < (double)cfg->min_requests) {
        out->verdict = AV_VERDICT_WAIT;
        out->why = "not enough data";
        return;
    }
    double va = qa / na - ma * ma, vb = qb / nb - mb * mb;
    va = va < 1e-12 ? 1e-12 : va;
    vb = vb < 1e-12 ? 1e-12 : vb;
    double tau2 = shift > 0 ? shift * shift : 0.01 * (va + vb) / 2;
    double le = av_msprt_log_onesided(ma + shift, va, na, mb, vb, nb, tau2);
    out->evidence = exp(le > 700 ? 700 : le);
    double v = va / na + vb / nb, half = sqrt(2.0 * v * (v + tau2) / tau2 * (log(1.0 / alpha) + 0.5 * log((v + tau2) / v)));
    out->lo = mb - ma - half; /* of the negated score: the caller turns it round */
    out->hi = mb - ma + half;
    if (mb > ma + shift && le >= log(1.0 / alpha)) {
        out->verdict = AV_VERDICT_FAIL;
        out->why = "regression";
    } else {
        out->verdict = AV_VERDICT_OK;
        out->why = "no regression found";
    }
}

void av_judge_kpi(const av_judge_cfg_t *cfg, const av_kpi_t *k, size_t nkpis, const av_arm_t *a, const av_arm_t *b,
                  av_kpi_result_t *out)
{
    double alpha = cfg->alpha / (double)(nkpis ? nkpis : 1);
    /* nothing computed shows as null: no value, interval or evidence without data */
    *out = (av_kpi_result_t){.verdict = AV_VERDICT_WAIT, .why = "not enough data", .baseline = NAN,
                             .candidate = NAN, .lo = NAN, .hi = NAN, .evidence = NAN};
    switch (k->kind) {
    case AV_KPI_ERRORS: rate(cfg, k, alpha, a->errors, b->errors, a, b, out); break;
    case AV_KPI_429: rate(cfg, k, alpha, a->r429, b->r429, a, b, out); break;
    case AV_KPI_BLOCKS: {
        /* two-sided: more blocks is a worse model, far fewer can be a bypass */
        rate(cfg, k, alpha / 2, a->blocks, b->blocks, a, b, out);
        if (out->verdict == AV_VERDICT_OK) {
            av_kpi_result_t rev;
            av_kpi_t kr = {k->kind, k->margin, 0};
            rate(cfg, &kr, alpha / 2, b->blocks, a->blocks, b, a, &rev);
            if (rev.verdict == AV_VERDICT_FAIL) {
                out->verdict = AV_VERDICT_FAIL;
                out->evidence = rev.evidence;
                out->why = "the candidate's block rate fell far below the baseline's: a guardrail bypass?";
            }
        }
        break;
    }
    case AV_KPI_LATENCY:
        mean(cfg, k, alpha, 1, (double)a->lat_n, a->lat_sum, a->lat_sq, (double)b->lat_n, b->lat_sum, b->lat_sq, out);
        break;
    case AV_KPI_TTFT:
        mean(cfg, k, alpha, 1, (double)a->ttft_n, a->ttft_sum, a->ttft_sq, (double)b->ttft_n, b->ttft_sum,
             b->ttft_sq, out);
        break;
    case AV_KPI_COST:
        mean(cfg, k, alpha, 0, (double)a->cost_n, a->cost_sum, a->cost_sq, (double)b->cost_n, b->cost_sum,
             b->cost_sq, out);
        break;
    case AV_KPI_ITL:
        mean(cfg, k, alpha, 1, (double)a->itl_n, a->itl_sum, a->itl_sq, (double)b->itl_n, b->itl_sum, b->itl_sq, out);
        break;
    case AV_KPI_TOKENS:
        mean(cfg, k, alpha, 0, (double)a->tok_n, a->tok_sum, a->tok_sq, (double)b->tok_n, b->tok_sum, b->tok_sq, out);
        break;
    case AV_KPI_FEEDBACK: {
        /* lower is worse: judged as the negated score, with an absolute margin */
        av_kpi_t neg = {k->kind, 0, 0};
        av_judge_cfg_t c2 = *cfg;
        double na = (double)a->fb_n, nb = (double)b->fb_n;
        double mb = nb > 0 ? b->fb_sum / nb : 0;
        if (k->slo > 0 && nb >= (double)cfg->min_requests && mb < k->slo) {
            out->verdict = AV_VERDICT_SLO;
            out->baseline = na > 0 ? a->fb_sum / na : NAN;
            out->candidate = mb;
            out->why = "under its absolute floor";
            break;
        }
        mean_abs(&c2, &neg, alpha, k->margin, na, -a->fb_sum, a->fb_sq, nb, -b->fb_sum, b->fb_sq, out);
        out->baseline = -out->baseline;
        out->candidate = -out->candidate;
        double lo = out->lo;
        out->lo = -out->hi;
        out->hi = -lo;
        if (out->verdict == AV_VERDICT_FAIL)
            out->why = "regression: the candidate's feedback is lower than allowed";
        break;
    }
    default: out->why = "unknown KPI"; break;
    }
}

/* Bucket i's bounds in microseconds (the last one, open above, as a point). */
static void bucket_bounds(unsigned i, double *lo, double *hi)
{
    *lo = (double)av_hist_lo(i);
    *hi = i + 1 < AV_HIST_BUCKETS ? (double)av_hist_lo(i + 1) : *lo;
}

/* The q-quantile of a histogram of n values, inside its bucket in proportion. */
static double quantile_us(const uint64_t *h, uint64_t n, double q)
{
    double want = q * (double)n, seen = 0.0;
    for (unsigned i = 0; i < AV_HIST_BUCKETS; i++) {
        if (h[i] == 0)
            continue;
        if (seen + (double)h[i] >= want) {
            double lo, hi;
            bucket_bounds(i, &lo, &hi);
            return lo + (hi - lo) * (want - seen) / (double)h[i];
        }
        seen += (double)h[i];
    }
    return 0.0;
}

void av_shift_check(const uint64_t *ha, const uint64_t *hb, double margin, av_shift_t *out)
{
    *out = (av_shift_t){.p = 1.0};
    double sa[AV_HIST_BUCKETS] = {0}, fb[AV_HIST_BUCKETS];
    for (unsigned i = 0; i < AV_HIST_BUCKETS; i++) {
        out->na += ha[i];
        out->nb += hb[i];
        fb[i] = (double)hb[i];
    }
    if (out->na == 0 || out->nb == 0)
        return;
    out->med_a_ms = quantile_us(ha, out->na, 0.5) / 1000.0;
    out->med_b_ms = quantile_us(hb, out->nb, 0.5) / 1000.0;
    /* the baseline times the margin: bucket i's [lo, hi) becomes [lo m, hi m), its
     * count spread evenly over the buckets that range covers */
    for (unsigned i = 0; i < AV_HIST_BUCKETS; i++) {
        if (ha[i] == 0)
            continue;
        double lo, hi;
        bucket_bounds(i, &lo, &hi);
        lo *= margin;
        hi *= margin;
        if (hi <= lo) { /* a point (the last bucket, or the exact ones below 4 us at margin 1) */
            sa[av_hist_bucket((uint64_t)lo)] += (double)ha[i];
            continue;
        }
        for (unsigned j = av_hist_bucket((uint64_t)lo); j < AV_HIST_BUCKETS; j++) {
            double jl, jh;
            bucket_bounds(j, &jl, &jh);
            if (jh <= jl)
                jh = hi; /* the last bucket takes all the rest */
            double over = (hi < jh ? hi : jh) - (lo > jl ? lo : jl);
            if (over > 0)
                sa[j] += (double)ha[i] * over / (hi - lo);
            if (jh >= hi)
                break;
        }
    }
    double u, z;
    av_mwu_hist(sa, fb, AV_HIST_BUCKETS, &u, &z);
    out->z = z;
    out->p = av_norm_sf(z); /* one-sided: the candidate above the scaled baseline */
}

void av_tail_check(const uint64_t *ha, const uint64_t *hb, double margin, av_tail_t *out)
{
    *out = (av_tail_t){.p = 1.0};
    for (unsigned i = 0; i < AV_HIST_BUCKETS; i++) {
        out->na += ha[i];
        out->nb += hb[i];
    }
    if (out->na == 0)
        return;
    /* the baseline's p95, inside its bucket in proportion (the bucket's top
     * overstated it by up to a fifth, and the limit with it) */
    double p95 = quantile_us(ha, out->na, 0.95);
    double limit = p95 * margin, past = 0.0;
    /* the candidate's requests past the limit, the bucket it falls in counted in proportion */
    for (unsigned i = 0; i < AV_HIST_BUCKETS; i++) {
        if (hb[i] == 0)
            continue;
        double lo, hi;
        bucket_bounds(i, &lo, &hi);
        if (lo >= limit)
            past += (double)hb[i];
        else if (hi > limit)
            past += (double)hb[i] * (hi - limit) / (hi - lo);
    }
    out->base_p95_ms = p95 / 1000.0;
    out->limit_ms = limit / 1000.0;
    out->past = past;
    if (out->nb > 0)
        out->p = av_binom_sf((uint64_t)(past + 0.5), out->nb, 0.05);
}
