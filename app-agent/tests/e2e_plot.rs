//! Plots, end to end: `exec --plot out.svg` (a RAPL fixture at a known
//! power) and `plot out.csv -o out.png` write files with the expected title,
//! axis labels, legend and window marks; a real browser (headless Chromium,
//! scripts/browser-screenshot.sh) renders both into pictures that are not
//! blank and show the series' colour. Without Chromium the browser part is
//! skipped with a message outside CI (scripts/install-browser.sh installs it;
//! scripts/test.sh runs that).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::RaplFixture;

/// The first series' colour (Okabe–Ito blue).
const SERIES_RGB: [u8; 3] = [0, 114, 178];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Width, height and RGB pixels of a PNG.
fn pixels(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let px = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

/// Asserts a picture shows a plot: mostly white, with dark text and axes and the series' colour.
fn assert_looks_like_a_plot(label: &str, path: &Path) {
    let (w, h, px) = pixels(path);
    assert!(w >= 800 && h >= 500, "{label}: {w}x{h}");
    let n = px.len() as f64;
    let white = px.iter().filter(|p| p.iter().all(|&c| c > 245)).count() as f64;
    let dark = px.iter().filter(|p| p.iter().all(|&c| c < 90)).count() as f64;
    let series = px
        .iter()
        .filter(|p| p.iter().zip(SERIES_RGB).all(|(&a, b)| a.abs_diff(b) < 30))
        .count();
    assert!(
        white / n > 0.5,
        "{label}: background is not white ({white} of {n})"
    );
    assert!(
        dark / n > 0.002,
        "{label}: no text or axes ({dark} dark pixels)"
    );
    assert!(
        series > 500,
        "{label}: the power line is not drawn ({series} pixels)"
    );
}

fn chromium_available() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "CI installs chromium (scripts/install-browser.sh)"
        );
        eprintln!("skipped the browser check: chromium is not installed (bash scripts/install-browser.sh)");
    }
    found
}

fn screenshot(file: &Path, out: &Path) {
    let status = Command::new("bash")
        .arg(repo().join("scripts/browser-screenshot.sh"))
        .arg(file)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "screenshot of {}", file.display());
}

#[test]
fn exec_plot_svg_and_plot_csv_png_render_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rapl = RaplFixture::start(d, 40.0);
    let out = common::agent_command()
        .current_dir(d)
        .args(["--config", d.join("alumet-config.toml").to_str().unwrap()])
        .args(["--plugins", "rapl,procfs,energy-attribution,csv"])
        .args(&rapl.args)
        .args(["--set", "plugins.rapl.interface=\"powercap\""])
        .args(["--set", "plugins.rapl.poll_interval=\"100ms\""])
        .args(["--set", "plugins.rapl.flush_interval=\"100ms\""])
        .args(["--set", "plugins.procfs.system_poll_interval=\"100ms\""])
        .args(["--set", "plugins.procfs.process_poll_interval=\"100ms\""])
        .args(["--set", "plugins.procfs.flush_interval=\"100ms\""])
        .args([
            "--set",
            "plugins.energy-attribution.idle_power_w={ package = 5.0 }",
        ])
        .args(["--output-file", "out.csv"])
        .args(["exec", "--plot", "out.svg", "--", "python3", "-c"])
        .arg("import time; sum(range(10000000)); time.sleep(0.5); sum(range(10000000))")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("plot written to out.svg"), "{stderr}");

    let svg = fs::read_to_string(d.join("out.svg")).unwrap();
    for text in [
        "Power and CPU usage while running &apos;python3 -c",
        "Power (W)",
        "CPU usage, all CPUs (%)",
        "Time since start (s)",
        "CPU package 0",
        "CPU package 0: command (attributed)",
        "command start",
        "command end",
    ] {
        assert!(
            svg.contains(text),
            "the SVG lacks {text:?}; the agent said:\n{stderr}"
        );
    }

    let plot = common::agent_command()
        .current_dir(d)
        .args(["plot", "out.csv", "-o", "out.png"])
        .output()
        .unwrap();
    assert_eq!(plot.status.code(), Some(0), "{plot:?}");
    assert_looks_like_a_plot("out.png as written", &d.join("out.png"));

    if !chromium_available() {
        return;
    }
    screenshot(&d.join("out.svg"), &d.join("svg-shot.png"));
    assert_looks_like_a_plot("out.svg in Chromium", &d.join("svg-shot.png"));
    screenshot(&d.join("out.png"), &d.join("png-shot.png"));
    assert_looks_like_a_plot("out.png in Chromium", &d.join("png-shot.png"));
}

#[test]
fn plot_of_a_file_that_is_not_the_agents_csv_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("other.csv");
    fs::write(&csv, "a,b\n1,2\n").unwrap();
    let out = common::agent_command()
        .arg("plot")
        .arg(&csv)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no `timestamp` column"), "{stderr}");
    let out = common::agent_command()
        .arg("plot")
        .arg(dir.path().join("missing.csv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
