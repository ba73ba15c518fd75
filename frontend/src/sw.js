/* Voxa web application service worker (built into dist/sw.js by vite.config.ts).
 *
 * - The app shell (index.html, its entry script and style, manifest, icons, catalogues) is
 *   cached at install, so /app/ opens offline.
 * - Navigations under /app/: network first (the server checks the session), the cached shell
 *   when the network is unreachable.
 * - /app/assets/*: content-hashed, so cache first; lazily loaded chunks (the viewer, codecs)
 *   are added as they are fetched. A new build replaces both caches when it activates.
 * - DICOMweb answers of studies the user chose to keep offline live in the "voxa-studies"
 *   cache (written by the page); they are answered from there only when the network fails.
 */
const VERSION = __VOXA_VERSION__;
const SHELL = __VOXA_SHELL__;
const SHELL_CACHE = 'voxa-shell-' + VERSION;
const ASSET_CACHE = 'voxa-assets-' + VERSION;
const STUDY_CACHE = 'voxa-studies';
const INDEX = '/app/';

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches.open(SHELL_CACHE)
      .then((cache) => cache.addAll(SHELL.map((url) => new Request(url, { cache: 'reload', credentials: 'same-origin' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      // a new build: the previous build's shell and assets go
      .then((keys) => Promise.all(keys
        .filter((k) => (k.startsWith('voxa-shell-') && k !== SHELL_CACHE) || (k.startsWith('voxa-assets') && k !== ASSET_CACHE))
        .map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

async function shellFallback(request) {
  const cache = await caches.open(SHELL_CACHE);
  return (await cache.match(request, { ignoreSearch: true })) || (await cache.match(INDEX)) || Response.error();
}

async function navigate(request) {
  try {
    return await fetch(request);
  } catch (err) {
    return shellFallback(request);
  }
}

async function asset(request) {
  const hit = (await caches.match(request));
  if (hit) return hit;
  const response = await fetch(request);
  if (response.ok && response.type === 'basic') {
    const copy = response.clone();
    caches.open(ASSET_CACHE).then((cache) => cache.put(request, copy)).catch(() => undefined);
  }
  return response;
}

async function networkThenCache(request, cacheName) {
  try {
    return await fetch(request);
  } catch (err) {
    const cache = await caches.open(cacheName);
    const hit = await cache.match(request);
    if (hit) return hit;
    throw err;
  }
}

// Frames pass through untouched unless some study is kept offline (no cost for everyone else).
let haveOfflineStudies = false;
function refreshOfflineFlag() {
  return caches.open(STUDY_CACHE).then((cache) => cache.keys()).then((keys) => { haveOfflineStudies = keys.length > 0; })
    .catch(() => { haveOfflineStudies = false; });
}
refreshOfflineFlag();
self.addEventListener('message', (event) => {
  if (event.data && event.data.type === 'voxa-offline-changed') event.waitUntil(refreshOfflineFlag());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === 'navigate' && url.pathname.startsWith('/app')) {
    event.respondWith(navigate(request));
  } else if (url.pathname.startsWith('/app/assets/')) {
    event.respondWith(asset(request));
  } else if (url.pathname.startsWith('/app/') && url.pathname !== '/app/sw.js') {
    event.respondWith(networkThenCache(request, SHELL_CACHE).catch(() => shellFallback(request)));
  } else if (haveOfflineStudies && url.pathname.startsWith('/dicom-web/')) {
    event.respondWith(networkThenCache(request, STUDY_CACHE));
  }
});
