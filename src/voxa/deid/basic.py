"""De-identification with the Basic Application Level Confidentiality Profile (PS3.15 E.1).

Two entry points apply the same rules: :func:`deidentify_dataset` to a pydicom ``Dataset``
(a new one is returned, the input is left alone) and :func:`deidentify_json` to a DICOM JSON
model object (PS3.18 F.2), for QIDO-RS results and WADO-RS metadata. Both are pure: nothing is
read or written, and the clock is read only when ``now`` is not given.

How the table's actions become values (the table itself is in :mod:`voxa.deid.profile`):

* The combined codes (``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``) leave the choice to the
  IOD, which a whole-archive de-identifier does not know per attribute. For elements the last
  alternative is taken: a dummy or an empty value never carries the original, and it keeps
  every IOD valid, so viewers still find the Type 1 and Type 2 attributes they expect. For
  sequences a dummy item cannot be made up in general, so ``X/D`` removes the sequence,
  ``X/Z`` and ``X/Z/D`` empty it, and ``X/Z/U*`` keeps it with its UIDs replaced.
* ``D`` on a sequence (Content Sequence, Graphic Annotation Sequence, ...) keeps the items with
  the profile applied inside them, and in addition replaces free text (LT, ST, UT, UC) found in
  them: the table cannot list every text attribute that a report or an annotation may hold.
  A code sequence with ``D`` (Person Identification Code Sequence) identifies by its codes, so
  every string in it is replaced.
* Patient's Name becomes a dummy name rather than empty (``Z`` allows a dummy), so that a
  teaching case has a name to show; Patient ID becomes ``pseudonym(original)`` or a dummy.
* Instance Creation Date and Time (``X/D``, ``X/Z/D``) become the time of de-identification:
  the de-identified instance is a new instance, created then.
* ``U``: with the Retain UIDs Option the UIDs the option lists are kept; otherwise each UID is
  replaced by :func:`deidentified_uid`, a keyed hash, so the same UID gives the same
  replacement in every instance and every call with the same salt, and references between
  instances still resolve.
* Beyond the table: all private attributes, curves, whole overlay groups (an Overlay Plane
  without its Overlay Data is invalid, and Overlay Description and Label are free text) and
  group lengths (stale once elements are removed) go; the File Meta Information is rebuilt
  (PS3.15 E.1.1 step 7) with Voxa as the implementation; Patient Identity Removed, De-
  identification Method and De-identification Method Code Sequence are set (step 6).

Pixel data is not examined: see :func:`has_burned_in_annotation`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, auto
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from voxa import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from voxa.deid.profile import EDITION, TABLE_E_1_1, Action, basic_action, is_overlay, is_private

DUMMY_PATIENT_NAME = "ANONYMOUS^TEACHING"
DUMMY_PATIENT_ID = "ANONYMOUS"
DUMMY_TEXT = "ANONYMOUS"
DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
DUMMY_DATETIME = "19000101000000"
DUMMY_AGE = "000Y"
# Eight bytes satisfy the length rules of every binary VR (OF in fours, OD and OV in eights).
DUMMY_BYTES = bytes(8)

BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
RETAIN_UIDS_CODE = ("113110", "DCM", "Retain UIDs Option")

PSEUDONYM_PREFIX = "TEACH-"

_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_INSTANCE_CREATION_DATE = 0x00080012
_INSTANCE_CREATION_TIME = 0x00080013
_BURNED_IN_ANNOTATION = 0x00280301
_PATIENT_IDENTITY_REMOVED = 0x00120062
_DEIDENTIFICATION_METHOD = 0x00120063
_DEIDENTIFICATION_METHOD_CODES = 0x00120064
_CODE_VALUE = 0x00080100
_CODING_SCHEME = 0x00080102
_CODE_MEANING = 0x00080104

_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})
_DECIMAL_STRING_VRS = frozenset({"DS", "IS"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC"})
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)
_NO_SCRUB: frozenset[str] = frozenset()

# Code sequences whose action is D: their codes are the identifier (a person's ID code).
_DUMMY_CODE_SEQUENCES = frozenset(
    rule.tag for rule in TABLE_E_1_1.values() if rule.basic is Action.D and rule.name.endswith("Code Sequence")
)


class _Do(Enum):
    """What happens to one element once the table's action has been resolved."""

    KEEP = auto()
    REMOVE = auto()
    EMPTY = auto()
    DUMMY = auto()
    UID = auto()


