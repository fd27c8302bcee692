"""Progress of a tuning run: a tqdm bar over trials, with the task and the best times so far.

A MetaSchedule measure callback: called after each round of measurements with the task's
results. The bar's total is the run's trial budget; tqdm estimates the time left from the
rate so far. The postfix names the task just measured, its best time, and the model's kernel
time estimate (Σ calls × best time over the tuned kernels). On a farm (``--tracker``) it also
shows how many of the registered devices are measuring, refreshed every few seconds by a
watcher thread (rounds end with every device idle, so a per-round figure would always say 0).
"""

from __future__ import annotations

import sys
import threading

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

DEVICE_REFRESH_SECONDS = 2.0


@derived_object
class ProgressCallback(PyMeasureCallback):
    """Counts measured candidates and keeps the best time per task; draws the bar."""

    def __init__(self, tasks, budget: int, done_before: int, total: int, enabled: bool = True, devices=None):
        super().__init__()
        from tqdm import tqdm

        self.tasks = tasks
        self.measured = 0
        self.best = {}
        self.task_text = ""
        self.device_text = ""
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.bar = tqdm(
            total=budget,
            unit="trial",
            desc=f"tuning {len(tasks)} tasks ({done_before}/{total} trials in the database)",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self.watcher = None
        if devices is not None and enabled:
            self.watcher = threading.Thread(target=self._watch_devices, args=(devices,), daemon=True, name="slimtvm-tune-devices")
            self.watcher.start()

    def _watch_devices(self, devices) -> None:
        while not self.stopped.wait(DEVICE_REFRESH_SECONDS):
            text = devices()
            with self.lock:
                self.device_text = text
                self._show(refresh=True)

    def _show(self, refresh: bool) -> None:
        parts = [p for p in (self.task_text, self.device_text) if p]
        self.bar.set_postfix_str("; ".join(parts), refresh=refresh)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        task = self.tasks[task_id]
        for result in runner_results:
            if result.run_secs:
                seconds = sum(float(v) for v in result.run_secs) / len(result.run_secs)
                if seconds < self.best.get(task.name, float("inf")):
                    self.best[task.name] = seconds
        self.measured += len(measure_candidates)
        estimate = sum(t.weight * self.best[t.name] for t in self.tasks if t.name in self.best)
        with self.lock:
            self.task_text = (
                f"task {task_id + 1}/{len(self.tasks)} {task.name}: best {self.best.get(task.name, float('nan')) * 1e3:.3f} ms; "
                f"tuned kernels {estimate * 1e3:.2f} ms"
            )
            self._show(refresh=False)
            self.bar.update(len(measure_candidates))

    def close(self) -> None:
        self.stopped.set()
        if self.watcher is not None:
            self.watcher.join(timeout=10)
        self.bar.close()
