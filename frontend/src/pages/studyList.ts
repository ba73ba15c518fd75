// The study list: QIDO-RS search with filters, sorting, paging, recent and saved searches,
// CSV export. Filters, sort and page live in the URL, so Back and bookmarks work.
import { getJson, searchStudies, studiesWithReports, STUDY_FIELDS, HttpError } from '../api';
import { Tag, modalities, num, personName, str, type DicomJson } from '../dicom';
import { formatDicomDate, formatDicomTime, formatNumber, t, type MessageKey } from '../i18n';
import { href, navigate, type Route } from '../router';
import { append, clear, h, setMessage } from '../ui/dom';
import { isTyping } from '../ui/shortcuts';
import { offlineStudyUids } from '../offline';

interface Filter {
  param: string; // URL parameter of the page
  label: MessageKey;
  type: 'text' | 'date' | 'select';
  qido?: (value: string, all: URLSearchParams) => void;
  options?: [string, MessageKey][]; // a select's choices other than the modality list
}

const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'XA', 'RF', 'US', 'MG', 'NM', 'PT', 'OT', 'SR', 'SEG'];

/** `*text*` unless the user typed wildcards themselves. */
const contains = (v: string) => (/[*?]/.test(v) ? v : `*${v}*`);

const FILTERS: Filter[] = [
  { param: 'name', label: 'list.patientName', type: 'text', qido: (v, p) => p.set('PatientName', contains(v)) },
  { param: 'pid', label: 'list.patientId', type: 'text', qido: (v, p) => p.set('PatientID', contains(v)) },
  { param: 'acc', label: 'list.accession', type: 'text', qido: (v, p) => p.set('AccessionNumber', contains(v)) },
  { param: 'from', label: 'list.dateFrom', type: 'date' },
  { param: 'to', label: 'list.dateTo', type: 'date' },
  { param: 'mod', label: 'list.modality', type: 'select', qido: (v, p) => p.set('ModalitiesInStudy', v) },
  // a series attribute: Voxa's QIDO-RS finds the studies with such a series (CS values are upper case)
  { param: 'body', label: 'list.bodyPart', type: 'text', qido: (v, p) => p.set('BodyPartExamined', contains(v.toUpperCase())) },
  { param: 'desc', label: 'list.description', type: 'text', qido: (v, p) => p.set('StudyDescription', contains(v)) },
  { param: 'ref', label: 'list.referring', type: 'text', qido: (v, p) => p.set('ReferringPhysicianName', contains(v)) },
  // not a DICOM attribute: the matches are narrowed with GET /analyses after the QIDO-RS search
  { param: 'ana', label: 'list.analysis', type: 'select', options: [
    ['', 'list.ana.any'], ['pending', 'list.ana.pending'], ['verified', 'list.ana.verified'],
    ['failed', 'list.ana.failed'], ['running', 'list.ana.running'], ['none', 'list.ana.none']] },
  // the reports a study holds (GET /reports): final, preliminary, none
  { param: 'rep', label: 'list.report', type: 'select', options: [
    ['', 'list.rep.any'], ['final', 'list.rep.final'], ['preliminary', 'list.rep.preliminary'], ['none', 'list.rep.none']] },
];

interface Column {
  id: string;
  label: MessageKey;
  value: (s: DicomJson) => string | number;
  show?: (s: DicomJson) => string;
}

const COLUMNS: Column[] = [
  { id: 'name', label: 'list.patientName', value: (s) => personName(str(s, Tag.PatientName)) },
  { id: 'pid', label: 'list.patientId', value: (s) => str(s, Tag.PatientID) },
  { id: 'date', label: 'list.studyDate', value: (s) => str(s, Tag.StudyDate) + str(s, Tag.StudyTime),
    show: (s) => `${formatDicomDate(str(s, Tag.StudyDate))} ${formatDicomTime(str(s, Tag.StudyTime))}`.trim() },
  { id: 'mod', label: 'list.modality', value: (s) => modalities(s) },
  { id: 'desc', label: 'list.description', value: (s) => str(s, Tag.StudyDescription) },
  { id: 'acc', label: 'list.accession', value: (s) => str(s, Tag.AccessionNumber) },
  { id: 'ref', label: 'list.referring', value: (s) => personName(str(s, Tag.ReferringPhysicianName)) },
  { id: 'series', label: 'list.series', value: (s) => num(s, Tag.NumberOfStudyRelatedSeries) ?? 0, show: (s) => formatNumber(num(s, Tag.NumberOfStudyRelatedSeries) ?? 0) },
  { id: 'images', label: 'list.images', value: (s) => num(s, Tag.NumberOfStudyRelatedInstances) ?? 0, show: (s) => formatNumber(num(s, Tag.NumberOfStudyRelatedInstances) ?? 0) },
];