# The combined codes take their last alternative (see the module docstring): never the
# original value, and valid whatever the attribute's Type in the IOD at hand.
_ELEMENT_CHOICE = {
    Action.K: _Do.KEEP,
    Action.X: _Do.REMOVE,
    Action.Z: _Do.EMPTY,
    Action.D: _Do.DUMMY,
    Action.U: _Do.UID,
    # Nothing to clean with: a dummy is the safe reading of C.
    Action.C: _Do.DUMMY,
    Action.Z_D: _Do.DUMMY,
    Action.X_Z: _Do.EMPTY,
    Action.X_D: _Do.DUMMY,
    Action.X_Z_D: _Do.DUMMY,
    Action.X_Z_U: _Do.UID,
}
# A dummy item cannot be made up for an arbitrary sequence, so D falls back to Z or X; U on a
# sequence means "keep it and replace the UIDs inside", which the recursion does.
_SEQUENCE_CHOICE = {
    **_ELEMENT_CHOICE,
    Action.U: _Do.KEEP,
    Action.X_D: _Do.REMOVE,
    Action.X_Z_D: _Do.EMPTY,
    Action.X_Z_U: _Do.KEEP,
}


def _decide(tag: int, vr: str, retain_uids: bool) -> _Do:
    if tag & 0xFFFF == 0 or is_overlay(tag):
        return _Do.REMOVE
    action = basic_action(tag, retain_uids=retain_uids)
    if action is None:
        return _Do.KEEP
    return (_SEQUENCE_CHOICE if vr == "SQ" else _ELEMENT_CHOICE)[action]


@dataclass(frozen=True, slots=True)
class _Context:
    retain_uids: bool
    uid_salt: str
    pseudonym: Callable[[str], str] | None
    patient_name: str
    now: datetime
    replaced_uids: dict[str, str] = field(default_factory=dict)
    """Original UID to replacement, for every UID replaced in this call."""

    def patient_id(self, original: str) -> str:
        original = original.strip()
        if self.pseudonym is None or not original:
            return DUMMY_PATIENT_ID
        value = self.pseudonym(original)
        if not 0 < len(value) <= 64:
            raise ValueError(f"a pseudonymous Patient ID must be 1 to 64 characters, got {len(value)}")
        return value

    def uid(self, original: str) -> str:
        original = original.strip("\0 ")
        if not original:
            return original
        replacement = self.replaced_uids.get(original)
        if replacement is None:
            replacement = self.replaced_uids[original] = deidentified_uid(original, uid_salt=self.uid_salt)
        return replacement

    def dummy(self, tag: int, vr: str) -> str | int | bytes:
        if tag == _PATIENT_NAME:
            return self.patient_name
        if tag == _INSTANCE_CREATION_DATE and vr == "DA":
            return self.now.strftime("%Y%m%d")
        if tag == _INSTANCE_CREATION_TIME and vr == "TM":
            return self.now.strftime("%H%M%S")
        if vr == "DA":
            return DUMMY_DATE
        if vr == "TM":
            return DUMMY_TIME
        if vr == "DT":
            return DUMMY_DATETIME
        if vr == "AS":
            return DUMMY_AGE
        if vr in _DECIMAL_STRING_VRS:
            return "0"
        if vr in _NUMBER_VRS:
            return 0
        if vr in _BINARY_VRS or " or " in vr:
            return DUMMY_BYTES
        return DUMMY_TEXT

    def method_text(self) -> str:
        # LO: at most 64 characters.
        option = ", Retain UIDs Option" if self.retain_uids else ""
        return f"Voxa: PS3.15 {EDITION} Basic Profile{option}"

    def method_codes(self) -> list[tuple[str, str, str]]:
        return [BASIC_PROFILE_CODE, RETAIN_UIDS_CODE] if self.retain_uids else [BASIC_PROFILE_CODE]


def _context(
    *,
    pseudonym: Callable[[str], str] | None,
    retain_uids: bool,
    uid_salt: str,
    now: datetime | None,
    patient_name: str,
) -> _Context:
    if not retain_uids and not uid_salt:
        # Without a salt the replacement would be a plain hash of the UID, which anyone can
        # recompute from a candidate original; and a per-call random salt would break series.
        raise ValueError("retain_uids=False needs a secret uid_salt, the same for every instance of a set")
    # With the Retain UIDs Option only the few UIDs the option does not retain (Digital Signature
    # UID, the UID of an SR UIDREF item) are replaced; a per-call salt keeps them consistent
    # within the call without inventing a shared secret.
    salt = uid_salt or secrets.token_hex(16)
    return _Context(retain_uids, salt, pseudonym, patient_name, now if now is not None else datetime.now())


