"""The inference core is shared, not owned: inference/ imports neither service/ nor training/, training/ does not
import service/ (the HTTP side), and service/ does not import training/ (torch stays out of the service). Neither
inference/ nor service/ imports torch or onnx, which the serving images leave out."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

FORBIDDEN = {"inference": {"service", "training", "torch", "onnx"}, "training": {"service"},
             "service": {"training", "torch", "onnx"}}


def imported_packages(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_they_may(package):
    offenders = {str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
                 for path in sorted((REPO / package).rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}
