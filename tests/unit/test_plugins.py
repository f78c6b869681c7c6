"""Job kinds and targets are plug-ins: each is complete, and nothing unknown runs silently.

A kind is a model class (`flowforge/core/jobs/`) plus a runtime module
(`flowforge/runtime/kinds/<type>.py`) plus its documentation; a target is a model class
(`flowforge/core/targets/`) plus an executor registered by kind. These tests fail when one half
of a pair is missing.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from flowforge.core.errors import JobError
from flowforge.core.jobs import JOB_KINDS, JobBase
from flowforge.core.targets import TARGETS
from flowforge.runtime import kinds
from flowforge.runtime.executors import EXECUTORS, executor_class
from flowforge.runtime.executors.base import Executor

ROOT = Path(__file__).resolve().parents[2]


def test_every_job_kind_has_a_runtime_module_and_the_other_way_round() -> None:
    modules = {m.name for m in pkgutil.iter_modules(kinds.__path__)} - {"base"}
    assert modules == set(JOB_KINDS)
    for kind in JOB_KINDS:
        assert callable(kinds.runner(kind))


def test_every_kind_is_a_jobbase_with_its_type_as_default() -> None:
    for kind, cls in JOB_KINDS.items():
        assert issubclass(cls, JobBase) and cls.model_fields["type"].default == kind
        assert cls.model_validate({"name": "j", "type": kind}).type == kind


def test_every_target_has_an_executor_of_its_kind() -> None:
    assert set(EXECUTORS) == set(TARGETS)
    for kind in TARGETS:
        cls = executor_class(kind)
        assert issubclass(cls, Executor) and cls.kind == kind


def test_unknown_kinds_and_targets_fail_instead_of_running_locally() -> None:
    with pytest.raises(JobError, match="no executor for target kind 'kubernetes'"):
        executor_class("kubernetes")
    with pytest.raises(JobError, match="job type 'nope' cannot run on this worker"):
        kinds.runner("nope")


def test_the_readme_documents_every_kind_and_target() -> None:
    readme = (ROOT / "README.md").read_text()
    for kind in JOB_KINDS:
        assert f"type: {kind}" in readme or f"`{kind}`" in readme, kind
    for kind in TARGETS:
        assert f"{{{kind}:" in readme or f"`{kind}`" in readme, kind


def test_kind_modules_import_no_other_kind() -> None:
    for module in sorted(JOB_KINDS):
        source = importlib.import_module(f"flowforge.runtime.kinds.{module}").__file__
        assert source is not None
        text = Path(source).read_text()
        others = [k for k in JOB_KINDS if k != module and f"runtime.kinds.{k}" in text]
        assert others == [], (module, others)
