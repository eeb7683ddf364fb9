//! A private `moto_server` (the SQS-compatible test server from PyPI) per test: started on a
//! free port on 127.0.0.1, waited for, killed on drop. Missing `moto_server` fails the test
//! with the command that installs it; it never skips.
//!
//! Found via `SHIPFEED_MOTO_SERVER`, then `<workspace>/.venv/bin/moto_server` (what
//! `cargo xtask moto` installs), then `PATH`. Std only, so other crates' tests can include it
//! with `#[path]`.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`, killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    log: PathBuf,
}

/// The `moto_server` executable, or a panic that says how to install it.
pub fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("SHIPFEED_MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "SHIPFEED_MOTO_SERVER={} does not exist; run `cargo xtask moto`",
            path.display()
        );
        return path;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found (SHIPFEED_MOTO_SERVER, {}, PATH): run `cargo xtask moto` \
                 to install it; the SQS tests need a real SQS-compatible server",
                venv.display()
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

impl Moto {
    /// Starts a server and waits (up to two minutes) until it answers HTTP.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// Starts a server that checks credentials like AWS does (moto's IAM authentication):
    /// any access key it does not know is rejected.
    pub fn start_checking_credentials() -> Moto {
        Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let server = moto_server();
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("shipfeed-moto-{}-{port}.log", std::process::id()));
        let log_file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let log_err = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("clone log handle: {e}"));
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}; run `cargo xtask moto`", server.display()));
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        moto.wait_ready(port);
        moto
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited early ({status}):\n{}", self.log_text());
            }
            if answers_http(port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port} within 120 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
