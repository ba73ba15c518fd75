// Cornerstone3D, started once: rendering core, tools, the DICOMweb image loader (web workers,
// WASM codecs) and the streaming volume loader. Loaded only with the viewer page.
import * as core from '@cornerstonejs/core';
import * as tools from '@cornerstonejs/tools';
import { init as initImageLoader } from '@cornerstonejs/dicom-image-loader';
import { registerPixelDataLoader } from './seriesPixelData';

export { core, tools };

export const TOOL_CLASSES = [
  tools.WindowLevelTool,
  tools.PanTool,
  tools.ZoomTool,
  tools.StackScrollTool,
  tools.LengthTool,
  tools.AngleTool,
  tools.CobbAngleTool,
  tools.RectangleROITool,
  tools.EllipticalROITool,
  tools.ProbeTool,
  tools.ArrowAnnotateTool,
  tools.PlanarFreehandROITool,
  tools.LabelTool,
  tools.PlanarRotateTool,
  tools.CrosshairsTool,
  tools.TrackballRotateTool,
  tools.VolumeRotateTool,
  tools.VolumeCroppingTool,
];

let started = false;

const SINGLE_FRAME = /\/frames\/\d+$/;
const SINGLE_PART_ACCEPT =
  'application/octet-stream; transfer-syntax=*, multipart/related; type=application/octet-stream; transfer-syntax=*; q=0.9';

/**
 * One frame is asked for as a bare body first. The loader takes a multipart answer apart by
 * searching every byte of it for the boundary on the page's thread — about 3 ms per 512×512 CT
 * frame, a second of a 300-slice volume; a bare body is used as it comes. Multipart stays
 * acceptable for servers that only send that.
 */
function singlePartFrames(_xhr: XMLHttpRequest, imageId: string, headers: Record<string, string>): Record<string, string> | void {
  const url = imageId.replace(/^wadors:/, '');
  if (SINGLE_FRAME.test(url) && headers.Accept?.startsWith('multipart/related; type=application/octet-stream')) {
    return { Accept: SINGLE_PART_ACCEPT };
  }
}

/**
 * Start one image decoder worker now rather than at the first image (its module and codecs
 * take a moment to load). Cornerstone starts workers lazily on the first task; this asks for
 * one and puts its load counter back.
 */
function warmDecoder(): void {
  const manager = core.getWebWorkerManager() as unknown as {
    getNextWorkerAPI?: (name: string) => { index: number } | null;
    workerRegistry?: Record<string, { loadCounters: number[] }>;
  };
  try {
    const got = manager.getNextWorkerAPI?.('dicomImageLoader');
    const counters = manager.workerRegistry?.dicomImageLoader?.loadCounters;
    if (got && counters) counters[got.index] = Math.max(0, counters[got.index] - 1);
  } catch (e) {
    console.warn('image decoder not started early', e);
  }
}

export async function startCornerstone(): Promise<void> {
  if (started) return;
  started = true;
  await core.init();
  const cores = navigator.hardwareConcurrency || 2;
  initImageLoader({ maxWebWorkers: Math.max(2, Math.min(cores - 1, 4)), beforeSend: singlePartFrames });
  registerPixelDataLoader();
  tools.init();
  core.volumeLoader.registerUnknownVolumeLoader(
    core.cornerstoneStreamingImageVolumeLoader as unknown as Parameters<typeof core.volumeLoader.registerUnknownVolumeLoader>[0],
  );
  core.volumeLoader.registerVolumeLoader(
    'cornerstoneStreamingImageVolume',
    core.cornerstoneStreamingImageVolumeLoader as unknown as Parameters<typeof core.volumeLoader.registerVolumeLoader>[1],
  );
  for (const Tool of TOOL_CLASSES) tools.addTool(Tool);
  warmDecoder();
  // for tests, benchmarks and the curious: what of the libraries the tests read (the whole
  // namespaces here would keep every part of both in the bundle: nothing could be left out)
  Object.assign(window, {
    cornerstone: { getRenderingEngines: core.getRenderingEngines, cache: core.cache },
    cornerstoneTools: { annotation: tools.annotation, ToolGroupManager: tools.ToolGroupManager },
  });
}
