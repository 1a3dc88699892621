// openai.mjs: the official OpenAI SDK through aviary to aviary-sim: chat
// (whole, streamed with and without usage, the stream helper), tool calls,
// the Responses API (create and responses.stream()), embeddings (float and
// base64, array input), every class of error as the SDK's typed error, a
// stream the backend cuts and one a policy stops; each request's KPI line.
import OpenAI from 'openai';
import { env, rid, ok, notOk, check, is, checkKpi, cost, step, thrown, finish } from './lib.mjs';

const client = new OpenAI({ apiKey: 'sk-sdk-test', baseURL: `${env.url}/v1`, maxRetries: 0, timeout: 20000 });
const MODEL = 'gpt-sim';
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
const hdr = (id, extra = {}) => ({ headers: { 'x-request-id': id, ...extra } });

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
      required: ['city', 'unit'],
    },
  },
};
const clock = {
  type: 'function',
  function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string' } }, required: ['zone'] } },
};

// What a whole chat answer's usage says, for the KPI line of the same request.
function usageKpi(u, extra = {}) {
  return {
    status: 200,
    input_tokens: u.prompt_tokens,
    output_tokens: u.completion_tokens,
    usage_estimated: false,
    cost_usd: cost(MODEL, u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details?.cached_tokens ?? 0),
    error: null,
    ...extra,
  };
}

let promptTokens = 0; // of `messages`, as the sim counts them: the streamed cases expect the same

await step('chat.completions.create', async () => {
  const id = rid('chat-create');
  const r = await client.chat.completions.create({ model: 'client-model', messages }, hdr(id, { 'x-sim-tokens': '7' }));
  check('chat create: an answer with text', typeof r.choices[0].message.content === 'string' && r.choices[0].message.content.length > 0,
    JSON.stringify(r));
  is('chat create: the variant\'s model answered', r.model, MODEL);
  is('chat create: finish_reason stop, 7 completion tokens', [r.choices[0].finish_reason, r.usage.completion_tokens], ['stop', 7]);
  is('chat create: _request_id is the request\'s (the gateway\'s X-Request-Id, not the backend\'s own)', r._request_id, id);
  promptTokens = r.usage.prompt_tokens;
  await checkKpi('chat create', id, usageKpi(r.usage, { stream: false, finish_reason: 'stop', model: MODEL, client_model: 'client-model' }));
});

