"""Request and response bodies of the HTTP service, validated by pydantic (strict types, bounded sizes).

Every limit here answers with a 422 whose ``detail`` names the offending field, before the model runs.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from hiersrec.errors import ConfigError
from hiersrec.retrieval.category import CandidateBudget

MAX_K = 1000  # items per session in one answer
MAX_SESSION_LENGTH = 1000  # clicks (or excluded items) per session; the model keeps its max_len most recent
MAX_SESSIONS = 512  # sessions per request
MAX_RESULTS = 20_480  # sessions x k per request: bounds the answer's size and the model time one request takes
MAX_ID_LENGTH = 256  # characters of one raw id

RawId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LENGTH)] | StrictInt
"""A raw item or category id: a string, or an integer (sent as its decimal string)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionIn(_Strict):
    """One session: the raw item ids clicked so far, oldest first."""

    items: list[RawId] = Field(max_length=MAX_SESSION_LENGTH, description="Raw item ids, oldest click first.")
    exclude: list[RawId] = Field(
        default_factory=list, max_length=MAX_SESSION_LENGTH, description="Raw item ids never to recommend."
    )


class RecommendRequest(_Strict):
    """One or many sessions and the options that apply to all of them."""

    sessions: list[SessionIn] = Field(min_length=1, max_length=MAX_SESSIONS)
    k: StrictInt = Field(20, ge=1, le=MAX_K, description="Items per session.")
    exclude_seen: StrictBool = Field(False, description="Never recommend the session's own items.")
    categories: list[RawId] | None = Field(
        None, min_length=1, max_length=MAX_SESSION_LENGTH, description="Restrict to these raw category ids."
    )
    candidate_budget: StrictFloat | StrictInt | Annotated[str, StringConstraints(max_length=32)] | None = Field(
        None,
        description="Rank only the items of the predicted categories: '4%' or 0.04 of the catalogue (categories "
        "by probability per item; '4%:probability' for the most probable first) or 'category:5' (HierSRec runs "
        "only). The session's own items join the candidates unless the budget ends with ':categories-only'. "
        "Omit to rank every item.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"sessions": [{"items": ["1004", "2077"]}], "k": 10}]},
    )

    @model_validator(mode="after")
    def _bounded_work(self) -> RecommendRequest:
        if len(self.sessions) * self.k > MAX_RESULTS:
            raise ValueError(
                f"sessions x k = {len(self.sessions)} x {self.k} = {len(self.sessions) * self.k:,} exceeds "
                f"{MAX_RESULTS:,} recommended items per request; send fewer sessions or a smaller k"
            )
        return self

    @field_validator("candidate_budget")
    @classmethod
    def _budget_parses(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            CandidateBudget.parse(value)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return value


class RecommendedItem(BaseModel):
    """One recommended item."""

    item_id: str
    score: float
    category_id: str


class SessionOut(BaseModel):
    """The answer for one session, in request order."""

    items: list[RecommendedItem]
    unknown_items: list[str] = Field(description="Raw ids of the session that the model does not know (dropped).")
    fallback: str | None = Field(
        description="null when the model scored the session; when no click was known, 'popularity' (most clicked "
        "items) or 'empty' (the run has no item popularity)."
    )


class RecommendResponse(BaseModel):
    """Recommendations for every session of the request."""

    results: list[SessionOut]


class HealthResponse(BaseModel):
    """Liveness: the run is loaded and the service answers."""

    status: str
    n_items: int


class ModelResponse(BaseModel):
    """What is being served."""

    name: str
    version: str
    config: dict[str, Any]
    data_fingerprint: str | None
    metrics: dict[str, Any]
    candidate_budgets: bool = Field(description="Whether candidate_budget is supported by this model.")


class ErrorResponse(BaseModel):
    """A rejected request: one line naming the field, and pydantic's details when they exist."""

    error: str
    detail: list[dict[str, Any]] = Field(default_factory=list)
