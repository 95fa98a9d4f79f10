"""Where the setup caches things and where the local stack keeps its state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lakehouse_common.errors import StackError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Root of the setup's cache (JVM artifacts, tools); ``LAKEHOUSE_CACHE_DIR`` overrides it."""
    return Path(os.environ.get("LAKEHOUSE_CACHE_DIR", PROJECT_ROOT / ".cache")).resolve()


def jvm_component_dir(component: str) -> Path:
    """The jars of one JVM component (``kafka``, ``delta``, ``mongo-standin``)."""
    return cache_dir() / "jvm" / component


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
]
