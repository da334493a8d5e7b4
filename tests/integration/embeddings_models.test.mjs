// Embeddings (the SDK's default base64 and explicit float), the models list and retrieve
// (including a slash-containing id that arrives percent-encoded), and /healthz.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, request, post, errorOf,
} from './lib/harness.mjs';
import { validateEmbeddings, validateModelList, validateModel, validateError } from './lib/schema.mjs';

let fake;
let proxy;
let client;

const DEPLOYMENTS = ['embed-small', 'embed-wide', 'meta-llama/Llama-3.1-8B', 'chat-a'];
const ALIASES = { 'smart': ['chat-a', 'embed-small'] };

before(async () => {
  fake = await startFake();
  proxy = await startProxy(makeConfig({
    deployments: [
      fakeDeployment(fake, 'embed-small', { model: 'fake-embed' }),
      fakeDeployment(fake, 'embed-wide', { model: 'fake-embed-wide', directives: { dim: 32 } }),
      fakeDeployment(fake, 'meta-llama/Llama-3.1-8B'),
      fakeDeployment(fake, 'chat-a', { model: 'fake-small' }),
    ],
    aliases: ALIASES,
  }));
  client = proxy.client();
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

/** What the fake itself answers (floats), asked directly. */
async function fakeFloats(model, input, base = fake.base()) {
  const r = await post(base, `${new URL(base).pathname}/embeddings`, { model, input, encoding_format: 'float' });
  assert.equal(r.status, 200, r.text);
  return r.json().data.map((d) => d.embedding);
}

function decodeBase64Floats(s) {
  const b = Buffer.from(s, 'base64');
  assert.equal(b.length % 4, 0, 'base64 embedding is not a whole number of float32');
  const out = [];
  for (let i = 0; i < b.length; i += 4) out.push(b.readFloatLE(i));
  return out;
}

test('embeddings with the SDK default (base64): values equal the fake\'s floats', async () => {
  const input = ['first text', 'second text', 'third'];
  const expected = await fakeFloats('fake-embed', input);
  const { data, response } = await client.embeddings.create({ model: 'embed-small', input }).withResponse();
  assert.equal(response.headers.get('x-switchyard-deployment'), 'embed-small');
  assert.ok(response.headers.get('x-request-id'));
  assert.equal(data.object, 'list');
  assert.equal(data.data.length, 3);
  data.data.forEach((d, i) => {
    assert.equal(d.index, i);
    assert.equal(d.object, 'embedding');
    assert.equal(d.embedding.length, expected[i].length);
    assert.deepEqual(Array.from(d.embedding), expected[i].map(Math.fround), `embedding ${i}`);
  });
  validateEmbeddings({ ...data, data: data.data.map((d) => ({ ...d, embedding: Array.from(d.embedding) })) });
});

test('raw base64 request: float32 little-endian base64 strings', async () => {
  const input = 'hello base64';
  const [expected] = await fakeFloats('fake-embed', input);
  const r = await post(proxy.url, '/v1/embeddings', { model: 'embed-small', input, encoding_format: 'base64' });
  assert.equal(r.status, 200, r.text);
  const j = r.json();
  assert.equal(typeof j.data[0].embedding, 'string', 'base64 was asked');
  const got = decodeBase64Floats(j.data[0].embedding);
  assert.deepEqual(got, expected.map(Math.fround));
  validateEmbeddings({ ...j, data: j.data.map((d) => ({ ...d, embedding: decodeBase64Floats(d.embedding) })) });
});

test('embeddings with encoding_format float: the fake\'s floats exactly, schema-valid', async () => {
  const input = ['float one', 'float two'];
  const expected = await fakeFloats('fake-embed', input);
  const r = await client.embeddings.create({ model: 'embed-small', input, encoding_format: 'float' });
  validateEmbeddings(r);
  assert.deepEqual(r.data.map((d) => d.embedding), expected);
  assert.ok(r.usage && typeof r.usage.prompt_tokens === 'number');
});

test('embeddings dimension from a deployment directive (dim=32), both encodings', async () => {
  const expected = await fakeFloats('fake-embed-wide', 'wide', fake.base({ dim: 32 }));
  const b = await client.embeddings.create({ model: 'embed-wide', input: 'wide' });
  assert.equal(b.data[0].embedding.length, 32);
  assert.deepEqual(Array.from(b.data[0].embedding), expected[0].map(Math.fround));
  const f = await client.embeddings.create({ model: 'embed-wide', input: 'wide', encoding_format: 'float' });
  validateEmbeddings(f);
  assert.deepEqual(f.data[0].embedding, expected[0]);
});

test('GET /v1/models: one entry per deployment name and alias, schema-valid', async () => {
  const r = await request(proxy.url, 'GET', '/v1/models');
  assert.equal(r.status, 200, r.text);
  const j = r.json();
  validateModelList(j, 'models list');
  for (const m of j.data) validateModel(m, `model ${m.id}`);
  const ids = j.data.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `duplicate ids: ${ids}`);
  assert.deepEqual([...ids].sort(), [...DEPLOYMENTS, ...Object.keys(ALIASES)].sort());

  const page = await client.models.list();
  const sdkIds = [];
  for await (const m of page) sdkIds.push(m.id);
  assert.deepEqual(sdkIds.sort(), [...ids].sort());
});

test('GET /v1/models/{id}: percent-encoded slash id, plain id, alias', async () => {
  const raw = await request(proxy.url, 'GET', '/v1/models/meta-llama%2FLlama-3.1-8B');
  assert.equal(raw.status, 200, raw.text);
  validateModel(raw.json());
  assert.equal(raw.json().id, 'meta-llama/Llama-3.1-8B');

  const m = await client.models.retrieve('meta-llama/Llama-3.1-8B');
  validateModel(m);
  assert.equal(m.id, 'meta-llama/Llama-3.1-8B');
  assert.equal(m.object, 'model');

  const a = await client.models.retrieve('embed-small');
  validateModel(a);
  assert.equal(a.id, 'embed-small');
  const s = await client.models.retrieve('smart');
  validateModel(s);
  assert.equal(s.id, 'smart');
});

test('GET /v1/models/{id} for an unknown id: 404 OpenAI error', async () => {
  const r = await request(proxy.url, 'GET', '/v1/models/no-such-model');
  assert.equal(r.status, 404, r.text);
  validateError(r.json());
  assert.equal(errorOf(r).code, 'model_not_found');
  await assert.rejects(client.models.retrieve('no%such/model'), (e) => e instanceof OpenAI.NotFoundError);
});

test('chat through the slash-named deployment', async () => {
  const r = await client.chat.completions.create({ model: 'meta-llama/Llama-3.1-8B', messages: [{ role: 'user', content: 'x' }] });
  assert.match(r.choices[0].message.content, /Hello from fake/);
  assert.equal((await fake.last()).body.model, 'meta-llama/Llama-3.1-8B');
});

test('GET /healthz: 200 JSON status ok', async () => {
  const r = await request(proxy.url, 'GET', '/healthz');
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers['content-type'] || '', /json/);
  assert.equal(r.json().status, 'ok');
});
