"""Runs the PromQL of a rendered Argo AnalysisTemplate (modeld k8s render --rollouts argo)
against a real Prometheus with promtool, and evaluates each metric's success and failure
conditions on the result as Argo Rollouts would.

    analysis.py PROMETHEUS_URL RENDER_DIR EXPECT...

EXPECT is METRIC=success|failure|inconclusive for every metric of the template; the
script fails when a metric's verdict differs, when promtool refuses a query, or when the
template holds a metric not named.
"""
import json
import re
import subprocess
import sys
from pathlib import Path


def strings(text, key):
    """Every `key: "..."` value of a YAML file whose strings are JSON-quoted."""
    return [json.loads(m) for m in re.findall(rf'^\s*-?\s*{key}: ("(?:[^"\\]|\\.)*")$', text, re.M)]


def main():
    url, render, expected = sys.argv[1], Path(sys.argv[2]), dict(a.split("=") for a in sys.argv[3:])
    template = next(render.glob("analysistemplate-*.yaml")).read_text()
    rollout = next(render.glob("rollout-*.yaml")).read_text()
    # The Rollout passes each model's pinned version as an argument.
    args = dict(re.findall(r'- name: "(version-[^"]+)"\n\s+value: "([^"]+)"', rollout))
    args["prometheus"] = url
    # A metric's name is the only `name:` at its list item's inner indentation.
    metrics = [json.loads(m) for m in re.findall(r'^      name: ("(?:[^"\\]|\\.)*")$', template, re.M)]
    queries = strings(template, "query")
    successes, failures = strings(template, "successCondition"), strings(template, "failureCondition")
    assert len(metrics) == len(queries) == len(successes) == len(failures), (metrics, len(queries))
    assert sorted(metrics) == sorted(expected), f"template metrics {sorted(metrics)} != expected {sorted(expected)}"
    failed = []
    for name, query, success, failure in zip(metrics, queries, successes, failures):
        query = re.sub(r"\{\{args\.([^}]+)\}\}", lambda m: args[m.group(1)], query)
        checked = subprocess.run(["promtool", "query", "instant", "-o", "json", url, query], capture_output=True, text=True)
        if checked.returncode != 0:
            failed.append(f"{name}: promtool refused the query: {checked.stderr.strip()}")
            continue
        result = [float(s["value"][1]) for s in json.loads(checked.stdout)]
        # Argo's expressions use && and len(); Python's `and` and len() read them the same.
        judge = lambda condition: eval(condition.replace("&&", "and"), {"len": len}, {"result": result})
        verdict = "failure" if judge(failure) else "success" if judge(success) else "inconclusive"
        print(f"  {name}: result {result} -> {verdict}")
        if verdict != expected[name]:
            failed.append(f"{name}: {verdict}, expected {expected[name]} (result {result}; {success!r} / {failure!r})")
    if failed:
        sys.exit("analysis check failed:\n  " + "\n  ".join(failed))


main()
