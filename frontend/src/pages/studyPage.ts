// One study: patient and study details, series thumbnails, the user's measurements, and the
// ways to look at it (viewer, MPR, 3D, OHIF), and keeping it for offline use.
import { currentUser, findStudy, HttpError, listMeasurements, NON_IMAGE_MODALITIES, ohifUrl, reportDocumentUrl, studyReports, studySeries, thumbnailUrl, type ReportDocument } from '../api';
import { describeMeasurement } from '../measurementText';
import { Tag, modalities, num, personName, str } from '../dicom';
import { formatDicomDate, formatDicomTime, type MessageKey } from '../i18n';
import { forgetOffline, keepOffline, offlineStudyUids } from '../offline';
import { href, type Cleanup, type Route } from '../router';
import { renderStudyAnalyses } from '../studyAnalyses';
import { append, clear, h, setMessage, toast } from '../ui/dom';


export async function renderStudyPage(container: HTMLElement, route: Route): Promise<Cleanup> {
  const uid = route.params.uid;
  append(container, h('p', { class: 'status', i18n: 'common.loading' }));
  const [study, series] = await Promise.all([findStudy(uid), studySeries(uid)]);
  if (!study) throw new HttpError(404, uid);
  clear(container);

  const detail = (label: MessageKey, value: string) =>
    value ? h('div', { class: 'detail' }, h('dt', { i18n: label }), h('dd', {}, value)) : null;
  const sex = str(study, Tag.PatientSex);
  const header = h('section', { class: 'study-header' },
    h('h1', { class: 'page-title', id: 'study-title' }, personName(str(study, Tag.PatientName)) || '—'),
    h('dl', { class: 'details' },
      detail('list.patientId', str(study, Tag.PatientID)),
      detail('study.birthDate', formatDicomDate(str(study, Tag.PatientBirthDate))),
      sex ? h('div', { class: 'detail' }, h('dt', { i18n: 'study.sex' }), h('dd', { i18n: sex === 'F' ? 'sex.F' : sex === 'M' ? 'sex.M' : 'sex.O' })) : null,
      detail('list.studyDate', `${formatDicomDate(str(study, Tag.StudyDate))} ${formatDicomTime(str(study, Tag.StudyTime))}`.trim()),
      detail('list.description', str(study, Tag.StudyDescription)),
      detail('list.modality', modalities(study)),
      detail('list.accession', str(study, Tag.AccessionNumber)),
      detail('list.referring', personName(str(study, Tag.ReferringPhysicianName))),
    ));

  const is3d = series.some((s) => ['CT', 'MR', 'PT', 'NM'].includes(str(s, Tag.Modality)) && (num(s, Tag.NumberOfSeriesRelatedInstances) ?? 0) >= 3);
  const offline = await offlineStudyUids();
  const offlineStatus = h('span', { class: 'muted', id: 'offline-status' });
  const offlineButton = h('button', { id: 'keep-offline', i18n: offline.has(uid) ? 'offline.forget' : 'offline.keep' });
  offlineButton.addEventListener('click', async () => {
    offlineButton.disabled = true;
    try {
      if ((await offlineStudyUids()).has(uid)) {
        await forgetOffline(uid);
        setMessage(offlineButton, 'offline.keep');
        setMessage(offlineStatus, 'offline.forgotten');
      } else {
        await keepOffline(uid, (done, total) => setMessage(offlineStatus, 'offline.progress', { done, total }));
        setMessage(offlineButton, 'offline.forget');
        setMessage(offlineStatus, 'offline.cached');
      }
    } catch (e) {
      toast('offline.failed', { message: (e as Error).message }, 'error');
    } finally {
      offlineButton.disabled = false;
    }
  });
  const actions = h('div', { class: 'study-actions' },
    h('a', { class: 'button primary', id: 'open-viewer', href: href(`/viewer/${uid}`), i18n: 'study.openViewer' }),
    is3d ? h('a', { class: 'button', id: 'open-mpr', href: href(`/viewer/${uid}`, { mode: 'mpr' }), i18n: 'study.openMpr' }) : null,
    is3d ? h('a', { class: 'button', id: 'open-3d', href: href(`/viewer/${uid}`, { mode: '3d' }), i18n: 'study.open3d' }) : null,
    h('a', { class: 'button', id: 'open-ohif', href: ohifUrl(uid), target: '_blank', rel: 'noopener', i18n: 'study.openOhif' }),
    offlineButton, offlineStatus);

  const grid = h('ul', { class: 'series-grid', id: 'series-grid' }, ...series.map((s) => {
    const seriesUid = str(s, Tag.SeriesInstanceUID);
    const count = num(s, Tag.NumberOfSeriesRelatedInstances) ?? 0;
    // reports, segmentations, key objects: no picture of their own; OHIF shows them with their images
    if (NON_IMAGE_MODALITIES.includes(str(s, Tag.Modality))) {
      return h('li', { class: 'series-card non-image' },
        h('a', { href: ohifUrl(uid), target: '_blank', rel: 'noopener', class: 'series-link', data: { series: seriesUid } },
          h('span', { class: 'series-glyph', 'aria-hidden': 'true' }, str(s, Tag.Modality)),
          h('span', { class: 'series-title' }, `${str(s, Tag.Modality)} ${str(s, Tag.SeriesNumber)}`.trim(), ' ', str(s, Tag.SeriesDescription)),
          h('span', { class: 'muted', i18n: 'study.imageCount', i18nParams: { count } })));
    }
    const img = h('img', { src: thumbnailUrl(uid, seriesUid), alt: str(s, Tag.SeriesDescription), loading: 'lazy', width: 128, height: 128 });
    img.addEventListener('error', () => img.classList.add('broken'));
    return h('li', { class: 'series-card' },
      h('a', { href: href(`/viewer/${uid}`, { series: seriesUid }), class: 'series-link', data: { series: seriesUid } },
        img,
        h('span', { class: 'series-title' }, `${str(s, Tag.Modality)} ${str(s, Tag.SeriesNumber)}`.trim(), ' ', str(s, Tag.SeriesDescription)),
        h('span', { class: 'muted', i18n: 'study.imageCount', i18nParams: { count } })));
  }));

  const measurements = h('section', { class: 'study-measurements', id: 'study-measurements' },
    h('h2', { i18n: 'viewer.measurements' }), h('p', { class: 'status', i18n: 'common.loading' }));
  const analyses = h('section', { class: 'study-analyses', id: 'study-analyses' });
  const reports = h('section', { class: 'study-reports', id: 'study-reports' });
  append(container,
    h('nav', { class: 'breadcrumb' }, h('a', { href: href('/'), i18n: 'study.backToList' })),
    header, actions, h('h2', { i18n: 'study.series' }), grid, reports, analyses, measurements);
  let stopAnalyses: () => void = () => undefined;
  try {
    const user = await currentUser();
    if (user.permissions.includes('view_report')) await renderReports(reports, uid);
    if (user.permissions.some((p) => p === 'view_images' || p === 'view_report')) {
      stopAnalyses = await renderStudyAnalyses(analyses, uid, series, user);
    }
  } catch (e) {
    analyses.append(h('p', { class: 'status error', i18n: 'error.generic', i18nParams: { message: (e as Error).message } }));
  }

  try {
    const list = await listMeasurements(uid);
    measurements.lastElementChild!.remove();
    if (!list.length) append(measurements, h('p', { class: 'muted', i18n: 'viewer.noMeasurements' }));
    else {
      append(measurements, h('ul', {}, ...list.map((m) => h('li', { class: 'measurement' },
        describeMeasurement(m), m.label && m.kind !== 'arrow' && m.kind !== 'text' ? ` — ${m.label}` : ''))));
    }
  } catch (e) {
    const p = measurements.lastElementChild as HTMLElement;
    setMessage(p, 'error.generic', { message: (e as Error).message });
  }
  return stopAnalyses;
}

