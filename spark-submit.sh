#!/usr/bin/env bash
# Submit any ecom-pipeline command to any Spark master.
#
#   ./spark-submit.sh [spark-submit options] -- <ecom-pipeline arguments>
#   ./spark-submit.sh --master 'local[2]' -- run --layer all
#   ./spark-submit.sh --master spark://host:7077 --executor-memory 4g -- run --layer all --env cluster
#
# It zips pipeline_lib/ and jobs/ into .cache/dist/ecom_pipeline.zip (shipped with --py-files),
# passes Delta Lake's cached jars with --jars (unless you pass --packages yourself), and runs
# jobs/__main__.py, the same entry point as `ecom-pipeline`. Client deploy mode: the driver
# reads conf/ from this checkout (ECOM_CONF_DIR). Set SPARK_SUBMIT to use another Spark
# installation's spark-submit, and PYSPARK_PYTHON for the executors' Python.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${VENV:-$ROOT/.venv}
SPARK_SUBMIT=${SPARK_SUBMIT:-$VENV/bin/spark-submit}
JARS_DIR=${ECOM_JARS_DIR:-$VENV/share/ecom-pipeline/jars}

spark_args=()
while [[ $# -gt 0 && "$1" != "--" ]]; do spark_args+=("$1"); shift; done
if [[ "${1:-}" != "--" || $# -lt 2 ]]; then
  echo "usage: $0 [spark-submit options] -- <ecom-pipeline arguments>   (e.g. $0 --master 'local[2]' -- run --layer all)" >&2
  exit 2
fi
shift
[[ -x "$SPARK_SUBMIT" ]] || { echo "spark-submit.sh: $SPARK_SUBMIT not found: run 'make setup' or set SPARK_SUBMIT" >&2; exit 2; }

mkdir -p "$ROOT/.cache/dist"
ZIP="$ROOT/.cache/dist/ecom_pipeline.zip"
(cd "$ROOT" && "$VENV/bin/python" -c '
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for pkg in ("pipeline_lib", "jobs"):
        for f in sorted(pathlib.Path(pkg).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                z.write(f, f.as_posix())
' "$ZIP")

delta_args=()
if [[ " ${spark_args[*]-} " != *" --packages "* ]]; then
  shopt -s nullglob
  jars=("$JARS_DIR"/*.jar)
  [[ ${#jars[@]} -gt 0 ]] || { echo "spark-submit.sh: no Delta Lake jars in $JARS_DIR: run 'make setup' or pass --packages" >&2; exit 2; }
  delta_args+=(--jars "$(IFS=,; echo "${jars[*]}")")
fi

export ECOM_CONF_DIR=${ECOM_CONF_DIR:-$ROOT/conf}
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$VENV/bin/python}
exec "$SPARK_SUBMIT" \
  --name "ecom-pipeline $1" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  "${delta_args[@]}" \
  --py-files "$ZIP" \
  "${spark_args[@]}" \
  "$ROOT/jobs/__main__.py" "$@"
