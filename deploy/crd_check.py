"""Custom resources against the schemas of their CustomResourceDefinitions, offline.

    python -m deploy.crd_check [--builtin-out FILE] RENDERED.yaml
    python -m deploy.crd_check --vendor [--kind KIND]... CRD.yaml...

The first form checks every resource of a rendered overlay (`kubectl kustomize` output)
whose API group is not one of Kubernetes' own against the schema of its kind and version
under deploy/k8s/crds/ (one JSON file each: the `openAPIV3Schema` of that version of the
operator's CustomResourceDefinition, as published). A resource whose kind has no schema
there is a failure, not a skip. `--builtin-out` writes the other resources, the built-in
kinds, to FILE for kubernetes-validate. Prints one line per problem and exits 1 if any.

The second form (re)writes deploy/k8s/crds/<group>/<kind>_<version>.json from the CRDs in
the given files (an operator's release manifest or its config/crd/bases files), only for
the kinds named with --kind if any, without the schemas' `description` texts; see
deploy/k8s/crds/README.md for the sources of the files kept here.

The schemas are Kubernetes' structural OpenAPI v3 schemas. They are read as JSON Schema
the way the API server applies them: a field that the schema does not declare is an error
(the API server drops or, with strict field validation as kubectl uses it, refuses it)
unless the object says `x-kubernetes-preserve-unknown-fields`; `nullable` admits null;
`x-kubernetes-int-or-string` admits an integer or a string. The CEL rules
(`x-kubernetes-validations`) and `format`s are not evaluated: the operators' admission
webhooks and the API server check those when the resources are applied.
"""

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "deploy" / "k8s" / "crds"

# API groups served by Kubernetes itself: kubernetes-validate checks these.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apps",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
    }
)

# What every resource's metadata must look like (the API server checks the rest).
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

Document = dict[str, Any]


def group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def is_builtin(document: Mapping[str, Any]) -> bool:
    return group_version(str(document.get("apiVersion", "")))[0] in BUILTIN_GROUPS


def schema_path(group: str, kind: str, version: str, root: Path = SCHEMAS) -> Path:
    return root / group / f"{kind.lower()}_{version}.json"


# --- reading Kubernetes' structural schemas as JSON Schema --------------------------------


def strict(schema: Any) -> Any:
    """A copy of a CRD's structural schema as a JSON Schema that refuses what the API
    server would refuse (see the module's docstring)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: strict(value) for key, value in schema.items()}
    if schema.get("x-kubernetes-int-or-string") and "type" not in schema and "anyOf" not in schema:
        converted["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in schema:
        types = converted["type"] if isinstance(converted["type"], list) else [converted["type"]]
        converted["type"] = [*types, "null"]
    preserves = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not preserves
    ):
        converted["additionalProperties"] = False
    return converted


@cache
def validator(group: str, kind: str, version: str, root: Path = SCHEMAS) -> Any:
    """A validator for the kind, or None when there is no schema for it."""
    path = schema_path(group, kind, version, root)
    if not path.is_file():
        return None
    schema = strict(json.loads(path.read_text()))
    properties = schema.setdefault("properties", {})
    properties["metadata"] = METADATA_SCHEMA
    properties["apiVersion"] = {"const": f"{group}/{version}"}
    properties["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _location(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top)"


def problems(documents: Iterable[Mapping[str, Any]], root: Path = SCHEMAS) -> list[str]:
    """Every custom resource against its schema; built-in kinds are left alone."""
    found: list[str] = []
    for document in documents:
        if is_builtin(document):
            continue
        api_version = str(document.get("apiVersion", ""))
        kind = str(document.get("kind", ""))
        name = (document.get("metadata") or {}).get("name", "?")
        group, version = group_version(api_version)
        check = validator(group, kind, version, root)
        if check is None:
            found.append(
                f"{kind} {name} ({api_version}): no schema for this kind and version in "
                f"{root.relative_to(ROOT) if root.is_relative_to(ROOT) else root}; vendor its "
                "CRD (python -m deploy.crd_check --vendor CRD.yaml)"
            )
            continue
        errors = sorted(check.iter_errors(document), key=lambda error: list(error.absolute_path))
        for error in errors:
            found.append(f"{kind} {name}: {_location(error)}: {error.message}")
    return found


# --- vendoring ------------------------------------------------------------------------------


def without_descriptions(schema: Any) -> Any:
    """The schema without its prose (`description` texts), which validation does not use."""
    if isinstance(schema, list):
        return [without_descriptions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: without_descriptions(value)
        for key, value in schema.items()
        if not (key == "description" and isinstance(value, str))
    }


def crd_versions(documents: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, str, str, Any]]:
    """(group, kind, version, openAPIV3Schema) of every served version of every CRD."""
    for document in documents:
        if document.get("kind") != "CustomResourceDefinition":
            continue
        spec = document["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                schema = version["schema"]["openAPIV3Schema"]
                yield spec["group"], spec["names"]["kind"], version["name"], schema


def vendor(paths: Iterable[Path], kinds: Iterable[str] = (), root: Path = SCHEMAS) -> list[Path]:
    wanted = set(kinds)
    written = []
    for path in paths:
        for group, kind, version, schema in crd_versions(load_documents(path)):
            if wanted and kind not in wanted:
                continue
            target = schema_path(group, kind, version, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(without_descriptions(schema), indent=1, sort_keys=True)
            target.write_text(text + "\n")
            written.append(target)
    return written


def load_documents(path: Path) -> list[Document]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.crd_check")
    parser.add_argument("--vendor", action="store_true", help="write schemas from CRD files")
    parser.add_argument("--kind", action="append", default=[], help="only this kind (--vendor)")
    parser.add_argument("--builtin-out", type=Path, help="write the built-in kinds here")
    parser.add_argument("files", nargs="+", type=Path)
    arguments = parser.parse_args(argv)
    if arguments.vendor:
        for written in vendor(arguments.files, arguments.kind):
            print(written.relative_to(ROOT))
        return 0
    documents = [d for path in arguments.files for d in load_documents(path)]
    if arguments.builtin_out:
        builtin = [d for d in documents if is_builtin(d)]
        arguments.builtin_out.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    found = problems(documents)
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
