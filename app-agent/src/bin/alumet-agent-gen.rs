//! `alumet-agent-gen`: writes the man pages and the shell completions of
//! `alumet-agent` from its clap definition (the same `cli.rs`), so that they
//! always describe the binary they ship with. `scripts/package-deb.sh` runs
//! it at package-build time; it is not packaged.
//!
//!     alumet-agent-gen man DIR           alumet-agent.1 and one page per subcommand
//!     alumet-agent-gen completions DIR   bash, zsh and fish

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

// The agent's command line, compiled here too: this binary only reads its
// definition, never the parsed values.
#[allow(dead_code)]
#[path = "../cli/args.rs"]
mod cli;

use cli::Cli;

/// The program name, as installed (the completions' command).
const BIN: &str = "alumet-agent";

/// The shells we ship completions for and the file name each one's
/// completion directory expects (bash-completion loads `NAME`, zsh `_NAME`,
/// fish `NAME.fish`).
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "alumet-agent"),
    (Shell::Zsh, "_alumet-agent"),
    (Shell::Fish, "alumet-agent.fish"),
];

/// Creates `DIR/NAME`, lets `fill` write it, and says what happened.
fn write_file(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> i32 {
    let path = dir.join(name);
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        let mut out = BufWriter::new(File::create(&path)?);
        fill(&mut out)?;
        out.flush()
    });
    match result {
        Ok(()) => {
            eprintln!("alumet-agent-gen: wrote {}", path.display());
            0
        }
        Err(e) => {
            eprintln!("alumet-agent-gen: cannot write {}: {e}", path.display());
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.as_slice() {
        [what, dir] if what == "man" => man_pages(Path::new(dir)),
        [what, dir] if what == "completions" => completions(Path::new(dir)),
        _ => {
            eprintln!("usage: alumet-agent-gen man DIR | alumet-agent-gen completions DIR");
            2
        }
    };
    std::process::exit(code);
}

/// Writes `DIR/alumet-agent.1` and one page per subcommand
/// (`alumet-agent-exec.1`, `alumet-agent-config-regen.1`, ...), which the
/// main page's SUBCOMMANDS section refers to, as git's pages do.
fn man_pages(dir: &Path) -> i32 {
    let result =
        std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(Cli::command(), dir));
    match result {
        Ok(()) => {
            eprintln!(
                "alumet-agent-gen: wrote the man pages into {}",
                dir.display()
            );
            0
        }
        Err(e) => {
            eprintln!(
                "alumet-agent-gen: cannot write the man pages into {}: {e}",
                dir.display()
            );
            1
        }
    }
}

/// Writes the bash, zsh and fish completions into `DIR`.
fn completions(dir: &Path) -> i32 {
    for (shell, name) in COMPLETIONS {
        let code = write_file(dir, name, |out| {
            clap_complete::generate(shell, &mut Cli::command(), BIN, out);
            Ok(())
        });
        if code != 0 {
            return code;
        }
    }
    0
}
