//! The page looks like dcgm-exporter's, and the same seed gives the same pages.

mod common;

use gpuwarden_sim::{Fleet, SimConfig};
use std::collections::BTreeSet;

fn page(fleet: &Fleet, node: usize) -> String {
    let mut s = String::new();
    fleet.render_node(node, &mut s);
    s
}

#[test]
fn same_seed_same_pages() {
    let cfg = SimConfig {
        seed: 7,
        fault_rate_multiplier: 5000.0,
        ..SimConfig::default()
    };
    let mut a = Fleet::new(&cfg).unwrap();
    let mut b = Fleet::new(&cfg).unwrap();
    let t0 = a.now_ms();
    for step in [1_000, 15_000, 600_000, 3_600_000] {
        a.advance_to(t0 + step);
        b.advance_to(t0 + step);
        for node in 0..cfg.nodes {
            assert_eq!(page(&a, node), page(&b, node));
        }
    }
    assert_eq!(a.labels(), b.labels());
    // Advancing in one jump or in many small steps lands in the same state.
    let mut c = Fleet::new(&cfg).unwrap();
    for s in (0..=3_600).map(|i| t0 + i * 1_000) {
        c.advance_to(s);
    }
    assert_eq!(page(&a, 0), page(&c, 0));
    let other = Fleet::new(&SimConfig { seed: 8, ..cfg }).unwrap();
    assert_ne!(page(&a, 0), page(&other, 0));
}

#[test]
fn page_has_dcgm_exporter_shape() {
    let cfg = SimConfig::default();
    let mut fleet = Fleet::new(&cfg).unwrap();
    fleet.advance_to(fleet.now_ms() + 120_000);
    for node in 0..cfg.nodes {
        let text = page(&fleet, node);
        // Every family: HELP then TYPE then its samples, no timestamps at speed 1.
        let mut declared = BTreeSet::new();
        let mut lines = text.lines().peekable();
        while let Some(l) = lines.next() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                let ty = lines.next().unwrap();
                assert!(
                    ty == format!("# TYPE {name} gauge") || ty == format!("# TYPE {name} counter"),
                    "{ty}"
                );
                assert!(declared.insert(name.to_string()), "{name} declared twice");
            }
        }
        let parsed = common::parse(&text);
        let identity = [
            "gpu",
            "UUID",
            "pci_bus_id",
            "device",
            "modelName",
            "Hostname",
            "DCGM_FI_DRIVER_VERSION",
        ];
        for l in &parsed {
            assert!(declared.contains(&l.name), "{} has no HELP/TYPE", l.name);
            assert!(l.ts.is_none(), "speed 1 must not emit timestamps");
            for k in identity {
                assert!(l.labels.contains_key(k), "{} lacks label {k}", l.name);
            }
            let extra: Vec<_> = l.labels.keys().filter(|k| !identity.contains(&k.as_str())).collect();
            for k in &extra {
                assert!(
                    ["container", "namespace", "pod", "hpc_job"].contains(&k.as_str()),
                    "unexpected label {k}"
                );
            }
            assert_eq!(l.labels["Hostname"], fleet.node_names()[node]);
        }
        let per_gpu = parsed.iter().filter(|l| l.labels["gpu"] == "0").count();
        assert!((40..=56).contains(&per_gpu), "node {node}: {per_gpu} fields per GPU");
        assert_eq!(
            parsed
                .iter()
                .map(|l| l.labels["UUID"].clone())
                .collect::<BTreeSet<_>>()
                .len(),
            cfg.gpus_per_node
        );
    }
    // Integers print as integers, floats with six decimals as Go's %f does.
    let text = page(&fleet, 0);
    let temp = text.lines().find(|l| l.starts_with("DCGM_FI_DEV_GPU_TEMP{")).unwrap();
    assert!(!temp.rsplit(' ').next().unwrap().contains('.'), "{temp}");
    let power = text
        .lines()
        .find(|l| l.starts_with("DCGM_FI_DEV_POWER_USAGE{"))
        .unwrap();
    let v = power.rsplit(' ').next().unwrap();
    assert_eq!(v.split('.').nth(1).map(str::len), Some(6), "{power}");
}

#[test]
fn l40s_has_no_nvlink_or_memory_temperature() {
    let cfg = SimConfig::default();
    let fleet = Fleet::new(&cfg).unwrap();
    let node = fleet
        .gpus()
        .iter()
        .find(|g| g.model == "NVIDIA L40S")
        .map(|g| &g.node)
        .cloned()
        .unwrap();
    let idx = fleet.node_names().iter().position(|n| *n == node).unwrap();
    let text = page(&fleet, idx);
    assert!(!text.contains("NVLINK"));
    assert!(!text.contains("DCGM_FI_DEV_MEMORY_TEMP"));
    assert!(text.contains("DCGM_FI_DEV_GPU_TEMP"));
}

#[test]
fn fast_speed_emits_sim_timestamps() {
    let cfg = SimConfig {
        speed: 60.0,
        start_ms: Some(1_700_000_000_000),
        ..SimConfig::default()
    };
    let mut fleet = Fleet::new(&cfg).unwrap();
    fleet.advance_to(1_700_000_090_500);
    for l in common::parse(&page(&fleet, 1)) {
        assert_eq!(l.ts, Some(1_700_000_090_500));
    }
}

#[test]
fn rendering_a_node_is_fast() {
    let fleet = Fleet::new(&SimConfig::default()).unwrap();
    let mut out = String::new();
    let start = std::time::Instant::now();
    let n = 200;
    for _ in 0..n {
        out.clear();
        fleet.render_node(0, &mut out);
    }
    let per = start.elapsed() / n;
    // ~130 KB for 8 GPUs; even a debug build should stay well under 20 ms.
    assert!(per < std::time::Duration::from_millis(20), "render took {per:?}");
}
