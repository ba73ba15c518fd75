// Patient-level access: the patients assigned to a user (referring physicians see those
// patients, besides the studies that name them), and family members' access grants with their
// workflow (requested -> verified by an administrator -> active -> expired or revoked).
import { getJson, sendJson } from '../../api';
import { formatDicomDate } from '../../i18n';
import { act, clear, field, h, statusLine, table } from './common';
import type { Section } from './index';

interface AdminUser { username: string; display_name: string; role: string }
interface Assignment { patient_id: string; issuer_of_patient_id: string; created_at: string }
interface Grant {
  id: number; username: string; patient_id: string; status: string; note: string; requested_at: string | null;
  verified_by: string | null; expires_at: string | null;
}

const enc = encodeURIComponent;
const day = (iso: string | null) => (iso ? formatDicomDate(iso.slice(0, 10).replace(/-/g, '')) : '—');

export const renderAccess: Section = async (panel, me) => {
  const users = await getJson<AdminUser[]>('/admin/users');
  const status = statusLine('access-status');
  const redraw = async () => {
    clear(panel);
    await renderAccess(panel, me);
  };

  // ---- patients assigned to a user
  const who = h('select', { id: 'assign-user' }, ...users.filter((u) => u.role !== 'family_member').map((u) =>
    h('option', { value: u.username, selected: u.role === 'referring_physician' }, `${u.username} (${u.role})`)));
  const assigned = h('div', { id: 'assigned-patients' });
  const showAssigned = async () => {
    const list = await getJson<Assignment[]>(`/admin/users/${enc(who.value)}/patients`);
    clear(assigned);
    assigned.append(table('assignments-table', ['admin.access.patientId', 'admin.access.since', 'admin.actions'], list.map((a) => {
      const remove = h('button', { type: 'button', class: 'small danger', i18n: 'admin.access.unassign' });
      remove.addEventListener('click', async () => {
        const q = a.issuer_of_patient_id ? `?issuer=${enc(a.issuer_of_patient_id)}` : '';
        if (await act(remove, status, 'admin.saved', () => sendJson('DELETE', `/admin/users/${enc(who.value)}/patients/${enc(a.patient_id)}${q}`))) await showAssigned();
      });
      return h('tr', { data: { patient: a.patient_id } }, h('td', {}, a.patient_id), h('td', {}, day(a.created_at)), h('td', {}, remove));
    })));
  };
  who.addEventListener('change', () => void showAssigned());
  const patient = h('input', { id: 'assign-patient', required: true, maxlength: 64, autocomplete: 'off' });
  const assign = h('button', { type: 'submit', class: 'primary', id: 'assign-button', i18n: 'admin.access.assign' });
  const assignForm = h('form', { class: 'admin-form', id: 'assign-form' }, field('admin.access.user', who),
    field('admin.access.patientId', patient), assign);
  assignForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (await act(assign, status, 'admin.saved', () => sendJson('POST', `/admin/users/${enc(who.value)}/patients`, { patient_id: patient.value }))) {
      patient.value = '';
      await showAssigned();
    }
  });

  // ---- family access grants
  const grants = await getJson<Grant[]>('/admin/family-grants');
  const grantRows = grants.map((g) => {
    const verify = h('button', { type: 'button', class: 'small', i18n: 'admin.access.verify', hidden: g.status !== 'requested' });
    verify.addEventListener('click', async () => {
      if (await act(verify, status, 'admin.saved', () => sendJson('POST', `/admin/family-grants/${g.id}/verify`))) await redraw();
    });
    const revoke = h('button', { type: 'button', class: 'small danger', i18n: 'admin.access.revoke',
                                 hidden: !['requested', 'active'].includes(g.status) });
    revoke.addEventListener('click', async () => {
      if (await act(revoke, status, 'admin.saved', () => sendJson('POST', `/admin/family-grants/${g.id}/revoke`))) await redraw();
    });
    return h('tr', { data: { grant: String(g.id), status: g.status } }, h('td', {}, g.username), h('td', {}, g.patient_id),
      h('td', {}, g.status), h('td', {}, day(g.expires_at)), h('td', {}, g.verified_by ?? '—'), h('td', {}, g.note),
      h('td', { class: 'actions' }, verify, revoke));
  });
  const family = users.filter((u) => u.role === 'family_member');
  const member = h('select', { id: 'grant-user' }, ...family.map((u) => h('option', { value: u.username }, u.username)));
  const grantPatient = h('input', { id: 'grant-patient', required: true, maxlength: 64, autocomplete: 'off' });
  const expires = h('input', { id: 'grant-expires', type: 'date', required: true });
  const note = h('input', { id: 'grant-note', maxlength: 2000, autocomplete: 'off' });
  const request = h('button', { type: 'submit', class: 'primary', id: 'grant-button', i18n: 'admin.access.request', disabled: !family.length });
  const grantForm = h('form', { class: 'admin-form', id: 'grant-form' }, field('admin.access.familyMember', member),
    field('admin.access.patientId', grantPatient), field('admin.access.expires', expires), field('admin.access.note', note), request);
  grantForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { username: member.value, patient_id: grantPatient.value, note: note.value,
                   expires_at: new Date(`${expires.value}T23:59:59Z`).toISOString() };
    if (await act(request, status, 'admin.saved', () => sendJson('POST', '/admin/family-grants', body))) await redraw();
  });

  panel.append(
    h('h2', { i18n: 'admin.access.assignments' }), assignForm, assigned,
    h('h2', { i18n: 'admin.access.grants' }),
    table('grants-table', ['admin.access.familyMember', 'admin.access.patientId', 'admin.user.state', 'admin.access.expires',
                           'admin.access.verifiedBy', 'admin.access.note', 'admin.actions'], grantRows),
    h('p', { class: 'muted', i18n: 'admin.access.noFamily', hidden: family.length > 0 }),
    h('h3', { i18n: 'admin.access.newGrant' }), grantForm, status);
  if (who.value) await showAssigned();
};
