//! What traces cost, measured within one run (`durango bench
//! --toggle-traces-ms`): the closed loop goes on while traces are switched
//! off and on in turn, and each phase's rate and CPU are counted. On this
//! VM the speed moves by more than the cost between runs of their own, in
//! spells of seconds (BENCHMARKS.md, session 23); phases a fraction of a
//! second long, side by side, see the same machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

/// A phase's state and what was counted in it: the rate, and the
/// process's CPU time an orchestration (all its threads: the cost in CPU,
/// where the rate also moves with what waits on what).
struct Phase {
    on: bool,
    per_second: f64,
    cpu_us: f64,
    /// Where its counted part began and ended (`CLOCK_MONOTONIC`, in
    /// nanoseconds, the clock `perf record -k CLOCK_MONOTONIC` stamps its
    /// samples with), and the orchestrations that finished in it: a
    /// profile of the run can be split by phase, the cost of traces found
    /// function by function (BENCHMARKS.md, session 24).
    from_ns: u64,
    to_ns: u64,
    orchestrations: usize,
}

/// The phases of a run, in order (on and off alternate).
pub struct Phases {
    length: Duration,
    phases: Vec<Phase>,
}

/// The CPU time this process has used, user and system, all threads.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given, which is
    // plain integers (zeroed is a valid value).
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The clock a phase's bounds are read on.
fn monotonic_ns() -> u64 {
    crate::trace::clock_ns(libc::CLOCK_MONOTONIC)
}

/// Switches traces on and off every `length`, from on, until more than
/// `last` orchestrations are done (the run winding down), then leaves
/// them on.
pub async fn toggle_traces(length: Duration, done: Arc<AtomicUsize>, last: usize) -> Phases {
    // A phase's first quarter is not counted: orchestrations begun in the
    // other state still finish in it, and the exporter still sends the
    // spans the other state recorded.
    let settle = length / 4;
    let mut phases = Vec::new();
    let mut on = true;
    loop {
        crate::trace::pause(!on);
        tokio::time::sleep(settle).await;
        let (from, from_ns, cpu) = (done.load(Ordering::Relaxed), monotonic_ns(), process_cpu());
        tokio::time::sleep(length - settle).await;
        let (to, to_ns, cpu) = (
            done.load(Ordering::Relaxed),
            monotonic_ns(),
            process_cpu() - cpu,
        );
        if to > last {
            break;
        }
        let finished = (to - from).max(1) as f64;
        phases.push(Phase {
            on,
            per_second: (to - from) as f64 * 1e9 / (to_ns - from_ns).max(1) as f64,
            cpu_us: cpu.as_secs_f64() * 1e6 / finished,
            from_ns,
            to_ns,
            orchestrations: to - from,
        });
        on = !on;
    }
    crate::trace::pause(false);
    Phases { length, phases }
}

/// The median of `values` (None when there are none).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

impl Phases {
    /// Each "on" phase's `measure` over the mean of the "off" phases
    /// either side (a machine speeding up or slowing down through the run
    /// cancels), in order.
    fn ratios(&self, measure: impl Fn(&Phase) -> f64) -> Vec<f64> {
        self.phases
            .windows(3)
            .filter(|w| w[1].on)
            .map(|w| measure(&w[1]) / ((measure(&w[0]) + measure(&w[2])) / 2.0))
            .collect()
    }

