// The card preview page: builds a request body through /preview/request, sends it to the real hook endpoint
// (POST {service}/cds-services/{id}) and shows the answer as an EHR shows cards; accepting a suggestion or
// dismissing a card posts CDS Hooks feedback to {service}/cds-services/{id}/feedback.
// Every value taken from an answer goes into the page as text (textContent, text nodes), never as HTML.

import { renderMarkdown } from './markdown.js';

const INDICATORS = ['info', 'warning', 'critical'];
const byId = (id) => document.getElementById(id);
const form = {
  sample: byId('sample'),
  sampleDescription: byId('sample-description'),
  fromSample: byId('source-sample'),
  fromPaste: byId('source-paste'),
  pasted: byId('pasted'),
  hook: byId('hook'),
  day: byId('day'),
  baseUrl: byId('base-url'),
  run: byId('run'),
};
const result = {
  status: byId('status'),
  cards: byId('cards'),
  exchange: byId('exchange'),
  request: byId('request-json'),
  response: byId('response-json'),
};
let samples = new Map(); // name -> {description, referenceDate, hooks, expect}
let hooks = []; // every hook the service answers

function element(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function webLink(url, label) {
  // Only http(s) URLs become links: a card's javascript: or data: URL stays text.
  if (typeof url !== 'string' || !/^https?:\/\//i.test(url)) return element('span', null, String(label ?? url ?? ''));
  const link = element('a', null, String(label ?? url));
  link.href = url;
  link.target = '_blank';
  link.rel = 'noopener noreferrer';
  return link;
}

async function postJson(url, body) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: kept as text, shown as such
  }
  return { status: response.status, body: parsed };
}

/** The text of an OperationOutcome (diagnostics and the element it names), or of whatever else came back. */
function outcomeText(body) {
  if (body && body.resourceType === 'OperationOutcome' && Array.isArray(body.issue)) {
    return body.issue.map((issue) => {
      const what = issue.diagnostics || issue.details?.text || issue.code || 'no diagnostics';
      const where = Array.isArray(issue.expression) ? ` (at ${issue.expression.join(', ')})` : '';
      return `${what}${where}`;
    }).join('; ');
  }
  return (typeof body === 'string' ? body : JSON.stringify(body)).slice(0, 500);
}

function serviceBase() {
  const written = form.baseUrl.value.trim().replace(/\/+$/, '');
  if (!written) return window.location.origin;
  const url = new URL(written); // throws on a URL that is not one
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('the CDS service URL must be http(s)');
  return written;
}

function fillHooks(names) {
  const chosen = form.hook.value;
  form.hook.replaceChildren(...names.map((hook) => {
    const option = element('option', null, hook);
    option.value = hook;
    return option;
  }));
  if (names.includes(chosen)) form.hook.value = chosen;
}

function describeSample() {
  const sample = samples.get(form.sample.value);
  if (!sample) {
    form.sampleDescription.textContent = 'No samples here (an installed package carries none): paste a Bundle.';
    return;
  }
  const expected = Object.entries(sample.expect).map(([hook, expectation]) => {
    const cards = (expectation.cards || []).map((card) => `${card.topic} (${card.indicator})`).join(', ');
    return `${hook}: ${cards || 'no cards'}`;
  }).join('; ');
  form.sampleDescription.textContent =
    `${sample.description.replace(/([^.!?])$/, '$1.')} Written around ${sample.referenceDate}. The manifest expects ` +
    `${expected}.`;
}

function onSourceChange() {
  if (form.fromSample.checked) {
    fillHooks(samples.get(form.sample.value)?.hooks ?? hooks);
    describeSample();
  } else {
    fillHooks(hooks);
    hookFromPaste();
  }
}

function hookFromPaste() {
  // A pasted request body names its hook: the page calls that hook's service unless told otherwise.
  try {
    const pasted = JSON.parse(form.pasted.value);
    if (pasted && hooks.includes(pasted.hook)) form.hook.value = pasted.hook;
  } catch {
    // still being typed
  }
}

async function load() {
  form.baseUrl.value = window.location.origin;
  const answer = await fetch('/preview/samples').then((response) => response.json());
  hooks = answer.services.map((service) => service.hook);
  samples = new Map(answer.samples.map((sample) => [sample.name, sample]));
  form.sample.replaceChildren(...answer.samples.map((sample) => {
    const option = element('option', null, `${sample.name} (${sample.hooks.join(', ')})`);
    option.value = sample.name;
    return option;
  }));
  form.day.value = answer.today;
  form.sample.addEventListener('change', onSourceChange);
  form.fromSample.addEventListener('change', onSourceChange);
  form.fromPaste.addEventListener('change', onSourceChange);
  form.pasted.addEventListener('input', () => {
    form.fromPaste.checked = true;
    onSourceChange();
  });
  byId('run-form').addEventListener('submit', run);
  onSourceChange();
  document.body.dataset.ready = 'true';
}

