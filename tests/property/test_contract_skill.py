"""The stateful contract for Skill (a versioned kind), on the in-process channel and over the network."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from hypothesis import strategies as st

from stigmer_core.kinds.runtime import KindRuntime
from stigmer_core.testing import contract_tests
from stigmer_core.testing import strategies as s


def _zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buf.getvalue()


def _skill_specs(kind: KindRuntime) -> Any:
    """The rules allow any bytes in ``spec.artifact``; the kind takes a zip whose SKILL.md, when it
    has one, is ``skillMd``. A document without a zip keeps the stored one, and is refused when
    that zip's SKILL.md is other markdown (``tests/test_skill.py``), so a drawn zip holds a SKILL.md
    only when every later document carries its own zip: here none does, or each holds tools alone."""

    @st.composite
    def draw(draw: st.DrawFn) -> Any:
        spec: Any = draw(s.specs(kind))
        spec.ClearField("artifact")
        if draw(st.booleans()):
            spec.artifact = _zip_of({"tools/run.sh": f"echo {len(spec.skill_md)}\n"})
        return spec

    return draw()


def _stored(spec: Any) -> None:
    spec.ClearField("artifact")  # kept with the versions; never returned in the spec


TestSkillInProcess, TestSkillNetwork = contract_tests("Skill", specs=_skill_specs, normalise=_stored)
