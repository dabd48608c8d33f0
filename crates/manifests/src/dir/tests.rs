use std::fs;

use llmroute_snapshot::compile;

use super::*;

const SETTLE: Duration = Duration::from_millis(100);

fn md(name: &str, model: &str) -> String {
    format!(
        "apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}, namespace: llm}}\n\
         spec: {{modelName: {model}, upstream: {{baseUrl: 'http://127.0.0.1:9/v1'}}}}\n---\n"
    )
}

fn routes(source: &ManifestDir) -> Vec<String> {
    compile(source.store()).view("t").routes.into_iter().map(|r| r.public_name).collect()
}

fn open(dir: &tempfile::TempDir) -> ManifestDir {
    ManifestDir::open(dir.path(), None, SETTLE).expect("opens")
}

#[test]
fn a_file_that_stops_parsing_keeps_its_objects_and_the_rest_reloads() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), md("a", "ma")).unwrap();
    fs::write(dir.path().join("b.yaml"), md("b", "mb")).unwrap();
    let mut source = open(&dir);
    assert_eq!(routes(&source), ["ma", "mb"]);
    fs::write(dir.path().join("a.yaml"), "apiVersion: v1\nkind: [unclosed\n").unwrap();
    fs::write(dir.path().join("b.yaml"), md("b", "mb2")).unwrap();
    let t0 = Instant::now();
    source.poll(t0);
    assert!(source.poll(t0 + SETTLE), "b changed");
    assert_eq!(routes(&source), ["ma", "mb2"], "a keeps its last good object, b reloaded");
    let problems = source.problems();
    assert_eq!(problems.files.len(), 1);
    let text = problems.files[0].to_string();
    assert!(text.contains("a.yaml:3:1: document 1:"), "file, line and column: {text}");
}

#[test]
fn a_change_is_read_only_once_it_has_settled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.yaml");
    fs::write(&path, md("a", "ma")).unwrap();
    let mut source = open(&dir);
    // An in-place save in progress: truncated, then written piece by piece.
    let full = format!("{}{}", md("a", "ma"), md("b", "mb"));
    let t0 = Instant::now();
    let mut t = t0;
    for cut in [0, 10, full.len() / 2, full.len() - 5, full.len()] {
        fs::write(&path, &full[..cut]).unwrap();
        assert!(!source.poll(t), "nothing is read while the file keeps changing (cut {cut})");
        assert_eq!(routes(&source), ["ma"], "the route never disappears (cut {cut})");
        t += SETTLE / 2;
    }
    assert!(!source.poll(t + SETTLE / 2 - Duration::from_millis(1)));
    assert!(source.poll(t + SETTLE));
    assert_eq!(routes(&source), ["ma", "mb"]);
}

#[test]
fn a_deleted_file_removes_its_objects_at_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), md("a", "ma")).unwrap();
    fs::write(dir.path().join("b.yaml"), md("b", "mb")).unwrap();
    let mut source = open(&dir);
    fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert!(source.poll(Instant::now()));
    assert_eq!(routes(&source), ["ma"]);
}

#[test]
fn a_directory_that_appears_later_is_read_when_it_does() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("later");
    let mut source = ManifestDir::open(&dir, None, SETTLE).unwrap();
    assert!(!source.listed());
    assert!(!source.poll(Instant::now()));
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.yaml"), md("a", "ma")).unwrap();
    assert!(source.poll(Instant::now()), "the first listing is a change");
    assert!(source.listed());
    assert_eq!(routes(&source), ["ma"], "files of the first listing are read at once");
}

#[test]
fn an_invalid_config_at_start_is_an_error_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    fs::write(&config, "defaults: {maxAtempts: 3}\n").unwrap();
    let e = ManifestDir::open(dir.path(), Some(&config), SETTLE).unwrap_err().to_string();
    assert!(e.contains("config.yaml") && e.contains("defaults.maxAtempts"), "{e}");
}

