//! `llmroute-sidecar`: read flags, run. Exit status 2 for a configuration error (flags,
//! routing config, files named by flags), 1 for any other failure.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llmroute_sidecar::{app, flags::Flags};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let spec = std::env::var_os("LLMROUTE_LOG").and_then(|v| v.into_string().ok());
    let stderr =
        tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
    tracing_subscriber::registry().with(stderr.with_filter(llmroute_sidecar::logging::filter(spec.as_deref()))).init();
    let flags = Flags::parse();
    let runtime = match flags.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n as usize).enable_all().build(),
    };
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| rt.block_on(app::run(flags)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmroute-sidecar: {e:#}");
            if e.is::<app::ConfigurationError>() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