function showUnavailable(reason) {
  result.cards.replaceChildren(element('div', 'unavailable', element('strong', null, 'Decision support unavailable'),
    element('p', null, reason)));
  result.cards.firstChild.setAttribute('role', 'alert');
}

function showExchange(request, response) {
  result.request.textContent = JSON.stringify(request, null, 2);
  result.response.textContent = typeof response === 'string' ? response : JSON.stringify(response, null, 2);
  result.exchange.hidden = false;
}

function whatWasSent(built) {
  if (built.sentAsIs) return 'Pasted request body, sent as it is.';
  const origin = form.fromSample.checked ? `Sample ${form.sample.value}` : 'Pasted Bundle';
  if (built.referenceDate === undefined) return `${origin}: not tagged as a sample, so its dates are as written.`;
  if (built.shiftDays === 0) return `${origin}, written around ${built.referenceDate}: dates as written.`;
  return `${origin}, written around ${built.referenceDate}: every date moved by ${built.shiftDays} days so that ` +
    `day is ${built.asOf}.`;
}

async function run(event) {
  event.preventDefault();
  result.cards.replaceChildren();
  result.exchange.hidden = true;
  result.status.textContent = 'Building the request…';
  const asked = { hook: form.hook.value, date: form.day.value };
  if (form.fromPaste.checked) {
    try {
      asked.document = JSON.parse(form.pasted.value);
    } catch (error) {
      result.status.textContent = `The pasted text is not JSON: ${error.message}`;
      return;
    }
  } else {
    asked.sample = form.sample.value;
  }
  let base;
  try {
    base = serviceBase();
  } catch (error) {
    result.status.textContent = `The CDS service URL is not usable: ${error.message}`;
    return;
  }
  form.run.disabled = true;
  try {
    const built = await postJson('/preview/request', asked);
    if (built.status !== 200) {
      result.status.textContent = `The request could not be built: ${outcomeText(built.body)}`;
      return;
    }
    const { service, request } = built.body;
    const endpoint = `${base}/cds-services/${encodeURIComponent(service)}`;
    result.status.textContent = `${whatWasSent(built.body)} POST ${endpoint}…`;
    let answer;
    try {
      answer = await postJson(endpoint, request);
    } catch (error) {
      showUnavailable(`The CDS service could not be reached (${error.message}).`);
      return;
    }
    showExchange(request, answer.body);
    result.status.textContent = `${whatWasSent(built.body)} POST ${endpoint}: HTTP ${answer.status}.`;
    showAnswer(answer, `${base}/cds-services/${encodeURIComponent(service)}/feedback`);
  } finally {
    form.run.disabled = false;
  }
}

function showAnswer(answer, feedbackUrl) {
  // Only a 200 with a card list is an answer; anything else must never read as "nothing to say".
  if (answer.status !== 200) {
    showUnavailable(`HTTP ${answer.status}: ${outcomeText(answer.body)}`);
  } else if (!answer.body || !Array.isArray(answer.body.cards)) {
    showUnavailable('The answer is not a CDS Hooks response (no cards list).');
  } else if (answer.body.cards.length === 0) {
    result.cards.replaceChildren(element('p', 'no-cards', 'No cards'));
  } else {
    result.cards.replaceChildren(...answer.body.cards.map((card) => cardView(card ?? {}, feedbackUrl)));
  }
}

function cardView(card, feedbackUrl) {
  const indicator = INDICATORS.includes(card.indicator) ? card.indicator : 'unknown';
  const view = element('article', `card indicator-${indicator}`);
  view.dataset.indicator = indicator;
  view.append(element('header', null, element('span', 'indicator', String(card.indicator ?? 'no indicator')),
    element('h2', 'summary', String(card.summary ?? ''))));
  if (typeof card.detail === 'string') view.append(element('div', 'detail', renderMarkdown(card.detail)));
  const source = card.source ?? {};
  view.append(element('p', 'source', 'Source: ', webLink(source.url, source.label ?? source.url ?? 'not given')));
  if (Array.isArray(card.links) && card.links.length) {
    view.append(element('ul', 'links', ...card.links.map((link) => element('li', null, webLink(link.url, link.label),
      link.type === 'smart' ? ' (SMART app)' : null))));
  }
  const feedback = element('p', 'feedback');
  feedback.setAttribute('role', 'status');
  const controls = [];
  const send = (item, done) => sendFeedback(feedbackUrl, card, item, done, feedback, controls);
  if (Array.isArray(card.suggestions) && card.suggestions.length) {
    view.append(element('div', 'suggestions', ...card.suggestions.map((suggestion) => {
      const button = element('button', 'suggestion', String(suggestion.label ?? 'Suggestion'),
        suggestion.isRecommended ? element('span', 'recommended', ' recommended') : null);
      button.type = 'button';
      controls.push(button);
      button.addEventListener('click', () => send(
        { outcome: 'accepted', acceptedSuggestions: [{ id: suggestion.uuid }] },
        `Suggestion “${suggestion.label}” accepted`,
      ));
      const actions = Array.isArray(suggestion.actions) ? suggestion.actions : [];
      return element('div', 'suggestion-block', button,
        element('ul', 'actions', ...actions.map((action) => element('li', null, actionText(action)))));
    })));
  }
  view.append(dismissView(card, send, controls), feedback);
  return view;
}

