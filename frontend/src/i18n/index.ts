// Run-time switchable translations. Every string the user reads comes from a catalogue in
// ./locales/<code>.json (English is bundled; the others are loaded when chosen). Elements carry
// their message key in data-i18n (text), data-i18n-title, data-i18n-placeholder and
// data-i18n-aria-label, so switching language re-translates the page in place; code that
// builds text itself listens for the 'voxa:language' event. The catalogue of a language is
// ./locales/<code>.json plus ./locales/<area>/<code>.json for each area (admin, upload, viewer, annotate),
// so that parts of the application keep their messages apart.
import enCore from './locales/en.json';
import enAdmin from './locales/admin/en.json';
import enUpload from './locales/upload/en.json';
import enViewer from './locales/viewer/en.json';
import enAnnotate from './locales/annotate/en.json';

const en = { ...enCore, ...enAdmin, ...enUpload, ...enViewer, ...enAnnotate };
export type Messages = Record<string, string>;
export type MessageKey = keyof typeof en;

export interface Language {
  code: string;
  name: string; // the language's own name for itself
  rtl?: boolean;
}

export const LANGUAGES: Language[] = [
  { code: 'en', name: 'English' },
  { code: 'es', name: 'Español' },
  { code: 'fr', name: 'Français' },
  { code: 'de', name: 'Deutsch' },
  { code: 'zh', name: '中文' },
  { code: 'ja', name: '日本語' },
  { code: 'ar', name: 'العربية', rtl: true },
  { code: 'hi', name: 'हिन्दी' },
  { code: 'pt', name: 'Português' },
];

const STORAGE_KEY = 'voxa.language';
const loaders = import.meta.glob<{ default: Messages }>(['./locales/**/*.json', '!./locales/**/en.json', '!./locales/en.json']);
let current: Language = LANGUAGES[0];
let messages: Messages = en;

export function language(): Language {
  return current;
}

/** The message for `key` in the current language (English when missing), `{name}` replaced. */
export function t(key: MessageKey, params?: Record<string, string | number>): string {
  let text = messages[key] ?? (en as Messages)[key] ?? key;
  if (params) {
    text = text.replace(/\{(\w+)\}/g, (whole, name: string) =>
      name in params ? formatValue(params[name]) : whole,
    );
  }
  return text;
}

function formatValue(value: string | number): string {
  return typeof value === 'number' ? formatNumber(value) : value;
}

export function formatNumber(value: number, fractionDigits?: number): string {
  const options: Intl.NumberFormatOptions =
    fractionDigits === undefined ? {} : { minimumFractionDigits: fractionDigits, maximumFractionDigits: fractionDigits };
  return new Intl.NumberFormat(current.code, options).format(value);
}

/** A DICOM DA value (YYYYMMDD) as a local date, or '' */
export function formatDicomDate(da: string | undefined): string {
  if (!da || !/^\d{8}$/.test(da)) return da ?? '';
  const date = new Date(Date.UTC(+da.slice(0, 4), +da.slice(4, 6) - 1, +da.slice(6, 8)));
  return new Intl.DateTimeFormat(current.code, { dateStyle: 'medium', timeZone: 'UTC' }).format(date);
}

/** A DICOM TM value (HHMMSS.frac) as a local time, or '' */
export function formatDicomTime(tm: string | undefined): string {
  if (!tm || !/^\d{2,6}/.test(tm)) return '';
  const hh = +tm.slice(0, 2), mm = +(tm.slice(2, 4) || '0'), ss = +(tm.slice(4, 6) || '0');
  const date = new Date(Date.UTC(2000, 0, 1, hh, mm, ss));
  return new Intl.DateTimeFormat(current.code, { timeStyle: 'short', timeZone: 'UTC' }).format(date);
}

export function preferredLanguage(): string {
  const stored = localStorage.getItem(STORAGE_KEY);
  if (stored && LANGUAGES.some((l) => l.code === stored)) return stored;
  for (const wanted of navigator.languages ?? [navigator.language]) {
    const code = wanted.toLowerCase().split('-')[0];
    if (LANGUAGES.some((l) => l.code === code)) return code;
  }
  return 'en';
}

/** Switch language: load its catalogue, set <html lang dir>, re-translate, tell listeners. */
export async function setLanguage(code: string): Promise<void> {
  const lang = LANGUAGES.find((l) => l.code === code) ?? LANGUAGES[0];
  let loaded: Messages = en;
  if (lang.code !== 'en') {
    const parts = Object.entries(loaders)
      .filter(([path]) => path.endsWith(`/${lang.code}.json`))
      .map(([, load]) => load());
    loaded = Object.assign({}, ...(await Promise.all(parts)).map((m) => m.default)) as Messages;
  }
  current = lang;
  messages = loaded;
  localStorage.setItem(STORAGE_KEY, lang.code);
  const html = document.documentElement;
  html.lang = lang.code;
  html.dir = lang.rtl ? 'rtl' : 'ltr';
  document.title = t('app.name');
  translate(document.body);
  window.dispatchEvent(new CustomEvent('voxa:language', { detail: lang.code }));
}

const ATTRIBUTES: [string, string][] = [
  ['i18nTitle', 'title'],
  ['i18nPlaceholder', 'placeholder'],
  ['i18nAriaLabel', 'aria-label'],
];

/** Re-translate every element under `root` that names a message key. */
export function translate(root: ParentNode): void {
  const all = root instanceof Element ? [root, ...root.querySelectorAll('*')] : [...root.querySelectorAll('*')];
  for (const el of all) {
    if (!(el instanceof HTMLElement)) continue;
    const key = el.dataset.i18n as MessageKey | undefined;
    if (key) {
      const params = el.dataset.i18nParams ? (JSON.parse(el.dataset.i18nParams) as Record<string, string | number>) : undefined;
      el.textContent = t(key, params);
    }
    for (const [data, attr] of ATTRIBUTES) {
      const k = el.dataset[data] as MessageKey | undefined;
      if (k) el.setAttribute(attr, t(k));
    }
  }
}
