"""The installed package layout (everything else is in pyproject.toml).

The folders stay at the top of the checkout, but client/, common/, server/, simulation/ and
configs/ install as `privdiff.client`, `privdiff.common`, ... (setuptools' package-dir), so a
hospital's environment gains no top-level `client` or `server`. The package list is computed
here, not written out in pyproject.toml, so a new subpackage can never be left out of the wheel.
configs/ is a package (YAML files and an __init__.py) so that privdiff_core.config finds the
configs through importlib.resources, in a checkout and in an installed wheel alike.
"""

from setuptools import find_packages, setup

NAMESPACED = ("client", "common", "server", "simulation", "configs")

setup(
    packages=[
        *find_packages(include=["privdiff_core", "privdiff_core.*"]),
        *(f"privdiff.{name}" for name in find_packages(include=[f"{top}*" for top in NAMESPACED])),
    ],
    package_dir={f"privdiff.{top}": top for top in NAMESPACED},
)
