// What is written over an image: patient and study in the top corners, image number, slice
// position and window/zoom at the bottom, and the patient orientation at each edge.
import { Tag, personName, str, type DicomJson } from '../dicom';
import { formatDicomDate, formatNumber, t, type MessageKey } from '../i18n';
import { h } from '../ui/dom';

type Vec3 = [number, number, number] | number[];

const AXES: [MessageKey, MessageKey][] = [
  ['orientation.L', 'orientation.R'], // +x is the patient's left in DICOM (LPS)
  ['orientation.P', 'orientation.A'],
  ['orientation.H', 'orientation.F'],
];

/** The letters naming a direction in the patient (most significant axis first). */
export function orientationLetters(v: Vec3): string {
  const parts = [0, 1, 2]
    .map((axis) => ({ axis, value: v[axis] }))
    .filter((p) => Math.abs(p.value) > 0.25)
    .sort((a, b) => Math.abs(b.value) - Math.abs(a.value))
    .slice(0, 2);
  return parts.map((p) => t(AXES[p.axis][p.value > 0 ? 0 : 1])).join('');
}

function cross(a: Vec3, b: Vec3): number[] {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

export interface OverlayState {
  meta?: DicomJson;
  index?: number; // 0-based
  total?: number;
  windowWidth?: number;
  windowCenter?: number;
  zoom?: number;
  sliceMm?: number;
  label?: MessageKey; // a view name (Axial, Sagittal, ...)
  viewUp?: Vec3;
  viewPlaneNormal?: Vec3;
  /** A projection image's patient directions for the default frame's x and y (see LoadedSeries). */
  projectionFrame?: { row: number[]; column: number[] };
  /** No patient orientation is known: no markers. */
  noOrientation?: boolean;
}

export class Overlay {
  readonly root: HTMLElement;
  private corners: Record<'tl' | 'tr' | 'bl' | 'br', HTMLElement>;
  private edges: Record<'top' | 'bottom' | 'left' | 'right', HTMLElement>;
  private state: OverlayState = {};
  private pending = false;

  constructor() {
    const corner = (pos: string) => h('div', { class: `ov-corner ov-${pos}` });
    const edge = (pos: string) => h('div', { class: `ov-edge ov-${pos}`, data: { edge: pos } });
    this.corners = { tl: corner('tl'), tr: corner('tr'), bl: corner('bl'), br: corner('br') };
    this.edges = { top: edge('top'), bottom: edge('bottom'), left: edge('left'), right: edge('right') };
    this.root = h('div', { class: 'overlay', 'aria-hidden': 'true' }, ...Object.values(this.corners), ...Object.values(this.edges));
  }

  update(partial: OverlayState): void {
    Object.assign(this.state, partial);
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.paint();
    });
  }

  paint(): void {
    const s = this.state;
    const m = s.meta;
    const lines = (el: HTMLElement, items: (string | undefined | false)[]) => {
      el.replaceChildren(...items.filter((x): x is string => Boolean(x)).map((x) => h('div', {}, x)));
    };
    if (m) {
      const sex = str(m, Tag.PatientSex);
      lines(this.corners.tl, [
        personName(str(m, Tag.PatientName)),
        str(m, Tag.PatientID),
        [formatDicomDate(str(m, Tag.PatientBirthDate)), sex].filter(Boolean).join(' '),
      ]);
      lines(this.corners.tr, [
        str(m, Tag.StudyDescription),
        formatDicomDate(str(m, Tag.StudyDate)),
        [str(m, Tag.SeriesNumber) && t('overlay.series', { number: str(m, Tag.SeriesNumber) }), str(m, Tag.SeriesDescription)].filter(Boolean).join(' '),
      ]);
    }
    lines(this.corners.bl, [
      s.label && t(s.label),
      s.total ? t('overlay.image', { index: (s.index ?? 0) + 1, total: s.total }) : undefined,
      s.sliceMm !== undefined ? t('overlay.thickness', { mm: formatNumber(s.sliceMm, 1) }) : undefined,
    ]);
    lines(this.corners.br, [
      s.windowWidth !== undefined && s.windowCenter !== undefined
        ? t('overlay.window', { width: Math.round(s.windowWidth), center: Math.round(s.windowCenter) })
        : undefined,
      s.zoom ? t('overlay.zoom', { zoom: formatNumber(s.zoom, 2) }) : undefined,
    ]);
    const edges = Object.values(this.edges);
    edges.forEach((e) => (e.hidden = Boolean(s.noOrientation)));
    if (s.viewUp && s.viewPlaneNormal && !s.noOrientation) {
      let up = s.viewUp;
      let right = cross(up, s.viewPlaneNormal);
      const frame = s.projectionFrame;
      if (frame) {
        // world x and y stand for the image's row and column directions in the patient
        const normal = cross(frame.row, frame.column);
        const toPatient = (v: Vec3) => [0, 1, 2].map((i) => v[0] * frame.row[i] + v[1] * frame.column[i] + v[2] * normal[i]);
        up = toPatient(up);
        right = toPatient(right);
      }
      this.edges.top.textContent = orientationLetters(up);
      this.edges.bottom.textContent = orientationLetters(up.map((v) => -v));
      this.edges.right.textContent = orientationLetters(right);
      this.edges.left.textContent = orientationLetters(right.map((v) => -v));
    }
  }
}