await step('chat stream without include_usage', async () => {
  const id = rid('chat-stream');
  const s = await client.chat.completions.create({ model: MODEL, messages, stream: true }, hdr(id, { 'x-sim-tokens': '9' }));
  let text = '', chunks = 0, usageSeen = false, finish = null;
  for await (const c of s) {
    chunks++;
    if (c.usage) usageSeen = true;
    text += c.choices[0]?.delta?.content ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  check('chat stream: text arrives in chunks', chunks >= 10 && text.length > 0, `chunks ${chunks}, text ${JSON.stringify(text)}`);
  check('chat stream: the usage chunk Aviary asked for is kept from a client that did not ask', !usageSeen);
  is('chat stream: finish_reason', finish, 'stop');
  await checkKpi('chat stream without include_usage', id, {
    status: 200, stream: true, input_tokens: promptTokens, output_tokens: 9, usage_estimated: false,
    cost_usd: cost(MODEL, promptTokens, 9), finish_reason: 'stop', error: null,
  });
});

await step('chat stream with include_usage', async () => {
  const id = rid('chat-stream-usage');
  const s = await client.chat.completions.create(
    { model: MODEL, messages, stream: true, stream_options: { include_usage: true } }, hdr(id, { 'x-sim-tokens': '5', 'x-sim-cached-tokens': '4' }));
  let usage = null, last = null;
  for await (const c of s) {
    last = c;
    if (c.usage) usage = c.usage;
  }
  check('chat stream with include_usage: the last chunk has the usage and no choices',
    usage != null && last.usage != null && last.choices.length === 0, JSON.stringify(last));
  is('chat stream with include_usage: 5 completion tokens, 4 of the prompt cached',
    [usage?.completion_tokens, usage?.prompt_tokens_details?.cached_tokens], [5, 4]);
  if (usage) await checkKpi('chat stream with include_usage', id, usageKpi(usage, { stream: true, cached_input_tokens: 4 }));
});

await step('chat stream from a backend that says "usage": null in every chunk', async () => {
  // OpenAI documents it: with include_usage every chunk but the last carries "usage": null.
  // Aviary asked for the usage on the client's behalf, so it must not show.
  const id = rid('chat-stream-null');
  const s = await client.chat.completions.create({ model: MODEL, messages, stream: true },
    hdr(id, { 'x-sim-tokens': '3', 'x-sim-usage-null': '1' }));
  const keys = [];
  for await (const c of s) if ('usage' in c) keys.push(JSON.stringify(c.usage));
  is('chat stream, usage asked by Aviary: no chunk has a "usage" member the client did not ask for', keys, []);
  await checkKpi('chat stream, usage null chunks', id, { status: 200, output_tokens: 3, usage_estimated: false });
});

await step('chat.completions.stream() helper', async () => {
  const id = rid('chat-helper');
  const s = client.chat.completions.stream({ model: MODEL, messages, stream_options: { include_usage: true } }, hdr(id, { 'x-sim-tokens': '4' }));
  let deltas = '';
  s.on('content.delta', (e) => { deltas += e.delta; });
  const fin = await s.finalChatCompletion();
  const msg = fin.choices[0].message;
  check('chat stream helper: finalChatCompletion has the text the deltas brought', msg.content === deltas && deltas.length > 0,
    `final ${JSON.stringify(msg.content)} deltas ${JSON.stringify(deltas)}`);
  is('chat stream helper: role and finish', [msg.role, fin.choices[0].finish_reason], ['assistant', 'stop']);
  await checkKpi('chat stream helper', id, usageKpi(fin.usage ?? { prompt_tokens: promptTokens, completion_tokens: 4 }, { stream: true }));
});

await step('chat tool call, whole', async () => {
  const id = rid('chat-tool');
  const r = await client.chat.completions.create({ model: MODEL, messages, tools: [weather, clock] },
    hdr(id, { 'x-sim-tool-call': 'get_weather' }));
  const m = r.choices[0].message;
  const call = m.tool_calls?.[0];
  is('chat tool call: one call to get_weather, finish_reason tool_calls, no text',
    [m.tool_calls?.length, call?.type, call?.function?.name, r.choices[0].finish_reason, m.content], [1, 'function', 'get_weather', 'tool_calls', null]);
  let args = null;
  try { args = JSON.parse(call.function.arguments); } catch { /* checked below */ }
  is('chat tool call: arguments are JSON with the schema\'s required properties', args, { city: 'sim', unit: 'celsius' });
  check('chat tool call: a call id', /^call_/.test(call?.id ?? ''), call?.id);
  await checkKpi('chat tool call', id, usageKpi(r.usage, { tool_calls: 1, finish_reason: 'tool_calls' }));
});

await step('chat tool calls, streamed, through the helper', async () => {
  const id = rid('chat-tool-stream');
  const s = client.chat.completions.stream({ model: MODEL, messages, tools: [weather, clock], stream_options: { include_usage: true } },
    hdr(id, { 'x-sim-tool-call': 'get_weather,get_time', 'x-sim-tool-text': '1', 'x-sim-tokens': '3' }));
  const done = [];
  s.on('tool_calls.function.arguments.done', (e) => done.push([e.name, e.parsed_arguments ?? JSON.parse(e.arguments)]));
  const fin = await s.finalChatCompletion();
  const calls = fin.choices[0].message.tool_calls ?? [];
  is('chat tool stream: two calls assembled from the deltas', calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]),
    [['get_weather', { city: 'sim', unit: 'celsius' }], ['get_time', { zone: 'sim' }]]);
  is('chat tool stream: the helper saw each call\'s arguments done', done.map((d) => d[0]), ['get_weather', 'get_time']);
  is('chat tool stream: distinct call ids', new Set(calls.map((c) => c.id)).size, 2);
  check('chat tool stream: the text before the calls', (fin.choices[0].message.content ?? '').length > 0);
  is('chat tool stream: finish_reason', fin.choices[0].finish_reason, 'tool_calls');
  await checkKpi('chat tool stream', id, usageKpi(fin.usage ?? {}, { stream: true, tool_calls: 2, finish_reason: 'tool_calls' }));
});

await step('chat tool calls alone, streamed: their time to first token', async () => {
  const id = rid('chat-tool-only-stream');
  const s = await client.chat.completions.create({ model: MODEL, messages, tools: [weather], stream: true },
    hdr(id, { 'x-sim-tool-call': 'get_weather', 'x-sim-ttft-ms': '50' }));
  let calls = 0;
  for await (const c of s) calls += (c.choices[0]?.delta?.tool_calls ?? []).filter((t) => t.id).length;
  is('chat tool calls alone, streamed: one call', calls, 1);
  const line = await checkKpi('chat tool calls alone, streamed', id, { status: 200, tool_calls: 1, finish_reason: 'tool_calls', usage_estimated: false });
  check('chat tool calls alone, streamed: TTFT is the first call\'s', typeof line?.ttft_ms === 'number' && line.ttft_ms >= 50, `ttft_ms ${line?.ttft_ms}`);
});

