"""The public surface: what ``from stigmer_core import ...`` promises."""

from __future__ import annotations

import stigmer_core
from stigmer_core import errors


def test_every_public_name_resolves_and_errors_form_one_tree() -> None:
    for name in stigmer_core.__all__:
        assert getattr(stigmer_core, name) is not None, name
    exported_errors = [getattr(stigmer_core, n) for n in stigmer_core.__all__ if isinstance(getattr(stigmer_core, n), type)]
    for cls in exported_errors:
        if issubclass(cls, Exception):
            assert issubclass(cls, errors.StigmerError), cls
    tree = {cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.StigmerError)}
    assert tree <= {getattr(stigmer_core, n) for n in stigmer_core.__all__}, "every error is exported"
