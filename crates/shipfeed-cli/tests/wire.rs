//! The JSON lines of `shipfeed normalize` match `schema/output.schema.json`, and `shipfeed
//! schema` prints exactly the committed schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use shipfeed_testkit::schema::{schema_dir, Schema};

fn shipfeed(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shipfeed"))
        .args(args)
        .output()
        .expect("run shipfeed")
}

#[test]
fn every_normalized_line_matches_the_output_schema() {
    let schema = Schema::output();
    for provider in ["sendcloud", "sevensenders", "happycolis", "shipup"] {
        let dir = shipfeed_testkit::fixtures_dir()
            .join(provider)
            .join("generated");
        let mut bodies: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        bodies.sort();
        let mut args = vec!["normalize", "--provider", provider];
        args.extend(bodies.iter().map(|p| p.to_str().unwrap()));
        // Some fixtures are deliberately not understood (exit 1); every line printed counts.
        let output = shipfeed(&args);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(
            lines.len() >= bodies.len() / 2,
            "{provider}: {} lines for {} fixtures\n{}",
            lines.len(),
            bodies.len(),
            String::from_utf8_lossy(&output.stderr)
        );
        for line in lines {
            schema.assert_line(line);
        }
    }
}

#[test]
fn the_schema_command_prints_the_committed_schemas() {
    for (args, file) in [
        (&["schema"][..], "output.schema.json"),
        (&["schema", "--feed-item"][..], "feed-item.schema.json"),
    ] {
        let output = shipfeed(args);
        assert!(output.status.success());
        let committed = std::fs::read_to_string(schema_dir().join(file)).unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            committed,
            "{file}"
        );
    }
}
