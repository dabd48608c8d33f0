//! Starting the real binaries in tests: locate them in the cargo target dir, give them free
//! loopback ports, kill them on drop, show their logs when a test fails.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the running test (target/<profile>/NAME).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` (make test does)", path.display());
    path
}

/// A free loopback address (bound then released; another process may take it meanwhile, so
/// prefer letting a binary bind port 0 and reading what it announces).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr")
}

/// The value of `key=value` in a log line.
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(&prefix)).map(|v| v.trim_matches('"').to_owned())
}

/// Starts `llmroute-sidecar` with `args` on ephemeral ports; returns it with its API and admin
/// addresses as it announced them.
pub fn start_sidecar(args: &[String]) -> (Proc, SocketAddr, SocketAddr) {
    start_sidecar_with_env(args, &[])
}

/// [`start_sidecar`] with environment variables set (over `LLMROUTE_LOG=info`).
pub fn start_sidecar_with_env(args: &[String], env: &[(&str, &str)]) -> (Proc, SocketAddr, SocketAddr) {
    let mut all = args.to_vec();
    all.extend(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"].map(String::from));
    let sidecar = Proc::spawn_with_env(&bin("llmroute-sidecar"), &all, env);
    let line = sidecar.wait_log_line("llmroute-sidecar serving", Duration::from_secs(10));
    let line = line.unwrap_or_else(|| panic!("sidecar did not start:\n{}", sidecar.logs()));
    let addr = |key| log_field(&line, key).and_then(|v| v.parse().ok()).expect("announced address");
    let (api, admin) = (addr("listen"), addr("admin"));
    (sidecar, api, admin)
}

/// A child process killed on drop; its stderr goes to a log file.
pub struct Proc {
    child: Child,
    log: PathBuf,
    out: PathBuf,
    name: String,
}

impl Proc {
    /// Starts `bin` with `args`.
    pub fn spawn(bin: &Path, args: &[String]) -> Self {
        Self::spawn_with_env(bin, args, &[])
    }

    /// Starts `bin` with `args` and environment variables `env` (over `LLMROUTE_LOG=info`).
    pub fn spawn_with_env(bin: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        let name = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let log =
            std::env::temp_dir().join(format!("llmroute-{name}-{}-{}.log", std::process::id(), free_addr().port()));
        let file = std::fs::File::create(&log).expect("log file");
        let out = log.with_extension("out");
        let stdout = std::fs::File::create(&out).expect("stdout file");
        let child = Command::new(bin)
            .args(args)
            .env("LLMROUTE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Self { child, log, out, name }
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until stderr holds a line containing `needle`; that line.
    pub fn wait_log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            // Whole lines only: a line still being written is not read half.
            let logs = self.logs();
            let complete = logs.rfind('\n').map_or("", |end| &logs[..end]);
            if let Some(line) = complete.lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends SIGTERM (as Kubernetes does at pod shutdown).
    pub fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// Waits up to `timeout` for the process to exit; its exit code if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `Vm*` line of /proc/PID/status in KiB (`VmRSS` now, `VmHWM` the peak).
    pub fn memory_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// How many stderr lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.logs().lines().filter(|l| l.contains(needle)).count()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Polls `check` every 20 ms until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
