// 2,000 concurrent SSE streams through the proxy: all complete with [DONE], and the proxy
// stays at a handful of threads (no thread per connection). Bounded in time; timing figures
// belong in bench/, not here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, request, chatBody, waitFor,
} from './lib/harness.mjs';

const STREAMS = Number(process.env.SY_LOAD_STREAMS || 2000);
const CHUNKS = 10;
const INTERVAL_MS = 20;
// Streams are held open long enough to overlap: the fake waits before the first byte, so
// connections opened early are still streaming when the last ones are opened.
const FIRST_BYTE_MS = 3000;
const MAX_THREADS = 8;

let fake;
let proxy;

before(async () => {
  fake = await startFake();
  proxy = await startProxy(makeConfig({
    server: { conn_limit: 16384 },
    deployments: [fakeDeployment(fake, 'fake-small')],
  }));
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

function oneStream(agent, body) {
  return new Promise((resolve) => {
    const req = http.request({
      host: '127.0.0.1', port: proxy.port, path: '/v1/chat/completions', method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
      res.on('error', (e) => resolve({ status: res.statusCode, text, error: e.message }));
    });
    req.setTimeout(60000, () => req.destroy(new Error('idle 60 s')));
    req.on('error', (e) => resolve({ status: 0, text: '', error: e.code || e.message }));
    req.end(body);
  });
}

test(`${STREAMS} concurrent SSE streams complete, proxy threads <= ${MAX_THREADS}`, { timeout: 240000 }, async () => {
  await fake.reset();
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const body = JSON.stringify(chatBody('fake-small',
    `load [[fake chunks=${CHUNKS} interval_ms=${INTERVAL_MS} first_byte_ms=${FIRST_BYTE_MS}]]`, { stream: true }));

  let maxThreads = proxy.threads();
  let peakActive = 0;
  let sampling = true;
  const threadSampler = (async () => {
    while (sampling) {
      try { maxThreads = Math.max(maxThreads, proxy.threads()); } catch { /* exited: caught below */ }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const activeSampler = (async () => {
    while (sampling) {
      try { peakActive = Math.max(peakActive, (await fake.stats()).active_streams); } catch { /* busy */ }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();

  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: STREAMS }, () => oneStream(agent, body)));
  const took = Date.now() - t0;
  sampling = false;
  await Promise.all([threadSampler, activeSampler]);
  agent.destroy();

  const bad = [];
  for (const [i, r] of results.entries()) {
    const datas = r.text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
    const content = datas.filter((d) => d !== '[DONE]' && JSON.parse(d).choices?.[0]?.delta?.content).length;
    if (r.status !== 200 || datas[datas.length - 1] !== '[DONE]' || content !== CHUNKS || r.error) {
      bad.push(`#${i}: status ${r.status} ${r.error || ''} content ${content} last ${JSON.stringify(datas[datas.length - 1])?.slice(0, 120)}`);
    }
  }
  console.log(`# ${STREAMS} streams in ${took} ms, peak concurrent upstream streams ${peakActive}, max proxy threads ${maxThreads}`);
  assert.equal(bad.length, 0, `${bad.length} of ${STREAMS} streams failed, e.g.\n${bad.slice(0, 10).join('\n')}`);
  assert.ok(maxThreads <= MAX_THREADS, `proxy used ${maxThreads} threads (max ${MAX_THREADS})`);
  assert.ok(peakActive >= STREAMS / 2, `only ${peakActive} streams were ever concurrent`);

  const st = await fake.stats();
  assert.equal(st.streams_completed, STREAMS);
  assert.equal(st.streams_cancelled, 0);
  const h = await request(proxy.url, 'GET', '/healthz');
  assert.equal(h.status, 200);
  await waitFor(() => proxy.threads() <= MAX_THREADS, { what: 'threads to settle' });
});
