// History-API routing under /app/. A page renders into the container and may return a
// cleanup function, run before the next page renders.
export type Cleanup = () => void;
export interface Route {
  name: string;
  params: Record<string, string>;
  query: URLSearchParams;
}
export type PageRenderer = (container: HTMLElement, route: Route) => Promise<Cleanup | void> | Cleanup | void;

export const BASE = '/app';

const PATTERNS: [string, RegExp][] = [
  ['studies', /^\/?(?:studies)?\/?$/],
  ['study', /^\/study\/(?<uid>[0-9.]+)\/?$/],
  ['viewer', /^\/viewer\/(?<uid>[0-9.]+)\/?$/],
  ['upload', /^\/upload\/?$/],
  ['admin', /^\/admin(?:\/(?<section>[a-z-]+))?\/?$/],
];

export function parse(location: Location | URL): Route {
  const path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : location.pathname;
  for (const [name, re] of PATTERNS) {
    const m = re.exec(path);
    if (m) return { name, params: { ...(m.groups ?? {}) }, query: new URLSearchParams(location.search) };
  }
  return { name: 'notFound', params: {}, query: new URLSearchParams(location.search) };
}

export function href(path: string, query?: Record<string, string | undefined> | URLSearchParams): string {
  let q = '';
  if (query instanceof URLSearchParams) q = query.toString();
  else if (query) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') p.set(k, v);
    q = p.toString();
  }
  return `${BASE}${path}${q ? `?${q}` : ''}`;
}

let onChange: () => void = () => undefined;

export function startRouter(render: () => void): void {
  onChange = render;
  window.addEventListener('popstate', () => onChange());
  document.addEventListener('click', (event) => {
    const a = (event.target as Element | null)?.closest?.('a');
    if (!a || a.target || a.hasAttribute('download') || event.defaultPrevented) return;
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith(`${BASE}/`) && url.pathname !== BASE) return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
  render();
}

/** Render the current page again (after a language change). */
export function refresh(): void {
  onChange();
}

export function navigate(url: string, replace = false): void {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  onChange();
}
