//! Starting the real binaries in tests: locate them in the cargo target dir, give them free
//! loopback ports, kill them on drop, show their logs when a test fails.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the running test (target/<profile>/NAME).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` (make test does)", path.display());
    path
}

/// A free loopback address (bound then released).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr")
}

/// A child process killed on drop; its stderr goes to a log file.
pub struct Proc {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Proc {
    /// Starts `bin` with `args`.
    pub fn spawn(bin: &Path, args: &[String]) -> Self {
        let name = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let log =
            std::env::temp_dir().join(format!("llmroute-{name}-{}-{}.log", std::process::id(), free_addr().port()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(args)
            .env("LLMROUTE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Self { child, log, name }
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
