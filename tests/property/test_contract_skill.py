"""The stateful contract for Skill (a versioned kind), on the in-process channel and over the network."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from hypothesis import strategies as st

from stigmer_core.kinds.runtime import KindRuntime
from stigmer_core.testing import contract_tests
from stigmer_core.testing import strategies as s


def _zip_of(markdown: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SKILL.md", markdown)
    return buf.getvalue()


def _skill_specs(kind: KindRuntime) -> Any:
    """The rules allow any bytes in ``spec.artifact``; the kind takes a zip whose SKILL.md is ``skillMd``."""

    @st.composite
    def draw(draw: st.DrawFn) -> Any:
        spec: Any = draw(s.specs(kind))
        spec.ClearField("artifact")
        if draw(st.booleans()):
            spec.artifact = _zip_of(spec.skill_md)
        return spec

    return draw()


def _stored(spec: Any) -> None:
    spec.ClearField("artifact")  # kept with the versions; never returned in the spec


TestSkillInProcess, TestSkillNetwork = contract_tests("Skill", specs=_skill_specs, normalise=_stored)
