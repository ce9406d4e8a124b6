#!/usr/bin/env bash
# pinpipe setup: virtualenv + pinned Python packages + Delta Lake JVM jars, from scratch.
# Everything lands inside the checkout (.venv/, .cache/), ignored by git. Re-running is a
# fast no-op: each step records what it installed and is skipped while that is unchanged.
#
#   PINPIPE_PYTHON      interpreter for the virtualenv (default: python3.11, else python3)
#   PINPIPE_VENV        where the virtualenv lives (default: .venv)
#   PINPIPE_WHEELHOUSE  where downloaded packages are kept (default: ~/.cache/pinpipe/wheelhouse)
#   PINPIPE_M2          the Maven repository JVM jars are resolved into (default: ~/.cache/pinpipe/m2)
#
# torch from PyPI is the multi-GB CUDA build. The packages of setup/requirements.lock are
# downloaded once into the wheelhouse, outside the checkout, and installed from there: a second
# clone on the same machine (CI's, say) downloads nothing again.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${PINPIPE_VENV:-.venv}
wheelhouse=${PINPIPE_WHEELHOUSE:-$HOME/.cache/pinpipe/wheelhouse}
build_setuptools=84.2.1  # build backend for pinpipe itself and for pyspark's sdist
build_wheel=0.48.0
py=${PINPIPE_PYTHON:-$(command -v python3.11 || command -v python3)}
jars_dir=.cache/jars
log() { printf '[setup] %s\n' "$*"; }

# 1. virtualenv
if [[ ! -x $venv/bin/python ]]; then
  log "creating virtualenv $venv with $py"
  "$py" -m venv "$venv"
fi
"$venv/bin/python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"pinpipe needs Python >= 3.11, the virtualenv has {sys.version.split()[0]}")
PY

# 2. Python packages (pinned in pyproject.toml, exact set frozen in setup/requirements.lock)
py_stamp=$(cat pyproject.toml setup/requirements.lock | sha256sum | cut -c1-16)
if [[ "$(cat "$venv/.pinpipe-packages" 2>/dev/null)" != "$py_stamp" ]]; then
  log "installing Python packages (first time: several minutes, torch is large)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip==25.3
  mkdir -p "$wheelhouse"
  # Files already in the wheelhouse are not downloaded again; the install reads only the
  # wheelhouse (--no-index), so it needs the build requirements there too.
  "$venv/bin/python" -m pip download --quiet --no-deps --prefer-binary -d "$wheelhouse" \
    -r setup/requirements.lock "setuptools==$build_setuptools" "wheel==$build_wheel"
  "$venv/bin/python" -m pip install --quiet --no-index --find-links "$wheelhouse" \
    -c setup/requirements.lock -e '.[dev,s3,hdfs,mlflow,bench]'
  echo "$py_stamp" > "$venv/.pinpipe-packages"
else
  log "Python packages up to date"
fi

# 3. JVM jars: Delta Lake (.cache/jars), Hadoop's S3A connector (.cache/jars/s3, used only
#    with an s3:// or s3a:// lake) and, for the tests' real HDFS, Hadoop's MiniDFSCluster
#    (.cache/jars/hdfs-test; an hdfs:// lake itself needs nothing: pyspark's Hadoop client speaks it), each resolved once from Maven Central into a local Maven
#    repository outside the checkout (the AWS SDK bundle is ~650 MB: a second clone downloads
#    nothing again) and linked from there, minus every artifact pyspark already ships.
m2_repo=${PINPIPE_M2:-$HOME/.cache/pinpipe/m2}
resolve_jars() {  # resolve_jars <pom> <folder> <what>
  local pom=$1 dir=$2 what=$3
  local stamp
  stamp=$(sha256sum < "$pom" | cut -c1-16)
  if [[ "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then
    log "$what jars up to date"
    return
  fi
  command -v mvn >/dev/null || { echo "setup: Maven (mvn) is needed to fetch the $what jars: apt-get install maven" >&2; exit 1; }
  command -v java >/dev/null || { echo "setup: a Java 17+ runtime is needed by Spark: apt-get install openjdk-17-jdk-headless" >&2; exit 1; }
  log "resolving $what jars from Maven Central"
  local classpath
  classpath=$(mktemp)
  mvn --batch-mode --quiet -f "$pom" -Dmaven.repo.local="$m2_repo" \
    dependency:build-classpath -DincludeScope=runtime -Dmdep.outputFile="$classpath"
  local spark_jars
  spark_jars=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
  artifact() { basename "$1" .jar | sed -E 's/-[0-9][^-]*(-[0-9A-Za-z.]+)*$//'; }
  declare -A provided=()
  for j in "$spark_jars"/*.jar; do provided[$(artifact "$j")]=1; done
  find "$dir" -maxdepth 1 -name '*.jar' -delete 2>/dev/null || true
  mkdir -p "$dir"
  local j
  for j in $(tr ':' ' ' < "$classpath"); do
    if [[ -z ${provided[$(artifact "$j")]:-} ]]; then ln -sf "$j" "$dir/"; fi
  done
  rm -f "$classpath"
  echo "$stamp" > "$dir/.stamp"
  log "$what jars in $dir: $(find "$dir" -maxdepth 1 -name '*.jar' | wc -l) (pyspark provides the rest)"
}
resolve_jars setup/delta-jars.pom.xml "$jars_dir" Delta
ls "$jars_dir"/delta-spark_*.jar >/dev/null 2>&1 || { echo "setup: no delta-spark jar resolved" >&2; exit 1; }
resolve_jars setup/s3-jars.pom.xml "$jars_dir/s3" "S3A connector"
resolve_jars setup/hdfs-test-jars.pom.xml "$jars_dir/hdfs-test" "HDFS minicluster (tests)"
log "ready: $venv/bin/pinpipe --help"
