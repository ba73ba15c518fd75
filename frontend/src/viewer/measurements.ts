// Measurements drawn with Cornerstone's annotation tools (length, angle, Cobb angle, rectangle
// and ellipse ROI, probe, arrow), kept on the server per study and user
// (/measurements/studies/{study}): a finished drawing is created there, a moved handle or a new
// label updates it, a deletion deletes it; on opening, the user's stored ones are drawn again.
// The server computes the values (lengths, angles, ROI statistics in HU) from the image.
// Image coordinates are DICOM's (column, row) with (0, 0) the top-left corner of the
// top-left pixel, the convention of Cornerstone's worldToImageCoords as well.
import {
  createMeasurement,
  deleteMeasurement,
  exportMeasurementsSr,
  listMeasurements,
  updateMeasurement,
  type MeasurementIn,
  type StoredMeasurement,
} from '../api';
import { describeMeasurement } from '../measurementText';
import { h, toast } from '../ui/dom';
import { core, tools } from './cs';
import type { LoadedSeries } from './series';

type Point2 = [number, number];
type Point3 = [number, number, number];
type Annotation = {
  annotationUID?: string;
  metadata: { toolName: string; referencedImageId?: string };
  data: { handles: { points: Point3[] }; label?: string; text?: string; contour?: { polyline: Point3[]; closed?: boolean } };
};

const UID_PREFIX = 'voxa-measurement-';

/** How a Cornerstone tool's handles map to a kind of the measurements API, and back. */
interface ToolKind {
  tool: string;
  kind: string;
  points: number; // handles the tool has (0: the outline is a polyline, data.contour)
  toServer?: (p: Point2[]) => Point2[];
  fromServer?: (p: Point2[]) => Point2[];
}

export const TOOL_KINDS: ToolKind[] = [
  { tool: tools.LengthTool.toolName, kind: 'distance', points: 2 },
  { tool: tools.AngleTool.toolName, kind: 'angle', points: 3 },
  { tool: tools.CobbAngleTool.toolName, kind: 'cobb_angle', points: 4 },
  {
    // Cornerstone keeps four corners (top-left, top-right, bottom-left, bottom-right); the API two
    tool: tools.RectangleROITool.toolName, kind: 'rectangle_roi', points: 4,
    toServer: (p) => [p[0], p[3]],
    fromServer: ([a, b]) => [a, [b[0], a[1]], [a[0], b[1]], b],
  },
  { tool: tools.EllipticalROITool.toolName, kind: 'ellipse_roi', points: 4 },
  { tool: tools.ProbeTool.toolName, kind: 'probe', points: 1 },
  { tool: tools.ArrowAnnotateTool.toolName, kind: 'arrow', points: 2 },
  // a closed outline: Cornerstone keeps it in data.contour.polyline (no handles)
  { tool: tools.PlanarFreehandROITool.toolName, kind: 'freehand_roi', points: 0 },
  // a text at a point, the text its label (Cornerstone's label keeps the point twice)
  { tool: tools.LabelTool.toolName, kind: 'text', points: 2, toServer: (p) => [p[0]], fromServer: ([a]) => [a, a] },
];
const byTool = new Map(TOOL_KINDS.map((k) => [k.tool, k]));
const byKind = new Map(TOOL_KINDS.map((k) => [k.kind, k]));

export interface MeasurementHost {
  studyUid: string;
  /** The series shown in the viewer, to find the image an annotation references. */
  seriesFor(imageId: string): LoadedSeries | undefined;
  /** An image of another study shown for comparison: measurements on it are not saved here. */
  isPrior(imageId: string): boolean;
  /** A stack viewport element showing this image id's series (for drawing restored ones). */
  elementFor(imageId: string): HTMLDivElement | undefined;
  /** Show the image a measurement is on. */
  jumpTo(imageId: string): void;
}

export class MeasurementSync {
  private byAnnotation = new Map<string, number>(); // annotation UID -> server id
  private stored = new Map<number, StoredMeasurement>();
  private pending = new Map<string, number>(); // debounced updates
  private restoring = false;
  readonly panel: HTMLElement;
  private list: HTMLElement;
  private exportButton: HTMLButtonElement;
  private listeners: [string, EventListener][] = [];

