#!/usr/bin/env python3
"""Renders every strategy with `modeld k8s render` and validates what comes out.

    validate.py --bin MODELD --work DIR

Run by tests/k8s/run (which makes the venv with kubernetes-validate, jsonschema and
pyyaml) from the repository root. Reads tests/fixtures/k8s/*.toml and tests/fixtures/crds/.

1. Renders each strategy with --rollouts kubernetes and argo (recreate with argo must be
   refused), plus variants (--models pvc:CLAIM, --load-balancer, --model, names, image,
   Prometheus), into DIR, each both as files (--out) and as one stream on stdout.
2. Core objects (ConfigMap, Deployment, Service, HPA, PDB) go through kubernetes-validate
   in strict mode (unknown fields rejected); a Rollout's pod template and the metadata of
   custom resources through the same strict Kubernetes definitions.
3. Istio VirtualService/DestinationRule and Argo Rollout/AnalysisTemplate go through
   jsonschema against the projects' own CRDs, plus a structural check that every key is a
   field the CRD declares at that point (the CRDs rarely say additionalProperties: false).
4. What the config says is checked in the render: each model's AnalysisTemplate metrics
   and thresholds, failure limits, windows, min_samples and selectors; the Rollout's
   pinned versions and steps; the VirtualService's routes; the references between objects.
5. Negative controls show each validator rejecting a corrupted copy.

Prints a summary; exits 1 with every problem listed when anything fails.
"""
import argparse
import copy
import importlib.resources
import json
import math
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path, PurePosixPath

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
FIXTURES = Path("tests/fixtures/k8s")
CRDS = Path("tests/fixtures/crds")
STRATEGIES = ["blue_green", "canary", "rolling", "recreate", "ab_test"]
CORE_KINDS = ["ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
CRD_KINDS = ["VirtualService", "DestinationRule", "Rollout", "AnalysisTemplate"]
FILE_PREFIX = {
    "ConfigMap": "configmap", "Secret": "secret", "Deployment": "deployment", "Service": "service",
    "HorizontalPodAutoscaler": "hpa", "PodDisruptionBudget": "pdb", "VirtualService": "virtualservice",
    "DestinationRule": "destinationrule", "Rollout": "rollout", "AnalysisTemplate": "analysistemplate",
}
# The renderer's defaults for the flags a render does not pass.
DEFAULT_FLAGS = {"namespace": "default", "name": "modeld", "image": "modeld:0.1.0",
                 "prometheus": "http://prometheus.monitoring.svc:9090"}
CANARY_HEADER = "canary"
# Argo measures at most this often (Prometheus sees a window at scrape resolution).
MIN_INTERVAL_NS = 30 * 10**9

# ---------------------------------------------------------------------------------------
# Durations and numbers as the renderer writes them


UNITS_NS = {
    "ns": 1, "nsec": 1, "us": 10**3, "usec": 10**3, "ms": 10**6, "msec": 10**6,
    "s": 10**9, "sec": 10**9, "second": 10**9, "seconds": 10**9,
    "m": 60 * 10**9, "min": 60 * 10**9, "minute": 60 * 10**9, "minutes": 60 * 10**9,
    "h": 3600 * 10**9, "hr": 3600 * 10**9, "hour": 3600 * 10**9, "hours": 3600 * 10**9,
    "d": 86400 * 10**9, "day": 86400 * 10**9, "days": 86400 * 10**9,
    "w": 7 * 86400 * 10**9, "week": 7 * 86400 * 10**9, "weeks": 7 * 86400 * 10**9,
}


def duration_ns(text):
    """Nanoseconds in a duration such as "400ms", "1s", "2m", "1h 30m" (humantime's and
    Prometheus's common units)."""
    parts = re.findall(r"\s*(\d+)\s*([a-z]+)", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"not a duration: {text!r}")
    total = 0
    for number, unit in parts:
        if unit not in UNITS_NS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        total += int(number) * UNITS_NS[unit]
    return total


def secs_f64(ns):
    """Rust's Duration::as_secs_f64: whole seconds plus the nanoseconds / 1e9."""
    return float(ns // 10**9) + (ns % 10**9) / 1e9


def rust_f64(x):
    """An f64 as Rust's Display prints it: shortest round-trip digits, never an exponent,
    no trailing ".0"."""
    text = format(Decimal(repr(float(x))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def path_str(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


# ---------------------------------------------------------------------------------------
# The config, with the daemon's defaults


HEALTH_DEFAULTS = {
    "window": 60 * 10**9, "min_samples": 20, "error_rate": 0.05, "availability": 0.95,
    "p95_latency": 10**9, "p99_latency": 10**9,
}
STRATEGY_BAKE_NS = {"blue_green": 300 * 10**9, "canary": 60 * 10**9}


def health_for(config, model):
    """[health] over the defaults, then [model.health] over that, key by key (and level by
    level within a key): the critical thresholds, window and min_samples."""
    h = dict(HEALTH_DEFAULTS)
    for layer in (config.get("health", {}), model.get("health", {})):
        if "window" in layer:
            h["window"] = duration_ns(layer["window"])
        if "min_samples" in layer:
            h["min_samples"] = int(layer["min_samples"])
        for key in ("error_rate", "availability"):
            if "critical" in layer.get(key, {}):
                h[key] = layer[key]["critical"] / 100  # percent, held as a fraction
        for key in ("p95_latency", "p99_latency"):
            if "critical" in layer.get(key, {}):
                h[key] = duration_ns(layer[key]["critical"])
    return h


def deploy_for(model):
    raw = model.get("deploy", {})
    strategy = raw.get("strategy", "canary")
    d = {
        "strategy": strategy,
        "steps": list(raw.get("steps", [10, 25, 50, 100])),
        "bake": duration_ns(raw["bake"]) if "bake" in raw else STRATEGY_BAKE_NS.get(strategy, 30 * 10**9),
        "split": int(raw.get("split", 50)),
        "duration": duration_ns(raw.get("duration", "1h")),
        "consecutive_breaches": int(raw.get("consecutive_breaches", 2)),
        "check_every": duration_ns(raw.get("check_every", "500ms")),
        "inconclusive_timeout": duration_ns(raw.get("inconclusive_timeout", "10m")),
        "sticky_header": raw.get("sticky_header"),
    }
    return d


# ---------------------------------------------------------------------------------------
# Results


class Report:
    def __init__(self):
        self.problems = []
        self.passed = Counter()  # check category -> number passed
        self.core = Counter()  # kind -> objects kubernetes-validate passed
        self.crd = Counter()  # kind -> objects the CRD schema and structural check passed
        self.negatives = []

    def check(self, category, where, problems):
        """Records one check: its problems, or a pass."""
        if problems:
            self.problems.extend(f"{where}: {p}" for p in problems)
        else:
            self.passed[category] += 1
        return not problems

    def run(self, category, where, check, *args):
        """Runs a check on objects that may be malformed: a crash is a problem too."""
        try:
            problems = check(*args)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError, StopIteration) as e:
            problems = [f"{check.__name__} could not read the objects: {type(e).__name__}: {e}"]
        return self.check(category, where, problems)


# ---------------------------------------------------------------------------------------
# Validators


class Validators:
    def __init__(self):
        self.k8s_version, self.k8s_dir = self.pick_version()
        schemas = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
        defs = json.loads(schemas.joinpath(self.k8s_dir, "_definitions.json").read_text())
        self.k8s_registry = Resource.from_contents(defs) @ Registry()
        self.k8s_defs_id = defs["$id"]
        self.object_meta = self.k8s_fragment("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        self.pod_template = self.k8s_fragment("io.k8s.api.core.v1.PodTemplateSpec")
        self.crds = {}
        for path in sorted(CRDS.glob("*.yaml")):
            for doc in yaml.load_all(path.read_text(), Loader=LOADER):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.crds[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = (path.name, doc)
        self.crd_validators = {}

    @staticmethod
    def pick_version():
        """Kubernetes 1.33 if this kubernetes-validate has it, else its newest >= 1.30."""
        versions = sorted(set(kv_utils.all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
        minor = lambda v: tuple(int(x) for x in v.split(".")[:2])
        exact = [v for v in versions if minor(v) == (1, 33)]
        usable = exact or [v for v in versions if minor(v) >= (1, 30)]
        if not usable:
            raise SystemExit(f"kubernetes-validate {kubernetes_validate.version.__version__} has no schemas "
                             f"for Kubernetes >= 1.30 (it has {', '.join(versions)})")
        version = usable[-1]
        return version, f"v{version}-local-strict"

    def k8s_fragment(self, definition):
        schema = {"$ref": f"{self.k8s_defs_id}#/$defs/{definition}"}
        return jsonschema.Draft202012Validator(schema, registry=self.k8s_registry)

    def core(self, obj):
        """kubernetes-validate, strict: problems as 'path: message'."""
        try:
            kubernetes_validate.validate(obj, self.k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            return [f"kubernetes-validate {e.version} strict: {path_str(e.path)}: {e.message}"]
        except kubernetes_validate.SchemaNotFoundError as e:
            return [f"kubernetes-validate: {e.message}"]
        return []

    @staticmethod
    def fragment_errors(validator, value, prefix):
        return [f"{path_str(prefix + list(e.absolute_path))}: {e.message}"
                for e in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))]

    def crd_schema(self, obj):
        group, _, version = obj.get("apiVersion", "").rpartition("/")
        found = self.crds.get((group, obj.get("kind")))
        if not found:
            return None, None, f"no CRD for {obj.get('kind')} in group {group!r} in {CRDS}"
        file, crd = found
        for v in crd["spec"]["versions"]:
            if v["name"] == version:
                if not v.get("served", True):
                    return None, None, f"{file}: version {version} of {obj['kind']} is not served"
                return file, v["schema"]["openAPIV3Schema"], None
        names = [v["name"] for v in crd["spec"]["versions"]]
        return None, None, f"{file}: {obj['kind']} has no version {version} (has {', '.join(names)})"

    def crd(self, obj):
        """The CRD's openAPIV3Schema with jsonschema, then the structural check; the root's
        metadata against Kubernetes's ObjectMeta (strict)."""
        file, schema, err = self.crd_schema(obj)
        if err:
            return [err]
        key = (obj["apiVersion"], obj["kind"])
        if key not in self.crd_validators:
            # OpenAPI v3.0 is closest to draft 7; x-kubernetes-* keys are unknown keywords
            # and ignored, and `format` only annotates without a format checker.
            jsonschema.Draft7Validator.check_schema(schema)
            self.crd_validators[key] = jsonschema.Draft7Validator(schema)
        problems = [f"{file} schema: {p}" for p in self.fragment_errors(self.crd_validators[key], obj, [])]
        problems += [f"{file} structure: {p}" for p in self.unknown_fields(obj, schema)]
        problems += [f"ObjectMeta (strict): {p}"
                     for p in self.fragment_errors(self.object_meta, obj.get("metadata", {}), ["metadata"])]
        if obj["kind"] == "Rollout" and "template" in obj.get("spec", {}):
            problems += [f"PodTemplateSpec (kubernetes-validate {self.k8s_version} strict): {p}"
                         for p in self.fragment_errors(self.pod_template, obj["spec"]["template"],
                                                       ["spec", "template"])]
        return problems

    def unknown_fields(self, obj, schema):
        """Every key must be a property the schema declares where it stands (through
        properties, items and additionalProperties), except under
        x-kubernetes-preserve-unknown-fields. At the root, apiVersion, kind and metadata are
        every resource's own (metadata is checked against ObjectMeta instead)."""
        problems = []
        for key, value in obj.items():
            if key in ("apiVersion", "kind", "metadata"):
                continue
            problems += self.walk(value, schema.get("properties", {}).get(key), [key], schema)
        return problems

    def walk(self, value, schema, path, parent):
        if schema is None:
            known = sorted(parent.get("properties", {}))
            return [f"{path_str(path)}: unknown field {path[-1]!r} (the schema declares "
                    f"{', '.join(known) if known else 'no fields'} here)"]
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        problems = []
        if isinstance(value, dict):
            props, extra = schema.get("properties", {}), schema.get("additionalProperties")
            for key, v in value.items():
                if key in props:
                    problems += self.walk(v, props[key], path + [key], schema)
                elif isinstance(extra, dict):
                    problems += self.walk(v, extra, path + [key], schema)
                elif extra is True:
                    continue
                else:
                    problems += self.walk(v, None, path + [key], schema)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, v in enumerate(value):
                problems += self.walk(v, schema["items"], path + [i], schema)
        return problems


# ---------------------------------------------------------------------------------------
# Renders


class Render:
    def __init__(self, rid, strategy, rollouts, flags, work):
        self.id, self.strategy, self.rollouts, self.flags = rid, strategy, rollouts, flags
        self.config_path = FIXTURES / flags.get("config", f"{strategy}.toml")
        self.config = tomllib.loads(self.config_path.read_text())
        self.out = work / rid
        self.objects = []  # (file name, object)
        self.stream = []
        opt = dict(DEFAULT_FLAGS)
        opt.update({k: v for k, v in flags.items() if isinstance(v, str)})
        self.opt = opt
        self.models_flag = flags.get("models", "image")
        self.load_balancer = bool(flags.get("load_balancer"))
        models = self.config["model"]
        self.rollout_model = next(m for m in models if m["name"] == flags["model"]) if "model" in flags else models[0]

    def args(self):
        args = ["k8s", "render", "--config", str(self.config_path), "--rollouts", self.rollouts]
        for key in ("models", "namespace", "name", "image", "model", "prometheus", "istio_gateway", "host"):
            if key in self.flags:
                args += [f"--{key.replace('_', '-')}", self.flags[key]]
        if self.load_balancer:
            args.append("--load-balancer")
        if "probe_token_file" in self.flags:
            args += ["--probe-token-file", str(FIXTURES / self.flags["probe_token_file"])]
        return args

    def describe(self):
        extra = [f"{k}={v}" if v is not True else k for k, v in self.flags.items()]
        return f"{self.strategy}/{self.rollouts}" + (f" [{', '.join(extra)}]" if extra else "")

    def of_kind(self, kind):
        return [o for _, o in self.objects if o.get("kind") == kind]

    def one(self, kind):
        found = self.of_kind(kind)
        return found[0] if len(found) == 1 else None


def run_modeld(binary, args):
    return subprocess.run([binary] + args, capture_output=True, text=True, timeout=60)


def render(binary, r, report):
    """Renders to files and to stdout; loads both. False if the render itself failed."""
    files = run_modeld(binary, r.args() + ["--out", str(r.out)])
    stream = run_modeld(binary, r.args())
    problems = []
    for what, res in (("--out", files), ("stdout", stream)):
        if res.returncode != 0:
            problems.append(f"modeld {' '.join(r.args())} ({what}) exited {res.returncode}: {res.stderr.strip()}")
    if problems:
        return report.check("render", r.id, problems)
    for path in sorted(r.out.iterdir()):
        if path.name == "RUNBOOK.md":
            continue
        docs = [d for d in yaml.load_all(path.read_text(), Loader=LOADER) if d is not None]
        if path.suffix != ".yaml" or len(docs) != 1 or not isinstance(docs[0], dict):
            problems.append(f"{path.name}: expected one YAML mapping per .yaml file, found {len(docs)} documents")
            continue
        r.objects.append((path.name, docs[0]))
    r.stream = [d for d in yaml.load_all(stream.stdout, Loader=LOADER) if d is not None]
    if not (r.out / "RUNBOOK.md").is_file() or not (r.out / "RUNBOOK.md").read_text().strip():
        problems.append("RUNBOOK.md missing or empty")
    for name, obj in r.objects:
        kind, meta_name = obj.get("kind"), obj.get("metadata", {}).get("name")
        if kind not in FILE_PREFIX:
            problems.append(f"{name}: unexpected kind {kind!r}")
        elif name != f"{FILE_PREFIX[kind]}-{meta_name}.yaml":
            problems.append(f"{name}: a {kind} named {meta_name!r} should be in {FILE_PREFIX[kind]}-{meta_name}.yaml")
    key = lambda o: json.dumps(o, sort_keys=True)
    if sorted(map(key, (o for _, o in r.objects))) != sorted(map(key, r.stream)):
        problems.append("the stdout stream's objects differ from the --out files' "
                        f"({len(r.stream)} vs {len(r.objects)} objects)")
    return report.check("render: files, names, stream == files", r.id, problems)


# ---------------------------------------------------------------------------------------
# Checks of one render against its config


def selector_matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_templates(r):
    return [(o["kind"], o["metadata"]["name"], o["spec"]["template"]) for o in r.of_kind("Deployment") + r.of_kind("Rollout")]


def check_composition(r):
    p = []
    count = Counter(o.get("kind") for _, o in r.objects)
    argo = r.rollouts == "argo"
    want_deployments = 0 if argo else {"rolling": 1, "recreate": 1}.get(r.strategy, 2)
    expect = {
        "ConfigMap": 1, "Deployment": want_deployments, "Rollout": int(argo), "AnalysisTemplate": int(argo),
        "VirtualService": int(r.strategy in ("canary", "ab_test")),
        "DestinationRule": int(r.strategy in ("canary", "ab_test")),
        "Service": 2 if r.strategy == "blue_green" else 1,
        # Closed probes: the tokens file and the probes' token, each a Secret.
        "Secret": 2 if "probe_token_file" in r.flags else 0,
    }
    for kind, n in expect.items():
        if count[kind] != n:
            p.append(f"expected {n} {kind}, found {count[kind]}")
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        if count[kind] < 1:
            p.append(f"no {kind}")
    for name, o in r.objects:
        meta = o.get("metadata", {})
        if meta.get("namespace") != r.opt["namespace"]:
            p.append(f"{name}: metadata.namespace {meta.get('namespace')!r}, expected {r.opt['namespace']!r}")
        labels = meta.get("labels", {})
        want = {"app.kubernetes.io/name": "modeld", "app.kubernetes.io/instance": r.opt["name"]}
        if any(labels.get(k) != v for k, v in want.items()):
            p.append(f"{name}: metadata.labels {labels} lack {want}")
    return p


def check_pods(r):
    """Pod templates: the ConfigMap mounted where --config points, the image, the models
    (baked in or from the claim), writable directories under a read-only root, selectors."""
    p = []
    cm = r.one("ConfigMap")
    if cm is None:
        return ["no single ConfigMap"]
    toml_files = {k: tomllib.loads(v) for k, v in cm.get("data", {}).items() if k.endswith(".toml")}
    for kind, name, tpl in pod_templates(r):
        where = f"{kind} {name}"
        spec = tpl.get("spec", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        owner = next(o for o in r.of_kind(kind) if o["metadata"]["name"] == name)
        selector = owner["spec"].get("selector", {}).get("matchLabels", {})
        if not selector_matches(selector, tpl.get("metadata", {}).get("labels", {})):
            p.append(f"{where}: spec.selector.matchLabels {selector} do not select its pod template's labels")
        if kind == "Deployment":
            want = "Recreate" if r.strategy == "recreate" else "RollingUpdate"
            if owner["spec"].get("strategy", {}).get("type") != want:
                p.append(f"{where}: spec.strategy.type {owner['spec'].get('strategy', {}).get('type')!r}, expected {want}")
        for c in spec.get("containers", []):
            cwhere = f"{where} container {c.get('name')}"
            if c.get("image") != r.opt["image"]:
                p.append(f"{cwhere}: image {c.get('image')!r}, expected {r.opt['image']!r}")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            args = c.get("args", [])
            config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
            server = {}
            if config_path is None:
                p.append(f"{cwhere}: no --config in args {args}")
            else:
                cfg_dir, cfg_file = str(PurePosixPath(config_path).parent), PurePosixPath(config_path).name
                vol = volumes.get(mounts.get(cfg_dir, {}).get("name"), {})
                if vol.get("configMap", {}).get("name") != cm["metadata"]["name"]:
                    p.append(f"{cwhere}: --config {config_path}: {cfg_dir} is not a mount of ConfigMap {cm['metadata']['name']}")
                elif cfg_file not in toml_files:
                    p.append(f"{cwhere}: --config {config_path}: the ConfigMap has no key {cfg_file}")
                else:
                    server = toml_files[cfg_file].get("server", {})
            claims = [v for v in volumes.values() if "persistentVolumeClaim" in v]
            if r.models_flag.startswith("pvc:"):
                claim = r.models_flag[4:]
                vol = next((v for v in claims if v["persistentVolumeClaim"].get("claimName") == claim), None)
                at = [m["mountPath"] for m in mounts.values() if vol and m["name"] == vol["name"]]
                if not vol or not at:
                    p.append(f"{cwhere}: --models pvc:{claim}: no volume from claim {claim} mounted")
                elif server and server.get("repository") != at[0]:
                    p.append(f"{cwhere}: [server].repository {server.get('repository')!r} is not the claim's mount {at[0]!r}")
            elif claims:
                p.append(f"{cwhere}: --models image, yet volumes from claims {[v['name'] for v in claims]}")
            if c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                for key in ("run_dir", "state_dir"):
                    d = server.get(key)
                    writable = [m for m in mounts if not mounts[m].get("readOnly") and d and
                                (d == m or d.startswith(m.rstrip("/") + "/"))]
                    if d and not writable:
                        p.append(f"{cwhere}: readOnlyRootFilesystem, yet [server].{key} {d!r} is on no writable mount")
            ports = {port.get("name") for port in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    p.append(f"{cwhere}: {probe} port {port!r} is not a named container port")
                # Closed probes: an exec of `modeld probe` whose token file is a mounted Secret.
                command = c.get(probe, {}).get("exec", {}).get("command")
                if "probe_token_file" in r.flags:
                    if not command or "--token-file" not in command:
                        p.append(f"{cwhere}: {probe}: closed probes need an exec probe with --token-file, got {c.get(probe)}")
                        continue
                    token = PurePosixPath(command[command.index("--token-file") + 1])
                    vol = volumes.get(mounts.get(str(token.parent), {}).get("name"), {})
                    if "secret" not in vol or vol["secret"].get("defaultMode") != 0o440:
                        p.append(f"{cwhere}: {probe}: {token.parent} is no Secret mounted with mode 0440: {vol}")
    # The pinned versions: each model's in the rendered config file, as in the source.
    for file, parsed in toml_files.items():
        rendered = {m["name"]: m.get("version") for m in parsed.get("model", [])}
        for m in r.config["model"]:
            if "version" in m and rendered.get(m["name"]) != m["version"]:
                p.append(f"ConfigMap {file}: model {m['name']} version {rendered.get(m['name'])!r}, config says {m['version']}")
    return p


def check_references(r):
    p = []
    pods = [tpl.get("metadata", {}).get("labels", {}) for _, _, tpl in pod_templates(r)]
    container_ports = {port.get("name") for _, _, tpl in pod_templates(r)
                       for c in tpl["spec"].get("containers", []) for port in c.get("ports", [])}
    for s in r.of_kind("Service"):
        name = s["metadata"]["name"]
        want = "LoadBalancer" if r.load_balancer else "ClusterIP"
        if s["spec"].get("type") != want:
            p.append(f"Service {name}: type {s['spec'].get('type')!r}, expected {want}")
        if not any(selector_matches(s["spec"].get("selector"), labels) for labels in pods):
            p.append(f"Service {name}: selector {s['spec'].get('selector')} matches no pod template")
        for port in s["spec"].get("ports", []):
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in container_ports:
                p.append(f"Service {name}: targetPort {port['targetPort']!r} is no container's port")
    for pdb in r.of_kind("PodDisruptionBudget"):
        if not any(selector_matches(pdb["spec"].get("selector", {}).get("matchLabels"), labels) for labels in pods):
            p.append(f"PodDisruptionBudget {pdb['metadata']['name']}: selector matches no pod template")
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = [o for o in r.of_kind(ref.get("kind")) if o["metadata"]["name"] == ref.get("name")]
        if not target or target[0]["apiVersion"] != ref.get("apiVersion"):
            p.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: scaleTargetRef {ref} is not in the render")
    return p


def check_istio(r):
    """The VirtualService: the `canary: true` header route to the canary subset, the weighted
    route (the first step or the split without Argo; 0 for Argo to move), hosts and subsets
    that exist."""
    vs, dr = r.one("VirtualService"), r.one("DestinationRule")
    if vs is None:
        return []
    p = []
    service = r.of_kind("Service")[0]
    subsets = {s.get("name") for s in (dr or {}).get("spec", {}).get("subsets", [])}
    if dr is None or dr["spec"].get("host") != service["metadata"]["name"]:
        p.append(f"DestinationRule host is not the Service {service['metadata']['name']}")
    if subsets != {"stable", "canary"}:
        p.append(f"DestinationRule subsets {sorted(map(str, subsets))}, expected canary and stable")
    d = deploy_for(r.rollout_model)
    sticky = d["sticky_header"] if r.strategy == "ab_test" else None
    got_sticky = (dr or {}).get("spec", {}).get("trafficPolicy", {}).get("loadBalancer", {}).get(
        "consistentHash", {}).get("httpHeaderName")
    if got_sticky != sticky:
        p.append(f"DestinationRule consistentHash.httpHeaderName {got_sticky!r}, expected {sticky!r}")
    if service["metadata"]["name"] not in vs["spec"].get("hosts", []):
        p.append(f"VirtualService hosts {vs['spec'].get('hosts')} lack the Service {service['metadata']['name']}")
    # --istio-gateway: bound to the gateway for the outside host, and still to the mesh.
    want_gateways = [r.flags["istio_gateway"], "mesh"] if "istio_gateway" in r.flags else None
    if vs["spec"].get("gateways") != want_gateways:
        p.append(f"VirtualService gateways {vs['spec'].get('gateways')}, expected {want_gateways}")
    if "host" in r.flags and r.flags["host"] not in vs["spec"].get("hosts", []):
        p.append(f"VirtualService hosts {vs['spec'].get('hosts')} lack --host {r.flags['host']}")
    http = vs["spec"].get("http", [])
    header = [h for h in http if any(m.get("headers", {}).get(CANARY_HEADER) == {"exact": "true"}
                                     for m in h.get("match", []))]
    if len(header) != 1:
        p.append(f"VirtualService: expected one route matching header {CANARY_HEADER!r} exact \"true\", found {len(header)}")
    else:
        h = header[0]
        if [m.get("headers") for m in h["match"]] != [{CANARY_HEADER: {"exact": "true"}}]:
            p.append(f"VirtualService route {h.get('name')!r}: match {h['match']}, expected only header canary exact \"true\"")
        dests = [(x["destination"].get("subset"), x.get("weight", 100)) for x in h.get("route", [])]
        if dests != [("canary", 100)]:
            p.append(f"VirtualService route {h.get('name')!r} sends {dests}, expected all to subset canary")
        if http.index(h) != 0:
            p.append("VirtualService: the header route must come first (Istio takes the first match)")
    weighted = [h for h in http if not h.get("match")]
    if len(weighted) != 1:
        p.append(f"VirtualService: expected one unmatched weighted route, found {len(weighted)}")
    else:
        w = {x["destination"].get("subset"): x.get("weight") for x in weighted[0].get("route", [])}
        canary = 0 if r.rollouts == "argo" else (d["split"] if r.strategy == "ab_test" else d["steps"][0])
        if w != {"stable": 100 - canary, "canary": canary}:
            p.append(f"VirtualService route {weighted[0].get('name')!r}: weights {w}, expected stable {100 - canary}, canary {canary}")
    port = service["spec"]["ports"][0]["port"]
    for h in http:
        for x in h.get("route", []):
            dest = x["destination"]
            if dest.get("host") != service["metadata"]["name"] or dest.get("subset") not in subsets or \
                    dest.get("port", {}).get("number") != port:
                p.append(f"VirtualService route {h.get('name')!r}: destination {dest} is not Service "
                         f"{service['metadata']['name']}:{port} with a DestinationRule subset")
    return p


def check_rollout(r):
    """The Rollout: analysis arguments (each model's pinned version), references, steps."""
    ro, at, vs = r.one("Rollout"), r.one("AnalysisTemplate"), r.one("VirtualService")
    if ro is None or at is None:
        return ["expected one Rollout and one AnalysisTemplate"]
    p = []
    strategy = ro["spec"]["strategy"]
    d = deploy_for(r.rollout_model)
    if r.strategy == "blue_green":
        bg = strategy.get("blueGreen", {})
        analysis = bg.get("postPromotionAnalysis") or bg.get("prePromotionAnalysis") or {}
        services = {s["metadata"]["name"] for s in r.of_kind("Service")}
        for key in ("activeService", "previewService"):
            if bg.get(key) not in services:
                p.append(f"Rollout spec.strategy.blueGreen.{key} {bg.get(key)!r} is no Service of the render")
    else:
        canary = strategy.get("canary", {})
        analysis = canary.get("analysis", {})
        steps = canary.get("steps", [])
        if r.strategy == "canary":
            want = []
            for weight in d["steps"]:
                if weight < 100:
                    want += [("setWeight", weight), ("pause", d["bake"])]
        elif r.strategy == "ab_test":
            want = [("setWeight", d["split"]), ("pause", d["duration"]), ("pause", None)]
        else:
            want = []
        got = []
        for i, s in enumerate(steps):
            if list(s) == ["setWeight"]:
                got.append(("setWeight", s["setWeight"]))
            elif list(s) == ["pause"]:
                duration = s["pause"].get("duration")
                try:
                    got.append(("pause", duration_ns(str(duration)) if duration is not None else None))
                except ValueError as e:
                    p.append(f"Rollout spec.strategy.canary.steps[{i}].pause.duration: {e}")
            else:
                got.append(("other", s))
        if got != want:
            fmt = lambda steps: ", ".join(f"{k} {v / 1e9:g}s" if k == "pause" and v else f"{k} {v}" for k, v in steps)
            p.append(f"Rollout spec.strategy.canary.steps: [{fmt(got)}], config ({r.rollout_model['name']}) gives [{fmt(want)}]")
        routing = canary.get("trafficRouting", {}).get("istio")
        if vs is not None:
            routes = {h.get("name") for h in vs["spec"].get("http", [])}
            if not routing or routing["virtualService"].get("name") != vs["metadata"]["name"] or \
                    not set(routing["virtualService"].get("routes", [])) <= routes:
                p.append(f"Rollout trafficRouting.istio {routing} does not name the VirtualService and its routes {sorted(routes)}")
            elif routing["destinationRule"].get("name") != r.one("DestinationRule")["metadata"]["name"] or \
                    {routing["destinationRule"].get("canarySubsetName"), routing["destinationRule"].get("stableSubsetName")} \
                    != {"canary", "stable"}:
                p.append(f"Rollout trafficRouting.istio.destinationRule {routing['destinationRule']} does not match the DestinationRule")
    templates = [t.get("templateName") for t in analysis.get("templates", [])]
    if templates != [at["metadata"]["name"]]:
        p.append(f"Rollout analysis templates {templates}, expected [{at['metadata']['name']!r}]")
    args = {a["name"]: a.get("value") for a in analysis.get("args", [])}
    for m in r.config["model"]:
        arg = f"version-{m['name']}"
        if arg not in args:
            p.append(f"Rollout analysis args lack {arg}")
        elif "version" in m and args[arg] != str(m["version"]):
            p.append(f"Rollout analysis arg {arg} = {args[arg]!r}, the config pins version {m['version']}")
    for a in at["spec"].get("args", []):
        if "value" not in a and "valueFrom" not in a and a["name"] not in args:
            p.append(f"AnalysisTemplate arg {a['name']} has no value and the Rollout passes none")
    return p


def label_selectors(query):
    """(metric, {label: (op, value)}) for every selector in a PromQL query; values may hold
    braces ({{args.x}}), so the selector is read up to the first } outside quotes."""
    found = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", query):
        i, quoted, body = m.end(), False, []
        while i < len(query):
            ch = query[i]
            if quoted and ch == "\\":
                body.append(query[i:i + 2])
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == "}" and not quoted:
                break
            body.append(ch)
            i += 1
        text = "".join(body)
        matchers = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', text)
        labels = defaultdict(list)
        for label, op, value in matchers:
            labels[label].append((op, value))
        found.append((m.group(1), labels))
    return found


def check_analysis(r, at):
    """The AnalysisTemplate against the config: per model, one metric per health check with
    a critical threshold, at that threshold; the guard at min_samples over the window; the
    failure limit from consecutive_breaches; every selector on the model and its version
    argument."""
    p = []
    metrics = {}
    for m in at["spec"].get("metrics", []):
        if m.get("name") in metrics:
            p.append(f"metric {m.get('name')} appears twice")
        metrics[m.get("name")] = m
    targs = {a["name"]: a.get("value") for a in at["spec"].get("args", [])}
    want_args = {f"version-{m['name']}" for m in r.config["model"]} | {"prometheus"}
    if set(targs) != want_args:
        p.append(f"args {sorted(targs)}, expected {sorted(want_args)}")
    if targs.get("prometheus") != r.opt["prometheus"]:
        p.append(f"arg prometheus = {targs.get('prometheus')!r}, expected {r.opt['prometheus']!r}")
    expected_names = set()
    for model in r.config["model"]:
        name, h, d = model["name"], health_for(r.config, model), deploy_for(model)
        window_ns = h["window"]
        interval_ns = max(d["check_every"], MIN_INTERVAL_NS)
        checks = []  # (metric, success op, failure op, threshold text, guarded)
        if h["error_rate"] is not None:
            checks.append(("error-rate", "<=", ">", rust_f64(h["error_rate"]), True))
        if h["availability"] is not None:
            checks.append(("availability", ">=", "<", rust_f64(h["availability"]), True))
        for key, metric in (("p95_latency", "p95-latency"), ("p99_latency", "p99-latency")):
            if h[key] is not None:
                checks.append((metric, "<=", ">", rust_f64(secs_f64(h[key])), True))
        checks.append(("oom-kills", "==", ">", "0", False))
        for check, ok_op, bad_op, threshold, guarded in checks:
            mname = f"{name}-{check}"
            expected_names.add(mname)
            metric = metrics.get(mname)
            if metric is None:
                p.append(f"no metric {mname} (config: {check} critical {threshold})")
                continue
            where = f"metric {mname}"
            for field, op in (("successCondition", ok_op), ("failureCondition", bad_op)):
                cond = metric.get(field, "")
                want = f"result[0] {op} {threshold}"
                if not re.search(re.escape(want) + r"(?![0-9.eE])", cond):
                    p.append(f"{where}: {field} {cond!r} lacks {want!r} (the config's critical threshold)")
                if not cond.startswith("len(result) > 0 && "):
                    p.append(f"{where}: {field} {cond!r} is not guarded by 'len(result) > 0 && ' "
                             "(too little traffic must be inconclusive)")
            query = metric.get("provider", {}).get("prometheus", {}).get("query", "")
            if metric.get("provider", {}).get("prometheus", {}).get("address") != "{{args.prometheus}}":
                p.append(f"{where}: provider.prometheus.address is not {{{{args.prometheus}}}}")
            if guarded and not re.search(rf">=\s*{h['min_samples']}(?![0-9.])", query):
                p.append(f"{where}: query lacks '>= {h['min_samples']}' (min_samples): {query}")
            ranges = re.findall(r"\[([0-9a-z]+)\]", query)
            bad = [x for x in ranges if duration_ns(x) != window_ns]
            if not ranges or bad:
                p.append(f"{where}: query ranges {ranges}, the window is {window_ns / 1e9:g}s")
            selectors = label_selectors(query)
            if not selectors:
                p.append(f"{where}: query selects nothing: {query}")
            for metric_name, labels in selectors:
                want = {"model": [("=", name)], "version": [("=", f"{{{{args.version-{name}}}}}")]}
                for label, matchers in want.items():
                    if labels.get(label) != matchers:
                        p.append(f"{where}: selector {metric_name}{{...}} has {label} {labels.get(label)}, "
                                 f"expected {label}=\"{matchers[0][1]}\"")
            if metric.get("failureLimit") != d["consecutive_breaches"] - 1:
                p.append(f"{where}: failureLimit {metric.get('failureLimit')!r}, expected consecutive_breaches - 1 = "
                         f"{d['consecutive_breaches'] - 1}")
            try:
                interval = duration_ns(str(metric.get("interval")))
            except ValueError as e:
                p.append(f"{where}: interval: {e}")
                continue
            if interval != interval_ns:
                p.append(f"{where}: interval {metric.get('interval')!r}, expected max(check_every, 30s) = {interval_ns / 1e9:g}s")
            # A blue-green bake is a run of its own that must end (a first measurement at
            # once, then one per interval for the bake); background analyses have no count.
            lead = deploy_for(r.rollout_model)
            want_count = (math.ceil(lead["bake"] / interval_ns) + 1) if lead["strategy"] == "blue_green" else None
            if metric.get("count") != want_count:
                p.append(f"{where}: count {metric.get('count')!r}, expected {want_count!r} "
                         f"({'the bake / interval + 1' if want_count else 'none: a background analysis'})")
            want_inconclusive = math.ceil(d["inconclusive_timeout"] / interval_ns)
            if metric.get("inconclusiveLimit") != want_inconclusive:
                p.append(f"{where}: inconclusiveLimit {metric.get('inconclusiveLimit')!r}, expected "
                         f"ceil(inconclusive_timeout / interval) = {want_inconclusive}")
    extra = sorted(set(metrics) - expected_names)
    if extra:
        p.append(f"metrics the config does not ask for: {extra}")
    return p


# ---------------------------------------------------------------------------------------
# Negative controls: each validator shown rejecting a corrupted copy


def negative_controls(v, renders, report):
    def control(what, problems, expect):
        hit = [x for x in problems if expect in x]
        if hit:
            report.negatives.append(f"{what}: rejected: {hit[0]}")
            report.passed["negative controls"] += 1
        else:
            report.problems.append(f"negative control {what}: the validator did not bite "
                                   f"(wanted a problem naming {expect!r}, got {problems or 'none'})")

    argo_canary = next(r for r in renders if r.strategy == "canary" and r.rollouts == "argo" and r.objects)
    plain = next(r for r in renders if r.rollouts == "kubernetes" and r.of_kind("Deployment"))
    vs = copy.deepcopy(argo_canary.one("VirtualService"))
    route = next(i for i, h in enumerate(vs["spec"]["http"]) if not h.get("match"))
    vs["spec"]["http"][route]["route"][0]["weight"] = "ninety"
    control('VirtualService weight "ninety" (jsonschema, Istio CRD)', v.crd(vs),
            f"spec.http[{route}].route[0].weight: 'ninety' is not of type 'integer'")

    dep = copy.deepcopy(plain.of_kind("Deployment")[0])
    dep["spec"]["replica"] = dep["spec"].pop("replicas")
    control("Deployment spec.replica (kubernetes-validate strict)", v.core(dep), "'replica' was unexpected")
    dep = copy.deepcopy(plain.of_kind("Deployment")[0])
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    control("Deployment ...containers[0].imagePullPolcy (kubernetes-validate strict)", v.core(dep),
            "spec.template.spec.containers[0]: Additional properties are not allowed ('imagePullPolcy'")

    ro = copy.deepcopy(argo_canary.one("Rollout"))
    step = ro["spec"]["strategy"]["canary"]["steps"][0]
    step["setWieght"] = step.pop("setWeight")
    control("Rollout steps[0].setWieght (structural check, Argo CRD)", v.crd(ro),
            "structure: spec.strategy.canary.steps[0].setWieght: unknown field")
    ro = copy.deepcopy(argo_canary.one("Rollout"))
    ro["spec"]["template"]["spec"]["containers"][0]["resources"]["limts"] = {"cpu": "1"}
    control("Rollout pod template resources.limts (structural check, Argo CRD)", v.crd(ro),
            "spec.template.spec.containers[0].resources.limts: unknown field")
    ro = copy.deepcopy(argo_canary.one("Rollout"))
    ro["metadata"]["nmae"] = ro["metadata"]["name"]
    control("Rollout metadata.nmae (ObjectMeta strict)", v.crd(ro), "'nmae' was unexpected")

    at = copy.deepcopy(argo_canary.one("AnalysisTemplate"))
    model = argo_canary.config["model"][0]["name"]
    metric = next(m for m in at["spec"]["metrics"] if m["name"] == f"{model}-error-rate")
    metric["successCondition"] = re.sub(r"<= [0-9.]+", "<= 0.03", metric["successCondition"])
    control(f"AnalysisTemplate {model}-error-rate at 0.03 (threshold check)", check_analysis(argo_canary, at),
            f"metric {model}-error-rate: successCondition")
    at = copy.deepcopy(argo_canary.one("AnalysisTemplate"))
    metric = next(m for m in at["spec"]["metrics"] if m["name"] == f"{model}-p99-latency")
    metric["provider"]["prometheus"]["query"] = metric["provider"]["prometheus"]["query"].replace(
        f'version="{{{{args.version-{model}}}}}"', 'version="1"', 1)
    control(f"AnalysisTemplate {model}-p99-latency selecting version=\"1\" (selector check)",
            check_analysis(argo_canary, at), f"metric {model}-p99-latency: selector")


# ---------------------------------------------------------------------------------------


def matrix(work):
    renders = []
    for strategy in STRATEGIES:
        for rollouts in ("kubernetes", "argo"):
            if (strategy, rollouts) != ("recreate", "argo"):
                renders.append(Render(f"{strategy}-{rollouts}", strategy, rollouts, {}, work))
    renders += [
        Render("canary-kubernetes-pvc", "canary", "kubernetes", {"models": "pvc:models"}, work),
        Render("canary-argo-pvc", "canary", "argo", {"models": "pvc:models"}, work),
        Render("canary-argo-model-tabular_mlp", "canary", "argo", {"model": "tabular_mlp"}, work),
        Render("blue_green-kubernetes-lb", "blue_green", "kubernetes", {"load_balancer": True}, work),
        Render("canary-kubernetes-gateway", "canary", "kubernetes",
               {"istio_gateway": "istio-system/ingressgateway", "host": "iris.example.com"}, work),
        Render("ab_test-argo-gateway", "ab_test", "argo",
               {"istio_gateway": "istio-system/ingressgateway", "host": "iris.example.com"}, work),
        Render("canary-kubernetes-closed-probes", "canary", "kubernetes",
               {"config": "canary_closed_probes.toml", "probe_token_file": "closed_probes.token"}, work),
        Render("blue_green-argo-closed-probes", "blue_green", "argo",
               {"config": "blue_green_closed_probes.toml", "probe_token_file": "closed_probes.token"}, work),
        Render("ab_test-argo-named", "ab_test", "argo",
               {"namespace": "ml-serving", "name": "iris-api", "image": "registry.example/modeld:1.2.3",
                "prometheus": "http://prometheus.observability:9090", "models": "pvc:model-store",
                "load_balancer": True}, work),
    ]
    return renders


def check_refusal(binary, work, report):
    """recreate with Argo Rollouts: refused, exit 1, the reason naming recreate, nothing written."""
    out = work / "recreate-argo"
    args = ["k8s", "render", "--config", str(FIXTURES / "recreate.toml"), "--rollouts", "argo"]
    p = []
    for what, res in (("--out", run_modeld(binary, args + ["--out", str(out)])), ("stdout", run_modeld(binary, args))):
        if res.returncode != 1:
            p.append(f"{what}: exit {res.returncode}, expected 1")
        if "recreate" not in res.stderr:
            p.append(f"{what}: stderr does not name recreate: {res.stderr.strip()!r}")
        if what == "stdout" and res.stdout.strip():
            p.append(f"stdout: a refused render printed {len(res.stdout)} bytes")
    if out.exists() and any(out.iterdir()):
        p.append(f"--out: a refused render wrote {sorted(x.name for x in out.iterdir())}")
    report.check("recreate + argo refused", "recreate/argo", p)
    return p


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True, type=Path)
    a = parser.parse_args()
    started = time.monotonic()
    report = Report()
    v = Validators()
    print(f"kubernetes-validate {kubernetes_validate.version.__version__}: Kubernetes {v.k8s_version} schemas, strict; "
          f"jsonschema {jsonschema_version()}; CRDs from {CRDS}: "
          + ", ".join(f"{k} ({f})" for (_, k), (f, _) in sorted(v.crds.items(), key=lambda x: x[0][1])))

    renders = matrix(a.work)
    refused = check_refusal(a.bin, a.work, report)
    print(f"  {'ok ' if not refused else 'BAD'} recreate/argo: refused (exit 1, stderr names recreate, nothing written)")
    for r in renders:
        before = len(report.problems)
        if render(a.bin, r, report):
            for name, obj in r.objects:
                kind = obj.get("kind")
                if kind in CORE_KINDS:
                    if report.run("kubernetes-validate", f"{r.id}/{name}", v.core, obj):
                        report.core[kind] += 1
                elif kind in CRD_KINDS:
                    if report.run("CRD schema + structure", f"{r.id}/{name}", v.crd, obj):
                        report.crd[kind] += 1
            report.run("composition, labels, namespace", r.id, check_composition, r)
            report.run("pods: config, image, models, mounts, selectors", r.id, check_pods, r)
            report.run("references: services, PDBs, HPAs", r.id, check_references, r)
            if r.one("VirtualService"):
                report.run("Istio routes", r.id, check_istio, r)
            if r.rollouts == "argo":
                report.run("Rollout: versions, steps, references", r.id, check_rollout, r)
                for at in r.of_kind("AnalysisTemplate"):
                    report.run("AnalysisTemplate thresholds", f"{r.id}/{at.get('metadata', {}).get('name')}", check_analysis, r, at)
        kinds = Counter(o.get("kind") for _, o in r.objects)
        status = "ok " if len(report.problems) == before else "BAD"
        print(f"  {status} {r.describe()}: {len(r.objects)} objects ("
              + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")")

    if any(r.objects for r in renders if r.strategy == "canary" and r.rollouts == "argo") and \
            any(r.of_kind("Deployment") for r in renders):
        try:
            negative_controls(v, renders, report)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError, StopIteration) as e:
            report.problems.append(f"negative controls: could not corrupt the renders: {type(e).__name__}: {e}")
    else:
        report.problems.append("negative controls: no canary/argo or Deployment render to corrupt")
    for line in report.negatives:
        print(f"  negative control {line}")

    print("validated with kubernetes-validate (strict, %s): %s" % (
        v.k8s_version, ", ".join(f"{report.core[k]} {k}" for k in CORE_KINDS)))
    print("validated against the CRDs (jsonschema + structural): %s" % ", ".join(
        f"{report.crd[k]} {k}" for k in CRD_KINDS))
    print("checks passed: " + ", ".join(f"{k} {n}" for k, n in report.passed.items()))
    elapsed = time.monotonic() - started
    if report.problems:
        print(f"\nFAILED: {len(report.problems)} problem(s) ({elapsed:.1f}s):")
        for problem in report.problems:
            print(f"  - {problem}")
        sys.stdout.flush()
        sys.exit(f"tests/k8s: {len(report.problems)} problem(s), listed above")
    print(f"all {sum(report.passed.values())} checks passed over {len(renders) + 1} renders in {elapsed:.1f}s")


def jsonschema_version():
    from importlib.metadata import version
    return version("jsonschema")


if __name__ == "__main__":
    main()
