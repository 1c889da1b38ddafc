"""Check that the Grafana dashboards and Prometheus alert rules only name metrics the service exports.

    python3 deploy/ci/check_queries.py --metrics scrape.txt                       # names vs. a /metrics scrape
    python3 deploy/ci/check_queries.py --metrics scrape.txt --prometheus URL      # and run every query there

Without --dashboard/--rules it checks every dashboard in deploy/grafana/dashboards and deploy/prometheus/alerts.yml.
With --prometheus, each query is evaluated through the HTTP API (a syntax or evaluation error fails), and a
dashboard query must return data unless it filters on the HTTP status (error panels stay empty on a healthy run).
Standard library only, plus PyYAML for the rules file. Exit status 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Series that Prometheus makes itself for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
             "scrape_series_added"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "atan2", "inf", "nan", "start", "end"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "untyped": ("",), "info": ("_info",),
            "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "unknown": ("",)}
# Grafana's interval variables, replaced by a concrete range before a query is sent to Prometheus.
GRAFANA_RANGE = re.compile(r"\$\{?__(rate_interval|interval|range)(_ms|_s)?\}?")


def expression_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    text = GRAFANA_RANGE.sub("1m", expr)
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def exported_metrics(exposition: str) -> tuple[set[str], set[str]]:
    """(every series name the scrape declares, the names that have samples now) from Prometheus text format.

    A labelled counter that never fired has a # TYPE line but no sample yet; its series names still count as
    exported (rate() over it is simply empty), so they are derived from the type.
    """
    declared, sampled = set(), set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(None, 3)
            kind = kind.strip()
            if kind == "counter":  # the family is written with or without _total, depending on the client
                family = family.removesuffix("_total")
            declared.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return declared | sampled, sampled


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus target in a Grafana dashboard JSON file (rows included)."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    queries = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries.append((f"{path.name}: {panel.get('title', '?')} [{target.get('refId', '?')}]",
                                    target["expr"]))

    walk(dashboard.get("panels", []))
    return queries


def rule_queries(path: Path) -> list[tuple[str, str]]:
    import yaml

    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [(f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
            for group in rules["groups"] for rule in group["rules"]]


def check_names(queries: list[tuple[str, str]], exported: set[str]) -> list[str]:
    problems = []
    for name, expr in queries:
        metrics = expression_metrics(expr)
        if not metrics:
            problems.append(f"{name}: names no metric: {expr}")
        for metric in sorted(metrics - exported - SYNTHETIC):
            problems.append(f"{name}: {metric} is not exported by the service")
    return problems


def run_queries(queries: list[tuple[str, str]], prometheus: str, sampled: set[str],
                require_data: bool) -> list[str]:
    """Evaluate each query on a live Prometheus; returns problems."""
    problems = []
    for name, expr in queries:
        query = urllib.parse.urlencode({"query": GRAFANA_RANGE.sub("1m", expr)})
        url = f"{prometheus.rstrip('/')}/api/v1/query?{query}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:  # 400 bad_data: a syntax error, 422: an evaluation error
            problems.append(f"{name}: Prometheus refused the query ({error.code}): {error.read().decode()[:300]}")
            continue
        if answer.get("status") != "success":
            problems.append(f"{name}: {answer}")
            continue
        result = answer["data"]["result"]
        optional = "status=" in expr.replace(" ", "") or not expression_metrics(expr) <= sampled | SYNTHETIC
        print(f"  {'ok   ' if result else 'empty'} {name}: {len(result)} series")
        if require_data and not result and not optional:
            problems.append(f"{name}: no data, though the service exports every metric it names")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=Path, required=True, help="a /metrics scrape of the running service")
    parser.add_argument("--dashboard", type=Path, action="append", help="Grafana dashboard JSON (repeatable)")
    parser.add_argument("--rules", type=Path, action="append", help="Prometheus rules file (repeatable)")
    parser.add_argument("--prometheus", help="base URL of a Prometheus scraping the service: run every query there")
    args = parser.parse_args(argv)

    exported, sampled = exported_metrics(args.metrics.read_text(encoding="utf-8"))
    if not any(name.startswith("mt_") for name in exported):
        print(f"FAIL: {args.metrics} holds no mt_ metric: not a scrape of the service", file=sys.stderr)
        return 1
    dashboards = args.dashboard or sorted(DASHBOARDS.glob("*.json"))
    panels = [query for path in dashboards for query in dashboard_queries(path)]
    alerts = [query for path in (args.rules or [RULES]) for query in rule_queries(path)]
    if not panels:
        print("FAIL: no dashboard query found", file=sys.stderr)
        return 1
    problems = check_names(panels + alerts, exported)
    print(f"{len(panels)} dashboard and {len(alerts)} alert queries name "
          f"{len(set().union(*(expression_metrics(e) for _, e in panels + alerts)))} metrics; "
          f"the service exports {len(exported)} series names")
    if args.prometheus and not problems:
        problems += run_queries(panels, args.prometheus, sampled, require_data=True)
        problems += run_queries(alerts, args.prometheus, sampled, require_data=False)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