# ------------------------------------------------------------------------------------------
# Public API


def deidentified_uid(uid: str, *, uid_salt: str) -> str:
    """The replacement for ``uid``: ``2.25.`` and a UUID made from HMAC-SHA256(salt, uid).

    The same salt and UID always give the same replacement, so a caller can also map a UID it
    holds elsewhere (a study UID in a URL) to the one the de-identified instances carry.
    """
    if not uid_salt:
        raise ValueError("uid_salt must not be empty")
    digest = bytearray(hmac.new(uid_salt.encode(), uid.strip("\0 ").encode(), hashlib.sha256).digest()[:16])
    # Version 8 (custom) and the RFC 9562 variant make it a genuine UUID, as the 2.25 arc asks.
    digest[6] = (digest[6] & 0x0F) | 0x80
    digest[8] = (digest[8] & 0x3F) | 0x80
    return f"2.25.{int.from_bytes(digest, 'big')}"


def make_pseudonym(secret: bytes) -> Callable[[str], str]:
    """A stable pseudonymous Patient ID: ``TEACH-`` and base32 of HMAC-SHA256(secret, ID)[:10].

    Keyed, unlike a plain hash, so that nobody without the secret can confirm a guessed Patient
    ID; 80 bits leave collisions out of reach for any archive. 22 characters, within LO's 64.
    """
    if not secret:
        raise ValueError("the pseudonym secret must not be empty")

    def pseudonym(patient_id: str) -> str:
        digest = hmac.new(secret, patient_id.strip().encode("utf-8"), hashlib.sha256).digest()
        return PSEUDONYM_PREFIX + base64.b32encode(digest[:10]).decode("ascii")

    return pseudonym


def has_burned_in_annotation(ds: Dataset | Mapping[str, Any]) -> bool:
    """Whether Burned In Annotation (0028,0301) says YES, for a Dataset or DICOM JSON.

    De-identification does not look at pixels, so such an instance still shows whatever was
    burned in; teaching access refuses it. An absent attribute gives False: it is unknown.
    """
    if isinstance(ds, Dataset):
        value = ds.get(_BURNED_IN_ANNOTATION)
        text = "" if value is None or value.value is None else str(value.value)
    else:
        values = ds.get(f"{_BURNED_IN_ANNOTATION:08X}", {}).get("Value") or [""]
        text = str(values[0])
    return text.strip().upper() == "YES"


def deidentify_dataset(
    ds: Dataset,
    *,
    pseudonym: Callable[[str], str] | None = None,
    retain_uids: bool = True,
    uid_salt: str = "",
    now: datetime | None = None,
    patient_name: str = DUMMY_PATIENT_NAME,
) -> Dataset:
    """A de-identified copy of ``ds`` (with new File Meta Information if ``ds`` has one).

    ``pseudonym`` maps the original Patient ID to the new one (see :func:`make_pseudonym`);
    without it every patient becomes ``ANONYMOUS``. ``retain_uids=False`` replaces UIDs with
    :func:`deidentified_uid` under ``uid_salt``, which must then be given. ``now`` is the time of
    de-identification, written as Instance Creation Date and Time.
    """
    ctx = _context(
        pseudonym=pseudonym, retain_uids=retain_uids, uid_salt=uid_salt, now=now, patient_name=patient_name
    )
    out = _clean_dataset(ds, ctx, _NO_SCRUB)
    _mark_dataset(out, ctx)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.file_meta = _file_meta(meta, out, ctx)
    return out


def deidentify_json(
    attrs: Mapping[str, Any],
    *,
    pseudonym: Callable[[str], str] | None = None,
    retain_uids: bool = True,
    uid_salt: str = "",
    now: datetime | None = None,
    patient_name: str = DUMMY_PATIENT_NAME,
) -> dict[str, Any]:
    """The same as :func:`deidentify_dataset` for a DICOM JSON model object (PS3.18 F.2).

    Bulk data references (``BulkDataURI``) of kept attributes are kept, except that a path
    segment equal to a UID this call replaced is replaced too, so that the URIs do not reveal
    the original Study, Series or SOP Instance UID; the server resolving them must map the
    replacements back (it can recompute them with :func:`deidentified_uid`).
    """
    ctx = _context(
        pseudonym=pseudonym, retain_uids=retain_uids, uid_salt=uid_salt, now=now, patient_name=patient_name
    )
    out = _clean_json(attrs, ctx, _NO_SCRUB)
    if ctx.replaced_uids:
        _rewrite_bulk_data_uris(out, ctx.replaced_uids)
    _mark_json(out, ctx)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------
