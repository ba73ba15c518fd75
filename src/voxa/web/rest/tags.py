"""DICOM attributes the way Orthanc's REST API prints them.

* :func:`orthanc_tags` turns a pydicom dataset into Orthanc's "full" JSON
  (``{"0010,0010": {"Name": "PatientName", "Type": "String", "Value": "DOE^JANE"}}``), with
  :func:`simplify` (``{"PatientName": "DOE^JANE"}``) and :func:`shorten` (``{"0010,0010": ...}``)
  for ``?simplify`` and ``?short``.  Values are DICOM strings as stored (``"1.660"`` stays
  ``"1.660"``), binary values are ``Null``, strings longer than 256 bytes ``TooLong``, as in
  Orthanc's defaults.
* :data:`MAIN_DICOM_TAGS` are Orthanc 1.10's main DICOM tags per level, and :func:`main_tags`
  reads them from the DICOM JSON the index keeps for every instance (no file read).  DICOM
  JSON keeps DS/IS values as numbers, so the raw text of those is read from the stored file
  by :func:`read_number_strings` (a walk over the top-level element headers, no parsing).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, BinaryIO

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from voxa.archive.attributes import Level

#: Orthanc's ``ORTHANC_MAXIMUM_TAG_LENGTH``: longer strings are reported as ``TooLong``.
MAX_STRING_BYTES = 256
UNKNOWN_NAME = "Unknown Tag & Data"

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
_FLOAT_VRS = frozenset({"FL", "FD"})

# Orthanc 1.10's default main DICOM tags (OrthancFramework DicomMap.cpp), in its order.
_MAIN_KEYWORDS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: ("PatientName", "PatientBirthDate", "PatientSex", "OtherPatientIDs", "PatientID"),
    Level.STUDY: ("StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber", "StudyInstanceUID",
                  "RequestedProcedureDescription", "InstitutionName", "RequestingPhysician",
                  "ReferringPhysicianName"),
    Level.SERIES: ("SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName", "SeriesDescription",
                   "BodyPartExamined", "SequenceName", "ProtocolName", "SeriesNumber", "CardiacNumberOfImages",
                   "ImagesInAcquisition", "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
                   "SeriesInstanceUID", "ImageOrientationPatient", "SeriesType", "OperatorsName",
                   "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
                   "ContrastBolusAgent"),
    Level.IMAGE: ("InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber", "ImageIndex", "InstanceNumber",
                  "NumberOfFrames", "TemporalPositionIdentifier", "SOPInstanceUID", "ImagePositionPatient",
                  "ImageComments", "ImageOrientationPatient"),
}


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


#: Level -> ((tag, keyword), ...)
MAIN_DICOM_TAGS: dict[Level, tuple[tuple[int, str], ...]] = {
    level: tuple((_tag(kw), kw) for kw in kws) for level, kws in _MAIN_KEYWORDS.items()
}
MAIN_KEYWORDS = frozenset(kw for kws in _MAIN_KEYWORDS.values() for kw in kws)
#: Main tags whose text DICOM JSON does not keep (DS and IS values become numbers there).
NUMBER_STRING_TAGS = frozenset(_tag(kw) for kw in (
    "SeriesNumber", "CardiacNumberOfImages", "ImagesInAcquisition", "NumberOfTemporalPositions",
    "ImageOrientationPatient", "AcquisitionNumber", "InstanceNumber", "NumberOfFrames",
    "TemporalPositionIdentifier", "ImagePositionPatient"))


def tag_key(tag: int) -> str:
    """Orthanc's key for a tag: ``"0008,103e"`` (lower-case hex)."""
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


# -- pydicom dataset -> Orthanc JSON ----------------------------------------------------------------


def _one_value(value: Any, vr: str) -> str:
    if value is None:
        return ""
    if vr in _FLOAT_VRS and isinstance(value, float):
        return f"{value:.17g}"
    if vr == "AT" or isinstance(value, BaseTag):
        tag = int(value)
        return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\0 ")
    return str(value)


def element_string(elem: DataElement) -> str:
    """The DICOM string of a non-sequence, non-binary element (values joined with ``\\``)."""
    value = elem.value
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_one_value(v, elem.VR) for v in value)
    text = _one_value(value, elem.VR)
    return text.rstrip("\0") if elem.VR == "UI" else text


