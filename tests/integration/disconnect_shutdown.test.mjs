// Client disconnects cancel the upstream transfer; SIGTERM drains in-flight streams within the
// grace period and exits 0 (a leak under ASan would make it non-zero).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, request, streamRaw, chatBody,
  waitFor, parseSSE,
} from './lib/harness.mjs';
import { validateChatChunk } from './lib/schema.mjs';

let fake;

before(async () => {
  fake = await startFake();
});

after(async () => {
  await fake?.stop();
});

function config(server = {}) {
  return makeConfig({
    server: { shutdown_grace_ms: 10000, ...server },
    deployments: [fakeDeployment(fake, 'fake-small')],
  });
}

/** Opens a stream and resolves once <n> data events arrived: {req, res, events, closed}. */
function openStream(proxy, body, n) {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = http.request({
      host: '127.0.0.1', port: proxy.port, path: '/v1/chat/completions', method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`status ${res.statusCode}`));
        return;
      }
      let text = '';
      const st = { req, res, events: [], text: '', ended: false };
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
        st.text = text;
        st.events = parseSSE(text).events;
        if (st.events.length >= n && !st.resolved) {
          st.resolved = true;
          resolve(st);
        }
      });
      res.on('end', () => { st.ended = true; });
      res.on('error', () => {});
    });
    req.on('error', (e) => { if (!req.destroyed) reject(e); });
    req.end(payload);
  });
}

// The fake saw the one stream cancelled (none completed, none open), and the proxy still serves.
async function expectCancelledStillServing(proxy) {
  const s = await waitFor(async () => {
    const x = await fake.stats();
    return x.streams_cancelled >= 1 && x.active_streams === 0 && x;
  }, { timeout: 5000, what: 'fake streams_cancelled to increment' });
  assert.equal(s.streams_completed, 0);
  const h = await request(proxy.url, 'GET', '/healthz');
  assert.equal(h.status, 200);
}

test('client disconnect mid-stream cancels the upstream transfer', async () => {
  const proxy = await startProxy(config());
  try {
    await fake.reset();
    const st = await openStream(proxy, chatBody('fake-small', '[[fake chunks=1000 interval_ms=20]]', { stream: true }), 3);
    for (const e of st.events) validateChatChunk(JSON.parse(e.data));
    assert.equal((await fake.stats()).active_streams, 1);
    st.req.destroy();
    await expectCancelledStillServing(proxy);
  } finally {
    await assertCleanExit(proxy);
  }
});

test('client disconnect while the role chunk is held back: the upstream transfer is cancelled', async () => {
  const proxy = await startProxy(config());
  try {
    await fake.reset();
    // The fake sends its role chunk, then waits 1.5 s before the first content chunk: the proxy
    // holds the role chunk back, so the client has not even had its response headers. The
    // connection is suspended meanwhile, and libmicrohttpd sees a suspended connection's close
    // only once it is resumed: the upstream thread's liveness probe (once a second) notices it.
    let answered = false;
    const req = await sendAndWait(proxy,
      chatBody('fake-small', '[[fake chunks=1000 interval_ms=20 pause_after=0 pause_ms=1500]]', { stream: true }),
      () => { answered = true; });
    await waitFor(async () => (await fake.stats()).active_streams === 1, { timeout: 5000, what: 'the upstream stream' });
    await new Promise((r) => setTimeout(r, 200)); // the role chunk reached the proxy
    assert.equal(answered, false, 'the held role chunk reached the client');
    req.destroy();
    await expectCancelledStillServing(proxy);
  } finally {
    await assertCleanExit(proxy);
  }
});

/** Sends <body> raw and resolves with the request once it is written (no answer is awaited;
 * <onResponse>, if given, is called when the response headers arrive). */
async function sendAndWait(proxy, body, onResponse = () => {}) {
  const payload = JSON.stringify(body);
  const req = http.request({
    host: '127.0.0.1', port: proxy.port, path: '/v1/chat/completions', method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
  }, onResponse);
  req.on('error', () => {});
  req.end(payload);
  return req;
}

