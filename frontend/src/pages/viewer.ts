// The viewer: series browser, stack viewports (1×1, 1×2, 2×2) with window/level, presets,
// pan/zoom/rotate/flip/invert, cine, overlays, orientation markers and length measurements
// saved on the server; MPR (axial, sagittal, coronal with crosshairs and slab MIP/MinIP/
// average) and 3D volume rendering with presets. Every image is drawn by Cornerstone3D from
// Voxa's DICOMweb (WADO-RS metadata and frames).
import { NON_IMAGE_MODALITIES, STUDY_FIELDS, firstSeries, searchStudies, seriesPixelDataUrl, studySeries, thumbnailUrl } from '../api';
import { Tag, modalities, num, str, type DicomJson } from '../dicom';
import { formatDicomDate, t, type MessageKey } from '../i18n';
import { href, type Cleanup, type Route } from '../router';
import { append, h, setMessage, toast } from '../ui/dom';
import { SHORTCUTS, isTyping } from '../ui/shortcuts';
import { core, startCornerstone, tools } from '../viewer/cs';
import { MeasurementSync } from '../viewer/measurements';
import { Overlay } from '../viewer/overlay';
import { loadSeries, type LoadedSeries } from '../viewer/series';
import { closeIdleStreams, expectFrames, openSeriesPixelData } from '../pixelDataStream';
import { applyVrPreset } from '../viewer/vrPresets';

type Mode = 'stack' | 'mpr' | '3d';
type Layout = '1x1' | '1x2' | '2x2';
type IViewport = import('@cornerstonejs/core').Types.IViewport;
type IStackViewport = import('@cornerstonejs/core').Types.IStackViewport;
type IVolumeViewport = import('@cornerstonejs/core').Types.IVolumeViewport;
type Point3 = import('@cornerstonejs/core').Types.Point3;

const { ViewportType, OrientationAxis, BlendModes, Events } = core.Enums;
const { MouseBindings } = tools.Enums;
const T = {
  windowLevel: tools.WindowLevelTool.toolName,
  pan: tools.PanTool.toolName,
  zoom: tools.ZoomTool.toolName,
  scroll: tools.StackScrollTool.toolName,
  length: tools.LengthTool.toolName,
  angle: tools.AngleTool.toolName,
  cobb: tools.CobbAngleTool.toolName,
  rectangle: tools.RectangleROITool.toolName,
  ellipse: tools.EllipticalROITool.toolName,
  probe: tools.ProbeTool.toolName,
  arrow: tools.ArrowAnnotateTool.toolName,
  freehand: tools.PlanarFreehandROITool.toolName,
  label: tools.LabelTool.toolName,
  rotate: tools.PlanarRotateTool.toolName,
  crosshairs: tools.CrosshairsTool.toolName,
  trackball: tools.TrackballRotateTool.toolName,
  clip: tools.VolumeCroppingTool.toolName,
};

/** Window presets (width, centre in HU). */
export const WL_PRESETS: { id: string; label: MessageKey; width: number; center: number }[] = [
  { id: 'brain', label: 'preset.brain', width: 80, center: 40 },
  { id: 'lung', label: 'preset.lung', width: 1500, center: -600 },
  { id: 'bone', label: 'preset.bone', width: 2000, center: 300 },
  { id: 'abdomen', label: 'preset.abdomen', width: 400, center: 50 },
  { id: 'mediastinum', label: 'preset.mediastinum', width: 350, center: 40 },
];

// transfer functions: ../viewer/vrPresets.ts
const VR_PRESETS: { id: string; label: MessageKey }[] = [
  { id: 'bone', label: 'vr.bone' },
  { id: 'soft', label: 'vr.softTissue' },
  { id: 'lung', label: 'vr.lung' },
  { id: 'angio', label: 'vr.angio' },
  { id: 'mr', label: 'vr.mr' },
];

const MODE_TOOLS: Record<Mode, { id: string; tool: string; label: MessageKey }[]> = {
  stack: [
    { id: 'windowLevel', tool: T.windowLevel, label: 'tool.windowLevel' },
    { id: 'scroll', tool: T.scroll, label: 'tool.scroll' },
    { id: 'pan', tool: T.pan, label: 'tool.pan' },
    { id: 'zoom', tool: T.zoom, label: 'tool.zoom' },
    { id: 'rotate', tool: T.rotate, label: 'tool.rotate' },
    { id: 'length', tool: T.length, label: 'tool.length' },
    { id: 'angle', tool: T.angle, label: 'kind.angle' },
    { id: 'cobb', tool: T.cobb, label: 'kind.cobb_angle' },
    { id: 'rectangle', tool: T.rectangle, label: 'kind.rectangle_roi' },
    { id: 'ellipse', tool: T.ellipse, label: 'kind.ellipse_roi' },
    { id: 'freehand', tool: T.freehand, label: 'kind.freehand_roi' },
    { id: 'probe', tool: T.probe, label: 'kind.probe' },
    { id: 'arrow', tool: T.arrow, label: 'kind.arrow' },
    { id: 'text', tool: T.label, label: 'kind.text' },
  ],
  mpr: [
    { id: 'crosshairs', tool: T.crosshairs, label: 'tool.crosshairs' },
    { id: 'windowLevel', tool: T.windowLevel, label: 'tool.windowLevel' },
    { id: 'scroll', tool: T.scroll, label: 'tool.scroll' },
    { id: 'pan', tool: T.pan, label: 'tool.pan' },
    { id: 'zoom', tool: T.zoom, label: 'tool.zoom' },
  ],
  '3d': [
    { id: 'trackball', tool: T.trackball, label: 'tool.rotate3d' },
    { id: 'clip', tool: T.clip, label: 'tool.clipBox' },
    { id: 'pan', tool: T.pan, label: 'tool.pan' },
    { id: 'zoom', tool: T.zoom, label: 'tool.zoom' },
  ],
};

/** What the viewer uses of Cornerstone's VolumeCroppingTool. */
interface ClipBox {
  setClippingPlanesVisible(visible: boolean): void;
  getClippingPlanesVisible(): boolean;
  setHandlesVisible(visible: boolean): void;
}

const GROUP: Record<Mode, string> = { stack: 'voxa-stack', mpr: 'voxa-mpr', '3d': 'voxa-3d' };
const PRIMARY = [{ mouseButton: MouseBindings.Primary }, { numTouchPoints: 1 }];
const NON_IMAGE = NON_IMAGE_MODALITIES;
let viewerCount = 0;

interface Cell {
  index: number;
  box: HTMLElement;
  element: HTMLDivElement;
  overlay: Overlay;
  viewportId: string;
  series?: LoadedSeries;
  view?: MessageKey;
}

interface Timings {
  start: number;
  steps: Record<string, number>; // when each step of opening the viewer finished (performance.now())
  firstImageMs?: number;
  volumeReadyMs?: number;
  volumeStartMs?: number;
}

declare global {
  interface Window {
    voxaViewer?: { timings: Timings; mode: () => Mode; state: () => unknown };
  }
}

export async function renderViewer(container: HTMLElement, route: Route): Promise<Cleanup> {
  const viewer = new Viewer(container, route);
  await viewer.start();
  return () => viewer.destroy();
}

