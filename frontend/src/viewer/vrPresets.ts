// 3D volume rendering presets: transfer functions from HU (or MR signal) to colour and opacity,
// in the form Cornerstone's applyPreset takes (VTK's preset strings: a count, then points).
//
// Where VTK's presets look as a reader expects they are used as they are. VTK's CT-Bone ramps
// opacity up from -16 HU, so muscle and organs (20-80 HU) are about 6 % opaque per millimetre and
// a chest becomes an opaque red slab; Voxa's bone preset starts at 150 HU instead, so soft tissue
// is transparent and the skeleton (and contrast-filled vessels and chambers, dimmer) remains.
import { core } from './cs';

type ViewportPreset = (typeof core.CONSTANTS.VIEWPORT_PRESETS)[number];

const CT_BONE: ViewportPreset = {
  name: 'Voxa-CT-Bone',
  gradientOpacity: '4 0 1 255 1',
  specularPower: '10',
  scalarOpacity: '10 -3024 0 150 0 250 0.25 600 0.7 3071 0.8',
  specular: '0.2',
  shade: '1',
  ambient: '0.2',
  colorTransfer: '16 -3024 0 0 0 150 0.73 0.25 0.3 641 0.906 0.816 0.553 3071 1 1 1',
  diffuse: '0.9',
  interpolation: '1',
};

function vtkPreset(name: string): ViewportPreset {
  const preset = core.CONSTANTS.VIEWPORT_PRESETS.find((p) => p.name === name);
  if (!preset) throw new Error(`Cornerstone has no volume rendering preset ${name}`);
  return preset;
}

/** The preset's transfer functions for the ids the viewer offers. */
export function vrPreset(id: string): ViewportPreset {
  switch (id) {
    case 'bone':
      return CT_BONE;
    case 'soft':
      return vtkPreset('CT-Soft-Tissue');
    case 'lung':
      return vtkPreset('CT-Lung');
    case 'angio':
      return vtkPreset('CT-Chest-Contrast-Enhanced');
    case 'mr':
      return vtkPreset('MR-Default');
    default:
      throw new Error(`unknown volume rendering preset ${id}`);
  }
}

/** Apply a preset to a 3D viewport's volume; shading off where WebGL runs in software (each
 * shaded step samples six more voxels: minutes per frame without a GPU). */
export function applyVrPreset(viewport: import('@cornerstonejs/core').Types.IVolumeViewport, id: string,
                              shade: boolean): void {
  const actor = viewport.getDefaultActor()?.actor as unknown as Parameters<typeof core.utilities.applyPreset>[0] | undefined;
  if (!actor) return;
  core.utilities.applyPreset(actor, vrPreset(id));
  if (!shade) (actor as unknown as { getProperty: () => { setShade: (on: boolean) => void } }).getProperty().setShade(false);
}
