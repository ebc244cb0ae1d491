#!/usr/bin/env python3
"""Schema-checks every manifest under deploy/ against Kubernetes' own OpenAPI
schemas, offline, with the `kubernetes-validate` package (it ships the JSON
schemas of each Kubernetes release). `.ci/run` installs it and runs this.

Strict mode: an unknown or misspelt field is an error, not silently dropped
as `kubectl apply` would do.

The InferenceService is a CRD, so no Kubernetes schema covers it; its
predictor, though, is a PodSpec inline (KServe's PredictorSpec embeds one)
plus a few KServe fields, so that part is checked as a Pod. KEDA's
ScaledObject and TriggerAuthentication are CRDs too: they get a structural
check of their own here (every key among those KEDA documents, the target a
Deployment of the same folder, triggers of a type checked here, secrets in the
same folder), and the HPA behaviour a ScaledObject passes on is checked as an
HPA's. What only strut knows (probe paths, port, flags, the grace period) is
tests/e2e/manifests/' job.

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

# KEDA 2.15's documentation (keda.sh/docs/2.15: reference/scaledobject-spec,
# concepts/authentication, scalers/postgresql): each set is every key it
# documents at that place.
KEDA_API = "keda.sh/v1alpha1"
KEDA_METADATA = {"name", "namespace", "labels", "annotations"}
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
    "triggers",
}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
FALLBACK = {"failureThreshold", "replicas"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
AUTHENTICATION_REF = {"name", "kind"}
TRIGGER_AUTHENTICATION_SPEC = {
    "podIdentity", "secretTargetRef", "env", "hashiCorpVault", "azureKeyVault",
    "awsSecretManager", "gcpSecretManager",
}
SECRET_TARGET_REF = {"parameter", "name", "key"}
# Per trigger type: its metadata keys, and the parameters a TriggerAuthentication
# may give it.
TRIGGERS = {
    "postgresql": {
        "metadata": {
            "query", "targetQueryValue", "activationTargetQueryValue", "connectionFromEnv",
            "host", "port", "userName", "passwordFromEnv", "dbName", "sslmode",
        },
        "required": {"query", "targetQueryValue"},
        "authentication": {"connection", "host", "port", "userName", "password", "dbName", "sslmode"},
    },
}


def unknown(where, value, allowed):
    if not isinstance(value, dict):
        return [f"{where}: not a mapping"]
    return [f"{where}: unknown key {key!r}" for key in sorted(set(value) - allowed)]


def is_count(value, least=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def in_folder(docs, path, kind, name):
    return [d for p, d in docs if p.parent == path.parent and d.get("kind") == kind
            and d.get("metadata", {}).get("name") == name]


def check_keda(path, doc, docs):
    """Errors in a KEDA object; `docs` is every (path, doc) under deploy/."""
    kind = doc.get("kind")
    errors = []
    if doc.get("apiVersion") != KEDA_API:
        errors.append(f"apiVersion {doc.get('apiVersion')!r} is not {KEDA_API}")
    errors += unknown("", doc, {"apiVersion", "kind", "metadata", "spec"})
    errors += unknown("metadata", doc.get("metadata"), KEDA_METADATA)
    if not doc.get("metadata", {}).get("name"):
        errors.append("metadata.name: missing")
    spec = doc.get("spec")
    if kind == "ScaledObject":
        errors += unknown("spec", spec, SCALED_OBJECT_SPEC)
        if errors:
            return errors
        target = spec.get("scaleTargetRef", {})
        errors += unknown("spec.scaleTargetRef", target, SCALE_TARGET_REF)
        if (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment")) != ("apps/v1", "Deployment"):
            errors.append("spec.scaleTargetRef: not an apps/v1 Deployment")
        elif not in_folder(docs, path, "Deployment", target.get("name")):
            errors.append(f"spec.scaleTargetRef.name: no Deployment {target.get('name')!r} in {path.parent.name}/")
        for key in ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod"):
            if key in spec and not is_count(spec[key], 1):
                errors.append(f"spec.{key}: not a positive integer")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (is_count(low) and is_count(high, 1) and low <= high):
            errors.append(f"spec: replica counts {low!r}..{high!r}")
        if "fallback" in spec:
            errors += unknown("spec.fallback", spec["fallback"], FALLBACK)
        advanced = spec.get("advanced", {})
        errors += unknown("spec.advanced", advanced, ADVANCED)
        hpa = advanced.get("horizontalPodAutoscalerConfig", {}) if isinstance(advanced, dict) else {}
        errors += unknown("spec.advanced.horizontalPodAutoscalerConfig", hpa, HPA_CONFIG)
        triggers = spec.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            return errors + ["spec.triggers: none"]
        for i, trigger in enumerate(triggers):
            where = f"spec.triggers[{i}]"
            errors += unknown(where, trigger, TRIGGER)
            kind_of = TRIGGERS.get(trigger.get("type"))
            if kind_of is None:
                errors.append(f"{where}.type: no check for trigger type {trigger.get('type')!r}")
                continue
            metadata = trigger.get("metadata", {})
            errors += unknown(f"{where}.metadata", metadata, kind_of["metadata"])
            errors += [f"{where}.metadata.{key}: missing"
                       for key in sorted(kind_of["required"] - set(metadata))]
            for key, value in metadata.items():
                # The CRD types metadata as map[string]string.
                if not isinstance(value, str):
                    errors.append(f"{where}.metadata.{key}: {value!r} is not a string")
            for key in ("targetQueryValue", "activationTargetQueryValue"):
                if isinstance(metadata.get(key), str):
                    try:
                        ok = float(metadata[key]) > 0 or key.startswith("activation")
                    except ValueError:
                        ok = False
                    if not ok:
                        errors.append(f"{where}.metadata.{key}: {metadata[key]!r} is not a positive number")
            if trigger.get("metricType", "AverageValue") not in ("AverageValue", "Value", "Utilization"):
                errors.append(f"{where}.metricType: {trigger['metricType']!r}")
            if "authenticationRef" in trigger:
                ref = trigger["authenticationRef"]
                errors += unknown(f"{where}.authenticationRef", ref, AUTHENTICATION_REF)
                auth = in_folder(docs, path, ref.get("kind", "TriggerAuthentication"), ref.get("name"))
                if not auth:
                    errors.append(f"{where}.authenticationRef: no TriggerAuthentication {ref.get('name')!r} in {path.parent.name}/")
                for a in auth:
                    for s in a.get("spec", {}).get("secretTargetRef", []):
                        if s.get("parameter") not in kind_of["authentication"]:
                            errors.append(f"{where}: {ref.get('name')} gives {s.get('parameter')!r}, not a {trigger['type']} parameter")
    elif kind == "TriggerAuthentication":
        errors += unknown("spec", spec, TRIGGER_AUTHENTICATION_SPEC)
        if errors:
            return errors
        refs = spec.get("secretTargetRef", [])
        if not isinstance(refs, list):
            return errors + ["spec.secretTargetRef: not a list"]
        for i, ref in enumerate(refs):
            where = f"spec.secretTargetRef[{i}]"
            errors += unknown(where, ref, SECRET_TARGET_REF)
            errors += [f"{where}.{key}: missing" for key in sorted(SECRET_TARGET_REF - set(ref))]
            secrets = in_folder(docs, path, "Secret", ref.get("name"))
            if not secrets:
                errors.append(f"{where}.name: no Secret {ref.get('name')!r} in {path.parent.name}/")
            elif not any(ref.get("key") in {**s.get("data", {}), **s.get("stringData", {})} for s in secrets):
                errors.append(f"{where}.key: Secret {ref.get('name')} has no key {ref.get('key')!r}")
    else:
        errors.append(f"no check for KEDA kind {kind!r}")
    return errors


def keda_hpa(scaled_object):
    """The HPA fields a ScaledObject passes on, as an HPA, when it sets a behavior."""
    spec = scaled_object["spec"]
    config = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    if "behavior" not in config:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": config.get("name", "keda-hpa-" + scaled_object["metadata"]["name"])},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": spec["scaleTargetRef"]["name"]},
            "minReplicas": max(spec.get("minReplicaCount", 0), 1),
            "maxReplicas": spec.get("maxReplicaCount", 100),
            "behavior": config["behavior"],
        },
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
    docs = [(path, doc) for path in files
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    failures = 0
    checked = 0
    for path, doc in docs:
        if doc.get("apiVersion", "").startswith("keda.sh/"):
            checked += 1
            errors = check_keda(path, doc, docs)
            for error in errors:
                print(f"ERROR {path} ({doc.get('kind')}, KEDA): {error}")
            failures += len(errors)
            # What a ScaledObject hands to its HPA is checked as an HPA.
            doc = None if errors or doc.get("kind") != "ScaledObject" else keda_hpa(doc)
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