class Viewer {
  private studyUid: string;
  private mode: Mode;
  private layout: Layout;
  private engine!: InstanceType<typeof core.RenderingEngine>;
  private engineId = `voxa-engine-${++viewerCount}`;
  private cells: Cell[] = [];
  private active = 0;
  private series: DicomJson[] = [];
  private loaded = new Map<string, LoadedSeries>();
  private volumeSeries?: LoadedSeries;
  private primary: Record<Mode, string> = { stack: T.windowLevel, mpr: T.crosshairs, '3d': T.trackball };
  private cine = false;
  private fps = 15;
  private slabMm = 10;
  private blend: 'none' | 'mip' | 'minip' | 'avg' = 'none';
  private vrPreset = 'bone';
  /** Ray-casting step, a multiple of the voxel size: coarser where WebGL runs in software. */
  private vrQuality = Number(new URLSearchParams(location.search).get('vrq')) || (softwareRendering() ? 3 : 1);
  private sync = false;
  private synchronizer?: ReturnType<typeof tools.synchronizers.createImageSliceSynchronizer>;
  private measurements?: MeasurementSync;
  private timings: Timings = { start: performance.now(), steps: {} };
  private disposers: (() => void)[] = [];
  private destroyed = false;
  private modeToken = 0;

  // DOM
  private root: HTMLElement;
  private grid: HTMLElement;
  private toolbar: HTMLElement;
  private seriesPanel: HTMLElement;
  private sidePanel: HTMLElement;
  private progress: HTMLProgressElement;
  private progressText: HTMLElement;
  private statusBar: HTMLElement;

  constructor(private container: HTMLElement, route: Route) {
    this.studyUid = route.params.uid;
    const m = route.query.get('mode');
    this.mode = m === 'mpr' || m === '3d' ? m : 'stack';
    const l = route.query.get('layout');
    this.layout = l === '1x2' || l === '2x2' ? l : '1x1';
    this.requestedSeries = route.query.get('series') ?? undefined;
    this.toolbar = h('div', { class: 'viewer-toolbar', role: 'toolbar', id: 'viewer-toolbar' });
    this.seriesPanel = h('aside', { class: 'series-panel', id: 'series-panel' });
    this.sidePanel = h('aside', { class: 'side-panel', id: 'side-panel' });
    this.grid = h('div', { class: 'viewport-grid', id: 'viewport-grid' });
    this.progress = h('progress', { id: 'viewer-progress', max: 1, value: 0 });
    this.progressText = h('span', { id: 'viewer-progress-text', class: 'progress-text' });
    this.statusBar = h('div', { class: 'viewer-status', hidden: true }, this.progress, this.progressText);
    this.root = h('div', { class: 'viewer', id: 'viewer', data: { mode: this.mode } },
      this.toolbar, h('div', { class: 'viewer-body' }, this.seriesPanel, h('div', { class: 'viewport-area' }, this.grid, this.statusBar), this.sidePanel));
    window.voxaViewer = { timings: this.timings, mode: () => this.mode, state: () => this.debugState() };
  }

  private requestedSeries?: string;
  private priors: DicomJson[] = [];

  async start(): Promise<void> {
    append(this.container, this.root);
    this.container.classList.add('page-viewer');
    this.disposers.push(() => this.container.classList.remove('page-viewer'));
    this.showProgress('common.loading');
    const step = (name: string) => <T>(value: T): T => {
      this.timings.steps[name] = performance.now();
      return value;
    };
    const listed = studySeries(this.studyUid).then(step('seriesListed'));
    // the first series' metadata is fetched while Cornerstone starts
    void listed.then((all) => {
      const first = firstSeries(all, this.requestedSeries);
      if (first) void this.getSeries(str(first, Tag.SeriesInstanceUID)).then(step('metadata'), () => undefined);
    });
    const [series] = await Promise.all([listed, startCornerstone().then(step('cornerstone'))]);
    if (this.destroyed) return;
    this.series = series.filter((s) => !NON_IMAGE.includes(str(s, Tag.Modality)) && (num(s, Tag.NumberOfSeriesRelatedInstances) ?? 1) > 0);
    if (!this.series.length) {
      this.showProgress('viewer.noImages');
      return;
    }
    this.engine = new core.RenderingEngine(this.engineId);
    this.createToolGroups();
    this.renderSeriesPanel();
    this.measurements = new MeasurementSync({
      studyUid: this.studyUid,
      seriesFor: (imageId) => this.seriesForImage(imageId),
      isPrior: (imageId) => this.isPriorImage(imageId),
      elementFor: (imageId) => this.cells.find((c) => c.series && c.series.sopByImageId.has(imageId) && this.isStack(c))?.element,
      jumpTo: (imageId) => this.jumpTo(imageId),
    });
    append(this.sidePanel, this.measurements.panel);
    // before the images: the browser's six connections are soon busy with frames
    const measurements = this.measurements.load();
    this.listen();
    const first = this.series.find((s) => str(s, Tag.SeriesInstanceUID) === this.requestedSeries) ?? this.series[0];
    this.volumeSeries = undefined;
    await this.setMode(this.mode, str(first, Tag.SeriesInstanceUID));
    closeIdleStreams(); // frames the page fetched ahead for a volume that is not shown
    void this.loadPriors();
    await measurements;
    this.measurements.restore();
  }

  destroy(): void {
    this.destroyed = true;
    stopPrefetch();
    closeIdleStreams();
    this.stopCine();
    for (const d of this.disposers.splice(0)) {
      try {
        d();
      } catch (e) {
        console.warn(e);
      }
    }
    this.measurements?.destroy();
    this.synchronizer?.destroy();
    for (const id of Object.values(GROUP)) tools.ToolGroupManager.destroyToolGroup(id);
    this.engine?.destroy();
    tools.annotation.state.removeAllAnnotations();
    delete window.voxaViewer;
  }

  // ------------------------------------------------------------------ tools

