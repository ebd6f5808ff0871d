// Wharf's dashboard: a live feed over /api/stream (SSE, opened with a short-lived ticket),
// deliveries with filters, detail and replay, ledger tables with search and CSV export,
// analytics charts, rejected requests and source health. Everything it reads is the admin API;
// the token is kept in sessionStorage only.
import { h, render } from 'preact';
import { useState, useEffect, useRef, useCallback } from 'preact/hooks';
import htm from 'htm';

const html = htm.bind(h);
const TOKEN_KEY = 'wharf.token';

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token()}`, ...(options.headers || {}) },
  });
  if (response.status === 401) throw new Error('unauthorized: check the admin token');
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body;
}

function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== '' && v != null);
  return entries.length ? '?' + new URLSearchParams(entries).toString() : '';
}

function useApi(path, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const load = useCallback(() => {
    if (!path) return;
    api(path).then((data) => setState({ data, error: null }), (error) => setState({ data: null, error: error.message }));
  }, [path, ...deps]);
  useEffect(load, [load]);
  return [state, load];
}

// ---- live feed -----------------------------------------------------------------------------

/// Follows /api/stream with EventSource; on an error it fetches a new ticket and resumes
/// after the last id it saw (`since`), so nothing is missed across reconnects.
function useLiveFeed(onChange) {
  const [status, setStatus] = useState('connecting');
  const last = useRef(null);
  const handler = useRef(onChange);
  handler.current = onChange;
  useEffect(() => {
    let source = null;
    let stopped = false;
    let retry = null;
    async function open() {
      try {
        const { ticket } = await api('/api/stream/ticket', { method: 'POST' });
        if (stopped) return;
        const since = last.current != null ? `&since=${last.current}` : '';
        source = new EventSource(`/api/stream?ticket=${encodeURIComponent(ticket)}${since}`);
        source.onopen = () => setStatus('live');
        const receive = (event) => {
          if (event.lastEventId) last.current = event.lastEventId;
          handler.current(event.type, JSON.parse(event.data));
        };
        for (const kind of ['delivery.received', 'delivery.processed', 'delivery.failed', 'delivery.dead',
          'delivery.ignored', 'delivery.rejected', 'delivery.retrying', 'delivery.replayed',
          'ledger.created', 'ledger.updated', 'lagged', 'truncated']) {
          source.addEventListener(kind, receive);
        }
        source.onerror = () => {
          setStatus('reconnecting');
          source.close();
          if (!stopped) retry = setTimeout(open, 1000);
        };
      } catch (error) {
        setStatus(`error: ${error.message}`);
        if (!stopped) retry = setTimeout(open, 3000);
      }
    }
    open();
    return () => { stopped = true; clearTimeout(retry); if (source) source.close(); };
  }, []);
  return status;
}

function describe(kind, change) {
  if (kind.startsWith('ledger.')) {
    const row = change.data || {};
    const money = row.price ? ` ${row.price} ${row.currency || ''}` : (row.amount ? ` ${row.amount} ${row.currency || ''}` : '');
    return `${change.table} ${JSON.stringify(change.key)}${money}`;
  }
  const data = change.data || {};
  return `#${change.delivery_id} ${change.event_type || ''} ${data.error ? '— ' + data.error : ''}`;
}

function LiveFeed({ feed, status }) {
  return html`<div class="card">
    <h3>Live feed <span class="pill" id="feed-status">${status}</span></h3>
    <div id="live-feed">
      ${feed.length === 0 && html`<p class="muted">Waiting for deliveries…</p>`}
      ${feed.map((item) => html`<div class="feed-item" data-kind=${item.kind}>
        <span class="muted">${item.seq ?? ''}</span>
        <span class="muted">${(item.at || '').slice(11, 19)}</span>
        <span class=${item.kind.endsWith('dead') || item.kind.endsWith('failed') ? 'bad' : ''}>${item.kind}</span>
        <span>${item.source || ''}</span>
        <span>${item.text}</span>
      </div>`)}
    </div>
  </div>`;
}

