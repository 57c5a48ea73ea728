//! `alumet-agent`: the measurement agent. Parses the command line, loads the
//! configuration, and runs, execs, or inspects; the rooms that do it are
//! the library `app_agent` (`lib.rs`).

use app_agent::{agent, cli, config, measure, report, service};

use std::io::Write;

use clap::Parser;

use cli::args::{Cli, Command, ConfigCommand, PluginsCommand};
use config::load::{ConfigFailure, LoadedConfig, Overrides};

/// Exit code for an invalid configuration or command line.
const EXIT_INVALID_CONFIG: i32 = 2;

fn main() {
    let cli = Cli::parse();
    init_logging(&cli);
    std::process::exit(run_cli(cli));
}

fn init_logging(cli: &Cli) {
    let level = match cli.verbose as i32 - cli.quiet as i32 {
        i32::MIN..=-2 => log::LevelFilter::Off,
        -1 => log::LevelFilter::Error,
        0 => match cli.command {
            // Service mode: say what runs. Exec: keep the terminal for the summary.
            None | Some(Command::Run) => log::LevelFilter::Info,
            _ => log::LevelFilter::Warn,
        },
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    // The HTTP library dumps raw requests, Authorization header included, at
    // trace level: never let a token reach the log, whatever -v or RUST_LOG say.
    for target in ["ureq", "ureq_proto", "rustls", "rustls_platform_verifier"] {
        builder.filter_module(target, log::LevelFilter::Info.min(level));
    }
    builder.format(|buf, record| {
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        if record.level() >= log::Level::Debug {
            writeln!(
                buf,
                "alumet-agent: {level}: [{}] {}",
                record.target(),
                record.args()
            )
        } else {
            writeln!(buf, "alumet-agent: {level}: {}", record.args())
        }
    });
    builder.init();
}

fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        set: cli.set.clone(),
        plugins: cli.plugins.clone(),
        output_file: cli.output_file.clone(),
    }
}

fn load(cli: &Cli) -> Result<LoadedConfig, i32> {
    let path = config::load::resolve_path(cli.config.clone());
    config::load::load(&path, &overrides(cli), &config::plugins::all()).map_err(|e| {
        eprintln!("alumet-agent: {e}");
        match e {
            ConfigFailure::Invalid(_) => EXIT_INVALID_CONFIG,
            ConfigFailure::Io(..) => EXIT_INVALID_CONFIG,
        }
    })
}

fn run_cli(cli: Cli) -> i32 {
    match &cli.command {
        None | Some(Command::Run) => {
            let signals = match service::signals::StopSignals::install() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("alumet-agent: cannot install signal handlers: {e}");
                    return 1;
                }
            };
            match load(&cli) {
                Ok(config) => {
                    let path = config::load::resolve_path(cli.config.clone());
                    let all = config::plugins::all();
                    let overrides = overrides(&cli);
                    service::run::run(config, signals, cli.control_socket.as_deref(), || {
                        // A file gone is an error here, not a new default one.
                        std::fs::metadata(&path).map_err(|e| ConfigFailure::Io(path.clone(), e))?;
                        config::load::load(&path, &overrides, &all)
                    })
                }
                Err(code) => code,
            }
        }
        Some(Command::Exec {
            json,
            plot,
            cgroup,
            command,
        }) => {
            let files = measure::session::ReportFiles {
                json: json.clone(),
                plot: plot.clone(),
            };
            let signals = match service::signals::StopSignals::install() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("alumet-agent: cannot install signal handlers: {e}");
                    return 1;
                }
            };
            match (load(&cli), cgroup) {
                (Ok(config), Some(path)) => measure::watch::cgroup(&config, path, files, signals),
                (Ok(config), None) => measure::exec::exec(&config, command.clone(), files, signals),
                (Err(code), _) => code,
            }
        }
        Some(Command::Plot { csv, output }) => report::plot::plot_csv(csv, output.clone()),
        Some(Command::Watch { pid, json, plot }) => {
            let files = measure::session::ReportFiles {
                json: json.clone(),
                plot: plot.clone(),
            };
            let signals = match service::signals::StopSignals::install() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("alumet-agent: cannot install signal handlers: {e}");
                    return 1;
                }
            };
            match load(&cli) {
                Ok(config) => measure::watch::pid(&config, *pid, files, signals),
                Err(code) => code,
            }
        }
        Some(Command::Config(ConfigCommand::Regen)) => regen(&cli),
        Some(Command::Config(ConfigCommand::Show)) => match load(&cli) {
            Ok(config) => show(&config),
            Err(code) => code,
        },
        Some(Command::Config(ConfigCommand::Check))
            if !config::load::resolve_path(cli.config.clone()).exists() =>
        {
            eprintln!(
                "alumet-agent: {}: no such configuration file",
                config::load::resolve_path(cli.config.clone()).display()
            );
            EXIT_INVALID_CONFIG
        }
        Some(Command::Config(ConfigCommand::Check)) => match load(&cli) {
            Ok(config) => check(&config),
            Err(code) => code,
        },
        Some(Command::Plugins(PluginsCommand::List)) => match load(&cli) {
            Ok(config) => list_plugins(&config),
            Err(code) => code,
        },
        Some(Command::Ctl(command)) => match cli
            .control_socket
            .clone()
            .or_else(service::control_socket::default_path)
        {
            Some(path) => service::ctl::run(&path, command),
            None => {
                eprintln!("alumet-agent: ctl: no control socket path: give --control-socket PATH");
                1
            }
        },
        Some(Command::Doctor) => doctor(&cli),
    }
}

