// DICOM JSON (PS3.18 F.2) helpers: reading values of QIDO-RS and WADO-RS metadata answers.

export interface DicomAttribute {
  vr: string;
  Value?: unknown[];
  BulkDataURI?: string;
  InlineBinary?: string;
}
export type DicomJson = Record<string, DicomAttribute>;

export const Tag = {
  SpecificCharacterSet: '00080005',
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  StudyTime: '00080030',
  AccessionNumber: '00080050',
  Modality: '00080060',
  ModalitiesInStudy: '00080061',
  ReferringPhysicianName: '00080090',
  InstitutionName: '00080080',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  PatientName: '00100010',
  PatientID: '00100020',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  BodyPartExamined: '00180015',
  SliceThickness: '00180050',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  StudyID: '00200010',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  PixelSpacing: '00280030',
  WindowCenter: '00281050',
  WindowWidth: '00281051',
} as const;

export function values(ds: DicomJson | undefined, tag: string): unknown[] {
  return ds?.[tag]?.Value ?? [];
}

/** The first value as text; person names in their alphabetic form. */
export function str(ds: DicomJson | undefined, tag: string): string {
  const v = values(ds, tag)[0];
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return String((v as { Alphabetic?: string }).Alphabetic ?? '');
  return String(v);
}

export function num(ds: DicomJson | undefined, tag: string): number | undefined {
  const v = values(ds, tag)[0];
  const n = typeof v === 'number' ? v : parseFloat(String(v));
  return Number.isFinite(n) ? n : undefined;
}

export function nums(ds: DicomJson | undefined, tag: string): number[] {
  return values(ds, tag).map((v) => (typeof v === 'number' ? v : parseFloat(String(v))));
}

/** DOE^JANE^M → "DOE, JANE M" */
export function personName(raw: string): string {
  if (!raw) return '';
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = raw.split('=')[0].split('^');
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(' ');
  return family && rest ? `${family}, ${rest}` : family || rest;
}

/** ModalitiesInStudy as "CT\\SR" → "CT, SR" */
export function modalities(ds: DicomJson): string {
  const m = values(ds, Tag.ModalitiesInStudy).map(String);
  return (m.length ? m : values(ds, Tag.Modality).map(String)).join(', ');
}