  constructor(private host: MeasurementHost) {
    this.list = h('ul', { class: 'measurement-list', id: 'measurement-list' });
    this.exportButton = h('button', { class: 'small', id: 'export-sr', disabled: true, i18n: 'viewer.exportSr',
      on: { click: () => void this.exportSr() } });
    this.panel = h('section', { class: 'side-section' }, h('h2', { i18n: 'viewer.measurements' }), this.list, this.exportButton);
    const on = (name: string, fn: (evt: CustomEvent) => void) => {
      const listener = fn as unknown as EventListener;
      core.eventTarget.addEventListener(name, listener);
      this.listeners.push([name, listener]);
    };
    const E = tools.Enums.Events;
    on(E.ANNOTATION_COMPLETED, (evt) => void this.completed(evt.detail.annotation as Annotation));
    on(E.ANNOTATION_MODIFIED, (evt) => this.modified(evt.detail.annotation as Annotation, evt.detail.changeType));
    on(E.ANNOTATION_REMOVED, (evt) => void this.removed(evt.detail.annotation as Annotation));
    window.addEventListener('voxa:language', this.repaint);
  }

  destroy(): void {
    for (const [name, fn] of this.listeners) core.eventTarget.removeEventListener(name, fn);
    window.removeEventListener('voxa:language', this.repaint);
    for (const timer of this.pending.values()) clearTimeout(timer);
  }

  private repaint = () => this.paint();

  private body(annotation: Annotation): MeasurementIn | null {
    const kind = byTool.get(annotation.metadata.toolName);
    const imageId = annotation.metadata.referencedImageId;
    if (!kind || !imageId) return null;
    const series = this.host.seriesFor(imageId);
    const ref = series?.sopByImageId.get(imageId);
    if (!ref) return null;
    const world = kind.points === 0 ? annotation.data.contour?.polyline ?? [] : annotation.data.handles.points;
    let points = world.map((p) => {
      const [col, row] = core.utilities.worldToImageCoords(imageId, p) ?? [NaN, NaN];
      return [col, row] as Point2;
    });
    if (kind.toServer) points = kind.toServer(points);
    const label = annotation.data.label ?? annotation.data.text ?? '';
    return { kind: kind.kind, sop_instance_uid: ref.sop, frame_number: ref.frame, points, label };
  }

  private async completed(annotation: Annotation): Promise<void> {
    if (!byTool.has(annotation.metadata.toolName) || this.restoring) return;
    const body = this.body(annotation);
    if (!body) {
      const imageId = annotation.metadata.referencedImageId;
      if (imageId && this.host.isPrior(imageId)) toast('viewer.priorNotSaved', undefined, 'error');
      return;
    }
    try {
      const saved = await createMeasurement(this.host.studyUid, body);
      this.byAnnotation.set(annotation.annotationUID!, saved.id);
      this.stored.set(saved.id, saved);
      this.paint();
      toast('viewer.measurementSaved');
    } catch (e) {
      toast('viewer.measurementFailed', { message: (e as Error).message }, 'error');
    }
  }

  private modified(annotation: Annotation, changeType: string): void {
    if (!byTool.has(annotation.metadata.toolName) || this.restoring) return;
    if (changeType !== 'HandlesUpdated' && changeType !== 'LabelChange') return;
    const uid = annotation.annotationUID!;
    clearTimeout(this.pending.get(uid));
    this.pending.set(uid, window.setTimeout(() => {
      this.pending.delete(uid);
      const id = this.byAnnotation.get(uid);
      const body = this.body(annotation);
      if (id === undefined || !body) return;
      updateMeasurement(this.host.studyUid, id, body)
        .then((saved) => {
          this.stored.set(saved.id, saved);
          this.paint();
        })
        .catch((e) => toast('viewer.measurementFailed', { message: (e as Error).message }, 'error'));
    }, 700));
  }

  private async removed(annotation: Annotation): Promise<void> {
    const uid = annotation.annotationUID!;
    const id = this.byAnnotation.get(uid);
    if (id === undefined || this.restoring) return;
    this.byAnnotation.delete(uid);
    this.stored.delete(id);
    this.paint();
    try {
      await deleteMeasurement(this.host.studyUid, id);
    } catch (e) {
      toast('viewer.measurementFailed', { message: (e as Error).message }, 'error');
    }
  }

  /** Fetch the user's measurements of the study and draw them on the shown series. */
  async load(): Promise<void> {
    let found: StoredMeasurement[];
    try {
      found = await listMeasurements(this.host.studyUid);
    } catch (e) {
      toast('viewer.measurementsUnavailable', { message: (e as Error).message }, 'error');
      return;
    }
    for (const m of found) this.stored.set(m.id, m);
    this.restore();
    this.paint();
  }

