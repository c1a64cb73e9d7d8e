//! Log output of the ringvisor binaries (`ringvisor`, `ringvisor-bench`).

/// Starts `env_logger` on stderr at `warn`, `info` with one `-v`, `debug`
/// with more; `RUST_LOG`, when set, decides instead. No targets, no
/// timestamps.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_target(false)
        .format_timestamp(None)
        .init();
}
