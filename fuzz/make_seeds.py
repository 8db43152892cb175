#!/usr/bin/env python3
"""Writes the derived seed inputs under fuzz/seeds/ (committed; rerun after a format change).

Real captures are used as seeds directly from testdata/ (see README.md); this script only
derives the inputs that have no capture of their own, from those captures and from the
repository's own rule and config files:

- push_batch: agent push batches (JSON) built from dcgm-exporter pages in testdata/exporters
  and an nvidia-smi capture, with events of every kind.
- remote_write: WriteRequests of the same pages, protobuf-encoded by hand, both as a
  snappy raw block (mode byte 0) and raw (mode byte 1; the target compresses it).
- config_toml: the README's example config, the notify example of docs/notifications.md,
  and configs that touch every section.
- rules_toml: selector byte + the shipped health rules, XID catalog and security rules,
  and override tables.

Standard library only. Usage: python3 fuzz/make_seeds.py
"""

import json
import os
import re
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
NOW_MS = 1_735_689_600_000  # the targets' receiver clock (fuzz_targets/common/mod.rs)

SERIES_RE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\s*$')
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def page_series(rel, limit):
    """(name, labels, value) of the first `limit` samples of an exposition page."""
    out = []
    for line in read(rel).splitlines():
        if not line or line.startswith("#"):
            continue
        m = SERIES_RE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        ls = [(k, v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")) for k, v in LABEL_RE.findall(labels)]
        try:
            fv = float(value)
        except ValueError:
            continue
        out.append((name, ls, fv))
        if len(out) >= limit:
            break
    return out


# ---- push_batch ---------------------------------------------------------------------

IDENTITY_LABELS = {"UUID", "uuid", "gpu", "Hostname", "device", "modelName", "pci_bus_id", "DCGM_FI_DRIVER_VERSION",
                   "namespace", "pod", "container", "hpc_job", "GPU_I_ID", "GPU_I_PROFILE"}


# A few nvidia_gpu_exporter metrics under their DCGM names (as the agent would push them);
# the others stay under their own names (unknown fields in a batch).
NVSMI_AS_DCGM = {
    "nvidia_smi_temperature_gpu": ("DCGM_FI_DEV_GPU_TEMP", 1.0),
    "nvidia_smi_power_draw_watts": ("DCGM_FI_DEV_POWER_USAGE", 1.0),
    "nvidia_smi_utilization_gpu_ratio": ("DCGM_FI_DEV_GPU_UTIL", 100.0),
    "nvidia_smi_clocks_current_sm_clock_hz": ("DCGM_FI_DEV_SM_CLOCK", 1e-6),
}


def batch_from_page(rel, limit, batch_id, node):
    gpus, rows = {}, {}
    for name, labels, value in page_series(rel, limit):
        d = dict(labels)
        if name in NVSMI_AS_DCGM:
            name, scale = NVSMI_AS_DCGM[name]
            value *= scale
        uuid = d.get("UUID") or d.get("uuid")
        if not uuid or value != value or value in (float("inf"), float("-inf")):
            continue
        key = uuid + (f"/mig/{d['GPU_I_ID']}" if d.get("GPU_I_ID") else "")
        if key not in gpus:
            ident = {
                "uuid": key, "node": d.get("Hostname", node),
                "index": int(d["gpu"]) if d.get("gpu", "").isdigit() else None,
                "device": d.get("device") or None, "model": d.get("modelName") or None,
                "pci_bus_id": d.get("pci_bus_id") or None,
                "driver_version": d.get("DCGM_FI_DRIVER_VERSION") or None,
                "mig": {"instance_id": d["GPU_I_ID"], "profile": d.get("GPU_I_PROFILE") or None} if d.get("GPU_I_ID") else None,
                "workload": {"namespace": d.get("namespace") or None, "pod": d.get("pod") or None,
                             "container": d.get("container") or None, "job": d.get("hpc_job") or None},
                "extra_labels": {k: v for k, v in d.items() if k not in IDENTITY_LABELS and v},
            }
            gpus[key] = ident
            rows[key] = {"gpu": key, "ts_ms": NOW_MS - 10_000, "values": []}
        if all(f != name for f, _ in rows[key]["values"]):
            rows[key]["values"].append([name, value])
    uuids = list(gpus)
    events = []
    if uuids:
        g = uuids[0]
        kinds = [
            {"type": "xid", "code": 79, "message": "GPU has fallen off the bus.", "pid": 1234, "process": "python"},
            {"type": "xid", "code": 13},
            {"type": "xid_cleared", "previous_code": 79},
            {"type": "gpu_disappeared"},
            {"type": "gpu_appeared"},
            {"type": "ecc_dbe", "count": 2},
            {"type": "remap_failure"},
            {"type": "throttle_start", "reasons": 72},
            {"type": "process_start", "pid": 4242, "name": "miner"},
        ]
        events = [{"gpu": g, "node": node, "ts_ms": NOW_MS - 5_000 + i, "kind": k} for i, k in enumerate(kinds)]
    return {
        "version": 1, "id": batch_id, "node": node, "created_ms": NOW_MS,
        "pages": [{"source": "dcgm-exporter", "gpus": list(gpus.values()), "rows": list(rows.values())}],
        "events": events,
    }


def push_batch_seeds():
    pages = [
        ("linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__load.metrics", 120),
        ("linux-x86_64__nvidia-h100-mig__590.48.01__load.metrics", 120),
        ("dcgm-exporter-datadog-t4-a10g.txt", 80),
    ]
    for i, (name, limit) in enumerate(pages):
        b = batch_from_page(f"testdata/exporters/{name}", limit, f"{i:032x}", f"gpu-host-{i}")
        write("push_batch", f"batch-{i}.json", json.dumps(b, separators=(",", ":")))
    # Small hand-made ones: minimal, impossible values, far-future rows, unknown fields.
    minimal = {"version": 1, "id": "a", "node": "n", "created_ms": 0}
    write("push_batch", "minimal.json", json.dumps(minimal))
    hostile = {
        "version": 1, "id": "hostile-1", "node": "n", "created_ms": NOW_MS,
        "pages": [{"source": "nvml", "gpus": [{
            "uuid": "GPU-x", "node": "n", "index": None, "device": None, "model": None, "pci_bus_id": None,
            "driver_version": None, "mig": None, "workload": {"namespace": None, "pod": None, "container": None, "job": None},
            "extra_labels": {}}],
            "rows": [
                {"gpu": "GPU-x", "ts_ms": NOW_MS, "values": [["DCGM_FI_DEV_GPU_UTIL", 9253.0], ["DCGM_FI_DEV_GPU_TEMP", -300.0],
                                                            ["DCGM_FI_DEV_XID_ERRORS", 79], ["my_metric", 1e308]]},
                {"gpu": "GPU-x", "ts_ms": 4102444800000, "values": [["DCGM_FI_DEV_GPU_TEMP", 40]]},
                {"gpu": "GPU-x", "ts_ms": -1, "values": [["DCGM_FI_DEV_POWER_USAGE", 300.5]]},
            ]}],
        "events": [],
    }
    write("push_batch", "hostile.json", json.dumps(hostile))


# ---- remote_write -------------------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(tag, wire, payload):
    key = varint((tag << 3) | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def pb_label(name, value):
    return field(1, 2, name.encode()) + field(2, 2, value.encode())


def pb_sample(value, ts):
    return field(1, 1, struct.pack("<d", value)) + field(2, 0, varint(ts & 0xFFFFFFFFFFFFFFFF))


def write_request(series):
    out = b""
    for labels, samples in series:
        ts = b"".join(field(1, 2, pb_label(n, v)) for n, v in labels)
        ts += b"".join(field(2, 2, pb_sample(v, t)) for v, t in samples)
        out += field(1, 2, ts)
    return out


def snappy_literal(data):
    """A snappy raw block holding `data` as literals only (valid, uncompressed)."""
    out = bytearray(varint(len(data)))
    i = 0
    while i < len(data):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + n.to_bytes(2, "little")
        out += chunk
        i += len(chunk)
    return bytes(out)


def remote_write_seeds():
    pages = [
        ("linux-x86_64__nvidia-h200__590.48.01__load.metrics", 150, "gpu-7:9400"),
        ("linux-x86_64__nvidia-h200-mig__590.48.01__idle.metrics", 150, "[::1]:9400"),
        ("dcgm-exporter-datadog-t4-a10g.txt", 100, "t4-node"),
    ]
    for i, (name, limit, instance) in enumerate(pages):
        series = []
        for j, (metric, labels, value) in enumerate(page_series(f"testdata/exporters/{name}", limit)):
            ls = [("__name__", metric), ("job", "dcgm"), ("instance", instance)] + labels
            series.append((ls, [(value, NOW_MS - 15_000 + j), (value, NOW_MS)]))
        # A staleness marker and a series without a name.
        series.append(([("__name__", "DCGM_FI_DEV_GPU_TEMP"), ("UUID", "GPU-stale")],
                       [(struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0], NOW_MS)]))
        series.append(([("job", "x")], [(1.0, NOW_MS)]))
        raw = write_request(series)
        write("remote_write", f"request-{i}-snappy.bin", b"\x00" + snappy_literal(raw))
        write("remote_write", f"request-{i}-raw.bin", b"\x01" + raw)


# ---- config_toml --------------------------------------------------------------------

def config_seeds():
    readme = read("README.md")
    start = readme.index("```toml\n") + 8
    write("config_toml", "readme.toml", readme[start:readme.index("```", start)])
    notes = read("docs/notifications.md")
    start = notes.index("```toml\n") + 8
    write("config_toml", "notify.toml", notes[start:notes.index("```", start)])
    write("config_toml", "full.toml", """listen = "[::1]:9470"
data_dir = "/tmp/gpuwarden"

[scrape]
interval = "10s"
timeout = "2s"
max_body_bytes = 1048576
targets = ["gpu1:9400"]
max_clock_ahead = "1m"
max_sample_age = "1h"
max_gpus_per_target = 64
max_new_gpus_per_page = 8
max_series_per_gpu = 128

[store]
retention = "3d"

[simulator]
nodes = 2
gpus_per_node = 8
seed = 7
speed = 60.0
fault_rate_multiplier = 2.5

[health.ecc.sbe_rate]
max_per_hour = 500

[health.pcie.replay]
enabled = false

[incidents]
auto_resolve_after = "5m"
flap_window = 60000

[security]
approved_namespaces = ["ml-*", "research"]
approved_accounts = ["svc-train"]
business_hours = ["mon-fri 08:00-18:00"]
utc_offset_minutes = 60
hours_restricted_namespaces = ["dev-*"]
allowlist = ["node-1/GPU-*"]
attribution_expected = true
min_driver_version = "535.104.05"

[security.baseline.node-1]
driver_version = "535.104.05"
ecc_mode = 1
persistence_mode = 1
mig_mode = 0
compute_mode = 0
power_limit_w = 700.0
gpu_count = 8
gpus = ["GPU-a", "GPU-b"]

[security.rules."sec.mining.telemetry"]
sm_active_min = 0.7
enabled = true
severity = "critical"

[predict]
period_s = 60
threshold = 0.5
top_features = 3

[notify]
retry_initial = "500ms"

[notify.sinks.am]
type = "alertmanager"
url = "http://127.0.0.1:9093"

[[notify.routes]]
match = { min_severity = "critical", rules = ["xid.*"] }
sinks = ["am"]
continue = true
""")
    write("config_toml", "empty.toml", "")


# ---- rules_toml ---------------------------------------------------------------------

def rules_seeds():
    write("rules_toml", "0-health.toml", b"\x00" + read("crates/detect/rules/health.toml").encode())
    write("rules_toml", "1-health-overrides.toml",
          b"\x01[ecc.sbe_rate]\nmax_per_hour = 500\n[pcie.replay]\nenabled = false\n[ecc.dbe]\nseverity = \"critical\"\n")
    # The XID catalog is 35 KiB: the first entries are enough as a seed.
    xid = read("crates/detect/catalog/xid.toml")
    cut = [m.start() for m in re.finditer(r"^\[\[xid\]\]", xid, re.M)]
    write("rules_toml", "2-xid-catalog.toml", b"\x02" + xid[: cut[12] if len(cut) > 12 else len(xid)].encode())
    rules_dir = os.path.join(ROOT, "crates/security/rules")
    for name in sorted(os.listdir(rules_dir)):
        if name.endswith(".toml"):
            write("rules_toml", f"3-{name}", b"\x03" + read(f"crates/security/rules/{name}").encode())
    write("rules_toml", "4-security-overrides.toml",
          b"\x04[\"sec.mining.telemetry\"]\nsm_active_min = 0.7\nenabled = false\nseverity = \"fatal\"\n"
          b"[\"sec.use.ghost\"]\nenabled = true\n")


if __name__ == "__main__":
    push_batch_seeds()
    remote_write_seeds()
    config_seeds()
    rules_seeds()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(SEEDS) for f in fs)
    print(f"wrote seeds under {SEEDS}: {total} bytes")
