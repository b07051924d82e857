// Renders the cost run: a markdown report (the measured per-room rates and
// the monthly price per transport and size, next to the article's
// estimate) and an SVG plot of monthly $ against users on log axes. Pure:
// every number comes from the rows it is given.
import { PRICES, PRICES_READ, PRICE_SOURCES } from './prices.mjs';

/** The seed article's table, "the article's estimate" (USD per month; pollers: its "Polling" row). */
export const ARTICLE = {
  ws: { 1000: 20, 10000: 150, 100000: 800 },
  sse: { 1000: 20, 10000: 80, 100000: 400 },
  poll: { 1000: 50, 10000: 500, 100000: 3000 },
};
export const ARTICLE_NOTES = {
  ws: ['1 instance', '5 instances + Redis', '20 instances + Redis cluster'],
  sse: ['1 instance', '2 instances', '10 instances'],
  poll: ['API costs', 'high API load', 'unsustainable'],
};

const LABEL = { ws: 'WebSocket', sse: 'SSE', poll: 'Polling (2 s)', longpoll: 'Long polling' };
const COLOR = { ws: '#2b5fd9', sse: '#2a9d5c', poll: '#d94a2b', longpoll: '#9b3fb5' };

const usd = (x) => (x >= 100 ? `$${Math.round(x).toLocaleString('en-US')}` : `$${x.toFixed(2)}`);
const num = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const users = (n) => (n >= 1000 ? `${n / 1000}k` : String(n));

/**
 * rows: [{ pattern, transport, run (runWorkload's result), rates (per
 * room-second), bills: [{ users, rooms, bill }] }].
 */
