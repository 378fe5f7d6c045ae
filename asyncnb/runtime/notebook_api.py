"""Whole notebooks as asynchronous APIs: each workload runs the notebook with papermill.

The payload becomes papermill parameters (a JSON object's keys, or `payload` for anything
else); values the notebook passes to `asyncnb.record(name, value)` become the result; the
executed notebook is kept beside the workload (`GET /{api}/{id}/notebook`). Progress is the
share of cells executed, through a papermill engine registered as `asyncnb`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..contract.notebooks import IN_WORKLOAD_ENV, NOTEBOOK_ARTIFACT, RECORD_MIME
from ..errors import UsageError
from .chunks import artifact_path_for_current_workload
from .progress import report_progress

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def record(name: str, value: Any) -> None:
    """Record an output of a notebook run as an API: it becomes part of the workload's result.

    Outside a notebook API it only displays the value, so the notebook runs unchanged by hand.
    """
    from IPython.display import display

    json.dumps(value)  # fail here, in the cell, on values that cannot be a result
    display(
        {RECORD_MIME: {"name": name, "value": value}, "text/plain": f"{name} = {value!r}"},
        raw=True,
    )


class NotebookCellError(Exception):
    """A cell of a notebook API failed; the message names the cell."""


def _register_engine() -> str:
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            total = max(1, len(nb_man.nb.cells))
            finished = nb_man.cell_complete

            def cell_complete(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                outcome = finished(cell, cell_index=cell_index, **kw)
                done = (cell_index or 0) + 1
                report_progress(done / total, f"cell {done}/{total}")
                return outcome

            nb_man.cell_complete = cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("asyncnb", ProgressEngine)
    return "asyncnb"


class NotebookPredictor:
    """The predictor behind a notebook API (shipped to workers like any other)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import nbformat

        self.notebook = nbformat.reads(config["notebook"], as_version=4)
        self.kernel_name = config.get("kernel_name") or "python3"
        self.cell_timeout = config.get("cell_timeout_s")
        self.engine = _register_engine()

    def predict(self, payload: Any, request_id: str) -> dict[str, Any]:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        parameters = payload if isinstance(payload, dict) else {"payload": payload}
        if isinstance(parameters.get("payload"), bytes):
            parameters = {"payload": parameters["payload"].decode("latin-1")}
        with tempfile.TemporaryDirectory(prefix="asyncnb-nb-") as folder:
            output = Path(folder) / NOTEBOOK_ARTIFACT
            os.environ[IN_WORKLOAD_ENV] = "1"  # inherited by the kernel papermill starts
            try:
                executed = papermill.execute_notebook(
                    self.notebook,
                    str(output),
                    parameters=parameters,
                    kernel_name=self.kernel_name,
                    engine_name=self.engine,
                    progress_bar=False,
                    cwd=folder,
                    execution_timeout=self.cell_timeout,
                )
            except PapermillExecutionError as exc:
                self._keep(output)
                raise NotebookCellError(
                    f"cell {exc.cell_index} raised {exc.ename}: {exc.evalue}\n"
                    + _ANSI.sub("", "\n".join(exc.traceback))
                ) from None
            self._keep(output)
        return _records(executed)

    @staticmethod
    def _keep(output: Path) -> None:
        """Store the executed notebook beside the workload, failed or not."""
        if not output.exists():
            return
        target = artifact_path_for_current_workload(NOTEBOOK_ARTIFACT)
        if target is not None:
            storage, path = target
            storage.write_bytes(path, output.read_bytes())


def _records(notebook: Any) -> dict[str, Any]:
    recorded: dict[str, Any] = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                entry = data[RECORD_MIME]
                recorded[entry["name"]] = entry["value"]
    return recorded


def notebook_config(path: str | Path, kernel_name: str | None = None) -> dict[str, Any]:
    """Read and validate a notebook file into the config of a NotebookPredictor."""
    import nbformat

    source = Path(path)
    if source.suffix != ".ipynb" or not source.is_file():
        raise UsageError(f"{source} is not a notebook file (.ipynb)")
    try:
        notebook = nbformat.read(source, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:
        raise UsageError(f"{source} is not a valid notebook: {exc}") from None
    config: dict[str, Any] = {"notebook": nbformat.writes(notebook), "source": source.name}
    if kernel_name:
        config["kernel_name"] = kernel_name
    return config