  private createToolGroups(): void {
    const make = (mode: Mode, names: string[], config: Record<string, Record<string, unknown>> = {}) => {
      tools.ToolGroupManager.destroyToolGroup(GROUP[mode]);
      const group = tools.ToolGroupManager.createToolGroup(GROUP[mode])!;
      for (const name of names) group.addTool(name, config[name]);
      return group;
    };
    const zoomConfig = { [T.zoom]: { pinchToZoom: true, pan: true } };
    const annotationTools = [T.length, T.angle, T.cobb, T.rectangle, T.ellipse, T.freehand, T.probe, T.arrow, T.label];
    const askText = (done: (text: string | null) => void) => done(prompt(t('viewer.arrowText')));
    const stack = make('stack', [T.windowLevel, T.pan, T.zoom, T.scroll, T.rotate, ...annotationTools], {
      ...zoomConfig,
      [T.arrow]: { getTextCallback: askText, changeTextCallback: (_a: unknown, _e: unknown, done: (text: string | null) => void) => askText(done) },
      [T.label]: { getTextCallback: askText, changeTextCallback: (_a: unknown, _e: unknown, done: (text: string | null) => void) => askText(done) },
    });
    stack.setToolActive(T.scroll, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    stack.setToolActive(T.pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    stack.setToolActive(T.zoom, { bindings: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }] });
    for (const tool of annotationTools) stack.setToolPassive(tool);
    stack.setToolActive(T.windowLevel, { bindings: PRIMARY });

    const mpr = make('mpr', [T.windowLevel, T.pan, T.zoom, T.scroll, T.crosshairs], {
      ...zoomConfig,
      [T.crosshairs]: { getReferenceLineColor: (id: string) => this.crosshairColor(id) },
    });
    mpr.setToolActive(T.scroll, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    mpr.setToolActive(T.pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    mpr.setToolActive(T.zoom, { bindings: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }] });

    const vr = make('3d', [T.trackball, T.pan, T.zoom, T.clip], {
      ...zoomConfig,
      [T.clip]: { initialCropFactor: 0.1, sphereRadius: 6, grabSpherePixelDistance: 16 },
    });
    vr.setToolActive(T.pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    vr.setToolActive(T.zoom, { bindings: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Wheel }, { numTouchPoints: 2 }] });
    vr.setToolActive(T.trackball, { bindings: PRIMARY });
  }

  private crosshairColor(viewportId: string): string {
    if (viewportId.endsWith('axial')) return 'rgb(239, 68, 68)';
    if (viewportId.endsWith('sagittal')) return 'rgb(234, 179, 8)';
    return 'rgb(34, 197, 94)';
  }

  private setPrimaryTool(tool: string): void {
    const group = tools.ToolGroupManager.getToolGroup(GROUP[this.mode]);
    if (!group) return;
    const previous = this.primary[this.mode];
    if (previous !== tool) {
      group.setToolPassive(previous);
      if (previous === T.crosshairs) group.setToolPassive(T.crosshairs);
    }
    group.setToolActive(tool, { bindings: PRIMARY });
    // The clip box: its handles (faces and corners) are dragged with the clip tool and hidden
    // with any other; the volume stays clipped until reset.
    const clip = this.mode === '3d' ? (group.getToolInstance(T.clip) as unknown as ClipBox | undefined) : undefined;
    if (clip && tool === T.clip) clip.setClippingPlanesVisible(true);
    else if (clip && previous === T.clip && previous !== tool) clip.setHandlesVisible(false);
    this.primary[this.mode] = tool;
    this.toolbar.querySelectorAll<HTMLButtonElement>('[data-tool]').forEach((b) => {
      b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
    });
  }

  // ------------------------------------------------------------------ toolbar

  private renderToolbar(): void {
    const modeButton = (mode: Mode, label: MessageKey) =>
      h('button', { class: 'seg', data: { mode }, id: `mode-${mode}`, 'aria-pressed': String(this.mode === mode), i18n: label,
        disabled: mode !== 'stack' && !this.canVolume(), on: { click: () => void this.setMode(mode) } });
    const group = (label: MessageKey, ...items: (Node | null)[]) =>
      h('div', { class: 'tb-group', role: 'group', 'aria-label': t(label), data: { i18nAriaLabel: label } }, ...items);
    const toolButtons = MODE_TOOLS[this.mode].map((tool) =>
      h('button', { class: 'tb', data: { tool: tool.tool, toolId: tool.id }, id: `tool-${tool.id}`, i18n: tool.label,
        'aria-pressed': String(this.primary[this.mode] === tool.tool), on: { click: () => this.setPrimaryTool(tool.tool) } }));
    const action = (id: string, label: MessageKey, fn: () => void, text?: string) =>
      h('button', { class: 'tb', id: `action-${id}`, on: { click: fn }, ...(text ? { i18nTitle: label } : { i18n: label }) }, text ?? null);

    const presetSelect = h('select', { id: 'wl-preset', i18nAriaLabel: 'viewer.presets', on: { change: (e) => {
      const v = (e.target as HTMLSelectElement).value;
      if (v) this.applyPreset(v);
      (e.target as HTMLSelectElement).value = '';
    } } }, h('option', { value: '', i18n: 'viewer.presets' }), ...WL_PRESETS.map((p) => h('option', { value: p.id, i18n: p.label })));

    const items: (Node | null)[] = [
      group('viewer.mode', modeButton('stack', 'mode.stack'), modeButton('mpr', 'mode.mpr'), modeButton('3d', 'mode.volume')),
      group('viewer.tools', ...toolButtons),
    ];
    if (this.mode !== '3d') items.push(group('viewer.presets', presetSelect));
    if (this.mode === 'stack') {
      items.push(group('viewer.actions',
        action('rotate', 'viewer.rotate90', () => this.rotate90(), '⟳'),
        action('flip-h', 'viewer.flipH', () => this.flip('h'), '⇆'),
        action('flip-v', 'viewer.flipV', () => this.flip('v'), '⇅'),
        action('invert', 'viewer.invert', () => this.invert(), '◐'),
        action('reset', 'viewer.reset', () => this.reset()),
      ));
      const fps = h('input', { id: 'cine-fps', type: 'number', min: 1, max: 60, value: String(this.fps), i18nTitle: 'viewer.fps', class: 'fps',
        on: { change: (e) => {
          this.fps = Math.max(1, Math.min(60, Number((e.target as HTMLInputElement).value) || 15));
          if (this.cine) this.startCine();
        } } });
      items.push(group('viewer.cine',
        h('button', { class: 'tb', id: 'cine-toggle', 'aria-pressed': String(this.cine), i18n: this.cine ? 'viewer.stop' : 'viewer.play', on: { click: () => this.toggleCine() } }),
        fps, h('span', { class: 'unit', i18n: 'viewer.fpsUnit' })));
      const layout = h('select', { id: 'layout-select', i18nAriaLabel: 'viewer.layout', on: { change: (e) => void this.setLayout((e.target as HTMLSelectElement).value as Layout) } },
        ...(['1x1', '1x2', '2x2'] as Layout[]).map((l) => h('option', { value: l, selected: l === this.layout, i18n: `layout.${l}` as MessageKey })));
      items.push(group('viewer.layout', layout,
        h('label', { class: 'check' }, h('input', { type: 'checkbox', id: 'sync-scroll', checked: this.sync, on: { change: (e) => this.setSync((e.target as HTMLInputElement).checked) } }), h('span', { i18n: 'viewer.sync' }))));
    }
    if (this.mode === 'mpr') {
      const slab = h('input', { id: 'slab-thickness', type: 'number', min: 1, max: 200, step: 1, value: String(this.slabMm), class: 'fps', i18nTitle: 'viewer.slab',
        on: { change: (e) => {
          this.slabMm = Math.max(1, Math.min(200, Number((e.target as HTMLInputElement).value) || 10));
          this.applySlab();
        } } });
      const blend = h('select', { id: 'slab-mode', i18nAriaLabel: 'viewer.projection', on: { change: (e) => {
        this.blend = (e.target as HTMLSelectElement).value as typeof this.blend;
        this.applySlab();
      } } }, ...(['none', 'mip', 'minip', 'avg'] as const).map((b) => h('option', { value: b, selected: b === this.blend, i18n: `blend.${b}` as MessageKey })));
      items.push(group('viewer.projection', blend, slab, h('span', { class: 'unit', i18n: 'viewer.mm' })),
        group('viewer.actions', action('invert', 'viewer.invert', () => this.invert(), '◐'), action('reset', 'viewer.reset', () => this.reset())));
    }
    if (this.mode === '3d') {
      const preset = h('select', { id: 'vr-preset', i18nAriaLabel: 'viewer.vrPreset', on: { change: (e) => {
        this.vrPreset = (e.target as HTMLSelectElement).value;
        this.applyVrPreset();
      } } }, ...VR_PRESETS.map((p) => h('option', { value: p.id, selected: p.id === this.vrPreset, i18n: p.label })));
      items.push(group('viewer.vrPreset', preset), group('viewer.actions', action('reset', 'viewer.reset', () => this.reset())));
    }
    items.push(h('a', { class: 'tb back-link', href: href(`/study/${this.studyUid}`), i18n: 'viewer.backToStudy' }));
    this.toolbar.replaceChildren(...items.filter((x): x is Node => x !== null));
  }

  private canVolume(): boolean {
    const s = this.volumeCandidate();
    return Boolean(s && (this.loaded.get(str(s, Tag.SeriesInstanceUID))?.isVolume ?? (num(s, Tag.NumberOfSeriesRelatedInstances) ?? 0) >= 3));
  }

  private volumeCandidate(): DicomJson | undefined {
    const activeUid = this.cells[this.active]?.series?.seriesUid ?? this.volumeSeries?.seriesUid;
    return this.series.find((s) => str(s, Tag.SeriesInstanceUID) === activeUid)
      ?? this.series.find((s) => ['CT', 'MR', 'PT', 'NM'].includes(str(s, Tag.Modality)));
  }

  // ------------------------------------------------------------------ series panel

  private renderSeriesPanel(): void {
    this.seriesPanel.replaceChildren(h('h2', { i18n: 'viewer.series' }), h('ul', { class: 'series-list' }, ...this.series.map((s) => {
      const uid = str(s, Tag.SeriesInstanceUID);
      return this.seriesItem(this.studyUid, s, () => void this.showSeries(uid));
    })));
    this.renderPriors();
    this.markSeries();
  }

  private seriesItem(studyUid: string, s: DicomJson, open: () => void): HTMLElement {
    const uid = str(s, Tag.SeriesInstanceUID);
    const img = h('img', { src: thumbnailUrl(studyUid, uid), alt: '', loading: 'lazy', width: 96, height: 96 });
    img.addEventListener('error', () => img.classList.add('broken'));
    return h('li', {}, h('button', { class: 'series-thumb', data: { series: uid }, on: { click: open } },
      img,
      h('span', { class: 'series-title' }, `${str(s, Tag.Modality)} ${str(s, Tag.SeriesNumber)}`.trim()),
      h('span', { class: 'series-desc' }, str(s, Tag.SeriesDescription)),
      h('span', { class: 'muted', i18n: 'study.imageCount', i18nParams: { count: num(s, Tag.NumberOfSeriesRelatedInstances) ?? 0 } })));
  }

  /** The patient's other studies (newest first), listed under the series for comparison. */
  private async loadPriors(): Promise<void> {
    const current = [...this.loaded.values()].find((s) => s.studyUid === this.studyUid)?.first;
    const patientId = str(current, Tag.PatientID);
    if (!patientId || /[*?\\]/.test(patientId)) return; // QIDO would read a wildcard in it
    if (!navigator.onLine) return; // studies kept offline are kept one by one: no search to answer
    const params = new URLSearchParams({ PatientID: patientId });
    for (const f of STUDY_FIELDS) params.append('includefield', f);
    let found: DicomJson[];
    try {
      found = (await searchStudies(params)).results;
    } catch (e) {
      console.warn('priors not listed', e);
      return;
    }
    if (this.destroyed) return;
    this.priors = found
      .filter((s) => str(s, Tag.StudyInstanceUID) !== this.studyUid)
      .sort((a, b) => (str(b, Tag.StudyDate) + str(b, Tag.StudyTime)).localeCompare(str(a, Tag.StudyDate) + str(a, Tag.StudyTime)));
    this.renderPriors();
  }

  private renderPriors(): void {
    this.seriesPanel.querySelector('.priors')?.remove();
    if (!this.priors.length) return;
    const items = this.priors.map((study) => {
      const studyUid = str(study, Tag.StudyInstanceUID);
      const list = h('ul', { class: 'series-list' });
      const details = h('details', { class: 'prior', data: { study: studyUid } },
        h('summary', {},
          h('span', { class: 'series-title' }, formatDicomDate(str(study, Tag.StudyDate)) || '—'),
          h('span', { class: 'series-desc' }, `${modalities(study)} ${str(study, Tag.StudyDescription)}`.trim())),
        list) as HTMLDetailsElement;
      details.addEventListener('toggle', () => {
        if (!details.open || list.childElementCount) return;
        void studySeries(studyUid).then((all) => {
          const images = all.filter((s) => !NON_IMAGE.includes(str(s, Tag.Modality)) && (num(s, Tag.NumberOfSeriesRelatedInstances) ?? 1) > 0);
          list.replaceChildren(...images.map((s) => this.seriesItem(studyUid, s, () => void this.showPrior(studyUid, str(s, Tag.SeriesInstanceUID)))));
          this.markSeries();
        }, (e: Error) => toast('viewer.priorsFailed', { message: e.message }, 'error'));
      });
      return h('li', {}, details);
    });
    this.seriesPanel.append(h('section', { class: 'priors' }, h('h2', { i18n: 'viewer.priors' }), h('ul', { class: 'prior-list' }, ...items)));
  }

  /** A prior's series beside the current one: 1×2 when one viewport was shown, scrolling linked. */
  private async showPrior(studyUid: string, seriesUid: string): Promise<void> {
    if (this.mode !== 'stack' || this.layout === '1x1') {
      const current = this.cells[this.active]?.series;
      this.layout = this.layout === '1x1' ? '1x2' : this.layout;
      const url = new URL(location.href);
      url.searchParams.set('layout', this.layout);
      history.replaceState(null, '', url);
      await this.setMode('stack', current?.studyUid === this.studyUid ? current.seriesUid : undefined);
      this.activate(Math.min(1, this.cells.length - 1));
    }
    await this.loadIntoCell(this.cells[this.active], seriesUid, studyUid);
    this.markSeries();
    this.sync = true;
    this.renderToolbar();
    this.setSync(true);
  }

  private markSeries(): void {
    const shown = new Set(this.cells.map((c) => c.series?.seriesUid));
    if (this.mode !== 'stack' && this.volumeSeries) shown.add(this.volumeSeries.seriesUid);
    this.seriesPanel.querySelectorAll<HTMLElement>('[data-series]').forEach((el) => el.classList.toggle('shown', shown.has(el.dataset.series)));
  }

  private async showSeries(seriesUid: string): Promise<void> {
    if (this.mode === 'stack') {
      await this.loadIntoCell(this.cells[this.active], seriesUid);
      this.markSeries();
    } else {
      await this.setMode(this.mode, seriesUid);
    }
  }

  /** The study's own series that shows an image (measurements are saved for this study only). */
  private seriesForImage(imageId: string): LoadedSeries | undefined {
    for (const s of this.loaded.values()) if (s.studyUid === this.studyUid && s.sopByImageId.has(imageId)) return s;
    return undefined;
  }

  private isPriorImage(imageId: string): boolean {
    for (const s of this.loaded.values()) if (s.studyUid !== this.studyUid && s.sopByImageId.has(imageId)) return true;
    return false;
  }

  private async getSeries(seriesUid: string, studyUid?: string): Promise<LoadedSeries> {
    const known = this.loaded.get(seriesUid); // a prior's series is known by its own study
    if (known && (!studyUid || known.studyUid === studyUid)) return known;
    const s = await loadSeries(studyUid ?? this.studyUid, seriesUid);
    this.loaded.set(seriesUid, s);
    return s;
  }

  // ------------------------------------------------------------------ modes and layouts

  private async setMode(mode: Mode, seriesUid?: string): Promise<void> {
    const token = ++this.modeToken;
    this.stopCine();
    const candidate = seriesUid ?? this.cells[this.active]?.series?.seriesUid ?? this.volumeSeries?.seriesUid ?? str(this.volumeCandidate(), Tag.SeriesInstanceUID);
    let series: LoadedSeries | undefined;
    if (candidate) series = await this.getSeries(candidate);
    if (token !== this.modeToken || this.destroyed) return;
    if (mode !== 'stack' && !series?.isVolume) {
      toast('viewer.notVolume', undefined, 'error');
      mode = 'stack';
    }
    this.teardownViewports();
    this.mode = mode;
    this.root.dataset.mode = mode;
    const url = new URL(location.href);
    if (mode === 'stack') url.searchParams.delete('mode');
    else url.searchParams.set('mode', mode);
    if (series) url.searchParams.set('series', series.seriesUid);
    history.replaceState(null, '', url);
    this.renderToolbar();
    if (mode === 'stack') await this.buildStack(series);
    else await this.buildVolume(mode, series!);
    if (token === this.modeToken) this.markSeries();
  }

  private teardownViewports(): void {
    stopPrefetch();
    this.synchronizer?.destroy();
    this.synchronizer = undefined;
    for (const group of Object.values(GROUP)) {
      const g = tools.ToolGroupManager.getToolGroup(group);
      for (const c of this.cells) g?.removeViewports(this.engineId, c.viewportId);
    }
    for (const c of this.cells) {
      try {
        this.engine.disableElement(c.viewportId);
      } catch {
        /* already gone */
      }
    }
    this.cells = [];
    this.grid.replaceChildren();
  }

  private makeCells(count: number, ids: string[], views?: MessageKey[]): Cell[] {
    this.grid.dataset.count = String(count);
    this.cells = Array.from({ length: count }, (_, index) => {
      const element = h('div', { class: 'viewport-element', data: { viewport: ids[index] } }) as HTMLDivElement;
      element.oncontextmenu = (e) => e.preventDefault();
      const overlay = new Overlay();
      const box = h('div', { class: 'viewport-cell', data: { index: String(index) }, tabindex: 0 }, element, overlay.root);
      box.addEventListener('pointerdown', () => this.activate(index), true);
      this.grid.appendChild(box);
      const cell: Cell = { index, box, element, overlay, viewportId: ids[index], view: views?.[index] };
      this.listenTo(cell);
      return cell;
    });
    this.activate(0);
    return this.cells;
  }

  private activate(index: number): void {
    this.active = index;
    this.cells.forEach((c) => c.box.classList.toggle('active', c.index === index));
  }

  private async setLayout(layout: Layout): Promise<void> {
    this.layout = layout;
    const url = new URL(location.href);
    if (layout === '1x1') url.searchParams.delete('layout');
    else url.searchParams.set('layout', layout);
    history.replaceState(null, '', url);
    await this.setMode('stack', this.cells[this.active]?.series?.seriesUid);
  }

  private async buildStack(first?: LoadedSeries): Promise<void> {
    const count = this.layout === '2x2' ? 4 : this.layout === '1x2' ? 2 : 1;
    this.grid.dataset.layout = this.layout;
    const cells = this.makeCells(count, Array.from({ length: count }, (_, i) => `stack-${i}`));
    this.engine.setViewports(cells.map((c) => ({
      viewportId: c.viewportId, type: ViewportType.STACK, element: c.element, defaultOptions: { background: [0, 0, 0] as Point3 },
    })));
    const group = tools.ToolGroupManager.getToolGroup(GROUP.stack)!;
    for (const c of cells) group.addViewport(c.viewportId, this.engineId);
    // the first cell shows the chosen series; the others the next series of the study
    const uids = this.series.map((s) => str(s, Tag.SeriesInstanceUID));
    const start = Math.max(0, uids.indexOf(first?.seriesUid ?? uids[0]));
    await Promise.all(cells.map((c, i) => this.loadIntoCell(c, uids[(start + i) % uids.length])));
    if (this.sync) this.setSync(true);
  }

  private async loadIntoCell(cell: Cell, seriesUid: string, studyUid?: string): Promise<void> {
    if (!cell || !this.isStack(cell)) return;
    const series = await this.getSeries(seriesUid, studyUid);
    if (this.destroyed || !this.cells.includes(cell)) return;
    cell.series = series;
    const viewport = this.engine.getViewport(cell.viewportId) as IStackViewport;
    if (!series.imageIds.length) {
      cell.overlay.update({ meta: series.first, total: 0 });
      return;
    }
    cell.overlay.update({
      meta: series.first, index: 0, total: series.imageIds.length, sliceMm: num(series.first, Tag.SliceThickness),
      projectionFrame: series.projectionFrame,
      noOrientation: !series.projectionFrame && !series.first[Tag.ImageOrientationPatient],
    });
    this.showProgress('viewer.loadingImages');
    this.timings.steps.setStack ??= performance.now();
    await viewport.setStack(series.imageIds, 0);
    this.timings.steps.stackLoaded ??= performance.now();
    if (this.destroyed) return;
    viewport.render();
    prefetch(series.imageIds);
    this.hideProgress();
    this.measurements?.restore();
    this.measurements?.paint();
  }

  private isStack(cell: Cell): boolean {
    return cell.viewportId.startsWith('stack-');
  }

  private setSync(on: boolean): void {
    this.sync = on;
    this.synchronizer?.destroy();
    this.synchronizer = undefined;
    if (!on || this.mode !== 'stack' || this.cells.length < 2) return;
    this.registerCells();
    this.synchronizer = tools.synchronizers.createImageSliceSynchronizer(`voxa-sync-${this.engineId}`);
    for (const c of this.cells) this.synchronizer.add({ renderingEngineId: this.engineId, viewportId: c.viewportId });
  }

  /**
   * Linked scrolling goes by position. Images of another study (a prior: another frame of
   * reference) are linked where they are when linking starts: the offset between the two images
   * then shown is kept (scroll both to the same anatomy and link again to re-align). Cornerstone
   * would compute this offset itself, but looks the images up by slice number and finds nothing.
   */
  private registerCells(): void {
    const registry = core.utilities.spatialRegistrationMetadataProvider;
    const stacks = this.cells.map((c) => this.viewport(c)).filter((v): v is IStackViewport => v instanceof core.StackViewport);
    type Matrix = Parameters<typeof registry.add>[1];
    for (const a of stacks) for (const b of stacks) if (a !== b) registry.add([a.id, b.id], undefined as unknown as Matrix);
    for (let i = 0; i < stacks.length; i++) {
      for (let j = i + 1; j < stacks.length; j++) {
        const [a, b] = [stacks[i], stacks[j]];
        if (a.getFrameOfReferenceUID() === b.getFrameOfReferenceUID()) continue;
        const pa = core.metaData.get('imagePlaneModule', a.getCurrentImageId())?.imagePositionPatient as number[] | undefined;
        const pb = core.metaData.get('imagePlaneModule', b.getCurrentImageId())?.imagePositionPatient as number[] | undefined;
        if (!pa || !pb) continue;
        const m = new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, pa[0] - pb[0], pa[1] - pb[1], pa[2] - pb[2], 1]);
        registry.add([a.id, b.id], m as unknown as Matrix);
      }
    }
  }

  private async buildVolume(mode: Mode, series: LoadedSeries): Promise<void> {
    this.volumeSeries = series;
    const volumeId = `cornerstoneStreamingImageVolume:${series.seriesUid}`;
    const views: MessageKey[] = mode === 'mpr' ? ['view.axial', 'view.sagittal', 'view.coronal'] : ['view.volume'];
    const ids = mode === 'mpr' ? ['mpr-axial', 'mpr-sagittal', 'mpr-coronal'] : ['vr-3d'];
    this.grid.dataset.layout = mode === 'mpr' ? '1x3' : '1x1';
    const cells = this.makeCells(ids.length, ids, views);
    const orientation = [OrientationAxis.AXIAL, OrientationAxis.SAGITTAL, OrientationAxis.CORONAL];
    this.engine.setViewports(cells.map((c, i) => ({
      viewportId: c.viewportId,
      type: mode === 'mpr' ? ViewportType.ORTHOGRAPHIC : ViewportType.VOLUME_3D,
      element: c.element,
      defaultOptions: { background: [0, 0, 0] as Point3, orientation: mode === 'mpr' ? orientation[i] : OrientationAxis.CORONAL },
    })));
    for (const c of cells) c.overlay.update({ meta: series.first, label: c.view });
    const group = tools.ToolGroupManager.getToolGroup(GROUP[mode])!;
    for (const c of cells) group.addViewport(c.viewportId, this.engineId);

    this.timings.volumeStartMs = performance.now();
    // the frames not yet in the cache in one request (a volume asked for frame by frame is
    // mostly requests); the ones the stack view has already loaded are not fetched again
    const missing = series.imageIds.filter((id) => !core.cache.getImageLoadObject(id));
    if (missing.length >= PIXEL_DATA_MIN_FRAMES && !core.cache.getVolumeLoadObject(volumeId)) {
      openSeriesPixelData(series.seriesUid, seriesPixelDataUrl(series.studyUid, series.seriesUid)); // the page may have started it
      this.disposers.push(expectFrames(series.seriesUid, missing));
    }
    const volume = await core.volumeLoader.createAndCacheVolume(volumeId, { imageIds: series.imageIds });
    if (this.destroyed || !this.cells.includes(cells[0])) return;
    // Cornerstone re-renders the views after every 2 % of the slices; in software WebGL each
    // render of three views costs more than loading those slices. Render on our own clock.
    const streaming = volume as unknown as VolumeLike & { autoRenderOnLoad?: boolean; load: () => void };
    streaming.autoRenderOnLoad = false;
    this.watchVolume(streaming, ids);
    streaming.load();
    // The ray-casting step of a volume actor is fixed when it is created: 3D only gets the
    // coarser one. (setConfiguration would rebuild every viewport's pipeline; the object is
    // Cornerstone's own, so it is changed in place and put back.)
    const volumeRendering = core.getConfiguration().rendering?.volumeRendering as { sampleDistanceMultiplier?: number } | undefined;
    const previous = volumeRendering?.sampleDistanceMultiplier;
    if (volumeRendering && mode === '3d') volumeRendering.sampleDistanceMultiplier = this.vrQuality;
    try {
      await core.setVolumesForViewports(this.engine, [{ volumeId }], ids);
    } finally {
      if (volumeRendering) volumeRendering.sampleDistanceMultiplier = previous;
    }
    if (this.destroyed || !this.cells.includes(cells[0])) return;
    if (mode === 'mpr') {
      const preset = series.modality === 'CT' ? WL_PRESETS.find((p) => p.id === 'mediastinum') : undefined;
      if (preset) this.applyPreset(preset.id, false);
      this.applySlab();
      this.setPrimaryTool(this.primary.mpr);
    } else {
      this.applyVrPreset();
    }
    this.engine.renderViewports(ids);
  }

  private watchVolume(volume: VolumeLike, viewportIds: string[]): void {
    const total = volume.imageIds?.length ?? 0;
    // Without a GPU every view drawn while loading slows the loading itself (the page's thread
    // draws, reads the drawing back and takes the slices in; a 3D frame takes seconds): the
    // views are drawn once the volume is complete, the progress bar shows the loading.
    const renderEveryMs = softwareRendering() ? Infinity : this.mode === '3d' ? 1000 : 300;
    let lastRender = performance.now();
    let lastDone = 0;
    const tick = () => {
      if (this.destroyed || !this.cells.some((c) => viewportIds.includes(c.viewportId))) return;
      const done = volume.loadStatus?.loaded ? total : countLoaded(volume);
      this.progress.max = Math.max(1, total);
      this.progress.value = done;
      setMessage(this.progressText, 'viewer.loadingVolume', { done, total });
      this.statusBar.hidden = false;
      const complete = volume.loadStatus?.loaded || (total > 0 && done >= total);
      if (complete || (done > lastDone && performance.now() - lastRender >= renderEveryMs)) {
        lastRender = performance.now();
        lastDone = done;
        this.engine.renderViewports(viewportIds);
      }
      if (complete) {
        if (this.timings.volumeReadyMs === undefined) {
          this.timings.volumeReadyMs = performance.now();
          performance.mark('voxa:volume-ready');
        }
        setMessage(this.progressText, 'viewer.volumeReady');
        this.root.dataset.volumeReady = 'true';
        setTimeout(() => this.hideProgress(), 800);
        return;
      }
      setTimeout(tick, 100);
    };
    this.root.dataset.volumeReady = 'false';
    tick();
  }

  // ------------------------------------------------------------------ actions

  private viewport(cell = this.cells[this.active]): IViewport | undefined {
    if (!cell) return undefined;
    try {
      return this.engine.getViewport(cell.viewportId);
    } catch {
      return undefined;
    }
  }

  private targets(): IViewport[] {
    const all = this.cells.map((c) => this.viewport(c)).filter((v): v is IViewport => Boolean(v));
    return this.mode === 'stack' ? all.filter((_, i) => i === this.active) : all;
  }

  applyPreset(id: string, announce = true): void {
    const p = WL_PRESETS.find((x) => x.id === id);
    if (!p) return;
    const voiRange = { lower: p.center - p.width / 2, upper: p.center + p.width / 2 };
    for (const vp of this.targets()) {
      if (this.mode === '3d') continue;
      (vp as IStackViewport).setProperties({ voiRange });
      vp.render();
    }
    this.root.dataset.preset = id;
    if (announce) toast('viewer.presetApplied', { name: t(p.label) });
  }

  private rotate90(): void {
    const vp = this.viewport();
    if (!vp) return;
    const rotation = ((vp.getViewPresentation().rotation ?? 0) + 90) % 360;
    vp.setViewPresentation({ rotation });
    vp.render();
  }

  private flip(axis: 'h' | 'v'): void {
    const vp = this.viewport();
    if (!vp) return;
    const cam = vp.getCamera();
    vp.setCamera(axis === 'h' ? { flipHorizontal: !cam.flipHorizontal } : { flipVertical: !cam.flipVertical });
    vp.render();
  }

  private invert(): void {
    for (const vp of this.targets()) {
      const v = vp as IStackViewport;
      v.setProperties({ invert: !v.getProperties().invert });
      vp.render();
    }
  }

  private reset(cell?: Cell): void {
    const vps = cell ? [this.viewport(cell)].filter((v): v is IViewport => Boolean(v)) : this.targets();
    for (const vp of vps) {
      const v = vp as IStackViewport;
      v.resetProperties?.();
      vp.resetCamera();
      if (this.mode === '3d') this.applyVrPreset();
      vp.render();
    }
    if (this.mode === 'mpr') this.applySlab();
    if (this.mode === '3d') {
      const group = tools.ToolGroupManager.getToolGroup(GROUP['3d']);
      const clip = group?.getToolInstance(T.clip) as unknown as ClipBox | undefined;
      if (clip && clip.getClippingPlanesVisible()) clip.setClippingPlanesVisible(false);
      if (this.primary['3d'] === T.clip) this.setPrimaryTool(T.trackball);
    }
  }

  private applySlab(): void {
    if (this.mode !== 'mpr') return;
    const mode = { none: BlendModes.COMPOSITE, mip: BlendModes.MAXIMUM_INTENSITY_BLEND, minip: BlendModes.MINIMUM_INTENSITY_BLEND, avg: BlendModes.AVERAGE_INTENSITY_BLEND }[this.blend];
    for (const vp of this.targets()) {
      const v = vp as IVolumeViewport;
      v.setBlendMode(mode);
      v.setSlabThickness(this.blend === 'none' ? 0.1 : this.slabMm);
      vp.render();
    }
    const slab = this.toolbar.querySelector<HTMLInputElement>('#slab-thickness');
    if (slab) slab.disabled = this.blend === 'none';
  }

  private applyVrPreset(): void {
    if (this.mode !== '3d') return;
    const preset = VR_PRESETS.find((p) => p.id === this.vrPreset) ?? VR_PRESETS[0];
    for (const vp of this.targets()) {
      (vp as IVolumeViewport).setProperties({ sampleDistanceMultiplier: this.vrQuality });
      applyVrPreset(vp as IVolumeViewport, preset.id, this.vrQuality === 1);
      vp.render();
    }
  }

  private toggleCine(): void {
    if (this.cine) this.stopCine();
    else this.startCine();
  }

  private startCine(): void {
    const cell = this.cells[this.active];
    if (!cell) return;
    tools.utilities.cine.stopClip(cell.element);
    tools.utilities.cine.playClip(cell.element, { framesPerSecond: this.fps, loop: true });
    this.cine = true;
    this.cineButton();
  }

  private stopCine(): void {
    for (const c of this.cells) {
      try {
        tools.utilities.cine.stopClip(c.element);
      } catch {
        /* not playing */
      }
    }
    this.cine = false;
    this.cineButton();
  }

  private cineButton(): void {
    const b = this.toolbar.querySelector<HTMLButtonElement>('#cine-toggle');
    if (b) {
      setMessage(b, this.cine ? 'viewer.stop' : 'viewer.play');
      b.setAttribute('aria-pressed', String(this.cine));
    }
  }

  private scroll(delta: number, absolute?: 'first' | 'last'): void {
    const vp = this.viewport();
    if (!vp) return;
    if (vp instanceof core.StackViewport) {
      const n = vp.getImageIds().length;
      const target = absolute === 'first' ? 0 : absolute === 'last' ? n - 1 : vp.getCurrentImageIdIndex() + delta;
      void vp.setImageIdIndex(Math.max(0, Math.min(n - 1, target)));
    } else if (this.mode === 'mpr') {
      const v = vp as IVolumeViewport;
      const n = v.getNumberOfSlices();
      const current = v.getSliceIndex();
      const steps = absolute === 'first' ? -current : absolute === 'last' ? n - 1 - current : delta;
      core.utilities.scroll(vp, { delta: steps });
    }
  }

  private jumpTo(imageId: string): void {
    const cell = this.cells.find((c) => c.series?.sopByImageId.has(imageId) && this.isStack(c));
    const vp = cell && (this.viewport(cell) as IStackViewport | undefined);
    if (!vp) return;
    const index = vp.getImageIds().indexOf(imageId);
    if (index >= 0) void vp.setImageIdIndex(index);
    this.activate(cell!.index);
  }

  // ------------------------------------------------------------------ events

  /** Overlay values after each render of a viewport (Cornerstone's events do not bubble). */
  private onRendered(cell: Cell): void {
    const vp = this.viewport(cell);
    if (!vp) return;
    const camera = vp.getCamera();
    const state: Parameters<Overlay['update']>[0] = {
      zoom: vp.getZoom(), viewUp: camera.viewUp, viewPlaneNormal: camera.viewPlaneNormal,
    };
    const props = (vp as IStackViewport).getProperties?.();
    if (props?.voiRange && this.mode !== '3d') {
      state.windowWidth = props.voiRange.upper - props.voiRange.lower;
      state.windowCenter = (props.voiRange.upper + props.voiRange.lower) / 2;
    }
    if (vp instanceof core.StackViewport) {
      state.index = vp.getCurrentImageIdIndex();
      state.total = vp.getImageIds().length;
      if (this.timings.firstImageMs === undefined && vp.getImageData()) {
        this.timings.firstImageMs = performance.now();
        performance.mark('voxa:first-image');
        this.root.dataset.firstImage = 'true';
      }
    } else if (this.mode === 'mpr') {
      const v = vp as IVolumeViewport;
      state.index = v.getSliceIndex();
      state.total = v.getNumberOfSlices();
      state.sliceMm = this.blend === 'none' ? undefined : this.slabMm;
    }
    cell.overlay.update(state);
    cell.box.dataset.rendered = 'true';
  }

  private listenTo(cell: Cell): void {
    cell.element.addEventListener(Events.IMAGE_RENDERED, () => this.onRendered(cell));
    // a double tap resets the view
    cell.element.addEventListener(tools.Enums.Events.TOUCH_TAP, (evt) => {
      if (((evt as CustomEvent).detail as { taps?: number }).taps === 2) this.reset(cell);
    });
  }

  private listen(): void {
    let failures = 0;
    const onFailed = () => {
      if (failures++ === 0) toast('viewer.imageFailed', undefined, 'error');
    };
    core.eventTarget.addEventListener(Events.IMAGE_LOAD_FAILED, onFailed);
    this.disposers.push(() => core.eventTarget.removeEventListener(Events.IMAGE_LOAD_FAILED, onFailed));

    const resize = () => this.engine?.resize(true, true);
    const observer = new ResizeObserver(() => requestAnimationFrame(resize));
    observer.observe(this.grid);
    this.disposers.push(() => observer.disconnect());

    const onLanguage = () => this.cells.forEach((c) => c.overlay.paint());
    window.addEventListener('voxa:language', onLanguage);
    this.disposers.push(() => window.removeEventListener('voxa:language', onLanguage));

    const onKey = (event: KeyboardEvent) => this.onKey(event);
    document.addEventListener('keydown', onKey);
    this.disposers.push(() => document.removeEventListener('keydown', onKey));
  }

  private onKey(event: KeyboardEvent): void {
    if (isTyping(event) || event.ctrlKey || event.metaKey || event.altKey || document.querySelector('.modal-backdrop, .tour')) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const shortcut = SHORTCUTS.find((s) => s.scope === 'viewer' && s.keys.includes(key));
    if (!shortcut) return;
    const tool = (id: string) => MODE_TOOLS[this.mode].find((x) => x.id === id)?.tool;
    const done = () => event.preventDefault();
    switch (shortcut.action) {
      case 'help.nextImage': this.scroll(1); return done();
      case 'help.previousImage': this.scroll(-1); return done();
      case 'help.firstImage': this.scroll(0, 'first'); return done();
      case 'help.lastImage': this.scroll(0, 'last'); return done();
      case 'help.cine': if (this.mode === 'stack') this.toggleCine(); return done();
      case 'tool.windowLevel': case 'tool.pan': case 'tool.zoom': case 'tool.length': case 'tool.rotate': {
        const id = shortcut.action.slice(5);
        const name = tool(id);
        if (name) this.setPrimaryTool(name);
        return done();
      }
      case 'viewer.rotate90': if (this.mode === 'stack') this.rotate90(); return done();
      case 'viewer.flipH': if (this.mode === 'stack') this.flip('h'); return done();
      case 'viewer.flipV': if (this.mode === 'stack') this.flip('v'); return done();
      case 'viewer.invert': this.invert(); return done();
      case 'viewer.reset': this.reset(); return done();
      case 'help.presets': this.applyPreset(WL_PRESETS[Number(key) - 1]?.id ?? ''); return done();
      case 'mode.stack': void this.setMode('stack'); return done();
      case 'mode.mpr': if (this.canVolume()) void this.setMode('mpr'); return done();
      case 'mode.volume': if (this.canVolume()) void this.setMode('3d'); return done();
      case 'help.switchViewport':
        if (this.cells.length > 1) this.activate((this.active + (key === 'ArrowRight' ? 1 : this.cells.length - 1)) % this.cells.length);
        return done();
    }
  }

  // ------------------------------------------------------------------ progress

  private showProgress(key: MessageKey): void {
    this.statusBar.hidden = false;
    this.progress.removeAttribute('value');
    setMessage(this.progressText, key);
  }

  private hideProgress(): void {
    if (this.mode === 'stack' || this.root.dataset.volumeReady === 'true') this.statusBar.hidden = true;
  }

  private debugState(): unknown {
    return {
      mode: this.mode,
      layout: this.layout,
      active: this.active,
      cells: this.cells.map((c) => {
        const vp = this.viewport(c);
        const stack = vp instanceof core.StackViewport ? vp : undefined;
        const props = (vp as IStackViewport | undefined)?.getProperties?.();
        return {
          id: c.viewportId,
          series: c.series?.seriesUid ?? this.volumeSeries?.seriesUid,
          index: stack ? stack.getCurrentImageIdIndex() : (vp as IVolumeViewport | undefined)?.getSliceIndex?.(),
          total: stack ? stack.getImageIds().length : undefined,
          voi: props?.voiRange,
          invert: props?.invert,
          rotation: vp?.getViewPresentation?.().rotation,
          flipHorizontal: vp?.getCamera().flipHorizontal ?? false,
          zoom: vp?.getZoom(),
          viewPlaneNormal: vp?.getCamera().viewPlaneNormal,
        };
      }),
      annotations: tools.annotation.state.getAllAnnotations().map((a) => ({ uid: a.annotationUID, tool: a.metadata?.toolName })),
      timings: this.timings,
    };
  }
}

