"""Read studies in order, optionally in worker processes that read ahead while the models run."""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from spinegrade.prediction.results import reason, study_problem
from spinegrade.prediction.studies import StudyImages, StudyPlan, read_study


def read_studies(plans: Iterable[StudyPlan], workers: int = 0) -> Iterator[StudyImages]:
    """Read studies in order; with workers > 0, that many processes read ahead (at most `workers` studies
    wait in memory). A study whose reading fails outright comes back empty with the reason."""
    if workers <= 0:
        yield from map(_read_timed, plans)
        return
    plans = iter(plans)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque[tuple[StudyPlan, Future[StudyImages]]] = deque()

        def submit() -> None:
            plan = next(plans, None)
            if plan is not None:
                pending.append((plan, pool.submit(_read_timed, plan)))

        for _ in range(workers):
            submit()
        while pending:
            plan, future = pending.popleft()
            submit()
            try:
                yield future.result()
            except Exception as exc:  # a worker that died: report the study, keep going
                failure = study_problem(plan.study_id, "unreadable_study", f"reading failed: {reason(exc)}")
                yield StudyImages(plan.study_id, problems=[*plan.problems, failure])


def _read_timed(plan: StudyPlan) -> StudyImages:
    start = time.perf_counter()
    images = read_study(plan)
    images.seconds = time.perf_counter() - start
    return images
