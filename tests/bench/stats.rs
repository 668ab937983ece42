//! Figures: a median of several runs with min and max (and p99 where there
//! are many samples), in one unit, with the target it is held to.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

impl Figure {
    pub fn of(name: &str, unit: &str, samples: &[f64]) -> Figure {
        let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        s.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| -> f64 {
            if s.is_empty() {
                return f64::NAN;
            }
            let i = ((s.len() - 1) as f64 * q).round() as usize;
            s[i.min(s.len() - 1)]
        };
        let median = if s.is_empty() {
            f64::NAN
        } else if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Figure {
            name: name.to_string(),
            unit: unit.to_string(),
            median,
            min: pick(0.0),
            max: pick(1.0),
            p99: (s.len() >= 50).then(|| pick(0.99)),
            runs: s.len(),
            target: None,
            met: None,
        }
    }

    /// Holds the median to `limit` (at most, or at least when `at_least`).
    pub fn target(mut self, limit: f64, at_least: bool) -> Figure {
        let cmp = if at_least { "≥" } else { "≤" };
        self.target = Some(format!("{cmp} {}", fmt(limit)));
        self.met = Some(if at_least {
            self.median >= limit
        } else {
            self.median <= limit
        });
        self
    }
}

pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_extremes() {
        let f = Figure::of("x", "ms", &[3.0, 1.0, 2.0]);
        assert_eq!((f.median, f.min, f.max, f.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Figure::of("x", "ms", &[1.0, 2.0, 3.0, 4.0]).median, 2.5);
        let many: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Figure::of("x", "ms", &many).p99, Some(99.0));
        assert_eq!(
            Figure::of("x", "ms", &[5.0]).target(4.0, false).met,
            Some(false)
        );
    }
}
