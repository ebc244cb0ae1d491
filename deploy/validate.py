#!/usr/bin/env python3
"""Schema-checks every manifest under deploy/ against Kubernetes' own OpenAPI
schemas, offline, with the `kubernetes-validate` package (it ships the JSON
schemas of each Kubernetes release). `.ci/run` installs it and runs this.

Strict mode: an unknown or misspelt field is an error, not silently dropped
as `kubectl apply` would do.

The InferenceService is a CRD, so no Kubernetes schema covers it; its
predictor, though, is a PodSpec inline (KServe's PredictorSpec embeds one)
plus a few KServe fields, so that part is checked as a Pod. What only strut
knows (probe paths, port, flags, the grace period) is tests/e2e/manifests/'
job.

    python3 deploy/validate.py [--kubernetes-version 1.30 ...]
"""

import argparse
import pathlib
import sys

import kubernetes_validate
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
# An old release still common on managed clusters (everything used here,
# such as the PDB's unhealthyPodEvictionPolicy, is there by 1.27) and the
# newest release the package knows.
DEFAULT_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# PredictorSpec fields that are KServe's own, not the embedded PodSpec's
# (kserve pkg/apis/serving/v1beta1: PredictorSpec, ComponentExtensionSpec).
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher",
    "labels", "annotations", "deploymentStrategy", "autoScaling", "protocolVersion",
    "storageUri", "storage", "model", "workerSpec",
}


def as_pod(isvc):
    predictor = dict(isvc["spec"]["predictor"])
    for field in KSERVE_PREDICTOR_FIELDS:
        predictor.pop(field, None)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": isvc["metadata"]["name"] + "-predictor"},
        "spec": predictor,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", action="append", dest="versions")
    versions = parser.parse_args().versions or DEFAULT_VERSIONS

    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        sys.exit(f"no manifests under {DEPLOY}")
    failures = 0
    checked = 0
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if doc.get("apiVersion", "").startswith("serving.kserve.io/"):
                if doc.get("kind") != "InferenceService":
                    print(f"ERROR {path}: no check for KServe kind {doc.get('kind')}")
                    failures += 1
                    continue
                doc = as_pod(doc)
            for version in versions:
                checked += 1
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as err:
                    where = ".".join(str(p) for p in err.path)
                    print(f"ERROR {path} ({doc['kind']}, Kubernetes {version}): {where}: {err.message}")
                    failures += 1
                except kubernetes_validate.SchemaNotFoundError as err:
                    print(f"ERROR {path}: {err}")
                    failures += 1
    print(f"deploy/: {checked} schema checks, {failures} with errors")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
