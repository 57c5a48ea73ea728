//! The service (`run`): measuring until a signal, SIGHUP reloads that
//! restart only what changed (`reload`), stop signals (`signals`, which
//! `exec` also uses), sd_notify (`notify`), the control socket, its
//! protocol and its client (`control_socket`, `control_request`, `ctl`).

pub mod control_request;
pub mod control_socket;
pub mod ctl;
pub mod notify;
pub mod reload;
pub mod run;
pub mod signals;
