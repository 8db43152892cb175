//! The rule pack against the real simulator core: a day of a 32-GPU fleet with miners of
//! every variant, unapproved namespaces and drift planted among legitimate training,
//! inference and HPC jobs (plus synthetic steady memory-bound training, the hardest
//! legitimate case for the mining rule). Every planted miner is found within five
//! minutes, and legitimate work raises no mining, ghost or namespace alarm.

use gpuwarden_security::simbench::{max_s, run, BenchConfig};

#[test]
fn every_miner_variant_is_found_within_five_minutes_and_legit_work_stays_quiet() {
    let cfg = BenchConfig {
        nodes: 4,
        gpus_per_node: 8,
        hours: 24.0,
        step_ms: 20_000,
        seed: 11,
        scenario_every_ms: 3_600_000,
        hard_legit_gpus: 4,
    };
    let r = run(&cfg, &mut |_| {});
    for v in &r.variants {
        eprintln!(
            "{:24} {}/{} max delay {:?} s",
            v.variant,
            v.detected,
            v.episodes,
            max_s(&v.delays_ms)
        );
    }
    for s in &r.rules {
        eprintln!(
            "{:34} episodes {:3} detected {:3} runs {:3} false {:3} (hard {})",
            s.rule, s.episodes, s.detected, s.finding_runs, s.false_runs, s.false_runs_hard
        );
    }
    for v in r.variants.iter().filter(|v| v.variant.starts_with("miner")) {
        assert!(v.episodes > 0, "{} was planted", v.variant);
        assert_eq!(v.detected, v.episodes, "{}: every episode found", v.variant);
        assert!(max_s(&v.delays_ms).unwrap() <= 300.0, "{}: within 5 minutes", v.variant);
    }
    for v in &r.variants {
        assert_eq!(v.detected, v.episodes, "{} detected", v.variant);
    }
    for rule in ["sec.mining.telemetry", "sec.use.ghost", "sec.use.unapproved_namespace"] {
        let s = r.rules.iter().find(|s| s.rule == rule).unwrap();
        assert_eq!(s.false_runs, 0, "{rule}: false alarms on legitimate work");
    }
}