# pydicom Datasets


def _clean_dataset(src: Dataset, ctx: _Context, scrub: frozenset[str]) -> Dataset:
    out = Dataset()
    for key in list(src.keys()):
        tag = int(key)
        # Decided on the tag alone, before pydicom decodes a private value it may not understand.
        if is_private(tag) or tag & 0xFFFF == 0 or is_overlay(tag):
            continue
        new = _clean_element(src[key], ctx, scrub)
        if new is not None:
            out.add(new)
    return out


def _clean_element(elem: DataElement, ctx: _Context, scrub: frozenset[str]) -> DataElement | None:
    tag, vr = int(elem.tag), str(elem.VR)
    do = _decide(tag, vr, ctx.retain_uids)
    if do is _Do.REMOVE:
        return None
    if vr == "SQ":
        if do is _Do.EMPTY:
            return DataElement(tag, vr, Sequence())
        inner = _inner_scrub(tag, do, scrub)
        return DataElement(tag, vr, Sequence([_clean_dataset(item, ctx, inner) for item in elem.value]))
    if tag == _PATIENT_ID:
        return DataElement(tag, vr, ctx.patient_id(_first_string(elem.value)))
    if tag == _PATIENT_NAME:
        return DataElement(tag, vr, ctx.patient_name)
    if do is _Do.KEEP and vr in scrub and not elem.is_empty:
        do = _Do.DUMMY
    if do is _Do.KEEP:
        return copy.deepcopy(elem)
    if do is _Do.EMPTY:
        return DataElement(tag, vr, None)
    if vr == "UI" and (do is _Do.UID or do is _Do.DUMMY):
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        mapped = [ctx.uid(str(value)) for value in values if value is not None]
        return DataElement(tag, vr, mapped[0] if len(mapped) == 1 else mapped or None)
    return DataElement(tag, vr, ctx.dummy(tag, vr))


def _inner_scrub(tag: int, do: _Do, scrub: frozenset[str]) -> frozenset[str]:
    if do is not _Do.DUMMY:
        return scrub
    if tag in _DUMMY_CODE_SEQUENCES:
        return scrub | _STRING_VRS
    return scrub | _FREE_TEXT_VRS


def _first_string(value: Any) -> str:
    if isinstance(value, MultiValue | list):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _mark_dataset(out: Dataset, ctx: _Context) -> None:
    out.PatientIdentityRemoved = "YES"
    # An instance de-identified before keeps the record of it (copied like any kept
    # attribute); ours is added after it.
    previous = out.get(_DEIDENTIFICATION_METHOD)
    methods = [] if previous is None or previous.is_empty else _as_list(previous.value)
    out.DeidentificationMethod = [*methods, ctx.method_text()]
    items = list(out.get("DeidentificationMethodCodeSequence", []))
    present = {(item.get("CodeValue"), item.get("CodingSchemeDesignator")) for item in items}
    items += [_code_item(code) for code in ctx.method_codes() if code[:2] not in present]
    out.DeidentificationMethodCodeSequence = Sequence(items)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _file_meta(src: FileMetaDataset, out: Dataset, ctx: _Context) -> FileMetaDataset:
    """New File Meta Information naming Voxa, as PS3.15 E.1.1 step 7 asks.

    Only what a reader needs is carried over: the source's Source/Sending AE titles and
    Private Information would tell where the instance came from.
    """
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    sop_class = out.get("SOPClassUID") or src.get("MediaStorageSOPClassUID")
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    sop_instance = str(out.get("SOPInstanceUID") or "")
    if not sop_instance and src.get("MediaStorageSOPInstanceUID"):
        original = str(src.MediaStorageSOPInstanceUID)
        sop_instance = original if ctx.retain_uids else ctx.uid(original)
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    if src.get("TransferSyntaxUID"):
        meta.TransferSyntaxUID = src.TransferSyntaxUID
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


# ------------------------------------------------------------------------------------------
# DICOM JSON (PS3.18 F.2)


