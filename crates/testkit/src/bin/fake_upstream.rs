//! `fake-upstream`: fake OpenAI-compatible upstreams for the demo, tests and benchmarks.
//!
//! `fake-upstream --control 127.0.0.1:18100 --instance gpt4o-east=127.0.0.1:18101 ...`
//! Behaviour per instance at start: `--behaviour NAME='{"latency_ms": 5}'`; at run time:
//! `POST http://CONTROL/NAME/behaviour` with a partial JSON object.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use llmroute_testkit::{Behaviour, serve_fakes};

#[derive(Parser, Debug)]
#[command(name = "fake-upstream", about = "Fake OpenAI-compatible upstreams on loopback")]
struct Flags {
    /// Control address (behaviour, stats, reset of every instance).
    #[arg(long, default_value = "127.0.0.1:18100")]
    control: SocketAddr,
    /// An instance: NAME=ADDR. Repeat for more.
    #[arg(long = "instance", required = true)]
    instances: Vec<String>,
    /// Start behaviour of an instance: NAME=JSON (partial). Repeatable.
    #[arg(long = "behaviour")]
    behaviours: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let mut instances = Vec::new();
    for spec in &flags.instances {
        let (name, addr) = spec.split_once('=').context("--instance takes NAME=ADDR")?;
        let mut behaviour = serde_json::to_value(Behaviour::default())?;
        for b in flags.behaviours.iter().filter_map(|b| b.split_once('=')).filter(|(n, _)| *n == name) {
            let update: serde_json::Value =
                serde_json::from_str(b.1).with_context(|| format!("--behaviour {name}: not JSON"))?;
            if let (Some(base), Some(update)) = (behaviour.as_object_mut(), update.as_object()) {
                base.extend(update.clone());
            }
        }
        let behaviour: Behaviour = serde_json::from_value(behaviour).with_context(|| format!("--behaviour {name}"))?;
        instances.push((
            name.to_owned(),
            addr.parse().with_context(|| format!("--instance {name}: bad address"))?,
            behaviour,
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let fakes = serve_fakes(instances, flags.control).await?;
        eprintln!("fake-upstream: control {} instances {:?}", fakes.control, fakes.addrs);
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
