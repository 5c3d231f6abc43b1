"""An installed distribution's name and version, read from its metadata's headers alone.

``Distribution.metadata`` parses the whole core metadata file, the long
description included (stigmer-core's is its README, about 60 KB), and
``Distribution.name`` and ``.version`` each parse it again (about 1.4 ms
each on a slow machine). Start-up read both for every kind plugin's entry
point: 16 parses for the 8 first-party ones. The format is an email message
whose headers end at the first blank line, so the headers alone say the same
Name and Version.
"""

from __future__ import annotations

import email.parser
import importlib.metadata


def identity(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    """(Name, Version) as ``dist.metadata`` says them."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    end = text.find("\n\n")
    # Cutting at the first blank line only drops body text: the parser stops its headers at a
    # blank line anyway, whichever line endings the file uses.
    headers = email.parser.HeaderParser().parsestr(text if end < 0 else text[: end + 1])
    name, version = headers["Name"], headers["Version"]
    if name is None or version is None:  # not a metadata file of the usual shape: as importlib reads it
        return dist.metadata["Name"] or "", dist.version
    return str(name), str(version)