const PAGE_SIZES = [10, 25, 50, 100];
const MAX_RESULTS = 1000;
const RECENT_KEY = 'voxa.recentSearches';
const SAVED_KEY = 'voxa.savedSearches';

interface SavedSearch {
  name: string;
  query: string;
}

let lastSearch: { key: string; results: DicomJson[]; truncated: boolean } | null = null;

function filterQuery(query: URLSearchParams): URLSearchParams {
  const out = new URLSearchParams();
  for (const f of FILTERS) {
    const v = query.get(f.param)?.trim();
    if (v) out.set(f.param, v);
  }
  return out;
}

function qidoParams(query: URLSearchParams): URLSearchParams {
  const p = new URLSearchParams();
  for (const f of FILTERS) {
    const v = query.get(f.param)?.trim();
    if (v && f.qido) f.qido(v, p);
  }
  const from = (query.get('from') ?? '').replace(/-/g, '');
  const to = (query.get('to') ?? '').replace(/-/g, '');
  if (from || to) p.set('StudyDate', from === to ? from : `${from}-${to}`);
  for (const f of STUDY_FIELDS) p.append('includefield', f);
  p.set('limit', String(MAX_RESULTS));
  return p;
}

/** The studies among ``results`` whose analyses are in the state the filter names. */
async function withAnalyses(results: DicomJson[], state: string): Promise<DicomJson[]> {
  const query = new URLSearchParams();
  if (state === 'pending' || state === 'verified') query.set('review', state);
  else if (state === 'failed' || state === 'running') query.set('status', state);
  const { studies } = await getJson<{ studies: Record<string, number> }>(`/analyses?${query}`);
  const has = (s: DicomJson) => str(s, Tag.StudyInstanceUID) in studies;
  return results.filter((s) => (state === 'none' ? !has(s) : has(s)));
}

/** The studies among ``results`` whose report status is the one the filter names. */
async function withReports(results: DicomJson[], state: string): Promise<DicomJson[]> {
  const { studies } = await studiesWithReports();
  const status = (s: DicomJson) => studies[str(s, Tag.StudyInstanceUID)] ?? 'none';
  return results.filter((s) => status(s) === state);
}

function readList(key: string): SavedSearch[] {
  try {
    return (JSON.parse(localStorage.getItem(key) ?? '[]') as SavedSearch[]).filter((s) => s && typeof s.query === 'string');
  } catch {
    return [];
  }
}

function describe(query: URLSearchParams): string {
  return [...query.entries()].map(([, v]) => v).join(' · ');
}

function remember(query: URLSearchParams): void {
  const q = query.toString();
  if (!q) return;
  const recent = [{ name: describe(query), query: q }, ...readList(RECENT_KEY).filter((s) => s.query !== q)].slice(0, 6);
  localStorage.setItem(RECENT_KEY, JSON.stringify(recent));
}

function compare(a: string | number, b: string | number): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: 'base' });
}

function csvCell(v: string | number): string {
  const s = String(v);
  return /[",\n\r;]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportCsv(rows: DicomJson[]): void {
  const lines = [COLUMNS.map((c) => csvCell(t(c.label))).join(',')];
  for (const s of rows) {
    lines.push(COLUMNS.map((c) => csvCell(c.id === 'date' ? `${str(s, Tag.StudyDate)} ${str(s, Tag.StudyTime)}`.trim() : c.value(s))).concat(csvCell(str(s, Tag.StudyInstanceUID))).join(','));
  }
  lines[0] += `,${csvCell('StudyInstanceUID')}`;
  const blob = new Blob(['\ufeff' + lines.join('\r\n') + '\r\n'], { type: 'text/csv;charset=utf-8' });
  const a = h('a', { href: URL.createObjectURL(blob), download: `voxa-studies-${new Date().toISOString().slice(0, 10)}.csv` });
  document.body.appendChild(a);
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
    a.remove();
  }, 1000);
}