def _clean_json(attrs: Mapping[str, Any], ctx: _Context, scrub: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, elem in attrs.items():
        try:
            tag = int(key, 16)
        except ValueError:
            raise ValueError(f"DICOM JSON key {key!r} is not a tag of 8 hexadecimal digits") from None
        if len(key) != 8:
            raise ValueError(f"DICOM JSON key {key!r} is not a tag of 8 hexadecimal digits")
        if is_private(tag) or tag & 0xFFFF == 0 or is_overlay(tag):
            continue
        new = _clean_json_element(tag, elem, ctx, scrub)
        if new is not None:
            out[key] = new
    return out


def _clean_json_element(tag: int, elem: Mapping[str, Any], ctx: _Context, scrub: frozenset[str]) -> Any:
    vr = str(elem.get("vr", "UN"))
    do = _decide(tag, vr, ctx.retain_uids)
    if do is _Do.REMOVE:
        return None
    values = elem.get("Value")
    if vr == "SQ":
        if do is _Do.EMPTY:
            return {"vr": vr, "Value": []}
        inner = _inner_scrub(tag, do, scrub)
        return {"vr": vr, "Value": [_clean_json(item, ctx, inner) for item in values or []]}
    if tag == _PATIENT_ID:
        original = values[0] if values else ""
        return {"vr": vr, "Value": [ctx.patient_id("" if original is None else str(original))]}
    if tag == _PATIENT_NAME:
        return _json_value(vr, ctx.patient_name)
    has_value = bool(values) or "InlineBinary" in elem or "BulkDataURI" in elem
    if do is _Do.KEEP and vr in scrub and has_value:
        do = _Do.DUMMY
    if do is _Do.KEEP:
        return copy.deepcopy(dict(elem))
    if do is _Do.EMPTY:
        return {"vr": vr}
    if vr == "UI" and (do is _Do.UID or do is _Do.DUMMY):
        mapped = [ctx.uid(str(value)) for value in values or [] if value is not None]
        return {"vr": vr, "Value": mapped} if mapped else {"vr": vr}
    return _json_value(vr, ctx.dummy(tag, vr))


def _rewrite_bulk_data_uris(attrs: dict[str, Any], replaced: Mapping[str, str]) -> None:
    for elem in attrs.values():
        uri = elem.get("BulkDataURI")
        if isinstance(uri, str):
            elem["BulkDataURI"] = "/".join(replaced.get(part, part) for part in uri.split("/"))
        if elem.get("vr") == "SQ":
            for item in elem.get("Value") or []:
                _rewrite_bulk_data_uris(item, replaced)


def _json_value(vr: str, value: str | int | bytes) -> dict[str, Any]:
    if isinstance(value, bytes):
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": value}]}
    if vr in _DECIMAL_STRING_VRS:
        # DS and IS are numbers in DICOM JSON.
        return {"vr": vr, "Value": [int(value)]}
    return {"vr": vr, "Value": [value]}


def _json_code_item(code: tuple[str, str, str]) -> dict[str, Any]:
    value, scheme, meaning = code
    return {
        f"{_CODE_VALUE:08X}": {"vr": "SH", "Value": [value]},
        f"{_CODING_SCHEME:08X}": {"vr": "SH", "Value": [scheme]},
        f"{_CODE_MEANING:08X}": {"vr": "LO", "Value": [meaning]},
    }


def _mark_json(out: dict[str, Any], ctx: _Context) -> None:
    out[f"{_PATIENT_IDENTITY_REMOVED:08X}"] = {"vr": "CS", "Value": ["YES"]}
    key = f"{_DEIDENTIFICATION_METHOD:08X}"
    methods = [str(value) for value in out.get(key, {}).get("Value") or [] if value is not None]
    out[key] = {"vr": "LO", "Value": [*methods, ctx.method_text()]}
    key = f"{_DEIDENTIFICATION_METHOD_CODES:08X}"
    items = list(out.get(key, {}).get("Value") or [])
    present = {(_json_first(item, _CODE_VALUE), _json_first(item, _CODING_SCHEME)) for item in items}
    items += [_json_code_item(code) for code in ctx.method_codes() if code[:2] not in present]
    out[key] = {"vr": "SQ", "Value": items}


def _json_first(attrs: Mapping[str, Any], tag: int) -> Any:
    values = attrs.get(f"{tag:08X}", {}).get("Value") or [None]
    return values[0]
