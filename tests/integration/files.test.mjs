// The Files API (DESIGN §9, issue 7): the official openai SDK against the proxy (create from a
// stream and from toFile, list with pagination, retrieve, content byte-exact, delete), objects
// validated against the spec, bad inputs sent raw (not multipart, missing/bad fields, over the
// size cap, a truncated body, unknown ids, wrong methods), a 50 MB upload whose proxy RSS growth
// stays small (streamed to disk, not buffered), and two instances on one real Redis sharing
// file metadata.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { toFile } from 'openai';
import {
  startProxy, makeConfig, assertCleanExit, request, errorOf, tmpDir, haveRedis, startRedis,
} from './lib/harness.mjs';
import { assertSchema, validateError } from './lib/schema.mjs';

// No request here reaches an upstream: the deployment only satisfies the config.
const DEPLOYMENTS = [{ name: 'unused', provider: 'openai', base_url: 'http://127.0.0.1:9/v1', model: 'm', price: { input: 0, output: 0 } }];
const MAX_LINES = 100;
const BIG_CAP = 64 * 1024 * 1024;

function filesConfig(batch, extra = {}) {
  return makeConfig({ deployments: DEPLOYMENTS, batch: { workers: 0, ...batch }, ...extra });
}

const validateFile = (v, w) => assertSchema('OpenAIFile', v, w);

/** A multipart/form-data body from [{name, value, filename?, type?}] (values: string | Buffer). */
function multipart(parts, { boundary = `----sy${crypto.randomBytes(8).toString('hex')}`, close = true } = {}) {
  const chunks = [];
  for (const p of parts) {
    let h = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) h += `; filename="${p.filename}"`;
    h += '\r\n';
    if (p.type) h += `Content-Type: ${p.type}\r\n`;
    chunks.push(Buffer.from(`${h}\r\n`), Buffer.isBuffer(p.value) ? p.value : Buffer.from(p.value), Buffer.from('\r\n'));
  }
  if (close) chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

// Files belong to the tenant of the key that uploaded them: raw requests carry the same key as
// the SDK client (harness default) so both see the same files.
const AUTH = { authorization: 'Bearer sk-client-key-must-not-leak' };
const req = (base, method, p, o = {}) => request(base, method, p, { ...o, headers: { ...AUTH, ...(o.headers || {}) } });

function upload(base, parts, opts = {}) {
  const m = multipart(parts, opts);
  return req(base, 'POST', '/v1/files', { body: m.body, headers: { 'content-type': m.contentType } });
}

/** Asserts an OpenAI-shaped error with <status> (and <param> when given); returns it. */
function expectError(res, status, { param, code, match } = {}) {
  assert.equal(res.status, status, res.text);
  validateError(JSON.parse(res.text), `${status} body`);
  const e = errorOf(res);
  if (param !== undefined) assert.equal(e.param, param, res.text);
  if (code !== undefined) assert.equal(e.code, code, res.text);
  if (match) assert.match(e.message, match);
  return e;
}

function vmRssKiB(pid) {
  return Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m)[1]);
}

