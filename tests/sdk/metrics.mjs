// metrics.mjs: after the SDK traffic, the three books agree per route and
// variant: the KPI log's lines (summed), /metrics (aviary_requests_total,
// aviary_tokens_total, aviary_cost_usd_total) and /kpi's window.
import { env, kpiLines, check, is, step, finish, sleep } from './lib.mjs';

const key = (route, variant) => `${route}/${variant}`;

function parseMetrics(text) {
  const out = new Map(); // "name{labels}" -> value
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{(.*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of m[2].matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    out.set(`${m[1]}|${key(labels.route, labels.variant)}|${labels.kind ?? labels.outcome ?? ''}`, Number(m[3]));
  }
  return out;
}

await step('the books agree', async () => {
  // every request of the run has its line: wait until the count stops moving
  let lines = kpiLines(), before = -1;
  for (let i = 0; i < 20 && lines.length !== before; i++) {
    before = lines.length;
    await sleep(100);
    lines = kpiLines();
  }
  const sums = new Map();
  for (const l of lines) {
    if (l.type != null || l.shadow || l.route == null) continue; // shadow comparisons, copies, unrouted
    const k = key(l.route, l.variant);
    const s = sums.get(k) ?? { requests: 0, input: 0, output: 0, cached: 0, cost: 0 };
    s.requests++;
    s.input += l.input_tokens ?? 0;
    s.output += l.output_tokens ?? 0;
    s.cached += l.cached_input_tokens ?? 0;
    s.cost += Math.round((l.cost_usd ?? 0) * 1e9);
    sums.set(k, s);
  }
  check('KPI log: lines of several routes to compare', sums.size >= 4, [...sums.keys()].join(' '));

  const metrics = parseMetrics(await (await fetch(`http://${env.admin}/metrics`)).text());
  const win = await (await fetch(`http://${env.admin}/kpi?window=600`)).json();
  const kpiWin = new Map();
  for (const r of win.routes) for (const v of r.variants) kpiWin.set(key(r.route, v.variant), v);

  for (const [k, s] of sums) {
    const m = (name, sub) => metrics.get(`${name}|${k}|${sub}`) ?? 0;
    const requests = ['ok', 'client_error', 'rate_limited', 'server_error', 'timeout', 'client_abort', 'blocked']
      .reduce((a, o) => a + m('aviary_requests_total', o), 0);
    is(`${k}: /metrics requests = KPI lines`, requests, s.requests);
    is(`${k}: /metrics input, output and cached tokens = the KPI log's sums`,
      [m('aviary_tokens_total', 'input'), m('aviary_tokens_total', 'output'), m('aviary_tokens_total', 'cached_input')],
      [s.input, s.output, s.cached]);
    is(`${k}: /metrics cost = the KPI log's sum (in nanodollars)`, Math.round(m('aviary_cost_usd_total', '') * 1e9), s.cost);
    const w = kpiWin.get(k);
    is(`${k}: /kpi requests, tokens and cost = the KPI log's`,
      [w?.requests, w?.tokens?.input, w?.tokens?.output, Math.round((w?.cost_usd ?? NaN) * 1e9)],
      [s.requests, s.input, s.output, s.cost]);
  }
});

finish();
