"""Where the setup caches things and where the local stack keeps its state.

The cache rule itself is ``lakehouse_common.paths`` (the services' settings default to it);
this module adds what only the local stack needs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lakehouse_common.errors import StackError
from lakehouse_common.paths import SOURCE_ROOT, cache_dir, jvm_component_dir

PROJECT_ROOT = SOURCE_ROOT


def tool_path(name: str) -> Path:
    """A tool ``make setup`` builds into ``.cache/bin`` (helm, weed)."""
    return cache_dir() / "bin" / name


def standin_classes_dir() -> Path:
    return jvm_component_dir("mongo-standin") / "classes"


def state_dir() -> Path:
    """Where ``make stack-up`` records what it started, for ``make stack-down``."""
    return Path(os.environ.get("LAKEHOUSE_STACK_DIR", PROJECT_ROOT / "build" / "stack")).resolve()


def component_jars(component: str) -> list[Path]:
    """The cached jars of a component, or a ``StackError`` telling how to fetch them."""
    directory = jvm_component_dir(component) / "jars"
    jars = sorted(directory.glob("*.jar"))
    if not jars:
        raise StackError(f"no jars for {component} in {directory}: run `make setup` first")
    return jars


def java_executable() -> str:
    """The ``java`` of ``JAVA_HOME`` if set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise StackError("no java found: install Java 17 or set JAVA_HOME")
    return java


__all__ = [
    "PROJECT_ROOT",
    "cache_dir",
    "component_jars",
    "java_executable",
    "jvm_component_dir",
    "standin_classes_dir",
    "state_dir",
    "tool_path",
]
