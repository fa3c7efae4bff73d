//! What traces cost, measured within one run (`durango bench
//! --toggle-traces-ms`): the closed loop goes on while traces are switched
//! off and on in turn, and each phase's rate is counted. On this VM the
//! speed moves by more than the cost between runs of their own, in spells
//! of seconds (BENCHMARKS.md, session 23); phases a fraction of a second
//! long, side by side, see the same machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

/// A phase's state and the rate counted in it.
struct Phase {
    on: bool,
    per_second: f64,
}

/// The phases of a run, in order (on and off alternate).
pub struct Phases {
    length: Duration,
    phases: Vec<Phase>,
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
        let (from, start) = (done.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(length - settle).await;
        let (to, end) = (done.load(Ordering::Relaxed), Instant::now());
        if to > last {
            break;
        }
        let per_second = (to - from) as f64 / (end - start).as_secs_f64();
        phases.push(Phase { on, per_second });
        on = !on;
    }
    crate::trace::pause(false);
    Phases { length, phases }
}

impl Phases {
    /// Each "on" phase's rate over the mean of the "off" phases either
    /// side (a machine speeding up or slowing down through the run
    /// cancels), in order.
    fn ratios(&self) -> Vec<f64> {
        self.phases
            .windows(3)
            .filter(|w| w[1].on)
            .map(|w| w[1].per_second / ((w[0].per_second + w[2].per_second) / 2.0))
            .collect()
    }

    /// The mean rate of the phases in state `on`.
    fn mean_rate(&self, on: bool) -> Option<f64> {
        let rates: Vec<f64> = self
            .phases
            .iter()
            .filter(|p| p.on == on)
            .map(|p| p.per_second)
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
    }

    /// A line for people, and the report's `traces_toggled`: the phases'
    /// length, each state's mean rate, and the on / off ratios with their
    /// median (null where the run was too short for a phase).
    pub fn report(&self) -> (String, serde_json::Value) {
        let ratios = self.ratios();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let median = (!sorted.is_empty()).then(|| sorted[sorted.len() / 2]);
        let (on, off) = (self.mean_rate(true), self.mean_rate(false));
        let ms = self.length.as_millis() as u64;
        let line = match (on, off, median) {
            (Some(on), Some(off), Some(median)) => format!(
                "traces toggled every {ms} ms: on {on:.0}/s, off {off:.0}/s; on / off {median:.3} (the median of {} on phases, each against the off phases either side)",
                ratios.len()
            ),
            _ => format!("traces toggled every {ms} ms: the run was too short to measure"),
        };
        let report = json!({
            "phase_ms": ms,
            "on_per_second": on,
            "off_per_second": off,
            "on_phases": ratios.len(),
            "on_off_median": median,
            "on_off": ratios,
        });
        (line, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(rates: &[f64]) -> Phases {
        Phases {
            length: Duration::from_millis(500),
            phases: rates
                .iter()
                .enumerate()
                .map(|(i, &per_second)| Phase {
                    on: i % 2 == 0,
                    per_second,
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
        assert!(line.contains("on / off 0.980"), "{line}");
        let ratios: Vec<f64> = serde_json::from_value(report["on_off"].clone()).unwrap();
        assert_eq!(ratios.len(), 2, "{report}");
        for ratio in ratios {
            assert!((ratio - 0.98).abs() < 1e-9, "{report}");
        }
        assert!((report["on_off_median"].as_f64().unwrap() - 0.98).abs() < 1e-9);
        assert_eq!(report["off_per_second"], json!(97.0));
    }

    #[test]
    fn a_run_too_short_for_a_phase_reports_nothing_measured() {
        let (line, report) = phases(&[]).report();
        assert!(line.contains("too short"), "{line}");
        assert_eq!(report["on_phases"], json!(0));
        assert!(report["on_off_median"].is_null(), "{report}");
        assert!(report["on_per_second"].is_null(), "{report}");
    }
}
