// Small building blocks of the administration sections: tables, labelled fields, and actions
// whose outcome (or the server's error message) is shown next to them.
import { HttpError } from '../../api';
import type { MessageKey } from '../../i18n';
import { append, clear, h, setMessage } from '../../ui/dom';

export function table(id: string, headers: MessageKey[], rows: HTMLTableRowElement[]): HTMLTableElement {
  return h('table', { class: 'table admin-table', id },
    h('thead', {}, h('tr', {}, ...headers.map((k) => h('th', { i18n: k })))),
    h('tbody', {}, ...rows));
}

export function field(label: MessageKey, input: HTMLElement): HTMLLabelElement {
  return h('label', { class: 'field' }, h('span', { i18n: label }), input);
}

export function message(e: unknown): string {
  return e instanceof HttpError || e instanceof Error ? e.message : String(e);
}

/** Run ``action`` from ``button``: disabled meanwhile; the outcome in ``status`` (role=status). */
export async function act(button: HTMLButtonElement, status: HTMLElement, done: MessageKey,
                          action: () => Promise<unknown>): Promise<boolean> {
  button.disabled = true;
  status.classList.remove('error');
  try {
    await action();
    setMessage(status, done);
    return true;
  } catch (e) {
    status.classList.add('error');
    setMessage(status, 'admin.failed', { message: message(e) });
    return false;
  } finally {
    button.disabled = false;
  }
}

export function statusLine(id: string): HTMLElement {
  return h('p', { class: 'status', id, role: 'status', 'aria-live': 'polite' });
}

/** Re-render ``panel`` with ``render`` after a change. */
export async function refreshPanel(panel: HTMLElement, render: (panel: HTMLElement) => Promise<void>): Promise<void> {
  clear(panel);
  await render(panel);
}

export { append, clear, h, setMessage };