export async function renderStudyList(container: HTMLElement, route: Route): Promise<() => void> {
  const query = route.query;
  const sort = query.get('sort') ?? 'date';
  const dir = query.get('dir') === 'asc' ? 'asc' : 'desc';
  const pageSize = PAGE_SIZES.includes(Number(query.get('size'))) ? Number(query.get('size')) : 25;
  let page = Math.max(1, Number(query.get('page')) || 1);

  // ---- the search form
  const inputs: Record<string, HTMLInputElement | HTMLSelectElement> = {};
  const fields = FILTERS.map((f) => {
    let input: HTMLInputElement | HTMLSelectElement;
    if (f.type === 'select' && f.options) {
      input = h('select', { id: `f-${f.param}`, name: f.param }, ...f.options.map(([value, label]) => h('option', { value, i18n: label })));
    } else if (f.type === 'select') {
      input = h('select', { id: `f-${f.param}`, name: f.param },
        h('option', { value: '', i18n: 'list.anyModality' }), ...MODALITIES.map((m) => h('option', { value: m }, m)));
    } else {
      input = h('input', { id: `f-${f.param}`, name: f.param, type: f.type, autocomplete: 'off' });
    }
    input.value = query.get(f.param) ?? '';
    inputs[f.param] = input;
    return h('label', { class: `field field-${f.param}` }, h('span', { i18n: f.label }), input);
  });
  const submit = (event?: Event) => {
    event?.preventDefault();
    const next = new URLSearchParams();
    for (const f of FILTERS) {
      const v = inputs[f.param].value.trim();
      if (v) next.set(f.param, v);
    }
    if (sort !== 'date' || dir !== 'desc') {
      next.set('sort', sort);
      next.set('dir', dir);
    }
    if (pageSize !== 25) next.set('size', String(pageSize));
    navigate(href('/', next));
  };
  const dateShortcut = (days: number) => () => {
    const end = new Date();
    const start = new Date(end.getTime() - days * 86400000);
    inputs.from.value = start.toISOString().slice(0, 10);
    inputs.to.value = end.toISOString().slice(0, 10);
    submit();
  };
  const form = h(
    'form',
    { id: 'study-search', class: 'filters', role: 'search', on: { submit } },
    ...fields,
    h('div', { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'primary', id: 'search-button', i18n: 'common.search' }),
      h('button', { type: 'button', id: 'clear-button', i18n: 'common.clear', on: { click: () => navigate(href('/')) } }),
      h('button', { type: 'button', class: 'chip', i18n: 'list.today', on: { click: dateShortcut(0) } }),
      h('button', { type: 'button', class: 'chip', i18n: 'list.last7', on: { click: dateShortcut(7) } }),
      h('button', { type: 'button', class: 'chip', i18n: 'list.last30', on: { click: dateShortcut(30) } }),
    ),
  );

  // ---- recent and saved searches
  const filters = filterQuery(query);
  const searches = h('div', { class: 'searches' });
  const renderSearches = () => {
    clear(searches);
    const saved = readList(SAVED_KEY);
    const recent = readList(RECENT_KEY);
    if (saved.length) {
      append(searches, h('span', { class: 'searches-label', i18n: 'list.saved' }),
        ...saved.map((s) => h('span', { class: 'chip saved' },
          h('a', { href: href('/', new URLSearchParams(s.query)) }, s.name),
          h('button', { class: 'chip-x', i18nTitle: 'list.forget', on: { click: () => {
            localStorage.setItem(SAVED_KEY, JSON.stringify(saved.filter((x) => x !== s)));
            renderSearches();
          } } }, '×'))));
    }
    if (recent.length) {
      append(searches, h('span', { class: 'searches-label', i18n: 'list.recent' }),
        ...recent.map((s) => h('a', { class: 'chip', href: href('/', new URLSearchParams(s.query)) }, s.name)));
    }
    if (filters.toString()) {
      append(searches, h('button', { class: 'chip', id: 'save-search', i18n: 'list.saveSearch', on: { click: () => {
        const name = prompt(t('list.saveName'), describe(filters));
        if (!name) return;
        const list = [{ name, query: filters.toString() }, ...saved.filter((x) => x.query !== filters.toString())].slice(0, 20);
        localStorage.setItem(SAVED_KEY, JSON.stringify(list));
        renderSearches();
      } } }));
    }
  };
  renderSearches();

  // ---- results
  const status = h('p', { class: 'status', id: 'study-status', i18n: 'common.loading' });
  const tableBox = h('div', { class: 'table-box' });
  const pager = h('div', { class: 'pager' });
  const exportButton = h('button', { id: 'export-csv', disabled: true, i18n: 'list.exportCsv' });
  const results = h('section', { id: 'study-results', class: 'results' },
    h('div', { class: 'results-head' }, status, exportButton), tableBox, pager);

  append(container, h('h1', { class: 'page-title', i18n: 'list.title' }), form, searches, results);

  const onKey = (event: KeyboardEvent) => {
    if (event.key === '/' && !isTyping(event)) {
      event.preventDefault();
      inputs.name.focus();
    }
  };
  document.addEventListener('keydown', onKey);
  const cleanup = () => document.removeEventListener('keydown', onKey);

  const params = qidoParams(query);
  const analysis = query.get('ana') ?? '';
  const report = query.get('rep') ?? '';
  const key = `${params}&ana=${analysis}&rep=${report}`;
  let found: { results: DicomJson[]; truncated: boolean };
  try {
    found = lastSearch?.key === key ? lastSearch : { key, ...(await searchStudies(params)) };
    if (analysis && lastSearch?.key !== key) found = { ...found, results: await withAnalyses(found.results, analysis) };
    if (report && lastSearch?.key !== key) found = { ...found, results: await withReports(found.results, report) };
    lastSearch = { key, ...found };
  } catch (e) {
    setMessage(status, e instanceof HttpError && e.status === 400 ? 'list.badQuery' : 'error.generic', { message: (e as Error).message });
    status.classList.add('error');
    return cleanup;
  }
  remember(filters);
  renderSearches();

  const column = COLUMNS.find((c) => c.id === sort) ?? COLUMNS[2];
  const rows = [...found.results].sort((a, b) => (dir === 'asc' ? 1 : -1) * compare(column.value(a), column.value(b)));
  const pages = Math.max(1, Math.ceil(rows.length / pageSize));
  page = Math.min(page, pages);
  const shown = rows.slice((page - 1) * pageSize, page * pageSize);
  setMessage(status, found.truncated ? 'list.truncated' : rows.length ? 'list.count' : 'list.noResults', { count: rows.length, max: MAX_RESULTS });
  exportButton.disabled = rows.length === 0;
  exportButton.addEventListener('click', () => exportCsv(rows));

  const withQuery = (changes: Record<string, string | undefined>) => {
    const next = new URLSearchParams(query);
    for (const [k, v] of Object.entries(changes)) {
      if (v === undefined) next.delete(k);
      else next.set(k, v);
    }
    return href('/', next);
  };
  const offline = await offlineStudyUids();
  const head = h('tr', {}, ...COLUMNS.map((c) => {
    const active = c.id === column.id;
    const nextDir = active && dir === 'desc' ? 'asc' : active ? 'desc' : c.id === 'date' ? 'desc' : 'asc';
    return h('th', { scope: 'col', 'aria-sort': active ? (dir === 'asc' ? 'ascending' : 'descending') : 'none', class: `col-${c.id}` },
      h('a', { href: withQuery({ sort: c.id, dir: nextDir, page: undefined }), class: 'sort', data: { sort: c.id } },
        h('span', { i18n: c.label }), active ? (dir === 'asc' ? ' ▲' : ' ▼') : ''));
  }), h('th', { class: 'col-actions' }));
  const body = h('tbody', {}, ...shown.map((s) => {
    const uid = str(s, Tag.StudyInstanceUID);
    return h('tr', { class: 'study-row', data: { uid } },
      ...COLUMNS.map((c) => h('td', { class: `col-${c.id}`, data: { label: t(c.label) } },
        c.id === 'name'
          ? h('a', { href: href(`/study/${uid}`), class: 'study-link' }, String(c.value(s)) || '—', offline.has(uid) ? h('span', { class: 'badge', i18nTitle: 'offline.cached' }, '⤓') : null)
          : c.show ? c.show(s) : String(c.value(s)))),
      h('td', { class: 'col-actions' }, h('a', { class: 'button small', href: href(`/viewer/${uid}`), i18n: 'list.view' })));
  }));
  // keep the data-label (used by the phone layout) in the current language
  const relabel = () => body.querySelectorAll<HTMLElement>('td[data-label]').forEach((td, i) => {
    td.dataset.label = t(COLUMNS[i % COLUMNS.length].label);
  });
  window.addEventListener('voxa:language', relabel);
  append(tableBox, h('table', { class: 'study-table' }, h('thead', {}, head), body));

  const sizeSelect = h('select', { id: 'page-size', i18nAriaLabel: 'list.pageSize', on: { change: (e) => navigate(withQuery({ size: (e.target as HTMLSelectElement).value, page: undefined })) } },
    ...PAGE_SIZES.map((n) => h('option', { value: String(n), selected: n === pageSize }, String(n))));
  append(pager,
    h('a', { class: `button small${page <= 1 ? ' disabled' : ''}`, href: withQuery({ page: String(page - 1) }), 'aria-disabled': page <= 1, i18n: 'list.previous', id: 'page-prev' }),
    h('span', { class: 'page-number', i18n: 'list.page', i18nParams: { page, pages } }),
    h('a', { class: `button small${page >= pages ? ' disabled' : ''}`, href: withQuery({ page: String(page + 1) }), 'aria-disabled': page >= pages, i18n: 'list.next', id: 'page-next' }),
    h('label', { class: 'page-size' }, h('span', { i18n: 'list.pageSize' }), sizeSelect));
  return () => {
    cleanup();
    window.removeEventListener('voxa:language', relabel);
  };
}