  /** Draw stored measurements whose image is shown and not drawn yet (after a series change too). */
  restore(): void {
    const drawn = new Set(this.byAnnotation.values());
    this.restoring = true;
    try {
      for (const m of this.stored.values()) {
        const kind = byKind.get(m.kind);
        const stored = m.graphic.points;
        if (drawn.has(m.id) || !kind || !stored?.length) continue;
        const imagePoints = kind.fromServer ? kind.fromServer(stored) : stored;
        if (kind.points ? imagePoints.length !== kind.points : imagePoints.length < 3) continue;
        const imageId = this.imageIdOf(m);
        const element = imageId ? this.host.elementFor(imageId) : undefined;
        if (!imageId || !element) continue;
        const viewport = core.getEnabledElement(element)?.viewport;
        if (!viewport) continue;
        const camera = viewport.getCamera();
        const points = imagePoints.map((p) => core.utilities.imageToWorldCoords(imageId, p) as Point3);
        const annotationUID = `${UID_PREFIX}${m.id}`;
        const annotation = {
          annotationUID,
          highlighted: false,
          invalidated: true,
          isLocked: false,
          isVisible: true,
          metadata: {
            toolName: kind.tool,
            referencedImageId: imageId,
            FrameOfReferenceUID: viewport.getFrameOfReferenceUID(),
            viewPlaneNormal: camera.viewPlaneNormal,
            viewUp: camera.viewUp,
          },
          data: {
            label: m.label,
            ...(kind.kind === 'text' ? { text: m.label } : {}),
            ...(kind.points === 0 ? { contour: { polyline: points, closed: true } } : {}),
            handles: {
              points: kind.points === 0 ? [] : points,
              activeHandleIndex: null,
              ...(kind.kind === 'arrow' ? { arrowFirst: true } : {}),
              textBox: { hasMoved: false, worldPosition: [0, 0, 0], worldBoundingBox: { topLeft: [0, 0, 0], topRight: [0, 0, 0], bottomLeft: [0, 0, 0], bottomRight: [0, 0, 0] } },
            },
            cachedStats: {},
          },
        };
        tools.annotation.state.addAnnotation(annotation as unknown as Parameters<typeof tools.annotation.state.addAnnotation>[0], element);
        this.byAnnotation.set(annotationUID, m.id);
      }
    } finally {
      this.restoring = false;
    }
    tools.utilities.triggerAnnotationRenderForViewportIds(
      core.getEnabledElements().map((e) => e.viewport.id),
    );
  }

  private imageIdOf(m: StoredMeasurement): string | undefined {
    const key = `${m.sop_instance_uid}/${m.frame_number ?? 1}`;
    for (const el of core.getEnabledElements()) {
      const vp = el.viewport as unknown as { getImageIds?: () => string[] };
      for (const imageId of vp.getImageIds?.() ?? []) {
        const series = this.host.seriesFor(imageId);
        const found = series?.imageIdBySop.get(key);
        if (found) return found;
      }
    }
    return undefined;
  }

  private async remove(id: number): Promise<void> {
    const uid = [...this.byAnnotation.entries()].find(([, v]) => v === id)?.[0];
    if (uid) {
      tools.annotation.state.removeAnnotation(uid); // fires ANNOTATION_REMOVED, which deletes it
      tools.utilities.triggerAnnotationRenderForViewportIds(core.getEnabledElements().map((e) => e.viewport.id));
      return;
    }
    try {
      await deleteMeasurement(this.host.studyUid, id);
      this.stored.delete(id);
      this.paint();
    } catch (e) {
      toast('viewer.measurementFailed', { message: (e as Error).message }, 'error');
    }
  }

  private async exportSr(): Promise<void> {
    this.exportButton.disabled = true;
    try {
      const done = await exportMeasurementsSr(this.host.studyUid);
      toast('viewer.srExported', { count: done.measurements });
    } catch (e) {
      toast('viewer.srFailed', { message: (e as Error).message }, 'error');
    } finally {
      this.exportButton.disabled = this.stored.size === 0;
    }
  }

  paint(): void {
    const items = [...this.stored.values()].sort((a, b) => a.id - b.id);
    this.exportButton.disabled = items.length === 0;
    if (!items.length) {
      this.list.replaceChildren(h('li', { class: 'muted', i18n: 'viewer.noMeasurements' }));
      return;
    }
    this.list.replaceChildren(...items.map((m) => {
      const text = describeMeasurement(m);
      const imageId = this.imageIdOf(m);
      return h('li', { class: 'measurement', data: { id: String(m.id), kind: m.kind } },
        h('button', { class: 'link-button', disabled: !imageId, on: { click: () => imageId && this.host.jumpTo(imageId) } }, text),
        m.label && m.kind !== 'arrow' && m.kind !== 'text' ? h('span', { class: 'muted' }, ` ${m.label}`) : null,
        h('button', { class: 'chip-x', i18nTitle: 'viewer.deleteMeasurement', on: { click: () => void this.remove(m.id) } }, '×'));
    }));
  }
}