await step('chat tool_choice forces a call', async () => {
  const id = rid('chat-tool-choice');
  const r = await client.chat.completions.create(
    { model: MODEL, messages, tools: [weather, clock], tool_choice: { type: 'function', function: { name: 'get_time' } } }, hdr(id));
  is('chat tool_choice naming get_time: the sim calls it', r.choices[0].message.tool_calls?.map((c) => c.function.name), ['get_time']);
  await checkKpi('chat tool_choice', id, { tool_calls: 1, finish_reason: 'tool_calls', status: 200 });
});

// ---- Responses API ----

await step('responses.create', async () => {
  const id = rid('resp-create');
  const r = await client.responses.create({ model: MODEL, input: 'Say something.' }, hdr(id, { 'x-sim-tokens': '6' }));
  check('responses create: output_text', typeof r.output_text === 'string' && r.output_text.length > 0, JSON.stringify(r));
  is('responses create: completed, one message item', [r.status, r.output.length, r.output[0]?.type], ['completed', 1, 'message']);
  is('responses create: 6 output tokens', r.usage?.output_tokens, 6);
  await checkKpi('responses create', id, {
    status: 200, stream: false, input_tokens: r.usage.input_tokens, output_tokens: 6, usage_estimated: false,
    cost_usd: cost(MODEL, r.usage.input_tokens, 6), finish_reason: 'completed', error: null,
  });
});

await step('responses.stream()', async () => {
  const id = rid('resp-stream');
  const s = client.responses.stream({ model: MODEL, input: 'Say something.' }, hdr(id, { 'x-sim-tokens': '8' }));
  const types = [], seqs = [];
  let deltas = '';
  for await (const ev of s) {
    types.push(ev.type);
    seqs.push(ev.sequence_number);
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
  }
  const fin = await s.finalResponse();
  const want = ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
    ...Array(8).fill('response.output_text.delta'), 'response.output_text.done', 'response.content_part.done',
    'response.output_item.done', 'response.completed'];
  is('responses.stream(): the documented event sequence', types, want);
  is('responses.stream(): sequence_number counts from 0', seqs, seqs.map((_, i) => i));
  check('responses.stream(): finalResponse() has the streamed text', fin.output_text === deltas && deltas.length > 0,
    `final ${JSON.stringify(fin.output_text)} deltas ${JSON.stringify(deltas)}`);
  is('responses.stream(): completed with usage', [fin.status, fin.usage?.output_tokens], ['completed', 8]);
  await checkKpi('responses.stream()', id, {
    status: 200, stream: true, input_tokens: fin.usage?.input_tokens, output_tokens: 8, usage_estimated: false,
    cost_usd: cost(MODEL, fin.usage?.input_tokens ?? 0, 8), finish_reason: 'completed', error: null,
  });
});

await step('responses.stream() with a function call', async () => {
  const id = rid('resp-tool');
  const tool = { type: 'function', name: 'get_weather', parameters: weather.function.parameters, strict: false };
  const s = client.responses.stream({ model: MODEL, input: 'Weather in Paris?', tools: [tool], tool_choice: 'required' }, hdr(id));
  let argDeltas = '';
  s.on('response.function_call_arguments.delta', (e) => { argDeltas += e.delta; });
  const fin = await s.finalResponse();
  const call = fin.output.find((o) => o.type === 'function_call');
  is('responses function call: tool_choice "required" calls the declared tool, arguments whole',
    [call?.name, call?.status, JSON.parse(call?.arguments ?? 'null')], ['get_weather', 'completed', { city: 'sim', unit: 'celsius' }]);
  is('responses function call: the argument deltas add up to the arguments', argDeltas, call?.arguments);
  await checkKpi('responses function call', id, {
    status: 200, stream: true, tool_calls: 1, input_tokens: fin.usage?.input_tokens, output_tokens: fin.usage?.output_tokens,
    usage_estimated: false, finish_reason: 'completed',
  });
});