describe('Files API', () => {
  let proxy;
  let client;
  before(async () => {
    proxy = await startProxy(filesConfig({ file_max_bytes: BIG_CAP, max_lines: MAX_LINES }));
    client = proxy.client();
  });
  after(async () => { await assertCleanExit(proxy); });

  test('create from a stream, retrieve, content, delete (SDK)', async () => {
    const lines = [];
    for (let i = 0; i < 20; i++) lines.push(JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/chat/completions', body: { model: 'm', messages: [{ role: 'user', content: `héllo ${i}` }] } }));
    const text = `${lines.join('\n')}\n`;
    const p = path.join(tmpDir(), 'input.jsonl');
    fs.writeFileSync(p, text);

    const f = await client.files.create({ file: fs.createReadStream(p), purpose: 'batch' });
    validateFile(f, 'create');
    assert.match(f.id, /^file-[A-Za-z0-9]{24,}$/);
    assert.equal(f.object, 'file');
    assert.equal(f.bytes, Buffer.byteLength(text));
    assert.equal(f.filename, 'input.jsonl');
    assert.equal(f.purpose, 'batch');
    assert.equal(f.status, 'processed');
    const now = Math.floor(Date.now() / 1000);
    assert.ok(Math.abs(f.created_at - now) < 600, `created_at ${f.created_at} vs now ${now}`);
    assert.equal(f.expires_at, f.created_at + 30 * 86400, 'batch files expire after 30 days by default');

    const got = await client.files.retrieve(f.id);
    validateFile(got, 'retrieve');
    assert.deepEqual(got, f);

    const content = await client.files.content(f.id);
    assert.equal(content.headers.get('content-type'), 'application/octet-stream');
    assert.equal(await content.text(), text);

    const del = await client.files.delete(f.id);
    assertSchema('DeleteFileResponse', del, 'delete');
    assert.deepEqual(del, { id: f.id, object: 'file', deleted: true });
    await assert.rejects(client.files.retrieve(f.id), (e) => e.status === 404);
    await assert.rejects(client.files.content(f.id), (e) => e.status === 404);
    await assert.rejects(client.files.delete(f.id), (e) => e.status === 404);
    const raw = await req(proxy.url, 'GET', `/v1/files/${f.id}`);
    expectError(raw, 404, { param: 'id', match: new RegExp(f.id) });
  });

  test('binary content comes back byte for byte, with an explicit expiry (toFile)', async () => {
    const bytes = crypto.randomBytes(300 * 1024 + 7);
    // make sure the multipart boundary scanner sees CR LF and dashes inside the data
    bytes.write('\r\n--\r\n------', 1000, 'latin1');
    const f = await client.files.create({
      file: await toFile(bytes, 'blob.bin'),
      purpose: 'user_data',
      expires_after: { anchor: 'created_at', seconds: 3600 },
    });
    validateFile(f, 'create binary');
    assert.equal(f.bytes, bytes.length);
    assert.equal(f.filename, 'blob.bin');
    assert.equal(f.expires_at, f.created_at + 3600);
    const res = await client.files.content(f.id);
    const back = Buffer.from(await res.arrayBuffer());
    assert.equal(back.length, bytes.length);
    assert.ok(back.equals(bytes), 'content differs');
    // raw, with the Accept header the SDK sends
    const r = await req(proxy.url, 'GET', `/v1/files/${f.id}/content`, { headers: { accept: 'application/binary' } });
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(bytes));
    await client.files.delete(f.id);
  });

  test('list: order, purpose filter, pagination with has_more and after', async () => {
    const made = [];
    for (let i = 0; i < 5; i++) {
      const f = await client.files.create({ file: await toFile(Buffer.from(`{"n":${i}}\n`), `p${i}.jsonl`), purpose: 'fine-tune' });
      made.push(f.id);
    }
    const other = await client.files.create({ file: await toFile(Buffer.from('x'), 'v.txt'), purpose: 'vision' });

    // raw: the exact list shape
    const r = await req(proxy.url, 'GET', '/v1/files?purpose=fine-tune&limit=2');
    assert.equal(r.status, 200, r.text);
    const page = r.json();
    assertSchema('ListFilesResponse', page, 'list');
    assert.equal(page.object, 'list');
    assert.deepEqual(page.data.map((f) => f.id), [made[4], made[3]]);
    assert.equal(page.first_id, made[4]);
    assert.equal(page.last_id, made[3]);
    assert.equal(page.has_more, true);
    for (const f of page.data) validateFile(f, 'list item');

    // the SDK walks the pages through has_more / after
    const first = await client.files.list({ purpose: 'fine-tune', limit: 2 });
    assert.equal(first.data.length, 2);
    assert.equal(first.has_more, true);
    assert.ok(first.hasNextPage());
    const seen = [];
    for await (const f of client.files.list({ purpose: 'fine-tune', limit: 2 })) seen.push(f.id);
    assert.deepEqual(seen, [...made].reverse());

    const asc = await req(proxy.url, 'GET', `/v1/files?purpose=fine-tune&order=asc&after=${made[1]}`);
    assert.deepEqual(asc.json().data.map((f) => f.id), made.slice(2));
    assert.equal(asc.json().has_more, false);

    const all = await req(proxy.url, 'GET', '/v1/files');
    const ids = all.json().data.map((f) => f.id);
    assert.ok(ids.includes(other.id) && made.every((id) => ids.includes(id)));
    assert.ok(ids.indexOf(other.id) < ids.indexOf(made[4]), 'newest first by default');

    expectError(await req(proxy.url, 'GET', '/v1/files?limit=0'), 400, { param: 'limit' });
    expectError(await req(proxy.url, 'GET', '/v1/files?limit=10001'), 400, { param: 'limit' });
    expectError(await req(proxy.url, 'GET', '/v1/files?order=sideways'), 400, { param: 'order' });
    expectError(await req(proxy.url, 'GET', '/v1/files?after=file-doesnotexist'), 400, { param: 'after' });

    for (const id of [...made, other.id]) await client.files.delete(id);
    const empty = await req(proxy.url, 'GET', '/v1/files?purpose=fine-tune');
    assert.deepEqual(empty.json().data, []);
    assert.equal(empty.json().has_more, false);
  });

  test('bad uploads are OpenAI-shaped 400s naming the problem', async () => {
    const json = await req(proxy.url, 'POST', '/v1/files', { body: { purpose: 'batch' } });
    expectError(json, 400, { match: /Content-Type.*application\/json.*multipart\/form-data/ });

    const file = { name: 'file', filename: 'a.jsonl', value: '{}\n' };
    expectError(await upload(proxy.url, [file]), 400, { param: 'purpose', match: /purpose/ });
    expectError(await upload(proxy.url, [{ name: 'purpose', value: 'batch' }]), 400, { param: 'file', match: /file/ });
    expectError(await upload(proxy.url, [file, { name: 'purpose', value: 'homework' }]), 400, { param: 'purpose', match: /homework/ });
    expectError(await upload(proxy.url, [file, { name: 'purpose', value: 'batch' }, { name: 'expires_after[anchor]', value: 'created_at' }, { name: 'expires_after[seconds]', value: '60' }]), 400, { param: 'expires_after[seconds]' });
    expectError(await upload(proxy.url, [file, { name: 'purpose', value: 'batch' }, { name: 'expires_after[anchor]', value: 'last_used' }, { name: 'expires_after[seconds]', value: '3600' }]), 400, { param: 'expires_after[anchor]' });
    expectError(await upload(proxy.url, [file, file, { name: 'purpose', value: 'batch' }]), 400, { param: 'file' });
    // a second 'file' part after an empty one is not merged into one file
    const empty = { name: 'file', filename: 'empty.jsonl', value: '' };
    expectError(await upload(proxy.url, [empty, file, { name: 'purpose', value: 'batch' }]), 400, { param: 'file', match: /only one 'file'/ });
    expectError(await upload(proxy.url, [empty, { name: 'purpose', value: 'batch' }, { ...file, name: 'File' }, empty]), 400, { param: 'file', match: /only one 'file'/ });
    // a part merely called like the file ('filename="file"', another name) is no second file part
    const named = await upload(proxy.url, [{ name: 'notes', filename: 'file', value: 'x' }, file, { name: 'purpose', value: 'batch' }]);
    assert.equal(named.status, 200, named.text);
    await req(proxy.url, 'DELETE', `/v1/files/${named.json().id}`);
    // a batch input file over batch.max_lines
    const many = Array.from({ length: MAX_LINES + 1 }, (_, i) => `{"i":${i}}`).join('\n');
    expectError(await upload(proxy.url, [{ name: 'file', filename: 'big.jsonl', value: many }, { name: 'purpose', value: 'batch' }]), 400, { param: 'file', match: new RegExp(`${MAX_LINES + 1}`) });
    // exactly max_lines (no final newline) is fine
    const ok = await upload(proxy.url, [{ name: 'file', filename: 'ok.jsonl', value: many.slice(0, many.lastIndexOf('\n')) }, { name: 'purpose', value: 'batch' }]);
    assert.equal(ok.status, 200, ok.text);
    // the multipart body ends without its closing boundary
    const trunc = await upload(proxy.url, [{ name: 'purpose', value: 'batch' }, file], { close: false });
    expectError(trunc, 400, { match: /truncated|malformed/ });
    const cut = multipart([{ name: 'purpose', value: 'batch' }, { name: 'file', filename: 'a.jsonl', value: 'x'.repeat(5000) }]);
    const half = cut.body.subarray(0, cut.body.length - 2000);
    expectError(await req(proxy.url, 'POST', '/v1/files', { body: half, headers: { 'content-type': cut.contentType } }), 400, { match: /truncated|malformed/ });
    // multipart without a boundary
    expectError(await req(proxy.url, 'POST', '/v1/files', { body: 'x', headers: { 'content-type': 'multipart/form-data' } }), 400);
    // no temporary file left behind by any of these
    const dir = path.join(JSON.parse(fs.readFileSync(proxy.configPath, 'utf8')).data_dir, 'files');
    const left = fs.readdirSync(dir).filter((n) => n.startsWith('tmp-'));
    assert.deepEqual(left, []);
    await req(proxy.url, 'DELETE', `/v1/files/${ok.json().id}`);
  });

  test('unknown ids are 404, wrong methods 405 with Allow', async () => {
    expectError(await req(proxy.url, 'GET', '/v1/files/file-AAAAAAAAAAAAAAAAAAAAAAAA'), 404, { param: 'id' });
    expectError(await req(proxy.url, 'GET', '/v1/files/file-AAAAAAAAAAAAAAAAAAAAAAAA/content'), 404, { param: 'id' });
    expectError(await req(proxy.url, 'DELETE', '/v1/files/not-a-file-id'), 404);
    expectError(await req(proxy.url, 'GET', '/v1/files/..%2F..%2Fetc%2Fpasswd/content'), 404);
    expectError(await req(proxy.url, 'GET', '/v1/files/file-abc/other'), 404);
    let r = await req(proxy.url, 'PUT', '/v1/files', { body: 'x' });
    expectError(r, 405);
    assert.equal(r.headers.allow, 'GET, POST');
    r = await req(proxy.url, 'POST', '/v1/files/file-abc', { body: '{}' });
    expectError(r, 405);
    assert.equal(r.headers.allow, 'GET, DELETE');
    r = await req(proxy.url, 'DELETE', '/v1/files/file-abc/content');
    expectError(r, 405);
    assert.equal(r.headers.allow, 'GET');
  });

  test('a 50 MB upload streams to disk: proxy RSS grows less than 16 MB', async () => {
    // warm up (connection buffers, the post processor, the worker pool)
    const w = await client.files.create({ file: await toFile(crypto.randomBytes(1 << 20), 'warm.bin'), purpose: 'user_data' });
    await client.files.delete(w.id);
    const before = vmRssKiB(proxy.pid);

    const SIZE = 50 * 1024 * 1024;
    const block = crypto.randomBytes(1 << 20);
    const boundary = `----sy${crypto.randomBytes(8).toString('hex')}`;
    const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const hash = crypto.createHash('sha256');
    const res = await new Promise((resolve, reject) => {
      const req = http.request(`${proxy.url}/v1/files`, {
        method: 'POST',
        headers: { ...AUTH, 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': head.length + SIZE + tail.length },
      }, (r) => {
        const parts = [];
        r.on('data', (d) => parts.push(d));
        r.on('end', () => resolve({ status: r.statusCode, text: Buffer.concat(parts).toString() }));
      });
      req.on('error', reject);
      (async () => {
        req.write(head);
        for (let sent = 0; sent < SIZE; sent += block.length) {
          hash.update(block);
          if (!req.write(block)) await new Promise((r) => req.once('drain', r));
        }
        req.end(tail);
      })().catch(reject);
    });
    assert.equal(res.status, 200, res.text);
    const f = JSON.parse(res.text);
    validateFile(f, '50 MB');
    assert.equal(f.bytes, SIZE);
    const afterUpload = vmRssKiB(proxy.pid);

    // download it back and compare digests (served from the file descriptor, not memory)
    const down = crypto.createHash('sha256');
    let got = 0;
    await new Promise((resolve, reject) => {
      http.get(`${proxy.url}/v1/files/${f.id}/content`, { headers: AUTH }, (r) => {
        assert.equal(r.statusCode, 200);
        r.on('data', (d) => { down.update(d); got += d.length; });
        r.on('end', resolve);
        r.on('error', reject);
      }).on('error', reject);
    });
    const afterDownload = vmRssKiB(proxy.pid);
    assert.equal(got, SIZE);
    assert.equal(down.digest('hex'), hash.digest('hex'));
    const growUp = (afterUpload - before) / 1024;
    const growDown = (afterDownload - before) / 1024;
    console.log(`# RSS before ${before} KiB, after 50 MB upload ${afterUpload} KiB (+${growUp.toFixed(1)} MiB), after download ${afterDownload} KiB (+${growDown.toFixed(1)} MiB)`);
    assert.ok(growUp < 16, `RSS grew ${growUp.toFixed(1)} MiB during a 50 MB upload`);
    assert.ok(growDown < 16, `RSS grew ${growDown.toFixed(1)} MiB after the download`);
    await client.files.delete(f.id);
  });
});

describe('Files API size cap', () => {
  let proxy;
  const CAP = 4096;
  before(async () => { proxy = await startProxy(filesConfig({ file_max_bytes: CAP })); });
  after(async () => { await assertCleanExit(proxy); });

  test('a file over batch.file_max_bytes is 413 and the proxy stays healthy', async () => {
    const client = proxy.client();
    // a body within Content-Length's allowance (cap + 64 KiB framing) but a file part over the cap
    await assert.rejects(client.files.create({ file: await toFile(Buffer.alloc(CAP + 1, 0x61), 'a.txt'), purpose: 'user_data' }), (e) => e.status === 413);
    const r = await upload(proxy.url, [{ name: 'purpose', value: 'user_data' }, { name: 'file', filename: 'a.txt', value: Buffer.alloc(CAP + 1, 0x61) }]);
    expectError(r, 413, { code: 'request_too_large', param: 'file', match: new RegExp(`${CAP}`) });
    // over the Content-Length allowance: refused before reading
    const huge = await upload(proxy.url, [{ name: 'purpose', value: 'user_data' }, { name: 'file', filename: 'a.txt', value: Buffer.alloc(CAP + 70000, 0x61) }]);
    expectError(huge, 413, { code: 'request_too_large' });
    // chunked (no Content-Length): caught while streaming
    const m = multipart([{ name: 'purpose', value: 'user_data' }, { name: 'file', filename: 'a.txt', value: Buffer.alloc(CAP * 4, 0x62) }]);
    const chunked = await new Promise((resolve, reject) => {
      const req = http.request(`${proxy.url}/v1/files`, { method: 'POST', headers: { 'content-type': m.contentType, 'transfer-encoding': 'chunked' } }, (res) => {
        const parts = [];
        res.on('data', (d) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(parts).toString() }));
      });
      req.on('error', reject);
      for (let i = 0; i < m.body.length; i += 1000) req.write(m.body.subarray(i, i + 1000));
      req.end();
    });
    expectError(chunked, 413, { code: 'request_too_large' });
    // exactly at the cap is accepted, and the server still answers
    const ok = await client.files.create({ file: await toFile(Buffer.alloc(CAP, 0x63), 'ok.txt'), purpose: 'user_data' });
    assert.equal(ok.bytes, CAP);
    const h = await request(proxy.url, 'GET', '/healthz');
    assert.equal(h.status, 200);
    const dir = path.join(JSON.parse(fs.readFileSync(proxy.configPath, 'utf8')).data_dir, 'files');
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('tmp-')), [], 'rejected uploads leave no temporary file');
  });
});

