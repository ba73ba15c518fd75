// The frame around every page: header (navigation, language, help, user), the help panel
// with the keyboard shortcuts, and the guided tour shown once per user.
import { logout, type User } from '../api';
import { LANGUAGES, language, setLanguage, t, type MessageKey } from '../i18n';
import { href } from '../router';
import { append, clear, h } from './dom';
import { SHORTCUTS, isTyping, keyLabel } from './shortcuts';

// holding any of these shows the Administration link
const ADMIN_PERMISSIONS = ['manage_users', 'manage_roles', 'manage_settings', 'view_audit', 'assign_patients'];

export function renderShell(root: HTMLElement, user: User): HTMLElement {
  clear(root);
  const select = h('select', {
    id: 'language-select',
    class: 'language',
    i18nAriaLabel: 'nav.language',
    i18nTitle: 'nav.language',
    on: { change: (e) => void setLanguage((e.target as HTMLSelectElement).value) },
  });
  for (const l of LANGUAGES) {
    append(select, h('option', { value: l.code, lang: l.code, selected: l.code === language().code }, l.name));
  }
  window.addEventListener('voxa:language', () => {
    select.value = language().code;
  });
  const header = h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: href('/'), i18n: 'app.name' }),
    h(
      'nav',
      { class: 'nav' },
      h('a', { href: href('/'), i18n: 'nav.studies', id: 'nav-studies' }),
      user.permissions.includes('upload') ? h('a', { href: href('/upload'), i18n: 'nav.upload', id: 'nav-upload' }) : null,
      ADMIN_PERMISSIONS.some((p) => user.permissions.includes(p))
        ? h('a', { href: href('/admin'), i18n: 'nav.admin', id: 'nav-admin' })
        : null,
    ),
    h('div', { class: 'spacer' }),
    h('span', { class: 'offline-badge', id: 'offline-badge', hidden: navigator.onLine, i18n: 'common.offline' }),
    select,
    h('button', { class: 'icon-button', id: 'help-button', i18nTitle: 'nav.help', on: { click: () => openHelp() } }, '?'),
    h('button', { class: 'icon-button', id: 'tour-button', i18nTitle: 'tour.restart', on: { click: () => startTour(user, true) } }, '✦'),
    h('span', { class: 'user', title: user.role }, user.display_name || user.username),
    h('button', { class: 'link-button', id: 'logout-button', i18n: 'nav.signOut', on: { click: () => void logout() } }),
  );
  const main = h('main', { id: 'page', class: 'page' });
  append(root, header, main);
  const badge = header.querySelector<HTMLElement>('#offline-badge')!;
  window.addEventListener('online', () => (badge.hidden = true));
  window.addEventListener('offline', () => (badge.hidden = false));
  document.addEventListener('keydown', (event) => {
    if (event.key === '?' && !isTyping(event)) {
      event.preventDefault();
      openHelp();
    }
  });
  return main;
}

// ------------------------------------------------------------------ help panel

export function openHelp(): void {
  document.getElementById('help-panel')?.remove();
  const rows = (scope: string) =>
    SHORTCUTS.filter((s) => s.scope === scope).map((s) =>
      h(
        'tr',
        {},
        h('td', {}, ...s.keys.flatMap((k, i) => [i ? ' ' : null, keyChip(k)])),
        h('td', { i18n: s.action }),
      ),
    );
  const section = (title: MessageKey, scope: string) =>
    h('section', {}, h('h3', { i18n: title }), h('table', { class: 'shortcuts' }, h('tbody', {}, ...rows(scope))));
  const close = () => dialog.remove();
  const dialog = h(
    'div',
    { id: 'help-panel', class: 'modal-backdrop', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'help-title',
      on: { click: (e) => e.target === dialog && close(), keydown: (e) => (e as KeyboardEvent).key === 'Escape' && close() } },
    h(
      'div',
      { class: 'modal' },
      h('h2', { id: 'help-title', i18n: 'help.title' }),
      section('help.general', 'global'),
      section('help.studyList', 'list'),
      section('help.viewer', 'viewer'),
      h('h3', { i18n: 'help.mouse' }),
      h('ul', { class: 'mouse-help' }, ...(['help.mouseLeft', 'help.mouseLeftMeasure', 'help.mouseMiddle', 'help.mouseRight', 'help.mouseWheel', 'help.touch'] as MessageKey[]).map((k) => h('li', { i18n: k }))),
      h('div', { class: 'modal-actions' }, h('button', { class: 'primary', id: 'help-close', i18n: 'common.close', on: { click: close } })),
    ),
  );
  document.body.appendChild(dialog);
  dialog.querySelector<HTMLButtonElement>('#help-close')?.focus({ preventScroll: true });
}

