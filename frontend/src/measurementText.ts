// A stored measurement in words, for lists: its kind and the values the server computed.
import type { StoredMeasurement } from './api';
import { formatNumber, t, type MessageKey } from './i18n';

const UNITS: Record<string, string> = { mm: 'mm', mm2: 'mm²', deg: '°', ml: 'ml', "[hnsf'U]": 'HU', '1': '' };

function quantity(q?: { value: number; unit: string }, digits = 1): string {
  if (!q) return '';
  const unit = UNITS[q.unit] ?? q.unit;
  return unit === '°' ? `${formatNumber(q.value, digits)}°` : `${formatNumber(q.value, digits)} ${unit}`.trim();
}

export function describeMeasurement(m: StoredMeasurement): string {
  const v = m.values;
  const kind = t(`kind.${m.kind}` as MessageKey);
  switch (m.kind) {
    case 'distance':
      return v.length ? t('viewer.lengthValue', { value: formatNumber(v.length.value, 1) }) : kind;
    case 'angle':
    case 'cobb_angle':
      return `${kind} ${quantity(v.angle)}`;
    case 'rectangle_roi':
    case 'ellipse_roi':
    case 'freehand_roi':
      return `${kind} ${quantity(v.mean)} ± ${quantity(v.sd)}, ${quantity(v.area)}`;
    case 'probe':
      return `${kind} ${quantity(v.value)}`;
    case 'volume':
      return `${kind} ${quantity(v.volume, 2)}`;
    default:
      return m.label ? `${kind}: ${m.label}` : kind;
  }
}
