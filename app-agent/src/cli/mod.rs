//! The command line: its clap definition (`args`, also compiled into
//! `alumet-agent-gen` for man pages and completions) and `doctor`, which
//! only reads and says what to fix.

pub mod args;
pub mod doctor;
