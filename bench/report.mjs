// Renders benchmark results: a markdown table per scenario and an SVG plot
// of the publish→receive latency distribution per system and transport.

const fmt = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x) ? '–' : Number(x).toFixed(d));
const kib = (b) => (b === undefined ? '–' : (b / 1024).toFixed(1));

export function renderTable(meta, rows) {
  const out = [];
  out.push(`Machine: ${meta.machine}. workerd ${meta.workerd}; ${meta.nginx}, nchan ${meta.nchan}; socket.io ${meta.socketio}, node ${meta.node}.`);
  out.push(`Command: \`${meta.command}\` (${meta.stamp}).`, '');
  const by = (prefix) => rows.filter((r) => r.name.startsWith(prefix));
  const err = (r) => (r.error ? ` (error: ${r.error.replace(/\|/g, '/').slice(0, 80)})` : '');

  const fan = by('fanout');
  if (fan.length) {
    out.push('| fan-out scenario | system | delivered / expected | dup | out of order | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |');
    out.push('|---|---|---|---|---|---|---|---|---|---|');
    for (const r of fan) {
      const s = r.result;
      if (!s) {
        out.push(`| ${r.name} | ${r.system} | –${err(r)} | | | | | | | |`);
        continue;
      }
      const l = s.latency_ms;
      out.push(`| ${r.name} | ${r.system} | ${s.delivered}/${s.expected} (${fmt(s.completeness * 100, 2)}%) | ${s.duplicates} | ${s.out_of_order} | ${fmt(l.p50)} | ${fmt(l.p90)} | ${fmt(l.p99)} | ${fmt(l.p999)} | ${fmt(l.max)} |`);
    }
    out.push('');
  }
  const idle = by('idle');
  if (idle.length) {
    out.push('| idle capacity | system | held / asked | server RSS before → after (MiB) | KiB per connection |');
    out.push('|---|---|---|---|---|');
    for (const r of idle) {
      out.push(`| ${r.name} | ${r.system} | ${r.held ?? '–'}/${r.subs ?? '–'}${err(r)} | ${fmt(r.rss_before / 2 ** 20)} → ${fmt(r.rss_after / 2 ** 20)} | ${kib(r.bytes_per_conn)} |`);
    }
    out.push('');
  }
  const poll = by('poll');
  if (poll.length) {
    out.push('| interval polling | system | 200 | 304 | errors | server CPU ms per 1000 requests |');
    out.push('|---|---|---|---|---|---|');
    for (const r of poll) out.push(`| ${r.name} | ${r.system} | ${r.status_200 ?? '–'} | ${r.status_304 ?? '–'} | ${r.errors ?? '–'}${err(r)} | ${fmt(r.cpu_ms_per_1000_requests, 0)} |`);
    out.push('');
  }
  const pub = by('publish');
  if (pub.length) {
    out.push('| publish throughput (concurrency 16) | system | acknowledged/s | failed | fan-out delivered / expected |');
    out.push('|---|---|---|---|---|');
    for (const r of pub) {
      const f = r.fanout ? `${r.fanout.delivered}/${r.fanout.expected}` : '–';
      out.push(`| ${r.name} | ${r.system} | ${fmt(r.per_sec, 0)}${err(r)} | ${r.failed ?? '–'} | ${f} |`);
    }
    out.push('');
  }
  const cost = by('cost304');
  if (cost.length) {
    out.push('| 304 vs 200 (50 messages) | system | 200: server µs/request | 304: server µs/request | 304 / 200 |');
    out.push('|---|---|---|---|---|');
    for (const r of cost) {
      out.push(`| ${r.name} | ${r.system} | ${fmt(r.full_200?.server_cpu_us_per_request, 0)}${err(r)} | ${fmt(r.not_modified_304?.server_cpu_us_per_request, 0)} | ${fmt(r.ratio_304_to_200, 2)} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

const COLORS = { hub: '#2b5fd9', floor: '#e0822a', nchan: '#2a9d5c', socketio: '#9b3fb5' };

export function renderPlot(meta, rows) {
  const fan = rows.filter((r) => r.name.startsWith('fanout') && r.result?.latency_ms);
  const rowH = 26;
  const left = 260;
  const width = 980;
  const plotW = width - left - 40;
  const top = 70;
  const height = top + fan.length * rowH + 70;
  const maxMs = Math.max(10, ...fan.map((r) => r.result.latency_ms.max));
  const minMs = 0.1;
  const x = (ms) => left + (Math.log10(Math.max(ms, minMs) / minMs) / Math.log10(maxMs / minMs)) * plotW;
  const parts = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  parts.push(`<text x="20" y="24" font-size="16" font-weight="bold">Publish → receive latency, per system and transport (log scale, ms)</text>`);
  parts.push(`<text x="20" y="44" fill="#555">${escape(meta.machine)} · bar: p50–p99 · tick: p99.9 · dot: max · ${escape(meta.stamp)}</text>`);
  for (let t = minMs; t <= maxMs * 1.001; t *= 10) {
    parts.push(`<line x1="${x(t)}" y1="${top - 8}" x2="${x(t)}" y2="${top + fan.length * rowH}" stroke="#ddd"/>`);
    parts.push(`<text x="${x(t)}" y="${top + fan.length * rowH + 16}" text-anchor="middle" fill="#555">${t >= 1 ? t.toFixed(0) : t}</text>`);
  }
  fan.forEach((r, i) => {
    const y = top + i * rowH;
    const l = r.result.latency_ms;
    const c = COLORS[r.system] ?? '#333';
    parts.push(`<text x="${left - 10}" y="${y + 15}" text-anchor="end">${escape(`${r.name} · ${r.system}`)}</text>`);
    parts.push(`<rect x="${x(l.p50)}" y="${y + 5}" width="${Math.max(2, x(l.p99) - x(l.p50))}" height="14" fill="${c}" opacity="0.8"/>`);
    parts.push(`<line x1="${x(l.p999)}" y1="${y + 3}" x2="${x(l.p999)}" y2="${y + 21}" stroke="${c}" stroke-width="2"/>`);
    parts.push(`<circle cx="${x(l.max)}" cy="${y + 12}" r="3" fill="${c}"/>`);
  });
  let lx = left;
  for (const [name, c] of Object.entries(COLORS)) {
    parts.push(`<rect x="${lx}" y="${height - 30}" width="12" height="12" fill="${c}"/><text x="${lx + 16}" y="${height - 20}">${name}</text>`);
    lx += 110;
  }
  parts.push('</svg>');
  return parts.join('\n');
}

function escape(s) {
  return String(s).replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[ch]);
}
