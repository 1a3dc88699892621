// anthropic.mjs: the official Anthropic SDK through aviary to aviary-sim:
// messages (whole, streamed raw, the messages.stream() helper and
// finalMessage), prompt-cache reads, tool use (whole and streamed with
// input_json_delta), count_tokens, every class of error as the SDK's typed
// error, a stream the backend cuts and one a policy stops; each KPI line.
import Anthropic from '@anthropic-ai/sdk';
import { env, rid, check, is, checkKpi, cost, step, thrown, finish } from './lib.mjs';

const client = new Anthropic({ apiKey: 'sk-ant-sdk-test', baseURL: env.url, maxRetries: 0, timeout: 20000 });
const MODEL = 'claude-sim';
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
const hdr = (id, extra = {}) => ({ headers: { 'x-request-id': id, ...extra } });
const tools = [
  {
    name: 'get_weather',
    description: 'The weather in a city',
    input_schema: {
      type: 'object',
      properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer' } },
      required: ['city', 'unit'],
    },
  },
  { name: 'get_time', input_schema: { type: 'object', properties: { zone: { type: 'string' } }, required: ['zone'] } },
];

// Anthropic's input_tokens leave the cache's out: the KPI counts every input token.
const allInput = (u) => u.input_tokens + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0);
function usageKpi(u, extra = {}) {
  return {
    status: 200,
    input_tokens: allInput(u),
    output_tokens: u.output_tokens,
    cached_input_tokens: u.cache_read_input_tokens ?? 0,
    usage_estimated: false,
    cost_usd: cost(MODEL, allInput(u), u.output_tokens, u.cache_read_input_tokens ?? 0),
    error: null,
    ...extra,
  };
}

let inputTokens = 0;

await step('messages.create', async () => {
  const id = rid('msg-create');
  const m = await client.messages.create({ model: MODEL, max_tokens: 100, messages }, hdr(id, { 'x-sim-tokens': '7' }));
  is('messages create: one text block, end_turn, 7 output tokens',
    [m.type, m.role, m.content.length, m.content[0]?.type, m.stop_reason, m.usage.output_tokens], ['message', 'assistant', 1, 'text', 'end_turn', 7]);
  check('messages create: text', (m.content[0]?.text ?? '').length > 0);
  inputTokens = allInput(m.usage);
  await checkKpi('messages create', id, usageKpi(m.usage, { stream: false, finish_reason: 'end_turn', model: MODEL }));
});

