// A series as the viewer needs it: WADO-RS metadata registered with the image loader, one
// image id per frame, sorted along the slice normal, and whether it can be a volume.
import { wadors } from '@cornerstonejs/dicom-image-loader';
import { frameUrl, seriesMetadata } from '../api';
import { Tag, num, nums, str, type DicomJson } from '../dicom';

export interface LoadedSeries {
  studyUid: string;
  seriesUid: string;
  modality: string;
  description: string;
  number: string;
  first: DicomJson;
  imageIds: string[];
  sopByImageId: Map<string, { sop: string; frame: number | null; instance: DicomJson }>;
  imageIdBySop: Map<string, string>; // `${sop}/${frame ?? 1}` -> image id
  isVolume: boolean;
  /**
   * For images without Image Orientation (Patient) — projection radiographs — the patient
   * directions of the image's rows and columns from Patient Orientation (0020,0020); Cornerstone
   * then places the image in a default frame whose x and y stand for them.
   */
  projectionFrame?: { row: number[]; column: number[] };
}

const LETTER: Record<string, number[]> = {
  L: [1, 0, 0], R: [-1, 0, 0], P: [0, 1, 0], A: [0, -1, 0], H: [0, 0, 1], F: [0, 0, -1],
};

/** "L" or "LH" (an oblique direction) as a unit-ish LPS vector. */
function direction(code: string): number[] | undefined {
  const parts = [...code.toUpperCase()].map((c) => LETTER[c]);
  if (!parts.length || parts.some((p) => !p)) return undefined;
  const v = parts.reduce((a, b) => a.map((x, i) => x + b[i]), [0, 0, 0]);
  const n = Math.hypot(...v) || 1;
  return v.map((x) => x / n);
}

function projectionFrameOf(ds: DicomJson): LoadedSeries['projectionFrame'] {
  if (nums(ds, Tag.ImageOrientationPatient).length === 6) return undefined;
  const [rowCode, columnCode] = (ds['00200020']?.Value ?? []).map(String);
  const row = rowCode ? direction(rowCode) : undefined;
  const column = columnCode ? direction(columnCode) : undefined;
  return row && column ? { row, column } : undefined;
}

const loaded = new Map<string, Promise<LoadedSeries>>();

function hasPixels(ds: DicomJson): boolean {
  return Boolean(ds['7FE00010'] || ds[Tag.Rows]);
}

function normalOf(ds: DicomJson): number[] | null {
  const o = nums(ds, Tag.ImageOrientationPatient);
  if (o.length !== 6 || o.some((v) => !Number.isFinite(v))) return null;
  return [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
}

export function loadSeries(studyUid: string, seriesUid: string): Promise<LoadedSeries> {
  const key = `${studyUid}/${seriesUid}`;
  let found = loaded.get(key);
  if (!found) {
    found = build(studyUid, seriesUid);
    found.catch(() => loaded.delete(key));
    loaded.set(key, found);
  }
  return found;
}

async function build(studyUid: string, seriesUid: string): Promise<LoadedSeries> {
  const instances = (await seriesMetadata(studyUid, seriesUid)).filter(hasPixels);
  const normal = instances.length ? normalOf(instances[0]) : null;
  const position = (ds: DicomJson) => {
    const p = nums(ds, Tag.ImagePositionPatient);
    return normal && p.length === 3 ? p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2] : NaN;
  };
  const sortable = normal !== null && instances.every((ds) => Number.isFinite(position(ds)));
  instances.sort((a, b) =>
    sortable ? position(a) - position(b) : (num(a, Tag.InstanceNumber) ?? 0) - (num(b, Tag.InstanceNumber) ?? 0),
  );
  if (sortable) instances.reverse(); // head first: highest position along the normal (axial: superior) on top
  const origin = location.origin;
  const imageIds: string[] = [];
  const sopByImageId = new Map<string, { sop: string; frame: number | null; instance: DicomJson }>();
  const imageIdBySop = new Map<string, string>();
  for (const ds of instances) {
    const sop = str(ds, Tag.SOPInstanceUID);
    const frames = num(ds, Tag.NumberOfFrames) ?? 1;
    for (let f = 1; f <= frames; f++) {
      const imageId = `wadors:${origin}${frameUrl(studyUid, seriesUid, sop, f)}`;
      if (f === 1) wadors.metaDataManager.add(imageId, ds as unknown as Parameters<typeof wadors.metaDataManager.add>[1]);
      imageIds.push(imageId);
      sopByImageId.set(imageId, { sop, frame: frames > 1 ? f : null, instance: ds });
      imageIdBySop.set(`${sop}/${f}`, imageId);
    }
  }
  const first = instances[0] ?? {};
  const orientations = new Set(instances.map((ds) => nums(ds, Tag.ImageOrientationPatient).map((v) => v.toFixed(3)).join()));
  const modality = str(first, Tag.Modality);
  const isVolume = sortable && instances.length >= 3 && orientations.size === 1 && (num(first, Tag.NumberOfFrames) ?? 1) <= 1
    && !['DX', 'CR', 'XA', 'RF', 'MG', 'US', 'SR', 'SEG'].includes(modality);
  return {
    studyUid, seriesUid, modality, first, imageIds, sopByImageId, imageIdBySop, isVolume,
    projectionFrame: projectionFrameOf(first),
    description: str(first, Tag.SeriesDescription),
    number: str(first, Tag.SeriesNumber),
  };
}
