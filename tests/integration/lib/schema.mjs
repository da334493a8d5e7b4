// OpenAI response schemas (../shared/spec/) compiled with ajv, offline.
//
// The spec is OpenAPI: schemas reference each other as '#/components/schemas/X' and use the
// OpenAPI 'nullable' keyword. We register the whole (normalised) document under an $id and
// compile {"$ref": "<id>#/components/schemas/X"}, so every internal reference resolves inside it.
// The subset is tried first; a schema missing from it comes from the full spec.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const SOURCE_DIR = process.env.SY_SOURCE_DIR || path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SPEC_DIR = process.env.SY_SPEC_DIR || path.resolve(SOURCE_DIR, '..', 'shared', 'spec');
const SUBSET = path.join(SPEC_DIR, 'openai-subset.json');
const FULL = path.join(SPEC_DIR, 'openai-openapi.json');

// OpenAPI 'nullable: true' -> JSON Schema: add "null" to type (and to enum); a nullable schema
// without a type (a $ref, anyOf...) becomes anyOf [itself, {type:null}].
function normalise(node) {
  if (Array.isArray(node)) return node.map(normalise);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    // 'properties' maps names to schemas: normalise each value, keep the names.
    if (k === 'properties' && v && typeof v === 'object' && !Array.isArray(v)) {
      out[k] = Object.fromEntries(Object.entries(v).map(([n, s]) => [n, normalise(s)]));
    } else if (k === 'example' || k === 'examples' || k === 'default') {
      out[k] = v;
    } else {
      out[k] = normalise(v);
    }
  }
  if (out.nullable === true) {
    delete out.nullable;
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    if (typeof out.type === 'string') {
      out.type = [out.type, 'null'];
    } else if (Array.isArray(out.type)) {
      if (!out.type.includes('null')) out.type = [...out.type, 'null'];
    } else {
      const { description, title, ...rest } = out;
      const wrapped = { anyOf: [rest, { type: 'null' }] };
      if (description !== undefined) wrapped.description = description;
      return wrapped;
    }
  } else if (out.nullable === false) {
    delete out.nullable;
  }
  return out;
}

function makeAjv() {
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false, allowUnionTypes: true });
  addFormats(ajv);
  // OpenAPI-specific formats used by the spec.
  ajv.addFormat('unixtime', { type: 'number', validate: (n) => Number.isInteger(n) && n >= 0 });
  for (const f of ['int64', 'int32']) {
    ajv.addFormat(f, { type: 'number', validate: (n) => Number.isInteger(n) });
  }
  ajv.addFormat('float', { type: 'number', validate: () => true });
  ajv.addFormat('double', { type: 'number', validate: () => true });
  return ajv;
}

let state = null;
function load() {
  if (state) return state;
  const ajv = makeAjv();
  const subset = normalise(JSON.parse(fs.readFileSync(SUBSET, 'utf8')));
  delete subset.paths; // only components are referenced
  ajv.addSchema(subset, 'openai-subset.json');
  state = { ajv, subset, full: null, cache: new Map() };
  return state;
}

function loadFull(st) {
  if (!st.full) {
    const full = normalise(JSON.parse(fs.readFileSync(FULL, 'utf8')));
    delete full.paths;
    st.ajv.addSchema(full, 'openai-openapi.json');
    st.full = full;
  }
  return st.full;
}

/** A compiled ajv validator for components.schemas[name]. */
export function validator(name) {
  const st = load();
  if (st.cache.has(name)) return st.cache.get(name);
  let docId = 'openai-subset.json';
  if (!st.subset.components?.schemas?.[name]) {
    const full = loadFull(st);
    if (!full.components?.schemas?.[name]) throw new Error(`schema ${name} not in the spec`);
    docId = 'openai-openapi.json';
  }
  const v = st.ajv.compile({ $ref: `${docId}#/components/schemas/${name}` });
  st.cache.set(name, v);
  return v;
}

/** Throws an AssertionError-like Error listing the schema violations. */
export function assertSchema(name, value, what = '') {
  const v = validator(name);
  if (!v(value)) {
    const errs = v.errors.slice(0, 10).map((e) => `  ${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
    const body = JSON.stringify(value);
    throw new Error(`${what || name}: does not match ${name}:\n${errs.join('\n')}\n  value: ${body.length > 2000 ? body.slice(0, 2000) + '...' : body}`);
  }
  return value;
}

export const validateChatCompletion = (v, w) => assertSchema('CreateChatCompletionResponse', v, w);
export const validateChatChunk = (v, w) => assertSchema('CreateChatCompletionStreamResponse', v, w);
export const validateEmbeddings = (v, w) => assertSchema('CreateEmbeddingResponse', v, w);
export const validateModelList = (v, w) => assertSchema('ListModelsResponse', v, w);
export const validateModel = (v, w) => assertSchema('Model', v, w);
export const validateError = (v, w) => assertSchema('ErrorResponse', v, w);
export const validateCompletion = (v, w) => assertSchema('CreateCompletionResponse', v, w);