describe('Files API tenancy', () => {
  const MASTER_ENV = 'SY_FILES_TEST_MASTER';
  const MASTER = 'sk-files-test-master';
  let proxy;
  before(async () => {
    proxy = await startProxy(filesConfig({}, { auth: { master_key_env: MASTER_ENV } }),
      { env: { [MASTER_ENV]: MASTER } });
  });
  after(async () => { await assertCleanExit(proxy); });

  test("a tenant sees only its own files (another's id is 404); the master key sees all", async () => {
    const a = proxy.client({ apiKey: 'sk-tenant-a' });
    const b = proxy.client({ apiKey: 'sk-tenant-b' });
    const master = proxy.client({ apiKey: MASTER });
    const fa = await a.files.create({ file: await toFile(Buffer.from('{"a":1}\n'), 'a.jsonl'), purpose: 'batch' });
    const fb = await b.files.create({ file: await toFile(Buffer.from('{"b":2}\n'), 'b.jsonl'), purpose: 'user_data' });
    validateFile(fa, 'create a');
    assert.deepEqual(Object.keys(fa).sort(), ['bytes', 'created_at', 'expires_at', 'filename', 'id', 'object', 'purpose', 'status']);

    // retrieve / content / delete of another tenant's file: 404 as if it did not exist
    for (const [client, other] of [[a, fb.id], [b, fa.id]]) {
      await assert.rejects(client.files.retrieve(other), (e) => e.status === 404);
      await assert.rejects(client.files.content(other), (e) => e.status === 404);
      await assert.rejects(client.files.delete(other), (e) => e.status === 404);
    }
    const raw = await request(proxy.url, 'GET', `/v1/files/${fa.id}`, { headers: { authorization: 'Bearer sk-tenant-b' } });
    expectError(raw, 404, { param: 'id' });
    const anon = await request(proxy.url, 'GET', `/v1/files/${fa.id}`);
    expectError(anon, 404, { param: 'id' });

    // lists are per tenant; another tenant's id is no cursor
    const la = await a.files.list();
    assert.deepEqual(la.data.map((f) => f.id), [fa.id]);
    assert.equal(la.data[0].sy_tenant, undefined);
    assert.deepEqual((await b.files.list()).data.map((f) => f.id), [fb.id]);
    const cur = await request(proxy.url, 'GET', `/v1/files?after=${fb.id}`, { headers: { authorization: 'Bearer sk-tenant-a' } });
    expectError(cur, 400, { param: 'after' });
    const lanon = await request(proxy.url, 'GET', '/v1/files');
    assert.equal(lanon.status, 200);
    assert.deepEqual(lanon.json().data, []);

    // the owner still has everything (the failed deletes removed nothing)
    assert.equal((await (await a.files.content(fa.id)).text()), '{"a":1}\n');
    assert.equal((await b.files.retrieve(fb.id)).id, fb.id);

    // the master key sees and manages every tenant's files
    const all = (await master.files.list()).data.map((f) => f.id).sort();
    assert.deepEqual(all, [fa.id, fb.id].sort());
    assert.equal((await (await master.files.content(fb.id)).text()), '{"b":2}\n');
    assert.equal((await master.files.delete(fb.id)).deleted, true);
    await assert.rejects(b.files.retrieve(fb.id), (e) => e.status === 404);
    assert.equal((await a.files.delete(fa.id)).deleted, true);
  });
});

