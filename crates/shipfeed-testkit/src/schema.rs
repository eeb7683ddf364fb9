//! The committed JSON Schemas in `schema/`, for tests that check what shipfeed writes.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One schema of `schema/`, compiled (formats such as `date-time` are checked too).
pub struct Schema {
    name: &'static str,
    validator: jsonschema::Validator,
}

/// The workspace's `schema/` directory.
pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema")
}

impl Schema {
    /// `schema/output.schema.json`: one canonical output line.
    pub fn output() -> Schema {
        Schema::load("output.schema.json")
    }

    /// `schema/feed-item.schema.json`: one item of the service's feed.
    pub fn feed_item() -> Schema {
        Schema::load("feed-item.schema.json")
    }

    /// # Panics
    /// When the file is missing or not a valid schema (a test setup error).
    fn load(name: &'static str) -> Schema {
        let path = schema_dir().join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{} is not a valid schema: {e}", path.display()));
        Schema { name, validator }
    }

    /// Asserts `value` matches the schema.
    ///
    /// # Panics
    /// When it does not, listing every violation and the value.
    pub fn assert_valid(&self, value: &Value) {
        let errors: Vec<String> = self
            .validator
            .iter_errors(value)
            .map(|e| format!("  at {}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "does not match schema/{}:\n{}\nvalue: {value}",
            self.name,
            errors.join("\n")
        );
    }

    /// Parses `line` as JSON and asserts it matches the schema; returns the value.
    ///
    /// # Panics
    /// When `line` is not JSON or does not match.
    pub fn assert_line(&self, line: &str) -> Value {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        self.assert_valid(&value);
        value
    }
}