export function renderReport(meta, patterns, rows) {
  const out = [];
  out.push(`# What it costs: ${meta.stamp}`, '');
  out.push(`Machine: ${meta.machine}. ${meta.workerd}, node ${meta.node}.`);
  out.push(`Command: \`${meta.command}\`. Prices read ${PRICES_READ} from ${PRICE_SOURCES.workers} and ${PRICE_SOURCES.durableObjects}.`, '');
  out.push('Workload: every user is one client in a room of 100; the app\'s backend publishes to every room over HTTP;');
  out.push('WebSocket and SSE clients stay connected all month; pollers poll every 2 s with `If-None-Match`; long pollers');
  out.push(`wait up to ${meta.longPollWait} s and ask again at once. Patterns: ${patterns.map((p) => `**${p.name}** ${p.updatesPerMin} updates/min per room (measured ${p.secs} s per transport)`).join('; ')}.`);
  out.push('Measured on one room per transport on bare workerd, extrapolated linearly per room-second to users/100 rooms × 30 days.', '');

  out.push('## Measured, per room of 100 users', '');
  out.push('| pattern | transport | window s | publishes | delivered / expected | room requests/s | alarms/s | WebSocket msgs in/s | awake % of window | held connections (avg) | rows read/s | rows written/s | stored KiB | workerd CPU ms/s |');
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const w = r.run;
    if (w.error) {
      out.push(`| ${r.pattern} | ${r.transport} | error: ${String(w.error).replace(/\|/g, '/').slice(0, 120)} |||||||||||||`);
      continue;
    }
    const s = w.secs;
    const m = w.meter;
    out.push(
      `| ${r.pattern} | ${LABEL[r.transport]} | ${num(s, 1)} | ${w.publishes} | ${m.delivered}/${w.expected} (clients got ${w.received}) | ${num(m.requests / s)} | ${num(m.alarms / s)} | ${num(m.wsMessagesIn / s)} | ${num((100 * m.awakeMs) / (s * 1000), 1)} | ${num(m.streamMs / (s * 1000), 1)} | ${num(m.rowsRead / s)} | ${num(m.rowsWritten / s)} | ${num(w.storedBytes / 1024, 0)} | ${num(w.cpuMs / s, 1)} |`,
    );
  }
  out.push('');

  out.push('## Monthly price (USD)', '');
  out.push('Each usage column is the overage beyond the plan\'s included amounts (taken once, for the whole account); total = $5 subscription + the columns.');
  out.push('"Worker CPU ≤" prices all of the workerd process\'s CPU as Worker CPU, an upper bound (it includes the Durable Objects\' own work, which the platform bills as duration instead).');
  out.push('"DO duration" is the meter\'s awake time: while the room handles an event, or while SSE streams / held long polls keep it from hibernating (the pricing page: an idle object that could hibernate is not billed, even before it does).', '');
  out.push('| pattern | transport | users | rooms | Worker requests | Worker CPU ≤ | DO requests | DO duration | storage | **total** | the article\'s estimate |');
  out.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    if (r.run.error) continue;
    for (const [i, b] of r.bills.entries()) {
      const article = r.pattern === patterns[0].name && ARTICLE[r.transport] ? `${usd(ARTICLE[r.transport][b.users])} (${ARTICLE_NOTES[r.transport][i]})` : '–';
      const x = b.bill;
      out.push(`| ${r.pattern} | ${LABEL[r.transport]} | ${users(b.users)} | ${b.rooms} | ${usd(x.workerRequests)} | ${usd(x.workerCpu)} | ${usd(x.doRequests)} | ${usd(x.doDuration)} | ${usd(x.storage)} | **${usd(x.total)}** | ${article} |`);
    }
  }
  out.push('');

  out.push('## Cheapest transport', '');
  for (const p of patterns) {
    const mine = rows.filter((r) => r.pattern === p.name && !r.run.error);
    if (!mine.length) continue;
    for (const [i, b] of mine[0].bills.entries()) {
      const ranked = mine.map((r) => ({ t: r.transport, total: r.bills[i].bill.total })).sort((a, c) => a.total - c.total);
      out.push(`- ${p.name}, ${users(b.users)} users: ${ranked.map((x) => `${LABEL[x.t]} ${usd(x.total)}`).join(' < ')}`);
    }
  }
  const perMillion = PRICES.workerRequests.usdPerMillion + PRICES.doRequests.usdPerMillion;
  out.push('', `A reconnect (WebSocket or SSE) is one Worker request and one Durable Object request: ${usd(perMillion)} per million reconnects beyond the included amounts, not in the table.`);
  return `${out.join('\n')}\n`;
}