test('client gone while a non-stream answer is pending: the upstream request is cancelled long before it answers', async () => {
  // The fake answers after 30 s. The connection is suspended meanwhile, and libmicrohttpd
  // cannot see a suspended connection's close: the upstream thread's probe must notice it, or
  // the upstream generates (and bills) the whole answer for nobody.
  const proxy = await startProxy(config());
  try {
    await fake.reset();
    const req = await sendAndWait(proxy, chatBody('fake-small', '[[fake first_byte_ms=30000]]'));
    await waitFor(async () => (await fake.stats()).chat === 1, { timeout: 5000, what: 'the upstream request' });
    req.destroy();
    const s = await waitFor(async () => {
      const x = await fake.stats();
      return x.requests_cancelled >= 1 && x;
    }, { timeout: 8000, what: 'fake requests_cancelled to increment' });
    assert.equal(s.requests_cancelled, 1);
    const h = await request(proxy.url, 'GET', '/healthz');
    assert.equal(h.status, 200);
  } finally {
    await assertCleanExit(proxy);
  }
});

test('client gone during a long pause mid-stream: the upstream stream is cancelled during the pause', async () => {
  const proxy = await startProxy(config());
  try {
    await fake.reset();
    const st = await openStream(proxy, chatBody('fake-small', '[[fake chunks=5 pause_after=1 pause_ms=30000]]', { stream: true }), 2);
    assert.ok(st.events.some((e) => JSON.parse(e.data).choices?.[0]?.delta?.content), 'no content before the pause');
    st.req.destroy();
    const s = await waitFor(async () => {
      const x = await fake.stats();
      return x.streams_cancelled >= 1 && x.active_streams === 0 && x;
    }, { timeout: 8000, what: 'fake streams_cancelled to increment' });
    assert.equal(s.streams_completed, 0);
  } finally {
    await assertCleanExit(proxy);
  }
});

test('SDK abort (AbortController) mid-stream cancels the upstream transfer', async () => {
  const proxy = await startProxy(config());
  try {
    await fake.reset();
    const ac = new AbortController();
    const stream = await proxy.client().chat.completions.create(
      chatBody('fake-small', '[[fake chunks=1000 interval_ms=20]]', { stream: true }), { signal: ac.signal });
    // The SDK ends the iteration quietly on abort (or throws an abort error): either is fine.
    let n = 0;
    try {
      for await (const c of stream) {
        validateChatChunk(c);
        if (++n === 3) ac.abort();
        assert.ok(n < 100, 'stream kept going after abort');
      }
    } catch (e) {
      assert.ok(e.name === 'AbortError' || e instanceof OpenAI.APIUserAbortError, `unexpected error: ${e}`);
    }
    assert.equal(n, 3, `chunks after abort: ${n}`);
    await waitFor(async () => (await fake.stats()).streams_cancelled >= 1, { timeout: 5000, what: 'streams_cancelled' });
  } finally {
    await assertCleanExit(proxy);
  }
});

test('50 concurrent disconnects: every upstream transfer cancelled', async () => {
  const proxy = await startProxy(config());
  try {
    await fake.reset();
    const N = 50;
    const streams = await Promise.all(Array.from({ length: N }, () =>
      openStream(proxy, chatBody('fake-small', '[[fake chunks=1000 interval_ms=20]]', { stream: true }), 2)));
    assert.equal((await fake.stats()).active_streams, N);
    for (const st of streams) st.req.destroy();
    await waitFor(async () => {
      const x = await fake.stats();
      return x.streams_cancelled === N && x.active_streams === 0;
    }, { timeout: 10000, what: `${N} cancelled upstream streams` });
  } finally {
    await assertCleanExit(proxy);
  }
});

