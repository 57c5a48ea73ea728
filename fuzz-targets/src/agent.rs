//! What reaches the agent itself: the whole configuration file as the
//! agent loads it (its `[agent]` table and ranges, every plugin's section,
//! the diagnostics), and a line sent to the control socket.

use std::path::Path;

use app_agent::config::load::{load_text, Overrides};
use app_agent::service::control_request;

/// Most bytes of one error message: a value of any length is quoted cut
/// short (`alumet::limits::shown`), so that a mistake never floods a log.
const MESSAGE_MAX_BYTES: usize = 16 * 1024;

/// A whole configuration file, loaded as `run` loads it (with every
/// plugin), then each enabled plugin's section validated as `config check`
/// does; an error is an answer, of bounded length.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let plugins = app_agent::config::plugins::all();
    let path = Path::new("fuzz/alumet-config.toml");
    match load_text(path, text, &Overrides::default(), &plugins) {
        Ok(config) => {
            if let Err(message) = app_agent::agent::check_plugin_configs(&config) {
                assert!(
                    message.len() <= MESSAGE_MAX_BYTES,
                    "a plugin's error of {} bytes",
                    message.len()
                );
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.len() <= MESSAGE_MAX_BYTES,
                "a configuration error of {} bytes",
                message.len()
            );
        }
    }
}

/// A request line of the control socket: parsed, or refused in a short
/// message; a request never runs anything here.
pub fn control_request(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = control_request::parse(line) {
        assert!(
            message.len() <= 1024,
            "a refusal of {} bytes",
            message.len()
        );
    }
}
