// The study list without a network: the studies kept offline.
import { Tag, personName, str } from '../dicom';
import { formatDicomDate, formatNumber } from '../i18n';
import { offlineIndex } from '../offline';
import { href } from '../router';
import { append, h } from '../ui/dom';

export function renderOfflineList(container: HTMLElement): void {
  const list = offlineIndex();
  append(container,
    h('h1', { class: 'page-title', i18n: 'offline.title' }),
    h('p', { class: 'status', i18n: list.length ? 'offline.intro' : 'offline.none' }),
    h('ul', { class: 'offline-list', id: 'offline-list' }, ...list.map((s) => h('li', {},
      h('a', { href: href(`/viewer/${s.uid}`) }, personName(str(s.study, Tag.PatientName)) || s.uid),
      ' ', formatDicomDate(str(s.study, Tag.StudyDate)), ' ', str(s.study, Tag.StudyDescription),
      ' ', h('span', { class: 'muted', i18n: 'offline.size', i18nParams: { mb: formatNumber(s.bytes / 1048576, 1) } })))));
}