    /// The mean of `measure` over the phases in state `on`.
    fn mean(&self, on: bool, measure: impl Fn(&Phase) -> f64) -> Option<f64> {
        let values: Vec<f64> = self
            .phases
            .iter()
            .filter(|p| p.on == on)
            .map(measure)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// A line for people, and the report's `traces_toggled`: the phases'
    /// length; each state's mean rate and CPU an orchestration; the on /
    /// off ratios of the rate with their median, and the median of the CPU's
    /// (null where the run was too short for a phase); and every phase, in
    /// order, with its bounds and orchestrations.
    pub fn report(&self) -> (String, serde_json::Value) {
        let rate = |p: &Phase| p.per_second;
        let cpu = |p: &Phase| p.cpu_us;
        let ratios = self.ratios(rate);
        let (median_rate, median_cpu) = (median(&ratios), median(&self.ratios(cpu)));
        let (on, off) = (self.mean(true, rate), self.mean(false, rate));
        let ms = self.length.as_millis() as u64;
        let line = match (on, off, median_rate, median_cpu) {
            (Some(on), Some(off), Some(median_rate), Some(median_cpu)) => format!(
                "traces toggled every {ms} ms: on {on:.0}/s, off {off:.0}/s; on / off {median_rate:.3}, CPU an orchestration {median_cpu:.3} (medians of {} on phases, each against the off phases either side)",
                ratios.len()
            ),
            _ => format!("traces toggled every {ms} ms: the run was too short to measure"),
        };
        let report = json!({
            "phase_ms": ms,
            "on_per_second": on,
            "off_per_second": off,
            "on_cpu_us": self.mean(true, cpu),
            "off_cpu_us": self.mean(false, cpu),
            "on_phases": ratios.len(),
            "on_off_median": median_rate,
            "on_off": ratios,
            "cpu_on_off_median": median_cpu,
            "phases": self.phases.iter().map(|p| json!({
                "on": p.on,
                "from_ns": p.from_ns,
                "to_ns": p.to_ns,
                "orchestrations": p.orchestrations,
            })).collect::<Vec<_>>(),
        });
        (line, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phases from on, with these rates, each on one taking 1 % more CPU
    /// an orchestration than the off ones.
    fn phases(rates: &[f64]) -> Phases {
        Phases {
            length: Duration::from_millis(500),
            phases: rates
                .iter()
                .enumerate()
                .map(|(i, &per_second)| Phase {
                    on: i % 2 == 0,
                    per_second,
                    cpu_us: if i % 2 == 0 { 101.0 } else { 100.0 },
                    from_ns: i as u64 * 500_000_000,
                    to_ns: (i as u64 + 1) * 500_000_000,
                    orchestrations: per_second as usize / 2,
                })
                .collect(),
        }
    }

    #[test]
    fn an_on_phase_is_set_against_the_off_phases_either_side() {
        // A machine slowing down evenly: on costs exactly 2 %.
        let rates = [
            98.0,
            99.0,
            98.0 * 0.98,
            97.0,
            96.0 * 0.98,
            95.0,
            94.0 * 0.98,
        ];
        let (line, report) = phases(&rates).report();
        assert!(
            line.contains("on / off 0.980, CPU an orchestration 1.010"),
            "{line}"
        );
        let ratios: Vec<f64> = serde_json::from_value(report["on_off"].clone()).unwrap();
        assert_eq!(ratios.len(), 2, "{report}");
        for ratio in ratios {
            assert!((ratio - 0.98).abs() < 1e-9, "{report}");
        }
        assert!((report["on_off_median"].as_f64().unwrap() - 0.98).abs() < 1e-9);
        assert_eq!(report["off_per_second"], json!(97.0));
        assert!((report["cpu_on_off_median"].as_f64().unwrap() - 1.01).abs() < 1e-9);
        assert_eq!(
            (report["on_cpu_us"].clone(), report["off_cpu_us"].clone()),
            (json!(101.0), json!(100.0))
        );
        assert_eq!(
            report["phases"][1],
            json!({"on": false, "from_ns": 500_000_000u64, "to_ns": 1_000_000_000u64, "orchestrations": 49})
        );
        assert_eq!(report["phases"].as_array().unwrap().len(), rates.len());
    }

    #[test]
    fn a_run_too_short_for_a_phase_reports_nothing_measured() {
        let (line, report) = phases(&[]).report();
        assert!(line.contains("too short"), "{line}");
        assert_eq!(report["on_phases"], json!(0));
        assert!(report["on_off_median"].is_null(), "{report}");
        assert!(report["on_per_second"].is_null(), "{report}");
        assert!(report["cpu_on_off_median"].is_null(), "{report}");
    }
}
