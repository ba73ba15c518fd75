// Upload: DICOM files, folders and ZIP files, dropped on the page or chosen, stored through
// STOW-RS (POST /dicom-web/studies) in batches with a progress bar and a result per file:
// stored, already stored, refused with the server's reason, or not a DICOM file.
import { unzipSync } from 'fflate';
import { findStudy, stowInstances, type StowAnswer } from '../api';
import { str, Tag, type DicomJson } from '../dicom';
import { formatDicomDate, formatNumber, t } from '../i18n';
import { href, type PageRenderer } from '../router';
import { append, clear, h, setMessage } from '../ui/dom';

// a batch: at most this many files or bytes per STOW-RS request, two requests at a time
const BATCH_FILES = 20;
const BATCH_BYTES = 50 * 1024 * 1024;
const IN_FLIGHT = 2;

type State = 'waiting' | 'sending' | 'stored' | 'duplicate' | 'refused' | 'notDicom' | 'failed' | 'cancelled';

interface Item {
  name: string;
  size: number;
  read: () => Promise<ArrayBuffer>;
  state: State;
  reason?: string;
  study?: string;
  row?: HTMLTableRowElement;
}

/** Files of a dropped folder, recursively (the File System entries API every browser has). */
async function entryFiles(entry: FileSystemEntry, path: string): Promise<File[]> {
  if (entry.isFile) {
    const file = await new Promise<File>((ok, fail) => (entry as FileSystemFileEntry).file(ok, fail));
    return [new File([file], `${path}${file.name}`, { type: file.type })];
  }
  if (!entry.isDirectory) return [];
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const found: File[] = [];
  for (;;) {
    // readEntries answers in chunks (100 in Chromium) until it answers none
    const chunk = await new Promise<FileSystemEntry[]>((ok, fail) => reader.readEntries(ok, fail));
    if (!chunk.length) break;
    for (const child of chunk) found.push(...(await entryFiles(child, `${path}${entry.name}/`)));
  }
  return found;
}

async function droppedFiles(data: DataTransfer): Promise<File[]> {
  const entries = [...data.items].map((i) => i.webkitGetAsEntry?.()).filter((e): e is FileSystemEntry => !!e);
  if (!entries.length) return [...data.files];
  const out: File[] = [];
  for (const e of entries) out.push(...(await entryFiles(e, '')));
  return out;
}

const isZip = (head: Uint8Array) => head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
const isDicom = (head: Uint8Array) =>
  head.length >= 132 && head[128] === 0x44 && head[129] === 0x49 && head[130] === 0x43 && head[131] === 0x4d;

/** A file as items: itself, or each member of a ZIP (folders and macOS metadata left out). */
async function itemsOf(file: File): Promise<Item[]> {
  const name = file.webkitRelativePath || file.name;
  const head = new Uint8Array(await file.slice(0, 132).arrayBuffer());
  if (!isZip(head)) {
    return [{ name, size: file.size, read: () => file.arrayBuffer(), state: isDicom(head) ? 'waiting' : 'notDicom' }];
  }
  let members: Record<string, Uint8Array>;
  try {
    members = unzipSync(new Uint8Array(await file.arrayBuffer()), {
      filter: (f) => !f.name.endsWith('/') && !f.name.startsWith('__MACOSX/'),
    });
  } catch (e) {
    return [{ name, size: file.size, read: () => file.arrayBuffer(), state: 'failed',
              reason: t('upload.badZip', { reason: e instanceof Error ? e.message : String(e) }) }];
  }
  return Object.entries(members).map(([member, bytes]) => ({
    name: `${name}/${member}`,
    size: bytes.byteLength,
    read: async () => bytes.slice().buffer,
    state: isDicom(bytes.subarray(0, 132)) ? 'waiting' : 'notDicom',
  }));
}

