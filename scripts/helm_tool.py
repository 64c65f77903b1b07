"""Helm for scripts/validate-deploy.sh, through Helm's own Go SDK (the helm-python-sdk wheel,
Helm v4): lint, render and schema checks of docker/helm/vaultline without a helm binary.

    helm_tool.py lint CHART [VALUES]             helm lint --strict, for Kubernetes 1.30 and 1.32
    helm_tool.py render CHART OUT [VALUES]       schema check, then the manifests to OUT
    helm_tool.py reject CHART VALUES...          each values file must fail the schema (or the
                                                 chart's own checks) for the reason its
                                                 `# expect:` line names; exits 1 otherwise
    helm_tool.py comments VALUES                 every key of a values file has a comment above it
    helm_tool.py tojson IN.yaml OUT.json         the YAML documents of IN as one JSON array, for
                                                 the wiring test (tests/tests/deploy_wiring.rs)
    helm_tool.py rules IN.yaml OUT.yaml          the spec of the one PrometheusRule among the
                                                 rendered documents of IN, as a plain Prometheus
                                                 rules file (for promtool)
"""

import json
import re
import sys
from pathlib import Path

import helm_python as helm
import yaml

RELEASE = "vaultline"
NAMESPACE = "vaultline"
KUBE_VERSIONS = ("v1.30.0", "v1.32.0")


def values_of(path):
    """The values in a YAML file, parsed by Helm's own loader ({} without a file)."""
    if path is None:
        return {}
    return helm.values_from_yaml(Path(path).read_text())


def lint(chart, values_path=None):
    failed = False
    for kube_version in KUBE_VERSIONS:
        report = helm.lint(
            chart, values_of(values_path), strict=True, namespace=NAMESPACE, kube_version=kube_version
        )
        messages = report.get("messages") or []
        errors = report.get("errors") or []
        # Severity: 1 info, 2 warning, 3 error; --strict fails on warnings too.
        serious = [m for m in messages if m.get("severity", 0) >= 2]
        for message in messages:
            print(f"  lint {kube_version}: [{message.get('severity')}] {message.get('path')}: {message.get('error')}")
        for error in errors:
            print(f"  lint {kube_version}: error: {error}")
        if serious or errors:
            failed = True
        else:
            print(f"  lint --strict {kube_version} ({values_path or 'default values'}): ok, {len(messages)} info message(s)")
    return not failed


def render(chart_path, out, values_path=None):
    chart = helm.Chart.load(chart_path)
    values = values_of(values_path)
    chart.validate_schema(values)
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, revision=1, is_install=True)
    documents = []
    for template in sorted(manifests):
        text = manifests[template].strip()
        if not text or template.endswith("NOTES.txt"):
            continue
        documents.append(f"# Source: {template}\n{text}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n---\n".join(documents) + "\n")
    print(f"  rendered {len(documents)} template(s) ({values_path or 'default values'}) -> {out}")
    return True


def reject(chart_path, paths):
    """Each file must fail, and for its reason: the text of its `# expect:` comment line."""
    chart = helm.Chart.load(chart_path)
    ok = True
    for path in paths:
        text = Path(path).read_text()
        expected = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:")]
        values = helm.values_from_yaml(text)
        try:
            chart.validate_schema(values)
            chart.render(values, name=RELEASE, namespace=NAMESPACE, revision=1, is_install=True)
        except helm.HelmError as error:
            message = " ".join(str(error).split())
            if expected and all(e in message for e in expected):
                print(f"  rejected as it must be: {path}: {message}")
                continue
            print(f"  rejected, but not for the expected reason {expected}: {path}: {message}")
            ok = False
            continue
        print(f"  NOT rejected: {path} rendered without error")
        ok = False
    return ok


def comments(path):
    """Each `key:` line must follow a comment line (blank lines between are not allowed)."""
    missing = []
    previous = ""
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        stripped = line.strip()
        is_key = re.match(r"^\s*[A-Za-z_][A-Za-z0-9_.-]*:", line) is not None
        if is_key and not previous.startswith("#"):
            missing.append(f"{path}:{number}: {stripped}")
        if stripped:
            previous = stripped
        else:
            previous = ""
    for entry in missing:
        print(f"  no comment above: {entry}")
    if not missing:
        print(f"  every key of {path} is commented")
    return not missing


def tojson(source, out):
    documents = [d for d in yaml.safe_load_all(Path(source).read_text()) if d is not None]
    Path(out).write_text(json.dumps(documents, indent=1) + "\n")
    print(f"  {source} -> {out} ({len(documents)} document(s))")
    return True


class _RulesDumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, as they were written."""


_RulesDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def rules(source, out):
    found = [
        d for d in yaml.safe_load_all(Path(source).read_text()) if d and d.get("kind") == "PrometheusRule"
    ]
    if len(found) != 1:
        print(f"  {source}: {len(found)} PrometheusRule(s), expected exactly one (alerts.enabled?)")
        return False
    spec = found[0]["spec"]
    alerts = [rule["alert"] for group in spec["groups"] for rule in group["rules"] if "alert" in rule]
    header = f"# The alert rules of {found[0]['metadata']['name']}, extracted from {source}.\n"
    Path(out).write_text(header + yaml.dump(spec, Dumper=_RulesDumper, sort_keys=False, allow_unicode=True, width=1000))
    print(f"  {source} -> {out}: {len(spec['groups'])} group(s), {len(alerts)} alert(s)")
    return True


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    command, chart = argv[1], argv[2]
    if command == "tojson" and len(argv) == 4:
        return 0 if tojson(chart, argv[3]) else 1
    if command == "rules" and len(argv) == 4:
        return 0 if rules(chart, argv[3]) else 1
    if command == "comments":
        return 0 if comments(chart) else 1
    if command == "lint":
        return 0 if lint(chart, argv[3] if len(argv) > 3 else None) else 1
    if command == "render" and len(argv) >= 4:
        return 0 if render(chart, argv[3], argv[4] if len(argv) > 4 else None) else 1
    if command == "reject" and len(argv) >= 4:
        return 0 if reject(chart, argv[3:]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
