"""The GPU models' weights: where an operator's model directory comes from, and where a worker
container sees it.

No weights ship with an image. A worker whose adapter needs a model directory (`xtts`,
`cosyvoice2`) gets the operator's host folder mounted read-only at a fixed path and the
worker's own environment variable for it (`XTTS_MODEL_DIR=/models/xtts`, read by
duplex.worker.catalog). The make variable has the same name as the worker's variable, so
`make up MODELS=0:xtts XTTS_MODEL_DIR=/srv/models/xtts-v2` reads as what the worker gets.
On Kubernetes the weights come from an existing PersistentVolumeClaim (`XTTS_MODEL_PVC`):
the Pod Security Standards' `baseline` level forbids hostPath volumes, and a claim works
with whatever storage the cluster has (NFS, a CSI driver, a pre-filled local volume).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from duplex.deploy.spec import DeployError
from duplex.worker.catalog import COSYVOICE_MODEL_ID, MODEL_DIR_ENV, XTTS_MODEL_ID

MODEL_MOUNT = "/models"
"""The folder under which each adapter's weights appear in a worker container."""

MODEL_DIR_VARIABLES: Mapping[str, str] = MappingProxyType(
    {"xtts": MODEL_DIR_ENV[XTTS_MODEL_ID], "cosyvoice2": MODEL_DIR_ENV[COSYVOICE_MODEL_ID]}
)
"""Adapter -> the variable naming its model directory: the make variable, the generator's
flag (--xtts-model-dir) and the worker's environment variable."""

MODEL_MODEL_IDS: Mapping[str, str] = MappingProxyType(
    {"xtts": XTTS_MODEL_ID, "cosyvoice2": COSYVOICE_MODEL_ID}
)
"""Adapter -> the catalog model whose directory it is (model_manager.model_dirs)."""

# A host path that a compose bind mount (`SRC:DST:ro`), compose's ${...} interpolation and a
# YAML scalar all take as it is: no ':', '$', whitespace or quotes.
_HOST_PATH = re.compile(r"^/[A-Za-z0-9._/@+,=~-]*$")
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SUB_PATH = re.compile(r"^[A-Za-z0-9._@+=~-]+(/[A-Za-z0-9._@+=~-]+)*$")


def needs_weights(adapter: str) -> bool:
    """Whether a worker of `adapter` loads weights from an operator's directory."""
    return adapter in MODEL_DIR_VARIABLES


def container_dir(adapter: str) -> str:
    """Where a worker container sees the adapter's model directory."""
    return f"{MODEL_MOUNT}/{adapter}"


def claim_variable(adapter: str) -> str:
    """The `make k8s` variable naming the adapter's PersistentVolumeClaim: XTTS_MODEL_PVC."""
    return MODEL_DIR_VARIABLES[adapter].removesuffix("_DIR") + "_PVC"


def check_model_dirs(
    given: Mapping[str, str],
    adapters: Iterable[str],
    models: str,
    *,
    is_dir: Callable[[str], bool] = os.path.isdir,
    cwd: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """(adapter, absolute host folder) for every adapter in `adapters` that needs weights.

    `given`: variable (XTTS_MODEL_DIR) -> value as typed; a relative value is taken from `cwd`
    (make's folder, the repository). A needed variable that is empty, not an existing folder,
    or a path a bind mount cannot carry is a DeployError naming it; `models` (the MODELS
    value) says which worker asked. Values for adapters not used are ignored."""
    dirs: list[tuple[str, str]] = []
    for adapter in sorted(set(adapters)):
        if not needs_weights(adapter):
            continue
        variable = MODEL_DIR_VARIABLES[adapter]
        value = given.get(variable, "")
        if not value.strip():
            raise DeployError(
                f"MODELS={models!r}: the {adapter} worker needs its weights: give {variable}, "
                f"the folder on this host that holds them (docs/gpu-models.md), e.g. "
                f"{variable}=/srv/models/{adapter}"
            )
        path = os.path.normpath(os.path.join(cwd or os.getcwd(), value))
        if not is_dir(path):
            raise DeployError(f"{variable}={value!r} is not an existing directory on this host")
        if not _HOST_PATH.match(path):
            raise DeployError(
                f"{variable}={value!r}: a bind mount cannot carry this path (use letters, "
                "digits and . _ / @ + , = ~ - only; no ':', '$' or spaces)"
            )
        dirs.append((adapter, path))
    return tuple(dirs)


@dataclass(frozen=True)
class ModelClaim:
    """An existing PersistentVolumeClaim that holds one adapter's weights (in `sub_path`)."""

    adapter: str
    claim: str
    sub_path: str = ""  # a folder inside the claim; "": the claim's root

    @property
    def volume(self) -> str:
        """The pod's volume name for it."""
        return f"weights-{self.adapter}"


def parse_claims(
    given: Mapping[str, str], adapters: Iterable[str], pools: str
) -> tuple[ModelClaim, ...]:
    """`CLAIM` or `CLAIM/SUB/DIR` for every adapter in `adapters` that needs weights; a
    missing or malformed one is a DeployError naming the variable and the value."""
    claims: list[ModelClaim] = []
    for adapter in sorted(set(adapters)):
        if not needs_weights(adapter):
            continue
        variable = claim_variable(adapter)
        value = given.get(variable, "").strip()
        if not value:
            raise DeployError(
                f"POOLS={pools!r}: the {adapter} workers need their weights: give {variable}, "
                "an existing PersistentVolumeClaim in the namespace that holds them "
                f"(CLAIM or CLAIM/FOLDER; docs/multi-host.md), e.g. {variable}=models/{adapter}"
            )
        claim, _, sub_path = value.partition("/")
        if not _CLAIM.match(claim):
            raise DeployError(
                f"{variable}={value!r}: {claim!r} is not a claim name (a-z, 0-9, '-', '.')"
            )
        sub_path = sub_path.strip("/")
        if sub_path and (not _SUB_PATH.match(sub_path) or ".." in sub_path.split("/")):
            raise DeployError(f"{variable}={value!r}: {sub_path!r} is not a folder in the claim")
        claims.append(ModelClaim(adapter, claim, sub_path))
    return tuple(claims)
