// DICOM peers (modalities, workstations, archives): list, add or replace, delete, and a C-ECHO
// whose round trip or failure is shown on the peer's row.
import { getJson, sendJson } from '../../api';
import { formatNumber } from '../../i18n';
import { act, clear, field, h, message, setMessage, statusLine, table } from './common';
import type { Section } from './index';

interface Modality { AET: string; Host: string; Port: number; Name: string; FromConfiguration: boolean; Account: string | null }

const enc = encodeURIComponent;

export const renderPeers: Section = async (panel, me) => {
  const peers = await getJson<Record<string, Modality>>('/modalities?expand');
  const status = statusLine('peers-status');
  const redraw = async () => {
    clear(panel);
    await renderPeers(panel, me);
  };
  const rows = Object.entries(peers).map(([name, p]) => {
    const result = h('span', { class: 'echo-result', 'aria-live': 'polite' });
    const echo = h('button', { type: 'button', class: 'small', i18n: 'admin.peer.echo' });
    echo.addEventListener('click', async () => {
      echo.disabled = true;
      result.className = 'echo-result';
      setMessage(result, 'admin.peer.echoing');
      try {
        const r = await sendJson<{ round_trip_ms: number }>('POST', `/modalities/${enc(name)}/echo`);
        result.classList.add('ok');
        setMessage(result, 'admin.peer.echoOk', { ms: formatNumber(r.round_trip_ms, 1) });
      } catch (e) {
        result.classList.add('error');
        setMessage(result, 'admin.peer.echoFailed', { message: message(e) });
      } finally {
        echo.disabled = false;
      }
    });
    const remove = h('button', { type: 'button', class: 'small danger', i18n: 'admin.delete', hidden: p.FromConfiguration });
    remove.addEventListener('click', async () => {
      if (!confirm(name)) return;
      if (await act(remove, status, 'admin.deleted', () => sendJson('DELETE', `/modalities/${enc(name)}`))) await redraw();
    });
    return h('tr', { data: { peer: name } }, h('td', {}, name), h('td', {}, p.AET), h('td', {}, `${p.Host}:${p.Port}`),
      h('td', {}, p.Account ?? ''), h('td', { class: 'actions' }, echo, remove, result));
  });
  const name = h('input', { id: 'peer-name', required: true, maxlength: 64, autocomplete: 'off' });
  const aet = h('input', { id: 'peer-aet', required: true, maxlength: 16, autocomplete: 'off' });
  const host = h('input', { id: 'peer-host', required: true, autocomplete: 'off' });
  const port = h('input', { id: 'peer-port', type: 'number', required: true, min: 1, max: 65535 });
  const account = h('input', { id: 'peer-account', autocomplete: 'off' });
  const save = h('button', { type: 'submit', class: 'primary', id: 'save-peer', i18n: 'admin.peer.save' });
  const form = h('form', { class: 'admin-form', id: 'peer-form' }, field('admin.peer.name', name), field('admin.peer.aet', aet),
    field('admin.peer.host', host), field('admin.peer.port', port), field('admin.peer.account', account), save);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body: Record<string, unknown> = { AET: aet.value, Host: host.value, Port: Number(port.value) };
    if (account.value) body.Account = account.value;
    if (await act(save, status, 'admin.saved', () => sendJson('PUT', `/modalities/${enc(name.value)}`, body))) await redraw();
  });
  panel.append(table('peers-table', ['admin.peer.name', 'admin.peer.aet', 'admin.peer.address', 'admin.peer.account', 'admin.actions'], rows),
    h('h2', { i18n: 'admin.peer.new' }), form, status);
};
