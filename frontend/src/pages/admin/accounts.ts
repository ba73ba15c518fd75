// Accounts: every user with role and state; create one (the server's password policy answers
// for a weak password); enable, disable, unlock, delete.
import { getJson, sendJson, type User } from '../../api';
import { formatDicomDate, t } from '../../i18n';
import { act, clear, field, h, statusLine, table } from './common';
import type { Section } from './index';

interface AdminUser extends User {
  disabled: boolean;
  locked_until: string | null;
  last_login: string | null;
  failed_logins: number;
}

const enc = encodeURIComponent;

export const renderAccounts: Section = async (panel, me) => {
  const [users, roles] = await Promise.all([
    getJson<AdminUser[]>('/admin/users'),
    getJson<{ name: string }[]>('/admin/roles').catch(() => [] as { name: string }[]),
  ]);
  const status = statusLine('accounts-status');
  const redraw = async () => {
    clear(panel);
    await renderAccounts(panel, me);
  };

  const rows = users.map((u) => {
    const locked = u.locked_until !== null && new Date(u.locked_until) > new Date();
    const state = h('span', { class: `badge ${u.disabled ? 'off' : locked ? 'warn' : 'on'}`,
                               i18n: u.disabled ? 'admin.user.disabled' : locked ? 'admin.user.locked' : 'admin.user.enabled' });
    const toggle = h('button', { type: 'button', class: 'small', i18n: u.disabled ? 'admin.user.enable' : 'admin.user.disable',
      disabled: u.username === me.username });
    toggle.addEventListener('click', async () => {
      if (await act(toggle, status, 'admin.saved', () => sendJson('PATCH', `/admin/users/${enc(u.username)}`, { disabled: !u.disabled }))) await redraw();
    });
    const unlock = h('button', { type: 'button', class: 'small', i18n: 'admin.user.unlock', hidden: !locked });
    unlock.addEventListener('click', async () => {
      if (await act(unlock, status, 'admin.saved', () => sendJson('POST', `/admin/users/${enc(u.username)}/unlock`))) await redraw();
    });
    const remove = h('button', { type: 'button', class: 'small danger', i18n: 'admin.delete', disabled: u.username === me.username });
    remove.addEventListener('click', async () => {
      if (!confirm(u.username)) return;
      if (await act(remove, status, 'admin.deleted', () => sendJson('DELETE', `/admin/users/${enc(u.username)}`))) await redraw();
    });
    // the role, changed in place (the server refuses to demote the last super admin, and says so)
    const roleSelect = h('select', { class: 'role-select', i18nAriaLabel: 'admin.user.role', disabled: u.username === me.username },
      ...roles.map((r) => h('option', { value: r.name, selected: r.name === u.role }, r.name)));
    roleSelect.addEventListener('change', async () => {
      if (!(await act(toggle, status, 'admin.saved', () => sendJson('PATCH', `/admin/users/${enc(u.username)}`, { role: roleSelect.value })))) {
        roleSelect.value = u.role;
      }
    });
    const reset = h('button', { type: 'button', class: 'small', i18n: 'admin.user.resetPassword' });
    reset.addEventListener('click', async () => {
      const password = prompt(t('admin.user.newPassword', { user: u.username }));
      if (!password) return;
      await act(reset, status, 'admin.saved', () => sendJson('PATCH', `/admin/users/${enc(u.username)}`,
        { password, must_change_password: true }));
    });
    return h('tr', { data: { user: u.username } },
      h('td', {}, u.username), h('td', {}, u.display_name), h('td', {}, roles.length ? roleSelect : u.role), h('td', {}, state),
      h('td', {}, u.last_login ? formatDicomDate(u.last_login.slice(0, 10).replace(/-/g, '')) : '—'),
      h('td', { class: 'actions' }, toggle, unlock, reset, remove));
  });

  const username = h('input', { id: 'new-username', required: true, autocomplete: 'off', maxlength: 64 });
  const name = h('input', { id: 'new-display-name', autocomplete: 'off', maxlength: 128 });
  const role = h('select', { id: 'new-role' }, ...roles.map((r) => h('option', { value: r.name }, r.name)));
  const password = h('input', { id: 'new-password', type: 'password', required: true, autocomplete: 'new-password' });
  const create = h('button', { type: 'submit', class: 'primary', id: 'create-user', i18n: 'admin.user.create' });
  const form = h('form', { class: 'admin-form', id: 'user-form' },
    field('admin.user.username', username), field('admin.user.displayName', name), field('admin.user.role', role),
    field('admin.user.password', password), create);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const ok = await act(create, status, 'admin.saved', () => sendJson('POST', '/admin/users', {
      username: username.value, display_name: name.value, role: role.value, password: password.value,
    }));
    if (ok) await redraw();
  });
  panel.append(
    table('users-table', ['admin.user.username', 'admin.user.displayName', 'admin.user.role', 'admin.user.state',
                          'admin.user.lastLogin', 'admin.actions'], rows),
    h('h2', { i18n: 'admin.user.new' }), form, status);
};
