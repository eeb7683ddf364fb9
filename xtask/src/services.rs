//! The machine's services the store and end-to-end tests use: PostgreSQL on 127.0.0.1:5432,
//! NATS with JetStream on 127.0.0.1:4222 and RabbitMQ on 127.0.0.1:5672. Each is reachable, or started with its usual command,
//! or CI fails saying how to start it. Never a silent skip.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

fn reachable(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

fn wait_for(port: u16) -> bool {
    wait_longer_for(port, Duration::from_secs(30))
}

fn wait_longer_for(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if reachable(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// PostgreSQL on 127.0.0.1:5432, starting the installed cluster if needed (skipped when
/// `SHIPFEED_TEST_POSTGRES_URL` points the tests elsewhere).
pub(crate) fn ensure_postgres() -> Result<()> {
    if std::env::var_os("SHIPFEED_TEST_POSTGRES_URL").is_some() || reachable(5432) {
        return Ok(());
    }
    let versions: Vec<String> = std::fs::read_dir(Path::new("/etc/postgresql"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    for version in &versions {
        eprintln!("services: starting PostgreSQL cluster {version}/main");
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", version, "main", "start"])
            .status();
    }
    if wait_for(5432) {
        return Ok(());
    }
    bail!(
        "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started \
         (clusters found: {versions:?}); the store and end-to-end tests need it. Start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set \
         SHIPFEED_TEST_POSTGRES_URL"
    )
}

/// NATS with JetStream on 127.0.0.1:4222, started in the background if needed (skipped when
/// `SHIPFEED_TEST_NATS_URL` points the tests elsewhere).
pub(crate) fn ensure_nats() -> Result<()> {
    if std::env::var_os("SHIPFEED_TEST_NATS_URL").is_some() || reachable(4222) {
        return Ok(());
    }
    let store_dir = std::env::temp_dir().join("shipfeed-nats");
    eprintln!("services: starting nats-server -js on 127.0.0.1:4222");
    let started = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", "4222", "-js", "-sd"])
        .arg(&store_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if started.is_ok() && wait_for(4222) {
        return Ok(());
    }
    bail!(
        "NATS is not reachable on 127.0.0.1:4222 and `nats-server -js` could not be started; \
         the outbox tests need NATS with JetStream. Start it with \
         `nats-server -a 127.0.0.1 -p 4222 -js &`, or set SHIPFEED_TEST_NATS_URL"
    )
}

/// RabbitMQ on 127.0.0.1:5672, started with `rabbitmq-server -detached` if needed (skipped when
/// `SHIPFEED_TEST_RABBITMQ_URL` points the tests elsewhere). The RabbitMQ subscription tests
/// also close a connection with `rabbitmqctl`, which must be installed.
pub(crate) fn ensure_rabbitmq() -> Result<()> {
    let rabbitmqctl = Command::new("rabbitmqctl")
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !rabbitmqctl {
        bail!(
            "rabbitmqctl is not installed; the RabbitMQ subscription tests close a connection \
             with it. Install it with `apt-get install rabbitmq-server`"
        );
    }
    if std::env::var_os("SHIPFEED_TEST_RABBITMQ_URL").is_some() || reachable(5672) {
        return Ok(());
    }
    eprintln!("services: starting rabbitmq-server -detached on 127.0.0.1:5672");
    let started = Command::new("rabbitmq-server")
        .arg("-detached")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // The broker boots in several seconds (Erlang VM, then its plugins).
    if started.is_ok() && wait_longer_for(5672, Duration::from_secs(90)) {
        return Ok(());
    }
    bail!(
        "RabbitMQ is not reachable on 127.0.0.1:5672 and `rabbitmq-server -detached` could not \
         start it; the RabbitMQ subscription tests need it (guest/guest). Start it with \
         `rabbitmq-server -detached`, or set SHIPFEED_TEST_RABBITMQ_URL"
    )
}
