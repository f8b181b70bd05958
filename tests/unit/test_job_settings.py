"""Each job declares the job-specific config sections it reads, and the idle check uses them."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re

import pytest

from jobs.graph import JOB_GRAPH, JobSpec
from jobs.runner import observe_inputs
from pipeline_lib.config import JOB_SPECIFIC_SECTIONS, PipelineConfig

SECTION_READ = re.compile(r"\bconfig\.(" + "|".join(JOB_SPECIFIC_SECTIONS) + r")\b")


def sections_read(spec: JobSpec) -> set[str]:
    """The job-specific sections the job's function reads, or the module's functions it calls do."""
    assert isinstance(spec.target, str)
    module_name, _, function = spec.target.partition(":")
    module = importlib.import_module(module_name)
    source = inspect.getsource(getattr(module, function))
    helpers = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    for name in sorted(helpers):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == module_name:
            source += inspect.getsource(helper)
    return set(SECTION_READ.findall(source))


@pytest.mark.parametrize("spec", JOB_GRAPH, ids=lambda spec: spec.qualified_name)
def test_a_job_declares_every_job_specific_section_its_code_reads(spec: JobSpec) -> None:
    # A section read but not declared would let the runner skip the job after that section
    # changed: a stale table.
    assert sections_read(spec) <= set(spec.settings)
    assert set(spec.settings) <= set(JOB_SPECIFIC_SECTIONS)


def test_the_checks_above_see_the_sections_the_action_jobs_read() -> None:
    read = {spec.qualified_name: sections_read(spec) for spec in JOB_GRAPH}
    assert read["gold.campaign_audiences"] == {"segments", "campaigns"}
    assert read["gold.stock_signals"] == {"stock"}
    assert read["gold.recommendations"] == {"recommendations"}
    assert read["silver.orders"] == set()


def test_editing_a_campaign_changes_the_facts_of_the_campaign_jobs_only(config: PipelineConfig) -> None:
    campaigns = config.campaigns
    edited = dataclasses.replace(
        config, campaigns=dataclasses.replace(campaigns, control_share=campaigns.control_share / 2)
    )
    changed = {
        spec.qualified_name
        for spec in JOB_GRAPH
        if observe_inputs(spec, config, None) != observe_inputs(spec, edited, None)
    }
    assert changed == {"gold.campaign_audiences", "gold.campaign_results"}


def test_a_change_to_a_shared_section_changes_every_job_s_facts(config: PipelineConfig) -> None:
    pipeline = config.pipeline
    edited = dataclasses.replace(config, pipeline=dataclasses.replace(pipeline, base_currency="USD"))
    assert all(observe_inputs(s, config, None) != observe_inputs(s, edited, None) for s in JOB_GRAPH)


def test_an_unknown_section_is_refused(base_config: PipelineConfig) -> None:
    with pytest.raises(ValueError, match="not job-specific"):
        base_config.rules_fingerprint(["pipeline"])
