// dropscope web page: plain JS, no build step, nothing fetched from other
// origins. It talks to this server's /api/ with the secret key, draws every
// chart as SVG from the JSON results, and keeps the funnel in the URL hash
// (never the key) so a link can be shared.
'use strict';

const SVGNS = 'http://www.w3.org/2000/svg';
const KEY_NAME = 'dropscope.secret_key';
const PALETTE = ['#4f46e5', '#0ea5e9', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#ec4899', '#14b8a6', '#64748b', '#84cc16'];
const OPERATORS = [
  ['exact', '='], ['is_not', '≠'], ['icontains', 'contains'], ['not_icontains', 'not contains'],
  ['gt', '>'], ['gte', '≥'], ['lt', '<'], ['lte', '≤'], ['regex', 'matches'],
  ['is_set', 'is set'], ['is_not_set', 'is not set'],
];
const VIEWS = ['funnel', 'ttc', 'trends', 'correlation', 'paths', 'diagnosis'];

const S = {
  key: null,
  view: 'funnel',
  q: defaultQuery(),
  opt: defaultOptions(),
  events: [],
  cache: new Map(),
  seq: 0,
  lastSpec: null,
};
window.__dropscope = S;

function defaultQuery() {
  return {
    steps: [{ event: '$pageview', properties: [] }, { event: '', properties: [] }],
    date_from: 'all', date_to: null, window: { value: 14, unit: 'day' }, order: 'ordered',
    exclusions: [], properties: [], breakdown: null,
  };
}
function defaultOptions() {
  return { interval: 'week', corr: 'events', corrEvent: '', showLow: false, sort: 'odds_ratio', dir: -1, after: '', ttcFrom: 0, ttcTo: null };
}

// ---------------------------------------------------------------- helpers
const $ = (id) => document.getElementById(id);
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, kids);
  return e;
}
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  setAttrs(e, attrs);
  append(e, kids);
  return e;
}
function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.setAttribute('class', v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
}
function append(e, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}
const fmtInt = (n) => (n === null || n === undefined ? '–' : Math.round(n).toLocaleString('en-US'));
function pct(x, d = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  return (x * 100).toFixed(d) + '%';
}
function dur(sec) {
  if (sec === null || sec === undefined) return '–';
  sec = Math.max(0, sec);
  if (sec === 0) return '0';
  if (sec < 60) return (sec < 10 ? sec.toFixed(1) : Math.round(sec)) + 's';
  if (sec < 3600) return (sec / 60).toFixed(sec < 600 ? 1 : 0) + 'm';
  if (sec < 86400) return (sec / 3600).toFixed(sec < 36000 ? 1 : 0) + 'h';
  return (sec / 86400).toFixed(sec < 864000 ? 1 : 0) + 'd';
}
function num(x, d = 2) {
  if (x === null || x === undefined || !Number.isFinite(x)) return x === Infinity ? '∞' : '–';
  if (x >= 1000) return Math.round(x).toLocaleString('en-US');
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(d);
}
function pval(p) {
  if (p === null || p === undefined) return '–';
  if (p === 0) return '0';
  if (p < 0.001) return p.toExponential(1);
  return p.toFixed(3);
}
function stepName(st, i) { return (st && (st.name || st.event)) || `step ${i + 1}`; }
function toast(msg) {
  const t = $('toast');
  t.textContent = msg;
  t.classList.remove('hidden');
  clearTimeout(toast.t);
  toast.t = setTimeout(() => t.classList.add('hidden'), 1800);
}
function valueText(v) {
  if (Array.isArray(v)) return v.map(valueText).join(' · ');
  if (v === null || v === undefined || v === '') return '(none)';
  return String(v);
}

// ---------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, detail, code) { super(detail); this.status = status; this.code = code; }
}
async function api(path, body) {
  const init = { headers: { Authorization: 'Bearer ' + S.key } };
  if (body !== undefined) {
    init.method = 'POST';
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'Cannot reach the server: ' + e.message, 'network');
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const detail = (data && (data.detail || data.message)) || text || r.statusText;
    const err = new ApiError(r.status, detail, data && data.code);
    if (r.status === 401 && path !== '/api/events?limit=1') signOut(detail);
    throw err;
  }
  return data;
}
async function query(spec) {
  const k = JSON.stringify(spec);
  if (S.cache.has(k)) return S.cache.get(k);
  const p = api('/api/query', { query: spec });
  S.cache.set(k, p);
  p.catch(() => S.cache.delete(k));
  return p;
}

// ---------------------------------------------------------------- sign in
function storedKey() {
  return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME);
}
function showSignIn(message) {
  $('app-view').classList.add('hidden');
  $('signout').classList.add('hidden');
  $('data-info').textContent = '';
  $('signin-view').classList.remove('hidden');
  const err = $('signin-error');
  if (message) { err.textContent = message; err.classList.remove('hidden'); } else err.classList.add('hidden');
  $('signin-key').focus();
}
function signOut(message) {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  S.key = null;
  S.cache.clear();
  showSignIn(message);
}
async function signIn(ev) {
  ev.preventDefault();
  const key = $('signin-key').value.trim();
  const btn = $('signin-submit');
  btn.disabled = true;
  btn.textContent = 'Signing in…';
  S.key = key;
  try {
    await api('/api/events?limit=1');
    (($('signin-remember').checked) ? localStorage : sessionStorage).setItem(KEY_NAME, key);
    $('signin-key').value = '';
    startApp();
  } catch (e) {
    S.key = null;
    showSignIn(e.message);
  } finally {
    btn.disabled = false;
    btn.textContent = 'Sign in';
  }
}

// ---------------------------------------------------------------- URL state
function writeHash() {
  const st = { v: S.view, q: S.q, o: S.opt };
  const hash = '#' + encodeURIComponent(JSON.stringify(st));
  if (location.hash !== hash) history.replaceState(null, '', hash);
}
function readHash() {
  if (!location.hash || location.hash.length < 2) return false;
  try {
    const st = JSON.parse(decodeURIComponent(location.hash.slice(1)));
    if (st.q && Array.isArray(st.q.steps)) {
      S.q = Object.assign(defaultQuery(), st.q);
      S.q.steps = S.q.steps.map((x) => ({ event: x.event || '', properties: x.properties || [] }));
    }
    if (st.o) S.opt = Object.assign(defaultOptions(), st.o);
    if (VIEWS.includes(st.v)) S.view = st.v;
    return true;
  } catch (_) {
    return false;
  }
}

// ---------------------------------------------------------------- builder
function cleanFilters(list) {
  return (list || []).filter((f) => f.key).map((f) => {
    const out = { key: f.key, operator: f.operator || 'exact', type: f.type || 'event' };
    if (!['is_set', 'is_not_set'].includes(out.operator)) out.value = f.value ?? '';
    else out.value = out.operator;
    return out;
  });
}
/** The funnel part of every query, from the builder. */
function baseSpec() {
  const q = S.q;
  const steps = q.steps.filter((x) => x.event && x.event.trim()).map((x) => {
    const st = { event: x.event.trim() };
    const f = cleanFilters(x.properties);
    if (f.length) st.properties = f;
    return st;
  });
  const spec = { steps, order: q.order, window: { value: Number(q.window.value) || 14, unit: q.window.unit }, date_from: q.date_from || 'all' };
  if (q.date_to) spec.date_to = q.date_to;
  const g = cleanFilters(q.properties);
  if (g.length) spec.properties = g;
  const ex = (q.exclusions || []).filter((e) => e.event).map((e) => ({ event: e.event, from_step: Number(e.from_step), to_step: Number(e.to_step) }));
  if (ex.length) spec.exclusions = ex;
  if (q.breakdown && q.breakdown.property) spec.breakdown = { type: q.breakdown.type, property: q.breakdown.property };
  return spec;
}

