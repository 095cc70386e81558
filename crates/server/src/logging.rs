//! Log output: human-readable text or one JSON object per line, filtered by level or RUST_LOG.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            // The h2 crate (HTTPS listeners speaking HTTP/2) logs every frame at debug: our
            // debug level is about our own events.
            let h2 = if matches!(cfg.level.as_str(), "debug" | "trace") {
                "info"
            } else {
                &cfg.level
            };
            EnvFilter::new(format!("{},h2={h2}", cfg.level))
        });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi && cfg.format == LogFormat::Text);
    match cfg.format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}
