//! The deployment files are valid: the systemd units pass `systemd-analyze verify` (with
//! the `ExecStart` binaries pointed at this build and a stub, since verify checks that they
//! exist) and carry the hardening we document; the Kubernetes manifests pass
//! `kubernetes-validate --strict` (PyPI, schemas bundled, no network) and the
//! ServiceMonitor (a CRD those schemas do not cover) selects the server's Service and port.
//! Missing tools skip with a message, unless `GPUWARDEN_REQUIRE_TOOLS=1`.

mod common;

use common::tools_required;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(sub)
}

fn have(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !tools_required(),
            "{tool} is required (GPUWARDEN_REQUIRE_TOOLS=1) but not available"
        );
        eprintln!("skipping: `{tool}` is not installed (see scripts/test.sh)");
    }
    ok
}

const UNITS: [&str; 3] = [
    "gpuwarden-agent.service",
    "gpuwarden-serve.service",
    "nvidia-dcgm-exporter.service",
];

#[test]
fn systemd_units_carry_the_hardening() {
    for unit in UNITS {
        let text = std::fs::read_to_string(deploy("systemd").join(unit)).unwrap();
        for key in ["ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes"] {
            assert!(text.contains(key), "{unit} lacks {key}");
        }
        assert!(
            text.contains("DynamicUser=yes") || text.contains("\nUser="),
            "{unit} runs as root"
        );
    }
    let agent = std::fs::read_to_string(deploy("systemd/gpuwarden-agent.service")).unwrap();
    for key in [
        "DeviceAllow=char-nvidia-frontend",
        "DeviceAllow=/dev/nvidiactl",
        "ReadWritePaths=",
        "DevicePolicy=closed",
    ] {
        assert!(agent.contains(key), "agent unit lacks {key}");
    }
    let serve = std::fs::read_to_string(deploy("systemd/gpuwarden-serve.service")).unwrap();
    assert!(serve.contains("ReadWritePaths=") && serve.contains("--listen 127.0.0.1:"));
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("dcgm-exporter-stub");
    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for unit in UNITS {
        let text = std::fs::read_to_string(deploy("systemd").join(unit))
            .unwrap()
            .replace("/usr/local/bin/gpuwarden", common::binary())
            .replace("/usr/local/bin/dcgm-exporter", stub.to_str().unwrap());
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{unit}: {stderr}");
    }
}

const MANIFESTS: [&str; 5] = [
    "namespace.yaml",
    "rbac.yaml",
    "agent-daemonset.yaml",
    "server.yaml",
    "servicemonitor.yaml",
];

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    if !have("kubernetes-validate", "--version") {
        return;
    }
    let dir = deploy("kubernetes");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(MANIFESTS.map(|m| dir.join(m)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Every built-in resource was checked against a schema (only the CRD has none).
    assert_eq!(text.matches(" passed for resource ").count(), 9, "{text}");
    assert!(!text.contains("ERROR") && !text.contains("failed"), "{text}");

    // The validator does catch a mistake (a typo'd field) in strict mode.
    let tmp = tempfile::tempdir().unwrap();
    let broken = std::fs::read_to_string(dir.join("agent-daemonset.yaml"))
        .unwrap()
        .replace("nodeSelector:", "nodeSelecter:");
    let path = tmp.path().join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "strict validation should reject an unknown field"
    );
}

#[test]
fn servicemonitor_selects_the_server_service_port() {
    // PyYAML comes with kubernetes-validate.
    if !have("kubernetes-validate", "--version") {
        return;
    }
    let script = r#"
import sys, yaml
d = sys.argv[1]
docs = [x for f in ("server.yaml", "servicemonitor.yaml", "agent-daemonset.yaml") for x in yaml.safe_load_all(open(f"{d}/{f}")) if x]
svc = next(x for x in docs if x["kind"] == "Service")
sm = next(x for x in docs if x["kind"] == "ServiceMonitor")
ds = next(x for x in docs if x["kind"] == "DaemonSet")
assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()), "selector"
assert sm["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"], "namespace"
ports = {p["name"] for p in svc["spec"]["ports"]}
assert all(e["port"] in ports and e["path"] == "/metrics" for e in sm["spec"]["endpoints"]), "port"
spec = ds["spec"]["template"]["spec"]
assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, "nodeSelector"
c = spec["containers"][0]
assert c["securityContext"]["privileged"] is False and c["securityContext"]["capabilities"]["drop"] == ["ALL"], "privileges"
assert not spec.get("hostPID") and not spec.get("hostNetwork"), "host namespaces"
assert all(m.get("readOnly") for m in c["volumeMounts"] if m["name"] != "spool"), "host mounts read-only"
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(deploy("kubernetes"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
