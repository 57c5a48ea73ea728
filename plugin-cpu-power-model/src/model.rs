//! The power model: watts of one unit (a vCPU, a socket, or a socket's
//! TDP) at a CPU utilisation, linear between idle and max or
//! piecewise-linear through points, times how many units the machine has.

/// The TEADS utilisation curve: a CPU's power as a fraction of its TDP at
/// 0, 10, 50 and 100 % utilisation, linear in between. Published by Teads
/// Engineering ("Building an AWS EC2 Carbon Emissions Dataset", 2021) from
/// SPECpower results, and used by Boavizta and the Green Software
/// Foundation's Impact Framework (`teads-curve`).
pub const TEADS_CURVE: [(f64, f64); 4] = [(0.0, 0.12), (0.10, 0.32), (0.50, 0.75), (1.0, 1.02)];

/// The TEADS curve scaled to a TDP, W per socket.
pub fn teads_curve(tdp_w: f64) -> PowerCurve {
    PowerCurve::Points(TEADS_CURVE.iter().map(|&(u, f)| (u, f * tdp_w)).collect())
}

/// What the transform applies: `units` × the curve's watts.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerModel {
    /// Watts of one unit.
    pub curve: PowerCurve,
    /// How many units the machine counts for (vCPUs, sockets, or the
    /// fraction of a socket a virtual machine's vCPUs are).
    pub units: f64,
    /// How it is described in the `model` attribute and the report (no commas).
    pub name: String,
}

impl PowerModel {
    /// The machine's power at utilisation `u` (0–1).
    pub fn power_w(&self, u: f64) -> f64 {
        self.units * self.curve.power_w(u)
    }
}

/// Watts of one unit as a function of utilisation (0–1).
#[derive(Debug, Clone, PartialEq)]
pub enum PowerCurve {
    /// `idle_w + u × (max_w − idle_w)`.
    Linear {
        /// Power at 0 % utilisation.
        idle_w: f64,
        /// Power at 100 %.
        max_w: f64,
    },
    /// Straight lines between (utilisation 0–1, watts) points sorted by
    /// utilisation, the first at 0 and the last at 1.
    Points(Vec<(f64, f64)>),
}

impl PowerCurve {
    /// Power at utilisation `u`, clamped to 0–1.
    pub fn power_w(&self, u: f64) -> f64 {
        let u = if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match self {
            PowerCurve::Linear { idle_w, max_w } => idle_w + u * (max_w - idle_w),
            PowerCurve::Points(points) => {
                let i = points.partition_point(|(x, _)| *x <= u);
                match (points.get(i.wrapping_sub(1)), points.get(i)) {
                    (Some(&(x0, y0)), Some(&(x1, y1))) if x1 > x0 => {
                        y0 + (u - x0) / (x1 - x0) * (y1 - y0)
                    }
                    (Some(&(_, y)), _) | (None, Some(&(_, y))) => y,
                    (None, None) => 0.0,
                }
            }
        }
    }

    /// A short description for the `model` attribute (no commas).
    pub fn describe(&self) -> String {
        match self {
            PowerCurve::Linear { idle_w, max_w } => format!("linear {idle_w}-{max_w} W"),
            PowerCurve::Points(p) => {
                let pts: Vec<String> = p
                    .iter()
                    .map(|(u, w)| format!("{}%:{w}W", u * 100.0))
                    .collect();
                format!("curve {}", pts.join(" "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_teads_curve_is_a_fraction_of_the_tdp() {
        let c = teads_curve(200.0);
        assert_eq!(c.power_w(0.0), 24.0);
        assert_eq!(c.power_w(0.1), 64.0);
        assert!((c.power_w(0.3) - 107.0).abs() < 1e-9);
        assert_eq!(c.power_w(1.0), 204.0);
        let vm = PowerModel {
            curve: c,
            units: 2.0 / 64.0,
            name: "x".into(),
        };
        assert_eq!(vm.power_w(1.0), 204.0 / 32.0);
    }

    #[test]
    fn linear_and_points() {
        let l = PowerCurve::Linear {
            idle_w: 0.74,
            max_w: 3.5,
        };
        assert_eq!(l.power_w(0.0), 0.74);
        assert_eq!(l.power_w(1.0), 3.5);
        assert!((l.power_w(0.25) - 1.43).abs() < 1e-12);
        assert_eq!(l.power_w(2.0), 3.5);
        let c = PowerCurve::Points(vec![(0.0, 10.0), (0.5, 30.0), (1.0, 40.0)]);
        assert_eq!(c.power_w(0.0), 10.0);
        assert_eq!(c.power_w(0.25), 20.0);
        assert_eq!(c.power_w(0.5), 30.0);
        assert_eq!(c.power_w(0.75), 35.0);
        assert_eq!(c.power_w(1.0), 40.0);
        assert_eq!(c.describe(), "curve 0%:10W 50%:30W 100%:40W");
    }
}