function filterEditor(f, onRemove, idPrefix) {
  const dl = idPrefix + '-vals';
  const key = h('input', { class: 'f-key', value: f.key || '', placeholder: 'property', list: f.type === 'person' ? 'dl-pprops' : 'dl-props', spellcheck: 'false', 'aria-label': 'Property' });
  const type = h('select', { class: 'f-type', 'aria-label': 'Property type' },
    h('option', { value: 'event', selected: f.type !== 'person', text: 'event' }),
    h('option', { value: 'person', selected: f.type === 'person', text: 'person' }));
  const op = h('select', { class: 'f-op', 'aria-label': 'Operator' },
    OPERATORS.map(([v, t]) => h('option', { value: v, selected: (f.operator || 'exact') === v, text: t })));
  const val = h('input', { class: 'f-val', value: f.value ?? '', placeholder: 'value', list: dl, spellcheck: 'false', 'aria-label': 'Value' });
  const vals = h('datalist', { id: dl });
  const del = h('button', { class: 'btn icon f-del', type: 'button', title: 'Remove filter', text: '✕', onclick: onRemove });
  const loadVals = async () => {
    if (!f.key) return;
    try {
      const r = await api(`/api/property_values?key=${encodeURIComponent(f.key)}&type=${f.type || 'event'}&limit=50`);
      vals.replaceChildren(...r.results.map((x) => h('option', { value: valueText(x.value) })));
    } catch (_) { /* autocomplete is best effort */ }
  };
  const sync = () => { val.classList.toggle('hidden', ['is_set', 'is_not_set'].includes(f.operator)); };
  key.addEventListener('input', () => { f.key = key.value.trim(); });
  key.addEventListener('change', loadVals);
  type.addEventListener('change', () => { f.type = type.value; key.setAttribute('list', f.type === 'person' ? 'dl-pprops' : 'dl-props'); loadVals(); });
  op.addEventListener('change', () => { f.operator = op.value; sync(); });
  val.addEventListener('input', () => { f.value = val.value; });
  sync();
  if (f.key) setTimeout(loadVals, 0);
  return h('div', { class: 'filter' }, key, type, op, val, vals, del);
}

function renderBuilder() {
  const q = S.q;
  const ol = $('steps');
  ol.replaceChildren();
  q.steps.forEach((st, i) => {
    const input = h('input', { value: st.event, placeholder: 'event name', list: 'dl-events', spellcheck: 'false', 'data-testid': 'step-input', 'aria-label': `Step ${i + 1} event` });
    input.addEventListener('input', () => { st.event = input.value; updateCount(); });
    const filters = h('div', { class: 'filters' });
    st.properties.forEach((f, j) => filters.append(filterEditor(f, () => { st.properties.splice(j, 1); renderBuilder(); schedule(); }, `sf${i}-${j}`)));
    const tools = h('div', { class: 'step-tools' },
      h('button', { class: 'btn icon', type: 'button', title: 'Add a filter to this step', text: '+', onclick: () => { st.properties.push({ key: '', operator: 'exact', type: 'event', value: '' }); renderBuilder(); } }),
      h('button', { class: 'btn icon', type: 'button', title: 'Move up', text: '↑', disabled: i === 0, onclick: () => { q.steps.splice(i - 1, 0, q.steps.splice(i, 1)[0]); renderBuilder(); schedule(); } }),
      h('button', { class: 'btn icon', type: 'button', title: 'Remove step', text: '✕', disabled: q.steps.length <= 1, onclick: () => { q.steps.splice(i, 1); renderBuilder(); schedule(); } }));
    ol.append(h('li', { class: 'step', 'data-testid': 'step' }, h('div', { class: 'step-main' }, h('span', { class: 'step-num', text: String(i + 1) }), input, tools), filters));
  });
  updateCount();

  const preset = ['-7d', '-30d', '-90d', '-1y', 'all'].includes(q.date_from) && !q.date_to ? q.date_from : 'custom';
  $('date-preset').value = preset;
  $('date-custom').classList.toggle('hidden', preset !== 'custom');
  if (preset === 'custom') {
    $('date-from').value = /^\d{4}-\d{2}-\d{2}$/.test(q.date_from) ? q.date_from : '';
    $('date-to').value = q.date_to || '';
  }
  $('window-value').value = q.window.value;
  $('window-unit').value = q.window.unit;
  $('order').value = q.order;

  const gf = $('global-filters');
  gf.replaceChildren(...q.properties.map((f, j) => filterEditor(f, () => { q.properties.splice(j, 1); renderBuilder(); schedule(); }, `gf${j}`)));

  const ex = $('exclusions');
  const last = Math.max(1, q.steps.length - 1);
  ex.replaceChildren(...q.exclusions.map((e, j) => {
    const input = h('input', { value: e.event, placeholder: 'event to exclude', list: 'dl-events', spellcheck: 'false', 'aria-label': 'Excluded event' });
    input.addEventListener('input', () => { e.event = input.value.trim(); });
    const sel = (field) => {
      const se = h('select', { 'aria-label': field }, Array.from({ length: last + 1 }, (_, k) => h('option', { value: k, selected: Number(e[field]) === k, text: `step ${k + 1}` })));
      se.addEventListener('change', () => { e[field] = Number(se.value); });
      return se;
    };
    return h('div', { class: 'exclusion' }, input,
      h('button', { class: 'btn icon', type: 'button', title: 'Remove exclusion', text: '✕', onclick: () => { q.exclusions.splice(j, 1); renderBuilder(); schedule(); } }),
      h('div', { class: 'ex-range' }, 'between', sel('from_step'), 'and', sel('to_step')));
  }));

  $('breakdown-type').value = q.breakdown ? q.breakdown.type : '';
  $('breakdown-prop').classList.toggle('hidden', !q.breakdown);
  $('breakdown-prop').value = q.breakdown ? q.breakdown.property || '' : '';
  $('breakdown-prop').setAttribute('list', q.breakdown && q.breakdown.type === 'person' ? 'dl-pprops' : 'dl-props');
}

function updateCount() {
  const n = S.q.steps.filter((x) => x.event && x.event.trim()).length;
  $('steps-count').textContent = `${n} step${n === 1 ? '' : 's'}`;
}
function bindBuilder() {
  $('add-step').onclick = () => { S.q.steps.push({ event: '', properties: [] }); renderBuilder(); const ins = document.querySelectorAll('[data-testid=step-input]'); ins[ins.length - 1].focus(); };
  $('add-filter').onclick = () => { S.q.properties.push({ key: '', operator: 'exact', type: 'event', value: '' }); renderBuilder(); };
  $('add-exclusion').onclick = () => { const n = S.q.steps.length; S.q.exclusions.push({ event: '', from_step: 0, to_step: Math.max(1, n - 1) }); renderBuilder(); };
  $('date-preset').onchange = (e) => {
    if (e.target.value === 'custom') { $('date-custom').classList.remove('hidden'); return; }
    S.q.date_from = e.target.value; S.q.date_to = null; renderBuilder(); schedule();
  };
  $('date-from').onchange = (e) => { S.q.date_from = e.target.value || 'all'; schedule(); };
  $('date-to').onchange = (e) => { S.q.date_to = e.target.value || null; schedule(); };
  $('window-value').oninput = (e) => { S.q.window.value = Number(e.target.value); };
  $('window-unit').onchange = (e) => { S.q.window.unit = e.target.value; schedule(); };
  $('order').onchange = (e) => { S.q.order = e.target.value; schedule(); };
  $('breakdown-type').onchange = (e) => {
    const t = e.target.value;
    S.q.breakdown = t ? { type: t, property: (S.q.breakdown && S.q.breakdown.property) || (t === 'event' ? '$browser' : '') } : null;
    renderBuilder();
    schedule();
  };
  $('breakdown-prop').oninput = (e) => { if (S.q.breakdown) S.q.breakdown.property = e.target.value.trim(); };
  $('run').onclick = () => run(true);
  $('copy-link').onclick = async () => {
    writeHash();
    try { await navigator.clipboard.writeText(location.href); toast('Link copied (without the key)'); } catch (_) { toast('Copy the address bar to share this funnel'); }
  };
  const b = $('builder');
  b.addEventListener('change', (e) => { if (e.target.matches('input')) schedule(); });
  b.addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.target.matches('input')) { e.preventDefault(); run(true); } });
  $('tabs').addEventListener('click', (e) => {
    const v = e.target.closest('button') && e.target.closest('button').dataset.view;
    if (v) { S.view = v; run(); }
  });
  $('drawer-close').onclick = closeDrawer;
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeDrawer(); });
  window.addEventListener('hashchange', () => { if (readHash()) { renderBuilder(); run(); } });
}

