// Administration: accounts, roles, patient access grants, peers, audit search, dashboard.
// (Written by the administration work of issue 6.)
import type { PageRenderer } from '../../router';
import { h } from '../../ui/dom';

export const renderAdmin: PageRenderer = (container) => {
  container.appendChild(h('h1', { i18n: 'nav.admin' }));
};
