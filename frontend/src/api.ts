// Voxa's public HTTP APIs, as any other client uses them: the session (/auth/me, /logout),
// DICOMweb (QIDO-RS, WADO-RS metadata, thumbnails) and the measurements REST API.
import type { DicomJson } from './dicom';

import { openSeriesPixelData } from './pixelDataStream';

export const DICOMWEB = '/dicom-web';

export class HttpError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export interface User {
  username: string;
  display_name: string;
  role: string;
  permissions: string[];
}

let csrfToken: string | null = null;

/** Send the browser to Voxa's login page, which brings it back here afterwards. */
export function signIn(): never {
  const here = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(here)}`);
  throw new HttpError(401, 'sign in');
}

export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const method = (init.method ?? 'GET').toUpperCase();
  if (!['GET', 'HEAD', 'OPTIONS'].includes(method) && csrfToken) headers.set('X-CSRF-Token', csrfToken);
  let response: Response;
  try {
    response = await fetch(path, { ...init, headers, credentials: 'same-origin' });
  } catch (e) {
    throw new HttpError(0, navigator.onLine ? String(e) : 'offline');
  }
  if (response.status === 401) signIn();
  if (!response.ok) {
    let message = response.statusText;
    try {
      const body = await response.json();
      message = body.error ?? body.detail ?? message;
      if (typeof message !== 'string') message = JSON.stringify(message);
    } catch {
      /* not JSON */
    }
    throw new HttpError(response.status, message);
  }
  return response;
}

export async function getJson<T>(path: string, accept = 'application/json'): Promise<T> {
  const r = await request(path, { headers: { Accept: accept } });
  return (await r.json()) as T;
}

/** A JSON request to one of Voxa's APIs (CSRF header, errors as HttpError with the server's message). */
export async function sendJson<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await request(path, {
    method,
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return (await r.json()) as T;
}

// ------------------------------------------------------------------ the session

export async function currentUser(): Promise<User> {
  const me = await getJson<{ user: User; csrf_token: string | null }>('/auth/me');
  csrfToken = me.csrf_token;
  return me.user;
}

/** Signs out; after a single sign-on the provider's logout comes next (it returns to the login page). */
export async function logout(): Promise<void> {
  let next = '/login?next=%2Fapp%2F';
  try {
    const answer = await sendJson<{ end_session?: string }>('POST', '/logout');
    if (answer?.end_session) next = answer.end_session;
  } finally {
    location.assign(next);
  }
}

// ------------------------------------------------------------------ DICOMweb

const DICOM_JSON = 'application/dicom+json';

export interface QidoResult {
  results: DicomJson[];
  truncated: boolean;
}

export const STUDY_FIELDS = ['00081030', '00080061', '00080090', '00100030', '00100040', '00201206', '00201208', '00180015'];

export async function searchStudies(params: URLSearchParams): Promise<QidoResult> {
  const r = await request(`${DICOMWEB}/studies?${params}`, { headers: { Accept: DICOM_JSON } });
  const text = await r.text();
  const results = text ? (JSON.parse(text) as DicomJson[]) : [];
  return { results, truncated: (r.headers.get('Warning') ?? '').includes('exceeded') };
}

export async function findStudy(studyUid: string): Promise<DicomJson | undefined> {
  const params = new URLSearchParams({ StudyInstanceUID: studyUid });
  for (const f of STUDY_FIELDS) params.append('includefield', f);
  return (await searchStudies(params)).results[0];
}

/**
 * The same GET asked for twice within a few seconds shares one request: the page starts the
 * viewer's first requests while the viewer's code is still loading.
 */
const recent = new Map<string, { at: number; answer: Promise<unknown> }>();
function shared<T>(key: string, get: () => Promise<T>): Promise<T> {
  const now = performance.now();
  for (const [k, v] of recent) if (now - v.at > 10_000) recent.delete(k);
  const hit = recent.get(key);
  if (hit) return hit.answer as Promise<T>;
  const answer = get();
  recent.set(key, { at: now, answer });
  answer.catch(() => recent.delete(key));
  return answer;
}

export function studySeries(studyUid: string): Promise<DicomJson[]> {
  const url = `${DICOMWEB}/studies/${studyUid}/series?includefield=00180015`;
  return shared(url, async () => {
    const r = await request(url, { headers: { Accept: DICOM_JSON } });
    const text = await r.text();
    return text ? (JSON.parse(text) as DicomJson[]) : [];
  });
}

export function seriesMetadataUrl(studyUid: string, seriesUid: string): string {
  return `${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/metadata`;
}

export function seriesMetadata(studyUid: string, seriesUid: string): Promise<DicomJson[]> {
  const url = seriesMetadataUrl(studyUid, seriesUid);
  return shared(url, () => getJson<DicomJson[]>(url, DICOM_JSON));
}

/** Modalities whose series hold no images to show. */
export const NON_IMAGE_MODALITIES = ['SR', 'KO', 'PR', 'SEG', 'RTSTRUCT', 'DOC', 'REG'];

/** The series the viewer opens first: the one asked for, else the first with images. */
export function firstSeries(series: DicomJson[], wanted?: string | null): DicomJson | undefined {
  const uid = (s: DicomJson) => String(s['0020000E']?.Value?.[0] ?? '');
  const modality = (s: DicomJson) => String(s['00080060']?.Value?.[0] ?? '');
  return series.find((s) => wanted && uid(s) === wanted) ?? series.find((s) => !NON_IMAGE_MODALITIES.includes(modality(s)));
}

/**
 * Start the viewer's first requests (series list, first series' metadata and, for MPR and 3D,
 * its frames) before its code has loaded.
 */
export function prefetchViewer(studyUid: string, wanted?: string | null, volume = false): void {
  studySeries(studyUid)
    .then((series) => {
      const first = firstSeries(series, wanted);
      const uid = String(first?.['0020000E']?.Value?.[0] ?? '');
      const frames = Number(first?.['00201209']?.Value?.[0] ?? 0);
      const modality = String(first?.['00080060']?.Value?.[0] ?? '');
      if (uid && volume && frames >= 16 && ['CT', 'MR', 'PT', 'NM'].includes(modality)) {
        openSeriesPixelData(uid, seriesPixelDataUrl(studyUid, uid));
      }
      if (uid) return seriesMetadata(studyUid, uid);
      return undefined;
    })
    .catch(() => undefined);
}

/** The WADO-RS Pixel Data resource of a series: every frame in one response. */
export function seriesPixelDataUrl(studyUid: string, seriesUid: string): string {
  return `${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/pixeldata`;
}

export function thumbnailUrl(studyUid: string, seriesUid: string): string {
  return `${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/thumbnail`;
}

export function frameUrl(studyUid: string, seriesUid: string, sopUid: string, frame = 1): string {
  return `${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/instances/${sopUid}/frames/${frame}`;
}

export function ohifUrl(studyUid: string): string {
  return `/ohif/viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`;
}

// ------------------------------------------------------------------ reports

/** A report document the study holds (GET /reports/studies/{uid}). */
export interface ReportDocument {
  series_instance_uid: string;
  sop_instance_uid: string;
  kind: 'sr' | 'pdf' | 'cda';
  title: string;
  status: 'final' | 'preliminary';
  completion_flag: string;
  verification_flag: string;
  date: string;
  time: string;
  verifying_observer: string;
}

export function studyReports(studyUid: string): Promise<{ status: 'final' | 'preliminary' | 'none'; reports: ReportDocument[] }> {
  return getJson(`/reports/studies/${studyUid}`);
}

/** The studies the user may see that have reports, with their status (final, preliminary). */
export function studiesWithReports(): Promise<{ studies: Record<string, 'final' | 'preliminary'> }> {
  return getJson('/reports');
}

export function reportDocumentUrl(studyUid: string, sopUid: string): string {
  return `/reports/studies/${studyUid}/documents/${sopUid}`;
}

// ------------------------------------------------------------------ measurements

export interface Quantity {
  value: number;
  unit: string;
}

export interface StoredMeasurement {
  id: number;
  study_instance_uid: string;
  series_instance_uid: string;
  sop_instance_uid: string;
  frame_number: number | null;
  user: string;
  kind: string;
  label: string;
  graphic: { points?: [number, number][]; points_mm?: [number, number, number][] };
  values: Record<string, Quantity>;
  created_at: string;
}

export interface MeasurementIn {
  kind: string;
  label?: string;
  sop_instance_uid: string;
  frame_number?: number | null;
  points?: [number, number][];
  points_mm?: [number, number, number][];
}

const measurementsPath = (studyUid: string) => `/measurements/studies/${encodeURIComponent(studyUid)}`;

export function listMeasurements(studyUid: string): Promise<StoredMeasurement[]> {
  return getJson<StoredMeasurement[]>(measurementsPath(studyUid));
}

export function createMeasurement(studyUid: string, body: MeasurementIn): Promise<StoredMeasurement> {
  return sendJson<StoredMeasurement>('POST', measurementsPath(studyUid), body);
}

export function updateMeasurement(studyUid: string, id: number, body: MeasurementIn): Promise<StoredMeasurement> {
  return sendJson<StoredMeasurement>('PUT', `${measurementsPath(studyUid)}/${id}`, body);
}

export interface SrExport {
  sop_instance_uid: string;
  series_instance_uid: string;
  measurements: number;
  stored: boolean;
}

/** The caller's measurements of the study as a DICOM SR (TID 1500), stored in the archive. */
export function exportMeasurementsSr(studyUid: string): Promise<SrExport> {
  return sendJson<SrExport>('POST', `${measurementsPath(studyUid)}/export-sr`);
}

export function deleteMeasurement(studyUid: string, id: number): Promise<unknown> {
  return sendJson('DELETE', `${measurementsPath(studyUid)}/${id}`);
}

// ------------------------------------------------------------------ upload (STOW-RS)

export interface StowAnswer {
  status: number;
  body: DicomJson | { error?: string } | null;
  warning: string;
}

/**
 * One STOW-RS request of several instances (multipart/related; type="application/dicom"),
 * through XMLHttpRequest for its upload progress (fetch has none). Resolves with the HTTP
 * status, the JSON answer and the Warning header (Voxa names each refused or duplicate part
 * there: `part N (uid): CODE reason`); rejects only when the request could not be made.
 */
export function stowInstances(parts: ArrayBuffer[], onProgress: (sent: number) => void,
                              signal: AbortSignal): Promise<StowAnswer> {
  const boundary = `voxa-${crypto.randomUUID()}`;
  const chunks: BlobPart[] = [];
  for (const part of parts) chunks.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, part, '\r\n');
  chunks.push(`--${boundary}--\r\n`);
  const body = new Blob(chunks);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `${DICOMWEB}/studies`);
    xhr.setRequestHeader('Content-Type', `multipart/related; type="application/dicom"; boundary=${boundary}`);
    xhr.setRequestHeader('Accept', 'application/dicom+json');
    if (csrfToken) xhr.setRequestHeader('X-CSRF-Token', csrfToken);
    xhr.withCredentials = true;
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      if (xhr.status === 401) signIn();
      let answer: StowAnswer['body'] = null;
      try {
        answer = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        answer = { error: xhr.statusText };
      }
      onProgress(body.size);
      resolve({ status: xhr.status, body: answer, warning: xhr.getResponseHeader('Warning') ?? '' });
    };
    xhr.onerror = () => reject(new HttpError(0, navigator.onLine ? 'network error' : 'offline'));
    xhr.onabort = () => reject(new DOMException('cancelled', 'AbortError'));
    signal.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(body);
  });
}
