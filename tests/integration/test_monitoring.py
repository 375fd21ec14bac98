"""deploy/monitoring: Prometheus alert rules, their promtool unit tests, and the Grafana dashboard.

- `promtool check rules` and `promtool test rules` (promtool from Debian's `prometheus` package,
  installed by scripts/install-deps), plus mutations of the rules that the unit tests must catch;
- every alert has a firing and a quiet case, summary/description annotations and a runbook
  anchor that exists in docs/monitoring.md;
- dashboard.json: structure (ids, grid, datasource variable, targets) and every query parses
  as PromQL (promtool, after the Grafana variables are substituted);
- every metric the rules and the dashboard name is exported by the real binary: a plugin started
  against the real OpenBao (AppRole login with a 4 s token, so logins and renewals happen), KMS
  traffic sent, `GET /metrics` on `http.listen`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import grpc
import pytest
import yaml

from itlib.auth_setup import setup_approle
from itlib.openbao import PLUGIN_GID, PLUGIN_UID
from itlib.plugin import DELETE

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MON = os.path.join(REPO, "deploy", "monitoring")
ALERTS = os.path.join(MON, "alerts.yaml")
ALERTS_TEST = os.path.join(MON, "alerts_test.yaml")
DASHBOARD = os.path.join(MON, "dashboard.json")
DOC = os.path.join(REPO, "docs", "monitoring.md")
METRICS_DOC = os.path.join(REPO, "docs", "metrics.md")  # the metric reference

SEVERITIES = {"critical", "warning", "info"}


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    if not os.access(path, os.X_OK):
        pytest.skip("promtool not installed (Debian package `prometheus`; scripts/install-deps "
                    "installs it)")
    return path


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


def load_rules() -> list[dict]:
    with open(ALERTS) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def load_dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_queries(d: dict) -> list[tuple[str, str]]:
    """(where, expr) for every panel target, annotation query and query variable."""
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} target {t.get('refId')}", t.get("expr", "")))
    for a in d["annotations"]["list"]:
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"]))
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            assert m, f"variable {v['name']}: unexpected query {q!r}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![A-Za-z0-9_:])((?:trousseau|process)_[a-z_]+)(?![A-Za-z0-9_:])")


def metric_names(expr: str) -> set[str]:
    """Names of trousseau_* and process_* metrics a PromQL expression selects. String literals
    (label values, regexes) are removed first, so a label value is never taken for a name."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def base_names(names: set[str], histograms: set[str]) -> set[str]:
    out = set()
    for n in names:
        for suffix in ("_bucket", "_sum", "_count"):
            if n.endswith(suffix) and n[: -len(suffix)] in histograms:
                n = n[: -len(suffix)]
                break
        out.add(n)
    return out


def referenced_names() -> dict[str, set[str]]:
    """metric name -> where it is used (alert names, dashboard panels)."""
    used: dict[str, set[str]] = {}
    for r in load_rules():
        for n in metric_names(r["expr"]):
            used.setdefault(n, set()).add(f"alert {r['alert']}")
    for where, expr in dashboard_queries(load_dashboard()):
        for n in metric_names(expr):
            used.setdefault(n, set()).add(f"dashboard {where}")
    return used


def parse_exposition(text: str) -> tuple[dict[str, str], set[str]]:
    """Families (`# TYPE` lines: name -> type) and the sample names of a text exposition."""
    families: dict[str, str] = {}
    samples: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            assert len(parts) == 4, f"bad TYPE line {line!r}"
            families[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            assert m, f"bad sample line {line!r}"
            samples.add(m.group(0))
    return families, samples


_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])((?:trousseau|process)_[a-z_]+)\{([^}]*)\}")
# Added by Prometheus at scrape time (or Grafana variables): not in the exposition.
TARGET_LABELS = {"job", "instance"}


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, op, value)]) for every `name{...}` selector in a PromQL expression."""
    return [(m.group(1), _LABEL.findall(m.group(2))) for m in _SELECTOR.finditer(expr)]


def sample_labels(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets of its samples, from a text exposition."""
    out: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s", line)
        assert m, f"bad sample line {line!r}"
        labels = {k: v for k, op, v in _LABEL.findall(m.group(2) or "") if op == "="}
        out.setdefault(m.group(1), []).append(labels)
    return out


