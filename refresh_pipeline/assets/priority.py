"""Which table's steps start first when more are ready than `parallelism` allows (Dagster's
`dagster/priority` op tag, higher first): the ones with the most masking work per row, so the longest
table does not start last. A policy-only estimate: the definitions never look at the data."""

from refresh_pipeline.masking.policy import ArrayRule, JsonRule, TablePolicy, TransformRule

PRIORITY_TAG = "dagster/priority"
_FREE_TEXT = frozenset({"scrub"})


def masking_work(table: TablePolicy) -> int:
    """JSON paths and free text cost several times a plain column; kept tables cost nothing."""
    if table.keep_all:
        return 0
    work = 0
    for rule in table.masked_columns.values():
        if isinstance(rule, JsonRule):
            work += 4 * len(rule.paths)
        elif isinstance(rule, ArrayRule) or (isinstance(rule, TransformRule) and rule.transform in _FREE_TEXT):
            work += 3
        else:
            work += 1
    return work


def priority_tags(table: TablePolicy) -> dict[str, str]:
    return {PRIORITY_TAG: str(masking_work(table))}
