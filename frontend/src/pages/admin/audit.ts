// The audit trail: search (user, patient, study, action, outcome, period), newest first, 100 at
// a time; the same filters exported as CSV, FHIR AuditEvent or DICOM audit messages; and the
// hash chain's verification.
import { getJson } from '../../api';
import { act, clear, field, h, setMessage, statusLine, table } from './common';
import type { Section } from './index';

interface Record_ { seq: number; at: string; actor: string; action: string; outcome: string; source: string;
                    interface: string; patient_ids: string[]; resource: string }

const FILTERS = ['actor', 'patient_id', 'study_uid', 'action', 'outcome', 'since', 'until'] as const;

export const renderAudit: Section = async (panel) => {
  const inputs = Object.fromEntries(FILTERS.map((f) => [f, h('input', {
    id: `audit-${f}`, name: f, autocomplete: 'off', type: f === 'since' || f === 'until' ? 'date' : 'text' })])) as
    Record<(typeof FILTERS)[number], HTMLInputElement>;
  const search = h('button', { type: 'submit', class: 'primary', id: 'audit-search', i18n: 'admin.audit.search' });
  const results = h('div', { id: 'audit-results' });
  const exportLinks = h('p', { class: 'export-links' });
  const status = statusLine('audit-status');
  const verify = h('button', { type: 'button', id: 'audit-verify', i18n: 'admin.audit.verify' });
  const params = () => {
    const p = new URLSearchParams();
    for (const f of FILTERS) if (inputs[f].value.trim()) p.set(f, inputs[f].value.trim());
    return p;
  };
  const run = async () => {
    const p = params();
    p.set('limit', '100');
    const records = await getJson<Record_[]>(`/audit?${p}`);
    clear(results);
    results.append(table('audit-table', ['admin.audit.when', 'admin.audit.actor', 'admin.audit.action', 'admin.audit.outcome',
      'admin.audit.source', 'admin.audit.patients', 'admin.audit.what'], records.map((r) => h('tr', { data: { seq: String(r.seq) } },
      h('td', {}, new Date(r.at).toLocaleString()), h('td', {}, r.actor), h('td', {}, r.action), h('td', {}, r.outcome),
      h('td', {}, `${r.interface} ${r.source}`), h('td', {}, (r.patient_ids ?? []).join(', ')), h('td', {}, r.resource ?? '')))));
    const e = params();
    clear(exportLinks);
    for (const [format, key] of [['csv', 'admin.audit.csv'], ['fhir', 'admin.audit.fhir'], ['dicom', 'admin.audit.dicom']] as const) {
      e.set('format', format);
      exportLinks.append(h('a', { href: `/audit/export?${e}`, class: 'button', download: '', i18n: key }), ' ');
    }
  };
  const form = h('form', { class: 'admin-form', id: 'audit-form' },
    field('admin.audit.actor', inputs.actor), field('admin.audit.patientId', inputs.patient_id),
    field('admin.audit.studyUid', inputs.study_uid), field('admin.audit.action', inputs.action),
    field('admin.audit.outcome', inputs.outcome), field('admin.audit.since', inputs.since),
    field('admin.audit.until', inputs.until), search);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void act(search, status, 'admin.audit.searched', run);
  });
  verify.addEventListener('click', async () => {
    let count = 0;
    const ok = await act(verify, status, 'admin.audit.verified', async () => {
      const r = await getJson<{ ok: boolean; records: number; messages: string[] }>('/audit/verify');
      if (!r.ok) throw new Error(r.messages.join('; '));
      count = r.records;
    });
    if (ok) setMessage(status, 'admin.audit.chainOk', { count });
  });
  panel.append(form, h('div', { class: 'row' }, verify, exportLinks), status, results);
  await run();
};