function keyChip(key: string): HTMLElement {
  const label = keyLabel(key);
  return label ? h('kbd', { i18n: label }) : h('kbd', {}, key.toUpperCase());
}

// ------------------------------------------------------------------ guided tour

interface TourStep {
  title: MessageKey;
  body: MessageKey;
  target?: string; // a selector to highlight
}

const TOUR: TourStep[] = [
  { title: 'tour.welcomeTitle', body: 'tour.welcomeBody' },
  { title: 'tour.searchTitle', body: 'tour.searchBody', target: '#study-search' },
  { title: 'tour.resultsTitle', body: 'tour.resultsBody', target: '#study-results' },
  { title: 'tour.viewerTitle', body: 'tour.viewerBody' },
  { title: 'tour.helpTitle', body: 'tour.helpBody', target: '#help-button' },
  { title: 'tour.languageTitle', body: 'tour.languageBody', target: '#language-select' },
];

const tourKey = (user: User) => `voxa.tourDone.${user.username}`;

export function startTour(user: User, force = false): void {
  if (!force && localStorage.getItem(tourKey(user))) return;
  document.getElementById('tour')?.remove();
  let index = 0;
  const title = h('h2', { id: 'tour-title' });
  const body = h('p', { id: 'tour-body' });
  const counter = h('span', { class: 'tour-counter' });
  const back = h('button', { id: 'tour-back', i18n: 'common.back', on: { click: () => show(index - 1) } });
  const next = h('button', { id: 'tour-next', class: 'primary', on: { click: () => (index === TOUR.length - 1 ? finish() : show(index + 1)) } });
  const skip = h('button', { id: 'tour-skip', class: 'link-button', i18n: 'common.skip', on: { click: () => finish() } });
  const card = h('div', { class: 'tour-card', role: 'dialog', 'aria-labelledby': 'tour-title' }, title, body,
    h('div', { class: 'modal-actions' }, counter, skip, back, next));
  const overlay = h('div', { id: 'tour', class: 'tour' }, card);
  const unhighlight = () => document.querySelectorAll('.tour-highlight').forEach((el) => el.classList.remove('tour-highlight'));
  const paint = () => {
    const step = TOUR[index];
    title.textContent = t(step.title);
    body.textContent = t(step.body);
    counter.textContent = t('tour.step', { n: index + 1, total: TOUR.length });
    next.textContent = t(index === TOUR.length - 1 ? 'common.done' : 'common.next');
    back.disabled = index === 0;
  };
  function show(i: number) {
    index = Math.max(0, Math.min(TOUR.length - 1, i));
    unhighlight();
    const target = TOUR[index].target ? document.querySelector(TOUR[index].target!) : null;
    target?.classList.add('tour-highlight');
    paint();
  }
  function finish() {
    localStorage.setItem(tourKey(user), new Date().toISOString());
    unhighlight();
    window.removeEventListener('voxa:language', paint);
    overlay.remove();
  }
  window.addEventListener('voxa:language', paint);
  document.body.appendChild(overlay);
  show(0);
  next.focus();
}