/** Monthly $ against users (log–log), one panel per pattern; the article's estimates hollow and dashed. */
export function renderPlot(meta, patterns, rows) {
  const panelW = 460;
  const panelH = 340;
  const left = 70;
  const top = 80;
  const gap = 40;
  const width = left + patterns.length * (panelW + gap) + 20;
  const height = top + panelH + 100;
  const ok = rows.filter((r) => !r.run.error);
  const values = ok.flatMap((r) => r.bills.map((b) => b.bill.total)).concat(Object.values(ARTICLE).flatMap((o) => Object.values(o)));
  const yMin = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  const xs = [1000, 10000, 100000];
  const parts = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push('<rect width="100%" height="100%" fill="#fff"/>');
  parts.push(`<text x="20" y="24" font-size="16" font-weight="bold">Monthly price on Cloudflare (Workers Paid + Durable Objects), USD, log–log</text>`);
  parts.push(`<text x="20" y="44" fill="#555">${esc(`Measured on ${meta.machine} (${meta.stamp}), one room of 100 users per transport, extrapolated per room-second; prices read ${PRICES_READ}.`)}</text>`);
  patterns.forEach((p, pi) => {
    const x0 = left + pi * (panelW + gap);
    const X = (u) => x0 + 40 + ((Math.log10(u) - 3) / 2) * (panelW - 190);
    const Y = (v) => top + panelH - ((Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * panelH;
    parts.push(`<rect x="${x0}" y="${top}" width="${panelW}" height="${panelH}" fill="none" stroke="#999"/>`);
    parts.push(`<text x="${x0 + panelW / 2}" y="${top - 8}" text-anchor="middle" font-weight="bold">${esc(`${p.name}: ${p.updatesPerMin} updates/min per room of 100`)}</text>`);
    for (let v = yMin; v <= yMax * 1.001; v *= 10) {
      parts.push(`<line x1="${x0}" y1="${Y(v)}" x2="${x0 + panelW}" y2="${Y(v)}" stroke="#e5e5e5"/>`);
      if (pi === 0) parts.push(`<text x="${x0 - 6}" y="${Y(v) + 4}" text-anchor="end" fill="#555">$${v.toLocaleString('en-US')}</text>`);
    }
    for (const u of xs) parts.push(`<text x="${X(u)}" y="${top + panelH + 16}" text-anchor="middle" fill="#555">${users(u)} users</text>`);
    if (pi === 0) {
      for (const [t, byUsers] of Object.entries(ARTICLE)) {
        const pts = xs.map((u) => [X(u), Y(byUsers[u])]);
        parts.push(`<polyline points="${pts.map((q) => q.join(',')).join(' ')}" fill="none" stroke="${COLOR[t]}" stroke-width="1.5" stroke-dasharray="5,4"/>`);
        for (const [cx, cy] of pts) parts.push(`<circle cx="${cx}" cy="${cy}" r="4.5" fill="#fff" stroke="${COLOR[t]}" stroke-width="1.5"/>`);
      }
    }
    const labels = [];
    // Drawn widest first, so that lines lying on one another all show.
    const mine = ok.filter((q) => q.pattern === p.name);
    for (const [i, r] of [...mine].reverse().entries()) {
      const pts = r.bills.map((b) => [X(b.users), Y(b.bill.total)]);
      parts.push(`<polyline points="${pts.map((q) => q.join(',')).join(' ')}" fill="none" stroke="${COLOR[r.transport]}" stroke-width="${2 + 1.5 * (mine.length - 1 - i)}" stroke-opacity="0.9"/>`);
      for (const [cx, cy] of pts) parts.push(`<circle cx="${cx}" cy="${cy}" r="4" fill="${COLOR[r.transport]}"/>`);
      const last = r.bills[r.bills.length - 1];
      labels.push({ y: Y(last.bill.total), text: `${LABEL[r.transport]} ${usd(last.bill.total)}`, color: COLOR[r.transport] });
    }
    // End labels right of the last points, pushed apart so none overlaps.
    labels.sort((a, b) => a.y - b.y);
    labels.forEach((l, i) => {
      if (i > 0) l.y = Math.max(l.y, labels[i - 1].y + 14);
      parts.push(`<text x="${X(1e5) + 10}" y="${l.y + 4}" fill="${l.color}">${esc(l.text)}</text>`);
    });
  });
  let lx = left;
  for (const [t, c] of Object.entries(COLOR)) {
    parts.push(`<rect x="${lx}" y="${height - 50}" width="12" height="12" fill="${c}"/><text x="${lx + 16}" y="${height - 40}">${esc(LABEL[t])}</text>`);
    lx += 130;
  }
  // The line styles.
  const ly = height - 16;
  parts.push(`<line x1="${left}" y1="${ly - 4}" x2="${left + 30}" y2="${ly - 4}" stroke="#333" stroke-width="2.5"/><text x="${left + 36}" y="${ly}">measured, extrapolated</text>`);
  parts.push(`<line x1="${left + 220}" y1="${ly - 4}" x2="${left + 250}" y2="${ly - 4}" stroke="#333" stroke-width="1.5" stroke-dasharray="5,4"/><circle cx="${left + 235}" cy="${ly - 4}" r="4.5" fill="#fff" stroke="#333" stroke-width="1.5"/><text x="${left + 256}" y="${ly}">the article's estimate</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function esc(s) {
  return String(s).replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[ch]);
}