await step('a redacting policy on a Responses stream', async () => {
  // content_denylist masks a term in the deltas; the done events and response.completed
  // carry the whole text again, and finalResponse() is built from them
  const id = rid('resp-redact');
  const s = client.responses.stream({ model: MODEL, input: 'hi' }, hdr(id, { 'x-route': 'redacted', 'x-sim-tokens': '8' }));
  let deltas = '';
  const full = [];
  for await (const ev of s) {
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
    if (ev.type === 'response.output_text.done') full.push(ev.text);
  }
  const fin = await s.finalResponse();
  check('redacted Responses stream: the deltas are masked', deltas.length > 0 && !/gateway/i.test(deltas), deltas);
  check('redacted Responses stream: nor does output_text.done or finalResponse() show the term',
    !full.some((t) => /gateway/i.test(t)) && !/gateway/i.test(fin.output_text), `done ${JSON.stringify(full)}`, `final ${JSON.stringify(fin.output_text)}`);
  await checkKpi('redacted Responses stream', id, { status: 200, error: null, policy: [{ policy: 'content_denylist', action: 'rewrite', rule: 'masked' }] });
});

await step('responses.stream() with a function call, over an h2c backend', async () => {
  const id = rid('resp-h2');
  const tool = { type: 'function', name: 'get_weather', parameters: weather.function.parameters };
  const s = client.responses.stream({ model: MODEL, input: 'Weather?', tools: [tool] },
    hdr(id, { 'x-route': 'h2', 'x-sim-tool-call': 'get_weather', 'x-sim-tool-text': '1', 'x-sim-tokens': '4' }));
  const fin = await s.finalResponse();
  is('responses over h2c: a message, then the call', fin.output.map((o) => o.type), ['message', 'function_call']);
  await checkKpi('responses over h2c', id, {
    status: 200, stream: true, tool_calls: 1, input_tokens: fin.usage?.input_tokens, output_tokens: fin.usage?.output_tokens,
    usage_estimated: false, cost_usd: cost(MODEL, fin.usage?.input_tokens ?? 0, fin.usage?.output_tokens ?? 0),
  });
});

await step('responses incomplete', async () => {
  const id = rid('resp-incomplete');
  const r = await client.responses.create({ model: MODEL, input: 'Say a lot.', max_output_tokens: 3 }, hdr(id));
  is('responses max_output_tokens: incomplete, for that reason', [r.status, r.incomplete_details?.reason], ['incomplete', 'max_output_tokens']);
  await checkKpi('responses incomplete', id, { status: 200, output_tokens: 3, finish_reason: 'incomplete' });
});

// ---- embeddings ----

await step('embeddings', async () => {
  const inputs = ['first text', 'second text', 'third'];
  const id = rid('embed-b64');
  const b = await client.embeddings.create({ model: 'embed-sim', input: inputs }, hdr(id)); // the SDK asks for base64
  const idf = rid('embed-float');
  const f = await client.embeddings.create({ model: 'embed-sim', input: inputs, encoding_format: 'float' }, hdr(idf));
  is('embeddings: one vector per input, in order', b.data.map((d) => d.index), [0, 1, 2]);
  check('embeddings: the SDK decoded base64 (its default) into numbers',
    b.data.every((d) => d.embedding.length === 8 && Array.from(d.embedding).every((x) => typeof x === 'number' && x >= -1 && x <= 1)),
    JSON.stringify(b.data[0]));
  is('embeddings: base64 and float give the same vectors', b.data.map((d) => Array.from(d.embedding)), f.data.map((d) => d.embedding));
  const d = await client.embeddings.create({ model: 'embed-sim', input: [[1, 2, 3, 4]], dimensions: 3, encoding_format: 'float' }, hdr(rid('embed-tokens')));
  is('embeddings: token-id input and dimensions', [d.data.length, d.data[0].embedding.length, d.usage.prompt_tokens], [1, 3, 5]);
  for (const [name, eid, r] of [['base64', id, b], ['float', idf, f]])
    await checkKpi(`embeddings ${name}`, eid, {
      status: 200, input_tokens: r.usage.prompt_tokens, output_tokens: 0, usage_estimated: false,
      cost_usd: cost('embed-sim', r.usage.prompt_tokens, 0), model: 'embed-sim', error: null,
    });
});

// ---- errors: each the SDK's typed class, with the request's id ----

