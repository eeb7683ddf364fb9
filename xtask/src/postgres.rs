//! The machine's PostgreSQL for the store and end-to-end tests: reachable, or started with the
//! distribution's usual command, or a clear failure. Never a silent skip.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Where the tests expect it (`SHIPFEED_TEST_POSTGRES_URL` overrides the whole URL; this only
/// checks the default address).
const ADDRESS: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);

fn reachable() -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(ADDRESS), Duration::from_secs(2)).is_ok()
}

/// Makes sure PostgreSQL answers on 127.0.0.1:5432, starting the installed cluster if needed.
pub(crate) fn ensure() -> Result<()> {
    if std::env::var_os("SHIPFEED_TEST_POSTGRES_URL").is_some() || reachable() {
        return Ok(());
    }
    let versions: Vec<String> = std::fs::read_dir(Path::new("/etc/postgresql"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for version in &versions {
        eprintln!("postgres: starting cluster {version}/main");
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", version, "main", "start"])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reachable() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started \
         (clusters found: {versions:?}); the store and end-to-end tests need it. Start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set \
         SHIPFEED_TEST_POSTGRES_URL"
    )
}
