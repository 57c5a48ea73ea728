//! Plots of a measurement: `alumet-agent exec --plot FILE` and
//! `alumet-agent plot CSV [-o FILE]`. Both gather the same [`data::PlotData`]
//! (from the pipeline's points, or from the rows of a CSV the agent wrote)
//! and draw it with [`render`].

pub mod data;
pub mod render;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use alumet::measurement::Resource;

use data::{Consumer, PlotData, Sample, MAX_POINTS};

/// Draws `data` into `path` (SVG, or PNG by extension).
pub fn write(data: &PlotData, path: &Path) -> Result<(), String> {
    render::write(&data.prepare(MAX_POINTS), path)
}

/// `alumet-agent plot CSV [-o FILE]`: returns the exit code.
pub fn plot_csv(csv: &Path, output: Option<PathBuf>) -> i32 {
    let output = output.unwrap_or_else(|| csv.with_extension("svg"));
    let data = match read_csv(csv) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("alumet-agent: {e}");
            return 1;
        }
    };
    if data.is_empty() {
        eprintln!(
            "alumet-agent: {} holds no energy or cpu_time rows to plot",
            csv.display()
        );
        return 1;
    }
    match write(&data, &output) {
        Ok(()) => {
            eprintln!("alumet-agent: wrote {}", output.display());
            0
        }
        Err(e) => {
            eprintln!("alumet-agent: {e}");
            1
        }
    }
}

/// The resource a CSV row names (kinds as `Resource::kind()` writes them).
fn resource_of(kind: &str, id: &str) -> Resource {
    let number = || id.parse::<u32>().ok();
    match (kind, number()) {
        ("local_machine", _) => Resource::LocalMachine,
        ("cpu_package", Some(id)) => Resource::CpuPackage { id },
        ("cpu_core", Some(id)) => Resource::CpuCore { id },
        ("dram", Some(pkg_id)) => Resource::Dram { pkg_id },
        ("gpu", _) => Resource::Gpu {
            bus_id: Cow::Owned(id.to_owned()),
        },
        _ => Resource::Custom {
            kind: Cow::Owned(kind.to_owned()),
            id: Cow::Owned(id.to_owned()),
        },
    }
}

/// The value of `key` in an `attributes` column (`k=v;k=v`; a backslash escapes the next character).
fn attribute_of(column: &str, key: &str) -> Option<String> {
    let mut chars = column.chars();
    loop {
        // One pair: the key up to the first unescaped `=`, the value up to `;`.
        let (mut k, mut v, mut in_value) = (String::new(), String::new(), false);
        let mut ended = true;
        while let Some(c) = chars.next() {
            let target = if in_value { &mut v } else { &mut k };
            match c {
                '\\' => target.extend(chars.next()),
                '=' if !in_value => in_value = true,
                ';' => {
                    ended = false;
                    break;
                }
                other => target.push(other),
            }
        }
        if in_value && k == key {
            return Some(v);
        }
        if ended {
            return None;
        }
    }
}

/// Whether a consumer of a CSV row is the command of an `exec`: its cgroup
/// is named `alumet-exec-<pid>` (the process tree is not recognisable in a CSV).
fn consumer_of(kind: &str, id: &str) -> Consumer {
    match kind {
        "local_machine" => Consumer::Machine,
        "cgroup"
            if id
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("alumet-exec-")) =>
        {
            Consumer::Command
        }
        _ => Consumer::Other,
    }
}

/// Reads a CSV written by the csv plugin (either timestamp format, extra attribute columns allowed).
pub fn read_csv(path: &Path) -> Result<PlotData, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let needed = [
        "timestamp",
        "metric",
        "value",
        "resource_kind",
        "resource_id",
        "consumer_kind",
        "consumer_id",
        "attributes",
    ];
    let mut at = [0usize; 8];
    for (i, name) in needed.iter().enumerate() {
        at[i] = column(name).ok_or_else(|| {
            format!(
                "{}: no `{name}` column; is it a CSV the agent wrote? (header: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(",")
            )
        })?;
    }
    let [t_col, metric_col, value_col, rk_col, ri_col, ck_col, ci_col, attr_col] = at;
    let extra: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .skip(attr_col + 1)
        .map(|(i, h)| (i, h.to_owned()))
        .collect();
    let mut data = PlotData::titled(format!(
        "Power over time: {}",
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    ));
    let mut skipped = 0u64;
    for (index, record) in reader.records().enumerate() {
        let Ok(r) = record else {
            skipped += 1;
            continue;
        };
        let field = |i: usize| r.get(i).unwrap_or("");
        let (Some(t_ns), Ok(value)) = (
            // unix_ns (an integer), or RFC 3339.
            field(t_col)
                .parse::<u64>()
                .ok()
                .or_else(|| plugin_energy_to_carbon::intensity::parse_timestamp(field(t_col))),
            field(value_col).parse::<f64>(),
        ) else {
            skipped += 1;
            if skipped.is_power_of_two() {
                log::warn!(
                    "{}: line {}: unreadable timestamp or value, skipped",
                    path.display(),
                    index + 2
                );
            }
            continue;
        };
        let attrs = field(attr_col);
        let attr = |key: &str| -> Option<String> {
            attribute_of(attrs, key).or_else(|| {
                extra
                    .iter()
                    .find(|(_, h)| h == key)
                    .and_then(|(i, _)| r.get(*i))
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            })
        };
        let resource = resource_of(field(rk_col), field(ri_col));
        let domain = attr("domain");
        let state = attr("state");
        data.add(&Sample {
            t_ns,
            metric: field(metric_col),
            value,
            resource: &resource,
            consumer: consumer_of(field(ck_col), field(ci_col)),
            domain: domain.as_deref(),
            estimated: attr("estimated").as_deref() == Some("true"),
            state: state.as_deref(),
        });
    }
    if skipped > 0 {
        log::warn!("{}: {skipped} unreadable rows skipped", path.display());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_with_escapes() {
        let col = r"domain=package;exe=a\;b;model=x\=y";
        assert_eq!(attribute_of(col, "domain").as_deref(), Some("package"));
        assert_eq!(attribute_of(col, "exe").as_deref(), Some("a;b"));
        assert_eq!(attribute_of(col, "model").as_deref(), Some("x=y"));
        assert_eq!(attribute_of(col, "none"), None);
        assert_eq!(
            consumer_of("cgroup", "/user.slice/alumet-exec-42"),
            Consumer::Command
        );
        assert_eq!(consumer_of("cgroup", "/user.slice"), Consumer::Other);
    }
}