// ---- deliveries ----------------------------------------------------------------------------

function DeliveryDetail({ id, onReplayed }) {
  const [{ data, error }, reload] = useApi(`/api/deliveries/${id}`);
  const [message, setMessage] = useState('');
  if (error) return html`<div class="card bad">${error}</div>`;
  if (!data) return html`<div class="card muted">Loading…</div>`;
  const d = data.delivery;
  const replay = async () => {
    try {
      await api(`/api/deliveries/${id}/replay`, { method: 'POST' });
      setMessage('replayed: back in line');
      reload();
      onReplayed();
    } catch (e) { setMessage(e.message); }
  };
  return html`<div class="card" id="delivery-detail">
    <h3>Delivery #${d.id} <span class=${'status-' + d.status}>${d.status}</span>
      <button class="action" id="replay-one" onClick=${replay}>Replay</button> <span class="muted">${message}</span></h3>
    <p>${d.source} · ${d.event_type} · event ${d.event_id || '—'} · received ${d.received_at} · ${d.attempts} attempt(s)</p>
    ${d.request && html`<p class="muted">${d.request.method} ${d.request.path}${d.request.query ? '?' + d.request.query : ''}</p>`}
    ${d.last_error && html`<p class="bad">${d.last_error}</p>`}
    <h4>Headers (secrets redacted)</h4><pre>${JSON.stringify(d.headers, null, 2)}</pre>
    <h4>Raw body</h4><pre id="raw-body">${d.body ?? d.body_base64}</pre>
    <h4>Attempts</h4>
    <table><tr><th>#</th><th>started</th><th>ms</th><th>outcome</th><th>error</th></tr>
      ${(data.attempts || []).map((a) => html`<tr><td>${a.attempt}</td><td>${a.started_at}</td><td>${a.duration_ms}</td><td>${a.outcome}</td><td>${a.error || ''}</td></tr>`)}
    </table>
  </div>`;
}

function Deliveries({ sources, tick }) {
  const [filters, setFilters] = useState({ source: '', status: '', event_type: '', since: '', until: '', q: '' });
  const [applied, setApplied] = useState(filters);
  const [selected, setSelected] = useState(null);
  const [message, setMessage] = useState('');
  const [{ data, error }, reload] = useApi(`/api/deliveries${query({ ...applied, limit: 100 })}`, [tick]);
  const set = (name) => (event) => setFilters({ ...filters, [name]: event.target.value });
  const replayAll = async () => {
    const { source, status, event_type } = applied;
    try {
      const result = await api(`/api/deliveries/replay${query({ source, status: status || 'failed,dead', event_type })}`, { method: 'POST' });
      setMessage(`replayed ${result.replayed ?? result.matched ?? JSON.stringify(result)}`);
      reload();
    } catch (e) { setMessage(e.message); }
  };
  return html`<div>
    <div class="card">
      <form class="filters" onSubmit=${(e) => { e.preventDefault(); setApplied(filters); }}>
        <select id="filter-source" value=${filters.source} onChange=${set('source')}>
          <option value="">all sources</option>
          ${sources.map((s) => html`<option value=${s}>${s}</option>`)}
        </select>
        <select id="filter-status" value=${filters.status} onChange=${set('status')}>
          ${['', 'pending', 'processed', 'failed', 'dead', 'ignored', 'verifying', 'rejected'].map((s) => html`<option value=${s}>${s || 'any status'}</option>`)}
        </select>
        <input id="filter-event-type" placeholder="event type" value=${filters.event_type} onInput=${set('event_type')} />
        <input placeholder="since (RFC 3339)" value=${filters.since} onInput=${set('since')} />
        <input placeholder="until (RFC 3339)" value=${filters.until} onInput=${set('until')} />
        <input id="filter-q" placeholder="text in body" value=${filters.q} onInput=${set('q')} />
        <button class="plain" id="apply-filters" type="submit">Filter</button>
        <button class="action" id="replay-all" type="button" onClick=${replayAll}>Replay failed/dead in filter</button>
        <span class="muted" id="replay-message">${message}</span>
      </form>
      ${error && html`<p class="bad">${error}</p>`}
      <table id="deliveries">
        <tr><th>id</th><th>source</th><th>event type</th><th>status</th><th>attempts</th><th>received</th><th>error</th></tr>
        ${(data?.items || []).map((d) => html`<tr class="clickable" data-id=${d.id} onClick=${() => setSelected(d.id)}>
          <td>${d.id}</td><td>${d.source}</td><td>${d.event_type}</td><td class=${'status-' + d.status}>${d.status}</td>
          <td>${d.attempts}</td><td>${d.received_at}</td><td class="bad">${d.last_error || ''}</td></tr>`)}
      </table>
    </div>
    ${selected && html`<${DeliveryDetail} key=${selected} id=${selected} onReplayed=${reload} />`}
  </div>`;
}

