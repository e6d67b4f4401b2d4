"""The daemon's request and response bodies, as pydantic models (they make the OpenAPI schema).

Requests take the command line's parameters as JSON, never a file path: the objective is
"flops", "params" or an inline `widthwise-costs/1` object, loss samples come inline. Every
number must be finite; unknown fields are refused so that a misspelt field is named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]

TableName = Annotated[str, Field(
    min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$",
    description="A table's name: its file name in the tables folder without `.json`.",
    examples=["mobilenet_v1"],
)]
BudgetMs = Annotated[float, Field(
    gt=0, allow_inf_nan=False, description="Latency budget in milliseconds (finite, > 0).",
    examples=[12.5],
)]
MaxParams = Annotated[float | None, Field(
    default=None, gt=0, allow_inf_nan=False,
    description="Optional second budget: the most parameters the network may have.",
)]
LossSample = Annotated[tuple[list[int], FiniteFloat], Field(
    description="One configuration a supernet's training logged, with its loss: [[w_0, ..., w_V-1], loss], "
                "one width per variable in the table's variable order.",
)]

#: How many loss samples one request may carry (the body size cap bounds them too).
MAX_LOSS_SAMPLES = 100_000


class CostsObject(BaseModel):
    """An inline `widthwise-costs/1` objective: unary costs per variable and optional pairwise costs,
    one array per block of a `/1` table or per factor of a `/2` table (of its `ms` shape: a unary
    factor's is a list, a pairwise factor's a list of rows)."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["widthwise-costs/1"]
    space: str | None = None
    description: str | None = None
    unary: list[list[FiniteFloat]] = Field(max_length=4096)
    pairwise: list[list[list[FiniteFloat]] | list[FiniteFloat]] | None = Field(default=None, max_length=4097)


Objective = Annotated[Literal["flops", "params"] | CostsObject, Field(
    description='"flops" (maximise MACs, a proxy), "params", or an inline widthwise-costs/1 object.',
)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: TableName
    objective: Objective = "flops"
    loss_samples: list[LossSample] | None = Field(
        default=None, max_length=MAX_LOSS_SAMPLES,
        description="Configurations with their loss, fitted to unary costs per variable (replaces the objective's "
                    "unary costs).",
    )


class QueryRequest(_Request):
    """POST /v1/query: the configuration of least cost within the latency budget."""

    budget_ms: BudgetMs
    method: Literal["exact", "lagrangian", "greedy"] = "exact"
    max_params: MaxParams = None


class ParetoRequest(_Request):
    """POST /v1/pareto: the whole front of (latency, cost), sorted by latency."""

    max_params: MaxParams = None


class MarginalsRequest(_Request):
    """POST /v1/marginals: per-variable width probabilities at a budget and a temperature."""

    budget_ms: BudgetMs
    temperature: PositiveFinite = Field(description="Sampling temperature T (finite, > 0); lower is narrower.")


class AnswerBody(BaseModel):
    """One configuration as the search returns it (`answers.Answer.to_json`)."""

    model_config = ConfigDict(extra="allow")

    widths: list[int]
    latency_ms: float
    cost: float
    method: str
    params: float | None = None
    macs: float | None = None
    gamma: float | None = None


OBJECTIVE_NAME = Field(description='The objective searched: "flops", "params", "costs" (an inline '
                                   'widthwise-costs/1 object) or "loss-samples" (fitted loss samples).')


class QueryResponse(AnswerBody):
    """`answers.answer_query`: the table and objective, then the answer's fields."""

    table: str
    objective: str = OBJECTIVE_NAME
    named_widths: dict[str, int] | None = Field(
        default=None, description="Each variable's width by name, in the table's variable order (the same values "
                                  "as `widths`; for a tree table: stem, stages, expansions, head).")


class ParetoResponse(BaseModel):
    """`answers.answer_pareto`: the table and objective, then `answers.Front.to_json`."""

    table: str
    objective: str = OBJECTIVE_NAME
    count: int
    front: list[AnswerBody]


class LayerMarginals(BaseModel):
    """One variable's width probabilities (a chain's layer, a tree's stage width or expansion)."""

    name: str
    widths: list[int]
    probabilities: list[float]


class MarginalsResponse(BaseModel):
    """`answers.answer_marginals`: per variable (in `layers`, the table's variable order), each width's probability."""

    table: str
    objective: str = OBJECTIVE_NAME
    budget_ms: float
    temperature: float
    layers: list[LayerMarginals]


class ErrorBody(BaseModel):
    """Every error: its code (errors.HTTP_STATUS maps it to the status), the request field, what is wrong."""

    code: str
    field: str | None = None
    detail: Any


class InfeasibleBody(ErrorBody):
    """409: no configuration meets the budget; states the least that is achievable."""

    code: Literal["infeasible_budget"] = "infeasible_budget"
    detail: str
    min_latency_ms: float | None = None
    min_params: float | None = None


class FrontLimit(BaseModel):
    """Which cap a front passed while being built, and how far the build got."""

    kind: Literal["points", "memory"] = Field(description="points: partial front size; memory: estimated MiB.")
    limit: float
    reached: float
    block: int = Field(description="The step of the build (its elimination order) at which the cap was passed.")
    blocks: int = Field(description="The number of steps of the whole build.")


class LimitBody(ErrorBody):
    """422: an invalid request (detail: a list of {loc, msg, type}); a front over a size cap says which cap."""

    detail: list[dict]
    field: str
    limit: FrontLimit | None = None


class TableInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    file: str
    status: Literal["ok", "stale", "error"] = Field(
        description="ok: serving the file on disk; stale: the file on disk is broken and the "
                    "previous good version serves; error: broken and nothing to serve.")
    error: str | None
    loaded_at: str | None
    format: str | None = Field(default=None, description="widthwise-table/1 (a chain of blocks) or "
                                                         "widthwise-table/2 (variables and factors forming a tree).")
    space: dict | None = Field(default=None, description="The space: name, resolution, variables (count), names, "
                                                       "choices, factors (count).")
    device: dict | None = None
    runtime: dict | None = None
    fit: dict | None = Field(default=None, description="Fit quality (held-out MAPE etc.) as the table records it.")


class TablesResponse(BaseModel):
    tables: list[TableInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    tables: int
    broken: int