let scheduled = null;
function schedule() {
  clearTimeout(scheduled);
  scheduled = setTimeout(() => run(), 120);
}

// ---------------------------------------------------------------- running views
function setBusy(on) {
  const c = $('content');
  c.classList.toggle('busy', on && c.children.length > 0);
  const ov = c.querySelector('.loading-overlay');
  if (on && !ov) {
    if (c.children.length) c.append(h('div', { class: 'loading-overlay' }, h('span', { class: 'spinner' }), 'Calculating…'));
    else c.append(h('div', { class: 'loading', 'data-testid': 'loading' }, h('span', { class: 'spinner' }), 'Calculating…'));
  }
  if (!on && ov) ov.remove();
}
function errorBox(e) {
  return h('div', { class: 'error', role: 'alert', 'data-testid': 'error' }, h('strong', { text: e.status ? `The server refused the query (${e.status}${e.code ? ' ' + e.code : ''})` : 'Something went wrong' }), e.message);
}

async function run(force) {
  if (!S.key) return;
  document.querySelectorAll('#tabs button').forEach((b) => b.classList.toggle('on', b.dataset.view === S.view));
  writeHash();
  const my = ++S.seq;
  const spec = baseSpec();
  if (force) S.cache.clear();
  const c = $('content');
  $('view-options').replaceChildren(...viewOptions(spec));
  if (!spec.steps.length) {
    c.replaceChildren(h('div', { class: 'empty' }, 'Pick the events of your funnel on the left to start.'));
    return;
  }
  setBusy(true);
  try {
    const node = await VIEW_RENDER[S.view](spec);
    if (my !== S.seq) return;
    c.classList.remove('busy');
    c.replaceChildren(node);
  } catch (e) {
    if (my !== S.seq) return;
    c.classList.remove('busy');
    c.replaceChildren(errorBox(e));
  }
}

function seg(options, value, onPick, testid) {
  return h('div', { class: 'seg', 'data-testid': testid }, options.map(([v, t]) => h('button', { type: 'button', class: v === value ? 'on' : '', 'data-value': v, text: t, onclick: () => onPick(v) })));
}
function stepSelect(label, value, steps, onPick, allowAuto) {
  const se = h('select', { 'aria-label': label },
    allowAuto ? h('option', { value: '', text: 'largest drop' }) : null,
    steps.map((st, i) => h('option', { value: String(i), selected: String(value) === String(i), text: `${i + 1}. ${st.event}` })));
  if (allowAuto && (value === '' || value === null)) se.value = '';
  se.onchange = () => onPick(se.value);
  return h('label', { class: 'inline' }, label, se);
}
function viewOptions(spec) {
  const o = S.opt;
  const last = Math.max(0, spec.steps.length - 1);
  switch (S.view) {
    case 'trends':
      return [seg([['day', 'Daily'], ['week', 'Weekly'], ['month', 'Monthly']], o.interval, (v) => { o.interval = v; run(); }, 'interval')];
    case 'ttc':
      return [
        stepSelect('From', o.ttcFrom, spec.steps.slice(0, last), (v) => { o.ttcFrom = Number(v); run(); }),
        stepSelect('to', o.ttcTo === null ? last : o.ttcTo, spec.steps, (v) => { o.ttcTo = Number(v); run(); }),
      ];
    case 'correlation': {
      const out = [seg([['events', 'Events'], ['properties', 'Person properties'], ['event_with_properties', 'Event properties']], o.corr, (v) => { o.corr = v; run(); }, 'corr-type')];
      if (o.corr === 'event_with_properties') {
        const inp = h('input', { value: o.corrEvent || spec.steps[0].event, list: 'dl-events', placeholder: 'event', spellcheck: 'false', 'aria-label': 'Event' });
        inp.onchange = () => { o.corrEvent = inp.value.trim(); run(); };
        out.push(h('label', { class: 'inline' }, 'of event', inp));
      }
      const cb = h('input', { type: 'checkbox', checked: o.showLow, 'data-testid': 'show-low' });
      cb.onchange = () => { o.showLow = cb.checked; run(); };
      out.push(h('label', { class: 'check', style: 'margin:0' }, cb, 'Show low-support rows'));
      return out;
    }
    case 'paths':
      return [stepSelect('After step', o.after, spec.steps.slice(0, last), (v) => { o.after = v; run(); }, true)];
    default:
      return [];
  }
}

// ---------------------------------------------------------------- SVG charts
function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function niceStep(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v && Number.isInteger(m * p)) return m * p;
  return 10 * p;
}
function durationTicks(max) {
  const cands = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400];
  const step = cands.find((c) => max / c <= 8) || 30 * 86400;
  const out = [];
  for (let t = 0; t <= max + 1e-9; t += step) out.push(t);
  return out;
}