// ---- ledger --------------------------------------------------------------------------------

async function downloadCsv(table, search) {
  const response = await fetch(`/api/ledger/${table}${query({ q: search, format: 'csv' })}`, {
    headers: { Authorization: `Bearer ${token()}` },
  });
  const blob = await response.blob();
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = `${table}.csv`;
  link.click();
  URL.revokeObjectURL(link.href);
}

function Ledger({ tick }) {
  const [{ data: tables }] = useApi('/api/ledger');
  const [table, setTable] = useState('sales');
  const [search, setSearch] = useState('');
  const [applied, setApplied] = useState('');
  const [{ data, error }] = useApi(`/api/ledger/${table}${query({ q: applied, limit: 100 })}`, [tick]);
  const described = (tables?.tables || []).find((t) => t.name === table);
  const columns = described ? described.columns.map((c) => c.name) : Object.keys(data?.items?.[0] || {});
  return html`<div class="card">
    <div class="filters">
      <select id="ledger-table" value=${table} onChange=${(e) => setTable(e.target.value)}>
        ${(tables?.tables || [{ name: 'sales' }]).map((t) => html`<option value=${t.name}>${t.name}</option>`)}
      </select>
      <form onSubmit=${(e) => { e.preventDefault(); setApplied(search); }}>
        <input id="ledger-search" placeholder="search" value=${search} onInput=${(e) => setSearch(e.target.value)} />
        <button class="plain" type="submit">Search</button>
      </form>
      <button class="plain" onClick=${() => downloadCsv(table, applied)}>Export CSV</button>
    </div>
    ${error && html`<p class="bad">${error}</p>`}
    <div style="overflow:auto">
      <table id="ledger-rows">
        <tr>${columns.map((c) => html`<th>${c}</th>`)}</tr>
        ${(data?.items || []).map((row) => html`<tr>${columns.map((c) => html`<td>${typeof row[c] === 'object' && row[c] !== null ? JSON.stringify(row[c]) : row[c]}</td>`)}</tr>`)}
      </table>
    </div>
  </div>`;
}

// ---- analytics -----------------------------------------------------------------------------

const COLORS = ['#2457d6', '#e0782f', '#2e9e5b', '#9b3fc8', '#c62828', '#00838f', '#6d4c41'];

