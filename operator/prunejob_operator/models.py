"""The PruneJob API (prunejob.io/v1alpha1): spec and status as pydantic models.

These models are the single source of truth: `crd.py` generates the CRD's OpenAPI
schema from them (so `kubectl apply` rejects a bad spec up front), and the operator
validates every spec again with them before acting (so a spec that slipped past the
schema becomes status reason InvalidSpec instead of a crash loop).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from prunejob_contract.settings import Criterion, Normalizer

GROUP = "prunejob.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PruneJob"
PLURAL = "prunejobs"
SINGULAR = "prunejob"
SHORT_NAMES = ("pj",)
CATEGORIES = ("prunejob",)

# Kubernetes object names: RFC 1123 subdomain (Secrets, PriorityClasses, ...).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Secret data key: alphanumerics, '-', '_' or '.'.
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
S3_URI = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+$"
HTTP_URL = r"^https?://[^\s/]+(/\S*)?$"
# Resource quantities are strings ("500m", "4Gi") or plain numbers.
Quantity = Annotated[str | int, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SecretKeyRef(ApiModel):
    """One key of a Secret in the PruneJob's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(
        default="key",
        max_length=253,
        pattern=SECRET_KEY,
        description="Key in the Secret's data that holds the passphrase.",
    )


class SecretRef(ApiModel):
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")


class S3Spec(ApiModel):
    """Where and how the worker reaches S3 (or an S3-compatible store)."""

    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL,
        description="S3-compatible endpoint URL (MinIO, Ceph); empty means AWS.",
    )
    region: str | None = Field(
        default=None, max_length=64, pattern=r"^[a-z0-9-]+$", description="AWS_REGION."
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally "
            "AWS_SESSION_TOKEN; without it the pod uses its ambient identity (IRSA etc.)."
        ),
    )


class PruningSpec(ApiModel):
    """TAO tlt-prune's settings, with TAO's defaults."""

    normalizer: Normalizer = Field(default="max", description="Filter norm normalizer.")
    equalization_criterion: Criterion = Field(
        default="union", description="How element-wise-joined layers agree on filters."
    )
    granularity: int = Field(
        default=8, ge=1, le=4096, description="Filters are removed in multiples of this."
    )
    threshold: float = Field(
        default=0.1, ge=0, le=1e6, description="Normalized-norm threshold below which to prune."
    )
    min_num_filters: int = Field(
        default=16, ge=0, le=1_000_000, description="Filters kept per layer at least."
    )
    excluded_layers: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=1000, description="Layer names never pruned."
    )
    target_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Search the threshold for this params ratio (after/before); "
        "overrides threshold.",
    )


class LocalObjectReference(ApiModel):
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)


class ResourceRequirements(ApiModel):
    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class PruneJobSpec(ApiModel):
    """What to prune, where to put it, and how the worker pod runs."""

    model: str = Field(max_length=2048, pattern=S3_URI, description="s3:// URI of the model.")
    output: str = Field(
        max_length=2048, pattern=S3_URI, description="s3:// URI for the pruned model."
    )
    key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the model passphrase (-k); omit for plain models.",
    )
    s3: S3Spec = Field(default_factory=S3Spec)
    # `default: {}` in the CRD makes the API server fill in TAO's defaults.
    pruning: PruningSpec = Field(default_factory=PruningSpec, json_schema_extra={"default": {}})
    overwrite: bool = Field(default=False, description="Replace an existing output object.")
    image: str | None = Field(
        default=None, max_length=1024, description="Worker image; default: operator setting."
    )
    gpus: int = Field(default=1, ge=0, le=64, description="nvidia.com/gpu limit.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Pod affinity, as in a PodSpec.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    backoff_limit: int = Field(default=2, ge=0, le=100, description="Pod retries.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Kill the run after this many seconds."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished Job (not the PruneJob) after this."
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue LocalQueue (an alias for the kueue.x-k8s.io/queue-name label): "
        "the Job is created suspended and Kueue admits it.",
    )
    suspend: bool = Field(
        default=False,
        description="Hold the run: no pod is created, a running pod is stopped; false resumes.",
    )
    run_id: str | None = Field(
        default=None,
        max_length=253,
        description="Any string; changing it starts a new run with the same settings.",
    )


Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
PHASES: tuple[Phase, ...] = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
TERMINAL_PHASES: tuple[Phase, ...] = ("Succeeded", "Failed")
# status.layers holds at most this many layers (status.layersTruncated says when it was
# cut); the report object at status.reportUri always lists them all.
MAX_STATUS_LAYERS = 256


class Condition(ApiModel):
    """A Kubernetes API-conventions condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class BeforeAfter(ApiModel):
    before: int
    after: int


class LayerCount(ApiModel):
    name: str
    before: int
    after: int


class OutputRef(ApiModel):
    uri: str
    sha256: str | None = None
    bytes: int | None = None


class RunRef(ApiModel):
    """The run the status describes: its key, its Job, and the generation that began it."""

    key: str = Field(description="Hash of the result-defining spec fields (the run key).")
    job_name: str = Field(description="The run's Job.")
    generation: int = Field(description="The PruneJob generation that started the run.")


class PruneJobStatus(ApiModel):
    """The current run's state; `observedGeneration` is the last generation processed."""

    phase: Phase | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    observed_generation: int | None = None
    run: RunRef | None = None
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    reason: str | None = None
    message: str | None = None
    filters: BeforeAfter | None = None
    filters_summary: str | None = Field(
        default=None, description="'before -> after', for the printer column."
    )
    params: BeforeAfter | None = None
    flops: BeforeAfter | None = None
    pruning_ratio: float | None = None
    layers: list[LayerCount] = Field(default_factory=list, max_length=MAX_STATUS_LAYERS)
    layers_truncated: bool | None = Field(
        default=None,
        description=f"True when status.layers was cut (at most {MAX_STATUS_LAYERS}); "
        "the report object lists every layer.",
    )
    attempts: int | None = Field(default=None, description="Pods created for the run.")
    failed_attempts: int | None = Field(default=None, description="Pods of the run that failed.")
    output: OutputRef | None = None
    report_uri: str | None = None

    def to_patch(self) -> dict[str, Any]:
        """The status as JSON for a merge patch: every field present, unset ones null,
        so a new generation's status clears the previous run's results."""
        return self.model_dump(mode="json", by_alias=True)


def parse_spec(spec: dict[str, Any]) -> PruneJobSpec:
    """Validate a spec; raises InvalidSpecError with one line naming each bad field."""
    try:
        return PruneJobSpec.model_validate(spec)
    except ValidationError as err:
        raise InvalidSpecError(describe_validation_error(err)) from None


class InvalidSpecError(ValueError):
    """The spec violates the PruneJob schema; str() is a one-line explanation."""


def describe_validation_error(err: ValidationError) -> str:
    problems = []
    for item in err.errors(include_url=False):
        where = "spec." + ".".join(str(part) for part in item["loc"]) if item["loc"] else "spec"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)
