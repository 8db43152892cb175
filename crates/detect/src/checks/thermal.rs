//! Thermal and power rules: die temperature against the model's slowdown limit, memory
//! temperature, the clock-event reasons bitmask (thermal throttling, power brake, power
//! cap), and power draw against the power limit.

use super::{num, Ctx};
use crate::hit::{ev, Hit};
use crate::limits;
use crate::rules::ids;
use crate::state::{GpuState, Streak};
use crate::throttle;
use gpuwarden_model::DcgmField;

pub fn check(s: &mut GpuState, ctx: &Ctx<'_>, out: &mut Vec<Hit>, notes: &mut Vec<String>) {
    let r = ctx.rules;
    let ts = s.last_row_ms.unwrap_or(0);

    // Die temperature against slowdown: critical at or over it, a warning within margin.
    if let Some(temp) = s.get(DcgmField::GpuTemp) {
        let lim = limits::resolve(
            s.get(DcgmField::SlowdownTemp),
            s.get(DcgmField::ShutdownTemp),
            s.model.as_deref(),
        );
        match lim {
            None => notes.push(format!(
                "temperature rules skipped: no slowdown temperature exported and model {} is not in the built-in table",
                s.model.as_deref().unwrap_or("unknown")
            )),
            Some(l) => {
                let f = DcgmField::GpuTemp.as_str();
                if r.thermal.slowdown.enabled && temp >= l.slowdown_c {
                    out.push(Hit::of(
                        &r.thermal.slowdown.meta(ids::THERMAL_SLOWDOWN),
                        format!(
                            "GPU at {} \u{b0}C, at or over its slowdown temperature {} \u{b0}C (shutdown at {} \u{b0}C)",
                            num(temp),
                            num(l.slowdown_c),
                            num(l.shutdown_c)
                        ),
                        vec![ev(f, temp, None, Some(l.slowdown_c), ts)],
                    ));
                } else if r.thermal.margin.enabled && temp >= l.slowdown_c - r.thermal.margin.margin_c {
                    out.push(Hit::of(
                        &r.thermal.margin.meta(ids::THERMAL_MARGIN),
                        format!(
                            "GPU at {} \u{b0}C, within {} \u{b0}C of its slowdown temperature {} \u{b0}C",
                            num(temp),
                            num(r.thermal.margin.margin_c),
                            num(l.slowdown_c)
                        ),
                        vec![ev(f, temp, None, Some(l.slowdown_c - r.thermal.margin.margin_c), ts)],
                    ));
                }
            }
        }
    }

    if r.thermal.memory.enabled {
        if let Some(mt) = s.get(DcgmField::MemoryTemp).filter(|t| *t >= r.thermal.memory.max_c) {
            out.push(Hit::of(
                &r.thermal.memory.meta(ids::THERMAL_MEMORY),
                format!(
                    "memory at {} \u{b0}C, at or over {} \u{b0}C",
                    num(mt),
                    num(r.thermal.memory.max_c)
                ),
                vec![ev(
                    DcgmField::MemoryTemp.as_str(),
                    mt,
                    None,
                    Some(r.thermal.memory.max_c),
                    ts,
                )],
            ));
        }
    }

    let bits = s.reasons().unwrap_or(0);
    let reasons = || throttle::names(bits).join(", ");
    let signal = "clock_event_reasons";
    let throttle_rule = |s: &mut GpuState,
                         rule: &crate::rules::SustainedRule,
                         id: &'static str,
                         streak: Streak,
                         holds: bool,
                         what: &str,
                         out: &mut Vec<Hit>| {
        if !rule.enabled {
            return;
        }
        let n = s.streak(streak, holds, ctx.new_row);
        if holds && n >= ctx.sustained(rule.min_evaluations) {
            out.push(Hit::of(
                &rule.meta(id),
                format!(
                    "{what} for {n} evaluation{} (clock-event reasons {bits:#x}: {})",
                    if n == 1 { "" } else { "s" },
                    reasons()
                ),
                vec![ev(signal, bits as f64, None, None, ts)],
            ));
        }
    };
    throttle_rule(
        s,
        &r.throttle.thermal,
        ids::THROTTLE_THERMAL,
        Streak::ThermalThrottle,
        throttle::is_thermal(bits),
        "clocks cut by thermal protection",
        out,
    );
    throttle_rule(
        s,
        &r.throttle.power_brake,
        ids::THROTTLE_POWER_BRAKE,
        Streak::PowerBrake,
        throttle::is_power_brake(bits),
        "hardware power brake asserted: clocks forced low by the system's power-brake signal",
        out,
    );
    throttle_rule(
        s,
        &r.throttle.sw_power_cap,
        ids::THROTTLE_SW_POWER_CAP,
        Streak::SwPowerCap,
        bits & throttle::SW_POWER_CAP != 0,
        "clocks held at the power limit",
        out,
    );

    let rule = &r.power.over_limit;
    if rule.enabled {
        let power = s.get(DcgmField::PowerUsage);
        let limit = s
            .get(DcgmField::PowerMgmtLimit)
            .or_else(|| s.get(DcgmField::EnforcedPowerLimit))
            .filter(|l| *l > 0.0);
        let holds = matches!((power, limit), (Some(p), Some(l)) if p > l * rule.max_ratio);
        let n = s.streak(Streak::PowerOverLimit, holds, ctx.new_row);
        if let (true, Some(p), Some(l)) = (holds, power, limit) {
            if n >= ctx.sustained(rule.min_evaluations) {
                out.push(Hit::of(
                    &rule.meta(ids::POWER_OVER_LIMIT),
                    format!(
                        "drawing {} W, above {} \u{d7} its {} W power limit for {n} evaluations",
                        num(p),
                        num(rule.max_ratio),
                        num(l)
                    ),
                    vec![ev(
                        DcgmField::PowerUsage.as_str(),
                        p,
                        None,
                        Some(l * rule.max_ratio),
                        ts,
                    )],
                ));
            }
        }
    }
}
