"""The `never_link` job: a "never link" rule written by a Dagster run, so `cdp profile never-link` takes its turn
in the run queue instead of writing the warehouse beside a running job (DuckDB allows one writer)."""

from dagster import Config, OpExecutionContext, in_process_executor, job, op
from pydantic import Field

from cdp_assets.identity import explain, rules

OP_NAME = "add_never_link_rule"


class NeverLinkConfig(Config):
    a: str = Field(description="type:value, e.g. email:ann@example.org or hubspot_contact:101")
    b: str | None = Field(default=None, description="the other side; none stops `a` linking anything")
    reason: str
    added_by: str


@op(
    name=OP_NAME,
    required_resource_keys={"warehouse"},
    description="Record that two identifiers or records must never share a profile (identity.never_link).",
)
def add_never_link_rule(context: OpExecutionContext, config: NeverLinkConfig) -> None:
    with context.resources.warehouse.get_connection() as conn:
        explain.add_never_link(conn, rules.load(), config.a, config.b, config.reason, config.added_by)
    context.log.info(f"never link {config.a} ~ {config.b or 'anything'}: the next identity_graph run applies it")


@job(executor_def=in_process_executor, description="A never-link rule from `cdp profile never-link`.")
def never_link() -> None:
    add_never_link_rule()
