"""The public packages are reachable as attributes of ``synbal`` after a plain ``import synbal``."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("name", ["torch", "training", "data", "dynamics", "experiments", "quantize", "clip"])
def test_public_package_is_an_attribute_after_import_synbal(name: str) -> None:
    code = f"import synbal; m = synbal.{name}; assert m.__name__ == 'synbal.{name}', m.__name__"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error() -> None:
    import synbal

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        synbal.nope  # noqa: B018