describe('Files API on Redis: two instances', { skip: haveRedis ? false : 'redis-server not installed' }, () => {
  let redis;
  let port;
  let a;
  let b;
  before(async () => {
    redis = await startRedis({ dirPrefix: 'redis-files-' });
    port = redis.port;
    // each instance has its own data_dir (the spend journal is per instance) and both share
    // batch.files_dir, where file contents live
    const shared = path.join(tmpDir(), 'shared-files');
    const redisCfg = { redis: { url: `redis://127.0.0.1:${port}` } };
    a = await startProxy(filesConfig({ files_dir: shared }, redisCfg));
    b = await startProxy(filesConfig({ files_dir: shared }, redisCfg));
  });
  after(async () => {
    await assertCleanExit(a);
    await assertCleanExit(b);
    await redis?.stop();
  });

  test('a file uploaded to one instance is listed, read and deleted through the other', async () => {
    const ca = a.client();
    const cb = b.client();
    const bytes = crypto.randomBytes(10000);
    const f = await ca.files.create({ file: await toFile(bytes, 'shared.bin'), purpose: 'assistants' });
    const seen = await cb.files.retrieve(f.id);
    assert.deepEqual(seen, f);
    const list = await cb.files.list({ purpose: 'assistants' });
    assert.ok(list.data.some((x) => x.id === f.id));
    const back = Buffer.from(await (await cb.files.content(f.id)).arrayBuffer());
    assert.ok(back.equals(bytes));
    // the metadata really lives in Redis, under the key prefix
    const keys = redisCmd(port, ['KEYS', 'sy:{file:*']);
    assert.ok(keys.includes(`sy:{file:${f.id}}`), keys);
    await cb.files.delete(f.id);
    await assert.rejects(ca.files.retrieve(f.id), (e) => e.status === 404);
    assert.ok(!(await ca.files.list()).data.some((x) => x.id === f.id));
  });
});

/** One Redis command through redis-cli; resolves with its raw output. */
function redisCmd(port, args) {
  const r = spawnSync('redis-cli', ['-p', String(port), '--raw', ...args], { encoding: 'utf8', timeout: 10000 });
  if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