/// `doctor` reads the configuration like `plugins list` does, but writes
/// no default file where there is none: it changes nothing.
fn doctor(cli: &Cli) -> i32 {
    let path = config::load::resolve_path(cli.config.clone());
    let all = config::plugins::all();
    let (text, found) = match std::fs::read_to_string(&path) {
        Ok(text) => (text, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match config::load::default_document(&all, None) {
                Ok(text) => (text, false),
                Err(e) => {
                    eprintln!("alumet-agent: cannot generate the default configuration: {e}");
                    return 1;
                }
            }
        }
        Err(e) => {
            eprintln!("alumet-agent: cannot read {}: {e}", path.display());
            return EXIT_INVALID_CONFIG;
        }
    };
    match config::load::load_text(&path, &text, &overrides(cli), &all) {
        Ok(config) => cli::doctor::run(&config, found),
        Err(e) => {
            eprintln!("alumet-agent: {e}");
            EXIT_INVALID_CONFIG
        }
    }
}

fn regen(cli: &Cli) -> i32 {
    let path = config::load::resolve_path(cli.config.clone());
    let all = config::plugins::all();
    if let Some(list) = &cli.plugins {
        let names: Vec<&str> = all.iter().map(|m| m.name).collect();
        for wanted in list {
            if !names.contains(&wanted.as_str()) {
                let d = config::diagnostics::unknown_name(
                    config::diagnostics::Origin::Override(format!("--plugins {}", list.join(","))),
                    "",
                    None,
                    "plugin",
                    wanted,
                    &names,
                );
                eprintln!("alumet-agent: {d}");
                return EXIT_INVALID_CONFIG;
            }
        }
    }
    let text = match config::load::default_document(&all, cli.plugins.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("alumet-agent: cannot generate the default configuration: {e}");
            return 1;
        }
    };
    match std::fs::write(&path, text) {
        Ok(()) => {
            eprintln!(
                "alumet-agent: wrote the default configuration to {}",
                path.display()
            );
            0
        }
        Err(e) => {
            eprintln!("alumet-agent: cannot write {}: {e}", path.display());
            1
        }
    }
}

fn show(config: &LoadedConfig) -> i32 {
    let mut table: toml::Table = match toml::from_str(&config.effective_text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("alumet-agent: {e}");
            return 1;
        }
    };
    config::load::redact(&mut table);
    println!(
        "# effective configuration from {} (secrets redacted)",
        config.path.display()
    );
    match toml::to_string_pretty(&table) {
        Ok(t) => {
            print!("{t}");
            0
        }
        Err(e) => {
            eprintln!("alumet-agent: {e}");
            1
        }
    }
}

/// `config check`: the file parsed and validated (`load`), then every
/// enabled plugin's own checks; nothing starts.
fn check(config: &LoadedConfig) -> i32 {
    match agent::check_plugin_configs(config) {
        Ok(()) => {
            println!("{}: valid", config.path.display());
            0
        }
        Err(e) => {
            eprintln!("alumet-agent: {e}");
            EXIT_INVALID_CONFIG
        }
    }
}

fn list_plugins(config: &LoadedConfig) -> i32 {
    println!(
        "{:<20} {:<8} {:<9} {:<9} DESCRIPTION",
        "PLUGIN", "VERSION", "ENABLED", "CAN RUN"
    );
    let mut reasons = Vec::new();
    for (meta, table, enabled) in &config.plugins {
        let available = match (meta.check_availability)(table.clone()) {
            Ok(()) => "yes".to_owned(),
            Err(e) => {
                reasons.push(format!("  {}: {e}", meta.name));
                if e.is_absent() { "absent" } else { "no" }.to_owned()
            }
        };
        println!(
            "{:<20} {:<8} {:<9} {:<9} {}",
            meta.name,
            meta.version,
            if *enabled { "yes" } else { "no" },
            available,
            meta.description
        );
    }
    if !reasons.is_empty() {
        println!("\nwhy some plugins cannot run here:");
        for r in reasons {
            println!("{r}");
        }
    }
    0
}
