//! `llmroute-operator`: read flags, run. Today: `--manifests DIR [--config FILE] --check`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llmroute_operator::check::check;
use llmroute_operator::flags::Flags;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LLMROUTE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    if !flags.check {
        eprintln!("llmroute-operator: serving views over gRPC is not built yet; use --check");
        return ExitCode::from(2);
    }
    let verdict = check(&flags.manifests, flags.config.as_deref());
    print!("{}", verdict.report);
    if verdict.clean { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