await step('messages.create stream: true', async () => {
  const id = rid('msg-raw-stream');
  const s = await client.messages.create({ model: MODEL, max_tokens: 100, messages, stream: true }, hdr(id, { 'x-sim-tokens': '5' }));
  const types = [];
  let text = '', start = null, delta = null;
  for await (const ev of s) {
    types.push(ev.type);
    if (ev.type === 'message_start') start = ev.message;
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
    if (ev.type === 'message_delta') delta = ev;
  }
  is('messages raw stream: the documented event sequence (pings are the SDK\'s to skip)', types,
    ['message_start', 'content_block_start', ...Array(5).fill('content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop']);
  is('messages raw stream: message_start has the input usage; message_delta the stop and output usage',
    [allInput(start?.usage ?? {}), delta?.delta?.stop_reason, delta?.usage?.output_tokens], [inputTokens, 'end_turn', 5]);
  check('messages raw stream: text', text.length > 0);
  await checkKpi('messages raw stream', id, {
    status: 200, stream: true, input_tokens: inputTokens, output_tokens: 5, usage_estimated: false,
    cost_usd: cost(MODEL, inputTokens, 5), finish_reason: 'end_turn', error: null,
  });
});

await step('messages.stream() and finalMessage()', async () => {
  const id = rid('msg-helper');
  const s = client.messages.stream({ model: MODEL, max_tokens: 100, messages }, hdr(id, { 'x-sim-tokens': '6', 'x-sim-cached-tokens': '5' }));
  let text = '';
  s.on('text', (t) => { text += t; });
  const m = await s.finalMessage();
  check('messages.stream(): finalMessage() has the text the text events brought', m.content[0]?.text === text && text.length > 0,
    `final ${JSON.stringify(m.content)} text ${JSON.stringify(text)}`);
  is('messages.stream(): usage with 5 cache reads, 6 output tokens', [m.usage.cache_read_input_tokens, m.usage.output_tokens, m.stop_reason],
    [5, 6, 'end_turn']);
  await checkKpi('messages.stream()', id, usageKpi(m.usage, { stream: true }));
});

await step('tool use, whole', async () => {
  const id = rid('msg-tool');
  const m = await client.messages.create({ model: MODEL, max_tokens: 200, messages, tools }, hdr(id, { 'x-sim-tool-call': 'get_weather' }));
  const t = m.content.find((b) => b.type === 'tool_use');
  is('tool use: a tool_use block with the input the schema requires, stop_reason tool_use',
    [m.content.length, t?.name, t?.input, m.stop_reason], [1, 'get_weather', { city: 'sim', unit: 'celsius' }, 'tool_use']);
  check('tool use: an id', /^toolu_/.test(t?.id ?? ''), t?.id);
  await checkKpi('tool use', id, usageKpi(m.usage, { tool_calls: 1, finish_reason: 'tool_use' }));
});

await step('tool use, streamed', async () => {
  const id = rid('msg-tool-stream');
  const s = client.messages.stream({ model: MODEL, max_tokens: 200, messages, tools },
    hdr(id, { 'x-sim-tool-call': 'get_weather,get_time', 'x-sim-tool-text': '1', 'x-sim-tokens': '3' }));
  let partial = 0;
  s.on('inputJson', () => { partial++; });
  const m = await s.finalMessage();
  is('tool use stream: a text block, then two tool_use blocks with their inputs parsed',
    m.content.map((b) => (b.type === 'tool_use' ? [b.name, b.input] : [b.type])),
    [['text'], ['get_weather', { city: 'sim', unit: 'celsius' }], ['get_time', { zone: 'sim' }]]);
  check('tool use stream: input_json_delta came in pieces', partial >= 4, `${partial} inputJson events`);
  is('tool use stream: stop_reason', m.stop_reason, 'tool_use');
  await checkKpi('tool use stream', id, usageKpi(m.usage, { stream: true, tool_calls: 2, finish_reason: 'tool_use' }));
});

await step('tool use, streamed over an h2c backend', async () => {
  const id = rid('msg-h2');
  const s = client.messages.stream({ model: MODEL, max_tokens: 200, messages, tools },
    hdr(id, { 'x-route': 'h2', 'x-sim-tool-call': 'get_weather', 'x-sim-tool-text': '1', 'x-sim-tokens': '4' }));
  const m = await s.finalMessage();
  is('tool use over h2c: text, then the tool_use block with its input', m.content.map((b) => b.input ?? b.type),
    ['text', { city: 'sim', unit: 'celsius' }]);
  await checkKpi('tool use over h2c', id, usageKpi(m.usage, { stream: true, tool_calls: 1, finish_reason: 'tool_use' }));
});

await step('tool_choice forces a tool', async () => {
  const id = rid('msg-tool-choice');
  const m = await client.messages.create({ model: MODEL, max_tokens: 200, messages, tools, tool_choice: { type: 'tool', name: 'get_time' } }, hdr(id));
  is('tool_choice {type: tool, name: get_time}: the sim calls it', m.content.map((b) => b.name), ['get_time']);
  const any = await client.messages.create({ model: MODEL, max_tokens: 200, messages, tools, tool_choice: { type: 'any' } }, hdr(rid('msg-tool-any')));
  is('tool_choice {type: any}: the first declared tool', any.content.map((b) => b.name), ['get_weather']);
  await checkKpi('tool_choice', id, { status: 200, tool_calls: 1, finish_reason: 'tool_use' });
});

await step('count_tokens', async () => {
  const id = rid('count-tokens');
  const whole = await client.messages.create({ model: MODEL, max_tokens: 50, messages, tools }, hdr(rid('count-ref')));
  const c = await client.messages.countTokens({ model: MODEL, messages, tools }, hdr(id));
  is('count_tokens: the input tokens messages.create bills for the same prompt', c.input_tokens, allInput(whole.usage));
  // Counting is free: the KPI line must not bill it as a completion
  await checkKpi('count_tokens', id, { status: 200, input_tokens: 'none', output_tokens: 'none', usage_estimated: false, error: null, cost_usd: 'none' });
});

// ---- errors ----

async function errorCase(name, { extra = {}, cls, status, type, kpiWant, more }) {
  await step(`error ${name}`, async () => {
    const id = rid(`aerr-${name.replace(/\W+/g, '-')}`);
    const e = await thrown(client.messages.create({ model: MODEL, max_tokens: 50, messages }, hdr(id, extra)));
    check(`anthropic error ${name}: the SDK raises ${cls.name}`, e instanceof cls, `got ${e?.constructor?.name}: ${e?.message}`);
    is(`anthropic error ${name}: status and Anthropic's error type`, [e?.status, e?.error?.type, e?.error?.error?.type], [status, 'error', type]);
    if (more) more(e);
    await checkKpi(`anthropic error ${name}`, id, kpiWant);
    return e;
  });
}

await errorCase('backend 400', {
  extra: { 'x-sim-status': '400' }, cls: Anthropic.BadRequestError, status: 400, type: 'invalid_request_error',
  kpiWant: { status: 400, input_tokens: 0, output_tokens: 0, usage_estimated: false, cost_usd: 0, error: null },
});
await errorCase('backend 429', {
  extra: { 'x-sim-429-rate': '1' }, cls: Anthropic.RateLimitError, status: 429, type: 'rate_limit_error',
  more: (e) => {
    is('anthropic error backend 429: Retry-After reaches the client', e?.headers?.get('retry-after'), '1');
    check('anthropic error backend 429: requestID is the backend\'s request-id', /^req_sim_/.test(e?.requestID ?? ''), e?.requestID);
  },
  kpiWant: { status: 429, input_tokens: 0, output_tokens: 0, usage_estimated: false, cost_usd: 0, error: null },
});
await errorCase('backend 500', {
  extra: { 'x-sim-error-rate': '1' }, cls: Anthropic.InternalServerError, status: 500, type: 'api_error',
  kpiWant: { status: 500, input_tokens: 0, output_tokens: 0, usage_estimated: false, cost_usd: 0, error: null },
});
await errorCase('backend 529 overloaded', {
  extra: { 'x-sim-status': '529' }, cls: Anthropic.InternalServerError, status: 529, type: 'overloaded_error',
  kpiWant: { status: 529, input_tokens: 0, output_tokens: 0, usage_estimated: false, cost_usd: 0, error: null },
});
await errorCase('gateway 502 (backend down)', {
  extra: { 'x-route': 'down' }, cls: Anthropic.InternalServerError, status: 502, type: 'api_error',
  kpiWant: { status: 502, error: 'connect_failed', input_tokens: null, output_tokens: null, cost_usd: null },
});
await errorCase('gateway 504 (backend slow)', {
  extra: { 'x-route': 'slow', 'x-sim-latency-ms': '3000' }, cls: Anthropic.InternalServerError, status: 504, type: 'api_error',
  kpiWant: { status: 504, error: 'first_byte_timeout', input_tokens: null, output_tokens: null, cost_usd: null },
});

await step('gateway errors name the request', async () => {
  const id = rid('aerr-id');
  const e = await thrown(client.messages.create({ model: MODEL, max_tokens: 50, messages }, hdr(id, { 'x-route': 'down' })));
  check('anthropic gateway error: its message names the request id', String(e?.message).includes(id), e?.message);
});

await step('gateway errors: the SDK\'s requestID', async () => {
  // Anthropic's API names every answer in a request-id header, which the SDK reads
  const id = rid('aerr-requestid');
  const e = await thrown(client.messages.create({ model: MODEL, max_tokens: 50, messages }, hdr(id, { 'x-route': 'down' })));
  is('anthropic gateway error: err.requestID is the request id (a request-id header)', e?.requestID, id);
});

await step('count_tokens on a route that goes by the path', async () => {
  const id = rid('count-auto');
  const e = await thrown(client.messages.countTokens({ model: MODEL, messages }, hdr(id, { 'x-route': 'down' })));
  is('count_tokens, auto dialect, backend down: 502 in Anthropic\'s shape', [e?.status, e?.error?.type, e?.error?.error?.type],
    [502, 'error', 'api_error']);
});

await step('tool use alone, streamed: its time to first token', async () => {
  const id = rid('msg-tool-only-stream');
  const s = client.messages.stream({ model: MODEL, max_tokens: 200, messages, tools }, hdr(id, { 'x-sim-tool-call': 'get_time', 'x-sim-ttft-ms': '50' }));
  const m = await s.finalMessage();
  is('tool use alone, streamed: one tool_use block', m.content.map((b) => b.type), ['tool_use']);
  const line = await checkKpi('tool use alone, streamed', id, { status: 200, tool_calls: 1, finish_reason: 'tool_use', usage_estimated: false });
  check('tool use alone, streamed: TTFT is the call\'s', typeof line?.ttft_ms === 'number' && line.ttft_ms >= 50, `ttft_ms ${line?.ttft_ms}`);
});

await step('messages stream cut by the backend', async () => {
  const id = rid('msg-cut');
  const s = client.messages.stream({ model: MODEL, max_tokens: 100, messages }, hdr(id, { 'x-sim-drop-after': '4', 'x-sim-tokens': '20' }));
  let text = '';
  s.on('text', (t) => { text += t; });
  const e = await thrown(s.finalMessage());
  check('messages stream cut: the SDK raises APIError from the error event', e instanceof Anthropic.APIError,
    `got ${e?.constructor?.name}: ${e?.message}`);
  is('messages stream cut: Anthropic\'s error type', e?.error?.error?.type, 'api_error');
  check('messages stream cut: the text before the cut arrived', text.length > 0);
  await checkKpi('messages stream cut', id, { status: 200, stream: true, error: 'backend_closed', usage_estimated: true, cost_usd: 'priced' });
});

await step('messages stream stopped by a policy', async () => {
  const id = rid('msg-policy-stop');
  const s = client.messages.stream({ model: MODEL, max_tokens: 100, messages }, hdr(id, { 'x-route': 'guarded', 'x-stop-at': '5', 'x-sim-tokens': '20' }));
  const e = await thrown(s.finalMessage());
  check('policy stop: the SDK raises APIError', e instanceof Anthropic.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
  check('policy stop: the policy\'s message reaches the client', String(e?.message).includes('the answer broke a rule'), e?.message);
  await checkKpi('policy stop', id, { status: 200, error: 'policy_stopped', policy: [{ policy: 'sdkstop', action: 'stop', rule: 'sdk_stop' }] });
});

finish();
