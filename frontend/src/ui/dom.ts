// A tiny element builder. Text that users read is given as a message key (i18n, i18nTitle,
// ...), never as a literal; plain string children are data (names, dates, numbers).
import { t, type MessageKey } from '../i18n';

type Child = Node | string | number | null | undefined | false;
type Handler = (event: Event) => void;

export interface Attrs {
  class?: string;
  i18n?: MessageKey;
  i18nParams?: Record<string, string | number>;
  i18nTitle?: MessageKey;
  i18nPlaceholder?: MessageKey;
  i18nAriaLabel?: MessageKey;
  on?: Record<string, Handler>;
  data?: Record<string, string>;
  [attribute: string]: unknown;
}

const PROPERTIES = new Set(['value', 'checked', 'selected', 'disabled', 'hidden', 'type']);

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  const { class: cls, i18n, i18nParams, i18nTitle, i18nPlaceholder, i18nAriaLabel, on, data, ...rest } = attrs;
  if (cls) el.className = cls;
  if (i18n) {
    el.dataset.i18n = i18n;
    if (i18nParams) el.dataset.i18nParams = JSON.stringify(i18nParams);
    el.textContent = t(i18n, i18nParams);
  }
  if (i18nTitle) {
    el.dataset.i18nTitle = i18nTitle;
    el.title = t(i18nTitle);
  }
  if (i18nPlaceholder) {
    el.dataset.i18nPlaceholder = i18nPlaceholder;
    el.setAttribute('placeholder', t(i18nPlaceholder));
  }
  const aria = i18nAriaLabel ?? (i18nTitle && !i18n ? i18nTitle : undefined);
  if (aria) {
    el.dataset.i18nAriaLabel = aria;
    el.setAttribute('aria-label', t(aria));
  }
  for (const [name, fn] of Object.entries(on ?? {})) el.addEventListener(name, fn);
  for (const [k, v] of Object.entries(data ?? {})) el.dataset[k] = v;
  for (const [name, value] of Object.entries(rest)) {
    if (value === undefined || value === null || value === false) continue;
    if (PROPERTIES.has(name)) (el as unknown as Record<string, unknown>)[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, ...children);
  return el;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Set an element's message (and keep it translatable). */
export function setMessage(el: HTMLElement, key: MessageKey, params?: Record<string, string | number>): void {
  el.dataset.i18n = key;
  if (params) el.dataset.i18nParams = JSON.stringify(params);
  else delete el.dataset.i18nParams;
  el.textContent = t(key, params);
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** A short message at the bottom of the screen. */
export function toast(key: MessageKey, params?: Record<string, string | number>, kind: 'info' | 'error' = 'info'): void {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.appendChild(box);
  }
  const item = h('div', { class: `toast toast-${kind}`, i18n: key, i18nParams: params });
  box.appendChild(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 3500);
}
