//! Following the workers' logs while the run goes on, so the nemesis can aim a fault at a moment
//! of the protocol (right after a claim, right after a grant) instead of at a random time.
//!
//! - When [`LogTail::poll`] is called, then it returns the history events every followed log
//!   gained since the last call, in file order per log (a line still being written waits for
//!   the next call).
//! - Not guaranteed: how soon an event is seen. A worker writes each log line when the event
//!   happens; the delay is this poll's period plus scheduling (milliseconds, more under load).

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use super::history::{Event, parse_log_line};

/// Read positions in the logs followed so far.
#[derive(Debug, Default)]
pub struct LogTail {
    /// Per log: bytes consumed, and the start of an unfinished last line.
    logs: BTreeMap<PathBuf, (u64, String)>,
}

impl LogTail {
    /// The history events `worker`'s log at `path` gained since the last poll of it.
    pub fn poll(&mut self, path: &Path, worker: &str) -> Vec<Event> {
        let (offset, partial) = self.logs.entry(path.to_path_buf()).or_default();
        let Ok(mut file) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(*offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        *offset += bytes.len() as u64;
        partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = partial.drain(..=end).collect();
        complete
            .lines()
            .filter_map(|line| parse_log_line(line, worker))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn only_new_complete_lines_come_back() {
        let path = std::env::temp_dir().join(format!("chaos-tail-{}.log", std::process::id()));
        let claim = |fence: u64| {
            format!(
                r#"{{"fields":{{"message":"history","event":"claim","product":1,"fence":{fence},"stock":5,"at_ms":1}}}}"#
            )
        };
        let mut file = std::fs::File::create(&path).unwrap();
        let mut tail = LogTail::default();
        assert!(tail.poll(&path, "w").is_empty());
        write!(file, "{}\nnoise\n{}", claim(1), &claim(2)[..10]).unwrap();
        let first = tail.poll(&path, "w");
        assert_eq!(first.len(), 1, "{first:?}");
        writeln!(file, "{}", &claim(2)[10..]).unwrap();
        let second = tail.poll(&path, "w");
        assert!(
            matches!(second.as_slice(), [Event::Claim { fence: 2, .. }]),
            "{second:?}"
        );
        assert!(tail.poll(&path, "w").is_empty());
        let _ = std::fs::remove_file(path);
    }
}
