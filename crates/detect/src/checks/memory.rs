//! Memory rules: ECC (corrected rate, uncorrectable), row remapping (pending, failed,
//! rows used) and retired pages.

use super::{human_span, num, Ctx};
use crate::hit::{ev, Hit};
use crate::rules::ids;
use crate::state::GpuState;
use gpuwarden_model::DcgmField;

pub fn check(s: &GpuState, ctx: &Ctx<'_>, out: &mut Vec<Hit>) {
    let r = ctx.rules;
    let c = &s.counters;

    if r.ecc.sbe_rate.enabled {
        if let Some(i) = c.sbe.increase() {
            if i.amount > r.ecc.sbe_rate.max_per_hour {
                let f = DcgmField::EccSbeVolTotal;
                out.push(Hit::of(
                    &r.ecc.sbe_rate.meta(ids::ECC_SBE_RATE),
                    format!(
                        "{} corrected ECC errors in the last {} ({f} {}\u{2192}{}), above {} per hour",
                        num(i.amount),
                        human_span(i.span_ms),
                        num(i.from_raw),
                        num(i.to_raw),
                        num(r.ecc.sbe_rate.max_per_hour)
                    ),
                    vec![ev(
                        f.as_str(),
                        i.to_raw,
                        Some(i.from_raw),
                        Some(r.ecc.sbe_rate.max_per_hour),
                        i.ts_ms,
                    )],
                ));
            }
        }
    }

    if r.ecc.dbe.enabled {
        if let Some(i) = c.dbe.increase() {
            if i.amount > 0.0 {
                let f = DcgmField::EccDbeVolTotal;
                let what = if i.amount == 1.0 { "error" } else { "errors" };
                out.push(Hit::of(
                    &r.ecc.dbe.meta(ids::ECC_DBE),
                    format!(
                        "{} uncorrectable ECC {what} in the last {} ({f} {}\u{2192}{})",
                        num(i.amount),
                        if r.ecc.dbe.window_minutes == 60 {
                            "hour".to_string()
                        } else {
                            human_span(i64::from(r.ecc.dbe.window_minutes) * 60_000)
                        },
                        num(i.from_raw),
                        num(i.to_raw)
                    ),
                    vec![ev(f.as_str(), i.to_raw, Some(i.from_raw), Some(0.0), i.ts_ms)],
                ));
            }
        }
    }

    let ts = s.last_row_ms.unwrap_or(0);
    let flag = |f: DcgmField| s.get(f).is_some_and(|v| v >= 0.5);
    if r.remap.pending.enabled && flag(DcgmField::RowRemapPending) {
        out.push(Hit::of(
            &r.remap.pending.meta(ids::REMAP_PENDING),
            "a row remap is pending: reset the GPU to apply the spare row (DCGM_FI_DEV_ROW_REMAP_PENDING = 1)".into(),
            vec![ev(DcgmField::RowRemapPending.as_str(), 1.0, None, Some(0.0), ts)],
        ));
    }
    if r.remap.failure.enabled && flag(DcgmField::RowRemapFailure) {
        out.push(Hit::of(
            &r.remap.failure.meta(ids::REMAP_FAILURE),
            "row remapping failed: the memory has no spare row left or the remapper failed (DCGM_FI_DEV_ROW_REMAP_FAILURE = 1)"
                .into(),
            vec![ev(DcgmField::RowRemapFailure.as_str(), 1.0, None, Some(0.0), ts)],
        ));
    }
    for (rule, id, window, field, what) in [
        (
            &r.remap.uncorrectable_rows,
            ids::REMAP_UNCORRECTABLE_ROWS,
            &c.uncorrectable_rows,
            DcgmField::UncorrectableRemappedRows,
            "uncorrectable",
        ),
        (
            &r.remap.correctable_rows,
            ids::REMAP_CORRECTABLE_ROWS,
            &c.correctable_rows,
            DcgmField::CorrectableRemappedRows,
            "correctable",
        ),
    ] {
        if !rule.enabled {
            continue;
        }
        if let Some(i) = window.increase() {
            if i.amount > 0.0 {
                out.push(Hit::of(
                    &rule.meta(id),
                    format!(
                        "{} rows remapped for {what} errors in the last {} ({field} {}\u{2192}{})",
                        num(i.amount),
                        human_span(i.span_ms),
                        num(i.from_raw),
                        num(i.to_raw)
                    ),
                    vec![ev(field.as_str(), i.to_raw, Some(i.from_raw), None, i.ts_ms)],
                ));
            }
        }
    }

    if r.retired.pending.enabled {
        if let Some(p) = s.get(DcgmField::RetiredPending).filter(|v| *v > 0.0) {
            out.push(Hit::of(
                &r.retired.pending.meta(ids::RETIRED_PENDING),
                format!(
                    "{} pages waiting to be retired: reset the GPU to retire them (DCGM_FI_DEV_RETIRED_PENDING)",
                    num(p)
                ),
                vec![ev(DcgmField::RetiredPending.as_str(), p, None, Some(0.0), ts)],
            ));
        }
    }
    if r.retired.total.enabled {
        let sbe = s.get(DcgmField::RetiredSbe);
        let dbe = s.get(DcgmField::RetiredDbe);
        if sbe.is_some() || dbe.is_some() {
            let total = sbe.unwrap_or(0.0).max(0.0) + dbe.unwrap_or(0.0).max(0.0);
            if total > r.retired.total.max_pages {
                out.push(Hit::of(
                    &r.retired.total.meta(ids::RETIRED_TOTAL),
                    format!(
                        "{} retired pages ({} for single-bit, {} for double-bit errors), above {}",
                        num(total),
                        num(sbe.unwrap_or(0.0)),
                        num(dbe.unwrap_or(0.0)),
                        num(r.retired.total.max_pages)
                    ),
                    vec![ev(
                        "DCGM_FI_DEV_RETIRED_SBE+DBE",
                        total,
                        None,
                        Some(r.retired.total.max_pages),
                        ts,
                    )],
                ));
            }
        }
    }
}
