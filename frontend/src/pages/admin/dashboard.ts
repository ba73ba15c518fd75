// The dashboard: archive totals, studies and storage received per day (bar charts in SVG),
// signed-in users and jobs, from GET /admin/dashboard.
import { getJson } from '../../api';
import { formatNumber, t } from '../../i18n';
import { h } from './common';
import type { Section } from './index';

interface Dashboard {
  totals: { patients: number; studies: number; series: number; instances: number; size_bytes: number };
  days: { date: string; studies: number; instances: number; bytes: number }[];
  users: { active_sessions: number; active_users: number; sign_ins_24h: number };
  jobs: { by_state: Record<string, number>; recent: { id: string; kind: string; state: string; created_at: string }[] };
}

function gigabytes(bytes: number): string {
  return formatNumber(bytes / 1e9, 2);
}

const SVG = 'http://www.w3.org/2000/svg';

/** A bar chart of one value per day; each bar has its date and value as a tooltip. */
function bars(id: string, days: Dashboard['days'], value: (d: Dashboard['days'][number]) => number,
              label: (v: number) => string): SVGSVGElement {
  const width = 600, height = 120, gap = 2;
  const max = Math.max(1, ...days.map(value));
  const w = width / days.length;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('id', id);
  svg.setAttribute('role', 'img');
  days.forEach((d, i) => {
    const v = value(d);
    const bar = document.createElementNS(SVG, 'rect');
    const bh = Math.round((v / max) * (height - 4));
    bar.setAttribute('x', String(i * w + gap / 2));
    bar.setAttribute('y', String(height - bh));
    bar.setAttribute('width', String(Math.max(1, w - gap)));
    bar.setAttribute('height', String(bh));
    bar.dataset.value = String(v);
    const tip = document.createElementNS(SVG, 'title');
    tip.textContent = `${d.date}: ${label(v)}`;
    bar.appendChild(tip);
    svg.appendChild(bar);
  });
  return svg;
}

export const renderDashboard: Section = async (panel) => {
  const d = await getJson<Dashboard>('/admin/dashboard?days=30');
  const tile = (id: string, key: Parameters<typeof t>[0], value: string) =>
    h('div', { class: 'tile', id }, h('div', { class: 'tile-value' }, value), h('div', { class: 'tile-label', i18n: key }));
  const stored30 = d.days.reduce((n, x) => n + x.bytes, 0);
  panel.append(
    h('div', { class: 'tiles' },
      tile('tile-studies', 'admin.dash.studies', formatNumber(d.totals.studies)),
      tile('tile-patients', 'admin.dash.patients', formatNumber(d.totals.patients)),
      tile('tile-instances', 'admin.dash.instances', formatNumber(d.totals.instances)),
      tile('tile-storage', 'admin.dash.storageGb', gigabytes(d.totals.size_bytes)),
      tile('tile-growth', 'admin.dash.growthGb', gigabytes(stored30)),
      tile('tile-users', 'admin.dash.activeUsers', formatNumber(d.users.active_users)),
      tile('tile-signins', 'admin.dash.signIns', formatNumber(d.users.sign_ins_24h))),
    h('h2', { i18n: 'admin.dash.studiesPerDay' }),
    bars('chart-studies', d.days, (x) => x.studies, (v) => formatNumber(v)),
    h('h2', { i18n: 'admin.dash.storagePerDay' }),
    bars('chart-storage', d.days, (x) => x.bytes, (v) => `${gigabytes(v)} GB`),
    h('h2', { i18n: 'admin.dash.jobs' }),
    h('p', { id: 'jobs-by-state' }, Object.entries(d.jobs.by_state).map(([s, n]) => `${s}: ${formatNumber(n)}`).join(' · ') || t('admin.dash.noJobs')),
    h('ul', { class: 'plain-list' }, ...d.jobs.recent.map((j) =>
      h('li', {}, `${new Date(j.created_at).toLocaleString()} · ${j.kind} · ${j.state}`))),
  );
};