def unmatched_selectors(exprs: list[tuple[str, str]], text: str) -> list[str]:
    """Selectors whose positive label matchers (= and =~, job/instance aside) match no sample:
    a label name or value the binary does not use, so the query could never return data."""
    have = sample_labels(text)
    bad = []
    for where, expr in exprs:
        for name, matchers in selectors(expr):
            positive = [(k, op, v) for k, op, v in matchers
                        if op in ("=", "=~") and k not in TARGET_LABELS]
            if not positive:
                continue
            def ok(labels):
                return all((labels.get(k) == v) if op == "=" else
                           re.fullmatch(v, labels.get(k, "")) is not None
                           for k, op, v in positive)
            if not any(ok(ls) for ls in have.get(name, [])):
                bad.append(f"{where}: {name}{{{', '.join(k + op + repr(v) for k, op, v in positive)}}}")
    return bad


def github_anchor(heading: str) -> str:
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


# ------------------------------------------------------------------ the helpers themselves
def test_metric_name_extraction():
    assert metric_names('rate(trousseau_kms_request_duration_seconds_bucket{code="OK"}[5m])') \
        == {"trousseau_kms_request_duration_seconds_bucket"}
    # label values, regexes and label names are not metric names
    assert metric_names('up{job="trousseau_fake_name", x=~"process_x|y"}') == set()
    assert metric_names("sum by (trousseau) (x)") == set()
    assert metric_names("time() - process_start_time_seconds") == {"process_start_time_seconds"}
    # recording-rule style names (with a colon) are not ours
    assert metric_names("job:trousseau_kms:rate5m") == set()
    assert base_names({"trousseau_a_bucket", "trousseau_b_count", "trousseau_c_sum"},
                      {"trousseau_a", "trousseau_c"}) == \
        {"trousseau_a", "trousseau_b_count", "trousseau_c"}
    fam, samples = parse_exposition(
        "# HELP x_total help\n# TYPE x_total counter\nx_total{a=\"1\"} 3\n"
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.1\nh_count 1\n")
    assert fam == {"x_total": "counter", "h": "histogram"}
    assert samples == {"x_total", "h_bucket", "h_sum", "h_count"}
    assert selectors('sum(rate(trousseau_x_total{job=~"$job", code!~"OK|A", method=~"E|D"}[5m]))') \
        == [("trousseau_x_total", [("job", "=~", "$job"), ("code", "!~", "OK|A"), ("method", "=~", "E|D")])]
    expo = 'trousseau_x_total{code="OK",method="Encrypt"} 1\ntrousseau_y 2\n'
    assert unmatched_selectors([("w", 'trousseau_x_total{job="j", method=~"Encrypt|Decrypt"}')], expo) == []
    assert unmatched_selectors([("w", 'trousseau_x_total{code!="OK"}')], expo) == []  # negative: skipped
    assert unmatched_selectors([("w", 'trousseau_x_total{method="encrypt"}')], expo) == \
        ["w: trousseau_x_total{method='encrypt'}"]
    assert unmatched_selectors([("w", 'trousseau_y{outcome="success"}')], expo) == \
        ["w: trousseau_y{outcome='success'}"]
    assert github_anchor("TrousseauDown") == "trousseaudown"
    assert github_anchor("Scraping: bind to the node IP") == "scraping-bind-to-the-node-ip"


# ------------------------------------------------------------------ alert rules
def test_promtool_check_rules(promtool):
    r = run([promtool, "check", "rules", ALERTS])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in r.stdout, r.stdout


def test_promtool_unit_tests_pass(promtool):
    r = run([promtool, "test", "rules", ALERTS_TEST])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout


def test_every_alert_has_firing_and_quiet_cases():
    with open(ALERTS_TEST) as f:
        tests = yaml.safe_load(f)["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in load_rules()}
    assert names - firing == set(), f"alerts never tested firing: {names - firing}"
    assert names - quiet == set(), f"alerts never tested quiet: {names - quiet}"
    assert (firing | quiet) - names == set(), f"tests for unknown alerts: {(firing | quiet) - names}"


def test_every_alert_is_documented_and_annotated():
    with open(DOC) as f:
        doc = f.read()
    anchors = {github_anchor(h) for h in re.findall(r"^#+\s+(.*)$", doc, re.M)}
    for r in load_rules():
        name = r["alert"]
        assert re.fullmatch(r"Trousseau[A-Z][A-Za-z]+", name), name
        assert r.get("labels", {}).get("severity") in SEVERITIES, name
        ann = r.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), f"{name}: summary/description"
        url = ann.get("runbook_url", "")
        assert url == f"docs/monitoring.md#{name.lower()}", f"{name}: runbook_url {url!r}"
        assert name.lower() in anchors, f"{name}: no '{name}' heading in docs/monitoring.md"


# Each mutation removes one deliberate part of a rule (every occurrence of the text); the unit
# tests must notice.
MUTATIONS = {
    "token: TTL-went-up clause removed (outside writer false alarm)": (
        "            and\n"
        "              trousseau_vault_token_ttl_seconds <= min_over_time(trousseau_vault_token_ttl_seconds[25m])\n",
        ""),
    "token: start-up exclusion removed": (
        "            or\n"
        "              (time() - process_start_time_seconds) < 1500\n", ""),
    "token: TTL 0/-1 no longer excluded": (
        "trousseau_vault_token_ttl_seconds > 0\n", "trousseau_vault_token_ttl_seconds > -10\n"),
    "error ratio: INVALID_ARGUMENT counted": ('code!~"OK|INVALID_ARGUMENT"', 'code!="OK"'),
    "error ratio: Status counted": (
        'sum without (api, method, code) (rate(trousseau_kms_requests_total{method=~"Encrypt|Decrypt"}[5m]))',
        'sum without (api, method, code) (rate(trousseau_kms_requests_total[5m]))'),
    "error ratio: aggregated by (instance, job), merging clusters": (
        "sum without (api, method, code) (", "sum by (instance, job) ("),
    "error ratio: threshold 10%": ("          ) > 0.05\n", "          ) > 0.10\n"),
    "latency: Status counted": (
        'trousseau_kms_request_duration_seconds_bucket{method=~"Encrypt|Decrypt"}',
        "trousseau_kms_request_duration_seconds_bucket"),
    "key version: restart counted as rotation": (
        "          and\n          min_over_time(trousseau_transit_key_version[10m]) > 0\n", ""),
    "vault unreachable: -1 age counted": (
        "trousseau_vault_last_success_age_seconds > 180",
        "trousseau_vault_last_success_age_seconds != 0"),
    "down: absent target ignored": (' or absent(up{job="trousseau"})', ""),
    "audit: no longer fires": ("increase(trousseau_audit_records_dropped_total[5m]) > 0",
                               "increase(trousseau_audit_records_dropped_total[5m]) > 100"),
    "secondary down: fires on a blip": ("        expr: trousseau_secondary_up == 0\n        for: 5m\n",
                                        "        expr: trousseau_secondary_up == 0\n        for: 1m\n"),
    "unwrapped seeds: counter value instead of its increase": (
        "increase(trousseau_secondary_unwrapped_total[15m]) > 0", "trousseau_secondary_unwrapped_total > 0"),
    "fallbacks: primary_up ignored": ("          and\n          trousseau_primary_up == 0\n", ""),
    "state file: counter value instead of its increase": (
        "increase(trousseau_state_file_write_failures_total[10m]) > 0",
        "trousseau_state_file_write_failures_total > 0"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_unit_tests_catch_a_mutated_rule(promtool, tmp_path, name):
    old, new = MUTATIONS[name]
    with open(ALERTS) as f:
        src = f.read()
    assert src.count(old) >= 1, f"mutation {name!r}: text not found in alerts.yaml"
    (tmp_path / "alerts.yaml").write_text(src.replace(old, new))
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yaml")
    assert run([promtool, "check", "rules", str(tmp_path / "alerts.yaml")]).returncode == 0
    r = run([promtool, "test", "rules", str(tmp_path / "alerts_test.yaml")])
    assert r.returncode != 0, f"the unit tests did not notice: {name}\n{r.stdout}"


# ------------------------------------------------------------------ dashboard
def _panels_overlap(a: dict, b: dict) -> bool:
    ga, gb = a["gridPos"], b["gridPos"]
    return not (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"] or
                ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])


def test_dashboard_structure():
    d = load_dashboard()
    assert d["title"] and re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"]), (d.get("title"), d.get("uid"))
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 39, d["schemaVersion"]
    assert "id" not in d or d["id"] is None, "an exported dashboard carries no database id"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables.get("DS_PROMETHEUS")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    want_ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == want_ds, v["name"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    kinds = {"row", "timeseries", "stat", "table"}
    titles = set()
    for p in d["panels"]:
        where = f"panel {p['id']} {p.get('title')!r}"
        assert p["type"] in kinds, where
        assert p.get("title"), where
        g = p["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in "xywh"), where
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] + g["w"] <= 24, where
        if p["type"] == "row":
            assert g["w"] == 24 and g["h"] == 1 and not p.get("collapsed"), where
            continue
        assert p["title"] not in titles, f"duplicate title {p['title']!r}"
        titles.add(p["title"])
        assert p.get("description"), where
        assert p["datasource"] == want_ds, where
        targets = p.get("targets") or []
        assert targets, f"{where}: no queries"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"{where}: duplicate refIds"
        for t in targets:
            assert t["datasource"] == want_ds, where
            assert t.get("expr", "").strip(), where
            assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], \
                f"{where}: query does not follow the job/instance variables: {t['expr']}"
    drawn = [p for p in d["panels"]]
    for i, a in enumerate(drawn):
        for b in drawn[i + 1:]:
            assert not _panels_overlap(a, b), f"panels {a['id']} and {b['id']} overlap"
    # The panels the alerts' descriptions point operators at exist.
    for r in load_rules():
        for m in re.findall(r'"([^"]+)" panel', r["annotations"]["description"]):
            assert m in titles, f"alert {r['alert']} names a panel {m!r} the dashboard lacks"
    # Nothing but the variable is used as a data source (no hard-coded uid).
    text = json.dumps(d)
    assert set(re.findall(r"\$\{(DS_[A-Z_]+)\}", text)) == {"DS_PROMETHEUS"}


GRAFANA_VARS = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h",
    "$job": ".*", "$instance": ".*",
}


def test_dashboard_queries_are_valid_promql(promtool, tmp_path):
    rules = []
    for i, (where, expr) in enumerate(dashboard_queries(load_dashboard())):
        for var, val in GRAFANA_VARS.items():
            expr = expr.replace(var, val)
        assert "$" not in expr, f"{where}: unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run([promtool, "check", "rules", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr


def documented_metrics() -> set[str]:
    """The trousseau_* and process_* names in docs/metrics.md's "Metrics" and "Secondary Vault
    metrics" sections (the latter exported only with vault.secondary)."""
    with open(METRICS_DOC) as f:
        text = f.read()
    names = set()
    for heading in ("\n## Metrics\n", "\n## Secondary Vault metrics\n"):
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        names |= set(re.findall(r"`((?:trousseau|process)_[a-z_]+)", section))
    return names


def state_section(it_dir, name: str) -> dict:
    """`state.file` in a fresh directory owned by the plugin's runtime uid, so that
    trousseau_state_file_write_failures_total is exported."""
    d = os.path.join(it_dir, f"state-{name}-{os.getpid()}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(d, PLUGIN_UID, PLUGIN_GID)
    return {"file": os.path.join(d, "state.json")}


def alias_secondary(bao) -> dict:
    """A `vault.secondary` section that reaches the same OpenBao under another address
    (https://localhost:PORT; the server certificate names localhost too). Not a redundant setup:
    enough for the plugin to export the secondary's metric families and for queries on them to
    return data. The redundancy itself is tested against two servers in test_secondary.py."""
    p = bao.pki
    return {
        "addresses": [bao.addr.replace("127.0.0.1", "localhost")],
        "transit": {"mount": bao.mount, "key": bao.key},
        "tls": {"ca_file": p.ca_file, "client_cert_file": p.client_cert_file,
                "client_key_file": p.client_key_file},
        "auth": {"method": "token", "token_file": bao.token_file, "renew": False},
        "policy": "best_effort",
    }


def test_dashboard_covers_every_documented_metric():
    """Every family docs/metrics.md documents has a panel, and the dashboard uses no other."""
    documented = documented_metrics()
    assert len(documented) >= 20, sorted(documented)
    used = {n for _, e in dashboard_queries(load_dashboard()) for n in metric_names(e)}
    # Histograms: the _seconds latencies and trousseau_vault_batch_size.
    histograms = {n for n in documented if n.endswith("_seconds")} | {"trousseau_vault_batch_size"}
    used = base_names(used, histograms)
    assert documented - used == set(), f"no panel shows {sorted(documented - used)}"
    assert used - documented == set(), \
        f"the dashboard uses metrics docs/metrics.md does not list: {sorted(used - documented)}"


def test_rules_use_only_documented_metrics():
    documented = documented_metrics()
    for r in load_rules():
        names = base_names(metric_names(r["expr"]), {n for n in documented if n.endswith("_seconds")})
        assert names <= documented, f"alert {r['alert']}: {sorted(names - documented)} not in docs/metrics.md"


# ------------------------------------------------------------------ against the real binary
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


@pytest.mark.plugin
def test_every_metric_the_rules_and_dashboard_use_is_exported(plugin_factory, bao, it_dir,
                                                               promtool):
    used = referenced_names()
    assert len(used) >= 20, sorted(used)
    # AppRole with a 4 s token: the plugin logs in and renews within seconds, so the login and
    # renewal counters exist even if they are only created on first use.
    auth = setup_approle(bao, it_dir, "it-approle-mon", ttl="4s", max_ttl="60s")
    port = free_port()
    pl = plugin_factory.start({
        "vault": {"auth": {"token_file": DELETE, **auth}, "secondary": alias_secondary(bao)},
        "http": {"listen": f"127.0.0.1:{port}"},
        "state": state_section(it_dir, "mon"),
    })
    pl.wait_healthz(lambda s: s.healthz == "ok", 20, 'healthz "ok"')
    # Traffic of every kind the rules and panels look at: v2 Encrypt/Decrypt/Status, a v1
    # round trip, and a refused Decrypt (INVALID_ARGUMENT).
    for i in range(5):
        enc = pl.encrypt(os.urandom(32), uid=f"mon-{i}")
        pl.decrypt(enc.ciphertext, key_id=enc.key_id, annotations=dict(enc.annotations),
                   uid=f"mon-{i}")
    pl.status()
    c = pl.v1_encrypt(b"monitoring")
    assert pl.v1_decrypt(c.cipher).plain == b"monitoring"
    with pytest.raises(grpc.RpcError) as ei:
        pl.decrypt(b"not a ciphertext", key_id="nope", uid="mon-bad")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    deadline = time.monotonic() + 30
    while True:
        text = scrape(port)
        families, samples = parse_exposition(text)
        histograms = {n for n, t in families.items() if t == "histogram"}
        exported = set(families) | samples
        missing = {n: sorted(w) for n, w in used.items()
                   if n not in exported and base_names({n}, histograms) - set(families)}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, ("metrics used by deploy/monitoring but not exported by the binary "
                         f"(after 30 s of traffic, logins and renewals): {missing}\n"
                         f"exported families: {sorted(families)}")
    # Label names and values the queries select on exist too (method="Encrypt", not "encrypt";
    # le="1", the latency threshold, is a bucket boundary; outcome="success"; ...).
    exprs = [(f"alert {r['alert']}", r["expr"]) for r in load_rules()]
    exprs += dashboard_queries(load_dashboard())
    exprs.append(("latency threshold bucket", 'trousseau_kms_request_duration_seconds_bucket{le="1"}'))
    bad = unmatched_selectors(exprs, text)
    assert not bad, "selectors that match nothing the binary exports:\n" + "\n".join(bad)
    # Histograms are histograms (histogram_quantile over anything else is empty).
    for n in ("trousseau_kms_request_duration_seconds", "trousseau_vault_request_duration_seconds"):
        assert families.get(n) == "histogram", (n, families.get(n))
    # docs/metrics.md lists exactly the families the binary exports.
    documented = documented_metrics()
    ours = {n for n in families if n.startswith(("trousseau_", "process_"))}
    assert documented == ours, (f"documented but not exported: {sorted(documented - ours)}; "
                                f"exported but not documented: {sorted(ours - documented)}")
    # And the exposition passes Prometheus' own lint.
    r = run([promtool, "check", "metrics"], stdin=text)
    assert r.returncode == 0, f"promtool check metrics:\n{r.stdout}{r.stderr}"


PROMETHEUS = "/usr/bin/prometheus"  # Debian's `prometheus` package, beside promtool
E2E_KEY = "monitoring-e2e"


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def _query(base: str, expr: str) -> list:
    r = _get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert r["status"] == "success", r
    return r["data"]["result"]


def _own_key_plugin(plugin_factory, bao, it_dir, http_port: int):
    """A plugin on a transit key of its own (so rotating it leaves the shared key alone)."""
    bao.api_ok("POST", f"transit/keys/{E2E_KEY}", {"type": "aes256-gcm96"})
    bao.api_ok("PUT", f"sys/policies/acl/{E2E_KEY}", {"policy": f'''
path "transit/encrypt/{E2E_KEY}" {{ capabilities = ["update"] }}
path "transit/decrypt/{E2E_KEY}" {{ capabilities = ["update"] }}
path "transit/keys/{E2E_KEY}" {{ capabilities = ["read"] }}
'''})
    token = bao.api_ok("POST", "auth/token/create", {
        "policies": [E2E_KEY], "period": "1h"}).body["auth"]["client_token"]
    path = os.path.join(it_dir, f"{E2E_KEY}-token")
    with open(path, "w") as f:
        f.write(token)
    os.chmod(path, 0o400)
    if os.geteuid() == 0:
        os.chown(path, PLUGIN_UID, PLUGIN_GID)
    secondary = alias_secondary(bao)
    secondary["transit"]["key"] = E2E_KEY
    secondary["auth"]["token_file"] = path
    return plugin_factory.start({"vault": {"transit": {"key": E2E_KEY},
                                           "auth": {"token_file": path},
                                           "secondary": secondary},
                                 "http": {"listen": f"127.0.0.1:{http_port}"},
                                 "state": state_section(it_dir, "mon-e2e")})


@pytest.mark.plugin
@pytest.mark.slow
def test_rules_and_panels_evaluate_in_a_real_prometheus(plugin_factory, bao, it_dir, tmp_path,
                                                        promtool):
    """A real Prometheus (Debian's, 2 s scrapes) loads alerts.yaml and scrapes the real plugin:
    every rule evaluates without error; nothing is pending or firing on a healthy plugin, even
    with half of the Decrypts refused as INVALID_ARGUMENT (not counted by the error ratio);
    rotating the transit key fires TrousseauKeyVersionChanged, and only that; every dashboard
    query returns data."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus not installed (Debian package `prometheus`)")
    port, prom_port = free_port(), free_port()
    pl = _own_key_plugin(plugin_factory, bao, it_dir, port)
    pl.wait_healthz(lambda s: s.healthz == "ok", 20, 'healthz "ok"')
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
        "rule_files": [ALERTS],
        "scrape_configs": [{"job_name": "trousseau",
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert prom.poll() is None and time.monotonic() < deadline, \
                "prometheus did not become ready:\n" + (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)

        # Traffic, including a refused Decrypt, for long enough that rate() over 15 s has data.
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end:
            enc = pl.encrypt(os.urandom(32))
            pl.decrypt(enc.ciphertext, key_id=enc.key_id, annotations=dict(enc.annotations))
            with pytest.raises(grpc.RpcError):
                pl.decrypt(b"not a ciphertext", key_id="nope")
            time.sleep(0.3)
        assert _query(base, 'max_over_time(up{job="trousseau"}[15s]) == 1'), \
        "the plugin is not being scraped"

        rules = [r for g in _get_json(f"{base}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} == {r["alert"] for r in load_rules()}
        for r in rules:
            assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
            assert r["state"] == "inactive", f"{r['name']} is {r['state']} on a healthy plugin"

        # Rotate the plugin's key: the info alert fires within a few refresh/scrape periods.
        bao.api_ok("POST", f"transit/keys/{E2E_KEY}/rotate")
        deadline = time.monotonic() + 45
        firing = []
        while time.monotonic() < deadline:
            firing = [a["labels"] for a in _get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
                      if a["state"] == "firing"]
            if firing:
                break
            time.sleep(1)
        assert [(a["alertname"], a["severity"], a["job"]) for a in firing] == \
            [("TrousseauKeyVersionChanged", "info", "trousseau")], firing

        # Every dashboard query (Grafana's variables substituted) returns data.
        subst = {**GRAFANA_VARS, "$__rate_interval": "15s"}
        empty = []
        for where, expr in dashboard_queries(load_dashboard()):
            for var, val in subst.items():
                expr = expr.replace(var, val)
            if not _query(base, expr):
                empty.append(f"{where}: {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    finally:
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()