/** A line chart: series [{name, color, points: [[x, y, label]]}], x numeric. */
function lineChart({ series, width = 900, height = 260, xTicks, xFmt, yMax, yFmt, step = false, testid }) {
  const m = { l: 48, r: 16, t: 12, b: 28 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const xs = series.flatMap((se) => se.points.map((p) => p[0]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const ym = yMax || niceMax(Math.max(...series.flatMap((se) => se.points.map((p) => p[1]))));
  const X = (x) => m.l + (x1 === x0 ? W / 2 : ((x - x0) / (x1 - x0)) * W);
  const Y = (y) => m.t + H - (y / ym) * H;
  const g = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, 'data-testid': testid, role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const y = (ym * i) / 4;
    g.append(s('line', { x1: m.l, x2: m.l + W, y1: Y(y), y2: Y(y), stroke: '#eef0f3' }));
    g.append(s('text', { x: m.l - 8, y: Y(y) + 4, 'text-anchor': 'end', text: yFmt(y) }));
  }
  for (const t of xTicks || []) {
    if (t < x0 || t > x1) continue;
    g.append(s('text', { x: X(t), y: m.t + H + 18, 'text-anchor': 'middle', text: xFmt(t) }));
  }
  g.append(s('line', { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, stroke: '#d0d5dd' }));
  for (const se of series) {
    let d = '';
    se.points.forEach((p, i) => {
      if (i === 0) d += `M${X(p[0])},${Y(p[1])}`;
      else if (step) d += `H${X(p[0])}V${Y(p[1])}`;
      else d += `L${X(p[0])},${Y(p[1])}`;
    });
    g.append(s('path', { d, class: 'line', stroke: se.color }));
    if (!step && se.points.length <= 60) {
      for (const p of se.points) g.append(s('circle', { cx: X(p[0]), cy: Y(p[1]), r: 3.5, class: 'dot', fill: se.color }, s('title', { text: p[2] })));
    }
  }
  return g;
}

// ---------------------------------------------------------------- funnel view
function funnelBars(steps, onStep, onDrop) {
  const n = steps.length;
  const width = Math.max(640, Math.min(1100, n * 190));
  const height = 330;
  const m = { l: 44, r: 8, t: 34, b: 46 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const slot = W / n;
  const bw = Math.min(110, slot * 0.56);
  const top = steps[0].count || 1;
  const Y = (v) => m.t + H - (v / top) * H;
  const g = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, 'data-testid': 'funnel-chart', role: 'img', 'aria-label': 'Funnel' });
  for (let i = 0; i <= 4; i++) {
    const y = m.t + (H * i) / 4;
    g.append(s('line', { x1: m.l, x2: m.l + W, y1: y, y2: y, stroke: '#eef0f3' }));
    g.append(s('text', { x: m.l - 8, y: y + 4, 'text-anchor': 'end', text: `${100 - i * 25}%` }));
  }
  steps.forEach((st, i) => {
    const x = m.l + slot * i + (slot - bw) / 2;
    const prev = i === 0 ? st.count : steps[i - 1].count;
    g.append(s('rect', { x, y: m.t, width: bw, height: H, class: 'bar-bg', rx: 3 }));
    if (i > 0 && prev > st.count) {
      const dropRect = s('rect', { x, y: Y(prev), width: bw, height: Y(st.count) - Y(prev), class: 'drop', 'data-testid': 'drop', onclick: () => onDrop(i) },
        s('title', { text: `${fmtInt(st.dropped)} dropped between ${stepName(steps[i - 1], i - 1)} and ${stepName(st, i)} — click to see them` }));
      g.append(dropRect);
    }
    const bh = Math.max(1, m.t + H - Y(st.count));
    g.append(s('rect', { x, y: m.t + H - bh, width: bw, height: bh, rx: 3, fill: PALETTE[0], class: 'bar', 'data-testid': 'bar', 'data-step': i, onclick: () => onStep(i) },
      s('title', { text: `${stepName(st, i)}: ${fmtInt(st.count)} (${pct(st.conversion_from_first)} of entrants) — click to see them` })));
    const ci = st.conversion_from_first_interval;
    if (i > 0 && ci) {
      const cx = x + bw / 2;
      const ya = Y(ci[0] * top), yb = Y(ci[1] * top);
      g.append(s('path', { d: `M${cx - 6},${ya}H${cx + 6}M${cx},${ya}V${yb}M${cx - 6},${yb}H${cx + 6}`, class: 'ci' }, s('title', { text: `95% interval ${pct(ci[0])} – ${pct(ci[1])}` })));
    }
    const labelY = Math.min(Y(st.count), Y(prev)) - 20;
    g.append(s('text', { x: x + bw / 2, y: labelY, 'text-anchor': 'middle', class: 'bar-count', 'data-testid': 'bar-count', 'data-value': st.count, text: fmtInt(st.count) }));
    g.append(s('text', { x: x + bw / 2, y: labelY + 14, 'text-anchor': 'middle', class: 'bar-pct', 'data-testid': 'bar-pct', text: pct(st.conversion_from_first) }));
    if (i > 0) {
      const dy = (Y(prev) + Y(st.count)) / 2;
      if (Y(st.count) - Y(prev) > 30) {
        g.append(s('text', { x: x + bw / 2, y: dy + 4, 'text-anchor': 'middle', class: 'drop-label', 'data-testid': 'drop-label', text: `−${fmtInt(st.dropped)} · ${pct(1 - st.conversion_from_previous)}` }));
      }
      // conversion from the previous step, between the bars
      const ax = m.l + slot * i;
      g.append(s('text', { x: ax, y: m.t + H - 8, 'text-anchor': 'middle', class: 'bar-pct', text: `→ ${pct(st.conversion_from_previous)}` }));
    }
    g.append(s('text', { x: x + bw / 2, y: m.t + H + 18, 'text-anchor': 'middle', class: 'step-label', text: `${i + 1}. ${truncate(stepName(st, i), 22)}` }));
    if (i > 0 && st.median_conversion_time !== null) g.append(s('text', { x: x + bw / 2, y: m.t + H + 34, 'text-anchor': 'middle', text: `median ${dur(st.median_conversion_time)}` }));
  });
  return g;
}
function truncate(t, n) { t = String(t); return t.length > n ? t.slice(0, n - 1) + '…' : t; }

function breakdownBars(res, onStep) {
  const bds = res.breakdowns.slice(0, 10);
  const n = res.steps.length;
  const width = Math.max(640, Math.min(1100, n * 190));
  const height = 280;
  const m = { l: 44, r: 8, t: 16, b: 30 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const slot = W / n;
  const gw = slot * 0.8;
  const bw = gw / bds.length;
  const Y = (v) => m.t + H - v * H;
  const g = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, 'data-testid': 'breakdown-chart', role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const y = m.t + (H * i) / 4;
    g.append(s('line', { x1: m.l, x2: m.l + W, y1: y, y2: y, stroke: '#eef0f3' }));
    g.append(s('text', { x: m.l - 8, y: y + 4, 'text-anchor': 'end', text: `${100 - i * 25}%` }));
  }
  for (let i = 0; i < n; i++) {
    bds.forEach((b, k) => {
      const st = b.steps[i];
      const v = st.conversion_from_first || 0;
      const x = m.l + slot * i + (slot - gw) / 2 + k * bw;
      g.append(s('rect', { x: x + 1, y: Y(v), width: Math.max(1, bw - 2), height: Math.max(1, H - (Y(v) - m.t)), fill: PALETTE[k % PALETTE.length], rx: 2, class: 'bar', 'data-testid': 'bd-bar', onclick: () => onStep(i, b) },
        s('title', { text: `${valueText(b.breakdown_value)} · ${stepName(st, i)}: ${fmtInt(st.count)} (${pct(v)})` })));
    });
    g.append(s('text', { x: m.l + slot * i + slot / 2, y: m.t + H + 18, 'text-anchor': 'middle', class: 'step-label', text: `${i + 1}. ${truncate(stepName(res.steps[i], i), 22)}` }));
  }
  return g;
}

async function renderFunnel(spec) {
  const q = Object.assign({ kind: 'funnel' }, spec);
  const res = await query(q);
  const steps = res.steps;
  const first = steps[0], last = steps[steps.length - 1];
  let big = null;
  for (let i = 1; i < steps.length; i++) {
    const lost = 1 - steps[i].conversion_from_previous;
    if (!big || lost > big.lost) big = { i, lost, n: steps[i].dropped };
  }
  const ci = last.conversion_from_first_interval;
  const personsFor = (step, b) => openPersons({
    title: step > 0 ? `Reached step ${step}: ${stepName(steps[step - 1], step - 1)}` : `Dropped before step ${-step}: ${stepName(steps[-step - 1], -step - 1)}`,
    sub: b ? `${spec.breakdown.property} = ${valueText(b.breakdown_value)}` : '',
    spec: Object.assign({}, spec, { kind: 'funnel_persons', persons_for: { step } }, b ? { breakdown_value: b.breakdown_value } : {}),
  });
  const kpis = h('div', { class: 'kpis' },
    kpi('Entered the funnel', fmtInt(first.count), `people who did ${stepName(first, 0)}`),
    kpi('Completed', fmtInt(last.count), `reached ${stepName(last, steps.length - 1)}`, 'kpi-completed'),
    kpi('Overall conversion', pct(last.conversion_from_first), ci ? `95% CI ${pct(ci[0])} – ${pct(ci[1])}` : ''),
    big ? kpi('Largest drop', pct(big.lost), `${fmtInt(big.n)} lost at step ${big.i} → ${big.i + 1}`) : kpi('Largest drop', '–', ''));
  const chart = h('div', { class: 'panel' },
    h('div', { class: 'panel-title' }, h('h3', { text: 'Conversion funnel' }), h('span', { class: 'muted small', text: 'Click a bar to see who reached a step, the red part to see who dropped · whiskers: 95% Wilson intervals' })),
    funnelBars(steps, (i) => personsFor(i + 1), (i) => personsFor(-(i + 1))));
  const table = h('table', { class: 'data', 'data-testid': 'steps-table' },
    h('thead', {}, h('tr', {}, ['Step', 'People', 'From first (95% CI)', 'From previous (95% CI)', 'Dropped', 'In progress', 'Median time', 'Average time'].map((t, i) => h('th', { class: i ? 'r' : '', text: t })))),
    h('tbody', {}, steps.map((st, i) => h('tr', {},
      h('td', {}, h('b', { text: `${i + 1}. ` }), stepName(st, i)),
      h('td', { class: 'r', text: fmtInt(st.count) }),
      h('td', { class: 'r' }, pct(st.conversion_from_first), ' ', h('span', { class: 'muted small', text: ci95(st.conversion_from_first_interval) })),
      h('td', { class: 'r' }, pct(st.conversion_from_previous), ' ', h('span', { class: 'muted small', text: ci95(st.conversion_from_previous_interval) })),
      h('td', { class: 'r' }, i && st.dropped ? h('a', { href: '#', onclick: (e) => { e.preventDefault(); personsFor(-(i + 1)); }, text: fmtInt(st.dropped) }) : fmtInt(st.dropped)),
      h('td', { class: 'r', text: fmtInt(st.in_progress) }),
      h('td', { class: 'r', text: i ? dur(st.median_conversion_time) : '' }),
      h('td', { class: 'r', text: i ? dur(st.average_conversion_time) : '' })))));
  const out = [kpis, chart];
  if (res.breakdowns && res.breakdowns.length) {
    const bds = res.breakdowns.slice(0, 10);
    out.push(h('div', { class: 'panel' },
      h('div', { class: 'panel-title' }, h('h3', { text: `By ${spec.breakdown.property}` }),
        h('div', { class: 'legend' }, bds.map((b, k) => h('span', {}, h('span', { class: 'sw', style: `background:${PALETTE[k % PALETTE.length]}` }), valueText(b.breakdown_value))))),
      breakdownBars(res, (i, b) => personsFor(i + 1, b)),
      breakdownTable(res, personsFor)));
  }
  out.push(h('div', { class: 'panel' }, table));
  if (res.conversion_curve && res.conversion_curve.length) out.push(curvePanel(res.conversion_curve, last));
  return h('div', { 'data-testid': 'funnel-view' }, out);
}
function ci95(iv) { return iv ? `${pct(iv[0])}–${pct(iv[1])}` : ''; }
function kpi(label, value, sub, testid) {
  return h('div', { class: 'kpi', 'data-testid': testid }, h('div', { class: 'label', text: label }), h('div', { class: 'value', text: value }), h('div', { class: 'sub', text: sub }));
}
function breakdownTable(res, personsFor) {
  const n = res.steps.length;
  return h('table', { class: 'data', 'data-testid': 'breakdown-table', style: 'margin-top:12px' },
    h('thead', {}, h('tr', {}, h('th', { text: 'Value' }), res.steps.map((st, i) => h('th', { class: 'r', text: `${i + 1}. ${truncate(stepName(st, i), 16)}` })), h('th', { class: 'r', text: 'Conversion (95% CI)' }))),
    h('tbody', {}, res.breakdowns.map((b, k) => {
      const last = b.steps[n - 1];
      return h('tr', {},
        h('td', {}, h('span', { class: 'sw', style: `display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;background:${k < 10 ? PALETTE[k % PALETTE.length] : '#d0d5dd'}` }), valueText(b.breakdown_value)),
        b.steps.map((st, i) => h('td', { class: 'r' }, h('a', { href: '#', onclick: (e) => { e.preventDefault(); personsFor(i + 1, b); }, text: fmtInt(st.count) }), i ? h('span', { class: 'muted small', text: ` ${pct(st.conversion_from_previous, 0)}` }) : null)),
        h('td', { class: 'r' }, h('b', { text: pct(last.conversion_from_first) }), ' ', h('span', { class: 'muted small', text: ci95(last.conversion_from_first_interval) })));
    })));
}
function curvePanel(curve, last) {
  const pts = [[0, 0, '']].concat(curve.map((c) => [c.seconds, c.converted, `${dur(c.seconds)} after entry: ${pct(c.converted)} converted (${fmtInt(c.at_risk)} at risk)`]));
  const maxX = pts[pts.length - 1][0];
  const ym = Math.min(1, niceMax(Math.max(...pts.map((p) => p[1])) * 1.1));
  return h('div', { class: 'panel' },
    h('div', { class: 'panel-title' }, h('h3', { text: 'Conversion since entry' }), h('span', { class: 'muted small', text: `Kaplan–Meier: share who reached ${stepName(last, 0)}, by time since the first step; people still inside their window are censored` })),
    lineChart({ series: [{ name: 'converted', color: PALETTE[0], points: pts }], step: true, height: 220, xTicks: durationTicks(maxX), xFmt: dur, yMax: ym, yFmt: (y) => pct(y, ym < 0.1 ? 1 : 0), testid: 'curve-chart' }));
}

// ---------------------------------------------------------------- time to convert
async function renderTtc(spec) {
  const last = spec.steps.length - 1;
  if (last < 1) return h('div', { class: 'empty', text: 'Time to convert needs at least two steps.' });
  const to = S.opt.ttcTo === null || S.opt.ttcTo > last ? last : S.opt.ttcTo;
  const from = Math.min(S.opt.ttcFrom || 0, to - 1);
  const res = await query(Object.assign({ kind: 'time_to_convert', from_step: from, to_step: to }, spec));
  const bins = res.bins || [];
  const kp = h('div', { class: 'kpis' },
    kpi('Converted', fmtInt(res.converted), `from step ${from + 1} to step ${to + 1}`),
    kpi('Average time', dur(res.average_conversion_time), ''),
    kpi('Window', `${spec.window.value} ${spec.window.unit}${spec.window.value === 1 ? '' : 's'}`, 'conversion window'),
    kpi('Bins', String(Math.max(0, bins.length - 1)), ''));
  if (!res.converted || bins.length < 2) return h('div', {}, kp, h('div', { class: 'panel empty', text: 'Nobody converted in this range.' }));
  const width = 900, height = 300, m = { l: 48, r: 16, t: 20, b: 34 };
  const W = width - m.l - m.r, H = height - m.t - m.b;
  const ys = bins.slice(0, -1).map((b) => b[1]);
  const tick = niceStep(Math.max(...ys) / 4);
  const ym = Math.max(tick, Math.ceil(Math.max(...ys) / tick) * tick);
  const bw = W / ys.length;
  const g = s('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, 'data-testid': 'ttc-chart', role: 'img' });
  for (let v = 0; v <= ym + 1e-9; v += tick) {
    const y = m.t + H - (v / ym) * H;
    g.append(s('line', { x1: m.l, x2: m.l + W, y1: y, y2: y, stroke: '#eef0f3' }));
    g.append(s('text', { x: m.l - 8, y: y + 4, 'text-anchor': 'end', text: fmtInt(v) }));
  }
  ys.forEach((v, i) => {
    const bh = (v / ym) * H;
    const x = m.l + i * bw;
    g.append(s('rect', { x: x + 2, y: m.t + H - bh, width: Math.max(1, bw - 4), height: Math.max(0, bh), rx: 2, fill: PALETTE[0], 'data-testid': 'ttc-bar' }, s('title', { text: `${dur(bins[i][0])} – ${dur(bins[i + 1][0])}: ${fmtInt(v)} people` })));
    if (v > 0 && ys.length <= 30) g.append(s('text', { x: x + bw / 2, y: m.t + H - bh - 5, 'text-anchor': 'middle', class: 'bar-pct', text: fmtInt(v) }));
    const every = Math.ceil(ys.length / 10);
    if (i % every === 0) g.append(s('text', { x, y: m.t + H + 18, 'text-anchor': 'middle', text: dur(bins[i][0]) }));
  });
  g.append(s('text', { x: m.l + W, y: m.t + H + 18, 'text-anchor': 'end', text: dur(bins[bins.length - 1][0]) }));
  g.append(s('line', { x1: m.l, x2: m.l + W, y1: m.t + H, y2: m.t + H, stroke: '#d0d5dd' }));
  if (res.average_conversion_time !== null) {
    const x0 = bins[0][0], x1 = bins[bins.length - 1][0];
    const ax = m.l + ((res.average_conversion_time - x0) / (x1 - x0 || 1)) * W;
    g.append(s('line', { x1: ax, x2: ax, y1: m.t, y2: m.t + H, stroke: '#f59e0b', 'stroke-dasharray': '4 3', 'stroke-width': 1.5 }));
    g.append(s('text', { x: ax + 4, y: m.t + 10, text: `average ${dur(res.average_conversion_time)}` }));
  }
  return h('div', {}, kp, h('div', { class: 'panel' }, h('div', { class: 'panel-title' }, h('h3', { text: 'Time to convert' }), h('span', { class: 'muted small', text: 'people by time between the two steps' })), g));
}

// ---------------------------------------------------------------- trends
async function renderTrends(spec) {
  const res = await query(Object.assign({ kind: 'funnel_trends', interval: S.opt.interval }, spec));
  const series = res.series && res.series.length
    ? res.series.slice(0, 10).map((x, k) => ({ name: valueText(x.breakdown_value), color: PALETTE[k % PALETTE.length], rows: x.rows }))
    : [{ name: 'conversion', color: PALETTE[0], rows: res.rows || [] }];
  const rows = series[0].rows;
  if (!rows.length) return h('div', { class: 'panel empty', text: 'No data in this date range.' });
  const fmtDate = (ms) => new Date(ms).toLocaleDateString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC' });
  const sers = series.map((se) => ({ name: se.name, color: se.color, points: se.rows.map((r) => [r.timestamp_ms, r.conversion_rate, `${se.name === 'conversion' ? '' : se.name + ' · '}${r.timestamp}: ${r.conversion_rate}% (${fmtInt(r.reached_to_step_count)} of ${fmtInt(r.reached_from_step_count)})`]) }));
  const xs = rows.map((r) => r.timestamp_ms);
  const every = Math.ceil(xs.length / 8);
  const chart = lineChart({ series: sers, height: 280, xTicks: xs.filter((_, i) => i % every === 0), xFmt: fmtDate, yFmt: (y) => `${num(y, 1)}%`, testid: 'trends-chart' });
  const total = rows.reduce((a, r) => [a[0] + r.reached_from_step_count, a[1] + r.reached_to_step_count], [0, 0]);
  return h('div', {},
    h('div', { class: 'kpis' },
      kpi('Entries', fmtInt(total[0]), `over ${rows.length} ${S.opt.interval}s (a person may enter in several)`),
      kpi('Converted', fmtInt(total[1]), ''),
      kpi('Mean conversion', pct(total[0] ? total[1] / total[0] : 0), 'of those who entered'),
      kpi('Latest', `${rows[rows.length - 1].conversion_rate}%`, `${rows[rows.length - 1].timestamp} (may still be in progress)`)),
    h('div', { class: 'panel' },
      h('div', { class: 'panel-title' }, h('h3', { text: 'Conversion rate over time' }),
        series.length > 1 ? h('div', { class: 'legend' }, series.map((se) => h('span', {}, h('span', { class: 'sw', style: `background:${se.color}` }), se.name))) : h('span', { class: 'muted small', text: 'by the period people entered the funnel' })),
      chart));
}

// ---------------------------------------------------------------- correlation
const CORR_COLS = [
  ['event', 'Signal', false], ['correlation_type', 'Effect', false], ['success_count', 'Converted', true], ['failure_count', 'Dropped', true],
  ['odds_ratio', 'Odds ratio (95% CI)', true], ['adjusted_odds_ratio', 'Adjusted OR', true], ['p_value', 'p', true], ['q_value', 'q', true],
];
function signalLabel(name) {
  const parts = String(name).split('::');
  return h('span', { class: 'signal' }, parts.map((p, i) => [i ? h('span', { class: 'sep', text: i === parts.length - 1 && parts.length > 1 ? '=' : '·' }) : null, p]));
}
async function renderCorrelation(spec) {
  const o = S.opt;
  const c = { type: o.corr, top: 100 };
  if (o.corr === 'properties') c.names = ['$all'];
  if (o.corr === 'event_with_properties') c.event_names = [o.corrEvent || spec.steps[0].event];
  const res = await query(Object.assign({ kind: 'correlation', correlation: c }, spec));
  let rows = res.events.map((r) => Object.assign({ low: false }, r));
  if (o.showLow) rows = rows.concat((res.low_support || []).map((r) => Object.assign({ low: true }, r)));
  const key = o.sort, dir = o.dir;
  const sortVal = (r) => {
    const v = r[key];
    if (key === 'odds_ratio' || key === 'adjusted_odds_ratio') return v === null || v === undefined ? -Infinity : Math.log(v);
    return v === null || v === undefined ? (dir > 0 ? Infinity : -Infinity) : v;
  };
  rows.sort((a, b) => {
    const x = sortVal(a), y = sortVal(b);
    if (typeof x === 'string') return dir * x.localeCompare(y);
    return dir * (x - y);
  });
  const maxLog = Math.max(1, ...rows.map((r) => Math.abs(Math.log(r.odds_ratio || 1))));
  const head = h('tr', {}, CORR_COLS.map(([k, t, numeric]) => h('th', {
    class: `sortable ${numeric ? 'r' : ''} ${k === key ? 'sorted' : ''}`, 'data-col': k,
    onclick: () => { if (o.sort === k) o.dir = -o.dir; else { o.sort = k; o.dir = ['p_value', 'q_value', 'event'].includes(k) ? 1 : -1; } run(); },
  }, t, k === key ? (dir > 0 ? ' ▲' : ' ▼') : '')));
  const body = rows.map((r) => {
    const good = r.correlation_type === 'success';
    const w = Math.round((Math.abs(Math.log(r.odds_ratio || 1)) / maxLog) * 60);
    return h('tr', { class: `clickable ${r.low ? 'dim' : ''}`, 'data-testid': 'corr-row', 'data-event': r.event, onclick: () => corrPersons(spec, r, o.corr) },
      h('td', {}, signalLabel(r.event), r.low ? h('span', { class: 'badge warn', style: 'margin-left:8px', text: 'low support' }) : null),
      h('td', {}, h('span', { class: `badge ${good ? 'good' : 'bad'}`, text: good ? '▲ converts more' : '▼ converts less' })),
      h('td', { class: 'r' }, fmtInt(r.success_count), h('span', { class: 'muted small', text: ` / ${fmtInt(r.success_total)}` })),
      h('td', { class: 'r' }, fmtInt(r.failure_count), h('span', { class: 'muted small', text: ` / ${fmtInt(r.failure_total)}` })),
      h('td', { class: 'r' }, h('span', { class: 'orbar', style: `width:${w}px;background:${good ? 'var(--good)' : 'var(--bad)'}` }), h('b', { text: num(r.odds_ratio) }), h('span', { class: 'muted small', text: r.odds_ratio_interval ? ` ${num(r.odds_ratio_interval[0])}–${num(r.odds_ratio_interval[1])}` : '' })),
      h('td', { class: 'r', text: num(r.adjusted_odds_ratio) }),
      h('td', { class: 'r', text: pval(r.p_value) }),
      h('td', { class: 'r' }, r.q_value !== null && r.q_value < 0.05 ? h('b', { text: pval(r.q_value) }) : pval(r.q_value)));
  });
  const what = { events: 'events people did', properties: 'person properties', event_with_properties: 'event properties' }[o.corr];
  return h('div', {},
    h('div', { class: 'kpis' },
      kpi('Converted', fmtInt(res.success_total), `reached step ${res.to_step + 1}`),
      kpi('Dropped', fmtInt(res.failure_total), `after step ${res.from_step + 1}`),
      kpi('Signals tested', fmtInt(res.rows_tested), `${(res.low_support || []).length} with low support`),
      kpi('Significant (q < 0.05)', fmtInt(res.events.filter((r) => r.q_value !== null && r.q_value < 0.05).length), 'after Benjamini–Hochberg')),
    h('div', { class: 'panel' },
      h('div', { class: 'panel-title' }, h('h3', { text: `Which ${what} go with converting` }), h('span', { class: 'muted small', text: 'odds ratio > 1: converts more often · click a row to see the people · click a header to sort' })),
      res.skewed ? h('div', { class: 'error', style: 'background:var(--warn-soft);border-color:#fedf89;color:var(--warn)', text: 'The converted and dropped groups are very unequal in size; read the odds ratios with care.' }) : null,
      rows.length ? h('table', { class: 'data', 'data-testid': 'corr-table' }, h('thead', {}, head), h('tbody', {}, body)) : h('div', { class: 'empty', text: 'No signals with enough support.' })));
}
function corrPersons(spec, r, type, fromStep) {
  const pf = {};
  if (type === 'properties' || type === 'person_property') pf.property = r.event.replace(/^\$person::/, '');
  else if (type === 'event_with_properties') {
    const [ev, k, ...v] = r.event.split('::');
    pf.event = ev;
    pf.properties = [{ key: k, value: v.join('::'), type: 'event', operator: 'exact' }];
  } else pf.event = r.event;
  const base = Object.assign({}, spec, { kind: 'correlation_persons' });
  if (fromStep !== undefined) base.from_step = fromStep;
  openPersons({
    title: r.event,
    sub: `${r.correlation_type === 'success' ? 'converts more' : 'converts less'} · odds ratio ${num(r.odds_ratio)}`,
    tabs: [['Converted', true, r.success_count], ['Dropped', false, r.failure_count]],
    spec: (converted) => Object.assign({}, base, { persons_for: Object.assign({}, pf, { converted }) }),
  });
}

// ---------------------------------------------------------------- paths
function pathList(rows, bad) {
  if (!rows || !rows.length) return h('div', { class: 'muted', text: 'none' });
  const max = Math.max(...rows.map((r) => r.share));
  return h('div', {}, rows.map((r) => h('div', { class: 'path-row', 'data-testid': 'path-row' },
    h('div', { class: 'path-seq' }, r.path.length ? r.path.map((p, i) => [i ? h('span', { class: 'arrow', text: '→' }) : null, h('span', { class: `chip ${p === '(no further events)' ? 'none' : ''}`, text: p })]) : h('span', { class: 'chip none', text: 'straight to the next step' })),
    h('div', { class: 'share' }, h('div', { text: pct(r.share) }), h('div', { class: 'muted small', text: fmtInt(r.actors) }), h('div', { class: `sharebar ${bad ? 'bad' : ''}`, style: `width:${Math.round((r.share / max) * 56)}px` })))));
}
function pathsPanels(p, steps) {
  const a = p.after_step;
  const nm = (i) => (steps[i] ? steps[i].event : `step ${i + 1}`);
  return [
    h('p', { class: 'headline' }, `After `, h('b', { text: `step ${a + 1} (${nm(a)})` }), `: ${fmtInt(p.dropped)} people dropped, ${fmtInt(p.converted)} went on to `, h('b', { text: nm(a + 1) }), '.'),
    h('div', { class: 'grid2' },
      h('div', { class: 'panel' }, h('h3', { text: 'Dropped: what they did next' }), pathList(p.dropped_next, true)),
      h('div', { class: 'panel' }, h('h3', { text: 'Converted: what they did next' }), pathList(p.converted_next))),
    h('div', { class: 'grid2' },
      h('div', { class: 'panel' }, h('h3', { text: 'Dropped: their paths' }), pathList(p.dropped_sequences, true)),
      h('div', { class: 'panel' }, h('h3', { text: 'Converted: what they did in between' }), pathList(p.between_sequences))),
  ];
}
async function renderPaths(spec) {
  if (spec.steps.length < 2) return h('div', { class: 'empty', text: 'Paths need at least two steps.' });
  const paths = { depth: 3, top: 10 };
  if (S.opt.after !== '' && S.opt.after !== null && Number(S.opt.after) < spec.steps.length - 1) paths.after_step = Number(S.opt.after);
  const res = await query(Object.assign({ kind: 'paths', paths }, spec));
  return h('div', { 'data-testid': 'paths-view' }, pathsPanels(res, spec.steps));
}

// ---------------------------------------------------------------- diagnosis
async function renderDiagnosis(spec) {
  if (spec.steps.length < 2) return h('div', { class: 'empty', text: 'A diagnosis needs at least two steps.' });
  const res = await query(Object.assign({ kind: 'diagnosis' }, spec));
  const steps = res.steps;
  const [a, b] = res.largest_drop || [0, 1];
  const lost = steps[b] ? steps[a].count - steps[b].count : 0;
  const last = steps[steps.length - 1];
  const headline = h('div', { class: 'panel' },
    h('p', { class: 'headline' }, `Of `, h('b', { text: fmtInt(steps[0].count) }), ` people who entered, `, h('b', { text: `${fmtInt(last.count)} (${pct(last.conversion_from_first)})` }), ` completed the funnel. The largest drop is between `,
      h('b', { text: `step ${a + 1} (${steps[a].name})` }), ` and `, h('b', { text: `step ${b + 1} (${steps[b].name})` }), `: ${fmtInt(lost)} of ${fmtInt(steps[a].count)} (${pct(steps[a].count ? lost / steps[a].count : 0)}) did not continue.`),
    h('div', { class: 'muted small', text: `${fmtInt(res.hypotheses)} hypotheses tested together; findings kept at q < ${res.q_threshold} (Benjamini–Hochberg).` }));
  const drivers = res.drivers.map((d) => {
    const r = d.row;
    const good = r.correlation_type === 'success';
    const isProp = d.kind !== 'event';
    const name = r.event.replace(/^\$person::/, '');
    const [k, ...v] = name.split('::');
    const who = isProp ? [`People with `, h('b', { text: `${k} = ${v.join('::')}` })] : [`People who did `, h('b', { text: name })];
    const factor = good ? `${num(r.odds_ratio)}× the odds` : `${num(1 / r.odds_ratio)}× lower odds`;
    return h('div', { class: 'finding clickable', 'data-testid': 'driver', style: 'cursor:pointer', onclick: () => corrPersons(spec, r, isProp ? 'person_property' : 'events', d.from_step) },
      h('div', { class: `icon ${good ? 'good' : 'bad'}`, text: good ? '▲' : '▼' }),
      h('div', { class: 'text' },
        h('div', {}, who, isProp ? '' : ` after reaching step ${d.from_step + 1}`, ` had `, h('b', { text: factor }), ` of completing the funnel.`),
        h('div', { class: 'meta', text: `odds ratio ${num(r.odds_ratio)} (95% CI ${num(r.odds_ratio_interval[0])}–${num(r.odds_ratio_interval[1])})${r.adjusted_odds_ratio ? `, adjusted ${num(r.adjusted_odds_ratio)}` : ''} · ${fmtInt(r.success_count)} of ${fmtInt(r.success_total)} who converted, ${fmtInt(r.failure_count)} of ${fmtInt(r.failure_total)} who did not · q = ${pval(r.q_value)}` })));
  });
  const segments = res.segments.map((sg) => h('div', { class: 'finding', 'data-testid': 'segment' },
    h('div', { class: `icon ${sg.direction === 'lower' ? 'bad' : 'good'}`, text: sg.direction === 'lower' ? '▼' : '▲' }),
    h('div', { class: 'text' },
      h('div', {}, h('b', { text: `${sg.property} = ${sg.value}` }), `: ${pct(sg.rate)} of ${fmtInt(sg.entered)} converted, against ${pct(sg.rest_rate)} for everyone else (${sg.direction}).`),
      h('div', { class: 'meta', text: `z = ${num(sg.z)} · p = ${pval(sg.p_value)} · q = ${pval(sg.q_value)}` }))));
  return h('div', { 'data-testid': 'diagnosis-view' },
    headline,
    h('div', { class: 'grid2' },
      h('div', { class: 'panel' }, h('h3', { text: 'What goes with converting' }), drivers.length ? drivers : h('div', { class: 'muted', text: 'No driver passed the threshold.' })),
      h('div', { class: 'panel' }, h('h3', { text: 'Segments that convert differently' }), segments.length ? segments : h('div', { class: 'muted', text: 'No segment differs significantly.' }))),
    res.paths ? pathsPanels(res.paths, spec.steps) : null);
}

const VIEW_RENDER = { funnel: renderFunnel, ttc: renderTtc, trends: renderTrends, correlation: renderCorrelation, paths: renderPaths, diagnosis: renderDiagnosis };

// ---------------------------------------------------------------- persons drawer
let drawerSeq = 0;
function closeDrawer() { $('drawer').classList.add('hidden'); drawerSeq++; }
function openPersons(o) {
  const my = ++drawerSeq;
  $('drawer').classList.remove('hidden');
  $('drawer-title').textContent = o.title;
  $('drawer-sub').textContent = o.sub || '';
  const body = $('drawer-body');
  let converted = o.tabs ? o.tabs[0][1] : null;
  const nSteps = (typeof o.spec === 'function' ? o.spec(true) : o.spec).steps.length;
  const list = h('div', { 'data-testid': 'persons' });
  const more = h('button', { class: 'btn small wide hidden', type: 'button', text: 'Load more' });
  const info = h('div', { class: 'muted small', style: 'margin:8px 0' });
  let offset = 0;
  const load = async () => {
    const spec = Object.assign({}, typeof o.spec === 'function' ? o.spec(converted) : o.spec, { limit: 50, offset });
    more.classList.add('hidden');
    const spin = h('div', { class: 'loading' }, h('span', { class: 'spinner' }), 'Loading people…');
    list.append(spin);
    try {
      const r = await query(spec);
      if (my !== drawerSeq) return;
      spin.remove();
      info.textContent = `${fmtInt(r.total)} ${r.total === 1 ? 'person' : 'people'}`;
      if (!r.persons.length && !offset) list.append(h('div', { class: 'empty', text: 'Nobody here.' }));
      for (const p of r.persons) {
        list.append(h('div', { class: 'person', 'data-testid': 'person', onclick: () => openTimeline(p, o, spec) },
          h('div', {}, h('div', { class: 'pid', text: p.id }), h('div', { class: 'dids', text: p.distinct_ids.length > 1 ? `also ${p.distinct_ids.filter((d) => d !== p.id).join(', ')}` : (p.matched_times && p.matched_times[0] ? new Date(p.matched_times[0]).toLocaleString() : '') })),
          h('div', { class: 'steps-dots', title: `furthest step ${p.furthest_step}` }, Array.from({ length: nSteps }, (_, i) => h('span', { class: i < p.furthest_step ? 'on' : '' })))));
      }
      offset = r.next_offset || 0;
      more.classList.toggle('hidden', !r.next_offset);
    } catch (e) {
      spin.remove();
      list.append(errorBox(e));
    }
  };
  more.onclick = load;
  const tabs = o.tabs ? seg(o.tabs.map(([t, v, n]) => [String(v), `${t} (${fmtInt(n)})`]), String(converted), (v) => {
    converted = v === 'true';
    tabs.querySelectorAll('button').forEach((b) => b.classList.toggle('on', b.dataset.value === v));
    list.replaceChildren(); offset = 0; load();
  }, 'persons-tabs') : null;
  body.replaceChildren(tabs, info, list, more);
  load();
}

async function openTimeline(p, back, spec) {
  const my = ++drawerSeq;
  const body = $('drawer-body');
  $('drawer-title').textContent = p.id;
  $('drawer-sub').textContent = p.distinct_ids.join(', ');
  const stepEvents = new Set(spec.steps.map((x) => x.event));
  const matched = new Set((p.matched_times || []).filter(Boolean).map((t) => Date.parse(t)));
  body.replaceChildren(h('button', { class: 'btn ghost small', type: 'button', text: '← Back to the list', onclick: () => openPersons(back) }), h('div', { class: 'loading' }, h('span', { class: 'spinner' }), 'Loading events…'));
  try {
    const r = await api(`/api/person_events?id=${encodeURIComponent(p.id)}&limit=1000`);
    if (my !== drawerSeq) return;
    const props = Object.entries(r.properties).filter(([k]) => !k.startsWith('$'));
    const ul = h('ul', { class: 'timeline', 'data-testid': 'timeline' });
    let day = '';
    for (const ev of r.events) {
      const d = new Date(ev.timestamp);
      const dl = d.toLocaleDateString('en-US', { weekday: 'short', month: 'short', day: 'numeric', year: 'numeric' });
      if (dl !== day) { day = dl; ul.append(h('li', { class: 'tl-day', text: dl })); }
      const isStep = matched.has(d.getTime()) && stepEvents.has(ev.event);
      const shown = ['$current_url', '$browser', 'plan', 'category', 'price', 'revenue'].filter((k) => k in ev.properties).map((k) => `${k}: ${valueText(ev.properties[k])}`);
      ul.append(h('li', { class: `tl-item ${isStep ? 'tl-step' : ''}`, 'data-testid': 'tl-event' },
        h('div', { class: 'tl-ev', text: ev.event + (isStep ? '  · funnel step' : '') }),
        h('div', { class: 'tl-time', text: d.toLocaleTimeString('en-US', { hour12: false }) + (ev.distinct_id !== r.id ? ` · as ${ev.distinct_id}` : '') }),
        shown.length ? h('div', { class: 'tl-props', text: shown.join(' · ') }) : null));
    }
    body.replaceChildren(
      h('button', { class: 'btn ghost small', type: 'button', text: '← Back to the list', onclick: () => openPersons(back) }),
      props.length ? h('dl', { class: 'kv' }, props.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: valueText(v) })])) : null,
      h('div', { class: 'muted small', text: `${fmtInt(r.total)} events${r.total > r.events.length ? `, first ${r.events.length} shown` : ''}; funnel steps highlighted` }),
      ul);
  } catch (e) {
    if (my !== drawerSeq) return;
    body.append(errorBox(e));
  }
}

