// The shoal dashboard: polls /api/dashboard/* and redraws. Plain DOM, no
// framework. Everything shown comes from the pool (names in node records,
// deployment names), so it is only ever set as text, never as markup.
'use strict';

(function () {
  const KEY = 'shoal.dashboard.key';
  let refreshMs = 2000;
  let timer = null;

  // A key given once as ?key= is kept for this tab and dropped from the
  // address bar (and from history), so it is not bookmarked or shared.
  const params = new URLSearchParams(location.search);
  if (params.has('key')) {
    sessionStorage.setItem(KEY, params.get('key'));
    params.delete('key');
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
  }

  class AuthError extends Error {}

  async function get(path) {
    const headers = {};
    const key = sessionStorage.getItem(KEY);
    if (key) headers['Authorization'] = 'Bearer ' + key;
    const r = await fetch('/api/dashboard/' + path, { headers, cache: 'no-store' });
    if (r.status === 401) throw new AuthError('API key needed');
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r.json();
  }

  // el builds an element; attrs set properties or data-* attributes;
  // children are nodes or strings (as text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k.startsWith('data-')) e.setAttribute(k, String(v));
      else if (k === 'class') e.className = v;
      else e[k] = v;
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const badge = (text, cls) => el('span', { class: 'badge ' + (cls || text) }, text);
  const short = (id) => (id && id.length > 12 ? id.slice(0, 12) : id || '');
  function bytes(n) {
    if (!n) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + u[i];
  }
  const gib = (n) => (n / (1 << 30)).toFixed(1);
  function credits(micro) {
    return (micro / 1e6).toFixed(2);
  }

  function bar(frac, label, cls) {
    const fill = el('span');
    fill.style.width = Math.max(0, Math.min(1, frac || 0)) * 100 + '%';
    return el('div', { class: 'bar ' + (cls || ''), title: label }, fill, el('em', {}, label));
  }

  // fill replaces a table's rows; an empty table is hidden behind its
  // "none" note.
  function fill(tbody, rows, empty) {
    tbody.replaceChildren(...rows);
    if (empty) {
      empty.hidden = rows.length > 0;
      tbody.closest('table').hidden = rows.length === 0;
    }
  }

  function renderSummary(s) {
    document.getElementById('whoami').textContent =
      (s.name || short(s.peer_id)) + ' · pool ' + s.pool_id + (s.version ? ' · ' + s.version : '');
    const card = (label, value, field) =>
      el('div', { class: 'card', 'data-field': field }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
    document.getElementById('summary').replaceChildren(
      card('Members alive', s.alive + ' / ' + s.members, 'members'),
      card('GPUs', String(s.gpus), 'gpus'),
      card('VRAM in use', gib(s.vram_used_bytes) + ' / ' + gib(s.vram_total_bytes) + ' GiB', 'vram'),
      card('Deployments', String(s.deployments), 'deployments'),
    );
    if (s.refresh_ms > 0 && s.refresh_ms !== refreshMs) {
      refreshMs = s.refresh_ms;
    }
    document.getElementById('refresh').textContent = String(refreshMs / 1000);
  }

  function gpuRow(g) {
    const total = g.vram_total_bytes || 0;
    const used = bar(total ? g.vram_used_bytes / total : 0,
      'used ' + gib(g.vram_used_bytes) + ' / ' + gib(total) + ' GiB');
    const rows = [used];
    if (g.reserved) {
      rows.push(bar(g.reserved_milli / 1000,
        'reserved ' + (g.reserved_milli / 10).toFixed(0) + '% · ' + gib(g.reserved_vram_bytes) + ' GiB', 'reserved'));
    }
    return el('div', { class: 'gpu', 'data-uuid': g.uuid, 'data-source': g.source },
      el('span', { class: 'name', title: g.uuid }, g.name),
      el('div', { class: 'bars' }, rows),
      el('span', { title: 'utilisation' }, g.source === 'declared' ? '–' : g.utilization_pct + '%'),
      badge(g.source));
  }

  function renderNodes(nodes) {
    const rows = nodes.map((n) => {
      const host = [];
      if (n.cpu_cores) host.push(n.cpu_cores + ' CPU');
      if (n.cpu_load1) host.push('load ' + n.cpu_load1.toFixed(2));
      if (n.memory_total_bytes) host.push(bytes(n.memory_total_bytes) + ' RAM');
      return el('tr', { 'data-peer': n.peer_id, 'data-state': n.state },
        el('td', {},
          el('div', {}, n.name || short(n.peer_id), ' ', n.self ? badge('this node', 'self') : null),
          el('div', { class: 'mono muted', title: n.peer_id }, short(n.peer_id))),
        el('td', {}, badge(n.state)),
        el('td', { class: 'muted' }, host.join(' · ')),
        el('td', {}, n.gpus.length ? n.gpus.map(gpuRow) : el('span', { class: 'muted' }, 'no GPU')),
        el('td', {}, String(n.models)));
    });
    fill(document.querySelector('#nodes tbody'), rows);
  }

  function renderDeployments(deps) {
    const rows = [];
    for (const d of deps) {
      const ready = d.replicas.filter((r) => r.state === 'ready').length;
      rows.push(el('tr', { class: 'deployment', 'data-deployment': d.name, 'data-state': d.state },
        el('td', {}, el('strong', {}, d.name), d.template && d.template !== d.name ? el('div', { class: 'muted' }, d.template) : null),
        el('td', {}, badge(d.state), ' ', badge(d.warmth)),
        el('td', {}, ready + ' ready / ' + d.desired + (d.scale_to_zero ? ' (scales to zero)' : '')),
        el('td', { class: 'muted' }, d.coordinator ? 'coordinator ' + short(d.coordinator) : ''),
        el('td', {}),
        el('td', { 'data-field': 'in_flight' }, d.in_flight + (d.waiting ? ' · ' + d.waiting + ' waiting' : '')),
        el('td', { class: 'muted' }, d.reason || '')));
      for (const r of d.replicas) {
        rows.push(el('tr', { class: 'replica', 'data-deployment': d.name, 'data-replica': r.id },
          el('td', { class: 'mono', title: r.id }, r.id.length > 28 ? '…' + r.id.slice(-27) : r.id),
          el('td', { 'data-field': 'state' }, badge(r.state)),
          el('td', {}),
          el('td', { title: r.node }, r.node_name || short(r.node)),
          el('td', { class: 'mono' }, (r.gpus || []).map(short).join(', ')),
          el('td', {}, String(r.in_flight)),
          el('td', { class: 'muted' }, r.reason || '')));
      }
    }
    fill(document.querySelector('#deployments tbody'), rows, document.getElementById('deployments-empty'));
  }

  function renderWeights(w) {
    const models = w.models.map((m) =>
      el('tr', { 'data-model': m.id, 'data-holders': m.holders.length },
        el('td', {}, m.name || '(unnamed)'),
        el('td', { class: 'mono', title: m.id }, short(m.id)),
        el('td', {}, bytes(m.size_bytes)),
        el('td', {}, m.holders.map((h) =>
          el('span', { class: 'holder', title: h.peer_id }, badge((h.name || short(h.peer_id)) + (h.state !== 'complete' ? ' (' + h.state + ')' : ''), h.state))))));
    fill(document.querySelector('#models tbody'), models, document.getElementById('models-empty'));
    const transfers = w.transfers.map((t) =>
      el('tr', { 'data-node': t.node },
        el('td', { title: t.node }, t.node_name || short(t.node)),
        el('td', {}, t.model),
        el('td', {}, t.size_bytes ? bytes(t.size_bytes) : ''),
        el('td', { class: 'muted' }, t.for)));
    fill(document.querySelector('#transfers tbody'), transfers, document.getElementById('transfers-empty'));
  }

  function renderCredits(c) {
    const box = document.getElementById('credits');
    if (!c.available) {
      box.replaceChildren(el('p', { class: 'muted', 'data-available': 'false' }, 'Not available' + (c.reason ? ': ' + c.reason : '') + '.'));
      return;
    }
    const r = c.report;
    const head = el('p', { 'data-available': 'true' },
      r.receipts + ' receipts, ' + r.accepted + ' counted, ' + r.rejected + ' rejected',
      el('span', { class: 'muted mono', title: 'ledger root' }, ' · root ' + short(r.root)));
    const rows = (r.identities || []).map((i) =>
      el('tr', {},
        el('td', { class: 'mono', title: i.peer }, short(i.peer)),
        el('td', {}, credits(i.balance_micro)),
        el('td', {}, credits(i.earned_micro)),
        el('td', {}, credits(i.spent_micro)),
        el('td', {}, i.served_gpu_hours.toFixed(3)),
        el('td', {}, i.consumed_gpu_hours.toFixed(3)),
        el('td', {}, i.weight.toFixed(2))));
    const table = el('table', {},
      el('thead', {}, el('tr', {}, ['Identity', 'Balance', 'Earned', 'Spent', 'Served GPU-h', 'Used GPU-h', 'Fair-share weight'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows));
    box.replaceChildren(head);
    if (rows.length) box.append(table);
  }

  function setStatus(text, error) {
    const s = document.getElementById('status');
    s.textContent = text;
    s.classList.toggle('error', !!error);
  }

  function askKey() {
    const form = document.getElementById('keyform');
    form.hidden = false;
    setStatus('API key needed', true);
  }

  document.getElementById('keyform').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById('key').value);
    document.getElementById('keyform').hidden = true;
    schedule(0);
  });

  async function tick() {
    try {
      const [summary, nodes, deps, weights] = await Promise.all(
        [get('summary'), get('nodes'), get('deployments'), get('weights')]);
      renderSummary(summary);
      renderNodes(nodes);
      renderDeployments(deps);
      renderWeights(weights);
      // The ledger may be slow or absent: it never holds the rest.
      get('credits').then(renderCredits, (e) => renderCredits({ available: false, reason: e.message }));
      setStatus('updated ' + new Date().toLocaleTimeString());
      document.body.dataset.loaded = 'true';
      schedule(refreshMs);
    } catch (e) {
      if (e instanceof AuthError) {
        askKey();
        return; // wait for a key
      }
      setStatus('update failed: ' + e.message + '; retrying', true);
      schedule(refreshMs);
    }
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) schedule(0);
  });
  schedule(0);
})();
