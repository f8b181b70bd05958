"""The analyst notebooks run top to bottom on a lake built by the real pipeline, and draw charts.

Each notebook is executed in a ``python3`` kernel of this interpreter, pointed by
``$ECOM_LAKE`` at the session's reference lake (generated data through every job,
tests/conftest.py). They share one kernel, each starting from an empty namespace
(``%reset -f``): a notebook that used a name it did not define fails as in a fresh kernel,
and only the first pays for starting Spark's JVM (~30 s on two busy cores). The committed
notebooks themselves must carry no outputs (checked without Spark).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from tests.support import cli_environment

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED_NOTEBOOKS = {
    "01_sales_overview.ipynb",
    "02_customer_segments.ipynb",
    "03_product_popularity.ipynb",
    "04_data_quality_and_operations.ipynb",
    "06_campaigns_and_stock.ipynb",
    "05_recommendations.ipynb",
}
# The gold tables each notebook is about: on a lake the pipeline built, none may be reported missing.
GOLD_TABLES_USED = {
    "01_sales_overview.ipynb": ["gold.fact_orders"],
    "02_customer_segments.ipynb": ["gold.customer_segments"],
    "03_product_popularity.ipynb": ["gold.product_popularity", "gold.dim_product", "gold.fact_sessions"],
    "04_data_quality_and_operations.ipynb": ["ops.pipeline_runs", "ops.ingested_files"],
    "06_campaigns_and_stock.ipynb": [
        "gold.campaign_audiences",
        "gold.campaign_results",
        "gold.stock_signals",
        "gold.fact_inventory_daily",
    ],
    "05_recommendations.ipynb": ["gold.recommendation_metrics", "gold.recommendations", "gold.dim_product"],
}
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def demo_lake(reference_lake) -> Path:
    """The session's reference lake, built by every job from generated data (tests/conftest.py)."""
    return Path(reference_lake.paths.lake)


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelManager]:
    """One ``python3`` kernel for the module's notebooks; started by the first, shut down at the end."""
    manager = KernelManager(kernel_name="python3")
    yield manager
    if manager.has_kernel:
        manager.shutdown_kernel(now=True)


def execute_notebook(path: Path, lake: Path, kernel: KernelManager) -> nbformat.NotebookNode:
    """Run a notebook top to bottom on ``lake``, from an empty namespace; a failing cell raises."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))  # what an earlier notebook defined
    client = NotebookClient(
        notebook,
        km=kernel,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute(env=cli_environment(ECOM_LAKE=str(lake)))
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for output in _outputs(notebook):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_every_notebook_is_committed_without_outputs() -> None:
    assert {p.name for p in NOTEBOOKS} == EXPECTED_NOTEBOOKS
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code_cells = [c for c in notebook.cells if c.cell_type == "code"]
        assert code_cells, f"{path.name} has no code"
        assert all(c.outputs == [] and c.execution_count is None for c in code_cells), (
            f"{path.name} carries outputs or execution counts: strip them before committing"
        )
        assert "open_lake()" in code_cells[0].source, f"{path.name} must open the lake with open_lake()"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_and_draws_charts(
    path: Path, demo_lake: Path, kernel: KernelManager
) -> None:
    executed = execute_notebook(path, demo_lake, kernel)

    outputs = _outputs(executed)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    charts = [o for o in outputs if "image/png" in o.get("data", {})]
    assert charts, f"{path.name} drew no chart"
    text = _text(executed)
    assert str(demo_lake) in text, f"{path.name} did not open the lake of $ECOM_LAKE"
    missing = [t for t in GOLD_TABLES_USED[path.name] if f"{t} is not in this lake" in text]
    assert not missing, f"{path.name} found no {missing} in a lake the pipeline built"
