//! `llmroute-operator`: read flags, run (`--check`: one verdict, then exit).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llmroute_operator::check::check;
use llmroute_operator::flags::Flags;
use llmroute_operator::serve;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LLMROUTE_LOG").unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    if flags.check {
        let Some(manifests) = &flags.manifests else { return ExitCode::from(2) };
        let verdict = check(manifests, flags.config.as_deref());
        print!("{}", verdict.report);
        return if verdict.clean { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(serve::run(flags)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmroute-operator: {e:#}");
            if e.is::<serve::ConfigurationError>() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
