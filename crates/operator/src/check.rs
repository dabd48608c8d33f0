//! `--check`: one compile, one line per object, the config's verdict, an exit code.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use llmroute_manifests::{ManifestDir, OpenError};
use llmroute_snapshot::compile;

/// What a check found: the report to print and whether everything was accepted.
#[derive(Debug)]
pub struct Verdict {
    /// Tab-separated lines: a header, one per object, then files and the config.
    pub report: String,
    /// Every object accepted, every file parsed, the config valid.
    pub clean: bool,
}

/// Compiles `dir` with `config` once.
pub fn check(dir: &Path, config: Option<&Path>) -> Verdict {
    let mut report = String::from("KIND\tNAMESPACE/NAME\tACCEPTED\tREASON\tMESSAGE\n");
    let mut clean = true;
    // A rejected config is a verdict here, not a start failure: the objects are still checked
    // (against the built-in defaults) so that one run reports everything.
    let (source, config_line) = match ManifestDir::open(dir, config, Duration::ZERO) {
        Ok(source) => (Some(source), config.map(|p| format!("config\t{}\taccepted\n", p.display()))),
        Err(OpenError::Config(problem)) => {
            clean = false;
            let line = format!("config\t{}\trejected\t{}\n", problem.path.display(), problem.error);
            (ManifestDir::open(dir, None, Duration::ZERO).ok(), Some(line))
        }
    };
    let Some(source) = source else {
        return Verdict { report, clean: false };
    };
    if !source.listed() {
        let _ = writeln!(report, "directory\t{}\tunreadable", dir.display());
        clean = false;
    }
    let compiled = compile(source.store());
    for d in compiled.diagnostics() {
        let accepted = if d.accepted() { "True" } else { "False" };
        let message = d.message.replace(['\t', '\n'], " ");
        let _ = writeln!(report, "{}\t{}\t{accepted}\t{}\t{message}", d.kind, d.key, d.reason);
        clean &= d.accepted();
    }
    let problems = source.problems();
    for file in &problems.files {
        let _ = writeln!(report, "file\t{}\tunparsed\t{}", file.path.display(), file.to_string().replace('\t', " "));
        clean = false;
    }
    for (id, paths) in &problems.duplicates {
        let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(report, "duplicate\t{id}\tdefined in {}; the last file wins", files.join(", "));
        clean = false;
    }
    for (path, why) in &problems.skipped {
        let _ = writeln!(report, "file\t{}\tskipped\t{why}", path.display());
    }
    report.push_str(&config_line.unwrap_or_default());
    Verdict { report, clean }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str = "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: NAME, namespace: llm}\nspec: {modelName: m, upstream: {baseUrl: 'http://127.0.0.1:9/v1'}EXTRA}\n---\n";

    fn md(name: &str, extra: &str) -> String {
        MD.replace("NAME", name).replace("EXTRA", extra)
    }

    #[test]
    fn all_accepted_is_clean_with_one_line_per_object() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), md("a", "") + &md("b", "")).unwrap();
        let v = check(dir.path(), None);
        assert!(v.clean, "{}", v.report);
        let lines: Vec<&str> = v.report.lines().collect();
        assert_eq!(lines.len(), 3, "{}", v.report);
        assert!(lines[1].starts_with("ModelDeployment\tllm/a\tTrue\tAccepted\t"), "{}", lines[1]);
    }

    #[test]
    fn a_rejected_object_a_broken_file_or_a_bad_config_is_not_clean() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), md("a", "") + &md("bad", ", order: 0")).unwrap();
        let v = check(dir.path(), None);
        assert!(!v.clean);
        assert!(v.report.contains("ModelDeployment\tllm/bad\tFalse\tInvalid\t"), "{}", v.report);

        std::fs::write(dir.path().join("a.yaml"), md("a", "")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "kind: [unclosed\n").unwrap();
        let v = check(dir.path(), None);
        assert!(!v.clean && v.report.contains("unparsed"), "{}", v.report);

        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config.path(), "defaults: {maxAtempts: 2}\n").unwrap();
        let v = check(dir.path(), Some(config.path()));
        assert!(!v.clean);
        assert!(v.report.contains("rejected") && v.report.contains("defaults.maxAtempts"), "{}", v.report);
        assert!(v.report.contains("ModelDeployment\tllm/a\tTrue"), "objects are still checked: {}", v.report);
    }
}
