//! The audit log: one JSON object per line in `<data>/audit.jsonl`, appended and synced, for
//! every state-changing action taken through the web page.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

/// The audit log's file name in the data directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// One audited action.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// Unix ms.
    pub at_ms: i64,
    /// What was done (`"forget"`).
    pub action: String,
    /// The user it concerned.
    pub user: u64,
    /// The guild it was limited to, if any.
    pub guild: Option<u64>,
    /// The client's address, when known.
    pub peer: Option<String>,
    /// `"ok"` or `"error"`.
    pub outcome: String,
    /// What it did or why it failed, short.
    pub detail: String,
}

/// Appends `r` to the audit log of `data` and syncs it.
pub fn append(data: &Path, r: &Record) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join(AUDIT_FILE))?;
    f.write_all(&line)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines() {
        let t = tempfile::tempdir().unwrap();
        let mut r = Record {
            at_ms: 1,
            action: "forget".into(),
            user: 42,
            guild: None,
            peer: Some("127.0.0.1:5".into()),
            outcome: "ok".into(),
            detail: "line\nbreak".into(),
        };
        append(t.path(), &r).unwrap();
        r.user = 43;
        append(t.path(), &r).unwrap();
        let s = std::fs::read_to_string(t.path().join(AUDIT_FILE)).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["user"], 43);
        assert_eq!(v["detail"], "line\nbreak");
    }
}