let software: boolean | undefined;

/** True when WebGL is rendered by the CPU (SwiftShader, llvmpipe): no GPU to ray-cast with. */
function softwareRendering(): boolean {
  if (software === undefined) {
    const gl = document.createElement('canvas').getContext('webgl2');
    const info = gl?.getExtension('WEBGL_debug_renderer_info');
    const renderer = gl && info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : '';
    software = /swiftshader|llvmpipe|software/i.test(renderer);
    gl?.getExtension('WEBGL_lose_context')?.loseContext();
  }
  return software;
}

/** Below this many frames to load, asking for each one is as quick. */
const PIXEL_DATA_MIN_FRAMES = 16;

/**
 * Load the rest of a stack in the background so that scrolling is instant: four at a time, so
 * that the browser keeps connections free for what the user asks for meanwhile.
 */
let prefetchGeneration = 0;

/** Stop background loading of stacks (the layout or mode changed; a volume needs the network). */
function stopPrefetch(): void {
  prefetchGeneration++;
}

function prefetch(imageIds: string[]): void {
  const { RequestType } = core.Enums;
  const queue = imageIds.filter((id) => !core.cache.isLoaded(id));
  const generation = prefetchGeneration;
  const next = (): Promise<void> => {
    if (generation !== prefetchGeneration) return Promise.resolve();
    const imageId = queue.shift();
    if (!imageId) return Promise.resolve();
    if (core.cache.isLoaded(imageId)) return next();
    return core.imageLoader.loadAndCacheImage(imageId, { priority: 5, requestType: RequestType.Prefetch })
      .then(() => undefined, () => undefined)
      .then(next);
  };
  for (let i = 0; i < 4; i++) void next();
}

interface VolumeLike {
  imageIds?: string[];
  loadStatus?: { loaded?: boolean; loading?: boolean; cachedFrames?: unknown[] | Record<string, unknown> };
  framesProcessed?: number;
  cachedFrames?: unknown[] | Record<string, unknown>;
}

function countLoaded(volume: VolumeLike): number {
  if (typeof volume.framesProcessed === 'number') return volume.framesProcessed;
  const frames = volume.loadStatus?.cachedFrames ?? volume.cachedFrames;
  if (!frames) return 0;
  return Object.values(frames).filter(Boolean).length;
}
