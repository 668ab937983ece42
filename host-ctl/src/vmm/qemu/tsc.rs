//! The host's TSC rate, handed to TCG guests on `microvm`.
//!
//! Under TCG a guest's `rdtsc` reads the host's TSC, so both tick at the
//! same rate. A `microvm` has no HPET and no ACPI PM timer: its kernel can
//! only calibrate the TSC against the PIT, and on a busy host (several pods
//! starting at once) that calibration fails, the kernel marks the TSC
//! unusable and hangs before `/init`. Passing the rate we measured here as
//! `tsc_early_khz=` skips the calibration altogether.

use std::time::Duration;

/// How long each measurement runs. Its error comes from the time between
/// reading the two clocks, which [`sample`] keeps under [`MAX_BRACKET_NS`].
const WINDOW: Duration = Duration::from_millis(5);

/// Measurements taken; the median is used.
const MEASUREMENTS: usize = 3;

/// The largest disagreement between measurements we accept, in parts per
/// million: the tolerance the kernel's own quick PIT calibration allows.
const MAX_SPREAD_PPM: u64 = 500;

/// A TSC reading counts only when the clock readings around it are this
/// close (a vCPU preempted between them would skew it).
const MAX_BRACKET_NS: u128 = 5_000;

/// The host TSC's rate in kHz, when it ticks at a constant rate that can be
/// measured consistently; `None` otherwise (the caller then picks a machine
/// with a reference timer).
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    if !invariant_tsc(&cpuinfo) {
        return None;
    }
    let mut khz = Vec::with_capacity(MEASUREMENTS);
    for _ in 0..MEASUREMENTS {
        khz.push(measure()?);
    }
    agree(&mut khz)
}

/// Whether the first CPU's flags promise a TSC that neither changes rate
/// nor stops.
fn invariant_tsc(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| {
            let flags: Vec<&str> = l.split_whitespace().collect();
            flags.contains(&"constant_tsc") && flags.contains(&"nonstop_tsc")
        })
        .unwrap_or(false)
}

/// The median of the measurements, if they agree.
fn agree(khz: &mut [u64]) -> Option<u64> {
    khz.sort_unstable();
    let (lo, hi) = (*khz.first()?, *khz.last()?);
    if lo == 0 {
        return None;
    }
    let spread = (hi - lo).checked_mul(1_000_000)? / hi;
    (spread <= MAX_SPREAD_PPM).then_some(khz[khz.len() / 2])
}

/// The TSC's rate over one [`WINDOW`], in kHz.
#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u64> {
    let (t0, c0) = sample()?;
    std::thread::sleep(WINDOW);
    let (t1, c1) = sample()?;
    let elapsed_ns = t1.checked_sub(t0).filter(|d| *d > 0)?;
    let cycles = u128::from(c1.checked_sub(c0)?);
    u64::try_from(cycles * 1_000_000 / elapsed_ns).ok()
}

/// A TSC reading and the raw monotonic time at it, in nanoseconds.
#[cfg(target_arch = "x86_64")]
fn sample() -> Option<(u128, u64)> {
    use nix::time::{clock_gettime, ClockId};
    let now = || -> Option<u128> {
        let t = clock_gettime(ClockId::CLOCK_MONOTONIC_RAW).ok()?;
        Some(u128::try_from(t.tv_sec()).ok()? * 1_000_000_000 + u128::try_from(t.tv_nsec()).ok()?)
    };
    for _ in 0..100 {
        let before = now()?;
        // SAFETY: rdtsc reads a counter; it has no memory effects.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let after = now()?;
        if after - before <= MAX_BRACKET_NS {
            return Some((before + (after - before) / 2, tsc));
        }
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_constant_nonstop_tsc() {
        assert!(invariant_tsc(
            "processor : 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc rep_good\n"
        ));
        assert!(!invariant_tsc("flags\t\t: fpu tsc constant_tsc\n"));
        assert!(!invariant_tsc("processor : 0\n"));
    }

    #[test]
    fn measurements_must_agree() {
        assert_eq!(
            agree(&mut [2_445_410, 2_445_306, 2_445_406]),
            Some(2_445_406)
        );
        assert_eq!(agree(&mut [2_445_406, 2_500_000, 2_445_406]), None);
        assert_eq!(agree(&mut [0, 0, 0]), None);
        assert_eq!(agree(&mut []), None);
    }

    #[test]
    fn one_measurement_is_a_real_cpus_rate() {
        // One window, not the agreement of three (which a loaded host may
        // deny, and which `agree` is tested for above): between 100 MHz and
        // 10 GHz wherever the host has a TSC.
        let khz = measure().expect("rdtsc and CLOCK_MONOTONIC_RAW work on x86-64");
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
