//! A custom agent: the `alumet` crate with the plugins you choose (here
//! procfs, csv and the tutorial's file-sensor), their configuration read
//! from one TOML file, measuring until Ctrl-C or for a given time.
//!
//!     custom-agent [CONFIG] [SECONDS]
//!
//! Every plugin is driven through the same lifecycle as in `alumet-agent`:
//! `init` (check the configuration), `start` (register metrics and
//! elements into the pipeline), then, after the pipeline stopped and every
//! output closed, `stop`.

use std::time::Duration;

use alumet::pipeline::{PipelineBuilder, PipelineConfig};
use alumet::plugin::{ParsedDocument, Plugin, PluginDefinition};
use plugin_csv::CsvPlugin;
use plugin_file_sensor::FileSensorPlugin;
use plugin_procfs::ProcfsPlugin;

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "custom-agent.toml".into());
    let seconds: Option<f64> = args.next().map(|s| s.parse()).transpose()?;

    // One file, a [plugins.NAME] section per plugin; errors say the line.
    let text = std::fs::read_to_string(&path)?;
    let doc = ParsedDocument::parse(&text)?;
    let mut plugins: Vec<(&str, Box<dyn Plugin>)> = vec![
        (
            "procfs",
            Box::new(ProcfsPlugin::init(doc.plugin_section("procfs")?)?),
        ),
        (
            "file-sensor",
            Box::new(FileSensorPlugin::init(doc.plugin_section("file-sensor")?)?),
        ),
        (
            "csv",
            Box::new(CsvPlugin::init(doc.plugin_section("csv")?)?),
        ),
    ];

    // Each plugin adds its sources, transforms and outputs; one that cannot
    // run here says why in one line and the others go on. Then it all runs.
    let mut builder = PipelineBuilder::new(PipelineConfig::default());
    plugins.retain_mut(
        |(name, plugin)| match builder.start_plugin(name, plugin.as_mut()) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("plugin {name} cannot run here: {e}");
                false
            }
        },
    );
    let running = builder.start()?;

    // Until Ctrl-C, or for the time asked.
    running.runtime().block_on(async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs_f64(s)).await,
            None => tokio::signal::ctrl_c().await.unwrap_or_default(),
        }
    });

    // A last poll of every source, every point through to the outputs, then the plugins stop.
    let stats = running.shutdown_and_wait();
    for (name, plugin) in &mut plugins {
        plugin.stop().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    log::info!(
        "{} points measured",
        stats.sources.iter().map(|s| s.points).sum::<u64>()
    );
    Ok(())
}
