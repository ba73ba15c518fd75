// Administration: dashboard, accounts, roles, DICOM peers (with echo) and the audit trail, each
// a tab shown to users whose permissions allow it. Everything goes through Voxa's REST API
// (/admin/..., /modalities, /audit); the server checks every permission again.
import { currentUser, type User } from '../../api';
import type { MessageKey } from '../../i18n';
import { href, navigate, type PageRenderer } from '../../router';
import { h } from '../../ui/dom';
import { renderAccess } from './access';
import { renderAccounts } from './accounts';
import { renderAudit } from './audit';
import { renderDashboard } from './dashboard';
import { renderPeers } from './peers';
import { renderRoles } from './roles';

export type Section = (panel: HTMLElement, user: User) => Promise<void>;

const SECTIONS: { id: string; label: MessageKey; needs: string[]; render: Section }[] = [
  { id: 'dashboard', label: 'admin.tab.dashboard', needs: ['manage_settings', 'manage_users', 'view_audit'], render: renderDashboard },
  { id: 'accounts', label: 'admin.tab.accounts', needs: ['manage_users'], render: renderAccounts },
  { id: 'roles', label: 'admin.tab.roles', needs: ['manage_roles', 'manage_users'], render: renderRoles },
  { id: 'access', label: 'admin.tab.access', needs: ['assign_patients', 'manage_users'], render: renderAccess },
  { id: 'peers', label: 'admin.tab.peers', needs: ['manage_settings'], render: renderPeers },
  { id: 'audit', label: 'admin.tab.audit', needs: ['view_audit'], render: renderAudit },
];

export const renderAdmin: PageRenderer = async (container, route) => {
  const user = await currentUser();
  const allowed = SECTIONS.filter((s) => s.needs.some((p) => user.permissions.includes(p)));
  const chosen = allowed.find((s) => s.id === route.params.section) ?? allowed[0];
  if (!chosen) {
    container.appendChild(h('div', { class: 'error-box', role: 'alert' }, h('p', { i18n: 'admin.notAllowed' })));
    return;
  }
  if (route.params.section !== chosen.id) {
    navigate(href(`/admin/${chosen.id}`), true);
    return;
  }
  const tabs = h('nav', { class: 'tabs', role: 'tablist' }, ...allowed.map((s) =>
    h('a', { href: href(`/admin/${s.id}`), role: 'tab', id: `tab-${s.id}`, class: s.id === chosen.id ? 'active' : '',
             'aria-selected': s.id === chosen.id ? 'true' : 'false', i18n: s.label })));
  const panel = h('section', { class: 'admin-panel', id: `admin-${chosen.id}`, role: 'tabpanel' });
  container.append(h('h1', { i18n: 'nav.admin' }), tabs, panel);
  await chosen.render(panel, user);
};
