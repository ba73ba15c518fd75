// Voxa web application: boot (language, session, shell), routing, service worker.
import './styles.css';
import { currentUser, HttpError, prefetchViewer, type User } from './api';
import { preferredLanguage, setLanguage } from './i18n';
import { renderOfflineList } from './pages/offline';
import { renderStudyList } from './pages/studyList';
import { renderStudyPage } from './pages/studyPage';
import { parse, refresh, startRouter, type Cleanup, type PageRenderer } from './router';
import { clear, h } from './ui/dom';
import { renderShell, startTour } from './ui/shell';

const LAST_USER = 'voxa.lastUser';

// Opening the viewer straight from its address: its code (Cornerstone, about 3 MB) and its
// first requests start at once, alongside the session check.
const landing = parse(location);
let viewerModule = landing.name === 'viewer' ? import('./pages/viewer') : undefined;
viewerModule?.catch(() => undefined); // reported where it is awaited
if (landing.name === 'viewer') prefetchViewer(landing.params.uid, landing.query.get('series'), isVolumeMode(landing.query.get('mode')));

const PAGES: Record<string, () => Promise<PageRenderer>> = {
  studies: async () => renderStudyList,
  study: async () => renderStudyPage,
  viewer: async () => (await (viewerModule ??= import('./pages/viewer'))).renderViewer,
  upload: async () => (await import('./pages/upload')).renderUpload,
  admin: async () => (await import('./pages/admin')).renderAdmin,
};

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function showError(container: HTMLElement, e: unknown): void {
  clear(container);
  const status = e instanceof HttpError ? e.status : -1;
  const key = status === 404 ? 'error.notFound' : status === 403 ? 'error.forbidden' : status === 0 ? 'error.network' : 'error.generic';
  if (status === -1) console.error(e);
  container.appendChild(
    h('div', { class: 'error-box', role: 'alert' }, h('p', { i18n: key, i18nParams: { message: errorMessage(e) } })),
  );
}

async function boot(): Promise<void> {
  await setLanguage(preferredLanguage());
  const root = document.getElementById('app')!;
  let user: User;
  let offline = false;
  try {
    user = await currentUser();
    localStorage.setItem(LAST_USER, JSON.stringify(user));
  } catch (e) {
    const cached = localStorage.getItem(LAST_USER);
    if (!(e instanceof HttpError && e.status === 0) || !cached) throw e;
    user = JSON.parse(cached) as User;
    offline = true;
  }
  const main = renderShell(root, user);
  let cleanup: Cleanup | void;
  let generation = 0;
  startRouter(async () => {
    const gen = ++generation;
    if (cleanup) {
      try {
        cleanup();
      } catch (e) {
        console.warn('page cleanup failed', e);
      }
      cleanup = undefined;
    }
    clear(main);
    const route = parse(location);
    main.dataset.page = route.name;
    document.body.dataset.page = route.name;
    try {
      const load = PAGES[route.name];
      if (!load) throw new HttpError(404, location.pathname);
      performance.mark(`voxa:route:${route.name}`);
      if (route.name === 'viewer') prefetchViewer(route.params.uid, route.query.get('series'), isVolumeMode(route.query.get('mode'))); // shared with the landing one
      const render = offline && !navigator.onLine && route.name === 'studies' ? renderOfflineList : await load();
      const done = await render(main, route);
      if (gen !== generation) {
        if (done) done();
        return;
      }
      cleanup = done;
    } catch (e) {
      if (gen === generation) showError(main, e);
    }
  });
  // pages whose text is built from data (dates, numbers) are rendered again in the new
  // language; the viewer keeps its images and repaints its own text
  window.addEventListener('voxa:language', () => {
    if (parse(location).name !== 'viewer') refresh();
  });
  startTour(user);
  registerServiceWorker();
}

function registerServiceWorker(): void {
  if (!import.meta.env.PROD || !('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register('/app/sw.js', { scope: '/app/' }).catch((e) => console.warn('service worker not registered', e));
}

boot().catch((e) => {
  const root = document.getElementById('app')!;
  showError(root, e);
});

function isVolumeMode(mode: string | null): boolean {
  return mode === 'mpr' || mode === '3d';
}