def _name(elem: DataElement) -> str:
    tag = int(elem.tag)
    if elem.tag.is_private:
        return "PrivateCreator" if 0x0010 <= (tag & 0xFFFF) <= 0x00FF else UNKNOWN_NAME
    keyword = keyword_for_tag(tag)
    if keyword:
        return keyword
    return "GenericGroupLength" if tag & 0xFFFF == 0 else UNKNOWN_NAME


def orthanc_tags(ds: Dataset, *, max_string_bytes: int = MAX_STRING_BYTES,
                 file_meta: bool = False) -> dict[str, Any]:
    """Orthanc's full JSON of ``ds``: the file meta group is left out (as in ``/instances/{id}/tags``)
    unless ``file_meta`` (``/instances/{id}/header``)."""
    out: dict[str, Any] = {}
    for elem in ds:
        tag = int(elem.tag)
        if (tag >> 16 == 0x0002) != file_meta:
            continue
        entry: dict[str, Any] = {"Name": _name(elem)}
        if elem.tag.is_private and (tag & 0xFFFF) > 0x00FF:
            creator = ds.get(((tag >> 16) << 16) | ((tag & 0xFFFF) >> 8))
            if creator is not None and creator.value:
                entry["PrivateCreator"] = str(creator.value).strip()
        if elem.VR == "SQ":
            entry["Type"] = "Sequence"
            entry["Value"] = [orthanc_tags(item, max_string_bytes=max_string_bytes) for item in (elem.value or [])]
        elif elem.VR in _BINARY_VRS:
            entry["Type"], entry["Value"] = "Null", None
        else:
            text = element_string(elem)
            if len(text.encode("utf-8")) > max_string_bytes:
                entry["Type"], entry["Value"] = "TooLong", None
            else:
                entry["Type"], entry["Value"] = "String", text
        out[tag_key(tag)] = entry
    return out


def simplify(full: dict[str, Any]) -> dict[str, Any]:
    """Orthanc's ``?simplify`` form: keyed by name (private tags collide on their name, as in Orthanc)."""
    out: dict[str, Any] = {}
    for entry in full.values():
        out[entry["Name"]] = _simple_value(entry, simplify)
    return dict(sorted(out.items()))


def shorten(full: dict[str, Any]) -> dict[str, Any]:
    """Orthanc's ``?short`` form: keyed by ``gggg,eeee``."""
    return {key: _simple_value(entry, shorten) for key, entry in full.items()}


def _simple_value(entry: dict[str, Any], recurse: Any) -> Any:
    if entry["Type"] == "Sequence":
        return [recurse(item) for item in entry["Value"]]
    if entry["Type"] == "String":
        return entry["Value"]
    return None


# -- DICOM JSON (the index's metadata) -> Orthanc strings -------------------------------------------


