// Studies kept for offline use: their DICOMweb answers (study and series searches, series
// metadata, every frame) stored in the "voxa-studies" cache, which the service worker answers
// from when the network is unreachable. A summary of each kept study is in localStorage for
// the offline study list.
import { DICOMWEB, findStudy, frameUrl, request, seriesMetadataUrl, studySeries, STUDY_FIELDS } from './api';
import { Tag, num, str, type DicomJson } from './dicom';

const CACHE = 'voxa-studies';
const INDEX_KEY = 'voxa.offlineStudies';
export const FRAME_ACCEPT = 'multipart/related; type=application/octet-stream; transfer-syntax=*';

export interface OfflineStudy {
  uid: string;
  study: DicomJson;
  savedAt: string;
  bytes: number;
}

export function offlineIndex(): OfflineStudy[] {
  try {
    return JSON.parse(localStorage.getItem(INDEX_KEY) ?? '[]') as OfflineStudy[];
  } catch {
    return [];
  }
}

function writeIndex(list: OfflineStudy[]): void {
  localStorage.setItem(INDEX_KEY, JSON.stringify(list));
}

export async function offlineStudyUids(): Promise<Set<string>> {
  return new Set(offlineIndex().map((s) => s.uid));
}

async function tellServiceWorker(): Promise<void> {
  const reg = 'serviceWorker' in navigator ? await navigator.serviceWorker.getRegistration('/app/') : undefined;
  reg?.active?.postMessage({ type: 'voxa-offline-changed' });
}

/** Download every answer the viewer needs for the study into the cache. */
export async function keepOffline(studyUid: string, progress: (done: number, total: number) => void): Promise<void> {
  if (!('caches' in window)) throw new Error('Cache API unavailable');
  const cache = await caches.open(CACHE);
  let bytes = 0;
  const put = async (url: string, accept: string) => {
    const req = new Request(url, { headers: { Accept: accept }, credentials: 'same-origin' });
    const response = await request(url, { headers: { Accept: accept } });
    const body = await response.clone().arrayBuffer();
    bytes += body.byteLength;
    await cache.put(req, response);
  };
  const study = await findStudy(studyUid);
  if (!study) throw new Error(studyUid);
  const series = await studySeries(studyUid);
  const params = new URLSearchParams({ StudyInstanceUID: studyUid });
  for (const f of STUDY_FIELDS) params.append('includefield', f);
  await put(`${DICOMWEB}/studies?${params}`, 'application/dicom+json');
  await put(`${DICOMWEB}/studies/${studyUid}/series?includefield=00180015`, 'application/dicom+json');
  const frames: string[] = [];
  for (const s of series) {
    const seriesUid = str(s, Tag.SeriesInstanceUID);
    const url = seriesMetadataUrl(studyUid, seriesUid);
    await put(url, 'application/dicom+json');
    const instances = (await (await cache.match(url))!.json()) as DicomJson[];
    for (const inst of instances) {
      const count = num(inst, Tag.NumberOfFrames) ?? 1;
      if (!inst['7FE00010'] && !inst[Tag.Rows]) continue; // no pixel data
      for (let f = 1; f <= count; f++) frames.push(frameUrl(studyUid, seriesUid, str(inst, Tag.SOPInstanceUID), f));
    }
  }
  let done = 0;
  progress(done, frames.length);
  const queue = [...frames];
  const worker = async () => {
    for (let url = queue.shift(); url; url = queue.shift()) {
      await put(url, FRAME_ACCEPT);
      progress(++done, frames.length);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  writeIndex([{ uid: studyUid, study, savedAt: new Date().toISOString(), bytes }, ...offlineIndex().filter((s) => s.uid !== studyUid)]);
  await tellServiceWorker();
}

export async function forgetOffline(studyUid: string): Promise<void> {
  const cache = await caches.open(CACHE);
  for (const req of await cache.keys()) {
    if (req.url.includes(studyUid)) await cache.delete(req);
  }
  writeIndex(offlineIndex().filter((s) => s.uid !== studyUid));
  await tellServiceWorker();
}
