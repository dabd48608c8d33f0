//! Writes the CRD YAML of every llmroute kind into the directory given (default `crds`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in llmroute_api::crds::rendered()? {
        std::fs::write(dir.join(file), yaml)?;
    }
    Ok(())
}
