//! Command-line interface.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  alumet-agent                                   run with ./alumet-config.toml (created if absent)
  alumet-agent --config /etc/alumet/alumet-config.toml run
  alumet-agent exec -- ./my-benchmark --size 10  measure one program, print a summary
  alumet-agent exec --cgroup /system.slice/slurmstepd.scope/job_42   measure a running job
  alumet-agent watch --pid 4242                  measure a running process tree until it exits
  alumet-agent --plugins procfs,csv --output-file out.csv run
  alumet-agent --set 'plugins.rapl.poll_interval=\"10ms\"' run
  alumet-agent config regen                      write the default configuration
  alumet-agent plugins list                      what is built in, enabled, and able to run here
  alumet-agent doctor                            what keeps a plugin from running as you, and the command that fixes it";

/// Alumet: measures the energy of CPUs (RAPL) and GPUs (NVML) and the
/// activity of the system and its processes, and writes it to CSV or InfluxDB.
#[derive(Debug, Parser)]
#[command(name = "alumet-agent", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Configuration file [default: $ALUMET_CONFIG, else ./alumet-config.toml, created with defaults if absent].
    #[arg(long, global = true, env = "ALUMET_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Enable exactly these plugins (comma-separated), whatever the file says.
    #[arg(long, global = true, value_delimiter = ',', value_name = "NAMES")]
    pub plugins: Option<Vec<String>>,

    /// Override one configuration key with a TOML value; repeatable.
    /// Example: --set plugins.csv.output_path="out.csv"
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// Write the CSV output to this file (enables the csv plugin).
    #[arg(long, global = true, value_name = "PATH")]
    pub output_file: Option<PathBuf>,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q: errors only, -qq: nothing).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,

    /// The control socket of `run` (and the one `ctl` talks to)
    /// [default: $RUNTIME_DIRECTORY/control.sock, else /run/alumet/control.sock as root, else $XDG_RUNTIME_DIR/alumet/control.sock].
    #[arg(
        long,
        global = true,
        env = "ALUMET_CONTROL_SOCKET",
        value_name = "PATH"
    )]
    pub control_socket: Option<PathBuf>,

    /// What to do [default: run].
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure until SIGINT or SIGTERM, then flush everything and exit 0;
    /// SIGHUP reloads the configuration (the plugins whose section changed
    /// restart, the others run on) and reopens the output files.
    #[command(after_help = "Example:\n  alumet-agent --config /etc/alumet/alumet-config.toml run")]
    Run,
    /// Measure while a command runs, print a summary on stderr, exit with its exit code.
    #[command(
        after_help = "Example:\n  alumet-agent exec --json summary.json -- ./my-benchmark --size 10"
    )]
    Exec {
        /// Also write the summary as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Also draw power over time per energy domain (the command's share
        /// shaded) and CPU usage into this file: SVG, or PNG for a .png name.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Measure this existing cgroup (path in the hierarchy, e.g.
        /// /system.slice/slurmstepd.scope/job_42) instead of starting a
        /// command, until it is removed or the agent gets SIGINT/SIGTERM.
        #[arg(long, value_name = "PATH", conflicts_with = "command")]
        cgroup: Option<String>,
        /// The command and its arguments.
        #[arg(
            required_unless_present = "cgroup",
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Measure a running process and its descendants until it exits, then print a summary.
    #[command(after_help = "Example:\n  alumet-agent watch --pid 4242 --json summary.json")]
    Watch {
        /// The process to measure.
        #[arg(long, value_name = "PID")]
        pid: u32,
        /// Also write the summary as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Also draw power and CPU usage over time into this file (SVG, or PNG).
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
    },
    /// Draw power per energy domain and CPU usage over time from a CSV the agent wrote.
    #[command(after_help = "Example:\n  alumet-agent plot out.csv -o out.png")]
    Plot {
        /// The CSV file (written by the csv plugin, either timestamp format).
        #[arg(value_name = "CSV")]
        csv: PathBuf,
        /// The picture: SVG, or PNG for a .png name (default: the CSV's name with .svg).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the built-in plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// For the current user: which plugins can run, and for each that
    /// cannot, the exact command that would fix it. Changes nothing.
    #[command(
        after_help = "Example:\n  alumet-agent doctor\n  alumet-agent --set 'plugins.rapl.sysfs_root=\"/host/sys\"' doctor"
    )]
    Doctor,
    /// Ask a running agent (`run`) what it does, or tell it what to do, through its control socket.
    #[command(subcommand)]
    Ctl(CtlCommand),
}

/// `ctl` subcommands. SOURCE: a name as `ctl status` prints it
/// (`plugin/source`); `*` and `?` match any run of characters / any one.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Counters per source and output: polls, points, missed ticks, errors, retries, drops.
    #[command(after_help = "Example:\n  alumet-agent ctl status --json")]
    Status {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop polling sources until `resume`.
    #[command(after_help = "Example:\n  alumet-agent ctl pause 'procfs/*'")]
    Pause {
        /// Source name or glob.
        source: String,
    },
    /// Poll paused sources again.
    #[command(after_help = "Example:\n  alumet-agent ctl resume 'procfs/*'")]
    Resume {
        /// Source name or glob.
        source: String,
    },
    /// Change the poll interval of sources (until their plugin restarts: a
    /// reload that changes its section, or the agent's restart).
    #[command(after_help = "Example:\n  alumet-agent ctl set-interval procfs/system 100ms")]
    SetInterval {
        /// Source name or glob.
        source: String,
        /// The new interval, e.g. 100ms, 2s.
        interval: String,
    },
    /// Poll sources now (default: all).
    #[command(after_help = "Example:\n  alumet-agent ctl trigger")]
    Trigger {
        /// Source name or glob.
        source: Option<String>,
    },
    /// Reload the configuration (as SIGHUP does) and wait for the outcome: exit 1 if the new one was refused.
    #[command(after_help = "Example:\n  alumet-agent ctl reload")]
    Reload,
    /// Flush every output and reopen its files (a CSV file renamed by logrotate is left complete and a new one starts), without reading the configuration again.
    #[command(after_help = "Example (logrotate's postrotate):\n  alumet-agent ctl reopen")]
    Reopen,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write the default configuration to the config path (with --plugins: only those enabled).
    #[command(
        after_help = "Example:\n  alumet-agent --config my.toml --plugins procfs,csv config regen"
    )]
    Regen,
    /// Print the effective configuration (file + overrides), secrets redacted.
    #[command(after_help = "Example:\n  alumet-agent --set plugins.csv.append=true config show")]
    Show,
    /// Validate the configuration without running: exit 0, or 2 with the diagnostics.
    #[command(
        after_help = "Example:\n  alumet-agent --config /etc/alumet/alumet-config.toml config check"
    )]
    Check,
}

/// `plugins` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every built-in plugin, whether it is enabled, and whether it can run here.
    #[command(after_help = "Example:\n  alumet-agent plugins list")]
    List,
}
