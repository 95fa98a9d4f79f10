"""Fetch the JVM artifacts from Maven Central into the cache (``make setup``).

One Maven project per component (``local_stack/maven/<component>/pom.xml``) so their
classpaths never mix. A component is fetched again only when its pom changes. Delta's
jars that pyspark already ships (Hadoop, Jackson, Parquet, Scala...) are left out, so
Spark keeps its own versions. The MongoDB stand-in launcher is compiled here too.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lakehouse_common.errors import StackError
from local_stack.paths import PROJECT_ROOT, component_jars, java_executable, jvm_component_dir, standin_classes_dir

COMPONENTS = ("kafka", "delta", "s3", "mongo-standin", "spark-kafka")
# Components loaded into pyspark's JVM: the jars pyspark already ships are left out.
_SPARK_COMPONENTS = frozenset({"delta", "s3", "spark-kafka"})
_MAVEN_DIR = PROJECT_ROOT / "local_stack" / "maven"
_LAUNCHER_SOURCE = PROJECT_ROOT / "local_stack" / "java" / "MongoStandIn.java"
_VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-\d[^-]*(?:-[A-Za-z0-9.]+)*\.jar$")


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def artifact_name(jar: Path) -> str:
    """``hadoop-client-api-3.4.2.jar`` -> ``hadoop-client-api``."""
    match = _VERSIONED_JAR.match(jar.name)
    return match["artifact"] if match else jar.stem


def pyspark_artifacts() -> set[str]:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return {artifact_name(jar) for jar in jars.glob("*.jar")}


def fetch_component(component: str) -> bool:
    """Copy a component's runtime jars into the cache; returns False when already current."""
    pom = _MAVEN_DIR / component / "pom.xml"
    target = jvm_component_dir(component)
    stamp = target / "pom.sha256"
    wanted = _digest(pom)
    if stamp.exists() and stamp.read_text() == wanted and any((target / "jars").glob("*.jar")):
        return False
    print(f"fetching {component} jars from Maven Central...", flush=True)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as staging:
        command = [
            "mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"Maven could not fetch {component}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        jars = sorted(Path(staging).glob("*.jar"))
        if component in _SPARK_COMPONENTS:
            shipped = pyspark_artifacts()
            jars = [jar for jar in jars if artifact_name(jar) not in shipped]
        final = target / "jars"
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir()
        for jar in jars:
            shutil.move(str(jar), final / jar.name)
    stamp.write_text(wanted)
    print(f"  {component}: {len(list((target / 'jars').glob('*.jar')))} jars", flush=True)
    return True


def compile_standin_launcher() -> bool:
    """Compile the stand-in launcher against the cached jars; skipped when current."""
    classes = standin_classes_dir()
    stamp = classes / "source.sha256"
    wanted = _digest(_LAUNCHER_SOURCE, _MAVEN_DIR / "mongo-standin" / "pom.xml")
    if stamp.exists() and stamp.read_text() == wanted:
        return False
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    javac = str(Path(java_executable()).with_name("javac"))
    if not Path(javac).exists():
        javac = shutil.which("javac") or "javac"
    classpath = ":".join(str(jar) for jar in component_jars("mongo-standin"))
    result = subprocess.run(
        [javac, "--release", "17", "-d", str(classes), "-cp", classpath, str(_LAUNCHER_SOURCE)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"javac failed for the stand-in launcher:\n{result.stderr}")
    stamp.write_text(wanted)
    print("  compiled the MongoDB stand-in launcher", flush=True)
    return True


def main() -> int:
    try:
        for component in COMPONENTS:
            fetch_component(component)
        compile_standin_launcher()
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