test('SIGTERM with a stream in flight: the stream completes, then exit 0', async () => {
  const proxy = await startProxy(config({ shutdown_grace_ms: 10000 }));
  await fake.reset();
  const CHUNKS = 20;
  const done = streamRaw(proxy.url, '/v1/chat/completions',
    chatBody('fake-small', `[[fake chunks=${CHUNKS} interval_ms=100]]`, { stream: true }));
  // Wait until the upstream stream is running, then ask the proxy to stop.
  await waitFor(async () => (await fake.stats()).active_streams === 1, { what: 'stream to start' });
  const t0 = Date.now();
  proxy.proc.kill('SIGTERM');
  const r = await done;
  assert.equal(r.status, 200);
  assert.equal(r.events[r.events.length - 1].data, '[DONE]', 'stream cut short by shutdown');
  const content = r.events.slice(0, -1).map((e) => JSON.parse(e.data)).filter((c) => c.choices?.[0]?.delta?.content);
  assert.equal(content.length, CHUNKS);
  const code = await proxy.stop(15000);
  assert.equal(code, 0, `exit code ${code}\n${proxy.stderr().slice(-8000)}`);
  assert.ok(Date.now() - t0 < 12000, `drain took ${Date.now() - t0} ms`);
});

test('SIGTERM: new connections are not served while draining', async () => {
  const proxy = await startProxy(config({ shutdown_grace_ms: 10000 }));
  await fake.reset();
  const done = streamRaw(proxy.url, '/v1/chat/completions',
    chatBody('fake-small', '[[fake chunks=20 interval_ms=100]]', { stream: true }));
  await waitFor(async () => (await fake.stats()).active_streams === 1, { what: 'stream to start' });
  proxy.proc.kill('SIGTERM');
  // Give the signal a moment to be handled: poll until a new request is refused or rejected.
  const outcome = await waitFor(async () => {
    try {
      const x = await request(proxy.url, 'GET', '/healthz', { timeout: 2000 });
      return x.status >= 500 ? `status ${x.status}` : false;
    } catch (e) {
      return `error ${e.code || e.message}`;
    }
  }, { timeout: 3000, what: 'new requests to be refused during drain' });
  assert.ok(outcome);
  const r = await done;
  assert.equal(r.events[r.events.length - 1].data, '[DONE]');
  const code = await proxy.stop(15000);
  assert.equal(code, 0, proxy.stderr().slice(-8000));
});

test('SIGTERM: a stream longer than the grace period is cut at the deadline, exit 0', async () => {
  const GRACE = 1500;
  const proxy = await startProxy(config({ shutdown_grace_ms: GRACE }));
  await fake.reset();
  const done = streamRaw(proxy.url, '/v1/chat/completions',
    chatBody('fake-small', '[[fake chunks=1000 interval_ms=50]]', { stream: true })).catch((e) => e);
  await waitFor(async () => (await fake.stats()).active_streams === 1, { what: 'stream to start' });
  const t0 = Date.now();
  proxy.proc.kill('SIGTERM');
  const code = await proxy.stop(GRACE + 10000);
  const took = Date.now() - t0;
  assert.equal(code, 0, proxy.stderr().slice(-8000));
  assert.ok(took >= GRACE - 200, `exited after ${took} ms, before the grace period`);
  assert.ok(took < GRACE + 5000, `exited after ${took} ms (grace ${GRACE})`);
  const r = await done; // the client is not left hanging
  assert.ok(r instanceof Error || r.endAt, 'client stream did not end');
  await waitFor(async () => (await fake.stats()).active_streams === 0, { what: 'upstream stream closed' });
});

test('SIGTERM when idle: exit 0 promptly', async () => {
  const proxy = await startProxy(config());
  const t0 = Date.now();
  await assertCleanExit(proxy);
  assert.ok(Date.now() - t0 < 5000, `idle shutdown took ${Date.now() - t0} ms`);
});

test('SIGINT when idle: exit 0', async () => {
  const proxy = await startProxy(config());
  proxy.proc.kill('SIGINT');
  const code = await proxy.stop(10000);
  assert.equal(code, 0, proxy.stderr().slice(-8000));
});