function BarChart({ title, series, id }) {
  // series: [{label, groups: {name: value}}]
  const names = [...new Set(series.flatMap((s) => Object.keys(s.groups)))];
  const max = Math.max(1, ...series.map((s) => Object.values(s.groups).reduce((a, b) => a + b, 0)));
  const width = Math.max(300, series.length * 14 + 40);
  const height = 160;
  const bar = Math.min(40, Math.max(4, Math.floor((width - 40) / Math.max(1, series.length)) - 2));
  return html`<div class="card" id=${id}><h4>${title}</h4>
    <svg width="100%" viewBox=${`0 0 ${width} ${height + 20}`} preserveAspectRatio="none">
      ${series.map((s, i) => {
        let y = height;
        return names.map((name, n) => {
          const value = s.groups[name] || 0;
          const h2 = (value / max) * (height - 10);
          y -= h2;
          return html`<rect x=${40 + i * (bar + 2)} y=${y} width=${bar} height=${h2} fill=${COLORS[n % COLORS.length]}><title>${s.label} ${name}: ${value}</title></rect>`;
        });
      })}
      <text x="0" y="10">${max}</text><text x="0" y=${height}>0</text>
    </svg>
    <div>${names.map((name, n) => html`<span class="pill" style=${`color:${COLORS[n % COLORS.length]}`}>■ ${name}</span> `)}</div>
  </div>`;
}

function Analytics({ tick }) {
  const [windowText, setWindow] = useState('1h');
  const [{ data: stats, error }] = useApi(`/api/stats?window=${windowText}`, [tick]);
  const [{ data: revenue }] = useApi('/api/stats/revenue?days=30', [tick]);
  const minutes = {};
  for (const m of stats?.per_minute || []) {
    (minutes[m.minute] ||= {})[m.source] = m.count;
  }
  const perMinute = Object.keys(minutes).sort().map((minute) => ({ label: minute, groups: minutes[minute] }));
  const days = {};
  for (const d of revenue?.days || []) {
    (days[d.day] ||= {})[`${d.source} ${d.currency}`] = Number(d.amount);
  }
  const perDay = Object.keys(days).sort().map((day) => ({ label: day, groups: days[day] }));
  return html`<div>
    <div class="filters">Window
      <select value=${windowText} onChange=${(e) => setWindow(e.target.value)}>
        ${['15m', '1h', '6h', '24h', '7d'].map((w) => html`<option value=${w}>${w}</option>`)}
      </select></div>
    ${error && html`<p class="bad">${error}</p>`}
    <div class="grid">
      <${BarChart} id="chart-per-minute" title="Deliveries per minute by source" series=${perMinute} />
      <${BarChart} id="chart-revenue" title="Revenue per day by source and currency" series=${perDay} />
    </div>
    <div class="card"><h4>Success rate and processing latency</h4>
      <table id="stats-sources"><tr><th>source</th><th>received</th><th>processed</th><th>failed</th><th>dead</th><th>rejected</th><th>success</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>
        ${(stats?.sources || []).map((s) => html`<tr><td>${s.source}</td><td>${s.received}</td><td>${s.processed}</td><td>${s.failed}</td><td>${s.dead}</td><td>${s.rejected}</td>
          <td>${s.success_rate == null ? '—' : (100 * s.success_rate).toFixed(1) + '%'}</td><td>${s.p50_ms ?? '—'}</td><td>${s.p95_ms ?? '—'}</td><td>${s.p99_ms ?? '—'}</td></tr>`)}
      </table></div>
  </div>`;
}

// ---- rejections and health ----------------------------------------------------------------

