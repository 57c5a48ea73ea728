//! The fleet artefacts of the agent live beside this crate: `image/` (the
//! container image's build), `helm/` (the chart and the manifests rendered
//! from it), `monitoring/` (Grafana dashboards, Prometheus rules). This
//! crate holds no code of the agent: its tests check those artefacts with
//! the real tools, as a user's cluster would.