async function errorCase(name, { extra = {}, cls, status, kpiWant, more }) {
  await step(`error ${name}`, async () => {
    const id = rid(`err-${name.replace(/\W+/g, '-')}`);
    const e = await thrown(client.chat.completions.create({ model: MODEL, messages }, hdr(id, extra)));
    check(`error ${name}: the SDK raises ${cls.name}`, e instanceof cls, `got ${e?.constructor?.name}: ${e?.message}`);
    is(`error ${name}: status`, e?.status, status);
    is(`error ${name}: the error carries the request id`, e?.requestID, id);
    if (more) more(e);
    await checkKpi(`error ${name}`, id, kpiWant);
  });
}

await errorCase('backend 400', {
  extra: { 'x-sim-status': '400' }, cls: OpenAI.BadRequestError, status: 400,
  kpiWant: { status: 400, input_tokens: 0, output_tokens: 0, usage_estimated: false, cost_usd: 0, error: null },
});
await errorCase('backend 429', {
  extra: { 'x-sim-429-rate': '1' }, cls: OpenAI.RateLimitError, status: 429,
  more: (e) => is('error backend 429: Retry-After reaches the client', e?.headers?.get('retry-after'), '1'),
  kpiWant: { status: 429, input_tokens: 0, output_tokens: 0, usage_estimated: false, cost_usd: 0, error: null },
});
await errorCase('backend 500', {
  extra: { 'x-sim-error-rate': '1' }, cls: OpenAI.InternalServerError, status: 500,
  kpiWant: { status: 500, input_tokens: 0, output_tokens: 0, usage_estimated: false, cost_usd: 0, error: null },
});
await errorCase('gateway 502 (backend down)', {
  extra: { 'x-route': 'down' }, cls: OpenAI.InternalServerError, status: 502,
  more: (e) => is('error gateway 502: code connect_failed', e?.code, 'connect_failed'),
  kpiWant: { status: 502, error: 'connect_failed', input_tokens: null, output_tokens: null, cost_usd: null },
});
await errorCase('gateway 504 (backend slow)', {
  extra: { 'x-route': 'slow', 'x-sim-latency-ms': '3000' }, cls: OpenAI.InternalServerError, status: 504,
  more: (e) => is('error gateway 504: code first_byte_timeout', e?.code, 'first_byte_timeout'),
  kpiWant: { status: 504, error: 'first_byte_timeout', input_tokens: null, output_tokens: null, cost_usd: null },
});

await step('chat stream cut by the backend', async () => {
  const id = rid('chat-cut');
  const s = await client.chat.completions.create({ model: MODEL, messages, stream: true }, hdr(id, { 'x-sim-drop-after': '4', 'x-sim-tokens': '20' }));
  let text = '';
  const e = await thrown((async () => { for await (const c of s) text += c.choices[0]?.delta?.content ?? ''; })());
  check('chat stream cut: the SDK raises APIError from the error event', e instanceof OpenAI.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
  is('chat stream cut: its code', e?.code, 'backend_closed');
  check('chat stream cut: the text before the cut arrived', text.length > 0);
  await checkKpi('chat stream cut', id, { status: 200, stream: true, error: 'backend_closed', usage_estimated: true, cost_usd: 'priced' });
});

await step('responses stream cut by the backend', async () => {
  const id = rid('resp-cut');
  const s = client.responses.stream({ model: MODEL, input: 'hi' }, hdr(id, { 'x-sim-drop-after': '3', 'x-sim-tokens': '20' }));
  const events = [];
  const e = await thrown((async () => { for await (const ev of s) events.push(ev); })());
  const err = events.find((ev) => ev.type === 'error');
  check('responses stream cut: an error event (or a raised error) ends it, no response.completed',
    (err != null || e != null) && !events.some((ev) => ev.type === 'response.completed'), JSON.stringify(events.slice(-2)), String(e));
  if (err) is('responses stream cut: the error event\'s code', err.code, 'backend_closed');
  await checkKpi('responses stream cut', id, { status: 200, stream: true, error: 'backend_closed', usage_estimated: true });
});

await step('chat stream stopped by a policy', async () => {
  const id = rid('chat-policy-stop');
  const s = await client.chat.completions.create({ model: MODEL, messages, stream: true },
    hdr(id, { 'x-route': 'guarded', 'x-stop-at': '4', 'x-sim-tokens': '20' }));
  const e = await thrown((async () => { for await (const c of s) void c; })());
  check('policy stop: the SDK raises APIError', e instanceof OpenAI.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
  is('policy stop: the error\'s type and code', [e?.type, e?.code], ['policy_violation', 'sdk_stop']);
  await checkKpi('policy stop', id, { status: 200, error: 'policy_stopped', policy: [{ policy: 'sdkstop', action: 'stop', rule: 'sdk_stop' }] });
});

finish();