def _json_one(value: Any, vr: str) -> str:
    if value is None:
        return ""
    if vr == "PN" and isinstance(value, dict):
        groups = [value.get("Alphabetic", ""), value.get("Ideographic", ""), value.get("Phonetic", "")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    if vr in _FLOAT_VRS and isinstance(value, float):
        return f"{value:.17g}"
    if vr == "AT" and isinstance(value, str) and len(value) == 8:
        return f"{value[:4]},{value[4:]}".lower()
    if isinstance(value, float) and value.is_integer() and vr == "IS":
        return str(int(value))
    return str(value)


def json_string(element: dict[str, Any]) -> str | None:
    """The DICOM string of one DICOM JSON element; None for sequences and bulk data."""
    vr = element.get("vr", "")
    if vr == "SQ" or "BulkDataURI" in element or "InlineBinary" in element:
        return None
    values = element.get("Value")
    if not values:
        return ""
    return "\\".join(_json_one(v, vr) for v in values)


def json_value(element: dict[str, Any]) -> Any:
    """An element of DICOM JSON in Orthanc's simplified form (sequences as lists of objects)."""
    if element.get("vr") == "SQ":
        return [{(keyword_for_tag(int(k, 16)) or tag_key(int(k, 16))): json_value(v) for k, v in item.items()}
                for item in element.get("Value") or []]
    return json_string(element)


def main_tags(metadata: dict[str, Any], level: Level, numbers: dict[int, str] | None = None) -> dict[str, str]:
    """Orthanc's ``MainDicomTags`` of ``level`` from an instance's DICOM JSON.

    Like Orthanc, a tag absent from the file is absent here, and a tag present but empty is
    ``""``.  ``numbers`` (from :func:`read_number_strings`) gives the raw text of DS/IS values.
    """
    out: dict[str, str] = {}
    for tag, keyword in MAIN_DICOM_TAGS[level]:
        element = metadata.get(f"{tag:08X}")
        if element is None:
            continue
        if numbers is not None and tag in numbers:
            out[keyword] = numbers[tag]
            continue
        text = json_string(element)
        if text is not None:
            out[keyword] = text
    return dict(sorted(out.items()))


def tag_value(metadata: dict[str, Any], keyword_or_tag: str) -> tuple[str, Any] | None:
    """(keyword, simplified value) of any attribute in an instance's DICOM JSON, or None."""
    tag = parse_tag(keyword_or_tag)
    if tag is None:
        return None
    element = metadata.get(f"{tag:08X}")
    if element is None:
        return None
    return keyword_for_tag(tag) or tag_key(tag), json_value(element)


def parse_tag(keyword_or_tag: str) -> int | None:
    """A tag from ``PatientName``, ``0010,0010``, ``(0010,0010)`` or ``00100010``."""
    text = keyword_or_tag.strip().strip("()")
    hexdigits = text.replace(",", "")
    if len(hexdigits) == 8 and all(c in "0123456789abcdefABCDEF" for c in hexdigits):
        return int(hexdigits, 16)
    tag = tag_for_keyword(text)
    return int(tag) if tag is not None else None


# -- raw text of DS / IS elements, from the stored file ---------------------------------------------

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


class _Malformed(Exception):
    pass


class _HeaderReader:
    """Element headers of a stored dataset, read from the file; values are skipped by seeking."""

    def __init__(self, fp: BinaryIO, little: bool):
        self.fp = fp
        self.tag_fmt = struct.Struct("<HH" if little else ">HH")
        self.u16 = struct.Struct("<H" if little else ">H")
        self.u32 = struct.Struct("<I" if little else ">I")

    def read(self, n: int) -> bytes:
        data = self.fp.read(n)
        if len(data) != n:
            raise _Malformed
        return data

    def header(self, implicit: bool) -> tuple[int, bytes, int] | None:
        head = self.fp.read(8)
        if len(head) < 8:
            return None
        g, e = self.tag_fmt.unpack_from(head)
        tag = (g << 16) | e
        if implicit or g == 0xFFFE:
            return tag, b"", self.u32.unpack_from(head, 4)[0]
        vr = head[4:6]
        if vr in _LONG_VRS:
            return tag, vr, self.u32.unpack(self.read(4))[0]
        return tag, vr, self.u16.unpack_from(head, 6)[0]

    def skip_items(self, implicit: bool) -> None:
        while True:
            h = self.header(True)
            if h is None:
                raise _Malformed
            tag, _vr, length = h
            if tag == _SEQ_END:
                return
            if tag != _ITEM:
                raise _Malformed
            if length == _UNDEFINED:
                self.skip_elements(implicit)
            else:
                self.fp.seek(length, 1)

    def skip_elements(self, implicit: bool) -> None:
        """Skip the elements of an item of undefined length, through its delimiter."""
        while True:
            h = self.header(implicit)
            if h is None:
                raise _Malformed
            tag, vr, length = h
            if tag == _ITEM_END:
                return
            if length == _UNDEFINED:
                self.skip_items(implicit or vr == b"UN")
            else:
                self.fp.seek(length, 1)


def read_number_strings(fp: BinaryIO, dataset_offset: int, transfer_syntax: str,
                        tags: Iterable[int] = NUMBER_STRING_TAGS) -> dict[int, str]:
    """The raw text of top-level DS/IS elements ``tags`` (spaces around each value removed).

    Returns what it found; an empty dict for deflated datasets or anything unexpected (the
    caller then falls back on the numbers of the DICOM JSON).
    """
    wanted = frozenset(tags)
    if not wanted or transfer_syntax == "1.2.840.10008.1.2.1.99":
        return {}
    last = max(wanted)
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    reader = _HeaderReader(fp, little=transfer_syntax != "1.2.840.10008.1.2.2")
    out: dict[int, str] = {}
    try:
        fp.seek(dataset_offset)
        while True:
            h = reader.header(implicit)
            if h is None:
                break
            tag, vr, length = h
            if tag > last:
                break
            if length == _UNDEFINED:
                reader.skip_items(implicit or vr == b"UN")
            elif tag in wanted:
                raw = reader.read(length).decode("ascii", "replace")
                out[tag] = "\\".join(v.strip(" \0") for v in raw.split("\\"))
            else:
                fp.seek(length, 1)
    except (_Malformed, OSError, struct.error):
        return {}
    return out