/** The result of each part of a STOW-RS answer, from Voxa's Warning header and the body. */
function partResults(answer: StowAnswer, count: number): { state: State; reason?: string; study?: string }[] {
  const body = answer.body as DicomJson | { error?: string } | null;
  if (![200, 202, 409].includes(answer.status)) {
    const reason = (body && 'error' in body && body.error) || `HTTP ${answer.status}`;
    return Array.from({ length: count }, () => ({ state: 'failed' as State, reason: String(reason) }));
  }
  const notes = new Map<number, { code: string; reason: string }>();
  for (const m of answer.warning.matchAll(/"part (\d+) \([^)]*\): ([0-9A-F]{4}) ((?:[^"\\]|\\.)*)"/g)) {
    notes.set(Number(m[1]), { code: m[2], reason: m[3] });
  }
  // the studies of the stored parts, in order (Retrieve URLs of the Referenced SOP Sequence)
  const referenced = ((body as DicomJson | null)?.['00081199']?.Value ?? []) as DicomJson[];
  const studies = referenced.map((item) => /\/studies\/([0-9.]+)\//.exec(String(item['00081190']?.Value?.[0] ?? ''))?.[1]);
  let nextStored = 0;
  return Array.from({ length: count }, (_, i) => {
    const note = notes.get(i + 1);
    if (note && !note.code.startsWith('B')) return { state: 'refused' as State, reason: `${note.reason} (${note.code})` };
    const study = studies[nextStored++];
    return note ? { state: 'duplicate' as State, study } : { state: 'stored' as State, study };
  });
}

