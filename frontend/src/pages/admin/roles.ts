// Roles: each with its permissions and patient scope; create one from permission boxes; delete
// one (the server refuses built-in roles and roles still given to users, and says so).
import { getJson, sendJson } from '../../api';
import { act, clear, field, h, statusLine, table } from './common';
import type { Section } from './index';

interface Role { name: string; description: string; builtin: boolean; permissions: string[]; patient_scope: string }

const PERMISSIONS = ['view_study_list', 'view_images', 'download', 'upload', 'delete', 'modify', 'run_analysis',
  'create_report', 'sign_report', 'view_report', 'manage_users', 'manage_roles', 'manage_settings', 'view_audit',
  'assign_patients', 'teaching_view'];

export const renderRoles: Section = async (panel, me) => {
  const roles = await getJson<Role[]>('/admin/roles');
  const status = statusLine('roles-status');
  const canEdit = me.permissions.includes('manage_roles');
  const redraw = async () => {
    clear(panel);
    await renderRoles(panel, me);
  };
  const rows = roles.map((r) => {
    const remove = h('button', { type: 'button', class: 'small danger', i18n: 'admin.delete', hidden: r.builtin || !canEdit });
    remove.addEventListener('click', async () => {
      if (!confirm(r.name)) return;
      if (await act(remove, status, 'admin.deleted', () => sendJson('DELETE', `/admin/roles/${encodeURIComponent(r.name)}`))) await redraw();
    });
    return h('tr', { data: { role: r.name } }, h('td', {}, r.name), h('td', {}, r.patient_scope),
      h('td', { class: 'chips' }, ...r.permissions.map((p) => h('span', { class: 'chip' }, p))), h('td', { class: 'actions' }, remove));
  });
  panel.append(table('roles-table', ['admin.role.name', 'admin.role.scope', 'admin.role.permissions', 'admin.actions'], rows));
  if (!canEdit) return;
  const name = h('input', { id: 'new-role-name', required: true, maxlength: 64, autocomplete: 'off' });
  const scope = h('select', { id: 'new-role-scope' }, ...['all', 'assigned', 'teaching_only'].map((s) => h('option', { value: s }, s)));
  const boxes = PERMISSIONS.map((p) => h('input', { type: 'checkbox', value: p, id: `perm-${p}` }));
  const create = h('button', { type: 'submit', class: 'primary', id: 'create-role', i18n: 'admin.role.create' });
  const form = h('form', { class: 'admin-form', id: 'role-form' }, field('admin.role.name', name), field('admin.role.scope', scope),
    h('fieldset', { class: 'perm-boxes' }, ...boxes.map((b) => h('label', { class: 'check' }, b, b.value))), create);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const ok = await act(create, status, 'admin.saved', () => sendJson('POST', '/admin/roles', {
      name: name.value, patient_scope: scope.value, permissions: boxes.filter((b) => b.checked).map((b) => b.value),
    }));
    if (ok) await redraw();
  });
  panel.append(h('h2', { i18n: 'admin.role.new' }), form, status);
};
