//! Decodes the clock-event (throttle) reasons bitmask that DCGM exports as
//! `DCGM_FI_DEV_CLOCKS_EVENT_REASONS` (older exporters: `DCGM_FI_DEV_CLOCK_THROTTLE_REASONS`).
//!
//! Bits as NVML defines them (`nvmlClocksEventReason*`). Which bits are trouble: a busy
//! GPU at its power limit (SW power cap) or an idle one is normal; HW slowdown and the
//! thermal bits mean the board is protecting itself from heat; HW power brake means the
//! system pulled the power-brake line.

/// GPU idle: nothing to run, clocks drop.
pub const GPU_IDLE: u64 = 0x1;
/// Application clocks setting caps the clock.
pub const APPLICATIONS_CLOCKS: u64 = 0x2;
/// Software power cap: draw is at the power limit.
pub const SW_POWER_CAP: u64 = 0x4;
/// Hardware slowdown (thermal or power brake) by a factor of two or more.
pub const HW_SLOWDOWN: u64 = 0x8;
/// Sync boost: clocks held with the other GPUs of a sync-boost group.
pub const SYNC_BOOST: u64 = 0x10;
/// Software thermal slowdown: above the max operating temperature.
pub const SW_THERMAL: u64 = 0x20;
/// Hardware thermal slowdown: the die reached its slowdown temperature.
pub const HW_THERMAL: u64 = 0x40;
/// Hardware power brake: an external signal (PSU, node power) forces low clocks.
pub const HW_POWER_BRAKE: u64 = 0x80;
/// Display clock setting caps the clock.
pub const DISPLAY_CLOCKS: u64 = 0x100;

const NAMES: [(u64, &str); 9] = [
    (GPU_IDLE, "gpu_idle"),
    (APPLICATIONS_CLOCKS, "applications_clocks"),
    (SW_POWER_CAP, "sw_power_cap"),
    (HW_SLOWDOWN, "hw_slowdown"),
    (SYNC_BOOST, "sync_boost"),
    (SW_THERMAL, "sw_thermal"),
    (HW_THERMAL, "hw_thermal"),
    (HW_POWER_BRAKE, "hw_power_brake"),
    (DISPLAY_CLOCKS, "display_clocks"),
];

/// Bits that explain a clock below peers: any power or thermal limit, or a clock cap
/// somebody set on purpose.
pub const EXPLAINS_LOW_CLOCK: u64 = APPLICATIONS_CLOCKS
    | SW_POWER_CAP
    | HW_SLOWDOWN
    | SYNC_BOOST
    | SW_THERMAL
    | HW_THERMAL
    | HW_POWER_BRAKE
    | DISPLAY_CLOCKS;

/// The bitmask as exported (a float) → bits, when it is a whole non-negative number.
pub fn bits(value: f64) -> Option<u64> {
    (value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value < 1.8e19).then_some(value as u64)
}

/// Names of the set bits, e.g. `["sw_power_cap", "hw_slowdown"]`; unknown bits are
/// shown as hex.
pub fn names(bits: u64) -> Vec<String> {
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let known = NAMES.iter().fold(0, |a, (b, _)| a | b);
    if bits & !known != 0 {
        out.push(format!("{:#x}", bits & !known));
    }
    out
}

/// Thermal throttling: HW slowdown, SW thermal or HW thermal, except a HW slowdown that
/// comes with a power brake (then the brake is the cause).
pub fn is_thermal(bits: u64) -> bool {
    bits & (SW_THERMAL | HW_THERMAL) != 0 || (bits & HW_SLOWDOWN != 0 && bits & HW_POWER_BRAKE == 0)
}

pub fn is_power_brake(bits: u64) -> bool {
    bits & HW_POWER_BRAKE != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_documented_bit() {
        assert_eq!(names(0x1ff).len(), 9);
        assert_eq!(names(0x4 | 0x8), vec!["sw_power_cap", "hw_slowdown"]);
        assert_eq!(names(0x200), vec!["0x200"]);
    }

    #[test]
    fn bad_values_are_not_bits() {
        assert_eq!(bits(f64::NAN), None);
        assert_eq!(bits(-1.0), None);
        assert_eq!(bits(1.5), None);
        assert_eq!(bits(136.0), Some(0x88));
    }

    #[test]
    fn power_cap_is_not_thermal_and_brake_slowdown_is_power() {
        assert!(!is_thermal(SW_POWER_CAP));
        assert!(is_thermal(HW_SLOWDOWN | HW_THERMAL));
        assert!(is_thermal(SW_THERMAL));
        assert!(!is_thermal(HW_SLOWDOWN | HW_POWER_BRAKE));
        assert!(is_power_brake(HW_SLOWDOWN | HW_POWER_BRAKE));
    }
}
