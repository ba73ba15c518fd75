"""Voxa: an open-source PACS and advanced-visualisation workstation."""

__version__ = "0.1.0"

# Identifies files written by Voxa (PS3.7 Implementation Class UID, under the 2.25 UUID root).
IMPLEMENTATION_CLASS_UID = "2.25.184093263913426931848462961528411029385"
IMPLEMENTATION_VERSION_NAME = "VOXA_010"
