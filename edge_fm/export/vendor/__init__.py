"""Flatbuffer schemas edge-fm vendors, with the Python that flatc generated from them (see README.md)."""