/** The study's reports (documents it holds: SR reports, PDF, CDA), newest first, with status. */
async function renderReports(section: HTMLElement, studyUid: string): Promise<void> {
  append(section, h('h2', { i18n: 'report.title' }));
  let found: Awaited<ReturnType<typeof studyReports>>;
  try {
    found = await studyReports(studyUid);
  } catch (e) {
    append(section, h('p', { class: 'status error', i18n: 'error.generic', i18nParams: { message: (e as Error).message } }));
    return;
  }
  section.dataset.status = found.status;
  if (!found.reports.length) {
    append(section, h('p', { class: 'muted', i18n: 'report.none' }));
    return;
  }
  const open = (r: ReportDocument) => r.kind === 'sr'
    ? h('a', { href: ohifUrl(studyUid), target: '_blank', rel: 'noopener', i18n: 'report.openOhif' })
    : h('a', { href: reportDocumentUrl(studyUid, r.sop_instance_uid), target: '_blank', rel: 'noopener', i18n: 'report.openDocument' });
  append(section, h('ul', { class: 'report-list' }, ...found.reports.map((r) => h('li', { class: 'report', data: { status: r.status, sop: r.sop_instance_uid } },
    h('span', { class: `badge report-${r.status}`, i18n: r.status === 'final' ? 'report.final' : 'report.preliminary' }),
    h('strong', {}, r.title),
    h('span', { class: 'muted' }, `${formatDicomDate(r.date)} ${formatDicomTime(r.time)}`.trim()),
    r.verifying_observer ? h('span', { class: 'muted', i18n: 'report.signedBy', i18nParams: { name: personName(r.verifying_observer) } }) : null,
    open(r)))));
}
