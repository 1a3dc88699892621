// lib.mjs: what the SDK scripts share: TAP lines (t_sdk.sh numbers them), the
// KPI log read by request id, prices, and bounded waits. Set by t_sdk.sh:
// AV_URL (the gateway), AV_ADMIN (its admin port), AV_KPI (the KPI log file).
import fs from 'node:fs';

export const env = {
  url: need('AV_URL'),
  admin: need('AV_ADMIN'),
  kpiLog: need('AV_KPI'),
};

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.log(`not ok - ${name} is not set (run through tests/integration/t_sdk.sh)`);
    process.exit(1);
  }
  return v;
}

// USD per million tokens, as t_sdk.sh writes them in the config's pricing.
export const PRICES = {
  'gpt-sim': { input: 2, output: 8, cached_input: 0.5 },
  'claude-sim': { input: 3, output: 15, cached_input: 0.3 },
  'embed-sim': { input: 0.1, output: 0 },
};

let failed = 0;
let runId = `${process.pid}-${Date.now().toString(36)}`;

// A request id of this run: every test sets its own, to find its KPI line.
export function rid(name) {
  return `${name}-${runId}`;
}

function detail(lines) {
  for (const l of lines) for (const s of String(l).split('\n')) console.log(`# ${s}`);
}

export function ok(desc) {
  console.log(`ok - ${desc}`);
}

export function notOk(desc, ...lines) {
  failed++;
  console.log(`not ok - ${desc}`);
  detail(lines);
}

export function check(desc, cond, ...lines) {
  if (cond) ok(desc);
  else notOk(desc, ...lines);
  return !!cond;
}

export function is(desc, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  return check(desc, g === w, `got:  ${g}`, `want: ${w}`);
}

export function failures() {
  return failed;
}

export const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// The KPI line of a request: polls the log (its writer is a thread of its
// own) for up to 5 s; only whole lines count.
export async function kpi(id) {
  const needle = `"request_id":${JSON.stringify(id)}`;
  for (let i = 0; i < 100; i++) {
    let text = '';
    try {
      text = fs.readFileSync(env.kpiLog, 'utf8');
    } catch {
      /* not written yet */
    }
    for (const line of text.split('\n')) {
      if (!line.includes(needle) || !line.endsWith('}')) continue;
      try {
        const j = JSON.parse(line);
        if (j.request_id === id) return j;
      } catch {
        /* a line being written */
      }
    }
    await sleep(50);
  }
  return null;
}

export function kpiLines() {
  const out = [];
  for (const line of fs.readFileSync(env.kpiLog, 'utf8').split('\n')) {
    if (!line.endsWith('}')) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      /* a line being written */
    }
  }
  return out;
}

// Cost in USD as the gateway computes it: integer picodollars per token, 9 decimals.
export function cost(model, input, output, cached = 0) {
  const p = PRICES[model];
  const pico = (usd) => Math.round(usd * 1e6); // USD per million tokens = picodollars per token
  const total =
    (input - cached) * pico(p.input) + cached * pico(p.cached_input ?? p.input) + output * pico(p.output);
  return Number((total / 1e12).toFixed(9));
}

// Checks a request's KPI line field by field against want (one TAP line);
// `cost_usd: 'priced'` only asks for a number, 'none' for 0 or null.
export async function checkKpi(desc, id, want) {
  const line = await kpi(id);
  if (line == null) return notOk(`KPI ${desc}: a line for ${id}`, `no KPI line with request_id ${id}`);
  const bad = [];
  for (const [k, w] of Object.entries(want)) {
    const g = line[k];
    if (w === 'none') {
      if (g !== 0 && g !== null) bad.push(`${k}: got ${JSON.stringify(g)}, want 0 or null`);
    } else if (k === 'cost_usd' && w === 'priced') {
      if (typeof g !== 'number') bad.push(`cost_usd: got ${JSON.stringify(g)}, want a number`);
    } else if (k === 'cost_usd' && typeof w === 'number') {
      if (typeof g !== 'number' || Math.abs(g - w) > 5e-10) bad.push(`cost_usd: got ${JSON.stringify(g)}, want ${w}`);
    } else if (JSON.stringify(g) !== JSON.stringify(w)) {
      bad.push(`${k}: got ${JSON.stringify(g)}, want ${JSON.stringify(w)}`);
    }
  }
  const shown = Object.keys(want)
    .map((k) => `${k}=${JSON.stringify(want[k])}`)
    .join(' ');
  check(`KPI ${desc}: ${shown}`, bad.length === 0, ...bad, `line: ${JSON.stringify(line)}`);
  return line;
}

// Runs one case; an exception is a failure of its own, named.
export async function step(name, fn) {
  try {
    await fn();
  } catch (e) {
    notOk(`${name}: threw`, `${e?.constructor?.name}: ${e?.message}`, ...(e?.stack ? [e.stack.split('\n').slice(1, 6).join('\n')] : []));
  }
}

// Awaits p; returns what it threw (null when it did not throw).
export async function thrown(p) {
  try {
    await p;
    return null;
  } catch (e) {
    return e;
  }
}

export function finish() {
  process.exitCode = failed > 0 ? 1 : 0;
}