#[test]
fn a_rejected_config_on_reload_leaves_the_last_good_one_in_force() {
    let (dir, config_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = config_dir.path().join("config.yaml");
    fs::write(&config, "defaults: {maxAttempts: 2}\n").unwrap();
    let mut source = ManifestDir::open(dir.path(), Some(&config), Duration::ZERO).unwrap();
    fs::write(&config, "defaults: {maxAttempts: 0}\n").unwrap();
    assert!(!source.poll(Instant::now()));
    assert_eq!(source.config().defaults.max_attempts, Some(2));
    assert_eq!(source.config_rejections(), 1);
    let problem = source.problems().config.expect("reported").to_string();
    assert!(problem.contains("defaults.maxAttempts"), "{problem}");
    assert!(!source.poll(Instant::now()), "the same rejected version is not counted twice");
    assert_eq!(source.config_rejections(), 1);
    fs::write(&config, "defaults: {maxAttempts: 5}\n").unwrap();
    assert!(source.poll(Instant::now()));
    assert_eq!(source.store().config().defaults.max_attempts, Some(5));
    assert!(source.problems().config.is_none());
}

#[cfg(unix)]
#[test]
fn fifos_and_symlink_loops_are_skipped_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), md("a", "ma")).unwrap();
    let fifo = dir.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    std::os::unix::fs::symlink("loop.yaml", dir.path().join("loop.yaml")).unwrap();
    let mut source = open(&dir);
    source.poll(Instant::now());
    assert_eq!(routes(&source), ["ma"]);
    let skipped: Vec<_> = source.problems().skipped.into_iter().map(|(p, _)| p).collect();
    assert_eq!(skipped, [dir.path().join("loop.yaml"), fifo]);
}

#[test]
fn an_oversized_file_keeps_its_last_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    fs::write(&path, md("a", "ma")).unwrap();
    let mut source = ManifestDir::open(dir.path(), None, Duration::ZERO).unwrap();
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_len(crate::MAX_FILE_BYTES + 1).unwrap();
    assert!(!source.poll(Instant::now()));
    assert_eq!(routes(&source), ["ma"]);
    assert!(source.problems().files[0].message.contains("larger than"));
}

#[test]
fn a_secret_that_stops_fitting_keeps_its_file_serving() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |data: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: llm}}\ndata: {{{data}}}\n---\n")
    };
    let with_key = md("a", "ma").replace(
        "baseUrl: 'http://127.0.0.1:9/v1'",
        "baseUrl: 'http://127.0.0.1:9/v1', apiKeySecretRef: {name: keys, key: k}",
    );
    fs::write(dir.path().join("a.yaml"), secret("k: c2stMQ==") + &with_key).unwrap();
    let mut source = ManifestDir::open(dir.path(), None, Duration::ZERO).unwrap();
    let key = |s: &ManifestDir| compile(s.store()).view("t").deployments.first().map(|d| d.api_key.clone());
    assert_eq!(key(&source), Some("sk-1".into()));
    fs::write(dir.path().join("a.yaml"), secret("k: c2stMQ==, k3: 'not_base64!'") + &with_key).unwrap();
    assert!(!source.poll(Instant::now()));
    assert_eq!(key(&source), Some("sk-1".into()), "the deployment keeps its credential");
    let problem = source.problems().files[0].to_string();
    assert!(problem.contains("Secret llm/keys") && !problem.contains("not_base64"), "{problem}");
}

#[test]
fn an_object_defined_in_two_files_is_reported_and_the_last_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), md("a", "first")).unwrap();
    fs::write(dir.path().join("b.yaml"), md("a", "second")).unwrap();
    let source = ManifestDir::open(dir.path(), None, Duration::ZERO).unwrap();
    assert_eq!(routes(&source), ["second"]);
    let duplicates = source.problems().duplicates;
    assert_eq!(duplicates.len(), 1);
    assert_eq!(duplicates[0].0, "ModelDeployment llm/a");
    assert_eq!(duplicates[0].1, [dir.path().join("a.yaml"), dir.path().join("b.yaml")]);
}