export const renderUpload: PageRenderer = (container) => {
  let items: Item[] = [];
  let controller: AbortController | undefined;
  const picker = h('input', { type: 'file', id: 'upload-files', multiple: true, hidden: true });
  const folderPicker = h('input', { type: 'file', id: 'upload-folder', multiple: true, hidden: true, webkitdirectory: true });
  const zone = h('div', { class: 'drop-zone', id: 'drop-zone', tabindex: 0, role: 'button', i18nAriaLabel: 'upload.chooseFiles' },
    h('p', { class: 'drop-title', i18n: 'upload.drop' }),
    h('div', { class: 'drop-buttons' },
      h('button', { type: 'button', id: 'choose-files', class: 'primary', i18n: 'upload.chooseFiles', on: { click: (e) => { e.stopPropagation(); picker.click(); } } }),
      h('button', { type: 'button', id: 'choose-folder', i18n: 'upload.chooseFolder', on: { click: (e) => { e.stopPropagation(); folderPicker.click(); } } })));
  const progress = h('progress', { id: 'upload-progress', max: 1, value: 0 });
  const progressText = h('span', { id: 'upload-progress-text', class: 'muted' });
  const cancel = h('button', { type: 'button', id: 'upload-cancel', i18n: 'upload.cancel', hidden: true, on: { click: () => controller?.abort() } });
  const status = h('div', { class: 'upload-status', hidden: true }, progress, progressText, cancel);
  const summary = h('div', { id: 'upload-summary', class: 'upload-summary', role: 'status', 'aria-live': 'polite' });
  const body = h('tbody', { id: 'upload-results' });
  const table = h('table', { class: 'table upload-table', hidden: true },
    h('thead', {}, h('tr', {}, h('th', { i18n: 'upload.col.file' }), h('th', { class: 'num', i18n: 'upload.col.size' }),
      h('th', { i18n: 'upload.col.result' }))), body);

  function label(item: Item): HTMLElement {
    const key = `upload.status.${item.state}` as const;
    const cell = h('span', { class: `upload-state state-${item.state}` });
    setMessage(cell, key, item.reason !== undefined ? { reason: item.reason } : undefined);
    return cell;
  }

  function show(item: Item): void {
    const row = item.row ?? h('tr', { data: { name: item.name } });
    clear(row);
    row.dataset.state = item.state;
    append(row, h('td', { class: 'file-name' }, item.name), h('td', { class: 'num' }, `${formatNumber(Math.round(item.size / 1024))} KB`),
      h('td', {}, label(item)));
    if (!item.row) {
      item.row = row;
      body.appendChild(row);
    }
  }

  async function showSummary(): Promise<void> {
    const count = (s: State) => items.filter((i) => i.state === s).length;
    clear(summary);
    append(summary, h('p', { i18n: 'upload.summary', i18nParams: {
      stored: count('stored'), duplicates: count('duplicate'), refused: count('refused') + count('failed'),
      skipped: count('notDicom'), cancelled: count('cancelled') } }));
    const studies = [...new Set(items.map((i) => i.study).filter((s): s is string => !!s))];
    if (!studies.length) return;
    const list = h('ul', { class: 'upload-studies' });
    append(summary, h('h2', { i18n: 'upload.studies' }), list);
    for (const uid of studies.slice(0, 50)) {
      const link = h('a', { href: href(`/study/${uid}`), class: 'study-link' }, uid);
      const li = h('li', {}, link);
      list.appendChild(li);
      findStudy(uid).then((found: DicomJson | undefined) => {
        if (!found) return;
        const name = str(found, Tag.PatientName).replace(/\^/g, ' ');
        link.textContent = [name, formatDicomDate(str(found, Tag.StudyDate)), str(found, Tag.StudyDescription)]
          .filter(Boolean).join(' · ') || uid;
      }).catch(() => undefined);
    }
  }

  async function upload(files: File[]): Promise<void> {
    if (controller) return; // one upload at a time
    controller = new AbortController();
    const signal = controller.signal;
    items = [];
    clear(body);
    clear(summary);
    table.hidden = false;
    status.hidden = false;
    cancel.hidden = false;
    zone.classList.add('busy');
    setMessage(progressText, 'upload.reading', { count: files.length });
    for (const file of files) {
      for (const item of await itemsOf(file)) {
        items.push(item);
        show(item);
      }
    }
    const queue = items.filter((i) => i.state === 'waiting');
    const total = queue.reduce((n, i) => n + i.size, 0) || 1;
    progress.max = total;
    let sentDone = 0;
    const inFlight = new Map<number, number>();
    let filesDone = 0;
    const update = () => {
      const sent = sentDone + [...inFlight.values()].reduce((a, b) => a + b, 0);
      progress.value = Math.min(sent, total);
      setMessage(progressText, 'upload.progress', { done: filesDone, total: queue.length,
                                                    percent: Math.floor((100 * progress.value) / total) });
    };
    const batches: Item[][] = [];
    for (const item of queue) {
      const last = batches[batches.length - 1];
      if (last && last.length < BATCH_FILES && last.reduce((n, i) => n + i.size, 0) + item.size <= BATCH_BYTES) last.push(item);
      else batches.push([item]);
    }
    let next = 0;
    const worker = async (slot: number) => {
      while (next < batches.length && !signal.aborted) {
        const batch = batches[next++];
        for (const item of batch) {
          item.state = 'sending';
          show(item);
        }
        const bytes = batch.reduce((n, i) => n + i.size, 0);
        try {
          const answer = await stowInstances(await Promise.all(batch.map((i) => i.read())), (sent) => {
            inFlight.set(slot, Math.min(sent, bytes));
            update();
          }, signal);
          partResults(answer, batch.length).forEach((r, i) => Object.assign(batch[i], r));
        } catch (e) {
          const aborted = e instanceof DOMException && e.name === 'AbortError';
          for (const item of batch) {
            item.state = aborted ? 'cancelled' : 'failed';
            item.reason = aborted ? undefined : e instanceof Error ? e.message : String(e);
          }
        }
        inFlight.delete(slot);
        sentDone += bytes;
        filesDone += batch.length;
        for (const item of batch) show(item);
        update();
      }
    };
    update();
    await Promise.all(Array.from({ length: IN_FLIGHT }, (_, slot) => worker(slot)));
    for (const item of items) {
      if (item.state === 'waiting') {
        item.state = 'cancelled';
        show(item);
      }
    }
    cancel.hidden = true;
    zone.classList.remove('busy');
    controller = undefined;
    setMessage(progressText, signal.aborted ? 'upload.cancelled' : 'upload.done');
    await showSummary();
  }

  picker.addEventListener('change', () => {
    if (picker.files?.length) void upload([...picker.files]);
    picker.value = '';
  });
  folderPicker.addEventListener('change', () => {
    if (folderPicker.files?.length) void upload([...folderPicker.files]);
    folderPicker.value = '';
  });
  zone.addEventListener('click', () => picker.click());
  zone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      picker.click();
    }
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    if (e.dataTransfer) void droppedFiles(e.dataTransfer).then(upload);
  });
  // a drop anywhere else on the page must not open the file in the browser
  const stray = (e: DragEvent) => e.preventDefault();
  window.addEventListener('dragover', stray);
  window.addEventListener('drop', stray);

  append(container,
    h('section', { class: 'upload-page', id: 'upload-page' },
      h('h1', { i18n: 'upload.title' }),
      h('p', { class: 'muted', i18n: 'upload.intro' }),
      zone, picker, folderPicker, status, summary, table));
  return () => {
    controller?.abort();
    window.removeEventListener('dragover', stray);
    window.removeEventListener('drop', stray);
  };
};