function Sources({ tick }) {
  const [{ data: health }] = useApi('/api/health/sources', [tick]);
  const [{ data: sources }] = useApi('/api/sources', [tick]);
  const [selected, setSelected] = useState('');
  const [{ data: rejections }] = useApi(selected ? `/api/sources/${selected}/rejections` : null, [selected, tick]);
  return html`<div>
    <div class="card"><h3>Source health</h3>
      <table id="source-health"><tr><th>source</th><th>health</th><th>detail</th></tr>
        ${(health?.sources || []).map((s) => html`<tr><td>${s.source}</td>
          <td>${s.healthy ? html`<span class="ok">healthy</span>` : s.flags.map((f) => html`<span class="flag">${f.reason}</span>`)}</td>
          <td>${s.flags.map((f) => f.detail).join('; ')}</td></tr>`)}
      </table></div>
    <div class="card"><h3>Rejected requests</h3>
      <table><tr><th>source</th><th>kind</th><th>secret</th><th>rejected</th></tr>
        ${(sources?.sources || []).map((s) => html`<tr class="clickable" onClick=${() => setSelected(s.name)}>
          <td>${s.name}</td><td>${s.kind}</td><td>${s.secret_configured === false ? html`<span class="bad">missing</span>` : 'set'}</td><td>${s.rejected ?? s.rejections ?? ''}</td></tr>`)}
      </table>
      ${selected && html`<h4>${selected}: last rejections</h4>
        <table id="rejections"><tr><th>at</th><th>cause</th><th>message</th><th>request</th></tr>
          ${(rejections?.rejections || []).map((r) => html`<tr><td>${r.at}</td><td class="bad">${r.code}</td><td>${r.message}</td><td>${r.method} ${r.path}</td></tr>`)}
        </table>`}
    </div>
  </div>`;
}

// ---- shell ---------------------------------------------------------------------------------

function Login({ onToken }) {
  const [value, setValue] = useState('');
  return html`<div class="card login">
    <h2>Wharf</h2><p>Admin token (kept in this tab only):</p>
    <form onSubmit=${(e) => { e.preventDefault(); sessionStorage.setItem(TOKEN_KEY, value); onToken(value); }}>
      <input id="token" type="password" style="width:100%" value=${value} onInput=${(e) => setValue(e.target.value)} />
      <p><button class="action" id="sign-in" type="submit">Open the dashboard</button></p>
    </form></div>`;
}

const TABS = ['Live', 'Deliveries', 'Ledger', 'Analytics', 'Sources'];

function App() {
  const [hasToken, setHasToken] = useState(!!token());
  const [tab, setTab] = useState('Live');
  const [feed, setFeed] = useState([]);
  const [tick, setTick] = useState(0);
  const [{ data: sources }] = useApi(hasToken ? '/api/sources' : null, [hasToken]);
  const pending = useRef(null);
  const onChange = useCallback((kind, change) => {
    const text = kind === 'lagged' || kind === 'truncated' ? JSON.stringify(change) : describe(kind, change);
    setFeed((old) => [{ ...change, kind, text }, ...old].slice(0, 200));
    // Views refetch at most a few times a second while changes stream in.
    if (!pending.current) pending.current = setTimeout(() => { pending.current = null; setTick((t) => t + 1); }, 300);
  }, []);
  if (!hasToken) return html`<${Login} onToken=${() => setHasToken(true)} />`;
  return html`<${Shell} tab=${tab} setTab=${setTab} feed=${feed} onChange=${onChange} tick=${tick}
    sources=${(sources?.sources || []).map((s) => s.name)} signOut=${() => { sessionStorage.removeItem(TOKEN_KEY); setHasToken(false); }} />`;
}

function Shell({ tab, setTab, feed, onChange, tick, sources, signOut }) {
  const status = useLiveFeed(onChange);
  return html`<div>
    <header><h1>⚓ Wharf</h1>
      <nav>${TABS.map((name) => html`<button id=${'tab-' + name.toLowerCase()} class=${tab === name ? 'active' : ''} onClick=${() => setTab(name)}>${name}</button>`)}</nav>
      <span style="flex:1"></span><button class="plain" onClick=${signOut}>Sign out</button></header>
    <main>
      ${tab === 'Live' && html`<div class="grid"><${LiveFeed} feed=${feed} status=${status} /><${Analytics} tick=${tick} /></div>`}
      ${tab === 'Deliveries' && html`<${Deliveries} sources=${sources} tick=${tick} />`}
      ${tab === 'Ledger' && html`<${Ledger} tick=${tick} />`}
      ${tab === 'Analytics' && html`<${Analytics} tick=${tick} />`}
      ${tab === 'Sources' && html`<${Sources} tick=${tick} />`}
    </main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
