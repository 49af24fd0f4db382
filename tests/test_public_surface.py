"""The public packages are reachable as attributes of ``synbal`` after a plain ``import synbal``."""

import subprocess
import sys

import pytest

PUBLIC_PACKAGES = ("torch", "training", "data", "dynamics", "experiments", "quantize", "clip")


def test_public_packages_are_attributes_after_import_synbal() -> None:
    # One fresh interpreter (nothing imported beforehand) checks every name: each start imports torch.
    code = ("import synbal\n"
            f"for name in {PUBLIC_PACKAGES!r}:\n"
            "    m = getattr(synbal, name)\n"
            "    assert m.__name__ == f'synbal.{name}', (name, m.__name__)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error() -> None:
    import synbal

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        synbal.nope  # noqa: B018