// ---------------------------------------------------------------- start
async function loadPickers() {
  try {
    const [ev, props, pprops] = await Promise.all([
      api('/api/events?limit=1000'), api('/api/properties?limit=1000'), api('/api/properties?type=person&limit=1000'),
    ]);
    S.events = ev.results;
    $('dl-events').replaceChildren(...ev.results.map((x) => h('option', { value: x.name, label: `${fmtInt(x.count)} events` })));
    $('dl-props').replaceChildren(...props.results.map((x) => h('option', { value: x.name })));
    let pp = document.getElementById('dl-pprops');
    if (!pp) { pp = h('datalist', { id: 'dl-pprops' }); document.body.append(pp); }
    pp.replaceChildren(...pprops.results.map((x) => h('option', { value: x.name })));
    const total = ev.results.reduce((a, x) => a + x.count, 0);
    $('data-info').textContent = `${fmtInt(total)} events · ${ev.results.length} event names`;
  } catch (_) { /* the query shows any error */ }
}
function startApp() {
  $('signin-view').classList.add('hidden');
  $('app-view').classList.remove('hidden');
  $('signout').classList.remove('hidden');
  renderBuilder();
  loadPickers();
  run();
}
function init() {
  readHash();
  bindBuilder();
  $('signin-form').addEventListener('submit', signIn);
  $('signout').onclick = () => signOut();
  S.key = storedKey();
  if (S.key) startApp();
  else showSignIn();
}
init();