function dismissView(card, send, controls) {
  const reasons = Array.isArray(card.overrideReasons) ? card.overrideReasons : [];
  const choice = element('select', 'override-reason', element('option', null, 'no reason given'),
    ...reasons.map((reason) => element('option', null, String(reason.display ?? reason.code))));
  choice.options[0].value = '';
  reasons.forEach((_, index) => { choice.options[index + 1].value = String(index); });
  choice.setAttribute('aria-label', 'Override reason');
  const button = element('button', 'dismiss', 'Dismiss');
  button.type = 'button';
  controls.push(choice, button);
  button.addEventListener('click', () => {
    const reason = choice.value === '' ? null : reasons[Number(choice.value)];
    const item = { outcome: 'overridden' };
    if (reason) {
      item.overrideReason = { reason: { system: reason.system, code: reason.code, display: reason.display } };
    }
    send(item, `Card dismissed (${reason ? reason.display ?? reason.code : 'no reason given'})`);
  });
  return element('div', 'dismiss-block', element('label', null, 'Dismiss with reason ', choice), button);
}

function actionText(action) {
  const parts = [String(action.type ?? 'action')];
  if (action.description) parts.push(String(action.description));
  const resource = action.resource;
  if (resource && typeof resource === 'object') {
    const coding = Array.isArray(resource.code?.coding) ? resource.code.coding : [];
    const name = resource.code?.text ?? coding.find((c) => c && c.display)?.display;
    const codes = coding.map((c) => c && c.code).filter(Boolean);
    const sites = (Array.isArray(resource.bodySite) ? resource.bodySite : [])
      .flatMap((site) => (Array.isArray(site?.coding) ? site.coding : []).map((c) => c?.display).concat(site?.text))
      .filter(Boolean);
    let summary = `${resource.resourceType ?? 'resource'}`;
    if (resource.status || resource.intent) summary += ` (${[resource.status, resource.intent].filter(Boolean).join(', ')})`;
    if (name) summary += `: ${name}`;
    if (codes.length) summary += ` [${codes.join(', ')}]`;
    if (sites.length) summary += `; site: ${sites.join(', ')}`;
    parts.push(summary);
  } else if (action.resourceId !== undefined) {
    parts.push([].concat(action.resourceId).join(', '));
  }
  return parts.join(' — ');
}

async function sendFeedback(feedbackUrl, card, item, done, line, controls) {
  if (!card.uuid || (item.acceptedSuggestions && !item.acceptedSuggestions[0].id)) {
    line.textContent = 'Not sent: the card or the suggestion has no uuid (CDS Hooks sends no feedback then).';
    return;
  }
  line.className = 'feedback';
  line.textContent = `${done}: sending feedback…`;
  const body = { feedback: [{ card: card.uuid, ...item, outcomeTimestamp: new Date().toISOString() }] };
  let answer;
  try {
    answer = await postJson(feedbackUrl, body);
  } catch (error) {
    line.className = 'feedback refused';
    line.textContent = `${done}: feedback not delivered (${error.message}).`;
    return;
  }
  if (answer.status === 200) {
    const stored = answer.body?.stored ?? '?';
    const duplicates = answer.body?.duplicates ?? '?';
    line.className = 'feedback stored';
    line.textContent = `${done}: feedback accepted by the service (HTTP 200; ${stored} stored, ${duplicates} already ` +
      'known).';
    controls.forEach((control) => { control.disabled = true; }); // acted on: an EHR would close the card
  } else {
    line.className = 'feedback refused';
    line.textContent = `${done}: feedback refused by the service (HTTP ${answer.status}: ${outcomeText(answer.body)}).`;
  }
}

load().catch((error) => {
  result.status.textContent = `The preview could not start: ${error.message}`;
});
