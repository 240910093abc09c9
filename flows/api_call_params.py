"""Parameters of the api_call pipeline: source, request, extract and destination."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blocks.validators import check_block_name, check_http_url, check_identifier
from flows.extraction import compile_expression

# Header names that carry credentials: only from a Secret block, never in parameters.
SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _refuse_secret_headers(headers: dict[str, str]) -> dict[str, str]:
    clear = sorted(h for h in headers if h.lower() in SECRET_HEADERS)
    if clear:
        raise ValueError(
            f"{', '.join(clear)} must not be given in clear: store them in a Secret block "
            "and name it in source.headers_secret"
        )
    return headers


class ApiSource(_Strict):
    """Where the API lives, and the Secret block holding its credential headers."""

    base_url: str = Field(examples=["https://api.example.com"])
    headers: dict[str, str] = Field(default_factory=dict)
    headers_secret: str | None = Field(
        default=None, description="Name of a Secret block whose value is a JSON object of headers"
    )

    _url = field_validator("base_url")(classmethod(lambda cls, v: check_http_url(v)))
    _headers = field_validator("headers")(classmethod(lambda cls, v: _refuse_secret_headers(v)))

    @field_validator("headers_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        return None if value is None else check_block_name(value)


class ApiRequest(_Strict):
    """The call: method, path under the source, query, headers, JSON body, timeout and retries."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = "/"
    query: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    timeout_seconds: float = Field(default=30, gt=0, le=600)
    retries: int = Field(default=3, ge=0, le=10, description="Retries on timeouts and 5xx")
    backoff_seconds: float = Field(default=1.0, ge=0, le=300)

    _headers = field_validator("headers")(classmethod(lambda cls, v: _refuse_secret_headers(v)))

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//"):
            raise ValueError("must be a path starting with a single '/'")
        return value


class ExtractSpec(_Strict):
    """JMESPath extraction: `root` selects the items, `fields` maps column -> expression."""

    root: str | None = Field(default=None, examples=["data[]"])
    fields: dict[str, str] = Field(default_factory=dict, examples=[{"usd": "quote.usd"}])
    key: str | None = Field(default=None, description="Expression giving each record's key")

    @field_validator("root", "key")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_expression(value)
        return value

    @field_validator("fields")
    @classmethod
    def _fields_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for name, expression in value.items():
            check_identifier(name)
            try:
                compile_expression(expression)
            except ValueError as exc:
                raise ValueError(f"field {name!r}: {exc}") from None
        return value


class DestinationSpec(_Strict):
    """Where records go: `api_records` (default) or an existing table, maybe in another database."""

    table: str = "api_records"
    block: str | None = Field(
        default=None, description="Name of a Destination block for another database"
    )
    key_columns: list[str] = Field(
        default_factory=list, description="Columns of a unique key to upsert on (other tables)"
    )

    _table = field_validator("table")(classmethod(lambda cls, v: check_identifier(v)))

    @field_validator("block")
    @classmethod
    def _block_name(cls, value: str | None) -> str | None:
        return None if value is None else check_block_name(value)

    @field_validator("key_columns")
    @classmethod
    def _key_identifiers(cls, value: list[str]) -> list[str]:
        return [check_identifier(v) for v in value]

    @property
    def is_api_records(self) -> bool:
        return self.block is None and self.table == "api_records"


class ApiCallParameters(_Strict):
    """Everything an api_call schedule needs; validated when the schedule is created."""

    source: ApiSource
    request: ApiRequest = Field(default_factory=ApiRequest)
    extract: ExtractSpec = Field(default_factory=ExtractSpec)
    destination: DestinationSpec = Field(default_factory=DestinationSpec)
