// Shared vocabulary of the pages: health states and their order, how a GPU's state and
// score are read (a stale GPU is always "unknown", whatever else the API says), times,
// numbers and labels.

export const STATES = ['unhealthy', 'degraded', 'unknown', 'healthy'];
export const SEVERITIES = ['fatal', 'critical', 'warning', 'info'];
export const DIMENSIONS = ['thermal', 'power', 'memory', 'interconnect', 'compute'];
export const INCIDENT_STATES = ['open', 'acknowledged', 'clearing', 'resolved'];
export const KINDS = ['health', 'anomaly', 'prediction', 'security'];

const STALENESS = {
  missing_from_scrape: 'missing from its node\'s last scrape',
  target_down: 'its exporter is not answering',
  too_old: 'no recent data',
};

/** The health state alone: stale data or no health verdict is "unknown", never healthy. */
export function healthState(g) {
  if (g.stale) return 'unknown';
  const s = g.health?.state;
  return STATES.includes(s) ? s : 'unknown';
}

/**
 * The state a tile and a GPU page show: health together with the GPU's open security,
 * failure-risk and anomaly incidents (the API's `status`), so a GPU with an open critical
 * cryptomining incident is never a green "healthy" tile. Stale is always "unknown".
 */
export function gpuState(g) {
  const h = healthState(g);
  if (h === 'unknown' && g.stale) return 'unknown';
  const s = g.status?.state;
  return STATES.includes(s) && stateRank(s) < stateRank(h) ? s : h;
}

/** The score to show, or null ("?") when the health state is unknown. */
export function gpuScore(g) {
  if (healthState(g) === 'unknown') return null;
  const s = g.health?.score;
  return typeof s === 'number' ? s : null;
}

/** Rank for "worst first": lower is worse. */
export const stateRank = (s) => STATES.indexOf(s) < 0 ? STATES.indexOf('unknown') : STATES.indexOf(s);

/** The one-line main reason for a GPU's state: an open incident that raised it first. */
export function mainReason(g) {
  if (g.stale) return `No current data: ${STALENESS[g.staleness] ?? g.staleness}`;
  if (g.status?.reason && gpuState(g) !== healthState(g)) return g.status.reason;
  const reasons = [...(g.health?.reasons ?? [])].sort((a, b) => b.points - a.points);
  if (reasons.length) return reasons[0].reason;
  if (!g.health) return 'No health verdict yet';
  if (g.health.state === 'unknown') return 'Not enough data for a health verdict';
  return 'No deductions';
}

export const stalenessText = (s) => (s === 'fresh' ? 'fresh' : STALENESS[s] ?? s);

export function fmtScore(v) {
  return typeof v === 'number' ? Math.round(v).toString() : '?';
}

export function fmtNum(v, digits = 1) {
  if (typeof v !== 'number' || !isFinite(v)) return '–';
  return Number.isInteger(v) ? v.toString() : v.toFixed(digits);
}

/** "14:03:27" today, "2025-11-23 14:03" otherwise; "–" for missing. */
export function fmtTime(ms) {
  if (typeof ms !== 'number') return '–';
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  const pad = (n) => String(n).padStart(2, '0');
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return today ? hms : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

export const fmtIso = (ms) => (typeof ms === 'number' ? new Date(ms).toISOString() : '');

/** "3 min ago" relative to now. */
export function fmtAgo(ms) {
  if (typeof ms !== 'number') return '–';
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return 'just now';
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** "reset_gpu" → "reset GPU". */
export function fmtAction(a) {
  if (!a) return '–';
  return a.replace(/_/g, ' ').replace(/\bgpu\b/i, 'GPU').replace(/\brma\b/i, 'RMA');
}

/** An event's kind as text, e.g. "XID 79", "GPU disappeared". */
export function fmtEventKind(k) {
  if (!k) return '?';
  switch (k.type) {
    case 'xid': return `XID ${k.code}`;
    case 'xid_cleared': return `XID ${k.previous_code} cleared`;
    case 'ecc_dbe': return `ECC double-bit error (count ${k.count})`;
    case 'remap_failure': return 'Row remap failure';
    case 'throttle_start': return `Throttling started (reasons 0x${Number(k.reasons).toString(16)})`;
    case 'process_start': return `Process ${k.pid}${k.name ? ` (${k.name})` : ''} started`;
    default: return k.type.replace(/_/g, ' ').replace(/^gpu\b/, 'GPU');
  }
}

/** Extra detail of an event (XID message, process). */
export function fmtEventDetail(k) {
  if (k?.type !== 'xid') return '';
  return [k.message, k.process && `process ${k.process}`, k.pid && `pid ${k.pid}`].filter(Boolean).join(', ');
}

/** Short form of a GPU UUID for tables: "GPU-1a2b3c4d…". */
export const shortUuid = (u) => (u && u.length > 14 ? `${u.slice(0, 12)}…` : u ?? '–');

/** Failure-risk bands, worst first (the API's `band`). */
export const RISK_BANDS = ['critical', 'high', 'elevated', 'low'];

/**
 * A probability as a percentage: "60%", "4.2%", "<0.1%", ">99%"; "—" when missing, so
 * a GPU without a prediction never reads as 0%.
 */
export function fmtProb(p) {
  if (typeof p !== 'number' || !isFinite(p)) return '—';
  const pct = p * 100;
  if (pct > 0 && pct < 0.1) return '<0.1%';
  if (pct > 99 && pct < 100) return '>99%';
  return pct < 10 ? `${+pct.toFixed(1)}%` : `${Math.round(pct)}%`;
}

/** A feature contribution in log-odds, signed: "+1.99". */
export const fmtContribution = (c) => (typeof c === 'number' && isFinite(c) ? `${c >= 0 ? '+' : '−'}${Math.abs(c).toFixed(2)}` : '–');
